//! Turning a container's inspect document back into what recreates it: Dockerfile-style
//! `changes` for `docker import` (so that the restored image carries the original CMD, ENV, ...)
//! and an Engine API create body (so that the container gets the original configuration, mounts,
//! ports and restart policy).

use serde_json::{Value, json};

/// An image reference for the image restored from a container snapshot:
/// `cairn-restore/<container name, as an image name>:<first 12 hex digits of the snapshot id>`.
pub fn image_reference_for(container: &str, snapshot: &crate::Id) -> String {
    let mut name = String::new();
    for c in container.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('-') {
            // Image name components allow separators only between alphanumerics.
            name.push('-');
        }
    }
    let name = name.trim_matches('-');
    let name = if name.is_empty() { "container" } else { name };
    let hex = snapshot.to_hex();
    format!("cairn-restore/{name}:{}", &hex[..12.min(hex.len())])
}

/// Dockerfile instructions that give an imported filesystem the image configuration of
/// `config` (the `Config` object of a container's inspect document): CMD, ENTRYPOINT, ENV,
/// WORKDIR, USER, EXPOSE and LABEL.
///
/// Values are quoted and escaped so that the engine's Dockerfile parser reads them back
/// verbatim, with no variable expansion. An ENV or LABEL whose key or value cannot be written on
/// one instruction line (a newline, say) is left out of the image; the restored container gets
/// it all the same, from its create body.
pub fn import_changes(config: &Value) -> Vec<String> {
    let mut changes = Vec::new();
    for (key, instruction) in [("Entrypoint", "ENTRYPOINT"), ("Cmd", "CMD")] {
        if let Some(args) = config.get(key).and_then(Value::as_array)
            && args.iter().all(Value::is_string)
            && let Ok(text) = serde_json::to_string(args)
            && !text.contains('\n')
        {
            changes.push(format!("{instruction} {text}"));
        }
    }
    for entry in strings(config.get("Env")) {
        if let Some((key, value)) = entry.split_once('=')
            && plain_key(key)
            && let Some(value) = quoted(value)
        {
            changes.push(format!("ENV {key}={value}"));
        }
    }
    if let Some(dir) = config.get("WorkingDir").and_then(Value::as_str)
        && !dir.is_empty()
        && let Some(dir) = quoted(dir)
    {
        changes.push(format!("WORKDIR {dir}"));
    }
    if let Some(user) = config.get("User").and_then(Value::as_str)
        && !user.is_empty()
        && plain_key(user)
    {
        changes.push(format!("USER {user}"));
    }
    if let Some(ports) = config.get("ExposedPorts").and_then(Value::as_object) {
        for port in ports.keys().filter(|port| plain_key(port)) {
            changes.push(format!("EXPOSE {port}"));
        }
    }
    if let Some(labels) = config.get("Labels").and_then(Value::as_object) {
        for (key, value) in labels {
            if let (Some(key), Some(value)) = (quoted(key), value.as_str().and_then(quoted)) {
                changes.push(format!("LABEL {key}={value}"));
            }
        }
    }
    changes
}

fn strings(value: Option<&Value>) -> impl Iterator<Item = &str> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// A word the Dockerfile parser takes as is: no spaces, quotes, escapes or variables.
fn plain_key(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '$' | '='))
}

