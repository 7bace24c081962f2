//! Restores into the engine: volumes, containers, images, compose projects.
//!
//! A restore first checks everything it will need (targets free or empty, or `force`; no
//! container using a volume, or `stop_containers`) and changes nothing when a check fails. Then
//! it verifies every stream that will replace existing data, stops containers, writes, and
//! starts the containers again whatever happened. What it created (volumes, an image) is removed
//! again when it fails.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::Id;
use crate::docker::{ContainerRef, Docker, DockerError, VolumeInfo};
use crate::format::manifest::{Manifest, StreamEntry};
use crate::progress::Progress;
use crate::repo::Repo;

use super::changes::{create_body, image_reference_for, import_changes};
use super::fill::{
    Emptying, empty_directory, emptying_method, read_json_stream, restore_through, users_of,
    verify_stream,
};
use super::meta::{COMPOSE_PROJECT_LABEL, COMPOSE_VOLUME_LABEL, recorded_volumes};
use super::quiesce::{Quiesce, Quiesced};
use super::{OpError, OpResult, settle, test_failure_point};

/// How far a restore may go.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreOptions {
    /// Replace the content of non-empty volumes (emptied first, never merged).
    pub force: bool,
    /// Stop containers using a target volume for the restore, and start them again afterwards.
    pub stop_containers: bool,
}

/// What a restore did to a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeFate {
    /// It did not exist and was created (with the recorded driver, options and labels).
    Created,
    /// It existed and was empty.
    Filled,
    /// It held data, which was deleted and replaced.
    Replaced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoredVolume {
    pub volume: String,
    pub stream: String,
    pub fate: VolumeFate,
}

/// One stream to restore into one volume.
struct VolumeTarget<'m> {
    stream: &'m StreamEntry,
    volume: String,
    /// How to create the volume if it is missing.
    recorded: Option<VolumeInfo>,
}

/// A checked target: what will happen to it.
struct VolumePlan<'m> {
    target: VolumeTarget<'m>,
    fate: VolumeFate,
    emptying: Option<Emptying>,
}

/// Checked volume restores, and the containers that must be stopped for them.
struct Plans<'m> {
    plans: Vec<VolumePlan<'m>>,
    to_stop: Vec<ContainerRef>,
}

/// Checks every target; changes nothing (beyond a probe file) and fails on the first problem.
fn plan_volumes<'m>(
    docker: &Docker,
    targets: Vec<VolumeTarget<'m>>,
    options: RestoreOptions,
) -> OpResult<Plans<'m>> {
    let mut plans = Vec::new();
    let mut to_stop: Vec<ContainerRef> = Vec::new();
    for target in targets {
        if target.stream.role != "tar" {
            return Err(OpError::Refused(format!(
                "stream {} is not a tar archive (role {}); only tar streams can fill a volume",
                target.stream.name, target.stream.role
            )));
        }
        let existing = match docker.inspect_volume(&target.volume) {
            Ok(info) => Some(info),
            Err(DockerError::NoSuchVolume(_)) => None,
            Err(error) => return Err(error.into()),
        };
        let Some(existing) = existing else {
            plans.push(VolumePlan {
                target,
                fate: VolumeFate::Created,
                emptying: None,
            });
            continue;
        };
        let users = users_of(docker, &target.volume)?;
        let active: Vec<ContainerRef> = users
            .iter()
            .filter(|user| user.state.has_processes())
            .cloned()
            .collect();
        if !active.is_empty() && !options.stop_containers {
            return Err(DockerError::VolumeInUse {
                volume: target.volume.clone(),
                containers: active.iter().map(|user| user.name.clone()).collect(),
                action: "add --stop-containers to stop them for the restore (they are started \
                         again afterwards), or stop them yourself"
                    .into(),
            }
            .into());
        }
        let empty = docker.volume_is_empty(&target.volume)?;
        if !empty && !options.force {
            return Err(OpError::Refused(format!(
                "Docker volume {} is not empty; add --force to replace its content (it is \
                 emptied first, not merged)",
                target.volume
            )));
        }
        let emptying = if empty {
            None
        } else {
            Some(emptying_method(docker, &existing, &users)?)
        };
        for user in active {
            if !to_stop.iter().any(|known| known.id == user.id) {
                to_stop.push(user);
            }
        }
        plans.push(VolumePlan {
            target,
            fate: if empty {
                VolumeFate::Filled
            } else {
                VolumeFate::Replaced
            },
            emptying,
        });
    }
    Ok(Plans { plans, to_stop })
}

