//! Making, deleting and claiming an owner's pods (kube-controller-manager's PodControl):
//! each write told to the owner's expectations and recorded as an event on the owner, as
//! the ReplicaSet, Job and DaemonSet controllers all do it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;

use super::expectations::Expectations;
use super::objects::Claim;
use crate::client::message;
use crate::events::{Event, Involved, Recorder};

/// What a controller of pods keeps between its passes: its client, its event recorder
/// and its owners' expectations.
pub struct PodOwners {
    pub client: Client,
    pub recorder: Recorder,
    pub expectations: Expectations,
}

impl PodOwners {
    /// `component` names the controller in its events.
    pub fn new(client: Client, component: &str) -> PodOwners {
        PodOwners {
            recorder: Recorder::new(client.clone(), component, None),
            client,
            expectations: Expectations::default(),
        }
    }

    /// What every one of `owners` needs done: each synced against the pods of its
    /// namespace (`sync` is told whether its expectations are met); and the soonest time
    /// to look again. Expectations of owners that are gone are dropped.
    pub fn plan_each<'o, K, A>(
        &self,
        owners: &'o [Arc<K>],
        pods: &[Arc<Pod>],
        sync: impl Fn(&K, &[&Pod], bool) -> (Vec<A>, Option<Duration>),
    ) -> (Vec<(&'o K, Vec<A>)>, Option<Duration>)
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let mut requeue = None;
        let mut plans = Vec::new();
        for owner in owners {
            let meta = owner.meta();
            let in_namespace: Vec<&Pod> =
                pods.iter().map(|p| &**p).filter(|p| p.metadata.namespace == meta.namespace).collect();
            let met = self.expectations.met(meta.uid.as_deref().unwrap_or_default(), &in_namespace);
            let (actions, wait) = sync(owner, &in_namespace, met);
            requeue = super::sooner(requeue, wait);
            plans.push((&**owner, actions));
        }
        self.expectations.keep(&owners.iter().filter_map(|o| o.meta().uid.clone()).collect());
        (plans, requeue)
    }

    /// The pods of `owner`, written on its behalf.
    pub fn control<K: kube::Resource<DynamicType = ()>>(&self, owner: &K) -> PodControl<'_> {
        PodControl::new(&self.client, &self.recorder, &self.expectations, owner)
    }
}

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
