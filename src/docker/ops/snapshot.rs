//! Snapshots of Docker objects.
//!
//! Every snapshot first opens its repository session (which may wait for a lock), then stops or
//! pauses containers if asked, reads everything it needs from the engine, puts the containers
//! back at once, and only then commits — so containers are held for the time it takes to read,
//! never for a lock wait or the final flush.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::docker::{ContainerRef, ContainerState, Docker, DockerError, VolumeInfo};
use crate::ingest::{SnapshotOutcome, SnapshotSession, SnapshotSpec, StreamInput};
use crate::progress::Progress;
use crate::repo::Repo;

use super::fill::users_of;
use super::meta::{
    COMPOSE_PROJECT_LABEL, COMPOSE_SERVICE_LABEL, ContainerMeta, container_config_stream_name,
    mounts_of, volume_names, volume_stream_name,
};
use super::quiesce::{Quiesce, Quiesced};
use super::{OpError, OpResult, test_failure_point};

/// Tags and note given to a snapshot.
#[derive(Clone, Debug, Default)]
pub struct SnapshotLabels {
    pub tags: Vec<String>,
    pub note: Option<String>,
}

impl SnapshotLabels {
    fn spec(&self, kind: &str, source: &str, meta: Value) -> SnapshotSpec {
        SnapshotSpec {
            kind: kind.to_string(),
            source: source.to_string(),
            tags: self.tags.clone(),
            note: self.note.clone(),
            meta,
        }
    }
}

