//! Containers: inspect, filesystem export, lifecycle, creation and CRIU checkpoints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::container::CreateCheckpointOptions;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};

use super::error::{DockerError, engine, message_of, not_found_as, status_of};
use super::stream::EngineReader;
use super::{ContainerRef, Docker, check_object_name};

/// A checkpoint the engine wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub id: String,
    /// The checkpoint's directory on the engine's host (`<checkpoint_dir>/<id>`).
    pub directory: PathBuf,
}

impl Docker {
    /// The engine's inspect document, as JSON with the engine's field names.
    pub fn inspect_container(&self, name: &str) -> Result<serde_json::Value, DockerError> {
        check_object_name("container", name)?;
        let inspected = self
            .block_on(self.api.inspect_container(name, None))
            .map_err(missing_container(name))?;
        serde_json::to_value(inspected).map_err(|error| {
            DockerError::Engine(format!(
                "cannot represent the inspect document as JSON: {error}"
            ))
        })
    }

    /// The container's whole filesystem (image layers plus its changes, without volumes) as a
    /// tar stream.
    pub fn export_container(&self, name: &str) -> Result<EngineReader<'_>, DockerError> {
        check_object_name("container", name)?;
        let body = self.bulk.export_container(name);
        EngineReader::open(self, body, None, missing_container(name))
    }

    /// Stops the container, waiting for the grace period it was configured with.
    pub fn stop_container(&self, id: &str) -> Result<(), DockerError> {
        check_object_name("container", id)?;
        self.block_on(self.bulk.stop_container(id, None::<StopContainerOptions>))
            .map_err(missing_container(id))
    }

    pub fn start_container(&self, id: &str) -> Result<(), DockerError> {
        check_object_name("container", id)?;
        self.block_on(self.bulk.start_container(id, None))
            .map_err(missing_container(id))
    }

    pub fn pause_container(&self, id: &str) -> Result<(), DockerError> {
        check_object_name("container", id)?;
        self.block_on(self.api.pause_container(id))
            .map_err(missing_container(id))
    }

    pub fn unpause_container(&self, id: &str) -> Result<(), DockerError> {
        check_object_name("container", id)?;
        self.block_on(self.api.unpause_container(id))
            .map_err(missing_container(id))
    }

    /// Removes a container; `force` kills it first if it runs. Its volumes are left alone.
    pub fn remove_container(&self, id: &str, force: bool) -> Result<(), DockerError> {
        check_object_name("container", id)?;
        let options = RemoveContainerOptions {
            force,
            v: false,
            link: false,
        };
        self.block_on(self.bulk.remove_container(id, Some(options)))
            .map_err(missing_container(id))
    }

    /// Creates a container from an Engine API `ContainerCreate` body (as found, for instance, by
    /// combining `Config` and `HostConfig` of an inspect document) and returns its id.
    pub fn create_container(
        &self,
        name: &str,
        config: serde_json::Value,
    ) -> Result<String, DockerError> {
        check_object_name("container", name)?;
        let body: ContainerCreateBody = serde_json::from_value(config).map_err(|error| {
            DockerError::InvalidInput(format!("not a container create body: {error}"))
        })?;
        let image = body.image.clone().unwrap_or_default();
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        let created = self
            .block_on(self.api.create_container(Some(options), body))
            .map_err(not_found_as(|| DockerError::NoSuchImage(image)))?;
        Ok(created.id)
    }

    /// Containers (running or not) carrying `label`, given as "key" or "key=value".
    pub fn list_containers_with_label(
        &self,
        label: &str,
    ) -> Result<Vec<ContainerRef>, DockerError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![label.to_string()],
            )])),
            ..Default::default()
        };
        let summaries = self
            .block_on(self.api.list_containers(Some(options)))
            .map_err(engine)?;
        let mut containers: Vec<ContainerRef> =
            summaries.into_iter().map(ContainerRef::from).collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(containers)
    }

    /// Checkpoints a running container with CRIU through the engine's (experimental) checkpoint
    /// API. The checkpoint is written on the engine's host under `checkpoint_dir`, which must be
    /// an absolute path there. Without `leave_running` the container stops afterwards.
    pub fn checkpoint_container(
        &self,
        container: &str,
        checkpoint_dir: &Path,
        leave_running: bool,
    ) -> Result<Checkpoint, DockerError> {
        check_object_name("container", container)?;
        let directory = checkpoint_dir
            .to_str()
            .filter(|_| checkpoint_dir.is_absolute())
            .ok_or_else(|| {
                DockerError::InvalidInput(format!(
                    "checkpoint directory {} must be an absolute UTF-8 path",
                    checkpoint_dir.display()
                ))
            })?;
        let running = self
            .inspect_container(container)?
            .pointer("/State/Running")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        if !running {
            return Err(DockerError::InvalidInput(format!(
                "container {container} is not running; only a running container can be checkpointed"
            )));
        }
        self.require_experimental_engine()?;
        let id = checkpoint_id();
        let options = CreateCheckpointOptions {
            checkpoint_id: id.clone(),
            checkpoint_dir: Some(directory.to_string()),
            exit: !leave_running,
        };
        self.block_on(self.bulk.create_checkpoint(container, options))
            .map_err(|error| checkpoint_failure(&self.endpoint, error))?;
        Ok(Checkpoint {
            directory: checkpoint_dir.join(&id),
            id,
        })
    }

    fn require_experimental_engine(&self) -> Result<(), DockerError> {
        let info = self.block_on(self.api.info()).map_err(engine)?;
        if info.experimental_build == Some(true) {
            Ok(())
        } else {
            Err(DockerError::CheckpointUnsupported(format!(
                "the Docker engine at {} does not run in experimental mode; checkpoints need \
                 dockerd --experimental and CRIU on the engine's host",
                self.endpoint
            )))
        }
    }
}