/// Carries out checked plans: verifies the streams that replace data, stops the containers,
/// fills the volumes, starts the containers again. On failure, volumes it created are removed.
fn apply_volume_plans(
    repo: &Repo,
    docker: &Docker,
    plans: Plans<'_>,
    progress: &dyn Progress,
) -> OpResult<Vec<RestoredVolume>> {
    for plan in &plans.plans {
        if plan.fate == VolumeFate::Replaced {
            verify_stream(repo, plan.target.stream, progress)?;
        }
    }
    let mut held = Quiesced::hold(docker, &plans.to_stop, Quiesce::Stop, true)?;
    let mut created: Vec<String> = Vec::new();
    let mut failed_on: Option<&VolumePlan<'_>> = None;
    let result = test_failure_point("restore, after stopping containers").and_then(|()| {
        let mut restored = Vec::new();
        for plan in &plans.plans {
            match fill_volume(repo, docker, plan, &mut created, progress) {
                Ok(volume) => restored.push(volume),
                Err(error) => {
                    failed_on = Some(plan);
                    return Err(error);
                }
            }
        }
        Ok(restored)
    });
    let mut problems = held.resume();
    drop(held);
    if result.is_err() {
        problems.extend(remove_volumes(docker, &created));
        problems.extend(failed_on.and_then(partial_restore_note));
    }
    settle(result, problems, "the volumes were restored")
}

/// What a volume that existed holds after its restore failed midway.
fn partial_restore_note(plan: &VolumePlan<'_>) -> Option<String> {
    let volume = &plan.target.volume;
    match plan.fate {
        VolumeFate::Created => None,
        VolumeFate::Filled => Some(format!(
            "volume {volume} may hold part of the restored content"
        )),
        VolumeFate::Replaced => Some(format!(
            "volume {volume} may hold an incomplete restore: its old content was deleted"
        )),
    }
}

fn remove_volumes(docker: &Docker, names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter_map(|name| {
            docker
                .remove_volume(name)
                .err()
                .map(|error| format!("could not remove the volume {name} it created: {error}"))
        })
        .collect()
}

fn fill_volume(
    repo: &Repo,
    docker: &Docker,
    plan: &VolumePlan<'_>,
    created: &mut Vec<String>,
    progress: &dyn Progress,
) -> OpResult<RestoredVolume> {
    let name = plan.target.volume.as_str();
    let mut remove_and_recreate = false;
    match (&plan.fate, &plan.emptying) {
        (VolumeFate::Created, _) => {
            let (driver, driver_opts, labels) = match &plan.target.recorded {
                Some(info) => (info.driver.as_str(), &info.driver_opts, &info.labels),
                None => ("local", &BTreeMap::new(), &BTreeMap::new()),
            };
            docker.create_volume(name, driver, driver_opts, labels)?;
            created.push(name.to_string());
        }
        (_, Some(Emptying::HostPath(path))) => {
            empty_directory(path)?;
            if !docker.volume_is_empty(name)? {
                return Err(DockerError::CannotEmptyVolume {
                    volume: name.to_string(),
                    reason: format!(
                        "{} was emptied but the engine still shows content",
                        path.display()
                    ),
                }
                .into());
            }
        }
        (_, Some(Emptying::RemoveAndRecreate)) => remove_and_recreate = true,
        (_, None) => {}
    }
    restore_through(repo, plan.target.stream, progress, |reader| {
        docker.import_volume(name, reader, remove_and_recreate)
    })?;
    Ok(RestoredVolume {
        volume: name.to_string(),
        stream: plan.target.stream.name.clone(),
        fate: plan.fate,
    })
}

