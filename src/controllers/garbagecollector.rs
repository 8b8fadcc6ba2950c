//! The garbage collector (kube-controller-manager's garbagecollector): objects whose
//! owners are all gone are deleted; owners deleted in the foreground (`foregroundDeletion`
//! finalizer) wait for their dependents to go first; owners deleted with `orphan` leave
//! their dependents, which lose the reference. Before it deletes anything for a missing
//! owner it asks the API server whether the owner is really gone (the caches of different
//! kinds can lag one another).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Endpoints, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PropagationPolicy};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Notify;

use super::informers::Informers;

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// An object in the ownership graph.
#[derive(Clone, Debug)]
pub struct Node {
    pub resource: ApiResource,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub resource_version: Option<String>,
    pub owners: Vec<OwnerReference>,
    pub finalizers: Vec<String>,
    pub deleting: bool,
}

impl Node {
    fn of<K: kube::Resource<DynamicType = ()>>(object: &K) -> Node {
        let meta = object.meta();
        Node {
            resource: ApiResource::erase::<K>(&()),
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone(),
            owners: meta.owner_references.clone().unwrap_or_default(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
        }
    }
}

/// What the collector does.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Delete `dependent` if none of its owners exists any more (asked of the API).
    DeleteIfOrphaned {
        dependent: usize,
    },
    /// Delete a dependent of an owner deleted in the foreground, in the foreground too.
    DeleteForeground {
        dependent: usize,
    },
    /// Drop references to owners that are gone or orphaning (by uid).
    DropOwners {
        dependent: usize,
        uids: Vec<String>,
    },
    RemoveFinalizer {
        owner: usize,
        finalizer: &'static str,
    },
}

/// The actions for the graph: `nodes` are the objects watched; an owner reference to a
/// uid not among them is a candidate for deletion.
pub fn plan(nodes: &[Node]) -> Vec<Action> {
    let by_uid: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.uid.as_str(), i)).collect();
    let mut dependents: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        for owner in &node.owners {
            dependents.entry(owner.uid.as_str()).or_default().push(i);
        }
    }
    let mut actions = Vec::new();
    for (i, owner) in nodes.iter().enumerate().filter(|(_, n)| n.deleting) {
        let theirs = dependents.get(owner.uid.as_str()).cloned().unwrap_or_default();
        if owner.finalizers.iter().any(|f| f == ORPHAN) {
            for &d in &theirs {
                actions.push(Action::DropOwners { dependent: d, uids: vec![owner.uid.clone()] });
            }
            if theirs.is_empty() {
                actions.push(Action::RemoveFinalizer { owner: i, finalizer: ORPHAN });
            }
        } else if owner.finalizers.iter().any(|f| f == FOREGROUND) {
            for &d in theirs.iter().filter(|d| !nodes[**d].deleting) {
                actions.push(Action::DeleteForeground { dependent: d });
            }
            // Only dependents that block the owner's deletion are waited for.
            let blocking = theirs
                .iter()
                .any(|d| nodes[*d].owners.iter().any(|r| r.uid == owner.uid && r.block_owner_deletion == Some(true)));
            if !blocking {
                actions.push(Action::RemoveFinalizer { owner: i, finalizer: FOREGROUND });
            }
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        if node.owners.is_empty() || node.deleting {
            continue;
        }
        let absent: Vec<&OwnerReference> =
            node.owners.iter().filter(|r| !by_uid.contains_key(r.uid.as_str())).collect();
        if absent.is_empty() {
            continue;
        }
        if absent.len() == node.owners.len() {
            actions.push(Action::DeleteIfOrphaned { dependent: i });
        } else {
            actions.push(Action::DropOwners { dependent: i, uids: absent.iter().map(|r| r.uid.clone()).collect() });
        }
    }
    actions
}

