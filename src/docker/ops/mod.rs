//! Docker workloads in and out of a repository: snapshots of volumes, containers, images,
//! checkpoints and compose projects, and their restores.
//!
//! These operations join the two halves of cairn — the [`Repo`](crate::Repo) and the engine
//! [`Docker`](super::Docker) — and hold the safety rules: containers stopped or paused for an
//! operation are always started or unpaused again (also on failure, and on SIGINT/SIGTERM once
//! [`install_interrupt_guard`] runs), a non-empty volume is only replaced with `force`, data in
//! a volume is only deleted once the stream replacing it has been read and verified in full, and
//! what an operation created is removed again when it fails.

mod changes;
mod fill;
mod meta;
mod quiesce;
mod restore;
mod snapshot;

use super::DockerError;

pub use changes::{image_reference_for, import_changes};
pub use meta::{
    COMPOSE_PROJECT_LABEL, COMPOSE_VOLUME_LABEL, ContainerMeta, MountMeta, recorded_volumes,
};
pub use quiesce::{Quiesce, install_interrupt_guard};
pub use restore::{
    ContainerRestore, LoadedImage, RestoreOptions, RestoredVolume, VolumeFate, load_image,
    restore_to_compose, restore_to_container, restore_to_volume,
};
pub use snapshot::{
    SnapshotLabels, snapshot_checkpoint, snapshot_compose, snapshot_container, snapshot_image,
    snapshot_volume,
};

/// Why a Docker operation failed.
#[derive(thiserror::Error, Debug)]
pub enum OpError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Repo(#[from] crate::Error),
    /// A reason cairn states itself: a refusal (before anything changed), or an outcome that
    /// needs attention.
    #[error("{0}")]
    Refused(String),
    /// The operation failed and, in addition, cleaning up after it (restarting containers,
    /// removing what it created) failed too.
    #[error("{failure}; in addition: {cleanup}")]
    WithCleanup {
        failure: Box<OpError>,
        cleanup: String,
    },
}

impl OpError {
    /// The repository error at the root of this failure, if it is one.
    pub fn repo_error(&self) -> Option<&crate::Error> {
        match self {
            OpError::Repo(error) => Some(error),
            OpError::WithCleanup { failure, .. } => failure.repo_error(),
            _ => None,
        }
    }

    /// Adds cleanup problems (if any) to a failure.
    fn with_cleanup(self, problems: Vec<String>) -> OpError {
        if problems.is_empty() {
            self
        } else {
            OpError::WithCleanup {
                failure: Box::new(self),
                cleanup: problems.join("; "),
            }
        }
    }
}

pub type OpResult<T> = Result<T, OpError>;

/// Test hooks of debug builds, run right after containers were stopped or paused, so that tests
/// can prove the containers come back: `CAIRN_TEST_FAIL_AFTER_STOP=1` makes the operation fail
/// there, `CAIRN_TEST_SLEEP_AFTER_STOP=<seconds>` makes it wait there (to be interrupted).
/// Release builds ignore both.
fn test_failure_point(point: &str) -> OpResult<()> {
    #[cfg(debug_assertions)]
    {
        if let Some(seconds) = std::env::var("CAIRN_TEST_SLEEP_AFTER_STOP")
            .ok()
            .and_then(|value| value.parse::<u64>().ok())
        {
            eprintln!("cairn: test hook: sleeping {seconds} s at {point}");
            std::thread::sleep(std::time::Duration::from_secs(seconds));
        }
        if std::env::var("CAIRN_TEST_FAIL_AFTER_STOP").as_deref() == Ok("1") {
            return Err(OpError::Refused(format!(
                "failure injected by CAIRN_TEST_FAIL_AFTER_STOP at {point}"
            )));
        }
    }
    let _ = point;
    Ok(())
}

/// Finishes an operation whose cleanup ran after it: a cleanup problem turns a success into an
/// error (say, a container that could not be restarted), and is appended to a failure.
fn settle<T>(result: OpResult<T>, cleanup: Vec<String>, done_note: &str) -> OpResult<T> {
    match result {
        Ok(value) if cleanup.is_empty() => Ok(value),
        Ok(_) => Err(OpError::Refused(format!(
            "{done_note}, but cleaning up failed: {}",
            cleanup.join("; ")
        ))),
        Err(error) => Err(error.with_cleanup(cleanup)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_problems_are_added_to_the_failure_and_spoil_a_success() {
        let failed: OpResult<()> = Err(OpError::Refused("restore failed".into()));
        let error = settle(failed, vec!["container web did not start".into()], "x").unwrap_err();
        assert_eq!(
            error.to_string(),
            "restore failed; in addition: container web did not start"
        );
        let ok = settle(
            Ok(()),
            vec!["container web did not start".into()],
            "snapshot saved",
        );
        assert_eq!(
            ok.unwrap_err().to_string(),
            "snapshot saved, but cleaning up failed: container web did not start"
        );
        assert!(settle(Ok(1), vec![], "x").is_ok());
    }

    #[test]
    fn the_repository_error_is_found_under_cleanup_problems() {
        let error = OpError::Repo(crate::Error::MissingBlob(crate::Id::of(b"x")))
            .with_cleanup(vec!["a".into()]);
        assert!(error.repo_error().is_some_and(|e| e.is_damage()));
    }
}