fn volume_streams(manifest: &Manifest) -> Vec<&StreamEntry> {
    manifest
        .streams
        .iter()
        .filter(|s| s.name.starts_with("volume/"))
        .collect()
}

fn names_of(streams: &[&StreamEntry]) -> String {
    streams
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The stream `restore --to-volume` uses: the one named, the only stream, or the only
/// `volume/...` stream.
fn pick_volume_stream<'m>(manifest: &'m Manifest, name: Option<&str>) -> OpResult<&'m StreamEntry> {
    let all: Vec<&StreamEntry> = manifest.streams.iter().collect();
    if let Some(name) = name {
        return all.iter().copied().find(|s| s.name == name).ok_or_else(|| {
            OpError::Refused(format!(
                "no stream {name:?} in this snapshot (streams: {})",
                names_of(&all)
            ))
        });
    }
    if let [only] = all.as_slice() {
        return Ok(only);
    }
    match volume_streams(manifest).as_slice() {
        [only] => Ok(only),
        [] => Err(OpError::Refused(format!(
            "this snapshot has no volume stream; choose a tar stream with --stream ({})",
            names_of(&all)
        ))),
        several => Err(OpError::Refused(format!(
            "this snapshot holds several volumes; choose one with --stream ({})",
            names_of(several)
        ))),
    }
}

/// The volume a stream was taken from, as the snapshot recorded it.
fn recorded_for(manifest: &Manifest, stream: &StreamEntry) -> Option<VolumeInfo> {
    let recorded = recorded_volumes(&manifest.meta);
    let original = match stream.name.strip_prefix("volume/") {
        Some(name) => name.to_string(),
        None => manifest
            .meta
            .pointer("/volume/name")
            .and_then(Value::as_str)?
            .to_string(),
    };
    recorded.get(&original).cloned()
}

/// `restore --to-volume`: one tar stream into one volume.
pub fn restore_to_volume(
    repo: &Repo,
    docker: &Docker,
    manifest: &Manifest,
    stream: Option<&str>,
    volume: &str,
    options: RestoreOptions,
    progress: &dyn Progress,
) -> OpResult<RestoredVolume> {
    let stream = pick_volume_stream(manifest, stream)?;
    let target = VolumeTarget {
        stream,
        volume: volume.to_string(),
        recorded: recorded_for(manifest, stream),
    };
    let plans = plan_volumes(docker, vec![target], options)?;
    let mut restored = apply_volume_plans(repo, docker, plans, progress)?;
    restored
        .pop()
        .ok_or_else(|| OpError::Refused("nothing was restored".into()))
}

/// `restore --to-compose`: every volume stream of a compose snapshot into the volumes of
/// `project`. Restoring into the snapshot's own project uses the original volume names; another
/// project gets the volume compose would use (an existing volume of that project with the same
/// `com.docker.compose.volume` label, else `<project>_<volume>`), labelled for that project.
pub fn restore_to_compose(
    repo: &Repo,
    docker: &Docker,
    manifest: &Manifest,
    project: &str,
    options: RestoreOptions,
    progress: &dyn Progress,
) -> OpResult<Vec<RestoredVolume>> {
    let streams = volume_streams(manifest);
    if streams.is_empty() {
        return Err(OpError::Refused(format!(
            "this {} snapshot holds no volume streams to restore into a compose project",
            manifest.kind
        )));
    }
    let same_project = manifest.kind == "compose" && manifest.source == project;
    let label = format!("{COMPOSE_PROJECT_LABEL}={project}");
    let project_volumes = if same_project {
        Vec::new()
    } else {
        docker.list_volumes_with_label(&label)?
    };
    let mut targets = Vec::new();
    for stream in streams {
        let mut recorded = recorded_for(manifest, stream);
        let original = stream.name.trim_start_matches("volume/").to_string();
        let volume = if same_project {
            original
        } else {
            let compose_name = recorded
                .as_ref()
                .and_then(|info| info.labels.get(COMPOSE_VOLUME_LABEL).cloned());
            if let Some(info) = recorded.as_mut() {
                info.labels
                    .insert(COMPOSE_PROJECT_LABEL.into(), project.to_string());
            }
            match compose_name {
                Some(short) => project_volumes
                    .iter()
                    .find(|v| v.labels.get(COMPOSE_VOLUME_LABEL) == Some(&short))
                    .map(|v| v.name.clone())
                    .unwrap_or_else(|| format!("{project}_{short}")),
                None => original,
            }
        };
        targets.push(VolumeTarget {
            stream,
            volume,
            recorded,
        });
    }
    let plans = plan_volumes(docker, targets, options)?;
    apply_volume_plans(repo, docker, plans, progress)
}

