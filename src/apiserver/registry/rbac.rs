//! The rbac.authorization.k8s.io group: roles and cluster roles (rules), role bindings and
//! cluster role bindings (subjects given a role). Names are path segments
//! (`system:node` is one); a binding's role is fixed once made. Who may grant what is
//! admission's (escalation prevention), who may do what the authorizer's.

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::checks::one_of;
use super::columns::{self, AGE, NAME};
use super::{Cause, Column, Rules};
use crate::validation;

pub struct Roles;
pub struct ClusterRoles;
pub struct RoleBindings;
pub struct ClusterRoleBindings;

const GROUP: &str = "rbac.authorization.k8s.io";

fn validate_rules(rules: &[PolicyRule], namespaced: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let path = format!("rules[{i}]");
        if rule.verbs.is_empty() {
            causes.push((format!("{path}.verbs"), "Required value: verbs must contain at least one value".into()));
        }
        let urls = rule.non_resource_urls.as_ref().is_some_and(|u| !u.is_empty());
        let resource_parts = rule.api_groups.as_ref().is_some_and(|g| !g.is_empty())
            || rule.resources.as_ref().is_some_and(|r| !r.is_empty())
            || rule.resource_names.as_ref().is_some_and(|n| !n.is_empty());
        match (urls, namespaced, resource_parts) {
            (true, true, _) => causes.push((
                format!("{path}.nonResourceURLs"),
                "Invalid value: namespaced rules cannot apply to non-resource URLs".into(),
            )),
            (true, false, true) => causes.push((
                format!("{path}.nonResourceURLs"),
                "Invalid value: rules cannot apply to both regular resources and non-resource URLs".into(),
            )),
            (true, false, false) => {}
            (false, _, _) => {
                if rule.api_groups.as_ref().is_none_or(Vec::is_empty) {
                    causes.push((
                        format!("{path}.apiGroups"),
                        "Required value: resource rules must supply at least one api group".into(),
                    ));
                }
                if rule.resources.as_ref().is_none_or(Vec::is_empty) {
                    causes.push((
                        format!("{path}.resources"),
                        "Required value: resource rules must supply at least one resource".into(),
                    ));
                }
            }
        }
    }
    causes
}

fn default_subjects(subjects: &mut Option<Vec<Subject>>) {
    for subject in subjects.iter_mut().flatten() {
        if subject.api_group.as_deref().is_none_or(str::is_empty) && matches!(subject.kind.as_str(), "User" | "Group") {
            subject.api_group = Some(GROUP.into());
        }
    }
}

fn default_role_ref(role_ref: &mut RoleRef) {
    if role_ref.api_group.is_empty() {
        role_ref.api_group = GROUP.into();
    }
}

fn validate_binding(role_ref: &RoleRef, subjects: &Option<Vec<Subject>>, cluster_wide: bool) -> Vec<Cause> {
    let mut causes: Vec<Cause> = one_of("roleRef.apiGroup", Some(&role_ref.api_group), &[GROUP]).into_iter().collect();
    let kinds: &[&str] = if cluster_wide { &["ClusterRole"] } else { &["Role", "ClusterRole"] };
    causes.extend(one_of("roleRef.kind", Some(&role_ref.kind), kinds));
    if role_ref.name.is_empty() {
        causes.push(("roleRef.name".into(), "Required value".into()));
    } else {
        causes.extend(validation::check("roleRef.name", &role_ref.name, validation::path_segment_name));
    }
    for (i, subject) in subjects.iter().flatten().enumerate() {
        let path = format!("subjects[{i}]");
        if subject.name.is_empty() {
            causes.push((format!("{path}.name"), "Required value".into()));
        }
        match subject.kind.as_str() {
            "ServiceAccount" => {
                if !subject.name.is_empty() {
                    causes.extend(validation::check(&format!("{path}.name"), &subject.name, validation::dns_subdomain));
                }
                if subject.api_group.as_deref().is_some_and(|g| !g.is_empty()) {
                    causes.extend(one_of(&format!("{path}.apiGroup"), subject.api_group.as_deref(), &[""]));
                }
                if cluster_wide && subject.namespace.as_deref().is_none_or(str::is_empty) {
                    causes.push((format!("{path}.namespace"), "Required value".into()));
                }
            }
            "User" | "Group" => {
                causes.extend(one_of(&format!("{path}.apiGroup"), subject.api_group.as_deref(), &[GROUP]))
            }
            other => causes.extend(one_of(&format!("{path}.kind"), Some(other), &["ServiceAccount", "User", "Group"])),
        }
    }
    causes
}