/// A double-quoted Dockerfile word that reads back as `text`, or None if it cannot be written
/// on one line.
fn quoted(text: &str) -> Option<String> {
    if text.contains(['\n', '\r']) {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

/// The Engine API create body that recreates the container of `inspect` from `image`: its
/// `Config` (with the image replaced) and `HostConfig` (mounts, ports, restart policy, ...).
///
/// Every named volume the container had mounted is mounted again at the same place: volumes it
/// got from the image's VOLUME list (anonymous ones included) appear only under `Mounts` of the
/// inspect document, so they are added as explicit mounts. The hostname is dropped when it is
/// the engine's default (the old container's short id).
pub fn create_body(inspect: &Value, image: &str) -> Value {
    let mut body = match inspect.get("Config") {
        Some(Value::Object(config)) => Value::Object(config.clone()),
        _ => json!({}),
    };
    body["Image"] = json!(image);
    let id = inspect
        .get("Id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let default_hostname = id.get(..12).unwrap_or(id);
    if body.get("Hostname").and_then(Value::as_str) == Some(default_hostname)
        && let Some(config) = body.as_object_mut()
    {
        config.remove("Hostname");
    }
    let mut host = match inspect.get("HostConfig") {
        Some(Value::Object(host)) => Value::Object(host.clone()),
        _ => json!({}),
    };
    let explicit = explicit_volume_targets(&host);
    let mut added = Vec::new();
    for mount in inspect
        .get("Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = |key: &str| mount.get(key).and_then(Value::as_str).unwrap_or_default();
        if text("Type") != "volume" || text("Name").is_empty() {
            continue;
        }
        let destination = text("Destination");
        if explicit.iter().any(|target| target == destination) {
            continue;
        }
        added.push(json!({
            "Type": "volume",
            "Source": text("Name"),
            "Target": destination,
            "ReadOnly": !mount.get("RW").and_then(Value::as_bool).unwrap_or(true),
        }));
    }
    if !added.is_empty() {
        let mut mounts = host
            .get("Mounts")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        mounts.extend(added);
        host["Mounts"] = Value::Array(mounts);
    }
    body["HostConfig"] = host;
    body
}

/// Container paths that `Binds` and `Mounts` of a host config already mount something on.
fn explicit_volume_targets(host: &Value) -> Vec<String> {
    let mut targets: Vec<String> = strings(host.get("Binds"))
        .filter_map(|bind| bind.split(':').nth(1))
        .map(str::to_string)
        .collect();
    for mount in host
        .get("Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(target) = mount.get("Target").and_then(Value::as_str) {
            targets.push(target.to_string());
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads a double-quoted Dockerfile word the way the engine's shell lexer does.
    fn unquote(word: &str) -> String {
        let inner = &word[1..word.len() - 1];
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn quoted_words_read_back_verbatim(text in "[^\n\r]*") {
            let word = quoted(&text).unwrap();
            prop_assert_eq!(unquote(&word), text);
        }
    }

    #[test]
    fn changes_cover_the_image_configuration() {
        let config = json!({
            "Cmd": ["/bin/busybox", "sleep", "300"],
            "Entrypoint": null,
            "Env": ["PATH=/bin", "GREETING=hello \"world\" $HOME", "MULTI=a\nb"],
            "WorkingDir": "/srv/app",
            "User": "1000:1000",
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {"org.example.team": "storage & backup"}
        });
        assert_eq!(
            import_changes(&config),
            vec![
                r#"CMD ["/bin/busybox","sleep","300"]"#.to_string(),
                "ENV PATH=\"/bin\"".to_string(),
                r#"ENV GREETING="hello \"world\" \$HOME""#.to_string(),
                "WORKDIR \"/srv/app\"".to_string(),
                "USER 1000:1000".to_string(),
                "EXPOSE 8080/tcp".to_string(),
                r#"LABEL "org.example.team"="storage & backup""#.to_string(),
            ]
        );
        assert!(import_changes(&json!({})).is_empty());
    }

    #[test]
    fn image_references_are_valid_names() {
        let id = crate::Id::of(b"snapshot");
        let short = &id.to_hex()[..12];
        assert_eq!(
            image_reference_for("My_App.2", &id),
            format!("cairn-restore/my-app-2:{short}")
        );
        assert_eq!(
            image_reference_for("__", &id),
            format!("cairn-restore/container:{short}")
        );
    }

    #[test]
    fn the_create_body_keeps_config_and_host_config_and_mounts_every_volume() {
        let inspect = json!({
            "Id": "0123456789abcdef",
            "Config": {"Hostname": "0123456789ab", "Image": "old:1", "Env": ["A=1"], "Cmd": ["x"]},
            "HostConfig": {
                "Binds": ["data:/data:rw"],
                "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
            },
            "Mounts": [
                {"Type": "volume", "Name": "data", "Destination": "/data", "RW": true},
                {"Type": "volume", "Name": "f00d", "Destination": "/cache", "RW": false},
                {"Type": "bind", "Source": "/etc/x", "Destination": "/x", "RW": true}
            ]
        });
        let body = create_body(&inspect, "cairn-restore/web:1");
        assert_eq!(body["Image"], "cairn-restore/web:1");
        assert!(body.get("Hostname").is_none());
        assert_eq!(body["Env"], json!(["A=1"]));
        assert_eq!(body["HostConfig"]["Binds"], json!(["data:/data:rw"]));
        assert_eq!(
            body["HostConfig"]["RestartPolicy"]["Name"],
            "unless-stopped"
        );
        assert_eq!(
            body["HostConfig"]["Mounts"],
            json!([{"Type": "volume", "Source": "f00d", "Target": "/cache", "ReadOnly": true}])
        );
        let custom = json!({"Id": "0123456789abcdef", "Config": {"Hostname": "db"}});
        assert_eq!(create_body(&custom, "i")["Hostname"], "db");
    }
}
