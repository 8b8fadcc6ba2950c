//! Whether a user may do what a request asks: kube-apiserver's authorizer chain as it
//! runs with `--authorization-mode=Node,RBAC` (plugin/pkg/auth/authorizer/rbac): members
//! of `system:masters` may do anything; a node (`system:node:<name>` in `system:nodes`) may
//! do what the `system:node` role allows, its writes confined to its own objects by
//! NodeRestriction admission; everyone else what the RBAC roles bound to them allow.
//! The roles and bindings are read from the admission cache.

use serde_json::Value;

use super::authentication::{MASTERS, User};
use super::cache::Cache;

/// What a request asks to do (authorizer.Attributes).
#[derive(Clone, Debug)]
pub struct Attributes {
    pub verb: String,
    pub target: Asked,
}

#[derive(Clone, Debug)]
pub enum Asked {
    Resource {
        group: String,
        resource: String,
        subresource: String,
        namespace: String,
        name: String,
    },
    /// A path outside the resources (`/healthz`, `/api`, `/openapi/v3`).
    Path(String),
}

pub const NODES: &str = "system:nodes";
pub const NODE_PREFIX: &str = "system:node:";
pub const CLUSTER_ROLES: &str = "/registry/rbac.authorization.k8s.io/clusterroles/";
const CLUSTER_ROLE_BINDINGS: &str = "/registry/rbac.authorization.k8s.io/clusterrolebindings/";
const ROLES: &str = "/registry/rbac.authorization.k8s.io/roles/";
const ROLE_BINDINGS: &str = "/registry/rbac.authorization.k8s.io/rolebindings/";

/// Where the RBAC objects are in the store, for the cache to keep.
pub const PREFIXES: [&str; 4] = [CLUSTER_ROLES, CLUSTER_ROLE_BINDINGS, ROLES, ROLE_BINDINGS];

/// Whether `user` may do `attributes`: the reason it may, or why not.
pub fn authorize(cache: &Cache, user: &User, attributes: &Attributes) -> Result<String, String> {
    if user.in_group(MASTERS) {
        return Ok(format!("allowed as a member of {MASTERS}"));
    }
    if user.in_group(NODES) && user.name.starts_with(NODE_PREFIX) {
        let role = super::bootstrap::node_role();
        if role["rules"].as_array().into_iter().flatten().any(|rule| allows(rule, attributes)) {
            return Ok("allowed by the Node authorizer".into());
        }
    }
    match rbac(cache, user, attributes) {
        Some(reason) => Ok(reason),
        None => Err(denial(user, attributes)),
    }
}

/// The RBAC authorizer: the first rule of a role bound to the user that allows the
/// request, cluster role bindings first, then the role bindings of its namespace.
fn rbac(cache: &Cache, user: &User, attributes: &Attributes) -> Option<String> {
    for binding in cache.list(CLUSTER_ROLE_BINDINGS) {
        let Some(subject) = bound_subject(&binding, user, "") else { continue };
        let role = &binding["roleRef"]["name"];
        let Some(cluster_role) = cache.get(&format!("{CLUSTER_ROLES}{}", role.as_str().unwrap_or(""))) else {
            continue;
        };
        if rules(&cluster_role).any(|rule| allows(rule, attributes)) {
            let name = binding["metadata"]["name"].as_str().unwrap_or("");
            return Some(format!(
                "RBAC: allowed by ClusterRoleBinding \"{name}\" of ClusterRole \"{}\" to {subject}",
                role.as_str().unwrap_or("")
            ));
        }
    }
    let Asked::Resource { namespace, .. } = &attributes.target else { return None };
    if namespace.is_empty() {
        return None;
    }
    for binding in cache.list(&format!("{ROLE_BINDINGS}{namespace}/")) {
        let Some(subject) = bound_subject(&binding, user, namespace) else { continue };
        let (kind, role) =
            (binding["roleRef"]["kind"].as_str().unwrap_or(""), binding["roleRef"]["name"].as_str().unwrap_or(""));
        let key = match kind {
            "ClusterRole" => format!("{CLUSTER_ROLES}{role}"),
            _ => format!("{ROLES}{namespace}/{role}"),
        };
        let Some(bound) = cache.get(&key) else { continue };
        if rules(&bound).any(|rule| allows(rule, attributes)) {
            let name = binding["metadata"]["name"].as_str().unwrap_or("");
            return Some(format!(
                "RBAC: allowed by RoleBinding \"{name}/{namespace}\" of {kind} \"{role}\" to {subject}"
            ));
        }
    }
    None
}