fn missing_container(name: &str) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    let name = name.to_string();
    not_found_as(move || DockerError::NoSuchContainer(name))
}

fn checkpoint_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("cairn-{}-{:09}", now.as_secs(), now.subsec_nanos())
}

/// Tells an engine or CRIU that cannot checkpoint apart from other failures.
fn checkpoint_failure(endpoint: &str, error: bollard::errors::Error) -> DockerError {
    let message = message_of(&error);
    let lowered = message.to_lowercase();
    if status_of(&error) == Some(404) && lowered.contains("page not found") {
        return DockerError::CheckpointUnsupported(format!(
            "the Docker engine at {endpoint} has no checkpoint API (it needs dockerd --experimental): {message}"
        ));
    }
    if lowered.contains("criu") {
        return DockerError::CheckpointUnsupported(format!(
            "CRIU failed on the engine's host (is a CRIU that supports this kernel installed?): {message}"
        ));
    }
    engine(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::error::tests::server_error;

    #[test]
    fn criu_failures_are_reported_as_unsupported_checkpoints() {
        let error = checkpoint_failure(
            "unix:///x.sock",
            server_error(
                500,
                "Cannot checkpoint container c: runc did not terminate successfully: criu failed: type NOTIFY errno 0",
            ),
        );
        match error {
            DockerError::CheckpointUnsupported(message) => {
                assert!(
                    message.starts_with("CRIU failed on the engine's host"),
                    "{message}"
                );
                assert!(message.contains("errno 0"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_missing_checkpoint_route_means_no_experimental_mode() {
        let error = checkpoint_failure("tcp://h:2375", server_error(404, "page not found"));
        assert!(
            matches!(&error, DockerError::CheckpointUnsupported(m) if m.contains("tcp://h:2375") && m.contains("--experimental")),
            "{error:?}"
        );
    }

    #[test]
    fn other_checkpoint_errors_stay_engine_errors() {
        let error = checkpoint_failure("unix:///x", server_error(409, "container is paused"));
        assert!(matches!(error, DockerError::Engine(_)), "{error:?}");
    }

    #[test]
    fn checkpoint_ids_are_distinct_names() {
        let first = checkpoint_id();
        assert!(first.starts_with("cairn-"));
        assert!(first.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
