//! Errors of the Docker facade, and the translation of bollard's errors into them.

use std::fmt;

/// Where the endpoint we tried came from, so that "cannot reach" says why that one was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointOrigin {
    /// `DOCKER_HOST` named it.
    Environment,
    /// `DOCKER_HOST` was unset or empty, so the platform default socket was used.
    Default,
    /// The caller passed it explicitly.
    Explicit,
}

impl fmt::Display for EndpointOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndpointOrigin::Environment => "from DOCKER_HOST",
            EndpointOrigin::Default => "DOCKER_HOST unset",
            EndpointOrigin::Explicit => "given explicitly",
        })
    }
}

#[derive(thiserror::Error, Debug)]
pub enum DockerError {
    #[error("cannot reach the Docker engine at {endpoint} ({origin}): {reason}")]
    Unreachable {
        endpoint: String,
        origin: EndpointOrigin,
        reason: String,
    },
    #[error("no such Docker volume: {0}")]
    NoSuchVolume(String),
    #[error("no such Docker container: {0}")]
    NoSuchContainer(String),
    #[error("no such Docker image: {0}")]
    NoSuchImage(String),
    #[error("Docker volume {volume} is used by container(s) {}; {action}", .containers.join(", "))]
    VolumeInUse {
        volume: String,
        containers: Vec<String>,
        action: String,
    },
    #[error("cannot empty Docker volume {volume}: {reason}")]
    CannotEmptyVolume { volume: String, reason: String },
    #[error("checkpoints are not available: {0}")]
    CheckpointUnsupported(String),
    #[error("invalid request to the Docker engine: {0}")]
    InvalidInput(String),
    #[error("Docker engine error: {0}")]
    Engine(String),
    #[error("I/O error while streaming to or from the Docker engine: {0}")]
    Io(#[from] std::io::Error),
}

/// The HTTP status of an engine reply, when the error is one.
pub(crate) fn status_of(error: &bollard::errors::Error) -> Option<u16> {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own words for an error, without bollard's framing.
pub(crate) fn message_of(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{} (HTTP {status_code})", message.trim()),
        bollard::errors::Error::DockerStreamError { error } => error.trim().to_string(),
        other => with_causes(other),
    }
}

/// An error followed by its chain of causes: transport errors hide the useful part (such as
/// "Permission denied") in their sources.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

pub(crate) fn engine(error: bollard::errors::Error) -> DockerError {
    DockerError::Engine(message_of(&error))
}

/// Builds a mapper that turns the engine's 404 into the "no such X" error the caller names, and
/// anything else into `Engine`.
pub(crate) fn not_found_as(
    missing: impl FnOnce() -> DockerError,
) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    move |error| {
        if status_of(&error) == Some(404) {
            missing()
        } else {
            engine(error)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An engine error response, as bollard reports it.
    pub(crate) fn server_error(status_code: u16, message: &str) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.to_string(),
        }
    }

    #[test]
    fn unreachable_names_the_endpoint_and_why_it_was_chosen() {
        let error = DockerError::Unreachable {
            endpoint: "unix:///var/run/docker.sock".into(),
            origin: EndpointOrigin::Default,
            reason: "socket does not exist".into(),
        };
        assert_eq!(
            error.to_string(),
            "cannot reach the Docker engine at unix:///var/run/docker.sock (DOCKER_HOST unset): socket does not exist"
        );
    }

    #[test]
    fn a_404_becomes_the_named_missing_object() {
        let mapped = not_found_as(|| DockerError::NoSuchVolume("data".into()))(server_error(
            404,
            "get data: no such volume",
        ));
        assert!(matches!(mapped, DockerError::NoSuchVolume(name) if name == "data"));
    }

    #[test]
    fn other_statuses_keep_the_engine_message() {
        let mapped = not_found_as(|| DockerError::NoSuchVolume("data".into()))(server_error(
            409,
            "volume is in use\n",
        ));
        match mapped {
            DockerError::Engine(message) => assert_eq!(message, "volume is in use (HTTP 409)"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn causes_are_appended_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let error = Outer(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(
            with_causes(&error),
            "client error (Connect): permission denied"
        );
    }

    #[test]
    fn volume_in_use_lists_the_containers() {
        let error = DockerError::VolumeInUse {
            volume: "data".into(),
            containers: vec!["web".into(), "db".into()],
            action: "stop and remove them first".into(),
        };
        assert_eq!(
            error.to_string(),
            "Docker volume data is used by container(s) web, db; stop and remove them first"
        );
    }
}
