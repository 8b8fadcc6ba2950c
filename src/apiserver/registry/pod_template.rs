//! What every pod spec gets, in a Pod or in a workload's template: kube-apiserver's
//! SetDefaults_PodSpec, _Container, _Probe, _Volume (k8s.io/kubernetes
//! pkg/apis/core/v1/defaults.go), the checks of names and images, and the rules tying a
//! workload's selector to its template's labels.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EphemeralContainer, HTTPGetAction, LifecycleHandler, PodSpec, PodTemplateSpec, Probe, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::Cause;
use crate::validation;

/// Go's zero string is no value: kube's defaulting tests `== ""`.
pub fn unset(value: &Option<String>) -> bool {
    value.as_deref().is_none_or(str::is_empty)
}

pub fn default_string(value: &mut Option<String>, default: &str) {
    if unset(value) {
        *value = Some(default.into());
    }
}

/// SetDefaults_PodSpec and what it reaches: containers, probes, volumes.
pub fn default_pod_spec(spec: &mut PodSpec) {
    default_string(&mut spec.dns_policy, "ClusterFirst");
    default_string(&mut spec.restart_policy, "Always");
    default_string(&mut spec.scheduler_name, "default-scheduler");
    spec.security_context.get_or_insert_with(Default::default);
    spec.termination_grace_period_seconds.get_or_insert(30);
    for container in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        default_container(container);
    }
    for container in spec.ephemeral_containers.iter_mut().flatten() {
        default_ephemeral_container(container);
    }
    for volume in spec.volumes.iter_mut().flatten() {
        default_volume(volume);
    }
}

/// A template's defaults: its pod spec's (the Pod-only ones stay with Pods).
pub fn default_template(template: &mut PodTemplateSpec) {
    if let Some(spec) = template.spec.as_mut() {
        default_pod_spec(spec);
    }
}

/// `Always` for `:latest` or no tag, `IfNotPresent` otherwise (digests included), as
/// kube-apiserver decides from the image reference.
pub fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(container: &mut Container) {
    if unset(&container.image_pull_policy) {
        container.image_pull_policy = Some(pull_policy(container.image.as_deref().unwrap_or("")).into());
    }
    default_string(&mut container.termination_message_path, "/dev/termination-log");
    default_string(&mut container.termination_message_policy, "File");
    for port in container.ports.iter_mut().flatten() {
        default_string(&mut port.protocol, "TCP");
    }
    for env in container.env.iter_mut().flatten() {
        if let Some(field) = env.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            default_string(&mut field.api_version, "v1");
        }
    }
    for probe in [&mut container.liveness_probe, &mut container.readiness_probe, &mut container.startup_probe] {
        if let Some(probe) = probe {
            default_probe(probe);
        }
    }
    if let Some(lifecycle) = container.lifecycle.as_mut() {
        for handler in [&mut lifecycle.post_start, &mut lifecycle.pre_stop].into_iter().flatten() {
            default_handler(handler);
        }
    }
}

fn default_ephemeral_container(container: &mut EphemeralContainer) {
    if unset(&container.image_pull_policy) {
        container.image_pull_policy = Some(pull_policy(container.image.as_deref().unwrap_or("")).into());
    }
    default_string(&mut container.termination_message_path, "/dev/termination-log");
    default_string(&mut container.termination_message_policy, "File");
}

fn default_probe(probe: &mut Probe) {
    for (field, default) in [
        (&mut probe.timeout_seconds, 1),
        (&mut probe.period_seconds, 10),
        (&mut probe.success_threshold, 1),
        (&mut probe.failure_threshold, 3),
    ] {
        if field.is_none_or(|v| v == 0) {
            *field = Some(default);
        }
    }
    if let Some(http) = probe.http_get.as_mut() {
        default_http_get(http);
    }
}

fn default_handler(handler: &mut LifecycleHandler) {
    if let Some(http) = handler.http_get.as_mut() {
        default_http_get(http);
    }
}

