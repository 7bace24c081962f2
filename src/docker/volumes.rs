//! Volumes: metadata, and their content as tar streams through a helper container.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{
    ContainerArchiveInfoOptions, DownloadFromContainerOptions, ListContainersOptions,
    ListVolumesOptions, RemoveVolumeOptions, UploadToContainerOptions,
};

use super::error::{DockerError, engine, not_found_as, status_of};
use super::helper::VOLUME_MOUNT;
use super::stream::{EngineReader, upload};
use super::{ContainerRef, Docker, VolumeInfo, check_object_name};

impl Docker {
    pub fn inspect_volume(&self, name: &str) -> Result<VolumeInfo, DockerError> {
        check_object_name("volume", name)?;
        self.block_on(self.api.inspect_volume(name))
            .map(VolumeInfo::from)
            .map_err(not_found_as(|| DockerError::NoSuchVolume(name.to_string())))
    }

    pub fn create_volume(
        &self,
        name: &str,
        driver: &str,
        driver_opts: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DockerError> {
        check_object_name("volume", name)?;
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            driver: Some(driver.to_string()),
            driver_opts: Some(unsorted(driver_opts)),
            labels: Some(unsorted(labels)),
            ..Default::default()
        };
        self.block_on(self.api.create_volume(request))
            .map(|_| ())
            .map_err(engine)
    }

    /// Removes a volume. The engine refuses while any container, even a stopped one, refers to it.
    pub fn remove_volume(&self, name: &str) -> Result<(), DockerError> {
        check_object_name("volume", name)?;
        let options = RemoveVolumeOptions { force: false };
        self.block_on(self.api.remove_volume(name, Some(options)))
            .map_err(|error| match status_of(&error) {
                Some(404) => DockerError::NoSuchVolume(name.to_string()),
                Some(409) => self.volume_in_use(name, "the engine refuses to remove it"),
                _ => engine(error),
            })
    }

