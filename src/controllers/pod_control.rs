//! Making, deleting and claiming an owner's pods (kube-controller-manager's PodControl):
//! each write told to the owner's expectations and recorded as an event on the owner, as
//! the ReplicaSet, Job and DaemonSet controllers all do it.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;

use super::expectations::Expectations;
use super::objects::Claim;
use crate::client::message;
use crate::events::{Event, Involved, Recorder};

pub struct PodControl<'a> {
    pods: Api<Pod>,
    recorder: &'a Recorder,
    expectations: &'a Expectations,
    involved: Involved,
}

impl<'a> PodControl<'a> {
    /// The pods of `owner`'s namespace, written on its behalf.
    pub fn new<K: kube::Resource<DynamicType = ()>>(
        client: &Client,
        recorder: &'a Recorder,
        expectations: &'a Expectations,
        owner: &K,
    ) -> PodControl<'a> {
        let involved = Involved::of(owner);
        let pods = Api::namespaced(client.clone(), &involved.namespace);
        PodControl { pods, recorder, expectations, involved }
    }

    /// Makes `pod` (from the owner's template): SuccessfulCreate, or FailedCreate with the
    /// API's reason.
    pub async fn create(&self, pod: Value) -> bool {
        let Involved { kind, namespace, name, uid, .. } = &self.involved;
        let pod = match serde_json::from_value::<Pod>(pod) {
            Ok(pod) => pod,
            Err(e) => {
                tracing::warn!("{} {namespace}/{name}: its template is no pod: {e}", kind.to_lowercase());
                return false;
            }
        };
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                let pod = created.metadata.name.unwrap_or_default();
                self.expectations.created(uid, pod.clone());
                self.record(Event::normal("SuccessfulCreate", format!("Created pod: {pod}"))).await;
                true
            }
            Err(e) => {
                tracing::warn!("{} {namespace}/{name}: create a pod: {}", kind.to_lowercase(), message(&e));
                self.record(Event::warning("FailedCreate", format!("Error creating: {}", message(&e)))).await;
                false
            }
        }
    }

    /// Deletes pod `name` (`uid`); true when it is gone, by this call or before.
    pub async fn delete(&self, name: &str, uid: String) -> bool {
        self.expectations.deleted(&self.involved.uid, uid);
        let outcome = super::deleted(self.pods.delete(name, &DeleteParams::default()).await, "pod", name);
        if outcome == Some(true) {
            self.record(Event::normal("SuccessfulDelete", format!("Deleted pod: {name}"))).await;
        }
        outcome.is_some()
    }

    /// Adopts or releases a pod.
    pub async fn claim(&self, claim: Claim) -> bool {
        let (Claim::Adopt { name, patch } | Claim::Release { name, patch }) = claim;
        super::report(self.pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await, "pod", &name)
    }

    pub async fn record(&self, event: Event) {
        self.recorder.record(&self.involved, &event).await;
    }
}
