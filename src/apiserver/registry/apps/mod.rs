//! The apps group (`/apis/apps/v1`).

pub mod controllerrevisions;
pub mod daemonsets;
pub mod deployments;
pub mod replicasets;
pub mod statefulsets;

use super::Scale;
use super::columns::selector_string;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The scale subresource of a workload with replicas and a label selector.
pub fn scale_of(replicas: Option<i32>, current: Option<i32>, selector: Option<&LabelSelector>) -> Scale {
    let selector = selector.and_then(|s| serde_json::to_value(s).ok()).unwrap_or_default();
    Scale {
        replicas: i64::from(replicas.unwrap_or(1)),
        current: i64::from(current.unwrap_or(0)),
        selector: selector_string(&selector),
    }
}