/// Runs `read` (which adds the streams) with `held` containers held, puts them back, and
/// commits. A failure to put a container back is reported even when the snapshot was saved.
fn read_then_commit<'r>(
    mut session: SnapshotSession<'r>,
    mut held: Quiesced<'_>,
    read: impl FnOnce(&mut SnapshotSession<'r>) -> OpResult<()>,
    spec: impl FnOnce(&Quiesced<'_>) -> SnapshotSpec,
) -> OpResult<SnapshotOutcome> {
    let read =
        test_failure_point("snapshot, after stopping containers").and_then(|()| read(&mut session));
    let problems = held.resume();
    let spec = spec(&held);
    drop(held);
    if let Err(error) = read {
        return Err(error.with_cleanup(problems));
    }
    let outcome = session.commit(spec)?;
    if problems.is_empty() {
        Ok(outcome)
    } else {
        Err(OpError::Refused(format!(
            "snapshot {} was saved, but putting containers back failed: {}",
            outcome.id,
            problems.join("; ")
        )))
    }
}

fn add_json(session: &mut SnapshotSession<'_>, name: String, document: &Value) -> OpResult<()> {
    let bytes = serde_json::to_vec_pretty(document)
        .map_err(|error| OpError::Refused(format!("cannot encode {name}: {error}")))?;
    session.add_stream(StreamInput {
        name,
        role: "json".into(),
        reader: Box::new(std::io::Cursor::new(bytes)),
    })?;
    Ok(())
}

fn add_volume(
    session: &mut SnapshotSession<'_>,
    docker: &Docker,
    stream: String,
    volume: &str,
    progress: &dyn Progress,
) -> OpResult<()> {
    progress.start(&format!("volume {volume}"), None);
    let reader = docker.export_volume(volume)?;
    session.add_stream(StreamInput {
        name: stream,
        role: "tar".into(),
        reader: Box::new(reader),
    })?;
    Ok(())
}

/// `snapshot volume`: the volume's content as one tar stream "data".
pub fn snapshot_volume(
    repo: &Repo,
    docker: &Docker,
    volume: &str,
    quiesce: Quiesce,
    labels: &SnapshotLabels,
    progress: &dyn Progress,
) -> OpResult<SnapshotOutcome> {
    let info = docker.inspect_volume(volume)?;
    let users = users_of(docker, volume)?;
    let session = repo.begin_snapshot(progress)?;
    let held = Quiesced::hold(docker, &users, quiesce, false)?;
    read_then_commit(
        session,
        held,
        |session| add_volume(session, docker, "data".into(), volume, progress),
        |held| {
            labels.spec(
                "volume",
                volume,
                json!({"volume": info, "quiesce": quiesce.as_str(), "containers": held.names()}),
            )
        },
    )
}

/// The container of an inspect document, as the quiesce guard needs it.
fn container_ref(inspect: &Value, meta: &ContainerMeta) -> ContainerRef {
    let status = inspect
        .pointer("/State/Status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    ContainerRef {
        id: meta.id.clone(),
        name: meta.name.clone(),
        image: meta.image.clone(),
        state: ContainerState::from_engine(status),
        labels: BTreeMap::new(),
    }
}

fn volume_infos(docker: &Docker, names: &[String]) -> OpResult<BTreeMap<String, VolumeInfo>> {
    names
        .iter()
        .map(|name| Ok((name.clone(), docker.inspect_volume(name)?)))
        .collect()
}

/// `snapshot container`: streams `fs` (the exported filesystem), `config` (the inspect
/// document) and `volume/<name>` for every named volume it mounts (unless `with_volumes` is
/// false). With `pause`, the container is paused while it is read.
pub fn snapshot_container(
    repo: &Repo,
    docker: &Docker,
    container: &str,
    pause: bool,
    with_volumes: bool,
    labels: &SnapshotLabels,
    progress: &dyn Progress,
) -> OpResult<SnapshotOutcome> {
    let inspect = docker.inspect_container(container)?;
    let meta = ContainerMeta::from_inspect(&inspect);
    let mounts = mounts_of(&inspect);
    let volumes = if with_volumes {
        volume_infos(docker, &volume_names(&mounts))?
    } else {
        BTreeMap::new()
    };
    let session = repo.begin_snapshot(progress)?;
    let how = if pause { Quiesce::Pause } else { Quiesce::None };
    let held = Quiesced::hold(docker, &[container_ref(&inspect, &meta)], how, false)?;
    let name = meta.name.clone();
    read_then_commit(
        session,
        held,
        |session| {
            progress.start(&format!("container {name}"), None);
            let fs = docker.export_container(&meta.id)?;
            session.add_stream(StreamInput {
                name: "fs".into(),
                role: "tar".into(),
                reader: Box::new(fs),
            })?;
            add_json(session, "config".into(), &inspect)?;
            for volume in volumes.keys() {
                add_volume(
                    session,
                    docker,
                    volume_stream_name(volume),
                    volume,
                    progress,
                )?;
            }
            Ok(())
        },
        |_| {
            labels.spec(
                "container",
                &name,
                json!({"container": meta, "volumes": volumes, "mounts": mounts, "paused": pause}),
            )
        },
    )
}

/// `snapshot image`: the `docker save` stream of the image as stream "image".
pub fn snapshot_image(
    repo: &Repo,
    docker: &Docker,
    reference: &str,
    labels: &SnapshotLabels,
    progress: &dyn Progress,
) -> OpResult<SnapshotOutcome> {
    let inspect = docker.inspect_image(reference)?;
    let id = inspect
        .get("Id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let tags = inspect.get("RepoTags").cloned().unwrap_or(Value::Null);
    let mut session = repo.begin_snapshot(progress)?;
    progress.start(&format!("image {reference}"), None);
    let saved = docker.save_image(reference)?;
    session.add_stream(StreamInput {
        name: "image".into(),
        role: "tar".into(),
        reader: Box::new(saved),
    })?;
    let meta = json!({"image": {"id": id, "reference": reference, "repo_tags": tags}});
    Ok(session.commit(labels.spec("image", reference, meta))?)
}

/// `snapshot checkpoint`: a CRIU checkpoint through the engine, stored as the checkpoint
/// directory (stream "checkpoint", a deterministic tar) plus the container's inspect document
/// ("config"). Without `leave_running` the container stops, as `docker checkpoint create` does.
///
/// The engine writes the checkpoint on its own host, into a temporary directory here; that only
/// works when cairn runs on the engine's host, which is checked.
pub fn snapshot_checkpoint(
    repo: &Repo,
    docker: &Docker,
    container: &str,
    leave_running: bool,
    labels: &SnapshotLabels,
    progress: &dyn Progress,
) -> OpResult<SnapshotOutcome> {
    let inspect = docker.inspect_container(container)?;
    let meta = ContainerMeta::from_inspect(&inspect);
    let mut session = repo.begin_snapshot(progress)?;
    let scratch = tempfile::Builder::new()
        .prefix("cairn-checkpoint-")
        .tempdir()
        .map_err(|error| crate::Error::io(std::env::temp_dir(), error))?;
    progress.start(&format!("checkpoint {}", meta.name), None);
    let checkpoint = docker.checkpoint_container(&meta.id, scratch.path(), leave_running)?;
    if !checkpoint.directory.is_dir() {
        return Err(OpError::Refused(format!(
            "the engine wrote checkpoint {} to {} on its own host, which is not visible here; \
             run cairn on the engine's host",
            checkpoint.id,
            checkpoint.directory.display()
        )));
    }
    session.add_stream(StreamInput {
        name: "checkpoint".into(),
        role: "tar".into(),
        reader: Box::new(crate::source::dir_reader(checkpoint.directory.clone())),
    })?;
    add_json(&mut session, "config".into(), &inspect)?;
    let spec = labels.spec(
        "checkpoint",
        &meta.name,
        json!({
            "container": meta,
            "checkpoint": {"id": checkpoint.id, "leave_running": leave_running},
        }),
    );
    Ok(session.commit(spec)?)
}

/// `snapshot compose`: every volume (`volume/<name>`) and every container's inspect document
/// (`container/<name>/config`) labelled `com.docker.compose.project=<project>`.
pub fn snapshot_compose(
    repo: &Repo,
    docker: &Docker,
    project: &str,
    quiesce: Quiesce,
    labels: &SnapshotLabels,
    progress: &dyn Progress,
) -> OpResult<SnapshotOutcome> {
    let label = format!("{COMPOSE_PROJECT_LABEL}={project}");
    let containers = docker.list_containers_with_label(&label)?;
    let volumes = docker.list_volumes_with_label(&label)?;
    if containers.is_empty() && volumes.is_empty() {
        return Err(OpError::Refused(format!(
            "no containers or volumes carry the label {label}: is {project:?} the compose project name?"
        )));
    }
    // Read before stopping anything, so that the documents show the containers as they ran.
    let configs: Vec<(String, Value)> = containers
        .iter()
        .map(|c| Ok((c.name.clone(), docker.inspect_container(&c.id)?)))
        .collect::<Result<_, DockerError>>()?;
    let container_meta: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "id": c.id,
                "service": c.labels.get(COMPOSE_SERVICE_LABEL),
                "state": c.state,
            })
        })
        .collect();
    let volume_meta: BTreeMap<&str, &VolumeInfo> =
        volumes.iter().map(|v| (v.name.as_str(), v)).collect();
    let session = repo.begin_snapshot(progress)?;
    let held = Quiesced::hold(docker, &containers, quiesce, false)?;
    read_then_commit(
        session,
        held,
        |session| {
            for volume in &volumes {
                add_volume(
                    session,
                    docker,
                    volume_stream_name(&volume.name),
                    &volume.name,
                    progress,
                )?;
            }
            for (name, config) in &configs {
                add_json(session, container_config_stream_name(name), config)?;
            }
            Ok(())
        },
        |held| {
            labels.spec(
                "compose",
                project,
                json!({
                    "project": project,
                    "volumes": volume_meta,
                    "containers": container_meta,
                    "quiesce": quiesce.as_str(),
                    "held": held.names(),
                }),
            )
        },
    )
}
