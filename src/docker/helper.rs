//! cairn's own helper image and the short-lived containers built from it.
//!
//! The image has no layers at all, only a configuration: helper containers are created, never
//! started, so no binary is needed; the engine serves their filesystem (with the volume mounted
//! in it) through the archive endpoints all the same. It is loaded from an in-memory
//! `docker save`-format tar, so no registry is ever involved. Its id is the digest of that
//! configuration, hence the same for every cairn on the same engine architecture: two cairns
//! loading it at once converge on one image instead of leaving an untagged duplicate behind.
//! Should an engine refuse a layerless image, a `docker import` of an empty directory is the
//! fallback.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};

use super::Docker;
use super::error::{DockerError, engine, status_of};

/// Tag of the helper image; bump the version when its content or configuration changes.
pub const HELPER_IMAGE: &str = "cairn-helper:1";
/// Label carried by the helper image and its containers (on containers, its value is the volume
/// they serve), so that strays left by a killed cairn can be found and removed.
pub const HELPER_LABEL: &str = "cairn.helper";
/// Where the volume is mounted inside a helper container.
pub(crate) const VOLUME_MOUNT: &str = "/cairn-volume";
/// The command a helper container is created with. The engine refuses to create a container
/// without one; it is never run, and no such file exists.
const HELPER_COMMAND: &str = "/cairn-helper";

/// How many times, and how far apart, removal of a helper is tried: right after a download is
/// abandoned the engine may still hold the container's mounts for a moment.
const REMOVE_ATTEMPTS: u32 = 20;
const REMOVE_RETRY_DELAY: Duration = Duration::from_millis(250);

/// A helper container that is removed when this guard is dropped.
pub(crate) struct HelperContainer<'a> {
    docker: &'a Docker,
    id: String,
}

impl HelperContainer<'_> {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for HelperContainer<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.docker.remove_helper(&self.id) {
            // Drop cannot return the error; a leaked helper only costs a stopped container, which
            // the label lets the user (or a later cairn) find.
            eprintln!(
                "cairn: warning: could not remove helper container {} ({HELPER_LABEL} label): {error}",
                self.id
            );
        }
    }
}

