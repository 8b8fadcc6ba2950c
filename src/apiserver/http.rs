//! The REST surface: URL → resource, method → verb, and the verbs on the store. Errors
//! leave as `metav1.Status`; nothing is written unless the whole object was accepted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{Mutex, broadcast, mpsc};

use super::discovery;
use super::errors::ApiError;
use super::node_proxy;
use super::objects::{self, Validation, prepare_create, prepare_update};
use super::patch::{self, PatchType};
use super::resources::Resource;
use super::selectors::Selector;
use super::services::Allocator;
use super::store::{Event, EventKind, KeyValue, Page, Store, StoreError};
use super::table;

/// Bodies larger than this are refused (kube-apiserver's limit is 3 MiB).
pub const MAX_BODY: usize = 3 << 20;
/// How long a request's body may take to arrive (kube-apiserver's request timeout).
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Server {
    pub store: Arc<dyn Store>,
    /// Bearer tokens accepted; `None`: no authentication.
    pub tokens: Option<HashSet<String>>,
    pub allocator: Allocator,
    /// How the server reaches nodes' endpoints (logs, exec): TLS with its client
    /// certificate.
    pub nodes: tokio_rustls::TlsConnector,
    /// Serialises the writes that read before they write (allocations, namespace checks).
    pub writes: Mutex<()>,
}

pub type Shared = Arc<Server>;

fn json_response(code: u16, value: &Value) -> Response {
    bytes_response(code, "application/json", serde_json::to_vec(value).expect("JSON values serialise"))
}

fn bytes_response(code: u16, content_type: &'static str, body: Vec<u8>) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .expect("valid response")
}

fn with_content_type(mut response: Response, content_type: &'static str) -> Response {
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status())
}

pub async fn handle(State(server): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // kube-apiserver answers its health checks and version to anyone
    // (system:public-info-viewer).
    let public = parts.method == Method::GET
        && ["/healthz", "/livez", "/readyz", "/version"]
            .iter()
            .any(|p| parts.uri.path() == *p || parts.uri.path().starts_with(&format!("{p}/")));
    if !public && !crate::tokens::admits(server.tokens.as_ref(), &parts.headers) {
        return error_response(&ApiError::unauthorized());
    }
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return error_response(&ApiError::too_large(MAX_BODY)),
        Err(_) => return error_response(&ApiError::timeout("the request's body did not come in time")),
    };
    let query = Query::parse(parts.uri.query().unwrap_or(""));
    if let Some(stream) = node_proxy::NodeStream::of(parts.uri.path()) {
        return node_proxy::proxy(&server, stream, &query, parts).await.unwrap_or_else(|e| error_response(&e));
    }
    match route(&server, &parts.method, parts.uri.path(), &query, &parts.headers, body).await {
        Ok(response) => response,
        Err(e) => error_response(&e),
    }
}

