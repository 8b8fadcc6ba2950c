//! A container's environment from the API, as kubelet's makeEnvironmentVariables builds
//! it: `envFrom` (ConfigMaps and Secrets, with a prefix), then `env` in order, each value
//! expanded against what came before, with `valueFrom` read from ConfigMaps, Secrets, the
//! pod itself (the downward API) and the container's resources.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVarSource, ObjectFieldSelector, PersistentVolume, Pod, ResourceFieldSelector, Secret,
    Service,
};

use crate::quantity::Quantity;

/// The API objects a pod draws on, and what the node knows of it. `podctl run` has none.
pub trait ApiObjects {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>>;
    fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>>;
    /// A service account token for the pod (TokenRequest), valid `seconds`, for `audience`.
    fn service_account_token(&self, pod: &Pod, audience: Option<&str>, seconds: i64) -> Result<String>;
    /// The Services of a namespace.
    fn services(&self, namespace: &str) -> Vec<Service>;
    /// The volume a claim is bound to; an error says why there is none.
    fn claimed_volume(&self, namespace: &str, claim: &str) -> Result<PersistentVolume>;
}

/// Without an API server: every reference to an API object is refused, named.
pub struct NoApiServer;

impl ApiObjects for NoApiServer {
    fn config_map(&self, _: &str, name: &str) -> Result<Option<ConfigMap>> {
        bail!("ConfigMap {name:?}: ConfigMaps need an API server")
    }
    fn secret(&self, _: &str, name: &str) -> Result<Option<Secret>> {
        bail!("Secret {name:?}: Secrets need an API server")
    }
    fn service_account_token(&self, _: &Pod, _: Option<&str>, _: i64) -> Result<String> {
        bail!("service account tokens need an API server")
    }
    fn services(&self, _: &str) -> Vec<Service> {
        vec![]
    }
    fn claimed_volume(&self, _: &str, claim: &str) -> Result<PersistentVolume> {
        bail!("PersistentVolumeClaim {claim:?}: claims need an API server")
    }
}

/// What the downward API reads that the Pod object does not say yet, and the node's
/// allocatable resources (the default of a resourceFieldRef without a limit).
#[derive(Clone, Default)]
pub struct PodContext {
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    pub node_cpu_millis: u64,
    pub node_memory_bytes: u64,
}

/// The `KEY=VALUE` pairs the pod spec gives `container`, in order (later ones win), with
/// `$(VAR)` expanded against `base` (the image's) and those before.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    base: &[(String, String)],
    objects: &dyn ApiObjects,
    context: &PodContext,
) -> Result<Vec<(String, String)>> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: Vec<(String, String)> = base.to_vec();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        env.retain(|(k, _)| *k != name);
        env.push((name, value));
    };
    for (name, value) in service_env(pod, objects) {
        set(&mut env, name, value);
    }
    for (i, from) in container.env_from.iter().flatten().enumerate() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data: BTreeMap<String, String> = if let Some(r) = &from.config_map_ref {
            match objects.config_map(namespace, &r.name)? {
                Some(map) => config_map_data(&map),
                None if r.optional == Some(true) => continue,
                None => bail!("envFrom[{i}]: configmap {:?} not found", r.name),
            }
        } else if let Some(r) = &from.secret_ref {
            match objects.secret(namespace, &r.name)? {
                Some(secret) => secret_data(&secret),
                None if r.optional == Some(true) => continue,
                None => bail!("envFrom[{i}]: secret {:?} not found", r.name),
            }
        } else {
            continue;
        };
        for (key, value) in data {
            // kubelet skips keys that are not valid variable names (and says so in an event).
            let name = format!("{prefix}{key}");
            if valid_env_name(&name) {
                set(&mut env, name, value);
            }
        }
    }
    for (i, var) in container.env.iter().flatten().enumerate() {
        let value = match &var.value_from {
            None => Some(super::spec::expand(var.value.as_deref().unwrap_or(""), &env)),
            Some(source) => value_from(pod, container, source, objects, context)
                .with_context(|| format!("env[{i}] ({})", var.name))?,
        };
        if let Some(value) = value {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

/// The Services' variables kubelet gives every container (pkg/kubelet/envvars): those of
/// the pod's namespace unless `enableServiceLinks: false`, and the API server's own
/// `default/kubernetes` always; `NAME_SERVICE_HOST`, `NAME_SERVICE_PORT[_PORTNAME]`, and
/// docker's link variables `NAME_PORT…`. Headless Services have none.
fn service_env(pod: &Pod, objects: &dyn ApiObjects) -> Vec<(String, String)> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false);
    let mut services: Vec<Service> = if links { objects.services(namespace) } else { vec![] };
    if !(links && namespace == "default") {
        services.extend(
            objects.services("default").into_iter().filter(|s| s.metadata.name.as_deref() == Some("kubernetes")),
        );
    }
    services.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut env = Vec::new();
    for service in &services {
        let Some(spec) = &service.spec else { continue };
        let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None") else { continue };
        let prefix = service.metadata.name.as_deref().unwrap_or_default().to_uppercase().replace('-', "_");
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        env.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        env.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for port in ports {
            if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                env.push((
                    format!("{prefix}_SERVICE_PORT_{}", name.to_uppercase().replace('-', "_")),
                    port.port.to_string(),
                ));
            }
        }
        let protocol = |p: &k8s_openapi::api::core::v1::ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
        env.push((format!("{prefix}_PORT"), format!("{}://{ip}:{}", protocol(first).to_lowercase(), first.port)));
        for port in ports {
            let proto = protocol(port);
            let link = format!("{prefix}_PORT_{}_{proto}", port.port);
            env.push((link.clone(), format!("{}://{ip}:{}", proto.to_lowercase(), port.port)));
            env.push((format!("{link}_PROTO"), proto.to_lowercase()));
            env.push((format!("{link}_PORT"), port.port.to_string()));
            env.push((format!("{link}_ADDR"), ip.to_string()));
        }
    }
    env
}