/// Collects garbage until the process ends.
pub fn start(client: Client, informers: &Arc<Informers>) {
    let wake = Arc::new(Notify::new());
    informers.pods().subscribe(&wake);
    informers.replica_sets().subscribe(&wake);
    informers.deployments().subscribe(&wake);
    informers.services().subscribe(&wake);
    informers.slices().subscribe(&wake);
    informers.endpoints().subscribe(&wake);
    informers.jobs().subscribe(&wake);
    informers.cronjobs().subscribe(&wake);
    informers.daemon_sets().subscribe(&wake);
    informers.revisions().subscribe(&wake);
    informers.stateful_sets().subscribe(&wake);
    informers.claims().subscribe(&wake);
    let informers = informers.clone();
    let resources: Arc<Mutex<HashMap<(String, String), ApiResource>>> = Arc::default();
    super::level_triggered(wake, move || {
        let (client, informers, resources) = (client.clone(), informers.clone(), resources.clone());
        async move {
            let i = &informers;
            if !(i.pods().ready().await
                && i.replica_sets().ready().await
                && i.deployments().ready().await
                && i.services().ready().await
                && i.slices().ready().await
                && i.endpoints().ready().await
                && i.jobs().ready().await
                && i.cronjobs().ready().await
                && i.daemon_sets().ready().await
                && i.revisions().ready().await
                && i.stateful_sets().ready().await
                && i.claims().ready().await)
            {
                return None;
            }
            let mut nodes: Vec<Node> = Vec::new();
            nodes.extend(i.pods().all().iter().map(|o| Node::of::<Pod>(o)));
            nodes.extend(i.replica_sets().all().iter().map(|o| Node::of::<ReplicaSet>(o)));
            nodes.extend(i.deployments().all().iter().map(|o| Node::of::<Deployment>(o)));
            nodes.extend(i.services().all().iter().map(|o| Node::of::<Service>(o)));
            nodes.extend(i.slices().all().iter().map(|o| Node::of::<EndpointSlice>(o)));
            nodes.extend(i.endpoints().all().iter().map(|o| Node::of::<Endpoints>(o)));
            nodes.extend(i.jobs().all().iter().map(|o| Node::of::<Job>(o)));
            nodes.extend(i.cronjobs().all().iter().map(|o| Node::of::<CronJob>(o)));
            nodes.extend(i.daemon_sets().all().iter().map(|o| Node::of::<DaemonSet>(o)));
            nodes.extend(i.revisions().all().iter().map(|o| Node::of::<ControllerRevision>(o)));
            nodes.extend(i.stateful_sets().all().iter().map(|o| Node::of::<StatefulSet>(o)));
            nodes.extend(i.claims().all().iter().map(|o| Node::of::<PersistentVolumeClaim>(o)));
            let mut ok = true;
            for action in plan(&nodes) {
                ok &= carry_out(&client, &resources, &nodes, action).await;
            }
            (!ok).then_some(std::time::Duration::from_secs(1))
        }
    });
}

fn api_of(client: &Client, node: &Node) -> Api<DynamicObject> {
    match &node.namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &node.resource),
        None => Api::all_with(client.clone(), &node.resource),
    }
}

/// Whether the owner a reference names still exists (the same object: same uid).
async fn owner_exists(
    client: &Client,
    resources: &Mutex<HashMap<(String, String), ApiResource>>,
    namespace: Option<&str>,
    owner: &OwnerReference,
) -> Result<bool, ()> {
    let key = (owner.api_version.clone(), owner.kind.clone());
    let known = resources.lock().expect("resources").get(&key).cloned();
    let (resource, namespaced) = match known {
        Some(resource) => {
            let namespaced = resource.plural != "nodes" && resource.plural != "namespaces";
            (resource, namespaced)
        }
        None => {
            let (group, version) = match owner.api_version.split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), owner.api_version.clone()),
            };
            let gvk = GroupVersionKind { group, version, kind: owner.kind.clone() };
            match kube::discovery::pinned_kind(client, &gvk).await {
                Ok((resource, capabilities)) => {
                    resources.lock().expect("resources").insert(key, resource.clone());
                    (resource, capabilities.scope == kube::discovery::Scope::Namespaced)
                }
                // A kind the server does not serve: nothing of it exists.
                Err(kube::Error::Discovery(_)) => return Ok(false),
                Err(_) => return Err(()),
            }
        }
    };
    let api: Api<DynamicObject> = match namespace.filter(|_| namespaced) {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    match api.get_opt(&owner.name).await {
        Ok(Some(found)) => Ok(found.metadata.uid.as_deref() == Some(&owner.uid)),
        Ok(None) => Ok(false),
        Err(_) => Err(()),
    }
}