fn default_http_get(http: &mut HTTPGetAction) {
    default_string(&mut http.path, "/");
    default_string(&mut http.scheme, "HTTP");
}

fn default_volume(volume: &mut Volume) {
    let has_source = serde_json::to_value(&*volume)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.keys().any(|k| k != "name")))
        .unwrap_or(false);
    if !has_source {
        volume.empty_dir = Some(Default::default());
    }
    const MODE: i32 = 0o644;
    if let Some(secret) = volume.secret.as_mut() {
        secret.default_mode.get_or_insert(MODE);
    }
    if let Some(config_map) = volume.config_map.as_mut() {
        config_map.default_mode.get_or_insert(MODE);
    }
    if let Some(downward) = volume.downward_api.as_mut() {
        downward.default_mode.get_or_insert(MODE);
        for item in downward.items.iter_mut().flatten() {
            if let Some(field) = item.field_ref.as_mut() {
                default_string(&mut field.api_version, "v1");
            }
        }
    }
    if let Some(projected) = volume.projected.as_mut() {
        projected.default_mode.get_or_insert(MODE);
        for source in projected.sources.iter_mut().flatten() {
            if let Some(token) = source.service_account_token.as_mut() {
                token.expiration_seconds.get_or_insert(3600);
            }
        }
    }
    if let Some(host) = volume.host_path.as_mut() {
        host.type_.get_or_insert_with(String::new);
    }
}

/// What is wrong with a pod spec at `path`: names (RFC 1123 labels, unique), containers
/// and their images present, a restart policy of `allowed`.
pub fn validate_pod_spec(spec: &PodSpec, path: &str, allowed_restart: &[&str]) -> Vec<Cause> {
    let mut causes = validation::pod_spec_names(spec, path);
    if spec.containers.is_empty() {
        causes.push((format!("{path}.containers"), "Required value".into()));
    }
    for (i, container) in spec.containers.iter().enumerate() {
        if container.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            causes.push((format!("{path}.containers[{i}].image"), "Required value".into()));
        }
    }
    for (i, container) in spec.init_containers.iter().flatten().enumerate() {
        if container.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            causes.push((format!("{path}.initContainers[{i}].image"), "Required value".into()));
        }
    }
    causes.extend(validate_ephemeral_containers(spec, path));
    let restart = spec.restart_policy.as_deref().unwrap_or("");
    if !allowed_restart.contains(&restart) {
        let supported: Vec<String> = allowed_restart.iter().map(|p| format!("\"{p}\"")).collect();
        causes.push((
            format!("{path}.restartPolicy"),
            format!("Unsupported value: \"{restart}\": supported values: {}", supported.join(", ")),
        ));
    }
    causes
}

/// validateEphemeralContainers: an image each, a target among the pod's containers, and
/// none of what only a regular container may have.
fn validate_ephemeral_containers(spec: &PodSpec, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let names: Vec<&str> =
        spec.containers.iter().chain(spec.init_containers.iter().flatten()).map(|c| c.name.as_str()).collect();
    for (i, container) in spec.ephemeral_containers.iter().flatten().enumerate() {
        let here = format!("{path}.ephemeralContainers[{i}]");
        if container.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            causes.push((format!("{here}.image"), "Required value".into()));
        }
        if let Some(target) = container.target_container_name.as_deref().filter(|t| !names.contains(t)) {
            causes.push((format!("{here}.targetContainerName"), format!("Not found: \"{target}\"")));
        }
        let forbidden = [
            ("ports", container.ports.is_some()),
            ("livenessProbe", container.liveness_probe.is_some()),
            ("readinessProbe", container.readiness_probe.is_some()),
            ("startupProbe", container.startup_probe.is_some()),
            ("lifecycle", container.lifecycle.is_some()),
            ("resources", container.resources.as_ref().is_some_and(|r| r != &Default::default())),
            ("resizePolicy", container.resize_policy.is_some()),
            ("restartPolicy", container.restart_policy.is_some()),
        ];
        for (field, set) in forbidden {
            if set {
                causes.push((format!("{here}.{field}"), "Forbidden: cannot be set for an Ephemeral Container".into()));
            }
        }
    }
    causes
}

