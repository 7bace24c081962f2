//! Plain descriptions of engine objects, independent of bollard's generated models.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// What cairn records about a volume: enough to recreate it with the same driver and metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    pub driver: String,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Path on the engine's host (meaningless on another machine, recorded for information).
    pub mountpoint: String,
}

impl From<bollard::models::Volume> for VolumeInfo {
    fn from(volume: bollard::models::Volume) -> VolumeInfo {
        VolumeInfo {
            name: volume.name,
            driver: volume.driver,
            driver_opts: sorted(volume.options),
            labels: sorted(volume.labels),
            mountpoint: volume.mountpoint,
        }
    }
}

/// The engine's lifecycle state of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    Other(String),
}

impl ContainerState {
    /// The state from the engine's word for it ("running", "paused", ...).
    pub fn from_engine(state: &str) -> ContainerState {
        match state {
            "created" => ContainerState::Created,
            "running" => ContainerState::Running,
            "paused" => ContainerState::Paused,
            "restarting" => ContainerState::Restarting,
            "removing" => ContainerState::Removing,
            "exited" => ContainerState::Exited,
            "dead" => ContainerState::Dead,
            other => ContainerState::Other(other.to_string()),
        }
    }

    /// Whether processes of the container exist (running or frozen), i.e. whether its files may
    /// be in use.
    pub fn has_processes(&self) -> bool {
        matches!(
            self,
            ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    pub id: String,
    /// Without the leading '/' the engine puts in front of names.
    pub name: String,
    pub image: String,
    pub state: ContainerState,
    pub labels: BTreeMap<String, String>,
}

impl From<bollard::models::ContainerSummary> for ContainerRef {
    fn from(summary: bollard::models::ContainerSummary) -> ContainerRef {
        // The state enum is serialized back to the engine's word so that states unknown to this
        // bollard version survive as `Other`.
        let state = summary
            .state
            .and_then(|state| serde_json::to_value(state).ok())
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default();
        let name = summary
            .names
            .unwrap_or_default()
            .into_iter()
            .next()
            .map(|name| name.trim_start_matches('/').to_string())
            .unwrap_or_default();
        ContainerRef {
            id: summary.id.unwrap_or_default(),
            name,
            image: summary.image.unwrap_or_default(),
            state: ContainerState::from_engine(&state),
            labels: sorted(summary.labels.unwrap_or_default()),
        }
    }
}

fn sorted(map: HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};

    #[test]
    fn container_ref_takes_the_first_name_without_slash_and_the_engine_state() {
        let summary = ContainerSummary {
            id: Some("abc".into()),
            names: Some(vec!["/web".into(), "/alias".into()]),
            image: Some("busybox".into()),
            state: Some(ContainerSummaryStateEnum::PAUSED),
            labels: Some(HashMap::from([
                ("b".into(), "2".into()),
                ("a".into(), "1".into()),
            ])),
            ..Default::default()
        };
        let reference = ContainerRef::from(summary);
        assert_eq!(reference.name, "web");
        assert_eq!(reference.state, ContainerState::Paused);
        assert!(reference.state.has_processes());
        assert_eq!(reference.labels.keys().collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn unknown_states_are_kept() {
        assert_eq!(
            ContainerState::from_engine("hibernating"),
            ContainerState::Other("hibernating".into())
        );
        assert!(!ContainerState::Exited.has_processes());
    }
}
