//! configmaps (core/v1): keys checked, 1 MiB at most, frozen once `immutable`.

use k8s_openapi::api::core::v1::ConfigMap;

use super::super::columns::{self, AGE, NAME};
use super::super::{Cause, Column, Rules};

pub struct ConfigMaps;

/// MaxSecretSize: what a ConfigMap or Secret may hold.
pub const MAX_SIZE: usize = 1 << 20;

impl Rules for ConfigMaps {
    type Object = ConfigMap;
    const SHORT_NAMES: &'static [&'static str] = &["cm"];

    fn default(config_map: &mut ConfigMap) {
        config_map.data.get_or_insert_with(Default::default);
    }

    fn validate(config_map: &ConfigMap) -> Vec<Cause> {
        let mut causes = Vec::new();
        let data = config_map.data.clone().unwrap_or_default();
        let binary = config_map.binary_data.clone().unwrap_or_default();
        for key in data.keys() {
            causes.extend(key_causes(&format!("data[{key}]"), key));
            if binary.contains_key(key) {
                causes.push((
                    format!("data[{key}]"),
                    format!("Invalid value: \"{key}\": duplicate of key present in binaryData"),
                ));
            }
        }
        for key in binary.keys() {
            causes.extend(key_causes(&format!("binaryData[{key}]"), key));
        }
        let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            + binary.iter().map(|(k, v)| k.len() + v.0.len()).sum::<usize>();
        if size > MAX_SIZE {
            causes.push(("".into(), format!("Too long: must have at most {MAX_SIZE} bytes")));
        }
        causes
    }

    fn validate_update(new: &ConfigMap, old: &ConfigMap) -> Vec<Cause> {
        frozen(
            old.immutable,
            new.immutable,
            [(new.data != old.data, "data"), (new.binary_data != old.binary_data, "binaryData")],
        )
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            columns::integer("Data", 0, |o| {
                (o["data"].as_object().map_or(0, |m| m.len()) + o["binaryData"].as_object().map_or(0, |m| m.len()))
                    .into()
            }),
            AGE,
        ]
    }
}

/// IsConfigMapKey: `[-._a-zA-Z0-9]+`, not `.` or `..`, at most 253 characters.
pub fn key_causes(path: &str, key: &str) -> Vec<Cause> {
    let valid = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        return vec![];
    }
    vec![(
        path.to_string(),
        format!(
            "Invalid value: \"{key}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' \
             (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
        ),
    )]
}

/// What an `immutable: true` ConfigMap or Secret refuses: going mutable again, and any
/// change of the `changed` fields.
pub fn frozen<const N: usize>(old: Option<bool>, new: Option<bool>, changed: [(bool, &str); N]) -> Vec<Cause> {
    if old != Some(true) {
        return vec![];
    }
    let message = "Forbidden: field is immutable when `immutable` is set";
    let mut causes = Vec::new();
    if new != Some(true) {
        causes.push(("immutable".to_string(), message.to_string()));
    }
    causes.extend(
        changed.iter().filter(|(changed, _)| *changed).map(|(_, field)| (field.to_string(), message.to_string())),
    );
    causes
}
