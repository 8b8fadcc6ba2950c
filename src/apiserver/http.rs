//! The REST surface: URL → resource (its strategy, from the registry), method → verb (in
//! `rest`), and the encodings both ways: JSON, YAML and protobuf bodies; JSON, YAML,
//! protobuf, Table and PartialObjectMetadata answers. Errors leave as `metav1.Status`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::RwLock;

use super::authentication::{Tokens, User};
use super::authorization::{self, Asked, Attributes};
use super::discovery;
use super::errors::ApiError;
use super::managed::Writer;
use super::node_proxy;
use super::objects::Validation;
use super::openapi;
use super::patch::{self, PatchType};
use super::protobuf;
use super::registry::Registry;
use super::rest::{self, DeleteOptions, Target, WatchFormat};
use super::services::Allocator;
use super::store::Store;
use super::table::{self, IncludeObject};
use crate::pki;

/// Bodies larger than this are refused (kube-apiserver's limit is 3 MiB).
pub const MAX_BODY: usize = 3 << 20;
/// How long a request's body may take to arrive, and a list's client to take the list in
/// (kube-apiserver's request timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Server {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    /// What admission and authorization read on every request.
    pub cache: Arc<super::cache::Cache>,
    /// The users of the token file; `None`: no authentication, everything allowed.
    pub tokens: Option<Arc<Tokens>>,
    /// Signs and checks service account tokens.
    pub issuer: super::serviceaccounts::Issuer,
    /// The certificate authority pods are given to trust the server by (PEM).
    pub root_ca: String,
    /// The cluster's certificate authority, the built-in signers' (`signing`).
    pub authority: Arc<pki::Authority>,
    pub allocator: Allocator,
    /// How the server reaches nodes' endpoints (logs, exec): TLS with its client
    /// certificate.
    pub nodes: tokio_rustls::TlsConnector,
    /// Writes that read what they then write take it alone; others share it (`rest`).
    pub writes: RwLock<()>,
}

pub type Shared = Arc<Server>;

/// What an answer is written as, from the request's Accept (the first that we serve;
/// protobuf only for resources that have it).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Encoding {
    Json,
    Yaml,
    Protobuf,
    /// metav1.Table, its rows carrying what `includeObject` asks.
    Table(IncludeObject),
    /// metav1.PartialObjectMetadata (a list of them, for a list).
    PartialMetadata,
}

impl Encoding {
    /// From the Accept header; a Table's rows carry what the `includeObject` parameter asks.
    fn of(accept: &str, protobuf: bool, include: Option<&str>) -> Encoding {
        for media in accept.split(',') {
            let mut parts = media.split(';').map(str::trim);
            let kind = parts.next().unwrap_or("");
            let params: Vec<&str> = parts.collect();
            let meta = params.contains(&"g=meta.k8s.io");
            match kind {
                "application/json" if meta && params.iter().any(|p| *p == "as=Table") => {
                    return Encoding::Table(IncludeObject::of(include));
                }
                "application/json" if meta && params.iter().any(|p| p.starts_with("as=PartialObjectMetadata")) => {
                    return Encoding::PartialMetadata;
                }
                "application/json" if params.iter().any(|p| p.starts_with("as=")) => continue,
                "application/json" | "*/*" | "application/*" | "" => return Encoding::Json,
                "application/yaml" => return Encoding::Yaml,
                protobuf::MEDIA_TYPE if protobuf => return Encoding::Protobuf,
                _ => continue,
            }
        }
        Encoding::Json
    }
}

fn json_response(code: u16, value: &Value) -> Response {
    bytes_response(code, "application/json", serde_json::to_vec(value).expect("JSON values serialise"))
}

fn bytes_response(code: u16, content_type: &str, body: Vec<u8>) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .expect("valid response")
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status())
}