/// A `valueFrom`'s value; `None` for an optional reference to what does not exist.
fn value_from(
    pod: &Pod,
    container: &Container,
    source: &EnvVarSource,
    objects: &dyn ApiObjects,
    context: &PodContext,
) -> Result<Option<String>> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    // A key of a ConfigMap or Secret, as kubelet words what is missing.
    let key = |data: Option<BTreeMap<String, String>>, kind: &str, name: &str, key: &str, optional: Option<bool>| {
        let optional = optional == Some(true);
        match data.map(|mut data| data.remove(key)) {
            Some(Some(value)) => Ok(Some(value)),
            Some(None) | None if optional => Ok(None),
            Some(None) => bail!("couldn't find key {key} in {kind} {namespace}/{name}"),
            None => bail!("{} {name:?} not found", kind.to_lowercase()),
        }
    };
    if let Some(r) = &source.config_map_key_ref {
        let data = objects.config_map(namespace, &r.name)?.map(|m| config_map_data(&m));
        return key(data, "ConfigMap", &r.name, &r.key, r.optional);
    }
    if let Some(r) = &source.secret_key_ref {
        let data = objects.secret(namespace, &r.name)?.map(|s| secret_data(&s));
        return key(data, "Secret", &r.name, &r.key, r.optional);
    }
    if let Some(field) = &source.field_ref {
        return field_value(pod, field, context).map(Some);
    }
    if let Some(resource) = &source.resource_field_ref {
        return resource_value(pod, Some(container), resource, context).map(Some);
    }
    bail!("valueFrom names no source")
}

/// A downward API field of the pod (fieldRef).
pub fn field_value(pod: &Pod, field: &ObjectFieldSelector, context: &PodContext) -> Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let path = field.field_path.as_str();
    let in_map = |map: &Option<BTreeMap<String, String>>, prefix: &str| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(value) = in_map(&meta.labels, "metadata.labels['") {
        return Ok(value);
    }
    if let Some(value) = in_map(&meta.annotations, "metadata.annotations['") {
        return Ok(value);
    }
    let joined = |map: &Option<BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", serde_json::Value::from(v.as_str())))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_else(|| "default".into()),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => joined(&meta.labels),
        "metadata.annotations" => joined(&meta.annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.podIP" | "status.podIPs" => context.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => context.host_ip.clone().unwrap_or_default(),
        other => bail!("fieldRef: unsupported fieldPath {other:?}"),
    })
}

