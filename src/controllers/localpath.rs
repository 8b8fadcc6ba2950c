//! Local storage, as rancher's local-path-provisioner gives it: a default StorageClass
//! `local-path` (WaitForFirstConsumer, reclaim Delete) whose claims get a PersistentVolume
//! that is a directory on the node the scheduler placed their pod on (`hostPath`, tied to
//! that node by node affinity), bound to them; a volume whose claim is gone is Released.
//! The node agent makes the directory when it mounts it, and removes it (and the volume)
//! once a Released volume's policy is Delete.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::informers::Informers;
use super::volume_binding::SELECTED_NODE;
use crate::events::{Event, Involved, Recorder};

/// The provisioner's name, in its StorageClass and the volumes it makes.
pub const PROVISIONER: &str = "podctl.io/local-path";
pub const CLASS: &str = "local-path";
/// Where on a node its volumes' directories go: the node agent annotates its Node.
pub const LOCAL_STORAGE: &str = "podctl.io/local-storage";
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

#[derive(Debug, PartialEq)]
pub enum Action {
    CreateClass(Value),
    /// A volume for a claim, on a node.
    Provision {
        claim: String,
        namespace: String,
        volume: Value,
    },
    /// The claim cannot be provisioned (an event on it).
    Fail {
        claim: String,
        namespace: String,
        message: String,
    },
    /// The claim names its volume and is Bound.
    BindClaim {
        claim: String,
        namespace: String,
        volume: String,
        status: Value,
    },
    /// The volume's phase: Bound to its claim, or Released once the claim is gone.
    VolumePhase {
        volume: String,
        phase: &'static str,
    },
}

/// What the provisioner does, from every claim, volume, class and node.
pub fn sync(
    claims: &[&PersistentVolumeClaim],
    volumes: &[&PersistentVolume],
    classes: &[&StorageClass],
    nodes: &[&Node],
) -> Vec<Action> {
    let mut actions = Vec::new();
    if !classes.iter().any(|c| c.metadata.name.as_deref() == Some(CLASS)) {
        let other_default = classes.iter().any(|c| {
            c.metadata.annotations.as_ref().and_then(|a| a.get(DEFAULT_CLASS)).map(String::as_str) == Some("true")
        });
        actions.push(Action::CreateClass(json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": CLASS, "annotations": {DEFAULT_CLASS: (!other_default).to_string()}},
            "provisioner": PROVISIONER, "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete",
        })));
    }
    let ours: HashMap<&str, &StorageClass> = classes
        .iter()
        .filter(|c| c.provisioner == PROVISIONER)
        .filter_map(|c| Some((c.metadata.name.as_deref()?, *c)))
        .collect();
    let by_claim: HashMap<&str, &PersistentVolume> =
        volumes.iter().filter_map(|v| Some((v.spec.as_ref()?.claim_ref.as_ref()?.uid.as_deref()?, *v))).collect();
    let live_claims: HashSet<&str> = claims.iter().filter_map(|c| c.metadata.uid.as_deref()).collect();
    for claim in claims {
        let (Some(name), Some(namespace), Some(uid)) =
            (&claim.metadata.name, &claim.metadata.namespace, claim.metadata.uid.as_deref())
        else {
            continue;
        };
        let spec = claim.spec.clone().unwrap_or_default();
        if spec.volume_name.as_deref().is_some_and(|v| !v.is_empty()) {
            // Bound by name: its status follows.
            if claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
                && let Some(volume) = by_claim.get(uid)
            {
                actions.push(bind_claim(claim, volume));
            }
            continue;
        }
        if let Some(volume) = by_claim.get(uid) {
            actions.push(bind_claim(claim, volume));
            continue;
        }
        let Some(class) = spec.storage_class_name.as_deref().and_then(|c| ours.get(c)) else { continue };
        if claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(node_name) = claim.metadata.annotations.as_ref().and_then(|a| a.get(SELECTED_NODE)) else { continue };
        let node = nodes.iter().find(|n| n.metadata.name.as_ref() == Some(node_name));
        let Some(base) = node.and_then(|n| n.metadata.annotations.as_ref()?.get(LOCAL_STORAGE)) else {
            actions.push(Action::Fail {
                claim: name.clone(),
                namespace: namespace.clone(),
                message: format!(
                    "failed to provision volume: node {node_name:?} names no local storage directory ({LOCAL_STORAGE})"
                ),
            });
            continue;
        };
        let volume_name = format!("pvc-{uid}");
        let storage = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage"));
        actions.push(Action::Provision {
            claim: name.clone(),
            namespace: namespace.clone(),
            volume: json!({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": volume_name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                "spec": {
                    "capacity": {"storage": storage.map_or("0".to_string(), |q| q.0.clone())},
                    "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                    "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
                    "storageClassName": class.metadata.name,
                    "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
                    "hostPath": {"path": format!("{base}/{volume_name}_{namespace}_{name}"), "type": "DirectoryOrCreate"},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node_name]}]}]}},
                    "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace,
                                 "name": name, "uid": uid},
                },
            }),
        });
    }
    for volume in volumes {
        let name = volume.metadata.name.clone().unwrap_or_default();
        let phase = volume.status.as_ref().and_then(|s| s.phase.as_deref());
        let claim = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).and_then(|r| r.uid.as_deref());
        match claim {
            Some(uid) if !live_claims.contains(uid) => {
                if phase != Some("Released") && phase != Some("Failed") {
                    actions.push(Action::VolumePhase { volume: name, phase: "Released" });
                }
            }
            Some(_) if phase != Some("Bound") => actions.push(Action::VolumePhase { volume: name, phase: "Bound" }),
            _ => {}
        }
    }
    actions
}

