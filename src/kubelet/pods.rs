//! The pods bound to this node, kept as the API server asks: a watch of the pods with
//! `spec.nodeName=<node>` (kube-rs reflector), one worker task per pod woken by the watch,
//! by its containers' exits, by its own timers and by the periodic resync; the worker's
//! status and events written to the API. Pods of this agent's origin that the API does
//! not know (deleted while the agent was down) get a worker too, which removes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::env::ApiObjects;
use super::pod_worker::{NodeContext, PodWorker};
use crate::client::{merge_patch, message, reflect};
use crate::events::{Involved, Recorder};

/// ConfigMaps, Secrets and service account tokens, from watches the agent keeps.
pub struct ApiStore {
    client: Client,
    handle: tokio::runtime::Handle,
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
    services: Store<Service>,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
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
        let claims = reflect::<PersistentVolumeClaim>(client.clone(), None);
        let volumes = reflect::<PersistentVolume>(client.clone(), None);
        let _ = services.wait_until_ready().await;
        let _ = claims.wait_until_ready().await;
        let _ = volumes.wait_until_ready().await;
        ApiStore {
            client,
            handle: tokio::runtime::Handle::current(),
            config_maps,
            secrets,
            services,
            claims,
            volumes,
            tokens: Mutex::new(HashMap::new()),
        }
    }
}

/// Whether `volume` is the claim's: a claim names its volume, but only a volume that names
/// the claim back (namespace, name and uid) is its own — else any claim could name any
/// volume, another namespace's or an administrator's host path.
fn binds(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let back = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    back.is_some_and(|r| {
        r.namespace == claim.metadata.namespace && r.name == claim.metadata.name && r.uid == claim.metadata.uid
    })
}

impl ApiObjects for ApiStore {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>> {
        Ok(self.config_maps.get(&ObjectRef::new(name).within(namespace)).map(|m| (*m).clone()))
    }

    fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>> {
        Ok(self.secrets.get(&ObjectRef::new(name).within(namespace)).map(|s| (*s).clone()))
    }

    fn claimed_volume(&self, namespace: &str, claim: &str) -> Result<PersistentVolume> {
        let found = self.claims.get(&ObjectRef::new(claim).within(namespace));
        let found = found.with_context(|| format!("PersistentVolumeClaim {namespace}/{claim} not found"))?;
        let volume = found.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty());
        let phase = found.status.as_ref().and_then(|s| s.phase.as_deref());
        let volume = volume
            .filter(|_| phase == Some("Bound"))
            .with_context(|| format!("PersistentVolumeClaim {namespace}/{claim} is not bound"))?;
        let bound = self.volumes.get(&ObjectRef::new(&volume));
        let bound =
            bound.with_context(|| format!("PersistentVolume {volume} (of claim {namespace}/{claim}) not found"))?;
        if !binds(&bound, &found) {
            bail!("PersistentVolume {volume} is not bound to claim {namespace}/{claim}");
        }
        Ok((*bound).clone())
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

/// The pod workers and what they share.
pub struct Workers {
    client: Client,
    node: Arc<NodeContext>,
    pods: Store<Pod>,
    running: Mutex<HashMap<String, Arc<Notify>>>,
    events: Recorder,
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
        events: Recorder::new(client.clone(), "kubelet", Some(&node.name)),
        client,
        node,
        pods,
        running: Mutex::new(HashMap::new()),
        sync_frequency,
    });
    let mut resync = tokio::time::interval(sync_frequency);
    let mut listed = false;
    // Whether a sweep still runs: a slow disk must not get a second one on top.
    let sweeping = Arc::new(std::sync::atomic::AtomicBool::new(false));
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
            _ = resync.tick() => {
                if listed {
                    workers.resync();
                }
                // What removed pods left on disk is deleted here, where no pod start waits.
                if !sweeping.swap(true, std::sync::atomic::Ordering::AcqRel) {
                    let (runtime, log_dir) = (workers.node.runtime.clone(), workers.node.log_dir.clone());
                    let sweeping = sweeping.clone();
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = super::sandbox::sweep(&runtime, &log_dir) {
                            tracing::warn!("delete what removed pods left: {e:#}");
                        }
                        sweeping.store(false, std::sync::atomic::Ordering::Release);
                    });
                }
            }
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
                    self.events.record(&Involved::of(&**pod), event).await;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_volume_is_a_claims_only_when_it_names_the_claim_back() {
        let claim: PersistentVolumeClaim =
            serde_json::from_value(json!({"metadata": {"name": "data", "namespace": "a", "uid": "u1"}})).unwrap();
        let volume = |namespace: &str, uid: &str| -> PersistentVolume {
            serde_json::from_value(json!({"metadata": {"name": "pv"},
                "spec": {"claimRef": {"namespace": namespace, "name": "data", "uid": uid}}}))
            .unwrap()
        };
        assert!(binds(&volume("a", "u1"), &claim));
        assert!(!binds(&volume("b", "u1"), &claim), "another namespace's");
        assert!(!binds(&volume("a", "u0"), &claim), "an earlier claim of that name's");
        assert!(!binds(&serde_json::from_value(json!({"metadata": {"name": "root"}, "spec": {}})).unwrap(), &claim));
    }
}
