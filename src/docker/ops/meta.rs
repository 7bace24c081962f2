//! What Docker snapshots record in their manifest's `meta`, and reading it back.
//!
//! Layout by kind (stable field names; readers tolerate missing fields):
//! - volume: `{"volume": VolumeInfo, "quiesce": "none"|"stop"|"pause", "containers": [name]}`
//! - container: `{"container": {...}, "volumes": {name: VolumeInfo}, "mounts": [MountMeta]}`
//! - compose: `{"project": P, "volumes": {name: VolumeInfo}, "containers": [{...}], "quiesce"}`
//! - image: `{"image": {"id", "reference", "repo_tags"}}`
//! - checkpoint: `{"container": {...}, "checkpoint": {"id", "leave_running"}}`

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::docker::VolumeInfo;

pub const COMPOSE_PROJECT_LABEL: &str = "com.docker.compose.project";
pub const COMPOSE_VOLUME_LABEL: &str = "com.docker.compose.volume";
pub const COMPOSE_SERVICE_LABEL: &str = "com.docker.compose.service";

/// The container a snapshot was taken of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContainerMeta {
    pub id: String,
    pub name: String,
    /// The image as the container names it.
    pub image: String,
    /// The image id the container runs.
    pub image_id: String,
    /// Whether it was running when the snapshot began.
    pub running: bool,
}

impl ContainerMeta {
    pub fn from_inspect(inspect: &serde_json::Value) -> ContainerMeta {
        let text = |pointer: &str| {
            inspect
                .pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        ContainerMeta {
            id: text("/Id"),
            name: text("/Name").trim_start_matches('/').to_string(),
            image: text("/Config/Image"),
            image_id: text("/Image"),
            running: inspect
                .pointer("/State/Running")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
        }
    }
}

/// One mount of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountMeta {
    /// "volume", "bind", "tmpfs", ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The volume's name (volumes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Host path of a bind mount, or the volume's mount point on the engine's host.
    pub source: String,
    pub destination: String,
    pub rw: bool,
}

/// The mounts of an inspect document.
pub fn mounts_of(inspect: &serde_json::Value) -> Vec<MountMeta> {
    let Some(mounts) = inspect.get("Mounts").and_then(serde_json::Value::as_array) else {
        return Vec::new();
    };
    mounts
        .iter()
        .map(|mount| {
            let text = |key: &str| {
                mount
                    .get(key)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let name = text("Name");
            MountMeta {
                kind: text("Type"),
                name: (!name.is_empty()).then_some(name),
                source: text("Source"),
                destination: text("Destination"),
                rw: mount
                    .get("RW")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(true),
            }
        })
        .collect()
}

/// The named volumes a container mounts, in mount order, each once.
pub fn volume_names(mounts: &[MountMeta]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for mount in mounts {
        if mount.kind == "volume"
            && let Some(name) = &mount.name
            && !names.contains(name)
        {
            names.push(name.clone());
        }
    }
    names
}

/// The volumes a snapshot recorded (driver, options, labels), by volume name.
pub fn recorded_volumes(meta: &serde_json::Value) -> BTreeMap<String, VolumeInfo> {
    let mut found = BTreeMap::new();
    if let Some(volume) = meta.get("volume")
        && let Ok(info) = serde_json::from_value::<VolumeInfo>(volume.clone())
    {
        found.insert(info.name.clone(), info);
    }
    if let Some(volumes) = meta.get("volumes").and_then(serde_json::Value::as_object) {
        for (name, value) in volumes {
            if let Ok(info) = serde_json::from_value::<VolumeInfo>(value.clone()) {
                found.insert(name.clone(), info);
            }
        }
    }
    found
}

/// The stream name under which a bundle stores a volume.
pub fn volume_stream_name(volume: &str) -> String {
    format!("volume/{volume}")
}

/// The stream name under which a compose snapshot stores a container's inspect document.
pub fn container_config_stream_name(container: &str) -> String {
    format!("container/{container}/config")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(name: &str) -> VolumeInfo {
        VolumeInfo {
            name: name.into(),
            driver: "local".into(),
            driver_opts: BTreeMap::new(),
            labels: BTreeMap::from([("k".into(), "v".into())]),
            mountpoint: format!("/var/lib/docker/volumes/{name}/_data"),
        }
    }

    #[test]
    fn recorded_volumes_are_found_in_every_layout() {
        let single = json!({"volume": info("a")});
        assert_eq!(
            recorded_volumes(&single),
            BTreeMap::from([("a".into(), info("a"))])
        );
        let bundle = json!({"volumes": {"b": info("b"), "c": info("c")}});
        assert_eq!(
            recorded_volumes(&bundle).keys().collect::<Vec<_>>(),
            vec!["b", "c"]
        );
        assert!(recorded_volumes(&serde_json::Value::Null).is_empty());
        assert!(recorded_volumes(&json!({"volume": "garbage"})).is_empty());
    }

    #[test]
    fn mounts_and_container_facts_come_from_the_inspect_document() {
        let inspect = json!({
            "Id": "abc", "Name": "/web", "Image": "sha256:1",
            "Config": {"Image": "app:1"},
            "State": {"Running": true},
            "Mounts": [
                {"Type": "volume", "Name": "data", "Source": "/v/data/_data", "Destination": "/data", "RW": true},
                {"Type": "bind", "Source": "/etc/x", "Destination": "/x", "RW": false},
                {"Type": "volume", "Name": "data", "Source": "/v/data/_data", "Destination": "/again", "RW": false}
            ]
        });
        let meta = ContainerMeta::from_inspect(&inspect);
        assert_eq!(meta.name, "web");
        assert_eq!(meta.image, "app:1");
        assert_eq!(meta.image_id, "sha256:1");
        assert!(meta.running);
        let mounts = mounts_of(&inspect);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[1].kind, "bind");
        assert_eq!(mounts[1].name, None);
        assert!(!mounts[1].rw);
        assert_eq!(volume_names(&mounts), vec!["data".to_string()]);
        assert!(mounts_of(&json!({})).is_empty());
    }
}
