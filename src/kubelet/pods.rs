//! The pods bound to this node, kept as the API server asks: a watch of the pods with
//! `spec.nodeName=<node>` (kube-rs reflector), one worker task per pod woken by the watch,
//! by its containers' exits, by its own timers and by the periodic resync; the worker's
//! status and events written to the API. Pods of this agent's origin that the API does
//! not know (deleted while the agent was down) get a worker too, which removes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::client::reflect;
use super::env::ApiObjects;
use super::pod_worker::{Event, NodeContext, PodWorker};
use super::status;

/// ConfigMaps, Secrets and service account tokens, from watches the agent keeps.
pub struct ApiStore {
    client: Client,
    handle: tokio::runtime::Handle,
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
    services: Store<Service>,
    /// Tokens by (pod uid, audience, lifetime), with when they were issued.
    tokens: Mutex<HashMap<(String, String, i64), (String, Instant)>>,
}

impl ApiStore {
    /// Starts the watches of ConfigMaps and Secrets (the agent's of Services is given);
    /// ready once all have listed.
    pub async fn start(client: Client, services: Store<Service>) -> ApiStore {
        let config_maps = reflect::<ConfigMap>(client.clone(), None);
        let secrets = reflect::<Secret>(client.clone(), None);
        let _ = config_maps.wait_until_ready().await;
        let _ = secrets.wait_until_ready().await;
        let _ = services.wait_until_ready().await;
        ApiStore {
            client,
            handle: tokio::runtime::Handle::current(),
            config_maps,
            secrets,
            services,
            tokens: Mutex::new(HashMap::new()),
        }
    }
}

impl ApiObjects for ApiStore {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>> {
        Ok(self.config_maps.get(&ObjectRef::new(name).within(namespace)).map(|m| (*m).clone()))
    }

    fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>> {
        Ok(self.secrets.get(&ObjectRef::new(name).within(namespace)).map(|s| (*s).clone()))
    }

    fn services(&self, namespace: &str) -> Vec<Service> {
        let of_namespace = |s: &Service| s.metadata.namespace.as_deref() == Some(namespace);
        self.services.state().iter().filter(|s| of_namespace(s)).map(|s| (**s).clone()).collect()
    }

    /// A token bound to the pod (TokenRequest), issued again after 80 % of its life, as
    /// kubelet's token manager does.
    fn service_account_token(&self, pod: &Pod, audience: Option<&str>, seconds: i64) -> Result<String> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let key = (uid.clone(), audience.unwrap_or_default().to_string(), seconds);
        if let Some((token, issued)) = self.tokens.lock().expect("tokens").get(&key)
            && issued.elapsed() < Duration::from_secs(seconds.max(0) as u64 * 4 / 5)
        {
            return Ok(token.clone());
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let account =
            pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
        let request: TokenRequest = serde_json::from_value(json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audience.map(|a| vec![a]).unwrap_or_default(),
                "expirationSeconds": seconds,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": uid},
            },
        }))?;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &namespace);
        let answer: TokenRequest = self
            .handle
            .block_on(api.create_subresource("token", &account, &PostParams::default(), &request))
            .map_err(|e| anyhow::anyhow!("a token for service account {namespace}/{account}: {}", message(&e)))?;
        let token = answer.status.map(|s| s.token).unwrap_or_default();
        self.tokens.lock().expect("tokens").insert(key, (token.clone(), Instant::now()));
        Ok(token)
    }
}

/// What the error says, or why the API could not be asked.
pub fn message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{}: {}", status.code, status.message),
        other => other.to_string(),
    }
}

/// The pod workers and what they share.
pub struct Workers {
    client: Client,
    node: Arc<NodeContext>,
    pods: Store<Pod>,
    running: Mutex<HashMap<String, Arc<Notify>>>,
    events: Mutex<HashMap<(String, Event), (String, i32)>>,
    sync_frequency: Duration,
}

/// Runs the pod workers of this node until the process ends.
pub async fn run(
    client: Client,
    node: Arc<NodeContext>,
    sync_frequency: Duration,
    (pods, writer): (Store<Pod>, reflector::store::Writer<Pod>),
) -> Result<()> {
    let api: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", node.name));
    let mut stream = watcher(api, config).default_backoff().reflect(writer).boxed();
    let workers = Arc::new(Workers {
        client,
        node,
        pods,
        running: Mutex::new(HashMap::new()),
        events: Mutex::new(HashMap::new()),
        sync_frequency,
    });
    let mut resync = tokio::time::interval(sync_frequency);
    let mut listed = false;
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) | watcher::Event::Delete(pod))) => {
                    if let Some(uid) = pod.metadata.uid.clone() {
                        workers.wake(&uid);
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    listed = true;
                    workers.resync();
                }
                Some(Ok(watcher::Event::Init)) => {}
                Some(Err(e)) => tracing::warn!("watch pods: {e}"),
                None => anyhow::bail!("the watch of pods ended"),
            },
            _ = resync.tick() => if listed { workers.resync() },
        }
    }
}

