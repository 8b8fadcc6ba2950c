//! Events (core/v1) on the objects podctl's agents act on, as client-go's recorder writes
//! them: a repeat of an event already recorded on the same object counts up on it
//! instead of making another.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::client::message;

/// An event to record on an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    pub warning: bool,
    pub reason: String,
    pub message: String,
    /// The part of the object it is about (`spec.containers{web}`).
    pub field_path: Option<String>,
}

impl Event {
    pub fn normal(reason: &str, message: impl Into<String>) -> Event {
        Event { warning: false, reason: reason.into(), message: message.into(), field_path: None }
    }

    pub fn warning(reason: &str, message: impl Into<String>) -> Event {
        Event { warning: true, reason: reason.into(), message: message.into(), field_path: None }
    }
}

/// The object an event is about.
#[derive(Clone, Debug)]
pub struct Involved {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Involved {
    pub fn of<K: kube::Resource<DynamicType = ()>>(object: &K) -> Involved {
        let meta = object.meta();
        Involved {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        }
    }
}

/// Writes the events of one component (`kubelet`, `default-scheduler`,
/// `deployment-controller`…).
pub struct Recorder {
    client: Client,
    component: String,
    /// The node it runs on, for a node's agent.
    host: Option<String>,
    /// The events written, by object and event: their names and counts.
    written: Mutex<HashMap<(String, Event), (String, i32)>>,
}

/// How many recorded events are remembered for counting repeats.
const REMEMBERED: usize = 4096;

impl Recorder {
    pub fn new(client: Client, component: &str, host: Option<&str>) -> Recorder {
        Recorder {
            client,
            component: component.into(),
            host: host.map(String::from),
            written: Mutex::new(HashMap::new()),
        }
    }

    pub async fn record(&self, object: &Involved, event: &Event) {
        let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), &object.namespace);
        let key = (object.uid.clone(), event.clone());
        let now = crate::client::now();
        let seen = self.written.lock().expect("events").get(&key).cloned();
        if let Some((name, count)) = seen {
            let patch = json!({"count": count + 1, "lastTimestamp": now});
            if api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
                self.written.lock().expect("events").insert(key, (name, count + 1));
                return;
            }
        }
        let name = format!(
            "{}.{:x}",
            object.name,
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
        );
        let mut source = json!({"component": self.component});
        if let Some(host) = &self.host {
            source["host"] = host.clone().into();
        }
        let body = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": object.namespace},
            "involvedObject": {
                "apiVersion": object.api_version, "kind": object.kind, "namespace": object.namespace,
                "name": object.name, "uid": object.uid, "fieldPath": event.field_path,
            },
            "reason": event.reason,
            "message": event.message,
            "type": if event.warning { "Warning" } else { "Normal" },
            "source": source,
            "reportingComponent": self.component,
            "reportingInstance": self.host.as_deref().unwrap_or(&self.component),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let Ok(typed) = serde_json::from_value(body) else { return };
        match api.create(&PostParams::default(), &typed).await {
            Ok(_) => {
                let mut written = self.written.lock().expect("events");
                if written.len() > REMEMBERED {
                    written.clear();
                }
                written.insert(key, (name, 1));
            }
            Err(e) => tracing::debug!("event {} on {} {}: {}", event.reason, object.kind, object.name, message(&e)),
        }
    }
}
