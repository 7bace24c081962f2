//! Stopping or pausing containers for the duration of an operation, and always undoing it.
//!
//! What is held (stopped or paused) is kept in a process-wide registry. The guard undoes its own
//! entries when the operation ends (also when it fails or panics, through `Drop`), and the
//! interrupt guard undoes all of them when the process gets SIGINT, SIGTERM or SIGHUP. Only
//! SIGKILL (or a machine crash) can leave containers stopped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

use crate::docker::{ContainerRef, ContainerState, Docker};

use super::{OpError, OpResult};

/// How containers using what is being read or written are kept from touching it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Quiesce {
    /// Leave them alone.
    #[default]
    None,
    /// Stop running containers, start them again afterwards.
    Stop,
    /// Pause running containers (freeze their processes), unpause them afterwards.
    Pause,
}

impl Quiesce {
    pub fn as_str(self) -> &'static str {
        match self {
            Quiesce::None => "none",
            Quiesce::Stop => "stop",
            Quiesce::Pause => "pause",
        }
    }
}

/// A container this process changed and must change back.
#[derive(Debug, Clone)]
enum Held {
    /// Stopped; start again, then pause again if it was paused before.
    Stopped {
        id: String,
        name: String,
        repause: bool,
    },
    Paused {
        id: String,
        name: String,
    },
}

impl Held {
    fn name(&self) -> &str {
        match self {
            Held::Stopped { name, .. } | Held::Paused { name, .. } => name,
        }
    }

    /// Puts the container back the way it was; on failure, says what could not be done.
    fn undo(&self, docker: &Docker) -> Result<(), String> {
        match self {
            Held::Stopped { id, repause, .. } => docker
                .start_container(id)
                .and_then(|()| {
                    if *repause {
                        docker.pause_container(id)
                    } else {
                        Ok(())
                    }
                })
                .map_err(|error| {
                    format!("could not start container {} again: {error}", self.name())
                }),
            Held::Paused { id, .. } => docker
                .unpause_container(id)
                .map_err(|error| format!("could not unpause container {}: {error}", self.name())),
        }
    }
}

/// Everything held by this process, tagged with the guard that holds it.
static REGISTRY: Mutex<Vec<(u64, Held)>> = Mutex::new(Vec::new());
static NEXT_GUARD: AtomicU64 = AtomicU64::new(1);

fn registry() -> MutexGuard<'static, Vec<(u64, Held)>> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Containers held for one operation; they are put back by [`Quiesced::resume`] or on drop.
pub(crate) struct Quiesced<'d> {
    docker: &'d Docker,
    token: u64,
    names: Vec<String>,
}

impl<'d> Quiesced<'d> {
    fn new(docker: &'d Docker) -> Quiesced<'d> {
        Quiesced {
            docker,
            token: NEXT_GUARD.fetch_add(1, Ordering::Relaxed),
            names: Vec::new(),
        }
    }

    /// Stops or pauses, as `how` says, those of `containers` whose processes could touch the
    /// data: for reading (`for_write` false) running containers; for writing also paused ones,
    /// which are stopped too (their mounts stay live) and paused again afterwards.
    ///
    /// If one of them cannot be stopped, those already stopped are started again before the
    /// error is returned.
    pub(crate) fn hold(
        docker: &'d Docker,
        containers: &[ContainerRef],
        how: Quiesce,
        for_write: bool,
    ) -> OpResult<Quiesced<'d>> {
        let mut guard = Quiesced::new(docker);
        for container in containers {
            // Held under the registry lock, so that an interrupt sees either nothing or a
            // container that is both stopped and recorded.
            let mut held = registry();
            let entry = match (how, &container.state) {
                (Quiesce::None, _) => None,
                (Quiesce::Stop, ContainerState::Running | ContainerState::Restarting) => {
                    docker.stop_container(&container.id)?;
                    Some(Held::Stopped {
                        id: container.id.clone(),
                        name: container.name.clone(),
                        repause: false,
                    })
                }
                (Quiesce::Stop, ContainerState::Paused) if for_write => {
                    docker.unpause_container(&container.id)?;
                    if let Err(error) = docker.stop_container(&container.id) {
                        let repaused = docker.pause_container(&container.id).err().map(|e| {
                            format!("could not pause container {} again: {e}", container.name)
                        });
                        return Err(
                            OpError::from(error).with_cleanup(repaused.into_iter().collect())
                        );
                    }
                    Some(Held::Stopped {
                        id: container.id.clone(),
                        name: container.name.clone(),
                        repause: true,
                    })
                }
                (Quiesce::Pause, ContainerState::Running) => {
                    docker.pause_container(&container.id)?;
                    Some(Held::Paused {
                        id: container.id.clone(),
                        name: container.name.clone(),
                    })
                }
                _ => None,
            };
            if let Some(entry) = entry {
                guard.names.push(entry.name().to_string());
                held.push((guard.token, entry));
            }
        }
        Ok(guard)
    }