/// A container's resource (resourceFieldRef), in units of its divisor, rounded up; a limit
/// not set is the node's allocatable, as kubelet gives it.
pub fn resource_value(
    pod: &Pod,
    container: Option<&Container>,
    selector: &ResourceFieldSelector,
    context: &PodContext,
) -> Result<String> {
    let spec = pod.spec.as_ref().context("spec: required")?;
    let container = match (&selector.container_name, container) {
        (Some(name), _) if !name.is_empty() => spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == *name)
            .with_context(|| format!("resourceFieldRef: no container {name:?}"))?,
        (_, Some(container)) => container,
        (_, None) => bail!("resourceFieldRef: containerName is required here"),
    };
    let resources = container.resources.as_ref();
    let get = |list: &str, key: &str| {
        let map = if list == "limits" {
            resources.and_then(|r| r.limits.as_ref())
        } else {
            resources.and_then(|r| r.requests.as_ref())
        };
        map.and_then(|m| m.get(key)).and_then(|q| Quantity::parse(&q.0))
    };
    let (list, key) = selector
        .resource
        .split_once('.')
        .with_context(|| format!("resourceFieldRef: unsupported resource {:?}", selector.resource))?;
    let node_default = match key {
        "cpu" => Quantity::parse(&format!("{}m", context.node_cpu_millis)),
        "memory" => Quantity::parse(&context.node_memory_bytes.to_string()),
        "ephemeral-storage" => Quantity::parse("0"),
        _ => bail!("resourceFieldRef: unsupported resource {:?}", selector.resource),
    };
    let value = match list {
        "limits" => get("limits", key).or(node_default),
        "requests" => get("requests", key).or_else(|| get("limits", key)).or(Quantity::parse("0")),
        _ => bail!("resourceFieldRef: unsupported resource {:?}", selector.resource),
    }
    .unwrap_or_else(|| Quantity::parse("0").expect("zero"));
    let divisor = match selector.divisor.as_ref().map(|d| d.0.as_str()) {
        Some(d) if !d.is_empty() => Quantity::parse(d)
            .filter(|q| !q.is_zero() && !q.is_negative())
            .with_context(|| format!("resourceFieldRef.divisor: {d:?} is not a quantity"))?,
        _ => Quantity::parse("1").expect("one"),
    };
    let units = (value.nanos() + divisor.nanos() - 1).div_euclid(divisor.nanos());
    Ok(units.to_string())
}

pub fn config_map_data(map: &ConfigMap) -> BTreeMap<String, String> {
    let mut data = map.data.clone().unwrap_or_default();
    for (key, value) in map.binary_data.iter().flatten() {
        data.insert(key.clone(), String::from_utf8_lossy(&value.0).into_owned());
    }
    data
}

pub fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    let mut data: BTreeMap<String, String> =
        secret.data.iter().flatten().map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned())).collect();
    data.extend(secret.string_data.clone().unwrap_or_default());
    data
}