/// What `restore --to-container` made.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerRestore {
    pub container: String,
    pub container_id: String,
    /// The image imported from the `fs` stream.
    pub image: String,
    pub image_id: String,
    pub volumes: Vec<RestoredVolume>,
    pub started: bool,
}

/// `restore --to-container`: recreates a container from a container snapshot under `name`.
///
/// The `fs` stream becomes an image (`cairn-restore/<name>:<snapshot>`) carrying the original
/// CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE and LABELs; each `volume/<v>` stream is restored
/// into the volume of the original name `v` (created if missing; an existing one must be empty
/// unless `force`); the container is created with the original configuration, mounts, ports and
/// restart policy, and started with `start`. On failure before the container exists, the image
/// and the volumes it created are removed.
#[allow(clippy::too_many_arguments)]
pub fn restore_to_container(
    repo: &Repo,
    docker: &Docker,
    snapshot: &Id,
    manifest: &Manifest,
    name: &str,
    options: RestoreOptions,
    start: bool,
    progress: &dyn Progress,
) -> OpResult<ContainerRestore> {
    let find = |wanted: &str| manifest.streams.iter().find(|s| s.name == wanted);
    let (Some(fs), Some(config)) = (find("fs"), find("config")) else {
        return Err(OpError::Refused(format!(
            "snapshot {} is a {} snapshot; --to-container needs a container snapshot (streams fs and config)",
            snapshot.short(),
            manifest.kind
        )));
    };
    match docker.inspect_container(name) {
        Ok(_) => {
            return Err(OpError::Refused(format!(
                "a container named {name} already exists; choose another name or remove it first"
            )));
        }
        Err(DockerError::NoSuchContainer(_)) => {}
        Err(error) => return Err(error.into()),
    }
    let inspect = read_json_stream(repo, config)?;
    let targets = volume_streams(manifest)
        .into_iter()
        .map(|stream| VolumeTarget {
            stream,
            volume: stream.name.trim_start_matches("volume/").to_string(),
            recorded: recorded_for(manifest, stream),
        })
        .collect();
    let plans = plan_volumes(docker, targets, options)?;

    let image = image_reference_for(name, snapshot);
    let changes = import_changes(inspect.get("Config").unwrap_or(&Value::Null));
    let image_id = restore_through(repo, fs, progress, |reader| {
        docker.import_image(reader, &image, &changes)
    })?;
    let remove_image = || {
        docker
            .remove_image(&image)
            .err()
            .map(|error| format!("could not remove the image {image} it imported: {error}"))
    };
    let volumes = match apply_volume_plans(repo, docker, plans, progress) {
        Ok(volumes) => volumes,
        Err(error) => return Err(error.with_cleanup(remove_image().into_iter().collect())),
    };
    let container_id = match docker.create_container(name, create_body(&inspect, &image)) {
        Ok(id) => id,
        Err(error) => {
            let created: Vec<String> = volumes
                .iter()
                .filter(|v| v.fate == VolumeFate::Created)
                .map(|v| v.volume.clone())
                .collect();
            let mut problems = remove_volumes(docker, &created);
            problems.extend(remove_image());
            return Err(OpError::from(error).with_cleanup(problems));
        }
    };
    if start && let Err(error) = docker.start_container(&container_id) {
        return Err(OpError::Refused(format!(
            "container {name} ({}) was restored but did not start: {error}",
            &container_id[..12.min(container_id.len())]
        )));
    }
    Ok(ContainerRestore {
        container: name.to_string(),
        container_id,
        image,
        image_id,
        volumes,
        started: start,
    })
}

