//! The Docker commands: `snapshot volume|container|image|checkpoint|compose` and the engine
//! targets of `restore` (`--to-volume`, `--to-container`, `--load-image`, `--to-compose`).
//! The work is done by `cairn::docker::ops`; this module parses, calls and prints.

use anyhow::Result;
use cairn::docker::Docker;
use cairn::docker::ops::{self, OpError, Quiesce, RestoreOptions, RestoredVolume, SnapshotLabels};
use clap::{Args, Subcommand};

use super::progress::Bar;
use super::{Cli, RestoreArgs, open};

#[derive(Subcommand)]
pub(super) enum DockerSnapshot {
    /// Snapshot a Docker volume's content (one tar stream; driver and labels recorded).
    Volume(VolumeArgs),
    /// Snapshot a container: its filesystem, its configuration and its named volumes.
    Container(ContainerArgs),
    /// Snapshot an image as `docker save` writes it.
    Image(ImageArgs),
    /// Checkpoint a running container with CRIU through the engine and store the checkpoint.
    Checkpoint(CheckpointArgs),
    /// Snapshot a compose project: its volumes and its containers' configurations.
    Compose(ComposeArgs),
}

#[derive(Args)]
pub(super) struct Labels {
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// A note stored with the snapshot.
    #[arg(long)]
    note: Option<String>,
    /// Print the result as one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct VolumeArgs {
    /// Volume name.
    name: String,
    /// Stop running containers that use the volume, start them again afterwards.
    #[arg(long, conflicts_with = "pause_containers")]
    stop_containers: bool,
    /// Pause running containers that use the volume, unpause them afterwards.
    #[arg(long)]
    pause_containers: bool,
    #[command(flatten)]
    labels: Labels,
}

#[derive(Args)]
pub(super) struct ContainerArgs {
    /// Container name or id.
    name: String,
    /// Pause the container while it is read.
    #[arg(long)]
    pause: bool,
    /// Leave its volumes out.
    #[arg(long)]
    no_volumes: bool,
    #[command(flatten)]
    labels: Labels,
}

#[derive(Args)]
pub(super) struct ImageArgs {
    /// Image reference (name:tag or id).
    reference: String,
    #[command(flatten)]
    labels: Labels,
}

#[derive(Args)]
pub(super) struct CheckpointArgs {
    /// Container name or id (must be running).
    name: String,
    /// Keep the container running after the checkpoint (by default it stops).
    #[arg(long)]
    leave_running: bool,
    #[command(flatten)]
    labels: Labels,
}

#[derive(Args)]
pub(super) struct ComposeArgs {
    /// Compose project name (label com.docker.compose.project).
    project: String,
    /// Stop the project's running containers, start them again afterwards.
    #[arg(long, conflicts_with = "pause")]
    stop: bool,
    /// Pause the project's running containers, unpause them afterwards.
    #[arg(long)]
    pause: bool,
    #[command(flatten)]
    labels: Labels,
}

/// The Docker targets of `restore`.
#[derive(Args)]
pub(super) struct DockerRestoreArgs {
    /// Restore a tar stream into this Docker volume (created if missing).
    #[arg(long, value_name = "VOLUME", conflicts_with_all = ["output", "extract", "to_container", "load_image", "to_compose"])]
    to_volume: Option<String>,
    /// Recreate the container of a container snapshot under this name.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["output", "extract", "load_image", "to_compose", "stream"])]
    to_container: Option<String>,
    /// Load the image of an image snapshot into the engine.
    #[arg(long, conflicts_with_all = ["output", "extract", "to_compose"])]
    load_image: bool,
    /// Restore every volume of a compose snapshot into this compose project.
    #[arg(long, value_name = "PROJECT", conflicts_with_all = ["output", "extract", "stream"])]
    to_compose: Option<String>,
    /// Replace the content of non-empty volumes (emptied first, not merged).
    #[arg(long, conflicts_with_all = ["output", "extract"])]
    force: bool,
    /// Stop containers using a target volume, start them again afterwards.
    #[arg(long, conflicts_with_all = ["output", "extract"])]
    stop_containers: bool,
    /// Start the restored container.
    #[arg(long, requires = "to_container")]
    start: bool,
}

impl DockerRestoreArgs {
    pub(super) fn requested(&self) -> bool {
        self.to_volume.is_some()
            || self.to_container.is_some()
            || self.load_image
            || self.to_compose.is_some()
    }

    fn options(&self) -> RestoreOptions {
        RestoreOptions {
            force: self.force,
            stop_containers: self.stop_containers,
        }
    }
}

/// Keeps repository errors as they are (also under cleanup notes), so that damage still exits
/// with its own code.
fn failure(error: OpError) -> anyhow::Error {
    match error {
        OpError::Repo(inner) => inner.into(),
        OpError::WithCleanup { failure, cleanup } => match *failure {
            OpError::Repo(inner) => {
                anyhow::Error::from(inner).context(format!("failed ({cleanup})"))
            }
            other => OpError::WithCleanup {
                failure: Box::new(other),
                cleanup,
            }
            .into(),
        },
        other => other.into(),
    }
}