fn rules(role: &Value) -> impl Iterator<Item = &Value> {
    role["rules"].as_array().into_iter().flatten()
}

/// The subject of a binding that is `user` (a RoleBinding's ServiceAccounts default to
/// its own namespace), as the allow reason names it.
fn bound_subject(binding: &Value, user: &User, namespace: &str) -> Option<String> {
    binding["subjects"].as_array()?.iter().find_map(|subject| {
        let name = subject["name"].as_str().unwrap_or("");
        let matched = match subject["kind"].as_str()? {
            "User" => user.name == name,
            "Group" => user.in_group(name),
            "ServiceAccount" => {
                let ns = subject["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or(namespace);
                user.name == format!("system:serviceaccount:{ns}:{name}")
            }
            _ => false,
        };
        matched.then(|| format!("{} \"{name}\"", subject["kind"].as_str().unwrap_or("")))
    })
}

fn listed(list: &Value, wanted: &str) -> bool {
    list.as_array().into_iter().flatten().filter_map(Value::as_str).any(|v| v == "*" || v == wanted)
}

/// Whether a PolicyRule allows the request (rbac/v1 evaluation_helpers.go).
pub fn allows(rule: &Value, attributes: &Attributes) -> bool {
    if !listed(&rule["verbs"], &attributes.verb) {
        return false;
    }
    match &attributes.target {
        Asked::Path(path) => {
            rule["nonResourceURLs"].as_array().into_iter().flatten().filter_map(Value::as_str).any(|url| {
                url == "*" || url == path || url.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
            })
        }
        Asked::Resource { group, resource, subresource, name, .. } => {
            let combined = if subresource.is_empty() { resource.clone() } else { format!("{resource}/{subresource}") };
            let resource_matches =
                rule["resources"].as_array().into_iter().flatten().filter_map(Value::as_str).any(|r| {
                    r == "*"
                        || r == combined
                        || !subresource.is_empty() && r.strip_prefix("*/") == Some(subresource.as_str())
                });
            let names = rule["resourceNames"].as_array().filter(|n| !n.is_empty());
            listed(&rule["apiGroups"], group)
                && resource_matches
                && names.is_none_or(|names| names.iter().any(|n| n.as_str() == Some(name.as_str()) && !name.is_empty()))
        }
    }
}

/// Why a request is refused, as kube-apiserver's RBAC words it.
fn denial(user: &User, attributes: &Attributes) -> String {
    match &attributes.target {
        Asked::Path(path) => format!("User \"{}\" cannot {} path \"{path}\"", user.name, attributes.verb),
        Asked::Resource { group, resource, subresource, namespace, .. } => {
            let resource = if subresource.is_empty() { resource.clone() } else { format!("{resource}/{subresource}") };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{namespace}\"")
            };
            format!(
                "User \"{}\" cannot {} resource \"{resource}\" in API group \"{group}\" {scope}",
                user.name, attributes.verb
            )
        }
    }
}

/// The rules a user holds in a namespace (or cluster-wide for ""): what escalation checks
/// and SelfSubjectRulesReview read.
pub fn rules_of(cache: &Cache, user: &User, namespace: &str) -> Vec<Value> {
    let mut held = Vec::new();
    for binding in cache.list(CLUSTER_ROLE_BINDINGS) {
        if bound_subject(&binding, user, "").is_none() {
            continue;
        }
        if let Some(role) = cache.get(&format!("{CLUSTER_ROLES}{}", binding["roleRef"]["name"].as_str().unwrap_or("")))
        {
            held.extend(rules(&role).cloned());
        }
    }
    if !namespace.is_empty() {
        for binding in cache.list(&format!("{ROLE_BINDINGS}{namespace}/")) {
            if bound_subject(&binding, user, namespace).is_none() {
                continue;
            }
            let role = binding["roleRef"]["name"].as_str().unwrap_or("");
            let key = match binding["roleRef"]["kind"].as_str() {
                Some("ClusterRole") => format!("{CLUSTER_ROLES}{role}"),
                _ => format!("{ROLES}{namespace}/{role}"),
            };
            if let Some(bound) = cache.get(&key) {
                held.extend(rules(&bound).cloned());
            }
        }
    }
    held
}

