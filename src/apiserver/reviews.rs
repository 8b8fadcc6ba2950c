//! The answers to the review kinds (`registry::reviews`): each request comes back with its
//! `status` filled in and nothing is stored, as kube-apiserver's review storage does.
//! `kubectl auth whoami` asks a SelfSubjectReview, `kubectl auth can-i` a
//! SelfSubjectAccessReview (`--list`: a SelfSubjectRulesReview).

use serde_json::{Value, json};

use super::authentication::User;
use super::authorization::{self, Asked, Attributes};
use super::errors::ApiError;
use super::http::Shared;
use super::objects::{self, Validation};
use super::rest::Target;

pub fn answer(server: &Shared, target: &Target, object: Value, validation: &mut Validation) -> Result<Value, ApiError> {
    let decoded = target.strategy.decode(object)?;
    validation.take(decoded.unknown)?;
    let mut review = decoded.object;
    let causes = target.strategy.prepare_create(&mut review);
    if !causes.is_empty() {
        return Err(ApiError::invalid(&objects::qualified_kind(target.info()), "", causes));
    }
    review["metadata"]["creationTimestamp"] = objects::now().into();
    let user = &target.user;
    let status = match target.info().kind.as_str() {
        "SelfSubjectReview" => json!({"userInfo": user_info(user)}),
        "TokenReview" => {
            let token = review["spec"]["token"].as_str().unwrap_or_default();
            match server.tokens.as_ref().and_then(|tokens| tokens.user(token)) {
                Some(user) => {
                    json!({"authenticated": true, "user": user_info(&user), "audiences": review["spec"]["audiences"]})
                }
                None => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
            }
        }
        "SelfSubjectAccessReview" => access(server, user, &review["spec"], None),
        "SubjectAccessReview" => access(server, &subject_of(&review["spec"]), &review["spec"], None),
        "LocalSubjectAccessReview" => {
            let namespace = target.namespace.clone().unwrap_or_default();
            let spec = &review["spec"];
            let asked = spec["resourceAttributes"]["namespace"].as_str().unwrap_or_default();
            if !asked.is_empty() && asked != namespace {
                return Err(ApiError::bad_request(format!(
                    "spec.resourceAttributes.namespace must match namespace: {namespace}"
                )));
            }
            let status = access(server, &subject_of(spec), spec, Some(&namespace));
            review["metadata"]["namespace"] = namespace.into();
            status
        }
        "SelfSubjectRulesReview" => rules(server, user, review["spec"]["namespace"].as_str().unwrap_or_default()),
        other => return Err(ApiError::internal(format!("no review of kind {other}"))),
    };
    review["status"] = status;
    Ok(review)
}

/// The user a SubjectAccessReview asks about.
fn subject_of(spec: &Value) -> User {
    let groups = spec["groups"].as_array().into_iter().flatten().filter_map(|g| g.as_str().map(String::from)).collect();
    User {
        name: spec["user"].as_str().unwrap_or_default().into(),
        uid: spec["uid"].as_str().unwrap_or_default().into(),
        groups,
    }
}

fn user_info(user: &User) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = user.uid.clone().into();
    }
    info
}

/// A SubjectAccessReviewStatus: whether `user` may do what `spec` asks.
fn access(server: &Shared, user: &User, spec: &Value, namespace: Option<&str>) -> Value {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let attributes = match spec.get("resourceAttributes").filter(|a| a.is_object()) {
        Some(a) => Attributes {
            verb: text(&a["verb"]),
            target: Asked::Resource {
                group: text(&a["group"]),
                resource: text(&a["resource"]),
                subresource: text(&a["subresource"]),
                namespace: namespace.map_or_else(|| text(&a["namespace"]), String::from),
                name: text(&a["name"]),
            },
        },
        None => {
            let a = &spec["nonResourceAttributes"];
            Attributes { verb: text(&a["verb"]), target: Asked::Path(text(&a["path"])) }
        }
    };
    if server.tokens.is_none() {
        return json!({"allowed": true, "reason": "no authorization: every request is allowed"});
    }
    match authorization::authorize(&server.cache, user, &attributes) {
        Ok(reason) => json!({"allowed": true, "reason": reason}),
        Err(_) => json!({"allowed": false}),
    }
}

/// A SubjectRulesReviewStatus: every rule `user` holds in `namespace`.
fn rules(server: &Shared, user: &User, namespace: &str) -> Value {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    if user.in_group(super::authentication::MASTERS) || server.tokens.is_none() {
        resource_rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        non_resource_rules.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    }
    for rule in authorization::rules_of(&server.cache, user, namespace) {
        match rule.get("nonResourceURLs").and_then(Value::as_array).filter(|u| !u.is_empty()) {
            Some(urls) => non_resource_rules.push(json!({"verbs": rule["verbs"], "nonResourceURLs": urls})),
            None => {
                let mut shown =
                    json!({"verbs": rule["verbs"], "apiGroups": rule["apiGroups"], "resources": rule["resources"]});
                if let Some(names) = rule.get("resourceNames").filter(|n| !n.is_null()) {
                    shown["resourceNames"] = names.clone();
                }
                resource_rules.push(shown);
            }
        }
    }
    json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
}
