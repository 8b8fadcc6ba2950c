//! ClusterRole aggregation, as kube-controller-manager's clusterrole-aggregation
//! controller keeps it: a ClusterRole with an `aggregationRule` holds the rules of every
//! other ClusterRole its selectors match (in name order, each rule once), so `admin`,
//! `edit` and `view` grow with the roles labelled to extend them (a CRD's operator adds
//! `rbac.authorization.k8s.io/aggregate-to-edit: "true"` roles). It runs after every
//! change of a ClusterRole, in a task of its own: its writes are changes too, which is how
//! roles aggregated from aggregated roles settle.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

pub use super::authorization::CLUSTER_ROLES;
use super::errors::ApiError;
use super::http::{Query, Shared};
use super::managed::Writer;
use super::objects::Validation;
use super::rest::{self, Target};
use super::selectors::Selector;

const MANAGER: &str = "clusterrole-aggregation-controller";

/// Wakes the controller: called with every ClusterRole whenever one changes.
pub fn notifier(wake: mpsc::Sender<()>) -> super::cache::Listener {
    Box::new(move |_: &[Arc<Value>]| {
        // A wake-up already pending covers this change too.
        let _ = wake.try_send(());
    })
}

/// Aggregates whenever woken, for as long as the server runs.
pub async fn run(server: Shared, mut woken: mpsc::Receiver<()>) {
    while woken.recv().await.is_some() {
        if let Err(e) = aggregate_all(&server).await {
            tracing::warn!("aggregating cluster roles: {}", e.message);
        }
    }
}

/// The rules `role`'s aggregationRule gathers from `roles`.
pub fn aggregated_rules(role: &Value, roles: &[Arc<Value>]) -> Vec<Value> {
    let selectors: Vec<Selector> = role["aggregationRule"]["clusterRoleSelectors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Selector::of_label_selector)
        .collect();
    let name = &role["metadata"]["name"];
    let mut matched: Vec<&Arc<Value>> =
        roles.iter().filter(|r| r["metadata"]["name"] != *name && selectors.iter().any(|s| s.matches(r))).collect();
    matched.sort_by(|a, b| a["metadata"]["name"].as_str().cmp(&b["metadata"]["name"].as_str()));
    let mut rules: Vec<Value> = Vec::new();
    for rule in matched.iter().flat_map(|r| r["rules"].as_array().into_iter().flatten()) {
        if !rules.contains(rule) {
            rules.push(rule.clone());
        }
    }
    rules
}

async fn aggregate_all(server: &Shared) -> Result<(), ApiError> {
    let roles = server.cache.list(CLUSTER_ROLES);
    let strategy = server.registry.find("rbac.authorization.k8s.io", "v1", "clusterroles").expect("RBAC is served");
    let mut target = Target::collection(strategy, None);
    target.writer = Writer { manager: MANAGER.into(), applies: false };
    for role in roles.iter().filter(|r| r["aggregationRule"].is_object()) {
        let rules = aggregated_rules(role, &roles);
        let current: Vec<Value> = role["rules"].as_array().cloned().unwrap_or_default();
        if rules == current {
            continue;
        }
        let name = role["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let aggregate = |current: &Value| {
            let mut role = current.clone();
            role["rules"] = aggregated_rules(current, &roles).into();
            Ok(role)
        };
        match rest::update(
            server,
            &target,
            &name,
            None,
            aggregate,
            &Query::default(),
            &mut Validation::from_query(None),
        )
        .await
        {
            // Changed or gone meanwhile: the change wakes us again.
            Err(e) if e.code == 409 || e.code == 404 => {}
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn aggregated_roles_gather_matching_rules_in_name_order_once() {
        let role = |name: &str, label: Option<&str>, verbs: &[&str]| {
            let labels = label.map_or(json!({}), |l| json!({l: "true"}));
            Arc::new(json!({"metadata": {"name": name, "labels": labels},
                            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": verbs}]}))
        };
        let edit = Arc::new(json!({"metadata": {"name": "edit"}, "rules": [],
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"aggregate-to-edit": "true"}}]}}));
        let roles = vec![
            edit.clone(),
            role("z-extra", Some("aggregate-to-edit"), &["create"]),
            role("a-extra", Some("aggregate-to-edit"), &["get"]),
            role("dup", Some("aggregate-to-edit"), &["get"]),
            role("other", None, &["delete"]),
        ];
        let rules = aggregated_rules(&edit, &roles);
        let verbs: Vec<&Value> = rules.iter().map(|r| &r["verbs"][0]).collect();
        assert_eq!(verbs, [&json!("get"), &json!("create")]);
    }
}