/// The rules of `wanted` that `held` does not cover, one per verb, group, resource and
/// name (component-helpers' rbac validation Covers), as `{APIGroups:[…], …}` strings.
pub fn uncovered(held: &[Value], wanted: &[Value]) -> Vec<String> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
    };
    let mut missing = Vec::new();
    for rule in wanted {
        let verbs = strings(&rule["verbs"]);
        let urls = strings(&rule["nonResourceURLs"]);
        for verb in &verbs {
            for url in &urls {
                let covered = held.iter().any(|h| {
                    listed(&h["verbs"], verb)
                        && strings(&h["nonResourceURLs"])
                            .iter()
                            .any(|u| u == "*" || u == url || u.strip_suffix('*').is_some_and(|p| url.starts_with(p)))
                });
                if !covered {
                    missing.push(format!("{{NonResourceURLs:[\"{url}\"], Verbs:[\"{verb}\"]}}"));
                }
            }
            let names = strings(&rule["resourceNames"]);
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    let names: Vec<Option<&String>> =
                        if names.is_empty() { vec![None] } else { names.iter().map(Some).collect() };
                    for name in names {
                        let covered = held.iter().any(|h| {
                            let held_names = strings(&h["resourceNames"]);
                            listed(&h["verbs"], verb)
                                && listed(&h["apiGroups"], &group)
                                && strings(&h["resources"]).iter().any(|r| {
                                    r == "*"
                                        || *r == resource
                                        || r.strip_prefix("*/")
                                            .is_some_and(|s| resource.split_once('/').is_some_and(|(_, sub)| sub == s))
                                })
                                && (held_names.is_empty() || name.is_some_and(|n| held_names.contains(n)))
                        });
                        if !covered {
                            let names = name.map_or(String::new(), |n| format!(", ResourceNames:[\"{n}\"]"));
                            missing.push(format!(
                                "{{APIGroups:[\"{group}\"], Resources:[\"{resource}\"]{names}, Verbs:[\"{verb}\"]}}"
                            ));
                        }
                    }
                }
            }
        }
    }
    missing.sort();
    missing.dedup();
    missing
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn asked(verb: &str, group: &str, resource: &str, subresource: &str, name: &str) -> Attributes {
        let target = Asked::Resource {
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: "ns".into(),
            name: name.into(),
        };
        Attributes { verb: verb.into(), target }
    }

    #[test]
    fn rules_match_as_rbac_matches_them() {
        let rule = json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "*/status"]});
        assert!(allows(&rule, &asked("get", "", "pods", "", "p")));
        assert!(!allows(&rule, &asked("get", "", "pods", "log", "p")), "pods does not cover pods/log");
        assert!(allows(&rule, &asked("get", "", "nodes", "status", "n")));
        assert!(!allows(&rule, &asked("create", "", "pods", "", "")));
        assert!(!allows(&rule, &asked("get", "apps", "pods", "", "p")));
        let named = json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["configmaps"], "resourceNames": ["c"]});
        assert!(allows(&named, &asked("update", "", "configmaps", "", "c")));
        assert!(!allows(&named, &asked("list", "", "configmaps", "", "")), "a list has no name");
        let urls = json!({"verbs": ["get"], "nonResourceURLs": ["/api/*", "/healthz"]});
        let path = |p: &str| Attributes { verb: "get".into(), target: Asked::Path(p.into()) };
        assert!(
            allows(&urls, &path("/api/v1")) && allows(&urls, &path("/healthz")) && !allows(&urls, &path("/version"))
        );
    }

    #[test]
    fn escalation_needs_every_rule_held() {
        let held = [json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]})];
        let wanted = [json!({"verbs": ["get", "create"], "apiGroups": [""], "resources": ["pods"]})];
        assert_eq!(uncovered(&held, &wanted), ["{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"create\"]}"]);
        let admin = [json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})];
        assert!(uncovered(&admin, &wanted).is_empty());
    }
}