/// C_IDENTIFIER-like names are what shells take; Kubernetes allows any printable name
/// but `=`, and kubelet skips envFrom keys that are not valid.
fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Objects;

    impl ApiObjects for Objects {
        fn config_map(&self, _: &str, name: &str) -> Result<Option<ConfigMap>> {
            Ok((name == "settings").then(|| {
                serde_json::from_value(serde_json::json!({"data": {"mode": "fast", "level": "3", "1bad": "x"}}))
                    .unwrap()
            }))
        }
        fn secret(&self, _: &str, name: &str) -> Result<Option<Secret>> {
            Ok((name == "creds")
                .then(|| serde_json::from_value(serde_json::json!({"data": {"password": "aHVudGVyMg=="}})).unwrap()))
        }
        fn service_account_token(&self, _: &Pod, _: Option<&str>, _: i64) -> Result<String> {
            bail!("none")
        }
        fn claimed_volume(&self, _: &str, _: &str) -> Result<PersistentVolume> {
            bail!("none")
        }
        fn services(&self, namespace: &str) -> Vec<Service> {
            let service = |name: &str, ip: &str, ports: serde_json::Value| -> Service {
                serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": namespace}, "spec": {"clusterIP": ip, "ports": ports}})).unwrap()
            };
            match namespace {
                "default" => {
                    vec![service("kubernetes", "10.96.0.1", serde_json::json!([{"name": "https", "port": 443}]))]
                }
                _ => vec![
                    service(
                        "web-front",
                        "10.96.0.20",
                        serde_json::json!([{"name": "http", "port": 80}, {"port": 53, "protocol": "UDP"}]),
                    ),
                    service("headless", "None", serde_json::json!([{"port": 80}])),
                ],
            }
        }
    }

    #[test]
    fn services_give_kubelets_variables() {
        let pod = pod();
        let env = container_env(&pod, &pod.spec.as_ref().unwrap().containers[0], &[], &Objects, &PodContext::default())
            .unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("WEB_FRONT_SERVICE_HOST"), Some("10.96.0.20"));
        assert_eq!(get("WEB_FRONT_SERVICE_PORT_HTTP"), Some("80"));
        assert_eq!(get("WEB_FRONT_PORT"), Some("tcp://10.96.0.20:80"));
        assert_eq!(get("WEB_FRONT_PORT_53_UDP_ADDR"), Some("10.96.0.20"));
        assert_eq!(get("WEB_FRONT_PORT_53_UDP_PROTO"), Some("udp"));
        assert!(get("HEADLESS_SERVICE_HOST").is_none());
        let mut unlinked = pod.clone();
        unlinked.spec.as_mut().unwrap().enable_service_links = Some(false);
        let env = container_env(
            &unlinked,
            &unlinked.spec.as_ref().unwrap().containers[0],
            &[],
            &Objects,
            &PodContext::default(),
        )
        .unwrap();
        assert!(env.iter().any(|(n, _)| n == "KUBERNETES_SERVICE_HOST"), "the API server's own always");
        assert!(!env.iter().any(|(n, _)| n == "WEB_FRONT_SERVICE_HOST"));
    }

    fn pod() -> Pod {
        serde_saphyr::from_str(
            r#"
metadata: {name: web, namespace: prod, uid: u-1, labels: {app: web}}
spec:
  nodeName: n1
  containers:
  - name: app
    image: x
    resources: {limits: {memory: 64Mi}, requests: {cpu: 250m}}
    envFrom: [{configMapRef: {name: settings}, prefix: CFG_}, {secretRef: {name: missing, optional: true}}]
    env:
    - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    - {name: GONE, valueFrom: {secretKeyRef: {name: creds, key: nope, optional: true}}}
    - {name: NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: MEM_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: CPU, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}
    - {name: SAY, value: "$(MODE)-$(NAME)"}
"#,
        )
        .unwrap()
    }

    #[test]
    fn values_come_from_objects_the_pod_and_its_resources() {
        let pod = pod();
        let context = PodContext {
            pod_ip: Some("10.88.0.5".into()),
            host_ip: None,
            node_cpu_millis: 2000,
            node_memory_bytes: 1 << 30,
        };
        let env = container_env(&pod, &pod.spec.as_ref().unwrap().containers[0], &[], &Objects, &context).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CFG_mode"), Some("fast"));
        assert_eq!(get("CFG_1bad"), Some("x"), "the prefix makes it valid");
        assert_eq!(get("MODE"), Some("fast"));
        assert_eq!(get("PASSWORD"), Some("hunter2"));
        assert_eq!(get("GONE"), None);
        assert_eq!(get("NAME"), Some("web"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("IP"), Some("10.88.0.5"));
        assert_eq!(get("MEM_MI"), Some("64"));
        assert_eq!(get("CPU"), Some("2"), "no limit: the node's cores");
        assert_eq!(get("SAY"), Some("fast-web"));
    }

    #[test]
    fn a_missing_object_names_itself() {
        let mut pod = pod();
        pod.spec.as_mut().unwrap().containers[0].env = Some(vec![
            serde_json::from_value(
                serde_json::json!({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}),
            )
            .unwrap(),
        ]);
        let err = container_env(&pod, &pod.spec.as_ref().unwrap().containers[0], &[], &Objects, &PodContext::default())
            .unwrap_err();
        assert_eq!(format!("{err:#}"), "env[0] (X): configmap \"nope\" not found");
    }
}
