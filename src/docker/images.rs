//! Images: inspect, save/load (docker save format), import of a root filesystem tar, removal.

use std::io::Read;

use bollard::query_parameters::{CreateImageOptions, ImportImageOptions, RemoveImageOptions};
use futures_util::StreamExt;

use super::error::{DockerError, engine, not_found_as};
use super::stream::{EngineReader, upload};
use super::{Docker, check_image_reference};

impl Docker {
    /// The engine's image inspect document, as JSON with the engine's field names.
    pub fn inspect_image(&self, reference: &str) -> Result<serde_json::Value, DockerError> {
        check_image_reference(reference)?;
        let inspected = self
            .block_on(self.api.inspect_image(reference))
            .map_err(missing_image(reference))?;
        serde_json::to_value(inspected).map_err(|error| {
            DockerError::Engine(format!(
                "cannot represent the inspect document as JSON: {error}"
            ))
        })
    }

    /// The image id (`sha256:...`) a reference resolves to.
    pub fn image_id(&self, reference: &str) -> Result<String, DockerError> {
        check_image_reference(reference)?;
        let inspected = self
            .block_on(self.api.inspect_image(reference))
            .map_err(missing_image(reference))?;
        inspected.id.ok_or_else(|| {
            DockerError::Engine(format!("the engine reports no id for image {reference}"))
        })
    }

    /// The image in `docker save` format (layers, config, manifest, tags) as a tar stream.
    pub fn save_image(&self, reference: &str) -> Result<EngineReader<'_>, DockerError> {
        check_image_reference(reference)?;
        let body = self.bulk.export_image(reference);
        EngineReader::open(self, body, None, missing_image(reference))
    }

    /// Loads a `docker save` tar; returns what the engine reports loading: "name:tag" for tagged
    /// images, "sha256:..." for untagged ones.
    pub fn load_image(&self, tar: &mut dyn Read) -> Result<Vec<String>, DockerError> {
        let client = self.bulk.clone();
        upload(&self.runtime, tar, move |body| async move {
            let options = ImportImageOptions {
                quiet: true,
                ..Default::default()
            };
            let mut replies = client.import_image(options, bollard::body_try_stream(body), None);
            let mut loaded = Vec::new();
            while let Some(reply) = replies.next().await {
                let reply = reply.map_err(engine)?;
                if let Some(name) = reply.stream.as_deref().and_then(loaded_image_name) {
                    loaded.push(name);
                }
            }
            Ok(loaded)
        })
    }

    /// Makes an image of a root filesystem tar (`docker import`), tagged `repo_tag`, with
    /// Dockerfile-style `changes` ("CMD [...]", "ENV K=V", ...). Returns the new image's id.
    pub fn import_image(
        &self,
        tar: &mut dyn Read,
        repo_tag: &str,
        changes: &[String],
    ) -> Result<String, DockerError> {
        check_image_reference(repo_tag)?;
        let (repo, tag) = split_repo_tag(repo_tag);
        let options = CreateImageOptions {
            from_src: Some("-".to_string()),
            repo: Some(repo.to_string()),
            tag: tag.map(str::to_string),
            changes: changes.to_vec(),
            ..Default::default()
        };
        let client = self.bulk.clone();
        let reported = upload(&self.runtime, tar, move |body| async move {
            let mut replies =
                client.create_image(Some(options), Some(bollard::body_try_stream(body)), None);
            let mut image_id = None;
            while let Some(reply) = replies.next().await {
                let reply = reply.map_err(engine)?;
                // The engine's last status line of an import is the new image's id.
                if let Some(status) = reply.status.filter(|status| status.starts_with("sha256:")) {
                    image_id = Some(status);
                }
            }
            Ok(image_id)
        })?;
        match reported {
            Some(id) => Ok(id),
            None => self.image_id(repo_tag),
        }
    }

    /// Removes an image reference: a tag is untagged, and the image deleted with its last tag.
    pub fn remove_image(&self, reference: &str) -> Result<(), DockerError> {
        check_image_reference(reference)?;
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        self.block_on(self.api.remove_image(reference, Some(options), None))
            .map(|_| ())
            .map_err(missing_image(reference))
    }
}

fn missing_image(reference: &str) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    let reference = reference.to_string();
    not_found_as(move || DockerError::NoSuchImage(reference))
}

/// Splits "registry:5000/name:tag" into ("registry:5000/name", Some("tag")); a colon only counts
/// as the tag separator after the last slash, and a digest reference has no tag.
fn split_repo_tag(reference: &str) -> (&str, Option<&str>) {
    if reference.contains('@') {
        return (reference, None);
    }
    let name_start = reference.rfind('/').map_or(0, |slash| slash + 1);
    match reference[name_start..].rfind(':') {
        Some(colon) => {
            let split = name_start + colon;
            (&reference[..split], Some(&reference[split + 1..]))
        }
        None => (reference, None),
    }
}

/// The image named by a `docker load` progress line ("Loaded image: x:1", "Loaded image ID: sha256:...").
fn loaded_image_name(line: &str) -> Option<String> {
    let line = line.trim();
    line.strip_prefix("Loaded image ID: ")
        .or_else(|| line.strip_prefix("Loaded image: "))
        .map(|name| name.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_and_tag_are_split_at_the_last_colon_after_the_last_slash() {
        assert_eq!(split_repo_tag("busybox"), ("busybox", None));
        assert_eq!(split_repo_tag("busybox:1.36"), ("busybox", Some("1.36")));
        assert_eq!(
            split_repo_tag("localhost:5000/team/app"),
            ("localhost:5000/team/app", None)
        );
        assert_eq!(
            split_repo_tag("localhost:5000/team/app:v2"),
            ("localhost:5000/team/app", Some("v2"))
        );
        assert_eq!(split_repo_tag("app@sha256:abcd"), ("app@sha256:abcd", None));
    }

    #[test]
    fn load_progress_lines_name_the_image() {
        assert_eq!(
            loaded_image_name("Loaded image: cairn-test:1\n"),
            Some("cairn-test:1".to_string())
        );
        assert_eq!(
            loaded_image_name("Loaded image ID: sha256:0123\n"),
            Some("sha256:0123".to_string())
        );
        assert_eq!(loaded_image_name("Loading layer  1.2MB/1.2MB"), None);
    }
}
