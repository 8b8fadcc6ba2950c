//! One strategy per resource, as kube-apiserver's registry keeps them: where the resource
//! lives (group, version, plural, scope, short names, categories, subresources), what
//! the server does to its objects on the way in (decoding through the kind's type,
//! defaults, PrepareForCreate / PrepareForUpdate, validation), and how `kubectl get` prints
//! them (Table columns) and selects them (field labels).
//!
//! A built-in resource is one file below this module: a [`Rules`] implementation on its
//! k8s-openapi type, listed in [`Registry::builtin`]. Custom resources are strategies of
//! their own (`custom`), added and removed as their definitions come and go.

mod checks;
pub mod columns;
mod typed;

mod apiextensions;
mod apps;
mod autoscaling;
mod batch;
mod certificates;
mod coordination;
pub mod core;
pub mod custom;
mod discovery;
mod events;
pub mod networking;
mod pod_template;
mod policy;
pub mod rbac;
mod reviews;
pub mod scheduling;
pub mod storage;

use std::sync::{Arc, RwLock};

use serde_json::Value;

pub use self::columns::Column;
pub use self::custom::CustomResource;
pub use self::typed::{Rules, Typed};
use super::errors::ApiError;
use super::metrics::MetricsResource;
pub use crate::validation::Cause;

/// Where a resource lives and what it offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// "" for the core group.
    pub group: String,
    pub version: String,
    /// The plural, lowercase name in URLs (`pods`).
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// `all`, for the kinds `kubectl get all` shows.
    pub categories: Vec<String>,
    /// Subresources served (`status`, `scale`, `binding`, …).
    pub subresources: Vec<String>,
    /// What may be done to the collection and its objects (most resources: everything).
    pub verbs: Vec<String>,
    /// The group whose objects these are in the store, when another group's resource
    /// serves them too (events.k8s.io's events are core events).
    pub storage_group: Option<String>,
}

impl ResourceInfo {
    /// `v1` or `apps/v1`, as objects name it.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// Where objects of this resource live in the store: the prefix for one namespace (or
    /// all of them with `None`), or for a cluster-scoped resource.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        let group = self.storage_group.as_deref().unwrap_or(&self.group);
        let group = if group.is_empty() { "core" } else { group };
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("/registry/{group}/{}/{ns}/", self.plural),
            _ => format!("/registry/{group}/{}/", self.plural),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.prefix(namespace))
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s == name)
    }

    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// The verbs of a resource that keeps objects.
pub const ALL_VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// A field label a field selector may name, and its value on an object.
#[derive(Clone, Copy)]
pub struct FieldLabel {
    pub name: &'static str,
    pub value: fn(&Value) -> String,
}

/// An object read through its kind's type: the fields the type lacks are gone, named.
pub struct Decoded {
    pub object: Value,
    pub unknown: Vec<String>,
}

/// What the server does with one resource's objects (kube-apiserver's RESTCreateStrategy,
/// RESTUpdateStrategy and friends).
pub trait Strategy: Send + Sync {
    fn info(&self) -> &ResourceInfo;

    /// `object` through the kind's type, with the kind's defaults (SetDefaults_*): a field
    /// of the wrong type is a 400, fields the type lacks are dropped and named.
    fn decode(&self, object: Value) -> Result<Decoded, ApiError>;

    /// PrepareForCreate then Validate: what the server sets on a new object, and what is
    /// wrong with it.
    fn prepare_create(&self, object: &mut Value) -> Vec<Cause>;

    /// PrepareForUpdate then ValidateUpdate, for a write of the object itself (the status
    /// is already the stored one, when the resource has a status subresource).
    fn prepare_update(&self, new: &mut Value, old: &Value) -> Vec<Cause>;

    /// The same for a write of the status subresource (everything but the status is
    /// already the stored one).
    fn prepare_status_update(&self, new: &mut Value, old: &Value) -> Vec<Cause>;

    /// The same for a write of another subresource that changes one part of the object
    /// (a pod's `ephemeralcontainers`); the rest is already the stored object.
    fn prepare_subresource_update(&self, _subresource: &str, _new: &mut Value, _old: &Value) -> Vec<Cause> {
        vec![]
    }

    /// What a name must be (an RFC 1123 subdomain for most kinds).
    fn name_rule(&self) -> fn(&str) -> Vec<String> {
        crate::validation::dns_subdomain
    }

    /// Whether `metadata.generation` counts the changes of the object's spec.
    fn tracks_generation(&self) -> bool;

    /// The Table columns `kubectl get` prints (metav1.TableColumnDefinition).
    fn column_definitions(&self) -> Vec<Value>;

    /// One object's row of cells, column by column.
    fn cells(&self, object: &Value) -> Vec<Value>;

