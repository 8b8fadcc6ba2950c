//! events (events.k8s.io/v1): the same objects as core events, seen through the newer
//! type (kube-rs's and client-go's event recorders write these). They are stored as core
//! events, converted field by field both ways as kube-apiserver converts them (`regarding`
//! is `involvedObject`, `note` is `message`, the `deprecated*` fields the old ones), so
//! `kubectl get events` lists them too. Creates through this group are checked strictly
//! (ValidateEventCreate): a time, a reporting controller and instance, an action and a
//! reason, and none of the old counting fields.

use std::borrow::Cow;

use k8s_openapi::api::events::v1::Event;
use serde_json::{Map, Value};

use super::checks::immutable;
use super::core::events::Events as CoreEvents;
use super::typed::StoredAs;
use super::{Cause, Column, FieldLabel, Rules};
use crate::validation;

pub struct Events;

/// events.k8s.io/v1 field, core/v1 field.
const RENAMED: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

fn rename(object: &mut Value, api_version: &str, to_core: bool) {
    let Some(map) = object.as_object_mut() else { return };
    let mut renamed = Map::new();
    for (key, value) in std::mem::take(map) {
        let key = RENAMED
            .iter()
            .find(|(events, core)| if to_core { key == *events } else { key == *core })
            .map_or(key.clone(), |(events, core)| if to_core { core.to_string() } else { events.to_string() });
        renamed.insert(key, value);
    }
    renamed.insert("apiVersion".into(), api_version.into());
    *map = renamed;
}

fn to_core(object: &mut Value) {
    rename(object, "v1", true);
}

fn from_core(object: &mut Value) {
    rename(object, "events.k8s.io/v1", false);
}

fn too_long(path: &str, value: Option<&str>, limit: usize) -> Option<Cause> {
    value
        .filter(|v| v.len() > limit)
        .map(|_| (path.to_string(), format!("Invalid value: \"\": can have at most {limit} characters")))
}

impl Rules for Events {
    type Object = Event;
    const SHORT_NAMES: &'static [&'static str] = &["ev"];
    const STORED_AS: Option<StoredAs> = Some(StoredAs { group: "", to_storage: to_core, from_storage: from_core });

    fn printable(object: &Value) -> Cow<'_, Value> {
        let mut core = object.clone();
        to_core(&mut core);
        Cow::Owned(core)
    }

    fn columns() -> Vec<Column> {
        CoreEvents::columns()
    }

    fn field_labels() -> Vec<FieldLabel> {
        vec![]
    }

    fn validate_create(event: &Event) -> Vec<Cause> {
        let mut causes = Vec::new();
        let required = |path: &str, value: &Option<String>| {
            value.as_deref().is_none_or(str::is_empty).then(|| (path.to_string(), "Required value".to_string()))
        };
        if event.event_time.is_none() {
            causes.push(("eventTime".into(), "Required value".into()));
        }
        causes.extend(required("reportingController", &event.reporting_controller));
        if let Some(controller) = event.reporting_controller.as_deref().filter(|c| !c.is_empty()) {
            causes.extend(validation::check("reportingController", controller, validation::qualified_name));
        }
        causes.extend(required("reportingInstance", &event.reporting_instance));
        causes.extend(too_long("reportingInstance", event.reporting_instance.as_deref(), 128));
        causes.extend(required("action", &event.action));
        causes.extend(too_long("action", event.action.as_deref(), 128));
        causes.extend(required("reason", &event.reason));
        causes.extend(too_long("reason", event.reason.as_deref(), 128));
        causes.extend(too_long("message", event.note.as_deref(), 1024));
        let kind = event.type_.as_deref().unwrap_or("");
        if kind != "Normal" && kind != "Warning" {
            causes.push(("type".into(), format!("Invalid value: \"\": has invalid value: {kind}")));
        }
        for (path, set) in [
            ("firstTimestamp", event.deprecated_first_timestamp.is_some()),
            ("lastTimestamp", event.deprecated_last_timestamp.is_some()),
            ("count", event.deprecated_count.is_some_and(|c| c != 0)),
            ("source", event.deprecated_source.as_ref().is_some_and(|s| s.component.is_some() || s.host.is_some())),
        ] {
            if set {
                causes.push((path.into(), "Invalid value: \"\": needs to be unset".into()));
            }
        }
        if let Some(series) = &event.series
            && series.count < 2
        {
            causes.push(("series.count".into(), format!("Invalid value: {}: should be at least 2", series.count)));
        }
        causes
    }

    /// ValidateEventUpdate: only the series (and metadata) change.
    fn validate_update(new: &Event, old: &Event) -> Vec<Cause> {
        [
            immutable(&new.regarding, &old.regarding, "involvedObject"),
            immutable(&new.reason, &old.reason, "reason"),
            immutable(&new.note, &old.note, "message"),
            immutable(&new.type_, &old.type_, "type"),
            immutable(&new.event_time, &old.event_time, "eventTime"),
            immutable(&new.action, &old.action, "action"),
            immutable(&new.related, &old.related, "related"),
            immutable(&new.reporting_controller, &old.reporting_controller, "reportingController"),
            immutable(&new.reporting_instance, &old.reporting_instance, "reportingInstance"),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn events_convert_to_core_events_and_back() {
        let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "pulled", "reportingController": "kubelet",
            "deprecatedCount": 3, "reason": "Pulled"});
        let mut core = event.clone();
        to_core(&mut core);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!((core["involvedObject"]["name"].as_str(), core["message"].as_str()), (Some("p"), Some("pulled")));
        assert_eq!((core["reportingComponent"].as_str(), core["count"].as_i64()), (Some("kubelet"), Some(3)));
        assert!(core.get("note").is_none() && core.get("regarding").is_none());
        from_core(&mut core);
        assert_eq!(core, event);
    }
}