/// One object (or a list of them), written as asked.
fn encoded(code: u16, value: &Value, encoding: Encoding, target: &Target) -> Result<Response, ApiError> {
    let is_list = value["items"].is_array();
    Ok(match encoding {
        Encoding::Json => json_response(code, value),
        Encoding::Yaml => {
            let text = serde_saphyr::to_string(value).map_err(|e| ApiError::internal(format!("YAML: {e}")))?;
            bytes_response(code, "application/yaml", text.into_bytes())
        }
        Encoding::Protobuf => bytes_response(code, protobuf::MEDIA_TYPE, protobuf::encode(value)?),
        Encoding::Table(include) => {
            let items: Vec<Value> =
                if is_list { value["items"].as_array().cloned().unwrap_or_default() } else { vec![value.clone()] };
            let version = value["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
            let continue_token = value["metadata"].get("continue");
            json_response(code, &table::render(&*target.strategy, &items, &version, continue_token, include))
        }
        Encoding::PartialMetadata => {
            let partial = |o: &Value| json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]});
            if is_list {
                let items: Vec<Value> = value["items"].as_array().into_iter().flatten().map(partial).collect();
                json_response(
                    code,
                    &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                            "metadata": value["metadata"], "items": items}),
                )
            } else {
                json_response(code, &partial(value))
            }
        }
    })
}

pub async fn handle(State(server): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // No token is the anonymous user (kube-apiserver's --anonymous-auth), whom RBAC lets
    // read health and version; a token that names no one is refused outright.
    let certified = parts.extensions.get::<crate::serve::ClientCertificate>().and_then(|c| pki::client_identity(&c.0));
    let user = match server.tokens.as_ref().map(|tokens| tokens.authenticate(&parts.headers)) {
        // A client certificate of the cluster's authority names its user (kube-apiserver's
        // x509 authenticator): common name, organizations as groups.
        None | Some(None) if certified.is_some() => {
            let (name, groups) = certified.expect("just checked");
            User::certified(name, groups)
        }
        None | Some(None) => User::anonymous(),
        Some(Some(Ok(user))) => user,
        Some(Some(Err(token))) => match service_account(&server, &token) {
            Some(user) => user,
            None => return error_response(&ApiError::unauthorized()),
        },
    };
    let user = Arc::new(user);
    let body = match tokio::time::timeout(REQUEST_TIMEOUT, read_body(body)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => return error_response(&e),
        Err(_) => return error_response(&ApiError::timeout("the request's body did not come in time")),
    };
    let query = Query::parse(parts.uri.query().unwrap_or(""));
    if let Some(stream) = node_proxy::NodeStream::of(parts.uri.path()) {
        let verb = if parts.method == Method::GET { "get" } else { "create" };
        let asked = Asked::Resource {
            group: String::new(),
            resource: stream.resource().into(),
            subresource: stream.subresource().into(),
            namespace: stream.namespace.clone(),
            name: stream.pod.clone(),
        };
        if let Err(e) = authorize(&server, &user, verb, asked, &format!("{} \"{}\"", stream.resource(), stream.pod)) {
            return error_response(&e);
        }
        return node_proxy::proxy(&server, stream, &query, parts).await.unwrap_or_else(|e| error_response(&e));
    }
    match route(&server, &user, &parts.method, parts.uri.path(), &query, &parts.headers, body).await {
        Ok(response) => response,
        Err(e) => error_response(&e),
    }
}

