//! secrets (core/v1): `stringData` merged into `data` (and never stored), type Opaque by
//! default, the keys each type needs, frozen once `immutable`.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::super::checks::immutable;
use super::super::columns::{self, AGE, NAME};
use super::super::{Cause, Column, FieldLabel, Rules};
use super::configmaps::{MAX_SIZE, frozen, key_causes};

pub struct Secrets;

impl Rules for Secrets {
    type Object = Secret;

    fn default(secret: &mut Secret) {
        // The v1 conversion: stringData overrides data, key by key, and is gone.
        if let Some(strings) = secret.string_data.take() {
            let data = secret.data.get_or_insert_with(Default::default);
            for (key, value) in strings {
                data.insert(key, ByteString(value.into_bytes()));
            }
        }
        if secret.type_.as_deref().is_none_or(str::is_empty) {
            secret.type_ = Some("Opaque".into());
        }
    }

    fn validate(secret: &Secret) -> Vec<Cause> {
        let data = secret.data.clone().unwrap_or_default();
        let mut causes: Vec<Cause> = data.keys().flat_map(|key| key_causes(&format!("data[{key}]"), key)).collect();
        if data.iter().map(|(k, v)| k.len() + v.0.len()).sum::<usize>() > MAX_SIZE {
            causes.push(("data".into(), format!("Too long: must have at most {MAX_SIZE} bytes")));
        }
        let required: &[&str] = match secret.type_.as_deref().unwrap_or("Opaque") {
            "kubernetes.io/dockercfg" => &[".dockercfg"],
            "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
            "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
            "kubernetes.io/tls" => &["tls.crt", "tls.key"],
            _ => &[],
        };
        for key in required {
            if !data.contains_key(*key) {
                causes.push((format!("data[{key}]"), "Required value".into()));
            }
        }
        for key in [".dockercfg", ".dockerconfigjson"] {
            if required.contains(&key)
                && let Some(value) = data.get(key)
                && serde_json::from_slice::<serde_json::Value>(&value.0).is_err()
            {
                causes.push((
                    format!("data[{key}]"),
                    "Invalid value: \"<secret contents redacted>\": invalid JSON".into(),
                ));
            }
        }
        if secret.type_.as_deref() == Some("kubernetes.io/basic-auth")
            && !data.contains_key("username")
            && !data.contains_key("password")
        {
            causes.push(("data[username]".into(), "Required value".into()));
        }
        if secret.type_.as_deref() == Some("kubernetes.io/service-account-token")
            && secret
                .metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key("kubernetes.io/service-account.name"))
        {
            causes.push(("metadata.annotations[kubernetes.io/service-account.name]".into(), "Required value".into()));
        }
        causes
    }

    fn validate_update(new: &Secret, old: &Secret) -> Vec<Cause> {
        let mut causes: Vec<Cause> = immutable(&new.type_, &old.type_, "type").into_iter().collect();
        causes.extend(frozen(old.immutable, new.immutable, [(new.data != old.data, "data")]));
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            columns::string("Type", 0, |o| o["type"].as_str().unwrap_or("Opaque").into()),
            columns::integer("Data", 0, |o| o["data"].as_object().map_or(0, |m| m.len()).into()),
            AGE,
        ]
    }

    fn field_labels() -> Vec<FieldLabel> {
        vec![FieldLabel { name: "type", value: |o| o["type"].as_str().unwrap_or_default().into() }]
    }
}
