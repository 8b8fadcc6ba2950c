//! events (core/v1).

use k8s_openapi::api::core::v1::Event;
use serde_json::Value;

use super::super::columns::{self, human_age};
use super::super::{Column, FieldLabel, Rules};

pub struct Events;

impl Rules for Events {
    type Object = Event;
    const SHORT_NAMES: &'static [&'static str] = &["ev"];

    fn columns() -> Vec<Column> {
        vec![
            columns::string("Last Seen", 0, |o| {
                let at = o["series"]["lastObservedTime"]
                    .as_str()
                    .or(o["lastTimestamp"].as_str())
                    .or(o["firstTimestamp"].as_str())
                    .or(o["eventTime"].as_str())
                    .or(o["metadata"]["creationTimestamp"].as_str());
                at.map_or("<unknown>".into(), |t| human_age(t).into())
            }),
            columns::string("Type", 0, |o| columns::text(&o["type"])),
            columns::string("Reason", 0, |o| columns::text(&o["reason"])),
            columns::string("Object", 0, |o| {
                let kind = o["involvedObject"]["kind"].as_str().unwrap_or("").to_lowercase();
                format!("{kind}/{}", o["involvedObject"]["name"].as_str().unwrap_or("")).into()
            }),
            columns::string("Subobject", 1, |o| o["involvedObject"]["fieldPath"].as_str().unwrap_or("").into()),
            columns::string("Source", 1, |o| {
                let (component, host) = match o["source"]["component"].as_str().filter(|c| !c.is_empty()) {
                    Some(component) => (component, o["source"]["host"].as_str().unwrap_or("")),
                    None => {
                        (o["reportingComponent"].as_str().unwrap_or(""), o["reportingInstance"].as_str().unwrap_or(""))
                    }
                };
                if host.is_empty() { component.into() } else { format!("{component}, {host}").into() }
            }),
            columns::string("Message", 0, |o| o["message"].as_str().unwrap_or("").trim().into()),
            columns::string("First Seen", 1, |o| {
                o["firstTimestamp"]
                    .as_str()
                    .or(o["eventTime"].as_str())
                    .map_or("<unknown>".into(), |t| human_age(t).into())
            }),
            columns::integer("Count", 1, |o| {
                let count = o["series"]["count"].as_i64().or(o["count"].as_i64()).unwrap_or(0);
                count.max(1).into()
            }),
            columns::string("Name", 1, columns::name),
        ]
    }

    fn field_labels() -> Vec<FieldLabel> {
        fn text(v: &Value) -> String {
            v.as_str().unwrap_or_default().to_string()
        }
        vec![
            FieldLabel { name: "involvedObject.kind", value: |o| text(&o["involvedObject"]["kind"]) },
            FieldLabel { name: "involvedObject.namespace", value: |o| text(&o["involvedObject"]["namespace"]) },
            FieldLabel { name: "involvedObject.name", value: |o| text(&o["involvedObject"]["name"]) },
            FieldLabel { name: "involvedObject.uid", value: |o| text(&o["involvedObject"]["uid"]) },
            FieldLabel { name: "involvedObject.apiVersion", value: |o| text(&o["involvedObject"]["apiVersion"]) },
            FieldLabel {
                name: "involvedObject.resourceVersion",
                value: |o| text(&o["involvedObject"]["resourceVersion"]),
            },
            FieldLabel { name: "involvedObject.fieldPath", value: |o| text(&o["involvedObject"]["fieldPath"]) },
            FieldLabel { name: "reason", value: |o| text(&o["reason"]) },
            FieldLabel { name: "reportingComponent", value: |o| text(&o["reportingComponent"]) },
            FieldLabel {
                name: "source",
                value: |o| {
                    o["source"]["component"]
                        .as_str()
                        .filter(|c| !c.is_empty())
                        .map_or_else(|| text(&o["reportingComponent"]), String::from)
                },
            },
            FieldLabel { name: "type", value: |o| text(&o["type"]) },
        ]
    }
}