/// What `restore --load-image` loaded.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedImage {
    /// What the engine reported loading ("name:tag", or "sha256:..." for untagged images).
    pub loaded: Vec<String>,
    /// The image id the snapshot recorded, now present on the engine.
    pub id: Option<String>,
}

/// `restore --load-image`: loads the `docker save` stream back into the engine.
pub fn load_image(
    repo: &Repo,
    docker: &Docker,
    manifest: &Manifest,
    stream: Option<&str>,
    progress: &dyn Progress,
) -> OpResult<LoadedImage> {
    let wanted = stream.unwrap_or("image");
    let Some(stream) = manifest.streams.iter().find(|s| s.name == wanted) else {
        return Err(OpError::Refused(format!(
            "this {} snapshot has no stream {wanted:?}; --load-image needs an image snapshot",
            manifest.kind
        )));
    };
    let loaded = restore_through(repo, stream, progress, |reader| docker.load_image(reader))?;
    let recorded = manifest
        .meta
        .pointer("/image/id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty());
    let id = match recorded {
        Some(id) => Some(docker.image_id(id).map_err(|error| {
            OpError::Refused(format!(
                "the engine loaded {} but does not have the recorded image {id}: {error}",
                loaded.join(", ")
            ))
        })?),
        None => None,
    };
    Ok(LoadedImage { loaded, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str) -> StreamEntry {
        StreamEntry {
            name: name.into(),
            role: "tar".into(),
            root: Id::of(name.as_bytes()),
            length: 1,
            digest: Id::of(name.as_bytes()),
            members: None,
        }
    }

    fn manifest(streams: &[&str], meta: Value) -> Manifest {
        Manifest {
            format: crate::format::manifest::FORMAT_NAME.into(),
            version: crate::format::manifest::VERSION,
            time: "2026-01-01T00:00:00Z".into(),
            kind: "container".into(),
            source: "web".into(),
            host: "h".into(),
            tags: vec![],
            note: None,
            meta,
            streams: streams.iter().map(|s| stream(s)).collect(),
            added: Default::default(),
        }
    }

    #[test]
    fn the_volume_stream_is_the_only_one_or_must_be_named() {
        let single = manifest(&["data"], Value::Null);
        assert_eq!(pick_volume_stream(&single, None).unwrap().name, "data");
        let bundle = manifest(&["fs", "config", "volume/a"], Value::Null);
        assert_eq!(pick_volume_stream(&bundle, None).unwrap().name, "volume/a");
        let two = manifest(&["fs", "config", "volume/a", "volume/b"], Value::Null);
        let error = pick_volume_stream(&two, None).unwrap_err().to_string();
        assert!(error.contains("volume/a, volume/b"), "{error}");
        assert_eq!(
            pick_volume_stream(&two, Some("volume/b")).unwrap().name,
            "volume/b"
        );
        assert!(pick_volume_stream(&two, Some("nope")).is_err());
        let none = manifest(&["fs", "config"], Value::Null);
        assert!(pick_volume_stream(&none, None).is_err());
    }

    #[test]
    fn the_recorded_volume_is_found_by_stream_or_by_the_volume_snapshot() {
        let info = |name: &str| VolumeInfo {
            name: name.into(),
            driver: "local".into(),
            driver_opts: BTreeMap::new(),
            labels: BTreeMap::new(),
            mountpoint: String::new(),
        };
        let single = manifest(&["data"], serde_json::json!({"volume": info("db")}));
        assert_eq!(
            recorded_for(&single, &single.streams[0]).unwrap().name,
            "db"
        );
        let bundle = manifest(
            &["volume/a", "volume/b"],
            serde_json::json!({"volumes": {"a": info("a")}}),
        );
        assert_eq!(recorded_for(&bundle, &bundle.streams[0]).unwrap().name, "a");
        assert!(recorded_for(&bundle, &bundle.streams[1]).is_none());
    }
}
