//! The Kubernetes protobuf encoding, for the bodies kubectl 1.32+ sends from its typed
//! commands (`kubectl create namespace|configmap|secret|serviceaccount|service|deployment`):
//! the `k8s\0` envelope around a runtime.Unknown, and the object decoded into JSON by a field
//! table per message (field numbers from k8s.io/api's generated.proto). Responses are JSON,
//! which kubectl also accepts.

use serde_json::{Map, Value};

use super::errors::ApiError;

const MAGIC: &[u8] = b"k8s\x00";

/// A message's fields by number: what kubectl's typed commands send for the kinds
/// below, and what a Pod template commonly holds. A field not listed is refused with its
/// number, never dropped.
struct Schema {
    name: &'static str,
    fields: &'static [(u32, Field)],
}

#[derive(Clone, Copy)]
enum Field {
    /// A string; an empty one is left out, as Go's JSON `omitempty` leaves it.
    Str(&'static str),
    /// An int Go sends only when set (a pointer): 0 is a value.
    Int(&'static str),
    /// An int Go always sends (a value with `omitempty`): 0 is "unset", left out.
    IntOrUnset(&'static str),
    Bool(&'static str),
    Strings(&'static str),
    /// repeated int64, packed or not.
    Ints(&'static str),
    StringMap(&'static str),
    /// map<string, bytes>, which JSON carries as base64.
    BytesMap(&'static str),
    /// resource.Quantity: a message holding its string.
    Quantity(&'static str),
    QuantityMap(&'static str),
    /// intstr.IntOrString: a JSON number or string.
    IntOrString(&'static str),
    /// metav1.Time (seconds, nanos); Go's zero time, which Go always sends, is left out.
    Time(&'static str),
    Message(&'static str, &'static Schema),
    Messages(&'static str, &'static Schema),
    /// A message whose fields JSON puts in the enclosing object (Go's inline structs).
    Inline(&'static Schema),
}

use Field::*;

macro_rules! schema {
    ($name:ident, $($number:literal => $field:expr),* $(,)?) => {
        #[allow(non_upper_case_globals)]
        const $name: Schema = Schema { name: stringify!($name), fields: &[$(($number, $field)),*] };
    };
}

schema!(ObjectMeta,
    1 => Str("name"), 2 => Str("generateName"), 3 => Str("namespace"), 4 => Str("selfLink"), 5 => Str("uid"),
    6 => Str("resourceVersion"), 7 => IntOrUnset("generation"), 8 => Time("creationTimestamp"),
    9 => Time("deletionTimestamp"), 10 => Int("deletionGracePeriodSeconds"), 11 => StringMap("labels"),
    12 => StringMap("annotations"), 13 => Messages("ownerReferences", &OwnerReference), 14 => Strings("finalizers"));
schema!(OwnerReference,
    5 => Str("apiVersion"), 1 => Str("kind"), 3 => Str("name"), 4 => Str("uid"), 6 => Bool("controller"),
    7 => Bool("blockOwnerDeletion"));
schema!(LabelSelector, 1 => StringMap("matchLabels"), 2 => Messages("matchExpressions", &LabelSelectorRequirement));
schema!(LabelSelectorRequirement, 1 => Str("key"), 2 => Str("operator"), 3 => Strings("values"));
schema!(LocalObjectReference, 1 => Str("name"));
schema!(ObjectReference,
    1 => Str("kind"), 2 => Str("namespace"), 3 => Str("name"), 4 => Str("uid"), 5 => Str("apiVersion"),
    6 => Str("resourceVersion"), 7 => Str("fieldPath"));

schema!(Namespace,
    1 => Message("metadata", &ObjectMeta), 2 => Message("spec", &NamespaceSpec), 3 => Message("status", &NamespaceStatus));
schema!(NamespaceSpec, 1 => Strings("finalizers"));
schema!(NamespaceStatus, 1 => Str("phase"), 2 => Messages("conditions", &NamespaceCondition));
schema!(NamespaceCondition,
    1 => Str("type"), 2 => Str("status"), 4 => Time("lastTransitionTime"), 5 => Str("reason"), 6 => Str("message"));
schema!(ConfigMap,
    1 => Message("metadata", &ObjectMeta), 2 => StringMap("data"), 3 => BytesMap("binaryData"), 4 => Bool("immutable"));
schema!(Secret,
    1 => Message("metadata", &ObjectMeta), 2 => BytesMap("data"), 3 => Str("type"), 4 => StringMap("stringData"),
    5 => Bool("immutable"));
schema!(ServiceAccount,
    1 => Message("metadata", &ObjectMeta), 2 => Messages("secrets", &ObjectReference),
    3 => Messages("imagePullSecrets", &LocalObjectReference), 4 => Bool("automountServiceAccountToken"));

schema!(Service, 1 => Message("metadata", &ObjectMeta), 2 => Message("spec", &ServiceSpec), 3 => Message("status", &ServiceStatus));
schema!(ServiceSpec,
    1 => Messages("ports", &ServicePort), 2 => StringMap("selector"), 3 => Str("clusterIP"), 18 => Strings("clusterIPs"),
    4 => Str("type"), 5 => Strings("externalIPs"), 7 => Str("sessionAffinity"), 8 => Str("loadBalancerIP"),
    9 => Strings("loadBalancerSourceRanges"), 10 => Str("externalName"), 11 => Str("externalTrafficPolicy"),
    12 => IntOrUnset("healthCheckNodePort"), 13 => Bool("publishNotReadyAddresses"),
    14 => Message("sessionAffinityConfig", &SessionAffinityConfig), 19 => Strings("ipFamilies"),
    17 => Str("ipFamilyPolicy"), 20 => Bool("allocateLoadBalancerNodePorts"), 21 => Str("loadBalancerClass"),
    22 => Str("internalTrafficPolicy"), 23 => Str("trafficDistribution"));
schema!(ServicePort,
    1 => Str("name"), 2 => Str("protocol"), 6 => Str("appProtocol"), 3 => Int("port"), 4 => IntOrString("targetPort"),
    5 => IntOrUnset("nodePort"));
schema!(SessionAffinityConfig, 1 => Message("clientIP", &ClientIPConfig));
schema!(ClientIPConfig, 1 => Int("timeoutSeconds"));
schema!(ServiceStatus, 1 => Message("loadBalancer", &LoadBalancerStatus));
schema!(LoadBalancerStatus,);

schema!(Deployment,
    1 => Message("metadata", &ObjectMeta), 2 => Message("spec", &DeploymentSpec), 3 => Message("status", &DeploymentStatus));
schema!(DeploymentSpec,
    1 => Int("replicas"), 2 => Message("selector", &LabelSelector), 3 => Message("template", &PodTemplateSpec),
    4 => Message("strategy", &DeploymentStrategy), 5 => IntOrUnset("minReadySeconds"), 6 => Int("revisionHistoryLimit"),
    7 => Bool("paused"), 9 => Int("progressDeadlineSeconds"));
schema!(DeploymentStrategy, 1 => Str("type"), 2 => Message("rollingUpdate", &RollingUpdateDeployment));
schema!(RollingUpdateDeployment, 1 => IntOrString("maxUnavailable"), 2 => IntOrString("maxSurge"));
schema!(DeploymentStatus,
    1 => IntOrUnset("observedGeneration"), 2 => IntOrUnset("replicas"), 3 => IntOrUnset("updatedReplicas"), 7 => IntOrUnset("readyReplicas"),
    4 => IntOrUnset("availableReplicas"), 5 => IntOrUnset("unavailableReplicas"), 9 => Int("terminatingReplicas"),
    8 => Int("collisionCount"));

schema!(Pod, 1 => Message("metadata", &ObjectMeta), 2 => Message("spec", &PodSpec), 3 => Message("status", &PodStatus));
schema!(PodStatus,
    17 => IntOrUnset("observedGeneration"), 1 => Str("phase"), 3 => Str("message"), 4 => Str("reason"),
    11 => Str("nominatedNodeName"), 5 => Str("hostIP"), 6 => Str("podIP"), 9 => Str("qosClass"));
schema!(PodTemplateSpec, 1 => Message("metadata", &ObjectMeta), 2 => Message("spec", &PodSpec));
schema!(PodSpec,
    1 => Messages("volumes", &Volume), 20 => Messages("initContainers", &Container), 2 => Messages("containers", &Container),
    3 => Str("restartPolicy"), 4 => Int("terminationGracePeriodSeconds"), 5 => Int("activeDeadlineSeconds"),
    6 => Str("dnsPolicy"), 7 => StringMap("nodeSelector"), 8 => Str("serviceAccountName"), 9 => Str("serviceAccount"),
    21 => Bool("automountServiceAccountToken"), 10 => Str("nodeName"), 11 => Bool("hostNetwork"), 12 => Bool("hostPID"),
    13 => Bool("hostIPC"), 27 => Bool("shareProcessNamespace"), 14 => Message("securityContext", &PodSecurityContext),
    15 => Messages("imagePullSecrets", &LocalObjectReference), 16 => Str("hostname"), 17 => Str("subdomain"),
    19 => Str("schedulerName"), 22 => Messages("tolerations", &Toleration), 24 => Str("priorityClassName"),
    25 => Int("priority"), 30 => Bool("enableServiceLinks"), 31 => Str("preemptionPolicy"),
    35 => Bool("setHostnameAsFQDN"), 37 => Bool("hostUsers"));
schema!(PodSecurityContext,
    2 => Int("runAsUser"), 6 => Int("runAsGroup"), 3 => Bool("runAsNonRoot"), 4 => Ints("supplementalGroups"),
    12 => Str("supplementalGroupsPolicy"), 5 => Int("fsGroup"), 7 => Messages("sysctls", &Sysctl),
    9 => Str("fsGroupChangePolicy"), 10 => Message("seccompProfile", &SeccompProfile));
schema!(Sysctl, 1 => Str("name"), 2 => Str("value"));
schema!(SeccompProfile, 1 => Str("type"), 2 => Str("localhostProfile"));
schema!(Toleration, 1 => Str("key"), 2 => Str("operator"), 3 => Str("value"), 4 => Str("effect"), 5 => Int("tolerationSeconds"));
schema!(Container,
    1 => Str("name"), 2 => Str("image"), 3 => Strings("command"), 4 => Strings("args"), 5 => Str("workingDir"),
    6 => Messages("ports", &ContainerPort), 19 => Messages("envFrom", &EnvFromSource), 7 => Messages("env", &EnvVar),
    8 => Message("resources", &ResourceRequirements), 24 => Str("restartPolicy"),
    9 => Messages("volumeMounts", &VolumeMount), 10 => Message("livenessProbe", &Probe),
    11 => Message("readinessProbe", &Probe), 22 => Message("startupProbe", &Probe),
    13 => Str("terminationMessagePath"), 20 => Str("terminationMessagePolicy"), 14 => Str("imagePullPolicy"),
    15 => Message("securityContext", &SecurityContext), 16 => Bool("stdin"), 17 => Bool("stdinOnce"), 18 => Bool("tty"));
schema!(ContainerPort,
    1 => Str("name"), 2 => IntOrUnset("hostPort"), 3 => Int("containerPort"), 4 => Str("protocol"), 5 => Str("hostIP"));
schema!(EnvVar, 1 => Str("name"), 2 => Str("value"), 3 => Message("valueFrom", &EnvVarSource));
schema!(EnvVarSource,
    1 => Message("fieldRef", &ObjectFieldSelector), 2 => Message("resourceFieldRef", &ResourceFieldSelector),
    3 => Message("configMapKeyRef", &KeySelector), 4 => Message("secretKeyRef", &KeySelector));
schema!(ObjectFieldSelector, 1 => Str("apiVersion"), 2 => Str("fieldPath"));
schema!(ResourceFieldSelector, 1 => Str("containerName"), 2 => Str("resource"), 3 => Quantity("divisor"));
schema!(KeySelector, 1 => Inline(&LocalObjectReference), 2 => Str("key"), 3 => Bool("optional"));
schema!(EnvFromSource, 1 => Str("prefix"), 2 => Message("configMapRef", &EnvSource), 3 => Message("secretRef", &EnvSource));
schema!(EnvSource, 1 => Inline(&LocalObjectReference), 2 => Bool("optional"));
schema!(ResourceRequirements, 1 => QuantityMap("limits"), 2 => QuantityMap("requests"));
schema!(VolumeMount,
    1 => Str("name"), 2 => Bool("readOnly"), 7 => Str("recursiveReadOnly"), 3 => Str("mountPath"), 4 => Str("subPath"),
    5 => Str("mountPropagation"), 6 => Str("subPathExpr"));
schema!(Volume, 1 => Str("name"), 2 => Inline(&VolumeSource));
schema!(VolumeSource,
    1 => Message("hostPath", &HostPathVolumeSource), 2 => Message("emptyDir", &EmptyDirVolumeSource),
    6 => Message("secret", &SecretVolumeSource), 19 => Message("configMap", &ConfigMapVolumeSource));
schema!(HostPathVolumeSource, 1 => Str("path"), 2 => Str("type"));
schema!(EmptyDirVolumeSource, 1 => Str("medium"), 2 => Quantity("sizeLimit"));
schema!(SecretVolumeSource,
    1 => Str("secretName"), 2 => Messages("items", &KeyToPath), 3 => Int("defaultMode"), 4 => Bool("optional"));
schema!(ConfigMapVolumeSource,
    1 => Inline(&LocalObjectReference), 2 => Messages("items", &KeyToPath), 3 => Int("defaultMode"), 4 => Bool("optional"));
schema!(KeyToPath, 1 => Str("key"), 2 => Str("path"), 3 => Int("mode"));
schema!(Probe,
    1 => Inline(&ProbeHandler), 2 => IntOrUnset("initialDelaySeconds"), 3 => IntOrUnset("timeoutSeconds"), 4 => IntOrUnset("periodSeconds"),
    5 => IntOrUnset("successThreshold"), 6 => IntOrUnset("failureThreshold"), 7 => Int("terminationGracePeriodSeconds"));
schema!(ProbeHandler,
    1 => Message("exec", &ExecAction), 2 => Message("httpGet", &HTTPGetAction), 3 => Message("tcpSocket", &TCPSocketAction),
    4 => Message("grpc", &GRPCAction));
schema!(ExecAction, 1 => Strings("command"));
schema!(HTTPGetAction,
    1 => Str("path"), 2 => IntOrString("port"), 3 => Str("host"), 4 => Str("scheme"), 5 => Messages("httpHeaders", &HTTPHeader));
schema!(HTTPHeader, 1 => Str("name"), 2 => Str("value"));
schema!(TCPSocketAction, 1 => IntOrString("port"), 2 => Str("host"));
schema!(GRPCAction, 1 => Int("port"), 2 => Str("service"));
schema!(SecurityContext,
    1 => Message("capabilities", &Capabilities), 2 => Bool("privileged"), 4 => Int("runAsUser"), 8 => Int("runAsGroup"),
    5 => Bool("runAsNonRoot"), 6 => Bool("readOnlyRootFilesystem"), 7 => Bool("allowPrivilegeEscalation"),
    9 => Str("procMount"), 11 => Message("seccompProfile", &SeccompProfile));
schema!(Capabilities, 1 => Strings("add"), 2 => Strings("drop"));

/// The kinds whose protobuf bodies we read.
fn schema(kind: &str) -> Option<&'static Schema> {
    Some(match kind {
        "Namespace" => &Namespace,
        "ConfigMap" => &ConfigMap,
        "Secret" => &Secret,
        "ServiceAccount" => &ServiceAccount,
        "Service" => &Service,
        "Pod" => &Pod,
        "Deployment" => &Deployment,
        _ => return None,
    })
}

/// A protobuf body as the JSON object it encodes.
pub fn decode(body: &[u8], kind: &str) -> Result<Value, ApiError> {
    let bad = |what: &str| ApiError::bad_request(format!("the protobuf body is malformed: {what}"));
    let unknown = body.strip_prefix(MAGIC).ok_or_else(|| bad("no k8s envelope"))?;
    let (mut api_version, mut body_kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (number, value) in fields(unknown).map_err(|e| bad(&e))? {
        match (number, value) {
            (1, Wire::Bytes(type_meta)) => {
                for (n, v) in fields(type_meta).map_err(|e| bad(&e))? {
                    match (n, v) {
                        (1, Wire::Bytes(s)) => api_version = String::from_utf8_lossy(s).into(),
                        (2, Wire::Bytes(s)) => body_kind = String::from_utf8_lossy(s).into(),
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(bytes)) => raw = bytes,
            _ => {}
        }
    }
    let kind = if body_kind.is_empty() { kind.to_string() } else { body_kind };
    let schema = schema(&kind).ok_or_else(|| {
        ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf for {kind} (read for Namespace, ConfigMap, Secret, ServiceAccount, \
             Service, Pod and Deployment; send JSON)"
        ))
    })?;
    let mut object = message(raw, schema).map_err(|e| match e {
        Malformed::Unread { message, number } => ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf with field {number} of {message}, which podctl does not read from \
             protobuf (send JSON: kubectl create --dry-run=client -o yaml | kubectl apply -f -)"
        )),
        Malformed::Bad(what) => bad(&what),
    })?;
    object.insert("apiVersion".into(), api_version.into());
    object.insert("kind".into(), kind.into());
    Ok(Value::Object(object))
}

/// Why a message could not be read.
enum Malformed {
    Bad(String),
    /// A field the schema does not list: refused rather than dropped.
    Unread {
        message: &'static str,
        number: u32,
    },
}

impl From<String> for Malformed {
    fn from(what: String) -> Malformed {
        Malformed::Bad(what)
    }
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

fn varint(data: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data.get(*at).ok_or("truncated varint")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long".into())
}

fn fields(data: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, String> {
    let (mut out, mut at) = (Vec::new(), 0);
    while at < data.len() {
        let key = varint(data, &mut at)?;
        let number = (key >> 3) as u32;
        let value = match key & 7 {
            0 => Wire::Varint(varint(data, &mut at)?),
            2 => {
                let len = varint(data, &mut at)? as usize;
                let end = at.checked_add(len).filter(|e| *e <= data.len()).ok_or("truncated field")?;
                let bytes = &data[at..end];
                at = end;
                Wire::Bytes(bytes)
            }
            1 => {
                at += 8;
                Wire::Other
            }
            5 => {
                at += 4;
                Wire::Other
            }
            other => return Err(format!("wire type {other}")),
        };
        if at > data.len() {
            return Err("truncated field".into());
        }
        out.push((number, value));
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
}

fn message(data: &[u8], schema: &Schema) -> Result<Map<String, Value>, Malformed> {
    let mut object = Map::new();
    read_into(&mut object, data, schema)?;
    Ok(object)
}

fn read_into(object: &mut Map<String, Value>, data: &[u8], schema: &Schema) -> Result<(), Malformed> {
    for (number, value) in fields(data)? {
        let Some(&(_, field)) = schema.fields.iter().find(|(n, _)| *n == number) else {
            return Err(Malformed::Unread { message: schema.name, number });
        };
        let wrong_wire = || Malformed::Bad(format!("field {number} of {} has the wrong wire type", schema.name));
        match (field, value) {
            (Str(name), Wire::Bytes(b)) => {
                let s = text(b)?;
                if !s.is_empty() {
                    object.insert(name.into(), s.into());
                }
            }
            (Int(name), Wire::Varint(v)) => {
                object.insert(name.into(), (v as i64).into());
            }
            (IntOrUnset(name), Wire::Varint(v)) => {
                if v != 0 {
                    object.insert(name.into(), (v as i64).into());
                }
            }
            (Bool(name), Wire::Varint(v)) => {
                object.insert(name.into(), (v != 0).into());
            }
            (Strings(name), Wire::Bytes(b)) => push(object, name, text(b)?.into()),
            (Ints(name), Wire::Varint(v)) => push(object, name, (v as i64).into()),
            (Ints(name), Wire::Bytes(packed)) => {
                let mut at = 0;
                while at < packed.len() {
                    push(object, name, (varint(packed, &mut at)? as i64).into());
                }
            }
            (StringMap(name) | BytesMap(name) | QuantityMap(name), Wire::Bytes(entry)) => {
                let (mut key, mut val) = (String::new(), &[][..]);
                for (n, v) in fields(entry)? {
                    match (n, v) {
                        (1, Wire::Bytes(k)) => key = text(k)?,
                        (2, Wire::Bytes(v)) => val = v,
                        _ => return Err(wrong_wire()),
                    }
                }
                let val: Value = match field {
                    BytesMap(_) => base64(val).into(),
                    QuantityMap(_) => quantity(val)?,
                    _ => text(val)?.into(),
                };
                let map = object.entry(name).or_insert_with(|| Value::Object(Map::new()));
                map.as_object_mut().expect("a map").insert(key, val);
            }
            (Quantity(name), Wire::Bytes(b)) => {
                object.insert(name.into(), quantity(b)?);
            }
            (IntOrString(name), Wire::Bytes(b)) => {
                let (mut is_string, mut int, mut string) = (false, 0i64, String::new());
                for (n, v) in fields(b)? {
                    match (n, v) {
                        (1, Wire::Varint(t)) => is_string = t == 1,
                        (2, Wire::Varint(i)) => int = i64::from(i as i32),
                        (3, Wire::Bytes(s)) => string = text(s)?,
                        _ => return Err(wrong_wire()),
                    }
                }
                object.insert(name.into(), if is_string { string.into() } else { int.into() });
            }
            (Time(name), Wire::Bytes(b)) => {
                let mut seconds = 0i64;
                for (n, v) in fields(b)? {
                    if let (1, Wire::Varint(s)) = (n, v) {
                        seconds = s as i64;
                    }
                }
                // Go's zero time.Time, 0001-01-01T00:00:00Z.
                if seconds != -62_135_596_800 {
                    object.insert(name.into(), super::objects::rfc3339(seconds).into());
                }
            }
            (Message(name, inner), Wire::Bytes(b)) => {
                object.insert(name.into(), Value::Object(message(b, inner)?));
            }
            (Messages(name, inner), Wire::Bytes(b)) => push(object, name, Value::Object(message(b, inner)?)),
            (Inline(inner), Wire::Bytes(b)) => read_into(object, b, inner)?,
            _ => return Err(wrong_wire()),
        }
    }
    Ok(())
}

fn push(object: &mut Map<String, Value>, name: &str, value: Value) {
    let list = object.entry(name).or_insert_with(|| Value::Array(vec![]));
    list.as_array_mut().expect("a list").push(value);
}

/// resource.Quantity { string string = 1 } as JSON's string.
fn quantity(data: &[u8]) -> Result<Value, Malformed> {
    let mut value = String::new();
    for (n, v) in fields(data)? {
        match (n, v) {
            (1, Wire::Bytes(s)) => value = text(s)?,
            _ => return Err(Malformed::Bad("a Quantity has an unknown field".into())),
        }
    }
    Ok(value.into())
}

/// A length-delimited field (wire type 2): what the few protobuf documents we write are
/// made of.
pub fn encode_field(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = encode_varint(u64::from(number << 3 | 2));
    out.extend(encode_varint(bytes.len() as u64));
    out.extend_from_slice(bytes);
    out
}

fn encode_varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(number: u32, bytes: &[u8]) -> Vec<u8> {
        encode_field(number, bytes)
    }

    #[test]
    fn decodes_what_kubectl_create_secret_sends() {
        let type_meta = [field(1, b"v1"), field(2, b"Secret")].concat();
        let labels = [field(1, b"app"), field(2, b"web")].concat();
        let meta = [field(1, b"creds"), field(11, &labels)].concat();
        let data = [field(1, b"password"), field(2, b"s3cret")].concat();
        let secret = [field(1, &meta), field(2, &data), field(3, b"Opaque")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &secret)].concat();
        assert_eq!(
            decode(&body, "Secret").unwrap(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "labels": {"app": "web"}},
                   "data": {"password": "czNjcmV0"}, "type": "Opaque"})
        );
        assert_eq!(decode(&body[..body.len() - 3], "Secret").unwrap_err().code, 400);
        let lease =
            [MAGIC.to_vec(), field(1, &[field(1, b"coordination.k8s.io/v1"), field(2, b"Lease")].concat())].concat();
        assert_eq!(decode(&lease, "Lease").unwrap_err().code, 415);
    }

    fn varint_field(number: u32, value: u64) -> Vec<u8> {
        [encode_varint(u64::from(number << 3)), encode_varint(value)].concat()
    }

    /// As Go marshals what `kubectl create deployment web --image=nginx --port=80` makes:
    /// empty strings, an unset hostPort and the zero creationTimestamp included, `replicas`
    /// set to 0.
    #[test]
    fn decodes_a_deployment_as_go_marshals_it() {
        let labels = [field(1, b"app"), field(2, b"web")].concat();
        let zero_time = varint_field(1, -62_135_596_800i64 as u64);
        let meta = [field(1, b"web"), field(2, b""), field(11, &labels), field(8, &zero_time)].concat();
        let quantity = field(1, b"100m");
        let limits = [field(1, b"cpu"), field(2, &quantity)].concat();
        let port = [varint_field(2, 0), varint_field(3, 80), field(4, b"TCP")].concat();
        let container =
            [field(1, b"nginx"), field(2, b"nginx"), field(6, &port), field(8, &field(1, &limits))].concat();
        let template =
            [field(1, &[field(11, &labels), field(8, &zero_time)].concat()), field(2, &field(2, &container))].concat();
        let surge = [varint_field(1, 1), field(3, b"25%")].concat();
        let strategy = [field(1, b"RollingUpdate"), field(2, &field(2, &surge))].concat();
        let spec =
            [varint_field(1, 0), field(2, &field(1, &labels)), field(3, &template), field(4, &strategy)].concat();
        let deployment = [field(1, &meta), field(2, &spec), field(3, b"")].concat();
        let type_meta = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &deployment)].concat();
        assert_eq!(
            decode(&body, "Deployment").unwrap(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "labels": {"app": "web"}},
                   "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}},
                                         "spec": {"containers": [{"name": "nginx", "image": "nginx",
                                                  "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                                  "resources": {"limits": {"cpu": "100m"}}}]}},
                            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}},
                   "status": {}})
        );
        // A field the tables do not list is refused with its place, never dropped.
        let affinity =
            [field(1, &meta), field(2, &[field(3, &[field(2, &field(18, b""))].concat())].concat())].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &affinity)].concat();
        let err = decode(&body, "Deployment").unwrap_err();
        assert_eq!(err.code, 415);
        assert!(err.message.contains("field 18 of PodSpec"), "{}", err.message);
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"s3cret"), "czNjcmV0");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