    /// Every container (running or not) that mounts the volume, cairn's own helpers included.
    pub fn containers_using_volume(&self, name: &str) -> Result<Vec<ContainerRef>, DockerError> {
        check_object_name("volume", name)?;
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "volume".to_string(),
                vec![name.to_string()],
            )])),
            ..Default::default()
        };
        let summaries = self
            .block_on(self.api.list_containers(Some(options)))
            .map_err(engine)?;
        // The engine's filter also matches mount destinations; keep only real users of the volume.
        Ok(summaries
            .into_iter()
            .filter(|summary| {
                summary.mounts.as_ref().is_some_and(|mounts| {
                    mounts
                        .iter()
                        .any(|mount| mount.name.as_deref() == Some(name))
                })
            })
            .map(ContainerRef::from)
            .collect())
    }

    pub fn list_volumes_with_label(&self, label: &str) -> Result<Vec<VolumeInfo>, DockerError> {
        let options = ListVolumesOptions {
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![label.to_string()],
            )])),
        };
        let listed = self
            .block_on(self.api.list_volumes(Some(options)))
            .map_err(engine)?;
        let mut volumes: Vec<VolumeInfo> = listed
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(VolumeInfo::from)
            .collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// Whether the volume holds nothing but its root directory.
    pub fn volume_is_empty(&self, name: &str) -> Result<bool, DockerError> {
        let reader = self.export_volume(name)?;
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries()? {
            let entry = entry?;
            let path = entry.path()?;
            let is_root = path
                .components()
                .all(|part| part == std::path::Component::CurDir);
            if !is_root {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether `relative` (a path inside the volume, without a leading '/') exists in the
    /// volume, as the engine sees it. Asks for the path's metadata only; no content moves.
    pub fn volume_has_entry(&self, name: &str, relative: &str) -> Result<bool, DockerError> {
        let escapes = std::path::Path::new(relative)
            .components()
            .any(|part| !matches!(part, std::path::Component::Normal(_)));
        if relative.is_empty() || escapes {
            return Err(DockerError::InvalidInput(format!(
                "{relative:?} is not a relative path inside a volume"
            )));
        }
        self.inspect_volume(name)?;
        let helper = self.volume_helper(name, true)?;
        let options = ContainerArchiveInfoOptions {
            path: format!("{VOLUME_MOUNT}/{relative}"),
        };
        match self.block_on(
            self.api
                .get_container_archive_info(helper.id(), Some(options)),
        ) {
            Ok(_) => Ok(true),
            Err(error) if status_of(&error) == Some(404) => Ok(false),
            Err(error) => Err(engine(error)),
        }
    }

    /// The volume's content as a tar stream whose member names are relative to the volume root
    /// ("./", "./dir/file", ...), with owners, modes, times and symlinks as the engine reports
    /// them. The first member, "./", describes the root directory itself.
    ///
    /// The volume is mounted read-only in a helper container for as long as the reader lives.
    pub fn export_volume(&self, name: &str) -> Result<EngineReader<'_>, DockerError> {
        // Checked first: mounting a missing volume would create it.
        self.inspect_volume(name)?;
        let helper = self.volume_helper(name, true)?;
        let options = DownloadFromContainerOptions {
            // The trailing "/." makes the engine name members relative to the volume root
            // instead of prefixing them with the mount point's name.
            path: format!("{VOLUME_MOUNT}/."),
        };
        let body = self
            .bulk
            .download_from_container(helper.id(), Some(options));
        EngineReader::open(self, body, Some(helper), engine)
    }

    /// Unpacks a tar stream (as [`Docker::export_volume`] produces) into the volume. Members
    /// overwrite what is there; with `empty_first` the volume is emptied beforehand. A first
    /// member "./" sets the owner, mode and time of the volume root.
    ///
    /// Emptying needs a volume no container refers to: the archive API can add and replace but
    /// not delete, so the volume is removed and recreated with the same driver, options and
    /// labels. A volume whose data lives outside the engine (a bind or NFS `local` volume) is
    /// still not empty afterwards, which is reported rather than ignored.
    ///
    /// A tar that breaks off midway leaves what was unpacked until then in the volume.
    pub fn import_volume(
        &self,
        name: &str,
        tar: &mut dyn Read,
        empty_first: bool,
    ) -> Result<(), DockerError> {
        let volume = self.inspect_volume(name)?;
        if empty_first && !self.volume_is_empty(name)? {
            self.empty_volume(&volume)?;
        }
        let helper = self.volume_helper(name, false)?;
        let mut tar = HeadCapture::new(tar);
        self.upload_into(helper.id(), VOLUME_MOUNT, &mut tar)?;
        // The engine skips a "./" member when unpacking, so the volume root's metadata is applied
        // separately, by unpacking that member under the mount point's own name one level up.
        if let Some(root_tar) = root_member_as_mount_point(&tar.head)? {
            self.upload_into(helper.id(), "/", &mut io::Cursor::new(root_tar))?;
        }
        Ok(())
    }

    fn upload_into(
        &self,
        container_id: &str,
        path: &str,
        tar: &mut dyn Read,
    ) -> Result<(), DockerError> {
        let client = self.bulk.clone();
        let container_id = container_id.to_string();
        let options = UploadToContainerOptions {
            path: path.to_string(),
            ..Default::default()
        };
        upload(&self.runtime, tar, move |body| async move {
            client
                .upload_to_container(&container_id, Some(options), bollard::body_try_stream(body))
                .await
                .map_err(engine)
        })
    }

    fn empty_volume(&self, volume: &VolumeInfo) -> Result<(), DockerError> {
        let users = self.containers_using_volume(&volume.name)?;
        if !users.is_empty() {
            return Err(DockerError::VolumeInUse {
                volume: volume.name.clone(),
                containers: users.into_iter().map(|user| user.name).collect(),
                action: "a volume can only be emptied when no container refers to it \
                         (stopping is not enough: the containers must be removed)"
                    .to_string(),
            });
        }
        self.remove_volume(&volume.name)?;
        self.create_volume(
            &volume.name,
            &volume.driver,
            &volume.driver_opts,
            &volume.labels,
        )
        .map_err(|error| DockerError::CannotEmptyVolume {
            volume: volume.name.clone(),
            reason: format!(
                "it was removed but could not be recreated (driver {}, options {:?}, labels {:?}): {error}",
                volume.driver, volume.driver_opts, volume.labels
            ),
        })?;
        if !self.volume_is_empty(&volume.name)? {
            return Err(DockerError::CannotEmptyVolume {
                volume: volume.name.clone(),
                reason: format!(
                    "it still holds data after being recreated: its driver ({}) with options {:?} \
                     keeps the data outside the engine; empty it by hand",
                    volume.driver, volume.driver_opts
                ),
            });
        }
        Ok(())
    }

    fn volume_in_use(&self, name: &str, action: &str) -> DockerError {
        let containers = self
            .containers_using_volume(name)
            .map(|users| users.into_iter().map(|user| user.name).collect())
            .unwrap_or_default();
        DockerError::VolumeInUse {
            volume: name.to_string(),
            containers,
            action: action.to_string(),
        }
    }
}

/// How much of an imported stream's beginning is kept to find its root member: a ustar header
/// plus generous room for extension headers before it.
const HEAD_CAPTURE_LIMIT: usize = 64 * 1024;

/// Passes a stream through while keeping a copy of its first bytes.
struct HeadCapture<'r> {
    inner: &'r mut dyn Read,
    head: Vec<u8>,
}