impl Docker {
    /// Creates a helper container with `volume` mounted at [`VOLUME_MOUNT`].
    ///
    /// The caller must have checked that the volume exists: the engine would silently create a
    /// missing one.
    pub(crate) fn volume_helper(
        &self,
        volume: &str,
        read_only: bool,
    ) -> Result<HelperContainer<'_>, DockerError> {
        self.ensure_helper_image()?;
        let mount = Mount {
            target: Some(VOLUME_MOUNT.to_string()),
            source: Some(volume.to_string()),
            typ: Some(MountType::VOLUME),
            read_only: Some(read_only),
            // Without nocopy, mounting an empty volume copies the image's directory into it,
            // which would change the volume root's mode and owner.
            volume_options: Some(MountVolumeOptions {
                no_copy: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(HELPER_IMAGE.to_string()),
            cmd: Some(vec![HELPER_COMMAND.to_string()]),
            labels: Some(HashMap::from([(
                HELPER_LABEL.to_string(),
                volume.to_string(),
            )])),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_string()),
                mounts: Some(vec![mount]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let create = |body: ContainerCreateBody| {
            let options = CreateContainerOptions {
                name: Some(self.helper_name()),
                ..Default::default()
            };
            self.block_on(self.api.create_container(Some(options), body))
        };
        let created = match create(body.clone()) {
            // The image went away since it was checked (someone pruned it): build it again once.
            Err(error) if status_of(&error) == Some(404) => {
                self.forget_helper_image();
                self.ensure_helper_image()?;
                create(body)
            }
            other => other,
        }
        .map_err(engine)?;
        Ok(HelperContainer {
            docker: self,
            id: created.id,
        })
    }

    /// A name that says what the container is and cannot collide with a concurrent cairn.
    fn helper_name(&self) -> String {
        let serial = self.helper_serial.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or(0);
        format!("cairn-helper-{}-{serial}-{nanos:09}", std::process::id())
    }

    /// Imports the helper image unless the engine already has it. Checked once per connection;
    /// the lock keeps concurrent threads from importing it twice.
    fn ensure_helper_image(&self) -> Result<(), DockerError> {
        let mut ready = self
            .helper_image_ready
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *ready {
            return Ok(());
        }
        match self.image_id(HELPER_IMAGE) {
            Ok(_) => {}
            Err(DockerError::NoSuchImage(_)) => self.install_helper_image()?,
            Err(other) => return Err(other),
        }
        *ready = true;
        Ok(())
    }

    fn forget_helper_image(&self) {
        *self
            .helper_image_ready
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = false;
    }

    fn install_helper_image(&self) -> Result<(), DockerError> {
        let architecture = self
            .block_on(self.api.version())
            .ok()
            .and_then(|version| version.arch)
            .unwrap_or_else(|| "amd64".to_string());
        let archive = helper_image_archive(&architecture)?;
        match self.load_image(&mut io::Cursor::new(archive)) {
            Ok(_) if self.image_id(HELPER_IMAGE).is_ok() => Ok(()),
            _ => self.import_helper_image(),
        }
    }

    fn import_helper_image(&self) -> Result<(), DockerError> {
        let tar = helper_rootfs_tar()?;
        let changes = [
            format!("CMD [\"{HELPER_COMMAND}\"]"),
            format!("LABEL {HELPER_LABEL}=image"),
        ];
        let ours = self.import_image(&mut io::Cursor::new(tar), HELPER_IMAGE, &changes)?;
        // Each import gets a new id (its creation time differs), so when another cairn imported
        // at the same moment and took the tag, ours is left dangling: remove it. Failure only
        // means someone already uses it.
        if self
            .image_id(HELPER_IMAGE)
            .is_ok_and(|tagged| tagged != ours)
        {
            let _ = self.remove_image(&ours);
        }
        Ok(())
    }

    fn remove_helper(&self, id: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptions {
            force: true,
            // Never `v`: it would delete anonymous volumes, and the helper must not delete data.
            v: false,
            link: false,
        };
        self.block_on(async {
            let mut attempt = 1;
            loop {
                match self.api.remove_container(id, Some(options.clone())).await {
                    Ok(()) => return Ok(()),
                    Err(error) if status_of(&error) == Some(404) => return Ok(()),
                    Err(error) if attempt >= REMOVE_ATTEMPTS => return Err(engine(error)),
                    Err(_) => {
                        attempt += 1;
                        tokio::time::sleep(REMOVE_RETRY_DELAY).await;
                    }
                }
            }
        })
    }
}

/// The helper image in `docker save` format: a manifest and a configuration, no layer. The
/// configuration's bytes are fixed for a given architecture, and so is the image id.
fn helper_image_archive(architecture: &str) -> io::Result<Vec<u8>> {
    let config = serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": {
            "Cmd": [HELPER_COMMAND],
            "Labels": {HELPER_LABEL: "image"},
        },
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [HELPER_IMAGE],
        "Layers": [],
    }]);
    let mut builder = tar::Builder::new(Vec::new());
    for (name, document) in [("config.json", config), ("manifest.json", manifest)] {
        let bytes = serde_json::to_vec(&document).map_err(io::Error::other)?;
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        header.set_mtime(0);
        builder.append_data(&mut header, name, bytes.as_slice())?;
    }
    builder.into_inner()
}

/// The fallback helper image's filesystem: only the mount point.
fn helper_rootfs_tar() -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    builder.append_data(
        &mut header,
        VOLUME_MOUNT.trim_start_matches('/'),
        io::empty(),
    )?;
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive_files(tar: &[u8]) -> Vec<(String, serde_json::Value)> {
        let mut archive = tar::Archive::new(io::Cursor::new(tar));
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let name = entry.path().unwrap().display().to_string();
                let document = serde_json::from_reader(&mut entry).unwrap();
                (name, document)
            })
            .collect()
    }

    #[test]
    fn helper_image_archive_is_a_layerless_tagged_image() {
        let files = archive_files(&helper_image_archive("arm64").unwrap());
        let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, vec!["config.json", "manifest.json"]);
        let config = &files[0].1;
        assert_eq!(config["architecture"], "arm64");
        assert_eq!(config["config"]["Cmd"], serde_json::json!([HELPER_COMMAND]));
        assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!([]));
        let manifest = &files[1].1;
        assert_eq!(manifest[0]["RepoTags"], serde_json::json!([HELPER_IMAGE]));
        assert_eq!(manifest[0]["Config"], "config.json");
    }

    #[test]
    fn helper_image_archive_is_deterministic() {
        // The image id is the digest of the configuration: identical bytes, identical image.
        assert_eq!(
            helper_image_archive("amd64").unwrap(),
            helper_image_archive("amd64").unwrap()
        );
    }

    #[test]
    fn fallback_rootfs_holds_only_the_mount_point() {
        let tar = helper_rootfs_tar().unwrap();
        let mut archive = tar::Archive::new(io::Cursor::new(tar));
        let entries: Vec<(String, tar::EntryType, u32)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.path().unwrap().display().to_string(),
                    entry.header().entry_type(),
                    entry.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![("cairn-volume".to_string(), tar::EntryType::Directory, 0o755)]
        );
    }
}