/// The request's body, if it is at most MAX_BODY. A larger one is still read to its end
/// (up to DRAIN_LIMIT) before the 413 goes, so that a client still sending it reads the
/// answer instead of a reset connection (a lingering close, as nginx makes).
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    const DRAIN_LIMIT: usize = 64 << 20;
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut total = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("the request's body: {e}")))?;
        total += chunk.len();
        if total <= MAX_BODY {
            bytes.extend_from_slice(&chunk);
        } else if total > DRAIN_LIMIT {
            break;
        }
    }
    match total <= MAX_BODY {
        true => Ok(bytes.into()),
        false => Err(ApiError::too_large(MAX_BODY)),
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

/// The user of a service account token this server signed, while its service account (and
/// the pod or secret it is bound to) is still the one it was issued for.
fn service_account(server: &Shared, token: &str) -> Option<User> {
    let bearer = server.issuer.verify(token)?;
    let namespace = bearer.namespace.as_str();
    let account = server.cache.get(&format!("/registry/core/serviceaccounts/{namespace}/{}", bearer.account.name))?;
    if account["metadata"]["uid"].as_str() != Some(bearer.account.uid.as_str()) {
        return None;
    }
    for (plural, bound) in [("pods", &bearer.pod), ("secrets", &bearer.secret)] {
        if let Some(bound) = bound {
            let kv = server.store.get(&format!("/registry/core/{plural}/{namespace}/{}", bound.name)).ok()??;
            let object: Value = serde_json::from_slice(&kv.value).ok()?;
            if object["metadata"]["uid"].as_str() != Some(bound.uid.as_str())
                || object["metadata"].get("deletionTimestamp").is_some()
            {
                return None;
            }
        }
    }
    Some(bearer.user())
}

/// POST serviceaccounts/NAME/token: a TokenRequest answered with a token, bound to a pod or
/// secret of the namespace if it names one (which must exist, with its uid if given).
fn token_request(
    server: &Shared,
    target: &Target,
    name: &str,
    body: &[u8],
    content_type: &str,
) -> Result<Response, ApiError> {
    let mut request = decode(body, content_type, "authentication.k8s.io/v1", "TokenRequest")?;
    let namespace = target.namespace.clone().unwrap_or_default();
    let account = rest::get(server, target, name)?;
    let reference = |o: &Value| super::serviceaccounts::Reference {
        name: o["metadata"]["name"].as_str().unwrap_or_default().into(),
        uid: o["metadata"]["uid"].as_str().unwrap_or_default().into(),
    };
    let bound_ref = &request["spec"]["boundObjectRef"];
    let bound = match bound_ref["kind"].as_str() {
        None => None,
        Some(kind @ ("Pod" | "Secret")) => {
            let plural = if kind == "Pod" { "pods" } else { "secrets" };
            let strategy = server.registry.find("", "v1", plural).expect("pods and secrets are served");
            let object = rest::get(
                server,
                &Target::collection(strategy, Some(&namespace)),
                bound_ref["name"].as_str().unwrap_or_default(),
            )?;
            if bound_ref["uid"]
                .as_str()
                .is_some_and(|uid| !uid.is_empty() && Some(uid) != object["metadata"]["uid"].as_str())
            {
                return Err(ApiError::conflict_because(
                    plural,
                    bound_ref["name"].as_str().unwrap_or_default(),
                    "the UID in the bound object reference does not match",
                ));
            }
            Some((kind, reference(&object)))
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "TokenRequest",
                name,
                vec![(
                    "spec.boundObjectRef.kind".into(),
                    format!("Unsupported value: \"{other}\": supported values: \"Pod\", \"Secret\""),
                )],
            ));
        }
    };
    let status = server.issuer.request(&namespace, reference(&account), bound, &request["spec"])?;
    request["metadata"] = json!({"name": name, "namespace": namespace, "creationTimestamp": super::objects::now()});
    request["status"] = status;
    Ok(json_response(201, &request))
}

/// The authorizer's answer for `user`, as a 403 naming `what` when it is no.
fn authorize(server: &Shared, user: &User, verb: &str, asked: Asked, what: &str) -> Result<(), ApiError> {
    if server.tokens.is_none() {
        return Ok(());
    }
    let attributes = Attributes { verb: verb.into(), target: asked };
    authorization::authorize(&server.cache, user, &attributes)
        .map(drop)
        .map_err(|why| ApiError::forbidden_to(what, why))
}

