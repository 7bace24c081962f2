//! Moving restored streams into the engine, and emptying volumes.
//!
//! The Engine API can add and replace files in a volume but not delete them, and the only way
//! it offers to empty a volume — removing and recreating it — fails while any container, even a
//! stopped one, refers to the volume. So a volume is emptied, in order of preference:
//! 1. on the host, through its mount point, when this process can see and write the very
//!    directory the engine uses (proved with a probe file, not assumed from the path);
//! 2. by removing and recreating it with the same driver, options and labels, when no container
//!    refers to it;
//! 3. otherwise not at all: the restore is refused, naming the containers.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::docker::{ContainerRef, Docker, DockerError, HELPER_LABEL, VolumeInfo};
use crate::format::manifest::StreamEntry;
use crate::pipe::{PipeWriter, pipe};
use crate::progress::Progress;
use crate::repo::Repo;

use super::{OpError, OpResult};

/// How a volume's old content is deleted before a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Emptying {
    /// Delete the entries of this directory on the host.
    HostPath(PathBuf),
    /// Let the facade remove and recreate the volume.
    RemoveAndRecreate,
}

/// Containers that refer to the volume, cairn's own helpers left out.
pub(crate) fn users_of(docker: &Docker, volume: &str) -> OpResult<Vec<ContainerRef>> {
    Ok(docker
        .containers_using_volume(volume)?
        .into_iter()
        .filter(|user| !user.labels.contains_key(HELPER_LABEL))
        .collect())
}

/// Decides how `volume` can be emptied, or says why it cannot.
pub(crate) fn emptying_method(
    docker: &Docker,
    volume: &VolumeInfo,
    users: &[ContainerRef],
) -> OpResult<Emptying> {
    if let Some(path) = host_path(docker, volume)? {
        return Ok(Emptying::HostPath(path));
    }
    if users.is_empty() {
        return Ok(Emptying::RemoveAndRecreate);
    }
    Err(DockerError::VolumeInUse {
        volume: volume.name.clone(),
        containers: users.iter().map(|user| user.name.clone()).collect(),
        action: format!(
            "its old content cannot be deleted: the Docker API can only empty a volume no \
             container refers to (stopped ones included), and its directory {} is not reachable \
             from here; run cairn as root on the engine's host, or remove these containers \
             (docker rm) and restore again",
            volume.mountpoint
        ),
    }
    .into())
}

/// The volume's directory on this host, if this process can see and change the very directory
/// the engine serves: a probe file created there must show up through the engine.
fn host_path(docker: &Docker, volume: &VolumeInfo) -> OpResult<Option<PathBuf>> {
    #[cfg(debug_assertions)]
    {
        if std::env::var("CAIRN_TEST_NO_HOST_VOLUME_ACCESS").as_deref() == Ok("1") {
            return Ok(None);
        }
    }
    let path = PathBuf::from(&volume.mountpoint);
    if !path.is_absolute() || !path.is_dir() {
        return Ok(None);
    }
    let probe = format!(
        ".cairn-probe-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or(0)
    );
    let probe_path = path.join(&probe);
    // The probe must not show: the root's times are put back afterwards. (An application
    // writing into the root at this very moment could lose its mtime update; the volume is
    // about to be replaced anyway.)
    let Ok(root_before) = std::fs::metadata(&path) else {
        return Ok(None);
    };
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe_path)
        .is_err()
    {
        return Ok(None);
    }
    let seen = docker.volume_has_entry(&volume.name, &probe);
    let removed = std::fs::remove_file(&probe_path);
    let _ = filetime::set_file_times(
        &path,
        filetime::FileTime::from_last_access_time(&root_before),
        filetime::FileTime::from_last_modification_time(&root_before),
    );
    match (seen, removed) {
        (Ok(true), Ok(())) => Ok(Some(path)),
        (Ok(_), _) => Ok(None),
        (Err(error), _) => Err(error.into()),
    }
}

/// Deletes everything inside `dir`, not `dir` itself. Symbolic links are removed, never
/// followed.
pub(crate) fn empty_directory(dir: &Path) -> OpResult<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| crate::Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| crate::Error::io(dir, e))?;
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(|e| crate::Error::io(&path, e))?
            .is_dir();
        let removed = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| crate::Error::io(&path, e))?;
    }
    Ok(())
}

/// Reads and verifies a whole stream without writing it anywhere, so that damage is found
/// before anything is deleted to make room for it.
pub(crate) fn verify_stream(
    repo: &Repo,
    stream: &StreamEntry,
    progress: &dyn Progress,
) -> OpResult<()> {
    progress.start(&format!("verify {}", stream.name), Some(stream.length));
    crate::restore::restore_stream(repo, stream, &mut io::sink(), progress)?;
    Ok(())
}