fn bind_claim(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> Action {
    let spec = volume.spec.clone().unwrap_or_default();
    Action::BindClaim {
        claim: claim.metadata.name.clone().unwrap_or_default(),
        namespace: claim.metadata.namespace.clone().unwrap_or_default(),
        volume: volume.metadata.name.clone().unwrap_or_default(),
        status: json!({"phase": "Bound", "accessModes": spec.access_modes, "capacity": spec.capacity}),
    }
}

/// Provisions and binds until the process ends.
pub fn start(client: Client, informers: &Arc<Informers>) {
    let wake = Arc::new(Notify::new());
    informers.claims().subscribe(&wake);
    informers.volumes().subscribe(&wake);
    informers.storage_classes().subscribe(&wake);
    informers.nodes().subscribe(&wake);
    let informers = informers.clone();
    let recorder = Arc::new(Recorder::new(client.clone(), "persistentvolume-controller", None));
    super::level_triggered(wake, move || {
        let (client, informers, recorder) = (client.clone(), informers.clone(), recorder.clone());
        async move {
            let i = &informers;
            for ready in [
                i.claims().ready().await,
                i.volumes().ready().await,
                i.storage_classes().ready().await,
                i.nodes().ready().await,
            ] {
                if !ready {
                    return None;
                }
            }
            let (claims, volumes, classes, nodes) =
                (i.claims().all(), i.volumes().all(), i.storage_classes().all(), i.nodes().all());
            let claim_refs = super::refs(&claims);
            let mut ok = true;
            for action in sync(&claim_refs, &super::refs(&volumes), &super::refs(&classes), &super::refs(&nodes)) {
                ok &= apply(&client, &recorder, &claim_refs, action).await;
            }
            (!ok).then_some(std::time::Duration::from_secs(1))
        }
    });
}

async fn apply(client: &Client, recorder: &Recorder, claims: &[&PersistentVolumeClaim], action: Action) -> bool {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claim_of = |namespace: &str, name: &str| {
        claims
            .iter()
            .find(|c| c.metadata.namespace.as_deref() == Some(namespace) && c.metadata.name.as_deref() == Some(name))
    };
    match action {
        Action::CreateClass(class) => {
            let classes: Api<StorageClass> = Api::all(client.clone());
            match serde_json::from_value::<StorageClass>(class) {
                Ok(class) => match classes.create(&PostParams::default(), &class).await {
                    Err(kube::Error::Api(e)) if e.code == 409 => true,
                    made => super::report(made, "storageclass", CLASS),
                },
                Err(e) => {
                    tracing::warn!("the local-path StorageClass: {e}");
                    false
                }
            }
        }
        Action::Provision { claim, namespace, volume } => {
            let volume: PersistentVolume = match serde_json::from_value(volume) {
                Ok(volume) => volume,
                Err(e) => {
                    tracing::warn!("a volume for {namespace}/{claim}: {e}");
                    return false;
                }
            };
            let name = volume.metadata.name.clone().unwrap_or_default();
            let made = match volumes.create(&PostParams::default(), &volume).await {
                Err(kube::Error::Api(e)) if e.code == 409 => true,
                made => super::report(made, "persistentvolume", &name),
            };
            if made && let Some(object) = claim_of(&namespace, &claim) {
                let message = format!("Successfully provisioned volume {name}");
                recorder.record(&Involved::of(*object), &Event::normal("ProvisioningSucceeded", message)).await;
            }
            made
        }
        Action::Fail { claim, namespace, message } => {
            if let Some(object) = claim_of(&namespace, &claim) {
                recorder.record(&Involved::of(*object), &Event::warning("ProvisioningFailed", message)).await;
            }
            true
        }
        Action::BindClaim { claim, namespace, volume, status } => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
            let bind = json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes",
                                                          "pv.kubernetes.io/bound-by-controller": "yes"}},
                              "spec": {"volumeName": volume}});
            super::report(
                api.patch(&claim, &PatchParams::default(), &Patch::Merge(&bind)).await,
                "persistentvolumeclaim",
                &claim,
            ) && super::report(
                api.patch_status(&claim, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await,
                "persistentvolumeclaim",
                &claim,
            )
        }
        Action::VolumePhase { volume, phase } => {
            let status = json!({"status": {"phase": phase}});
            super::report(
                volumes.patch_status(&volume, &PatchParams::default(), &Patch::Merge(&status)).await,
                "persistentvolume",
                &volume,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class() -> StorageClass {
        serde_json::from_value(json!({"metadata": {"name": CLASS}, "provisioner": PROVISIONER,
            "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Retain"}))
        .unwrap()
    }

    fn claim(annotations: Value, volume: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(
            json!({"metadata": {"name": "data", "namespace": "default", "uid": "c1", "annotations": annotations},
            "spec": {"storageClassName": CLASS, "volumeName": volume, "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}),
        )
        .unwrap()
    }

    fn node() -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": "a", "annotations": {LOCAL_STORAGE: "/var/lib/podctl/storage"}}}),
        )
        .unwrap()
    }

    #[test]
    fn a_claim_placed_on_a_node_gets_a_directory_there_and_is_bound_to_it() {
        let (class, node) = (class(), node());
        let unplaced = claim(json!({}), None);
        assert!(sync(&[&unplaced], &[], &[&class], &[&node]).is_empty(), "waits for the scheduler");
        let placed = claim(json!({SELECTED_NODE: "a"}), None);
        let actions = sync(&[&placed], &[], &[&class], &[&node]);
        let [Action::Provision { volume, .. }] = actions.as_slice() else { panic!("{actions:?}") };
        assert_eq!(volume["spec"]["hostPath"]["path"], "/var/lib/podctl/storage/pvc-c1_default_data");
        assert_eq!(volume["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(
            volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
            json!(["a"])
        );
        assert_eq!(volume["spec"]["capacity"]["storage"], "1Gi");
        let volume: PersistentVolume = serde_json::from_value(volume.clone()).unwrap();
        let actions = sync(&[&placed], &[&volume], &[&class], &[&node]);
        assert!(matches!(&actions[0], Action::BindClaim { volume, .. } if volume == "pvc-c1"), "{actions:?}");
        assert_eq!(actions[1], Action::VolumePhase { volume: "pvc-c1".into(), phase: "Bound" });
        // Its claim gone, the volume is Released.
        let actions = sync(&[], &[&volume], &[&class], &[&node]);
        assert_eq!(actions, [Action::VolumePhase { volume: "pvc-c1".into(), phase: "Released" }]);
    }

    #[test]
    fn the_class_is_made_default_unless_another_is() {
        let actions = sync(&[], &[], &[], &[]);
        let [Action::CreateClass(class)] = actions.as_slice() else { panic!("{actions:?}") };
        assert_eq!(class["metadata"]["annotations"][DEFAULT_CLASS], "true");
        let other: StorageClass = serde_json::from_value(
            json!({"metadata": {"name": "fast", "annotations": {DEFAULT_CLASS: "true"}}, "provisioner": "x"}),
        )
        .unwrap();
        let actions = sync(&[], &[], &[&other], &[]);
        let [Action::CreateClass(class)] = actions.as_slice() else { panic!("{actions:?}") };
        assert_eq!(class["metadata"]["annotations"][DEFAULT_CLASS], "false");
    }
}