    /// Field labels beyond `metadata.name` and `metadata.namespace`.
    fn field_labels(&self) -> &[FieldLabel];

    /// A custom resource's selectable fields: the selector's name (`spec.color`) and the
    /// field names on the way to the value.
    fn selectable_fields(&self) -> &[(String, Vec<String>)] {
        &[]
    }

    /// The scale subresource (`autoscaling/v1` Scale), for kinds that have one: the
    /// object's desired replicas and its label selector.
    fn scale(&self, _object: &Value) -> Option<Scale> {
        None
    }

    /// Whether objects are kept (reviews are answered, not stored).
    fn is_stored(&self) -> bool {
        true
    }

    /// Sets the desired replicas a scale subresource writes.
    fn set_replicas(&self, object: &mut Value, replicas: i64) {
        object["spec"]["replicas"] = replicas.into();
    }

    /// Whether an update from `old` to `new` is a new generation: a change of the spec.
    fn changes_generation(&self, new: &Value, old: &Value) -> bool {
        self.tracks_generation() && new.get("spec") != old.get("spec")
    }

    /// A custom resource's structural schema (built-in kinds are described by the
    /// OpenAPI definitions).
    fn schema(&self) -> Option<&Value> {
        None
    }

    /// Whether objects have a protobuf encoding (custom resources are JSON only).
    fn has_protobuf(&self) -> bool {
        true
    }

    /// An object as it is stored: in the storage version (a custom resource's; the
    /// served one for built-in resources, but for events.k8s.io's, kept as core events).
    fn to_storage(&self, object: &mut Value) {
        set_api_version(object, &self.info().api_version());
    }

    /// A stored object as clients of this resource see it.
    fn from_storage(&self, object: &mut Value) {
        set_api_version(object, &self.info().api_version());
    }

    /// Whether the stored form is the served one but for `apiVersion`: lists and watches
    /// then send stored bytes without parsing them.
    fn stored_as_served(&self) -> bool {
        true
    }

    /// Whether deleting the object waits for more than its `metadata.finalizers`.
    fn awaits_finalization(&self, _object: &Value) -> bool {
        false
    }
}

pub fn set_api_version(object: &mut Value, api_version: &str) {
    if object["apiVersion"] != api_version {
        object["apiVersion"] = api_version.into();
    }
}

/// What the scale subresource shows of an object.
pub struct Scale {
    pub replicas: i64,
    pub current: i64,
    /// The label selector, as a selector string (`app=web,tier in (a)`).
    pub selector: String,
}

/// The resources served, built-in and custom, by group, version and plural.
pub struct Registry {
    builtin: Vec<Arc<dyn Strategy>>,
    /// What the CustomResourceDefinitions define, remade whenever one changes.
    custom: RwLock<Vec<Arc<CustomResource>>>,
}

/// Where CustomResourceDefinitions are stored.
pub const DEFINITIONS: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

