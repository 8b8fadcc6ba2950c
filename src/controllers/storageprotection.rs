//! The storage object in-use protection controllers (kube-controller-manager's
//! persistentvolumeclaim-protection and persistentvolume-protection): the API server
//! gives every claim and volume a protection finalizer; a deleted claim loses it once no
//! pod that may still run uses it, a deleted volume once no claim is bound to it.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Notify;

use super::informers::Informers;
use super::objects::is_terminal;

const CLAIM_PROTECTION: &str = "kubernetes.io/pvc-protection";
const VOLUME_PROTECTION: &str = "kubernetes.io/pv-protection";

#[derive(Debug, PartialEq)]
pub enum Action {
    /// Drop the finalizer from claim (namespace, name), leaving these finalizers.
    ReleaseClaim {
        namespace: String,
        name: String,
        finalizers: Vec<String>,
    },
    ReleaseVolume {
        name: String,
        finalizers: Vec<String>,
    },
}

fn without(finalizers: &Option<Vec<String>>, finalizer: &str) -> Option<Vec<String>> {
    let finalizers = finalizers.as_ref()?;
    finalizers.iter().any(|f| f == finalizer).then(|| finalizers.iter().filter(|f| *f != finalizer).cloned().collect())
}

pub fn sync(claims: &[&PersistentVolumeClaim], volumes: &[&PersistentVolume], pods: &[&Pod]) -> Vec<Action> {
    let in_use: HashSet<(&str, &str)> = pods
        .iter()
        .filter(|p| !is_terminal(p))
        .flat_map(|p| {
            let namespace = p.metadata.namespace.as_deref().unwrap_or_default();
            let volumes = p.spec.as_ref().and_then(|s| s.volumes.as_ref());
            volumes
                .into_iter()
                .flatten()
                .filter_map(move |v| Some((namespace, v.persistent_volume_claim.as_ref()?.claim_name.as_str())))
        })
        .collect();
    let mut actions = Vec::new();
    for claim in claims.iter().filter(|c| c.metadata.deletion_timestamp.is_some()) {
        let (namespace, name) =
            (claim.metadata.namespace.clone().unwrap_or_default(), claim.metadata.name.clone().unwrap_or_default());
        if in_use.contains(&(namespace.as_str(), name.as_str())) {
            continue;
        }
        if let Some(finalizers) = without(&claim.metadata.finalizers, CLAIM_PROTECTION) {
            actions.push(Action::ReleaseClaim { namespace, name, finalizers });
        }
    }
    for volume in volumes.iter().filter(|v| v.metadata.deletion_timestamp.is_some()) {
        if volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") {
            continue;
        }
        if let Some(finalizers) = without(&volume.metadata.finalizers, VOLUME_PROTECTION) {
            actions.push(Action::ReleaseVolume { name: volume.metadata.name.clone().unwrap_or_default(), finalizers });
        }
    }
    actions
}

/// Keeps the claims' protection (`claims`) or the volumes' until the process ends.
pub fn start(client: Client, informers: &Arc<Informers>, claims: bool) {
    let wake = Arc::new(Notify::new());
    informers.claims().subscribe(&wake);
    informers.volumes().subscribe(&wake);
    informers.pods().subscribe(&wake);
    let (informers, of_claims) = (informers.clone(), claims);
    super::level_triggered(wake, move || {
        let (client, informers) = (client.clone(), informers.clone());
        async move {
            let i = &informers;
            if !(i.claims().ready().await && i.volumes().ready().await && i.pods().ready().await) {
                return None;
            }
            let (claims, volumes, pods) = (i.claims().all(), i.volumes().all(), i.pods().all());
            let mut ok = true;
            let actions = sync(&super::refs(&claims), &super::refs(&volumes), &super::refs(&pods));
            for action in actions.into_iter().filter(|a| matches!(a, Action::ReleaseClaim { .. }) == of_claims) {
                ok &= match action {
                    Action::ReleaseClaim { namespace, name, finalizers } => {
                        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
                        let patch = json!({"metadata": {"finalizers": finalizers}});
                        super::report(
                            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await,
                            "persistentvolumeclaim",
                            &name,
                        )
                    }
                    Action::ReleaseVolume { name, finalizers } => {
                        let api: Api<PersistentVolume> = Api::all(client.clone());
                        let patch = json!({"metadata": {"finalizers": finalizers}});
                        super::report(
                            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await,
                            "persistentvolume",
                            &name,
                        )
                    }
                };
            }
            (!ok).then_some(std::time::Duration::from_secs(1))
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deleted_claim_waits_for_its_pods_and_a_deleted_volume_for_its_claim() {
        let claim: PersistentVolumeClaim =
            serde_json::from_value(json!({"metadata": {"name": "data", "namespace": "default",
            "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": [CLAIM_PROTECTION, "other"]}}))
            .unwrap();
        let user: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [], "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}))
        .unwrap();
        assert!(sync(&[&claim], &[], &[&user]).is_empty());
        assert_eq!(
            sync(&[&claim], &[], &[]),
            [Action::ReleaseClaim {
                namespace: "default".into(),
                name: "data".into(),
                finalizers: vec!["other".into()]
            }]
        );
        let volume = |phase: &str| -> PersistentVolume {
            serde_json::from_value(json!({"metadata": {"name": "pv", "deletionTimestamp": "2026-01-01T00:00:00Z",
                "finalizers": [VOLUME_PROTECTION]}, "status": {"phase": phase}}))
            .unwrap()
        };
        assert!(sync(&[], &[&volume("Bound")], &[]).is_empty());
        assert_eq!(
            sync(&[], &[&volume("Released")], &[]),
            [Action::ReleaseVolume { name: "pv".into(), finalizers: vec![] }]
        );
    }
}