/// Restores `stream` and hands its bytes, as a `Read`, to `consume` (running on another
/// thread), which typically uploads them to the engine. The consumer sees an error, not a clean
/// end, if the restore fails midway.
pub(crate) fn restore_through<T: Send>(
    repo: &Repo,
    stream: &StreamEntry,
    progress: &dyn Progress,
    consume: impl FnOnce(&mut dyn Read) -> Result<T, DockerError> + Send,
) -> OpResult<T> {
    progress.start(&format!("restore {}", stream.name), Some(stream.length));
    let (writer, mut reader) = pipe(4);
    std::thread::scope(|scope| {
        let consumer = scope.spawn(move || {
            let consumed = consume(&mut reader);
            // Dropping the reader here tells the restore to stop if the consumer gave up early.
            drop(reader);
            consumed
        });
        let mut writer = Some(writer);
        let restored =
            crate::restore::restore_stream(repo, stream, &mut PipeInto(&mut writer), progress);
        if let Some(writer) = writer.take() {
            match &restored {
                Ok(()) => {
                    let _ = writer.close();
                }
                Err(error) => writer.fail(io::Error::other(error.to_string())),
            }
        }
        let consumed = consumer
            .join()
            .map_err(|_| OpError::Refused("the engine upload thread panicked".into()))?;
        // Damage in the repository is the root cause whenever it shows; otherwise a consumer
        // failure is what made the restore's writes fail.
        match (restored, consumed) {
            (Err(error), _) if error.is_damage() => Err(error.into()),
            (_, Err(error)) => Err(error.into()),
            (Err(error), Ok(_)) => Err(error.into()),
            (Ok(()), Ok(value)) => Ok(value),
        }
    })
}

struct PipeInto<'a>(&'a mut Option<PipeWriter>);

impl Write for PipeInto<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0 {
            Some(writer) => writer.write(buf),
            None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.0 {
            Some(writer) => writer.flush(),
            None => Ok(()),
        }
    }
}

/// Reads a small JSON stream (an inspect document) into memory, refusing absurd sizes.
pub(crate) fn read_json_stream(repo: &Repo, stream: &StreamEntry) -> OpResult<serde_json::Value> {
    const LIMIT: u64 = 64 << 20;
    if stream.length > LIMIT {
        return Err(OpError::Refused(format!(
            "stream {} is {} bytes, too large for a configuration document",
            stream.name, stream.length
        )));
    }
    let mut bytes = Vec::with_capacity(stream.length as usize);
    crate::restore::restore_stream(repo, stream, &mut bytes, &crate::progress::Silent)?;
    serde_json::from_slice(&bytes).map_err(|error| {
        OpError::Refused(format!(
            "stream {} is not a JSON document: {error}",
            stream.name
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn emptying_a_directory_removes_everything_inside_and_follows_no_link() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep.txt"), b"keep").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/b/c/file"), b"x").unwrap();
        std::fs::write(root.join(".hidden"), b"y").unwrap();
        symlink(outside.path(), root.join("link-to-dir")).unwrap();
        symlink("/nonexistent", root.join("dangling")).unwrap();
        empty_directory(root).unwrap();
        assert_eq!(std::fs::read_dir(root).unwrap().count(), 0);
        assert!(root.is_dir());
        assert_eq!(
            std::fs::read(outside.path().join("keep.txt")).unwrap(),
            b"keep"
        );
    }

    fn repo_with(bytes: &[u8], role: &str) -> (tempfile::TempDir, Repo, StreamEntry) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(&dir.path().join("r"), &crate::InitOptions::default()).unwrap();
        let outcome = repo
            .snapshot(
                crate::SnapshotSpec {
                    kind: "t".into(),
                    source: "s".into(),
                    ..Default::default()
                },
                vec![crate::StreamInput {
                    name: "s".into(),
                    role: role.into(),
                    reader: Box::new(io::Cursor::new(bytes.to_vec())),
                }],
                &crate::progress::Silent,
            )
            .unwrap();
        let stream = outcome.manifest.streams[0].clone();
        (dir, repo, stream)
    }

    #[test]
    fn restore_through_hands_over_every_byte() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (_dir, repo, stream) = repo_with(&data, "data");
        let received = restore_through(&repo, &stream, &crate::progress::Silent, |reader| {
            let mut all = Vec::new();
            reader.read_to_end(&mut all)?;
            Ok(all)
        })
        .unwrap();
        assert!(received == data);
        verify_stream(&repo, &stream, &crate::progress::Silent).unwrap();
    }

    #[test]
    fn a_consumer_that_gives_up_early_is_the_reported_failure() {
        let data = vec![5u8; 20_000_000];
        let (_dir, repo, stream) = repo_with(&data, "data");
        let error = restore_through(&repo, &stream, &crate::progress::Silent, |reader| {
            let mut first = [0u8; 10];
            reader.read_exact(&mut first)?;
            Err::<(), _>(DockerError::Engine("refused by the engine".into()))
        })
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "Docker engine error: refused by the engine"
        );
    }

    #[test]
    fn json_streams_are_parsed_and_other_bytes_refused() {
        let (_dir, repo, stream) = repo_with(br#"{"Id": "abc"}"#, "json");
        assert_eq!(read_json_stream(&repo, &stream).unwrap()["Id"], "abc");
        let (_dir, repo, stream) = repo_with(b"not json", "json");
        assert!(read_json_stream(&repo, &stream).is_err());
    }
}