impl Registry {
    /// Every built-in resource.
    pub fn builtin() -> Registry {
        let strategies: Vec<Arc<dyn Strategy>> = vec![
            Typed::<core::namespaces::Namespaces>::shared(),
            Typed::<core::pods::Pods>::shared(),
            Typed::<core::nodes::Nodes>::shared(),
            Typed::<core::services::Services>::shared(),
            Typed::<core::endpoints::Endpoints>::shared(),
            Typed::<core::configmaps::ConfigMaps>::shared(),
            Typed::<core::secrets::Secrets>::shared(),
            Typed::<core::events::Events>::shared(),
            Typed::<core::serviceaccounts::ServiceAccounts>::shared(),
            Typed::<core::persistentvolumes::PersistentVolumes>::shared(),
            Typed::<core::persistentvolumeclaims::PersistentVolumeClaims>::shared(),
            Typed::<core::resourcequotas::ResourceQuotas>::shared(),
            Typed::<core::limitranges::LimitRanges>::shared(),
            Typed::<core::podtemplates::PodTemplates>::shared(),
            Typed::<core::replicationcontrollers::ReplicationControllers>::shared(),
            Typed::<apps::deployments::Deployments>::shared(),
            Typed::<apps::replicasets::ReplicaSets>::shared(),
            Typed::<apps::daemonsets::DaemonSets>::shared(),
            Typed::<apps::statefulsets::StatefulSets>::shared(),
            Typed::<apps::controllerrevisions::ControllerRevisions>::shared(),
            Typed::<batch::jobs::Jobs>::shared(),
            Typed::<batch::cronjobs::CronJobs>::shared(),
            Typed::<autoscaling::HorizontalPodAutoscalers>::shared(),
            Typed::<policy::PodDisruptionBudgets>::shared(),
            Typed::<networking::ingresses::Ingresses>::shared(),
            Typed::<networking::ingressclasses::IngressClasses>::shared(),
            Typed::<networking::networkpolicies::NetworkPolicies>::shared(),
            Typed::<storage::StorageClasses>::shared(),
            Typed::<scheduling::PriorityClasses>::shared(),
            Typed::<rbac::ClusterRoles>::shared(),
            Typed::<rbac::ClusterRoleBindings>::shared(),
            Typed::<rbac::Roles>::shared(),
            Typed::<rbac::RoleBindings>::shared(),
            Typed::<reviews::SelfSubjectReviews>::shared(),
            Typed::<reviews::TokenReviews>::shared(),
            Typed::<reviews::SelfSubjectAccessReviews>::shared(),
            Typed::<reviews::SubjectAccessReviews>::shared(),
            Typed::<reviews::LocalSubjectAccessReviews>::shared(),
            Typed::<reviews::SelfSubjectRulesReviews>::shared(),
            Typed::<discovery::EndpointSlices>::shared(),
            Typed::<coordination::Leases>::shared(),
            Typed::<events::Events>::shared(),
            Typed::<certificates::CertificateSigningRequests>::shared(),
            Typed::<apiextensions::CustomResourceDefinitions>::shared(),
            MetricsResource::shared("nodes", "NodeMetrics", false),
            MetricsResource::shared("pods", "PodMetrics", true),
        ];
        Registry { builtin: strategies, custom: RwLock::new(Vec::new()) }
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<dyn Strategy>> {
        let found = |info: &ResourceInfo| matches(info, group, version) && info.plural == plural;
        if let Some(builtin) = self.builtin.iter().find(|s| found(s.info())) {
            return Some(builtin.clone());
        }
        let custom = self.custom.read().expect("registry lock");
        custom.iter().find(|s| found(s.info())).map(|s| s.clone() as Arc<dyn Strategy>)
    }

    pub fn all(&self) -> Vec<Arc<dyn Strategy>> {
        let custom = self.custom.read().expect("registry lock");
        self.builtin.iter().cloned().chain(custom.iter().map(|s| s.clone() as Arc<dyn Strategy>)).collect()
    }

    /// The built-in resources.
    pub fn built_in(&self) -> &[Arc<dyn Strategy>] {
        &self.builtin
    }

    /// The custom resources served.
    pub fn custom(&self) -> Vec<Arc<CustomResource>> {
        self.custom.read().expect("registry lock").clone()
    }

    /// Serves what `definitions` (every CustomResourceDefinition) define, and nothing
    /// else custom. A definition of a resource already built in is not served.
    pub fn define(&self, definitions: &[Arc<Value>]) {
        let mut custom: Vec<Arc<CustomResource>> = definitions
            .iter()
            .flat_map(|d| CustomResource::of_definition(d))
            .filter(|c| {
                let info = c.info();
                !self.builtin.iter().any(|b| b.info().group == info.group && b.info().plural == info.plural)
            })
            .map(Arc::new)
            .collect();
        custom.sort_by(|a, b| {
            let (a, b) = (a.info(), b.info());
            a.group.cmp(&b.group).then(custom::version_order(&a.version, &b.version))
        });
        *self.custom.write().expect("registry lock") = custom;
    }

    /// The group versions served, in discovery order.
    pub fn group_versions(&self) -> Vec<(String, String)> {
        let mut seen: Vec<(String, String)> = Vec::new();
        for strategy in self.all().iter() {
            let gv = (strategy.info().group.clone(), strategy.info().version.clone());
            if !seen.contains(&gv) {
                seen.push(gv);
            }
        }
        seen
    }
}

fn matches(info: &ResourceInfo, group: &str, version: &str) -> bool {
    info.group == group && info.version == version
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_groups_namespaces_and_scopes() {
        let registry = Registry::builtin();
        let pods = registry.find("", "v1", "pods").unwrap();
        assert_eq!(pods.info().key(Some("default"), "web"), "/registry/core/pods/default/web");
        assert_eq!(pods.info().prefix(None), "/registry/core/pods/");
        let nodes = registry.find("", "v1", "nodes").unwrap();
        assert_eq!(nodes.info().key(None, "n1"), "/registry/core/nodes/n1");
        let deployments = registry.find("apps", "v1", "deployments").unwrap();
        assert_eq!(deployments.info().api_version(), "apps/v1");
        assert_eq!(deployments.info().key(Some("a"), "b"), "/registry/apps/deployments/a/b");
        assert_eq!(registry.group_versions()[..2], [("".into(), "v1".into()), ("apps".into(), "v1".into())]);
    }
}