impl<'r> HeadCapture<'r> {
    fn new(inner: &'r mut dyn Read) -> HeadCapture<'r> {
        HeadCapture {
            inner,
            head: Vec::new(),
        }
    }
}

impl Read for HeadCapture<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let room = HEAD_CAPTURE_LIMIT.saturating_sub(self.head.len());
        self.head.extend_from_slice(&buf[..n.min(room)]);
        Ok(n)
    }
}

/// If the tar starting with `head` begins with a root directory member ("./"), a one-member tar
/// that carries the same metadata under the mount point's name, for unpacking at "/".
fn root_member_as_mount_point(head: &[u8]) -> Result<Option<Vec<u8>>, DockerError> {
    let mut archive = tar::Archive::new(io::Cursor::new(head));
    // Anything unreadable here is simply not a root member: the stream itself was accepted.
    let Ok(mut entries) = archive.entries() else {
        return Ok(None);
    };
    let Some(Ok(mut first)) = entries.next() else {
        return Ok(None);
    };
    let is_root_dir = first.header().entry_type().is_dir()
        && first.path().is_ok_and(|path| {
            path.components()
                .all(|part| part == std::path::Component::CurDir)
        });
    if !is_root_dir {
        return Ok(None);
    }
    // Extended attributes and the like travel in PAX records; a path record would rename the
    // member back, so it is left out.
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    if let Ok(Some(extensions)) = first.pax_extensions() {
        for extension in extensions.flatten() {
            if let Ok(key) = extension.key()
                && key != "path"
            {
                records.push((key.to_string(), extension.value_bytes().to_vec()));
            }
        }
    }
    let mut header = first.header().clone();
    let mut builder = tar::Builder::new(Vec::new());
    if !records.is_empty() {
        builder.append_pax_extensions(
            records
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_slice())),
        )?;
    }
    builder.append_data(
        &mut header,
        VOLUME_MOUNT.trim_start_matches('/'),
        io::empty(),
    )?;
    Ok(Some(builder.into_inner()?))
}

fn unsorted(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_header(mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode);
        header.set_uid(999);
        header.set_gid(998);
        header.set_mtime(1_234_567_890);
        header.set_size(0);
        header
    }

    fn single_member(tar: &[u8]) -> (String, tar::Header, Vec<(String, Vec<u8>)>) {
        let mut archive = tar::Archive::new(io::Cursor::new(tar));
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        let records = entry
            .pax_extensions()
            .unwrap()
            .map(|extensions| {
                extensions
                    .map(|record| {
                        let record = record.unwrap();
                        (
                            record.key().unwrap().to_string(),
                            record.value_bytes().to_vec(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let path = entry.path().unwrap().display().to_string();
        let header = entry.header().clone();
        assert!(entries.next().is_none());
        (path, header, records)
    }

    #[test]
    fn the_root_member_is_renamed_to_the_mount_point_with_its_metadata() {
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..])])
            .unwrap();
        builder
            .append_data(&mut dir_header(0o700), "./", io::empty())
            .unwrap();
        builder
            .append_data(&mut dir_header(0o755), "./sub/", io::empty())
            .unwrap();
        let tar = builder.into_inner().unwrap();

        let root = root_member_as_mount_point(&tar).unwrap().unwrap();
        let (path, header, records) = single_member(&root);
        assert_eq!(path, "cairn-volume");
        assert_eq!(header.mode().unwrap() & 0o7777, 0o700);
        assert_eq!(header.uid().unwrap(), 999);
        assert_eq!(header.gid().unwrap(), 998);
        assert_eq!(header.mtime().unwrap(), 1_234_567_890);
        assert_eq!(
            records,
            vec![("SCHILY.xattr.user.k".to_string(), b"v".to_vec())]
        );
    }

    #[test]
    fn streams_without_a_root_member_leave_the_root_alone() {
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_data(&mut dir_header(0o755), "./sub/", io::empty())
            .unwrap();
        let tar = builder.into_inner().unwrap();
        assert!(root_member_as_mount_point(&tar).unwrap().is_none());
        assert!(
            root_member_as_mount_point(b"not a tar at all")
                .unwrap()
                .is_none()
        );
        assert!(root_member_as_mount_point(&[]).unwrap().is_none());
    }

    #[test]
    fn head_capture_keeps_only_the_beginning_and_passes_everything() {
        let data: Vec<u8> = (0..(HEAD_CAPTURE_LIMIT + 5000)).map(|i| i as u8).collect();
        let mut source = io::Cursor::new(data.clone());
        let mut capture = HeadCapture::new(&mut source);
        let mut passed = Vec::new();
        capture.read_to_end(&mut passed).unwrap();
        assert_eq!(passed, data);
        assert_eq!(capture.head, data[..HEAD_CAPTURE_LIMIT]);
    }
}