/// A workload's template at `{path}.template` and its selector at `{path}.selector`:
/// valid labels and pod spec, labels the selector selects, no activeDeadlineSeconds for
/// workloads that restart their pods (`kind` names the workload in the messages).
pub fn validate_template(
    selector: Option<&LabelSelector>,
    template: Option<&PodTemplateSpec>,
    path: &str,
    kind: &str,
    allowed_restart: &[&str],
) -> Vec<Cause> {
    let Some(template) = template else {
        return vec![(format!("{path}.template"), "Required value".into())];
    };
    let mut causes = validate_template_spec(template, path, kind, allowed_restart);
    match selector {
        None => causes.push((format!("{path}.selector"), "Required value".into())),
        Some(selector) => causes.extend(validate_selector(selector, template, path, kind)),
    }
    causes
}

/// A template at `{path}.template` on its own: labels, annotations, pod spec.
pub fn validate_template_spec(
    template: &PodTemplateSpec,
    path: &str,
    kind: &str,
    allowed_restart: &[&str],
) -> Vec<Cause> {
    let mut causes = Vec::new();
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    causes.extend(validation::labels(&labels, &format!("{path}.template.metadata.labels")));
    if let Some(annotations) = template.metadata.as_ref().and_then(|m| m.annotations.as_ref()) {
        causes.extend(validation::annotations(annotations, &format!("{path}.template.metadata.annotations")));
    }
    if let Some(spec) = template.spec.as_ref() {
        causes.extend(validate_pod_spec(spec, &format!("{path}.template.spec"), allowed_restart));
        if spec.active_deadline_seconds.is_some() && allowed_restart == ["Always"] {
            causes.push((
                format!("{path}.template.spec.activeDeadlineSeconds"),
                format!("Forbidden: activeDeadlineSeconds in {kind} is not Supported"),
            ));
        }
    } else {
        causes.push((format!("{path}.template.spec"), "Required value".into()));
    }
    causes
}

/// A workload's selector at `{path}.selector`: not empty, and selecting its template.
pub fn validate_selector(selector: &LabelSelector, template: &PodTemplateSpec, path: &str, kind: &str) -> Vec<Cause> {
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    if selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && selector.match_expressions.as_ref().is_none_or(Vec::is_empty)
    {
        let kind = kind.to_lowercase();
        return vec![(
            format!("{path}.selector"),
            format!("Invalid value: {{}}: empty selector is invalid for {kind}"),
        )];
    }
    if !crate::labels::selector_matches(selector, Some(&labels)) {
        return vec![(
            format!("{path}.template.metadata.labels"),
            format!("Invalid value: {labels:?}: `selector` does not match template `labels`"),
        )];
    }
    vec![]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policies_as_kube_apiserver_decides_them() {
        assert_eq!(pull_policy("busybox"), "Always");
        assert_eq!(pull_policy("busybox:latest"), "Always");
        assert_eq!(pull_policy("registry:5000/busybox"), "Always");
        assert_eq!(pull_policy("registry:5000/busybox:1.36"), "IfNotPresent");
        assert_eq!(pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn a_spec_gets_every_default() {
        let mut spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "c", "image": "busybox:1", "ports": [{"containerPort": 80}],
                            "livenessProbe": {"httpGet": {"port": 80}}}],
            "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "x"}}],
        }))
        .unwrap();
        default_pod_spec(&mut spec);
        let spec = serde_json::to_value(&spec).unwrap();
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(
            c["livenessProbe"],
            serde_json::json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                               "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(spec["volumes"][0]["emptyDir"], serde_json::json!({}));
        assert_eq!(spec["volumes"][1]["secret"]["defaultMode"], 420);
    }
}
