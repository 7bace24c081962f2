//! The Docker engine, seen through a small blocking facade.
//!
//! This is the only module that knows tokio and bollard. Every method blocks the calling thread
//! on a private current-thread runtime; big data (volume and filesystem tars, saved images) moves
//! as streaming `Read`s in both directions, so memory stays bounded whatever the size.
//!
//! Volumes are reached without any image from a registry: cairn imports its own tiny helper image
//! (an empty directory, no binaries), creates a never-started helper container with the volume
//! mounted, and streams through the container archive endpoints. Helper containers are removed
//! as soon as the operation ends, also on error or when a reader is dropped early.
//!
//! Do not call the facade from inside an async runtime: it would nest `block_on`.

mod containers;
mod error;
mod helper;
mod images;
pub mod ops;
mod stream;
mod types;
mod volumes;

use std::future::Future;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

pub use containers::Checkpoint;
pub use error::{DockerError, EndpointOrigin};
pub use helper::{HELPER_IMAGE, HELPER_LABEL};
pub use stream::EngineReader;
pub use types::{ContainerRef, ContainerState, VolumeInfo};

use error::with_causes;

/// Where the engine is looked for when DOCKER_HOST is unset, as the docker CLI does.
pub const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";

/// Limit for answering a ping, so that an unreachable tcp:// host fails promptly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Limit for short requests (inspect, list, create, ...). bollard applies it to the wait for the
/// response headers, not to the transfer of a body.
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// Limit for requests that wait on a whole transfer or on slow engine work (uploads, image loads,
/// stopping containers, checkpoints): the engine only answers when it is done, which may take
/// hours for a big volume, so this is deliberately out of the way.
const BULK_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// A connection to one Docker engine.
pub struct Docker {
    runtime: tokio::runtime::Runtime,
    api: bollard::Docker,
    bulk: bollard::Docker,
    endpoint: String,
    helper_serial: AtomicU64,
    /// Whether the helper image is known to exist on the engine.
    helper_image_ready: Mutex<bool>,
}

impl Docker {
    /// Connects to the engine `DOCKER_HOST` names (unix:// or tcp://), or to the default local
    /// socket when it is unset, and checks that it answers.
    pub fn connect() -> Result<Docker, DockerError> {
        match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.trim().is_empty() => {
                Docker::connect_endpoint(host.trim(), EndpointOrigin::Environment)
            }
            _ => Docker::connect_endpoint(DEFAULT_ENDPOINT, EndpointOrigin::Default),
        }
    }

    /// Connects to the engine at `host` (unix:///path or tcp://host:port), ignoring DOCKER_HOST.
    pub fn connect_to(host: &str) -> Result<Docker, DockerError> {
        Docker::connect_endpoint(host.trim(), EndpointOrigin::Explicit)
    }

    /// The endpoint this connection talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn connect_endpoint(endpoint: &str, origin: EndpointOrigin) -> Result<Docker, DockerError> {
        let unreachable = |reason: String| DockerError::Unreachable {
            endpoint: endpoint.to_string(),
            origin,
            reason,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| unreachable(format!("cannot start an I/O runtime: {error}")))?;
        let client = {
            let _context = runtime.enter();
            open_client(endpoint).map_err(unreachable)?
        };
        let answered = runtime.block_on(async {
            tokio::time::timeout(CONNECT_TIMEOUT, async {
                client.ping().await?;
                // The engine may be older than bollard's default API version; speaking its
                // version avoids "client version is too new" on every request.
                client.negotiate_version().await
            })
            .await
        });
        let api = match answered {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => return Err(unreachable(with_causes(&error))),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        };
        let bulk = api.clone().with_timeout(BULK_TIMEOUT);
        Ok(Docker {
            runtime,
            api,
            bulk,
            endpoint: endpoint.to_string(),
            helper_serial: AtomicU64::new(0),
            helper_image_ready: Mutex::new(false),
        })
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

/// Builds a client for `endpoint` without contacting it yet.
fn open_client(endpoint: &str) -> Result<bollard::Docker, String> {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        // hyper's error for a missing socket is a bare "connect error"; say what is wrong.
        if !Path::new(path).exists() {
            return Err(format!("socket {path} does not exist"));
        }
        return bollard::Docker::connect_with_unix(
            endpoint,
            REQUEST_TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|error| with_causes(&error));
    }
    if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        if std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|value| !value.is_empty()) {
            return Err(
                "DOCKER_TLS_VERIFY is set but this build of cairn speaks only plain tcp://".into(),
            );
        }
        return bollard::Docker::connect_with_http(
            endpoint,
            REQUEST_TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|error| with_causes(&error));
    }
    Err("unsupported endpoint: cairn connects through unix:///path or tcp://host:port".into())
}

/// Checks a volume or container name against the engine's own rule, so that it can be put in a
/// URL path as is.
fn check_object_name(kind: &str, name: &str) -> Result<(), DockerError> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(DockerError::InvalidInput(format!(
            "{name:?} is not a valid {kind} name (expected [a-zA-Z0-9][a-zA-Z0-9_.-]*)"
        )))
    }
}

/// Checks an image reference (name[:tag][@digest] or an id) so that it can be put in a URL path.
fn check_image_reference(reference: &str) -> Result<(), DockerError> {
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':' | '@');
    let valid = !reference.is_empty()
        && reference.chars().all(allowed)
        && reference
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..");
    if valid {
        Ok(())
    } else {
        Err(DockerError::InvalidInput(format!(
            "{reference:?} is not a valid image reference"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_follow_the_engine_rule() {
        for good in ["data", "my_vol.1", "a-b", "0abc", "f3e1c2"] {
            assert!(check_object_name("volume", good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".hidden", "a/b", "a?b", "x y", "../etc", "é"] {
            assert!(check_object_name("volume", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_references_cannot_escape_the_url_path() {
        for good in [
            "busybox",
            "busybox:1.36",
            "localhost:5000/team/app:v2",
            "sha256:0123abcd",
            "app@sha256:0123abcd",
        ] {
            assert!(check_image_reference(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "../../containers/x",
            "a//b",
            "/abs",
            "a/./b",
            "a?b",
            "a b",
            "a#b",
        ] {
            assert!(check_image_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_socket_is_reported_with_its_path_and_origin() {
        let error = Docker::connect_to("unix:///nonexistent/cairn-test.sock")
            .err()
            .expect("connecting to a missing socket must fail");
        let text = error.to_string();
        assert!(
            text.starts_with(
                "cannot reach the Docker engine at unix:///nonexistent/cairn-test.sock (given explicitly)"
            ),
            "{text}"
        );
        assert!(text.contains("does not exist"), "{text}");
    }

    #[test]
    fn unsupported_schemes_are_refused_with_the_supported_ones_named() {
        let error = Docker::connect_to("ssh://user@host")
            .err()
            .expect("must fail");
        assert!(
            error
                .to_string()
                .contains("unix:///path or tcp://host:port"),
            "{error}"
        );
    }

    #[test]
    fn a_closed_tcp_port_is_unreachable_not_a_hang() {
        // Port 9 (discard) is closed on any sane test machine; the connection is refused at once.
        let error = Docker::connect_to("tcp://127.0.0.1:9")
            .err()
            .expect("must fail");
        assert!(
            matches!(&error, DockerError::Unreachable { endpoint, .. } if endpoint == "tcp://127.0.0.1:9"),
            "{error:?}"
        );
    }
}