fn role_ref_fixed(new: &RoleRef, old: &RoleRef) -> Vec<Cause> {
    match new == old {
        true => vec![],
        false => vec![("roleRef".into(), "Invalid value: cannot change roleRef".into())],
    }
}

fn binding_columns() -> Vec<Column> {
    vec![
        NAME,
        columns::string("Role", 0, |o| {
            format!("{}/{}", o["roleRef"]["kind"].as_str().unwrap_or(""), o["roleRef"]["name"].as_str().unwrap_or(""))
                .into()
        }),
        AGE,
        columns::string("Users", 1, |o| columns::subjects(o, "User")),
        columns::string("Groups", 1, |o| columns::subjects(o, "Group")),
        columns::string("ServiceAccounts", 1, |o| columns::subjects(o, "ServiceAccount")),
    ]
}

impl Rules for Roles {
    type Object = Role;

    fn name_rule() -> fn(&str) -> Vec<String> {
        validation::path_segment_name
    }

    fn validate(role: &Role) -> Vec<Cause> {
        validate_rules(role.rules.as_deref().unwrap_or_default(), true)
    }
}

impl Rules for ClusterRoles {
    type Object = ClusterRole;

    fn name_rule() -> fn(&str) -> Vec<String> {
        validation::path_segment_name
    }

    fn validate(role: &ClusterRole) -> Vec<Cause> {
        let mut causes = validate_rules(role.rules.as_deref().unwrap_or_default(), false);
        if role.aggregation_rule.as_ref().is_some_and(|a| a.cluster_role_selectors.as_ref().is_none_or(Vec::is_empty)) {
            causes.push((
                "aggregationRule.clusterRoleSelectors".into(),
                "Required value: at least one clusterRoleSelector required if aggregationRule is non-nil".into(),
            ));
        }
        causes
    }
}

impl Rules for RoleBindings {
    type Object = RoleBinding;

    fn name_rule() -> fn(&str) -> Vec<String> {
        validation::path_segment_name
    }

    fn default(binding: &mut RoleBinding) {
        default_role_ref(&mut binding.role_ref);
        default_subjects(&mut binding.subjects);
    }

    fn validate(binding: &RoleBinding) -> Vec<Cause> {
        validate_binding(&binding.role_ref, &binding.subjects, false)
    }

    fn validate_update(new: &RoleBinding, old: &RoleBinding) -> Vec<Cause> {
        role_ref_fixed(&new.role_ref, &old.role_ref)
    }

    fn columns() -> Vec<Column> {
        binding_columns()
    }
}

impl Rules for ClusterRoleBindings {
    type Object = ClusterRoleBinding;

    fn name_rule() -> fn(&str) -> Vec<String> {
        validation::path_segment_name
    }

    fn default(binding: &mut ClusterRoleBinding) {
        default_role_ref(&mut binding.role_ref);
        default_subjects(&mut binding.subjects);
    }

    fn validate(binding: &ClusterRoleBinding) -> Vec<Cause> {
        validate_binding(&binding.role_ref, &binding.subjects, true)
    }

    fn validate_update(new: &ClusterRoleBinding, old: &ClusterRoleBinding) -> Vec<Cause> {
        role_ref_fixed(&new.role_ref, &old.role_ref)
    }

    fn columns() -> Vec<Column> {
        binding_columns()
    }
}