async fn route(
    server: &Shared,
    user: &Arc<User>,
    method: &Method,
    path: &str,
    query: &Query,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let is_resource = matches!(segments.as_slice(), ["api", _, _, ..] | ["apis", _, _, _, ..]);
    if !is_resource {
        let verb = method.as_str().to_lowercase();
        authorize(server, user, &verb, Asked::Path(path.to_string()), "")?;
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let registry = &server.registry;
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
            let mut response = get_only(Some(discovery::aggregated(registry, segments[0] == "api")))?;
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(discovery::AGGREGATED));
            return Ok(response);
        }
        ["api"] => return get_only(Some(discovery::api_versions())),
        ["apis"] => return get_only(Some(discovery::api_groups(registry))),
        ["apis", group] => return get_only(discovery::api_group(registry, group)),
        ["openapi", "v2"] if accept.contains(discovery::OPENAPI_V2_PROTOBUF) && method == Method::GET => {
            // As kube-apiserver answers it: Go's mime parser refuses the `@` of the Accept value.
            return Ok(bytes_response(200, "application/octet-stream", discovery::openapi_v2_protobuf(registry)));
        }
        ["openapi", "v2"] => return get_only(Some(discovery::openapi_v2(registry))),
        ["openapi", "v3"] => return get_only(Some(openapi::documents(registry).index(registry))),
        ["openapi", "v3", "api", version] => return openapi_document(method, registry, "", version),
        ["openapi", "v3", "apis", group, version] => return openapi_document(method, registry, group, version),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    if rest.is_empty() {
        return get_only(discovery::resource_list(registry, group, version));
    }
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let writer = Writer::of_request(query.get("fieldManager"), user_agent)?;
    let target = resolve(registry, (group, version), rest, user, writer).ok_or_else(|| ApiError::no_route(path))?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let encoding = Encoding::of(accept, target.strategy.has_protobuf(), query.get("includeObject"));
    let mut validation = Validation::from_query(query.get("fieldValidation"));
    let validation = &mut validation;
    let info = target.info().clone();
    let verb = match (method, target.name.is_some()) {
        (&Method::GET, false) if query.flag("watch") => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, false) => "create",
        (&Method::DELETE, false) => "deletecollection",
        (&Method::GET, true) => "get",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::POST, true) => "create",
        _ => "",
    };
    if target.subresource.is_none() && !info.allows(verb) {
        return Err(ApiError::method_not_allowed(method.as_str()));
    }
    let asked = Asked::Resource {
        group: info.group.clone(),
        resource: info.plural.clone(),
        subresource: target.subresource.clone().unwrap_or_default(),
        namespace: target.namespace.clone().unwrap_or_default(),
        name: target.name.clone().unwrap_or_default(),
    };
    let what = match &target.name {
        Some(name) => format!("{} \"{name}\"", rest::qualified_resource(&info)),
        None => rest::qualified_resource(&info),
    };
    authorize(server, user, verb, asked, &what)?;
    if info.group == super::metrics::GROUP {
        return match (method, verb) {
            (&Method::GET, "get" | "list") => {
                Ok(json_response(200, &super::metrics::get(server, &target, query).await?))
            }
            _ => Err(ApiError::method_not_allowed(method.as_str())),
        };
    }
    match (method, target.name.as_deref(), target.subresource.as_deref()) {
        (&Method::GET, None, None) if query.flag("watch") => {
            let format = match encoding {
                Encoding::Table(include) => WatchFormat::Table(include),
                Encoding::Protobuf => WatchFormat::Protobuf,
                _ => WatchFormat::Json,
            };
            rest::watch(server, &target, query, format)
        }
        (&Method::GET, None, None) if encoding == Encoding::Json && !rest::filters(&target, query)? => {
            let body = rest::list_unfiltered(server, &target, query).await?;
            Ok(Response::builder()
                .status(200)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .expect("valid response"))
        }
        (&Method::GET, None, None) => encoded(200, &rest::list(server, &target, query)?, encoding, &target),
        (&Method::POST, None, None) if !target.strategy.is_stored() => {
            let object = decode(&body, content_type, &info.api_version(), &info.kind)?;
            let answered = super::reviews::answer(server, &target, object, validation)?;
            encoded(201, &answered, encoding, &target)
        }
        (&Method::POST, None, None) => {
            let object = decode(&body, content_type, &info.api_version(), &info.kind)?;
            let (code, made) = rest::create(server, &target, object, query, validation).await?;
            Ok(warned(encoded(code, &made, encoding, &target)?, validation))
        }
        (&Method::DELETE, None, None) => {
            let options = delete_options(&body, content_type, query)?;
            let deleted = rest::delete_collection(server, &target, query, &options).await?;
            encoded(200, &deleted, encoding, &target)
        }
        (&Method::GET, Some(name), None | Some("status" | "ephemeralcontainers" | "approval")) => {
            encoded(200, &rest::get(server, &target, name)?, encoding, &target)
        }
        (&Method::PUT, Some(name), sub @ (None | Some("status" | "finalize" | "ephemeralcontainers" | "approval"))) => {
            let object = decode(&body, content_type, &info.api_version(), &info.kind)?;
            let written = rest::update(server, &target, name, sub, |_| Ok(object), query, validation).await?;
            let written = signed_if_approved(server, &target, name, sub, query, written).await?;
            Ok(warned(encoded(200, &written, encoding, &target)?, validation))
        }
        (&Method::PATCH, Some(name), sub @ (None | Some("status" | "ephemeralcontainers")))
            if PatchType::is_apply(content_type) =>
        {
            if query.get("fieldManager").is_none_or(str::is_empty) {
                return Err(ApiError::bad_request("fieldManager: Required value: is required for apply patch"));
            }
            let config = decode(&body, "application/yaml", &info.api_version(), &info.kind)?;
            let force = query.get("force") == Some("true");
            let (code, written) = rest::apply(server, &target, name, sub, config, force, query, validation).await?;
            Ok(warned(encoded(code, &written, encoding, &target)?, validation))
        }
        (&Method::PATCH, Some(name), sub @ (None | Some("status" | "ephemeralcontainers" | "approval"))) => {
            if query.get("force").is_some() {
                return Err(ApiError::bad_request("force: Forbidden: may not be specified for non-apply patch"));
            }
            let kind = PatchType::from_content_type(content_type)?;
            let patch: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the patch is not JSON: {e}")))?;
            let of = (info.group.as_str(), info.version.as_str(), info.kind.as_str());
            let patcher = move |current: &Value| patch::apply(current, &patch, kind, of);
            let written = rest::update(server, &target, name, sub, patcher, query, validation).await?;
            let written = signed_if_approved(server, &target, name, sub, query, written).await?;
            Ok(warned(encoded(200, &written, encoding, &target)?, validation))
        }
        (&Method::DELETE, Some(name), None) => {
            let options = delete_options(&body, content_type, query)?;
            let (code, object) = rest::delete(server, &target, name, &options, query).await?;
            encoded(code, &object, encoding, &target)
        }
        (&Method::POST, Some(name), Some("binding")) => bind(server, &target, name, &body, content_type, query).await,
        (&Method::POST, Some(name), Some("eviction")) => {
            let eviction = decode(&body, content_type, "policy/v1", "Eviction")?;
            Ok(json_response(201, &super::eviction::evict(server, &target, name, &eviction, query).await?))
        }
        (&Method::POST, Some(name), Some("token")) => token_request(server, &target, name, &body, content_type),
        (&Method::GET, Some(name), Some("scale")) => {
            Ok(json_response(200, &rest::scale_of(&target, &rest::get(server, &target, name)?)?))
        }
        (&Method::PUT | &Method::PATCH, Some(name), Some("scale")) => {
            let current = rest::scale_of(&target, &rest::get(server, &target, name)?)?;
            let given = if method == Method::PUT {
                decode(&body, content_type, "autoscaling/v1", "Scale")?
            } else {
                let kind = PatchType::from_content_type(content_type)?;
                let patch: Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("the patch is not JSON: {e}")))?;
                patch::apply(&current, &patch, kind, ("autoscaling", "v1", "Scale"))?
            };
            let replicas = given["spec"]["replicas"].as_i64();
            let replicas = replicas.filter(|r| *r >= 0).ok_or_else(|| {
                let shown = replicas.map_or("null".to_string(), |r| r.to_string());
                ApiError::invalid(
                    "Scale.autoscaling",
                    name,
                    vec![(
                        "spec.replicas".into(),
                        format!("Invalid value: {shown}: must be greater than or equal to 0"),
                    )],
                )
            })?;
            // The Scale's resourceVersion, when given, is the object's: a precondition.
            let version = given["metadata"]["resourceVersion"].as_str().filter(|v| !v.is_empty()).map(String::from);
            let strategy = target.strategy.clone();
            let rescale = move |current: &Value| {
                let mut object = current.clone();
                strategy.set_replicas(&mut object, replicas);
                if let Some(version) = version {
                    object["metadata"]["resourceVersion"] = version.into();
                }
                Ok(object)
            };
            let written = rest::update(server, &target, name, None, rescale, query, validation).await?;
            Ok(json_response(200, &rest::scale_of(&target, &written)?))
        }
        _ => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