impl Workers {
    /// Wakes every worker, and starts one for each pod of this agent's that has none.
    fn resync(self: &Arc<Self>) {
        let uids: Vec<String> = self.running.lock().expect("workers").keys().cloned().collect();
        for uid in uids {
            self.wake(&uid);
        }
        for pod in self.pods.state() {
            if let Some(uid) = &pod.metadata.uid {
                self.wake(uid);
            }
        }
        match self.node.runtime.pods() {
            Ok(pods) => {
                for pod in pods.iter().filter(|p| p.record.spec.origin == runtime::Origin::Node) {
                    self.wake(pod.uid());
                }
            }
            Err(e) => tracing::warn!("list the node's pods: {e}"),
        }
    }

    /// Wakes the pod's worker, starting it if there is none.
    fn wake(self: &Arc<Self>, uid: &str) {
        let mut running = self.running.lock().expect("workers");
        if let Some(notify) = running.get(uid) {
            notify.notify_one();
            return;
        }
        let worker = PodWorker::new(uid.to_string());
        running.insert(uid.to_string(), worker.notify.clone());
        tokio::spawn(self.clone().work(worker));
    }

    fn desired(&self, uid: &str) -> Option<Arc<Pod>> {
        self.pods.find(|p| p.metadata.uid.as_deref() == Some(uid))
    }

    async fn work(self: Arc<Self>, mut worker: PodWorker) {
        let notify = worker.notify.clone();
        loop {
            let desired = self.desired(&worker.uid);
            let node = self.node.clone();
            let pod = desired.clone();
            let synced = tokio::task::spawn_blocking(move || {
                let outcome = worker.sync(&node, pod.as_deref());
                (worker, outcome)
            })
            .await;
            let outcome;
            (worker, outcome) = match synced {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!("a pod worker failed: {e}");
                    return;
                }
            };
            if let Some(pod) = &desired {
                for event in &outcome.events {
                    self.record(pod, event).await;
                }
                if let Some(status) = &outcome.status
                    && let Err(e) = self.write_status(pod, status).await
                {
                    tracing::warn!("pod {}: status: {e}", worker.uid);
                    worker.forget_reported();
                }
                if outcome.delete {
                    self.delete(pod).await;
                }
            }
            if outcome.done {
                self.running.lock().expect("workers").remove(&worker.uid);
                return;
            }
            let wait = outcome.wake_in.unwrap_or(self.sync_frequency).min(self.sync_frequency);
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Writes the pod's status: a merge patch from the status the API has to ours.
    async fn write_status(&self, pod: &Pod, status: &Value) -> Result<(), String> {
        let current = pod.status.as_ref().and_then(|s| serde_json::to_value(s).ok()).unwrap_or(json!({}));
        let mut patch = merge_patch(&current, status);
        if patch.as_object().is_some_and(|p| p.is_empty()) {
            return Ok(());
        }
        // The patch applies to the object this status was computed for, or fails.
        patch = json!({"metadata": {"uid": pod.metadata.uid}, "status": patch});
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop).map_err(|e| message(&e))
    }

    /// Deletes the pod's object, now that nothing of it runs (grace 0, this uid only).
    async fn delete(&self, pod: &Pod) {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(pod.metadata.name.as_deref().unwrap_or_default(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!("delete pod {:?}: {}", pod.metadata.name, message(&e)),
        }
    }

    /// Records an event on the pod, as kubelet's recorder does: a repeat of one already
    /// recorded counts up on it.
    async fn record(&self, pod: &Pod, event: &Event) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), &namespace);
        let key = (uid.clone(), event.clone());
        let now = status::now();
        let seen = self.events.lock().expect("events").get(&key).cloned();
        if let Some((name, count)) = seen {
            let patch = json!({"count": count + 1, "lastTimestamp": now});
            if api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
                self.events.lock().expect("events").insert(key, (name, count + 1));
                return;
            }
        }
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let name = format!(
            "{pod_name}.{:x}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
        );
        let object = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": pod_name, "uid": uid,
                "fieldPath": event.field_path,
            },
            "reason": event.reason,
            "message": event.message,
            "type": if event.warning { "Warning" } else { "Normal" },
            "source": {"component": "kubelet", "host": self.node.name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node.name,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let Ok(typed) = serde_json::from_value(object) else { return };
        match api.create(&PostParams::default(), &typed).await {
            Ok(_) => {
                let mut events = self.events.lock().expect("events");
                // Forgotten with the pod's other events when it is gone; bounded meanwhile.
                if events.len() > 4096 {
                    events.clear();
                }
                events.insert(key, (name, 1));
            }
            Err(e) => tracing::debug!("event {} on pod {pod_name}: {}", event.reason, message(&e)),
        }
    }
}

/// The JSON merge patch (RFC 7386) that turns `from` into `to`.
pub fn merge_patch(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in b {
                match a.get(key) {
                    Some(old) if old == value => {}
                    Some(old) if old.is_object() && value.is_object() => {
                        patch.insert(key.clone(), merge_patch(old, value));
                    }
                    _ => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in a.keys().filter(|k| !b.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => to.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patches_remove_what_is_gone() {
        let from = json!({"phase": "Pending", "state": {"waiting": {"reason": "x"}}, "podIP": "1"});
        let to = json!({"phase": "Running", "state": {"running": {"startedAt": "t"}}, "podIP": "1"});
        assert_eq!(
            merge_patch(&from, &to),
            json!({"phase": "Running", "state": {"running": {"startedAt": "t"}, "waiting": null}})
        );
    }
}