/// The unknown fields dropped from a written object go back as `Warning` headers (unless
/// `fieldValidation=Ignore`), which kubectl prints.
fn warned(mut response: Response, validation: &Validation) -> Response {
    for field in validation.warnings() {
        let warning = format!("299 - \"unknown field \\\"{field}\\\"\"");
        if let Ok(value) = axum::http::HeaderValue::from_str(&warning) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// The query parameters we act on.
#[derive(Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: &str) -> Query {
        Query(form_urlencoded::parse(raw.as_bytes()).into_owned().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// Where a request points in the resource space.
pub struct Target {
    resource: &'static Resource,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

async fn route(
    server: &Shared,
    method: &Method,
    path: &str,
    query: &Query,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let get_only = |value: Option<Value>| -> Result<Response, ApiError> {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(method.as_str()));
        }
        value.map(|v| json_response(200, &v)).ok_or_else(|| ApiError::no_route(path))
    };
    let (group, version, rest): (&str, &str, &[&str]) = match segments.as_slice() {
        ["version"] => return get_only(Some(discovery::version())),
        ["healthz" | "readyz" | "livez"] => {
            return Ok(Response::builder().status(200).body(Body::from("ok")).expect("valid response"));
        }
        ["api" | "apis"] if discovery::wants_aggregated(accept) => {
            return get_only(Some(discovery::aggregated(segments[0] == "api")))
                .map(|response| with_content_type(response, discovery::AGGREGATED));
        }
        ["api"] => return get_only(Some(discovery::api_versions())),
        ["apis"] => return get_only(Some(discovery::api_groups())),
        ["apis", group] => return get_only(discovery::api_group(group)),
        ["openapi", "v2"] if accept.contains(discovery::OPENAPI_V2_PROTOBUF) && method == Method::GET => {
            // As kube-apiserver answers it: Go's mime parser refuses the `@` of the Accept value.
            return Ok(bytes_response(200, "application/octet-stream", discovery::openapi_v2_protobuf()));
        }
        ["openapi", "v2"] => return get_only(Some(discovery::openapi_v2())),
        ["openapi", "v3"] => return get_only(Some(discovery::openapi_v3_index())),
        ["openapi", "v3", "api", version] => return get_only(discovery::openapi_v3("", version)),
        ["openapi", "v3", "apis", group, version] => return get_only(discovery::openapi_v3(group, version)),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    if rest.is_empty() {
        return get_only(discovery::resource_list(group, version));
    }
    let target = resolve(group, version, rest).ok_or_else(|| ApiError::no_route(path))?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let as_table = table::wanted(accept);
    let kind = target.resource.kind;
    let mut validation = Validation::from_query(query.get("fieldValidation"));
    let validation = &mut validation;
    match (method, &target.name, target.subresource.as_deref()) {
        (&Method::GET, None, None) if query.flag("watch") => watch(server, &target, query, as_table),
        (&Method::GET, None, None) if !as_table && selector(&target, query)?.is_empty() => {
            Ok(bytes_response(200, "application/json", list_unfiltered(server, &target, query)?))
        }
        (&Method::GET, None, None) => {
            let listed = list(server, &target, query)?;
            if !as_table {
                return Ok(json_response(200, &listed));
            }
            let items = listed["items"].as_array().cloned().unwrap_or_default();
            let version = listed["metadata"]["resourceVersion"].as_str().unwrap_or("");
            Ok(json_response(200, &table::render(kind, &items, version, listed["metadata"].get("continue"))))
        }
        (&Method::POST, None, None) => {
            let object = decode(&body, content_type, target.resource.kind)?;
            let (code, made) = create(server, &target, object, query, validation).await?;
            Ok(warned(json_response(code, &made), validation))
        }
        (&Method::DELETE, None, None) => {
            delete_collection(server, &target, query).await.map(|v| json_response(200, &v))
        }
        (&Method::GET, Some(name), None | Some("status")) => {
            let object = get(server, &target, name)?;
            if !as_table {
                return Ok(json_response(200, &object));
            }
            let version = object["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
            Ok(json_response(200, &table::render(kind, &[object], &version, None)))
        }
        (&Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            let object = decode(&body, content_type, target.resource.kind)?;
            let written = update(server, &target, name, sub, |_| Ok(object), query, validation).await?;
            Ok(warned(json_response(200, &written), validation))
        }
        (&Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            let kind = PatchType::from_content_type(content_type)?;
            let patch: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the patch is not JSON: {e}")))?;
            let patcher = move |current: &Value| patch::apply(current, &patch, kind);
            let written = update(server, &target, name, sub, patcher, query, validation).await?;
            Ok(warned(json_response(200, &written), validation))
        }
        (&Method::DELETE, Some(name), None) => {
            let options = if body.is_empty() { json!({}) } else { decode(&body, content_type, target.resource.kind)? };
            delete(server, &target, name, &options, query).await.map(|(code, v)| json_response(code, &v))
        }
        (&Method::POST, Some(name), Some("binding")) if target.resource.kind == "Pod" => {
            let binding = decode(&body, content_type, target.resource.kind)?;
            let node = binding["target"]["name"].as_str().unwrap_or_default().to_string();
            if node.is_empty() {
                return Err(ApiError::invalid("Binding", name, vec![("target.name".into(), "Required value".into())]));
            }
            let bind = move |current: &Value| {
                if current["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()) {
                    return Err(ApiError::conflict("pods/binding", current["metadata"]["name"].as_str().unwrap_or("")));
                }
                let mut pod = current.clone();
                pod["spec"]["nodeName"] = node.clone().into();
                Ok(pod)
            };
            update(server, &target, name, None, bind, query, validation).await?;
            Ok(json_response(
                201,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        (&Method::GET, Some(name), Some("scale")) => {
            get(server, &target, name).map(|v| json_response(200, &scale_of(&v)))
        }
        (&Method::PUT | &Method::PATCH, Some(name), Some("scale")) => {
            let given = if method == Method::PUT {
                decode(&body, content_type, target.resource.kind)?
            } else {
                let kind = PatchType::from_content_type(content_type)?;
                let patch: Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("the patch is not JSON: {e}")))?;
                patch::apply(&scale_of(&get(server, &target, name)?), &patch, kind)?
            };
            let replicas = given["spec"]["replicas"].as_i64().filter(|r| *r >= 0).ok_or_else(|| {
                ApiError::invalid(
                    "Scale",
                    name,
                    vec![("spec.replicas".into(), "Invalid value: must be a non-negative integer".into())],
                )
            })?;
            let rescale = move |current: &Value| {
                let mut object = current.clone();
                object["spec"]["replicas"] = replicas.into();
                Ok(object)
            };
            update(server, &target, name, None, rescale, query, validation)
                .await
                .map(|v| json_response(200, &scale_of(&v)))
        }
        _ => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

impl Target {
    /// A cluster-scoped resource's collection.
    pub fn cluster(resource: &'static Resource) -> Target {
        Target { resource, namespace: None, name: None, subresource: None }
    }
}

/// Creates `object` as a POST to `target` would, without a request around it.
pub async fn create_object(server: &Shared, target: &Target, object: Value) -> Result<Value, ApiError> {
    create(server, target, object, &Query::default(), &mut Validation::from_query(None)).await.map(|(_, object)| object)
}

fn resolve(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let find = |plural: &str| Resource::find(group, version, plural);
    let target = |resource, namespace: Option<&str>, name: Option<&&str>, sub: Option<&&str>| Target {
        resource,
        namespace: namespace.map(String::from),
        name: name.map(|n| n.to_string()),
        subresource: sub.map(|s| s.to_string()),
    };
    match rest {
        ["namespaces", ns, plural, more @ ..] if find(plural).is_some_and(|r| r.namespaced) && more.len() <= 2 => {
            Some(target(find(plural)?, Some(ns), more.first(), more.get(1)))
        }
        [plural, more @ ..] if more.len() <= 2 => {
            let resource = find(plural)?;
            if resource.namespaced && !more.is_empty() {
                return None;
            }
            Some(target(resource, None, more.first(), more.get(1)))
        }
        _ => None,
    }
}

fn decode(body: &[u8], content_type: &str, kind: &str) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/vnd.kubernetes.protobuf" => super::protobuf::decode(body, kind),
        "application/json" | "" | "*/*" => {
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
        }
        "application/yaml" => {
            let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
            serde_saphyr::from_str(text).map_err(|e| ApiError::bad_request(format!("the body is not valid YAML: {e}")))
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// The stored bytes as the object clients see, with its resourceVersion.
fn decode_stored(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut object: Value =
        serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(format!("stored object: {e}")))?;
    object["metadata"]["resourceVersion"] = kv.mod_revision.to_string().into();
    Ok(object)
}

fn encode(object: &Value) -> Vec<u8> {
    let mut stored = object.clone();
    if let Some(meta) = stored["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&stored).expect("JSON values serialise")
}

fn store_error<'a>(target: &'a Target, name: &'a str) -> impl Fn(StoreError) -> ApiError + 'a {
    move |e| ApiError::from_store(e, target.resource.plural, name)
}

/// The object `name` as stored, and as clients see it.
fn read(server: &Shared, target: &Target, name: &str) -> Result<(KeyValue, Value), ApiError> {
    let key = target.resource.key(target.namespace.as_deref(), name);
    let kv = server
        .store
        .get(&key)
        .map_err(store_error(target, name))?
        .ok_or_else(|| ApiError::not_found(target.resource.plural, name))?;
    let object = decode_stored(&kv)?;
    Ok((kv, object))
}

fn get(server: &Shared, target: &Target, name: &str) -> Result<Value, ApiError> {
    read(server, target, name).map(|(_, object)| object)
}

/// An object by name, as a GET would answer it.
pub fn get_object(
    server: &Shared,
    resource: &'static Resource,
    namespace: Option<&str>,
    name: &str,
) -> Result<Value, ApiError> {
    let target =
        Target { resource, namespace: namespace.map(String::from), name: Some(name.into()), subresource: None };
    get(server, &target, name)
}

fn selector(target: &Target, query: &Query) -> Result<Selector, ApiError> {
    Selector::parse(query.get("labelSelector"), query.get("fieldSelector"), target.resource.kind)
}

/// The page of stored objects a list asks for (`limit`, `continue`), and the list's
/// metadata: the revision read at, and the token for the next page if there is one.
fn read_page(server: &Shared, target: &Target, query: &Query) -> Result<(Page, Value), ApiError> {
    let prefix = target.resource.prefix(target.namespace.as_deref());
    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
    let start_after = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(continue_key(token, &prefix)?),
        None => None,
    };
    let page = server.store.list(&prefix, start_after.as_deref(), limit).map_err(store_error(target, ""))?;
    let mut metadata = json!({"resourceVersion": page.revision.to_string()});
    if page.more
        && let Some(last) = page.items.last()
    {
        metadata["continue"] = hex(last.key.as_bytes()).into();
    }
    Ok((page, metadata))
}

fn list(server: &Shared, target: &Target, query: &Query) -> Result<Value, ApiError> {
    let selector = selector(target, query)?;
    let (page, metadata) = read_page(server, target, query)?;
    let mut items = Vec::with_capacity(page.items.len());
    for kv in &page.items {
        let object = decode_stored(kv)?;
        if selector.matches(&object) {
            items.push(object);
        }
    }
    Ok(json!({
        "kind": format!("{}List", target.resource.kind),
        "apiVersion": target.resource.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}

/// A list with no selector, written straight from the stored bytes: each object gets its
/// resourceVersion spliced in rather than being parsed and written again (the cost of a
/// list of many objects is otherwise mostly JSON round trips).
fn list_unfiltered(server: &Shared, target: &Target, query: &Query) -> Result<Vec<u8>, ApiError> {
    let (page, metadata) = read_page(server, target, query)?;
    let size: usize = page.items.iter().map(|kv| kv.value.len() + 32).sum();
    let mut out = Vec::with_capacity(size + 256);
    out.extend_from_slice(
        format!(
            r#"{{"kind":"{}List","apiVersion":"{}","metadata":{metadata},"items":["#,
            target.resource.kind,
            target.resource.api_version()
        )
        .as_bytes(),
    );
    for (i, kv) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        splice_resource_version(&mut out, &kv.value, kv.mod_revision)?;
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// Appends stored object `value` with `"resourceVersion"` first in its metadata. Objects
/// are stored by serde_json with sorted keys, so the first `"metadata":{` is the object's
/// own (apiVersion and kind come before it and cannot hold it unescaped).
fn splice_resource_version(out: &mut Vec<u8>, value: &[u8], revision: i64) -> Result<(), ApiError> {
    const KEY: &[u8] = b"\"metadata\":{";
    let at = value
        .windows(KEY.len())
        .position(|w| w == KEY)
        .ok_or_else(|| ApiError::internal("stored object without metadata"))?
        + KEY.len();
    out.extend_from_slice(&value[..at]);
    out.extend_from_slice(format!("\"resourceVersion\":\"{revision}\"").as_bytes());
    if value.get(at) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(&value[at..]);
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn continue_key(token: &str, prefix: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request("invalid continue token");
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    let key = String::from_utf8(bytes).map_err(|_| bad())?;
    if key.starts_with(prefix) { Ok(key) } else { Err(bad()) }
}

async fn create(
    server: &Shared,
    target: &Target,
    object: Value,
    query: &Query,
    validation: &mut Validation,
) -> Result<(u16, Value), ApiError> {
    let object = prepare_create(target.resource, target.namespace.as_deref(), object, validation)?;
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let _writes = server.writes.lock().await;
    if let Some(ns) = &target.namespace
        && target.resource.namespaced
        && server
            .store
            .get(&Resource::find("", "v1", "namespaces").expect("namespaces").key(None, ns))
            .map_err(store_error(target, &name))?
            .is_none()
    {
        return Err(ApiError::not_found("namespaces", ns));
    }
    let object = match target.resource.kind {
        "Service" => server.allocator.allocate(&*server.store, object)?,
        "Namespace" => with_namespace_defaults(object),
        "Pod" => with_pod_defaults(object),
        _ => object,
    };
    if query.get("dryRun") == Some("All") {
        return Ok((201, object));
    }
    let key = target.resource.key(target.namespace.as_deref(), &name);
    let revision = server.store.create(&key, &encode(&object)).map_err(store_error(target, &name))?;
    if target.resource.kind == "Namespace" {
        create_default_service_account(server, &name)?;
    }
    let mut object = object;
    object["metadata"]["resourceVersion"] = revision.to_string().into();
    Ok((201, object))
}

fn with_namespace_defaults(mut namespace: Value) -> Value {
    namespace["spec"]["finalizers"] = json!(["kubernetes"]);
    namespace["status"] = json!({"phase": "Active"});
    namespace
}

fn with_pod_defaults(mut pod: Value) -> Value {
    let spec = &mut pod["spec"];
    for (field, value) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("schedulerName", json!("default-scheduler")),
        ("serviceAccountName", json!("default")),
        ("securityContext", json!({})),
    ] {
        if spec.get(field).is_none_or(Value::is_null) {
            spec[field] = value;
        }
    }
    for list in ["initContainers", "containers"] {
        for container in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            if container.get("imagePullPolicy").is_none_or(Value::is_null) {
                let latest =
                    container["image"].as_str().is_some_and(|i| !i.rsplit('/').next().unwrap_or("").contains(':'));
                container["imagePullPolicy"] = if latest { "Always" } else { "IfNotPresent" }.into();
            }
            for (field, value) in
                [("terminationMessagePath", "/dev/termination-log"), ("terminationMessagePolicy", "File")]
            {
                if container.get(field).is_none() {
                    container[field] = value.into();
                }
            }
        }
    }
    if pod.get("status").is_none_or(Value::is_null) {
        pod["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
    }
    pod
}

fn create_default_service_account(server: &Shared, namespace: &str) -> Result<(), ApiError> {
    let accounts = Resource::find("", "v1", "serviceaccounts").expect("serviceaccounts");
    let account = prepare_create(
        accounts,
        Some(namespace),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
        &mut Validation::from_query(None),
    )?;
    match server.store.create(&accounts.key(Some(namespace), "default"), &encode(&account)) {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(ApiError::from_store(e, "serviceaccounts", "default")),
    }
}

/// Reads the object, lets `change` make the new one from it, and writes it if nothing
/// wrote in between (409 otherwise, or when the client's resourceVersion is stale).
async fn update(
    server: &Shared,
    target: &Target,
    name: &str,
    subresource: Option<&str>,
    change: impl FnOnce(&Value) -> Result<Value, ApiError>,
    query: &Query,
    validation: &mut Validation,
) -> Result<Value, ApiError> {
    let (current_kv, current) = read(server, target, name)?;
    let key = current_kv.key.clone();
    let mut next = change(&current)?;
    // The client's resourceVersion, if it sent one, must be the current one.
    let expected = match next["metadata"]["resourceVersion"].as_str().filter(|v| !v.is_empty()) {
        Some(v) => v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?,
        None => current_kv.mod_revision,
    };
    if expected != current_kv.mod_revision {
        return Err(ApiError::conflict(target.resource.plural, name));
    }
    match subresource {
        // Status writes change only the status; others leave it alone.
        Some("status") => {
            let status = next.get("status").cloned();
            next = current.clone();
            set_or_remove(&mut next, "status", status);
        }
        _ if target.resource.subresources.contains(&"status") => {
            set_or_remove(&mut next, "status", current.get("status").cloned())
        }
        _ => {}
    }
    let next = prepare_update(target.resource, &current, next, validation)?;
    if query.get("dryRun") == Some("All") {
        return Ok(next);
    }
    // Finalizers gone from an object being deleted: it goes now.
    let finished = next["metadata"].get("deletionTimestamp").is_some()
        && next["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty);
    if finished {
        server.store.delete(&key, Some(expected)).map_err(store_error(target, name))?;
        return Ok(next);
    }
    let revision = server.store.update(&key, &encode(&next), Some(expected)).map_err(store_error(target, name))?;
    let mut next = next;
    next["metadata"]["resourceVersion"] = revision.to_string().into();
    Ok(next)
}

fn set_or_remove(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(value) => map.insert(field.into(), value),
            None => map.remove(field),
        };
    }
}

/// Removes the object, or marks it for deletion when something must confirm first: its
/// finalizers, or, for a pod bound to a node, the node (which stops it, then deletes it
/// with a grace period of 0).
async fn delete(
    server: &Shared,
    target: &Target,
    name: &str,
    options: &Value,
    query: &Query,
) -> Result<(u16, Value), ApiError> {
    let (kv, object) = read(server, target, name)?;
    let key = kv.key;
    let grace =
        options["gracePeriodSeconds"].as_i64().or_else(|| query.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
    let has_finalizers = object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
    let bound_pod = target.resource.kind == "Pod" && object["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
    let graceful = has_finalizers || (bound_pod && grace != Some(0));
    if query.get("dryRun") == Some("All") {
        return Ok((200, object));
    }
    if graceful {
        if object["metadata"].get("deletionTimestamp").is_some() && !bound_pod {
            return Ok((202, object));
        }
        let mark = |current: &Value| {
            let mut marked = current.clone();
            if marked["metadata"].get("deletionTimestamp").is_none() {
                marked["metadata"]["deletionTimestamp"] = objects::now().into();
                let grace = grace.or(current["spec"]["terminationGracePeriodSeconds"].as_i64()).unwrap_or(30);
                marked["metadata"]["deletionGracePeriodSeconds"] = grace.into();
            }
            Ok(marked)
        };
        return update_marking(server, target, name, &object, mark).await.map(|v| (202, v));
    }
    if target.resource.kind == "Namespace" {
        delete_namespace_contents(server, name)?;
    }
    server.store.delete(&key, None).map_err(store_error(target, name))?;
    Ok((200, object))
}

/// Writes a deletion mark: the server's own metadata, so past prepare_update's guard.
async fn update_marking(
    server: &Shared,
    target: &Target,
    name: &str,
    current: &Value,
    mark: impl FnOnce(&Value) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    let key = target.resource.key(target.namespace.as_deref(), name);
    let expected = current["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok());
    let marked = mark(current)?;
    let revision = server.store.update(&key, &encode(&marked), expected).map_err(store_error(target, name))?;
    let mut marked = marked;
    marked["metadata"]["resourceVersion"] = revision.to_string().into();
    Ok(marked)
}

fn delete_namespace_contents(server: &Shared, namespace: &str) -> Result<(), ApiError> {
    for resource in super::resources::RESOURCES.iter().filter(|r| r.namespaced) {
        let page = server
            .store
            .list(&resource.prefix(Some(namespace)), None, 0)
            .map_err(|e| ApiError::from_store(e, resource.plural, ""))?;
        for kv in page.items {
            match server.store.delete(&kv.key, None) {
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(ApiError::from_store(e, resource.plural, &kv.key)),
            }
        }
    }
    Ok(())
}

async fn delete_collection(server: &Shared, target: &Target, query: &Query) -> Result<Value, ApiError> {
    let listed = list(server, target, query)?;
    let mut deleted = Vec::new();
    for object in listed["items"].as_array().into_iter().flatten() {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = object["metadata"]["namespace"].as_str().map(String::from);
        let one = Target { resource: target.resource, namespace, name: Some(name.into()), subresource: None };
        match delete(server, &one, name, &json!({}), query).await {
            Ok((_, object)) => deleted.push(object),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let mut result = listed;
    result["items"] = deleted.into();
    Ok(result)
}

fn scale_of(object: &Value) -> Value {
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"],
            "uid": object["metadata"]["uid"], "resourceVersion": object["metadata"]["resourceVersion"],
            "creationTimestamp": object["metadata"]["creationTimestamp"]
        },
        "spec": {"replicas": object["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": object["status"]["replicas"].as_i64().unwrap_or(0)}
    })
}

/// A watch: events after `resourceVersion` (or, without one, the current objects as
/// ADDED first), then each write as it commits, as JSON lines; ends after
/// `timeoutSeconds`, or with an ERROR event (410) when that history is compacted.
fn watch(server: &Shared, target: &Target, query: &Query, as_table: bool) -> Result<Response, ApiError> {
    let selector = selector(target, query)?;
    let prefix = target.resource.prefix(target.namespace.as_deref());
    let since = match query.get("resourceVersion").filter(|v| !v.is_empty() && *v != "0") {
        Some(v) => Some(v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?),
        None => None,
    };
    let current = server.store.revision().map_err(store_error(target, ""))?;
    if let Some(since) = since.filter(|since| *since > current) {
        return Err(ApiError::timeout(format!("Too large resource version: {since}, current: {current}")));
    }
    let timeout = Duration::from_secs(query.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(1800));
    let bookmarks = query.flag("allowWatchBookmarks");
    let kind = target.resource.kind;
    let api_version = target.resource.api_version();
    let store = server.store.clone();
    let (sender, receiver) = mpsc::channel::<Bytes>(256);
    // Subscribed before the catch-up reads, so no write falls between the two.
    let mut live = store.subscribe();
    tokio::spawn(async move {
        let send = |event: Value| {
            let sender = sender.clone();
            async move {
                let mut line = serde_json::to_vec(&event).expect("JSON values serialise");
                line.push(b'\n');
                sender.send(Bytes::from(line)).await.is_ok()
            }
        };
        let deliver = |event: &Event| -> Option<Value> {
            if !event.kv.key.starts_with(&prefix) {
                return None;
            }
            let mut object: Value = serde_json::from_slice(&event.kv.value).ok()?;
            object["metadata"]["resourceVersion"] = event.revision.to_string().into();
            if !selector.matches(&object) {
                return None;
            }
            if as_table {
                let version = event.revision.to_string();
                object = table::render(kind, &[object], &version, None);
            }
            let kind = match (&event.kind, event.created) {
                (EventKind::Delete, _) => "DELETED",
                (EventKind::Put, true) => "ADDED",
                (EventKind::Put, false) => "MODIFIED",
            };
            Some(json!({"type": kind, "object": object}))
        };
        let mut last = match since {
            Some(revision) => revision,
            None => match store.list(&prefix, None, 0) {
                Ok(page) => {
                    for kv in &page.items {
                        let Ok(mut object) = serde_json::from_slice::<Value>(&kv.value) else { continue };
                        object["metadata"]["resourceVersion"] = kv.mod_revision.to_string().into();
                        if !selector.matches(&object) {
                            continue;
                        }
                        if as_table {
                            let version = kv.mod_revision.to_string();
                            object = table::render(kind, &[object], &version, None);
                        }
                        if !send(json!({"type": "ADDED", "object": object})).await {
                            return;
                        }
                    }
                    page.revision
                }
                Err(_) => return,
            },
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut catch_up = true;
        loop {
            if catch_up {
                match store.events_since(&prefix, last) {
                    Ok(events) => {
                        for event in &events {
                            last = event.revision;
                            if let Some(value) = deliver(event)
                                && !send(value).await
                            {
                                return;
                            }
                        }
                    }
                    Err(StoreError::Compacted { requested, compacted }) => {
                        let gone = ApiError::gone(format!("too old resource version: {requested} ({compacted})"));
                        let _ = send(json!({"type": "ERROR", "object": gone.status()})).await;
                        return;
                    }
                    Err(_) => return,
                }
                catch_up = false;
            }
            tokio::select! {
                event = live.recv() => match event {
                    Ok(event) if event.revision > last => {
                        last = event.revision;
                        if let Some(value) = deliver(&event) && !send(value).await {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Fell behind the live stream: read what was missed from the store.
                    Err(broadcast::error::RecvError::Lagged(_)) => catch_up = true,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tokio::time::sleep(Duration::from_secs(60)), if bookmarks => {
                    let bookmark = json!({"type": "BOOKMARK", "object": {
                        "kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": last.to_string()}
                    }});
                    if !send(bookmark).await {
                        return;
                    }
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), receiver))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(Body::from_stream(stream))
        .expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_objects_take_a_spliced_resource_version() {
        // Insertion order puts a nested metadata first: the stored form must not.
        let mut object = serde_json::Map::new();
        object.insert("spec".into(), json!({"template": {"metadata": {"labels": {"a": "b"}}}}));
        object.insert("metadata".into(), json!({"name": "d"}));
        object.insert("kind".into(), json!("Deployment"));
        let stored = encode(&Value::Object(object));
        let mut out = Vec::new();
        splice_resource_version(&mut out, &stored, 42).unwrap();
        let spliced: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(spliced["metadata"], json!({"name": "d", "resourceVersion": "42"}));
        assert_eq!(spliced["spec"]["template"]["metadata"], json!({"labels": {"a": "b"}}));
        let mut out = Vec::new();
        splice_resource_version(&mut out, br#"{"metadata":{}}"#, 7).unwrap();
        assert_eq!(out, br#"{"metadata":{"resourceVersion":"7"}}"#);
    }
}