/// After a write of a certificate signing request's `approval`: the request as the
/// built-in signer leaves it (`signing`), or as written.
async fn signed_if_approved(
    server: &Shared,
    target: &Target,
    name: &str,
    subresource: Option<&str>,
    query: &Query,
    written: Value,
) -> Result<Value, ApiError> {
    if subresource != Some("approval") || rest::is_dry_run(query) {
        return Ok(written);
    }
    super::signing::sign_if_approved(server, name).await?;
    rest::get(server, target, name)
}

fn openapi_document(method: &Method, registry: &Registry, group: &str, version: &str) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed(method.as_str()));
    }
    let bytes =
        openapi::documents(registry).get(registry, group, version).ok_or_else(|| ApiError::no_route("openapi/v3"))?;
    Ok(bytes_response(200, "application/json", bytes.to_vec()))
}

/// POST pods/binding: the scheduler's (or a client's) assignment of a pod to a node.
async fn bind(
    server: &Shared,
    target: &Target,
    name: &str,
    body: &[u8],
    content_type: &str,
    query: &Query,
) -> Result<Response, ApiError> {
    let binding = decode(body, content_type, "v1", "Binding")?;
    let node = binding["target"]["name"].as_str().unwrap_or_default().to_string();
    if node.is_empty() {
        return Err(ApiError::invalid("Binding", name, vec![("target.name".into(), "Required value".into())]));
    }
    if binding["target"]["kind"].as_str().is_some_and(|k| !k.is_empty() && k != "Node") {
        return Err(ApiError::invalid(
            "Binding",
            name,
            vec![("target.kind".into(), "Invalid value: must be empty or 'Node'".into())],
        ));
    }
    let annotations = binding["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
    let bind = move |current: &Value| {
        let pod = current["metadata"]["name"].as_str().unwrap_or("");
        if current["metadata"].get("deletionTimestamp").is_some() {
            return Err(ApiError::conflict_because(
                "pods/binding",
                pod,
                format!("pod {pod} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(assigned) = current["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict_because(
                "pods/binding",
                pod,
                format!("pod {pod} is already assigned to node \"{assigned}\""),
            ));
        }
        let mut pod = current.clone();
        pod["spec"]["nodeName"] = node.clone().into();
        for (key, value) in &annotations {
            pod["metadata"]["annotations"][key] = value.clone();
        }
        Ok(pod)
    };
    let bound =
        rest::update(server, target, name, Some("binding"), bind, query, &mut Validation::from_query(None)).await?;
    // The PodScheduled condition, as the binding storage sets it.
    let scheduled = |current: &Value| {
        let mut pod = current.clone();
        let mut conditions: Vec<Value> = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                               "lastTransitionTime": super::objects::now()}));
        pod["status"]["conditions"] = conditions.into();
        Ok(pod)
    };
    let _ = bound;
    rest::update(server, target, name, Some("status"), scheduled, query, &mut Validation::from_query(None)).await?;
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// A DELETE's DeleteOptions: its body (JSON or protobuf) and its query.
fn delete_options(body: &[u8], content_type: &str, query: &Query) -> Result<DeleteOptions, ApiError> {
    let body = if body.is_empty() { json!({}) } else { decode(body, content_type, "v1", "DeleteOptions")? };
    DeleteOptions::read(&body, query)
}

/// Where `rest` (the path after the group version) points: a collection, an object, or an
/// object's subresource. An unknown resource or subresource is not there (404).
fn resolve(
    registry: &Registry,
    (group, version): (&str, &str),
    rest: &[&str],
    user: &Arc<User>,
    writer: Writer,
) -> Option<Target> {
    let find = |plural: &str| registry.find(group, version, plural);
    let target = |strategy, namespace: Option<&str>, name: Option<&&str>, sub: Option<&&str>| Target {
        strategy,
        namespace: namespace.map(String::from),
        name: name.map(|n| n.to_string()),
        subresource: sub.map(|s| s.to_string()),
        user: user.clone(),
        writer,
    };
    let (strategy, namespace, more) = match rest {
        ["namespaces", ns, plural, more @ ..] if find(plural).is_some_and(|s| s.info().namespaced) => {
            (find(plural)?, Some(*ns), more)
        }
        [plural, more @ ..] => {
            let strategy = find(plural)?;
            if strategy.info().namespaced && !more.is_empty() {
                return None;
            }
            (strategy, None, more)
        }
        _ => return None,
    };
    if more.len() > 2 || more.get(1).is_some_and(|sub| !strategy.info().has_subresource(sub)) {
        return None;
    }
    Some(target(strategy, namespace, more.first(), more.get(1)))
}

fn decode(body: &[u8], content_type: &str, api_version: &str, kind: &str) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        protobuf::MEDIA_TYPE => protobuf::decode(body, api_version, kind),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_written_as_the_client_accepts() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(Encoding::of(kubectl, true, None), Encoding::Table(IncludeObject::Metadata));
        assert_eq!(
            Encoding::of("application/vnd.kubernetes.protobuf,application/json", true, None),
            Encoding::Protobuf
        );
        assert_eq!(Encoding::of("application/vnd.kubernetes.protobuf,application/json", false, None), Encoding::Json);
        assert_eq!(Encoding::of("application/yaml", true, None), Encoding::Yaml);
        assert_eq!(
            Encoding::of(
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json",
                true,
                None
            ),
            Encoding::PartialMetadata
        );
        assert_eq!(
            Encoding::of("application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json", true, Some("Object")),
            Encoding::Table(IncludeObject::Object)
        );
        assert_eq!(Encoding::of("", true, None), Encoding::Json);
    }

    #[test]
    fn unknown_resources_and_subresources_are_not_found() {
        let registry = Registry::builtin();
        let user = Arc::new(User::anonymous());
        assert!(
            resolve(&registry, ("", "v1"), &["namespaces", "default", "widgets"], &user, Writer::server()).is_none()
        );
        assert!(
            resolve(
                &registry,
                ("", "v1"),
                &["namespaces", "default", "configmaps", "x", "status"],
                &user,
                Writer::server()
            )
            .is_none()
        );
        let pod_status =
            resolve(&registry, ("", "v1"), &["namespaces", "default", "pods", "p", "status"], &user, Writer::server())
                .unwrap();
        assert_eq!(pod_status.subresource.as_deref(), Some("status"));
        assert!(resolve(&registry, ("", "v1"), &["nodes", "n1"], &user, Writer::server()).is_some());
    }
}