async fn carry_out(
    client: &Client,
    resources: &Mutex<HashMap<(String, String), ApiResource>>,
    nodes: &[Node],
    action: Action,
) -> bool {
    let merge = PatchParams::default();
    match action {
        Action::DeleteIfOrphaned { dependent } => {
            let node = &nodes[dependent];
            for owner in &node.owners {
                match owner_exists(client, resources, node.namespace.as_deref(), owner).await {
                    Ok(true) => return true,
                    Ok(false) => {}
                    Err(()) => return false,
                }
            }
            let params = crate::client::delete_params(node.uid.clone(), Some(PropagationPolicy::Background));
            super::report_delete(
                api_of(client, node).delete(&node.name, &params).await,
                &node.resource.kind,
                &node.name,
            )
        }
        Action::DeleteForeground { dependent } => {
            let node = &nodes[dependent];
            let params = crate::client::delete_params(node.uid.clone(), Some(PropagationPolicy::Foreground));
            super::report_delete(
                api_of(client, node).delete(&node.name, &params).await,
                &node.resource.kind,
                &node.name,
            )
        }
        Action::DropOwners { dependent, uids } => {
            let node = &nodes[dependent];
            let gone: HashSet<&str> = uids.iter().map(String::as_str).collect();
            let kept: Vec<&OwnerReference> = node.owners.iter().filter(|r| !gone.contains(r.uid.as_str())).collect();
            let patch = json!({"metadata": {"ownerReferences": kept, "uid": node.uid, "resourceVersion": node.resource_version}});
            super::report(
                api_of(client, node).patch(&node.name, &merge, &Patch::Merge(&patch)).await,
                &node.resource.kind,
                &node.name,
            )
        }
        Action::RemoveFinalizer { owner, finalizer } => {
            let node = &nodes[owner];
            let kept: Vec<&String> = node.finalizers.iter().filter(|f| *f != finalizer).collect();
            let patch = json!({"metadata": {"finalizers": kept, "resourceVersion": node.resource_version}});
            super::report(
                api_of(client, node).patch(&node.name, &merge, &Patch::Merge(&patch)).await,
                &node.resource.kind,
                &node.name,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, uid: &str, owners: &[(&str, bool)]) -> Node {
        Node {
            resource: ApiResource::erase::<Pod>(&()),
            namespace: Some("default".into()),
            name: name.into(),
            uid: uid.into(),
            resource_version: Some("1".into()),
            owners: owners
                .iter()
                .map(|(uid, block)| OwnerReference {
                    uid: uid.to_string(),
                    block_owner_deletion: Some(*block),
                    ..Default::default()
                })
                .collect(),
            finalizers: vec![],
            deleting: false,
        }
    }

    #[test]
    fn dependents_of_missing_owners_are_checked_for_deletion_and_partial_owners_dropped() {
        let rs = node("rs", "u-rs", &[]);
        let orphan = node("p1", "u-p1", &[("u-gone", true)]);
        let half = node("p2", "u-p2", &[("u-gone", false), ("u-rs", true)]);
        let owned = node("p3", "u-p3", &[("u-rs", true)]);
        let actions = plan(&[rs, orphan, half, owned]);
        assert_eq!(
            actions,
            vec![
                Action::DeleteIfOrphaned { dependent: 1 },
                Action::DropOwners { dependent: 2, uids: vec!["u-gone".into()] },
            ]
        );
    }

    #[test]
    fn foreground_waits_for_blocking_dependents_and_orphan_lets_them_go() {
        let mut owner = node("d", "u-d", &[]);
        owner.deleting = true;
        owner.finalizers = vec![FOREGROUND.into()];
        let dependent = node("rs", "u-rs", &[("u-d", true)]);
        assert_eq!(plan(&[owner.clone(), dependent.clone()]), vec![Action::DeleteForeground { dependent: 1 }]);
        let mut going = dependent.clone();
        going.deleting = true;
        assert_eq!(plan(&[owner.clone(), going]), vec![]);
        assert_eq!(plan(&[owner.clone()]), vec![Action::RemoveFinalizer { owner: 0, finalizer: FOREGROUND }]);

        owner.finalizers = vec![ORPHAN.into()];
        assert_eq!(
            plan(&[owner.clone(), dependent]),
            vec![Action::DropOwners { dependent: 1, uids: vec!["u-d".into()] }]
        );
        assert_eq!(plan(&[owner]), vec![Action::RemoveFinalizer { owner: 0, finalizer: ORPHAN }]);
    }
}