fn labels_of(labels: &Labels) -> SnapshotLabels {
    SnapshotLabels {
        tags: labels.tags.clone(),
        note: labels.note.clone(),
    }
}

pub(super) fn snapshot(cli: &Cli, command: &DockerSnapshot) -> Result<()> {
    ops::install_interrupt_guard();
    let repo = open(cli)?;
    let docker = Docker::connect()?;
    let bar = Bar::new(cli.quiet);
    let (outcome, labels) = match command {
        DockerSnapshot::Volume(args) => {
            let quiesce = match (args.stop_containers, args.pause_containers) {
                (true, _) => Quiesce::Stop,
                (_, true) => Quiesce::Pause,
                _ => Quiesce::None,
            };
            let labels = labels_of(&args.labels);
            let outcome = ops::snapshot_volume(&repo, &docker, &args.name, quiesce, &labels, &bar);
            (outcome, &args.labels)
        }
        DockerSnapshot::Container(args) => {
            let labels = labels_of(&args.labels);
            let outcome = ops::snapshot_container(
                &repo,
                &docker,
                &args.name,
                args.pause,
                !args.no_volumes,
                &labels,
                &bar,
            );
            (outcome, &args.labels)
        }
        DockerSnapshot::Image(args) => {
            let labels = labels_of(&args.labels);
            let outcome = ops::snapshot_image(&repo, &docker, &args.reference, &labels, &bar);
            (outcome, &args.labels)
        }
        DockerSnapshot::Checkpoint(args) => {
            let labels = labels_of(&args.labels);
            let outcome = ops::snapshot_checkpoint(
                &repo,
                &docker,
                &args.name,
                args.leave_running,
                &labels,
                &bar,
            );
            (outcome, &args.labels)
        }
        DockerSnapshot::Compose(args) => {
            let quiesce = match (args.stop, args.pause) {
                (true, _) => Quiesce::Stop,
                (_, true) => Quiesce::Pause,
                _ => Quiesce::None,
            };
            let labels = labels_of(&args.labels);
            let outcome =
                ops::snapshot_compose(&repo, &docker, &args.project, quiesce, &labels, &bar);
            (outcome, &args.labels)
        }
    };
    drop(bar);
    super::print_outcome(&outcome.map_err(failure)?, labels.json)
}

pub(super) fn restore(cli: &Cli, args: &RestoreArgs) -> Result<()> {
    ops::install_interrupt_guard();
    let repo = open(cli)?;
    // Held so that gc cannot delete packs while they are being read.
    let _lock = repo.lock(cairn::lock::LockKind::Shared, "restore")?;
    let (id, manifest) = repo.resolve_snapshot(&args.snapshot)?;
    let docker = Docker::connect()?;
    let bar = Bar::new(cli.quiet);
    let target = &args.docker;
    let stream = args.stream.as_deref();
    let report = |volume: &RestoredVolume| {
        let fate = match volume.fate {
            ops::VolumeFate::Created => "created",
            ops::VolumeFate::Filled => "was empty",
            ops::VolumeFate::Replaced => "old content replaced",
        };
        format!(
            "restored {} of snapshot {} into volume {} ({fate})",
            volume.stream,
            id.short(),
            volume.volume
        )
    };
    let lines: Vec<String> = if let Some(volume) = &target.to_volume {
        let restored = ops::restore_to_volume(
            &repo,
            &docker,
            &manifest,
            stream,
            volume,
            target.options(),
            &bar,
        )
        .map_err(failure)?;
        vec![report(&restored)]
    } else if let Some(project) = &target.to_compose {
        ops::restore_to_compose(&repo, &docker, &manifest, project, target.options(), &bar)
            .map_err(failure)?
            .iter()
            .map(report)
            .collect()
    } else if let Some(name) = &target.to_container {
        let restored = ops::restore_to_container(
            &repo,
            &docker,
            &id,
            &manifest,
            name,
            target.options(),
            target.start,
            &bar,
        )
        .map_err(failure)?;
        let mut lines: Vec<String> = restored.volumes.iter().map(report).collect();
        lines.push(format!(
            "restored container {} ({}) from snapshot {} with image {}{}",
            restored.container,
            &restored.container_id[..12.min(restored.container_id.len())],
            id.short(),
            restored.image,
            if restored.started { "; started" } else { "" }
        ));
        lines
    } else {
        let loaded = ops::load_image(&repo, &docker, &manifest, stream, &bar).map_err(failure)?;
        vec![format!(
            "loaded image {}{}",
            loaded.loaded.join(", "),
            loaded
                .id
                .map(|image| format!(" (id {image})"))
                .unwrap_or_default()
        )]
    };
    drop(bar);
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