    /// Names of the containers held.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// Starts or unpauses every held container, in reverse order; returns what failed.
    pub(crate) fn resume(&mut self) -> Vec<String> {
        let mut held = registry();
        let mine: Vec<Held> = {
            let mut mine = Vec::new();
            held.retain(|(token, entry)| {
                if *token == self.token {
                    mine.push(entry.clone());
                    false
                } else {
                    true
                }
            });
            mine
        };
        mine.iter()
            .rev()
            .filter_map(|entry| entry.undo(self.docker).err())
            .collect()
    }
}

impl Drop for Quiesced<'_> {
    fn drop(&mut self) {
        for problem in self.resume() {
            eprintln!("cairn: error: {problem}");
        }
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP start and unpause held containers before the process exits
/// (with status 128 + signal). Call it before any other thread is started: the signals are
/// blocked in the calling thread, and threads inherit that, so that only the guard's own thread
/// receives them.
pub fn install_interrupt_guard() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // SAFETY: the sigset is initialised by sigemptyset before use, and pthread_sigmask only
        // changes the calling thread's mask.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, signal);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        };
        let spawned = std::thread::Builder::new()
            .name("cairn-signals".into())
            .spawn(move || {
                loop {
                    let mut signal: libc::c_int = 0;
                    // SAFETY: `set` is a valid, initialised sigset and `signal` a valid out
                    // pointer.
                    if unsafe { libc::sigwait(&set, &mut signal) } == 0 {
                        undo_everything_and_exit(signal);
                    }
                }
            });
        if spawned.is_err() {
            // Without the waiting thread the signals would stay blocked forever: unblock them.
            // SAFETY: as above.
            unsafe {
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            }
        }
    });
}

fn undo_everything_and_exit(signal: libc::c_int) -> ! {
    // The lock is kept until exit, so that the operation cannot hold more containers meanwhile.
    let mut held = registry();
    let entries: Vec<Held> = held.drain(..).map(|(_, entry)| entry).collect();
    if !entries.is_empty() {
        eprintln!("cairn: interrupted; putting held containers back");
        match Docker::connect() {
            Ok(docker) => {
                for entry in entries.iter().rev() {
                    if let Err(problem) = entry.undo(&docker) {
                        eprintln!("cairn: error: {problem}");
                    }
                }
            }
            Err(error) => {
                let names: Vec<&str> = entries.iter().map(Held::name).collect();
                eprintln!(
                    "cairn: error: cannot put containers {} back: {error}",
                    names.join(", ")
                );
            }
        }
    }
    std::process::exit(128 + signal);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiesce_words_are_stable() {
        assert_eq!(Quiesce::None.as_str(), "none");
        assert_eq!(Quiesce::Stop.as_str(), "stop");
        assert_eq!(Quiesce::Pause.as_str(), "pause");
        assert_eq!(Quiesce::default(), Quiesce::None);
    }
}
