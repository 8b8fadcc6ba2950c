//! The objects every cluster has from its start, as kube-apiserver's post-start hooks make
//! them: the system namespaces, the system priority classes, and the default RBAC policy
//! (plugin/pkg/auth/authorizer/rbac/bootstrappolicy): cluster-admin for `system:masters`,
//! discovery and self-review for everyone authenticated, public info for anyone, the
//! user-facing admin, edit and view roles, and the role nodes are authorized by.
//!
//! admin, edit and view carry their aggregation rules and, until an aggregation
//! controller runs, the rules of the `system:aggregate-to-*` roles they aggregate.

use serde_json::{Value, json};

use super::registry::scheduling::{SYSTEM_CLASSES, system_class};

const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];
const RBAC: &str = "rbac.authorization.k8s.io";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn named_rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources, "resourceNames": names})
}

fn paths(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

fn bootstrapped(mut metadata: Value) -> Value {
    metadata["labels"]["kubernetes.io/bootstrapping"] = "rbac-defaults".into();
    metadata["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] = "true".into();
    metadata
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    json!({"apiVersion": format!("{RBAC}/v1"), "kind": "ClusterRole", "metadata": bootstrapped(json!({"name": name})), "rules": rules})
}

fn aggregate(label: &str, value: Value) -> Value {
    let mut role = value;
    role["metadata"]["labels"][format!("{RBAC}/{label}")] = "true".into();
    role
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> =
        subjects.iter().map(|(kind, name)| json!({"kind": kind, "apiGroup": RBAC, "name": name})).collect();
    json!({"apiVersion": format!("{RBAC}/v1"), "kind": "ClusterRoleBinding", "metadata": bootstrapped(json!({"name": name})),
           "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role}, "subjects": subjects})
}

fn view_rules() -> Vec<Value> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "configmaps",
            ],
        ),
        rule(
            READ,
            &[""],
            &[
                "limitranges",
                "resourcequotas",
                "bindings",
                "events",
                "pods/status",
                "resourcequotas/status",
                "namespaces/status",
                "replicationcontrollers/status",
                "pods/log",
            ],
        ),
        rule(READ, &[""], &["namespaces"]),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "statefulsets",
                "statefulsets/status",
                "statefulsets/scale",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/status",
                "deployments/scale",
                "replicasets",
                "replicasets/status",
                "replicasets/scale",
            ],
        ),
        rule(READ, &["autoscaling"], &["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
        rule(READ, &["batch"], &["jobs", "cronjobs", "cronjobs/status", "jobs/status"]),
        rule(READ, &["policy"], &["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        rule(READ, &["networking.k8s.io"], &["networkpolicies", "ingresses", "ingresses/status"]),
    ]
}

fn edit_rules() -> Vec<Value> {
    vec![
        rule(READ, &[""], &["pods/attach", "pods/proxy", "pods/exec", "pods/portforward", "secrets", "services/proxy"]),
        rule(&["impersonate"], &[""], &["serviceaccounts"]),
        rule(WRITE, &[""], &["pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward"]),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(
            WRITE,
            &[""],
            &[
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/proxy",
                "persistentvolumeclaims",
                "configmaps",
                "secrets",
                "events",
            ],
        ),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(
            WRITE,
            &["apps"],
            &[
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "replicasets",
                "replicasets/scale",
            ],
        ),
        rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(WRITE, &["batch"], &["jobs", "cronjobs"]),
        rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
        rule(WRITE, &["networking.k8s.io"], &["networkpolicies", "ingresses"]),
    ]
}

fn admin_rules() -> Vec<Value> {
    vec![
        rule(&["create"], &["authorization.k8s.io"], &["localsubjectaccessreviews"]),
        rule(READ_WRITE, &[RBAC], &["roles", "rolebindings"]),
    ]
}

/// The role a node is authorized by (`system:node`), its writes confined by admission.
pub fn node_role() -> &'static Value {
    static ROLE: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    ROLE.get_or_init(|| {
        cluster_role(
            "system:node",
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews", "localsubjectaccessreviews"]),
                rule(READ, &[""], &["services"]),
                rule(&["create", "get", "list", "watch"], &[""], &["nodes"]),
                rule(&["patch", "update"], &[""], &["nodes/status"]),
                rule(&["patch", "update"], &[""], &["nodes"]),
                rule(&["create", "patch", "update"], &["", "events.k8s.io"], &["events"]),
                rule(READ, &[""], &["pods"]),
                rule(&["create", "delete"], &[""], &["pods"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(&["create"], &[""], &["pods/eviction"]),
                rule(READ, &[""], &["secrets", "configmaps"]),
                rule(&["get"], &[""], &["persistentvolumeclaims", "persistentvolumes", "endpoints"]),
                rule(&["create", "get", "list", "watch"], &["certificates.k8s.io"], &["certificatesigningrequests"]),
                rule(&["create", "delete", "get", "patch", "update"], &["coordination.k8s.io"], &["leases"]),
                rule(&["create"], &[""], &["serviceaccounts/token"]),
                rule(&["get", "patch", "update"], &[""], &["persistentvolumeclaims/status"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
            ],
        )
    })
}

/// Every object made at start, in the order made: (group, plural, namespace, object).
pub fn objects() -> Vec<(&'static str, &'static str, Option<&'static str>, Value)> {
    let mut made = Vec::new();
    for name in SYSTEM_NAMESPACES {
        made.push((
            "",
            "namespaces",
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        ));
    }
    for (name, value, description) in SYSTEM_CLASSES {
        made.push(("scheduling.k8s.io", "priorityclasses", None, system_class(name, value, description)));
    }
    let discovery_urls = [
        "/livez",
        "/readyz",
        "/healthz",
        "/version",
        "/version/",
        "/openapi",
        "/openapi/*",
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
    ];
    let mut aggregated_view = cluster_role("view", view_rules());
    aggregated_view["aggregationRule"] =
        json!({"clusterRoleSelectors": [{"matchLabels": {format!("{RBAC}/aggregate-to-view"): "true"}}]});
    let mut aggregated_edit = cluster_role("edit", [edit_rules(), view_rules()].concat());
    aggregated_edit["aggregationRule"] =
        json!({"clusterRoleSelectors": [{"matchLabels": {format!("{RBAC}/aggregate-to-edit"): "true"}}]});
    let mut aggregated_admin = cluster_role("admin", [admin_rules(), edit_rules(), view_rules()].concat());
    aggregated_admin["aggregationRule"] =
        json!({"clusterRoleSelectors": [{"matchLabels": {format!("{RBAC}/aggregate-to-admin"): "true"}}]});
    let roles = [
        cluster_role("cluster-admin", vec![rule(&["*"], &["*"], &["*"]), paths(&["*"], &["*"])]),
        cluster_role("system:discovery", vec![paths(&["get"], &discovery_urls)]),
        cluster_role(
            "system:monitoring",
            vec![paths(
                &["get"],
                &["/metrics", "/metrics/slis", "/livez", "/readyz", "/healthz", "/livez/*", "/readyz/*", "/healthz/*"],
            )],
        ),
        cluster_role(
            "system:basic-user",
            vec![
                rule(&["create"], &["authorization.k8s.io"], &["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
                rule(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![paths(&["get"], &["/livez", "/readyz", "/healthz", "/version", "/version/"])],
        ),
        aggregated_admin,
        aggregate("aggregate-to-admin", aggregated_edit),
        aggregate("aggregate-to-edit", aggregated_view),
        aggregate("aggregate-to-admin", cluster_role("system:aggregate-to-admin", admin_rules())),
        aggregate("aggregate-to-edit", cluster_role("system:aggregate-to-edit", edit_rules())),
        aggregate("aggregate-to-view", cluster_role("system:aggregate-to-view", view_rules())),
        cluster_role(
            "system:auth-delegator",
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
            ],
        ),
        node_role().clone(),
        cluster_role(
            "system:node-bootstrapper",
            vec![rule(&["create", "get", "list", "watch"], &["certificates.k8s.io"], &["certificatesigningrequests"])],
        ),
        cluster_role("system:kube-dns", vec![rule(&["list", "watch"], &[""], &["endpoints", "services"])]),
        cluster_role(
            "system:node-proxier",
            vec![
                rule(&["list", "watch"], &[""], &["services", "endpoints"]),
                rule(READ, &[""], &["nodes"]),
                rule(&["create", "patch", "update"], &["", "events.k8s.io"], &["events"]),
                rule(&["list", "watch"], &["discovery.k8s.io"], &["endpointslices"]),
            ],
        ),
    ];
    made.extend(roles.into_iter().map(|role| (RBAC, "clusterroles", None, role)));
    let bindings = [
        binding("cluster-admin", "cluster-admin", &[("Group", "system:masters")]),
        binding("system:monitoring", "system:monitoring", &[("Group", "system:monitoring")]),
        binding("system:discovery", "system:discovery", &[("Group", "system:authenticated")]),
        binding("system:basic-user", "system:basic-user", &[("Group", "system:authenticated")]),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[("Group", "system:authenticated"), ("Group", "system:unauthenticated")],
        ),
        binding("system:node-proxier", "system:node-proxier", &[("User", "system:kube-proxy")]),
        binding("system:node", "system:node", &[]),
    ];
    made.extend(bindings.into_iter().map(|binding| (RBAC, "clusterrolebindings", None, binding)));
    let reader = named_rule(READ, &[""], &["configmaps"], &["extension-apiserver-authentication"]);
    let mut authentication_reader = json!({"apiVersion": format!("{RBAC}/v1"), "kind": "Role",
        "metadata": bootstrapped(json!({"name": "extension-apiserver-authentication-reader", "namespace": "kube-system"})), "rules": [reader]});
    authentication_reader["metadata"]["namespace"] = "kube-system".into();
    made.push((RBAC, "roles", Some("kube-system"), authentication_reader));
    made
}
