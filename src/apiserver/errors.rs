//! Errors as the Kubernetes API reports them: a `metav1.Status` with the HTTP code, the
//! reason kubectl keys on, and a message naming the object or field.

use serde_json::{Value, json};

use super::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: None }
    }

    fn with_details(mut self, name: &str, kind: &str) -> ApiError {
        self.details = Some(json!({"name": name, "kind": kind}));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn not_found(resource: &str, name: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("{resource} \"{name}\" not found")).with_details(name, resource)
    }

    pub fn no_route(path: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
    }

    pub fn method_not_allowed(method: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method ({method}) on the requested resource"),
        )
    }

    /// 403 about `resource` `name`: what may not be done to it (admission, RBAC).
    pub fn forbidden(resource: &str, name: &str, why: impl std::fmt::Display) -> ApiError {
        ApiError::new(403, "Forbidden", format!("{resource} \"{name}\" is forbidden: {why}"))
            .with_details(name, resource)
    }

    /// 403 from authorization: `what` (`pods "web"`, `pods`, or nothing for a path) is
    /// forbidden, and why.
    pub fn forbidden_to(what: &str, why: String) -> ApiError {
        let message = if what.is_empty() { format!("forbidden: {why}") } else { format!("{what} is forbidden: {why}") };
        ApiError::new(403, "Forbidden", message)
    }

    /// 409 when the object is not in a state the request can change (a precondition
    /// that does not hold: uid, resourceVersion, a pod already bound).
    pub fn conflict_because(resource: &str, name: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on {resource} \"{name}\": {message}"))
            .with_details(name, resource)
    }

    /// A server-side apply's conflicts with other managers (apimachinery's
    /// NewApplyConflict).
    pub fn apply_conflict(message: String, causes: Vec<Value>) -> ApiError {
        ApiError { code: 409, reason: "Conflict", message, details: Some(json!({"causes": causes})) }
    }

    pub fn already_exists(resource: &str, name: &str) -> ApiError {
        ApiError::new(409, "AlreadyExists", format!("{resource} \"{name}\" already exists"))
            .with_details(name, resource)
    }

    pub fn conflict(resource: &str, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        )
        .with_details(name, resource)
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(413, "RequestEntityTooLarge", format!("the request body is larger than {limit} bytes"))
    }

    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type}"),
        )
    }

    /// 422 with one cause per field, as `kubectl` prints them.
    /// 422 for `qualified_kind` (`Deployment.apps`) `name`, as apimachinery's NewInvalid
    /// makes it: each cause typed by its message, the kind and group apart in details.
    pub fn invalid(qualified_kind: &str, name: &str, causes: Vec<(String, String)>) -> ApiError {
        let errors: Vec<String> = causes.iter().map(|(field, reason)| format!("{field}: {reason}")).collect();
        let message = match errors.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|(field, reason)| json!({"reason": cause_type(reason), "message": reason, "field": field}))
            .collect();
        let (kind, group) = qualified_kind.split_once('.').unwrap_or((qualified_kind, ""));
        let mut details = json!({"name": name, "kind": kind, "causes": causes});
        if !group.is_empty() {
            details["group"] = group.into();
        }
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{qualified_kind} \"{name}\" is invalid: {message}"),
            details: Some(details),
        }
    }

    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(504, "Timeout", message)
    }

    /// A node's answer to a proxied request that was not a success.
    pub fn from_node(code: u16, message: String) -> ApiError {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            _ => "InternalError",
        };
        ApiError::new(code, reason, message)
    }

    /// 429: try again after `retry_after` seconds; `causes` say why.
    pub fn too_many_requests(message: &str, retry_after: u64, causes: Value) -> ApiError {
        let mut error = ApiError::new(429, "TooManyRequests", message);
        error.details = Some(json!({"causes": causes, "retryAfterSeconds": retry_after}));
        error
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }

    /// A store error about `resource` `name`.
    pub fn from_store(e: StoreError, resource: &str, name: &str) -> ApiError {
        match e {
            StoreError::AlreadyExists(_) => ApiError::already_exists(resource, name),
            StoreError::NotFound(_) => ApiError::not_found(resource, name),
            StoreError::Conflict { .. } => ApiError::conflict(resource, name),
            StoreError::Compacted { requested, compacted } => {
                ApiError::gone(format!("too old resource version: {requested} ({compacted})"))
            }
            StoreError::Backend(message) => ApiError::internal(message),
        }
    }
}

/// A field error's type (metav1.CauseType), from how its message begins.
fn cause_type(message: &str) -> &'static str {
    const TYPES: [(&str, &str); 8] = [
        ("Required value", "FieldValueRequired"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Duplicate value", "FieldValueDuplicate"),
        ("Forbidden", "FieldValueForbidden"),
        ("Too long", "FieldValueTooLong"),
        ("Too many", "FieldValueTooMany"),
        ("Not found", "FieldValueNotFound"),
        ("Invalid value", "FieldValueInvalid"),
    ];
    TYPES.iter().find(|(prefix, _)| message.starts_with(prefix)).map_or("FieldValueInvalid", |(_, t)| t)
}
