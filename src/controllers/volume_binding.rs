//! What the scheduler makes of a pod's PersistentVolumeClaims (kube-scheduler's
//! VolumeBinding plugin): a bound claim's volume may tie the pod to the nodes of its node
//! affinity; an unbound claim of a WaitForFirstConsumer class is provisioned on the node
//! the pod is placed on (the scheduler annotates it, the provisioner answers), and the pod
//! is bound once its claims are; anything else keeps the pod pending, saying why.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{NodeSelector, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;

/// The annotation that tells a provisioner which node a claim's volume is for.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// The claims, volumes and classes the scheduler sees.
#[derive(Default)]
pub struct Storage<'a> {
    claims: HashMap<(&'a str, &'a str), &'a PersistentVolumeClaim>,
    volumes: HashMap<&'a str, &'a PersistentVolume>,
    classes: HashMap<&'a str, &'a StorageClass>,
}

/// Where a pod's claims leave it.
#[derive(Debug, PartialEq)]
pub enum Claims<'a> {
    /// It may be placed on a node every one of `affinities` takes; `unbound` claims are
    /// then to be provisioned there.
    Usable { affinities: Vec<&'a NodeSelector>, unbound: Vec<String> },
    /// A volume is being provisioned for it: it waits.
    Wait,
    /// It cannot be placed, for this reason.
    Unusable(String),
}

impl<'a> Storage<'a> {
    pub fn new(
        claims: &'a [Arc<PersistentVolumeClaim>],
        volumes: &'a [Arc<PersistentVolume>],
        classes: &'a [Arc<StorageClass>],
    ) -> Storage<'a> {
        Storage {
            claims: claims
                .iter()
                .filter_map(|c| Some(((c.metadata.namespace.as_deref()?, c.metadata.name.as_deref()?), &**c)))
                .collect(),
            volumes: volumes.iter().filter_map(|v| Some((v.metadata.name.as_deref()?, &**v))).collect(),
            classes: classes.iter().filter_map(|c| Some((c.metadata.name.as_deref()?, &**c))).collect(),
        }
    }

    pub fn claims_of(&self, pod: &Pod) -> Claims<'a> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let (mut affinities, mut unbound) = (Vec::new(), Vec::new());
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        for source in volumes.into_iter().flatten().filter_map(|v| v.persistent_volume_claim.as_ref()) {
            let name = source.claim_name.as_str();
            let Some(claim) = self.claims.get(&(namespace, name)) else {
                return Claims::Unusable(format!("persistentvolumeclaim \"{name}\" not found"));
            };
            if claim.metadata.deletion_timestamp.is_some() {
                return Claims::Unusable(format!("persistentvolumeclaim \"{name}\" is being deleted"));
            }
            let spec = claim.spec.as_ref();
            match spec.and_then(|s| s.volume_name.as_deref()).filter(|v| !v.is_empty()) {
                // Bound (or being bound): the volume's node affinity, once the cache has it.
                Some(volume) => match self.volumes.get(volume) {
                    Some(volume) => affinities
                        .extend(volume.spec.as_ref().and_then(|s| s.node_affinity.as_ref()?.required.as_ref())),
                    None => return Claims::Wait,
                },
                None => {
                    let class = spec.and_then(|s| s.storage_class_name.as_deref()).and_then(|c| self.classes.get(c));
                    let waits_for_consumer =
                        class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer");
                    if !waits_for_consumer {
                        return Claims::Unusable("pod has unbound immediate PersistentVolumeClaims".into());
                    }
                    let selected = claim.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(SELECTED_NODE));
                    if selected {
                        return Claims::Wait;
                    }
                    unbound.push(name.to_string());
                }
            }
        }
        Claims::Usable { affinities, unbound }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(name: &str, extra: serde_json::Value) -> Arc<PersistentVolumeClaim> {
        let mut claim = json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"storageClassName": "local-path"}});
        for (key, value) in extra.as_object().unwrap() {
            claim[key.as_str()].as_object_mut().unwrap().extend(value.as_object().unwrap().clone());
        }
        Arc::new(serde_json::from_value(claim).unwrap())
    }

    fn pod(claims: &[&str]) -> Pod {
        let volumes: Vec<_> =
            claims.iter().map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}})).collect();
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [], "volumes": volumes}}))
        .unwrap()
    }

    #[test]
    fn claims_bind_the_pod_to_their_volumes_nodes_or_wait_for_provisioning() {
        let classes = [Arc::new(
            serde_json::from_value::<StorageClass>(json!({"metadata": {"name": "local-path"},
                "provisioner": "podctl.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"}))
            .unwrap(),
        )];
        let volumes = [Arc::new(
            serde_json::from_value::<PersistentVolume>(json!({"metadata": {"name": "pv-a"},
                "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}]}]}}}}))
            .unwrap(),
        )];
        let claims = [
            claim("bound", json!({"spec": {"volumeName": "pv-a"}})),
            claim("fresh", json!({})),
            claim("selected", json!({"metadata": {"annotations": {SELECTED_NODE: "a"}}})),
            claim("immediate", json!({"spec": {"storageClassName": "other"}})),
        ];
        let storage = Storage::new(&claims, &volumes, &classes);
        let Claims::Usable { affinities, unbound } = storage.claims_of(&pod(&["bound", "fresh"])) else { panic!() };
        assert_eq!((affinities.len(), unbound), (1, vec!["fresh".to_string()]));
        assert_eq!(storage.claims_of(&pod(&["selected"])), Claims::Wait);
        assert_eq!(
            storage.claims_of(&pod(&["immediate"])),
            Claims::Unusable("pod has unbound immediate PersistentVolumeClaims".into())
        );
        assert_eq!(
            storage.claims_of(&pod(&["gone"])),
            Claims::Unusable("persistentvolumeclaim \"gone\" not found".into())
        );
    }
}
