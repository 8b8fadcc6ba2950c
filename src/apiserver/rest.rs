//! The verbs on a resource's objects, as kube-apiserver's generic registry store
//! (k8s.io/apiserver pkg/registry/generic/registry/store.go) runs them: get, list, watch,
//! create, update (and patch, and the status and scale subresources), delete and
//! deletecollection, each through the resource's [`Strategy`]. Nothing is written unless
//! the whole object was accepted.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{broadcast, mpsc};

use super::admission;
use super::authentication::User;
use super::errors::ApiError;
use super::http::{Query, REQUEST_TIMEOUT, Shared};
use super::managed::{self, Writer};
use super::objects::{self, Validation};
use super::registry::{ResourceInfo, Strategy};
use super::selectors::Selector;
use super::store::{Event, EventKind, KeyValue, KeyValueRef, Page, PageSink, Store, StoreError};
use super::table;

/// Where a request points in the resource space, and who asks.
#[derive(Clone)]
pub struct Target {
    pub strategy: Arc<dyn Strategy>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub user: Arc<User>,
    /// Who the write's fields are recorded as managed by.
    pub writer: Writer,
}

impl Target {
    pub fn info(&self) -> &ResourceInfo {
        self.strategy.info()
    }

    /// A resource's collection (in a namespace, for a namespaced one), for the server's
    /// own writes.
    pub fn collection(strategy: Arc<dyn Strategy>, namespace: Option<&str>) -> Target {
        let user = Arc::new(User::server());
        let writer = Writer::server();
        Target { strategy, namespace: namespace.map(String::from), name: None, subresource: None, user, writer }
    }

    fn key(&self, name: &str) -> String {
        self.info().key(self.namespace.as_deref(), name)
    }
}

/// Stored bytes at `revision` as the object clients of the resource see: with its
/// resourceVersion, in the version they asked for.
fn decode_stored(value: &[u8], revision: i64, strategy: &dyn Strategy) -> Result<Value, ApiError> {
    let mut object: Value =
        serde_json::from_slice(value).map_err(|e| ApiError::internal(format!("stored object: {e}")))?;
    strategy.from_storage(&mut object);
    object["metadata"]["resourceVersion"] = revision.to_string().into();
    Ok(object)
}

/// An object as it is stored: everything but its resourceVersion (the store's revision),
/// in the resource's storage version.
fn encode(strategy: &dyn Strategy, object: &Value) -> Vec<u8> {
    let mut stored = object.clone();
    if let Some(meta) = stored["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    strategy.to_storage(&mut stored);
    serde_json::to_vec(&stored).expect("JSON values serialise")
}

fn store_error<'a>(target: &'a Target, name: &'a str) -> impl Fn(StoreError) -> ApiError + 'a {
    move |e| ApiError::from_store(e, &target.info().plural, name)
}

/// The object `name` as stored, and as clients see it.
fn read(server: &Shared, target: &Target, name: &str) -> Result<(KeyValue, Value), ApiError> {
    let kv = server
        .store
        .get(&target.key(name))
        .map_err(store_error(target, name))?
        .ok_or_else(|| ApiError::not_found(&qualified_resource(target.info()), name))?;
    let object = decode_stored(&kv.value, kv.mod_revision, &*target.strategy)?;
    Ok((kv, object))
}

/// `deployments.apps`, as kube-apiserver names a resource in its messages.
pub fn qualified_resource(info: &ResourceInfo) -> String {
    if info.group.is_empty() { info.plural.clone() } else { format!("{}.{}", info.plural, info.group) }
}

pub fn get(server: &Shared, target: &Target, name: &str) -> Result<Value, ApiError> {
    read(server, target, name).map(|(_, object)| object)
}

fn selector(target: &Target, query: &Query) -> Result<Selector, ApiError> {
    Selector::parse(query.get("labelSelector"), query.get("fieldSelector"), &target.strategy)
}

/// Whether a list or watch filters: otherwise its objects are sent as stored.
pub fn filters(target: &Target, query: &Query) -> Result<bool, ApiError> {
    Ok(!selector(target, query)?.is_empty())
}

/// The page of stored objects a list asks for (`limit`, `continue`), and the list's
/// metadata: the revision read at, and the token for the next page if there is one.
fn read_page(server: &Shared, target: &Target, query: &Query) -> Result<(Page, Value), ApiError> {
    let (prefix, start_after, limit) = page_wanted(target, query)?;
    let page = server.store.list(&prefix, start_after.as_deref(), limit).map_err(store_error(target, ""))?;
    let metadata = list_metadata(page.revision, page.continue_after());
    Ok((page, metadata))
}

/// Where a list reads: the resource's prefix, the key a `continue` token resumes after,
/// and the `limit` (0: none).
fn page_wanted(target: &Target, query: &Query) -> Result<(String, Option<String>, usize), ApiError> {
    let prefix = target.info().prefix(target.namespace.as_deref());
    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
    let start_after = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(continue_key(token, &prefix)?),
        None => None,
    };
    Ok((prefix, start_after, limit))
}

/// A list's metadata: the revision it was read at, and the token for the next page when
/// more keys follow its last.
fn list_metadata(revision: i64, continue_after: Option<&str>) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(last) = continue_after {
        metadata["continue"] = hex(last.as_bytes()).into();
    }
    metadata
}

pub fn list(server: &Shared, target: &Target, query: &Query) -> Result<Value, ApiError> {
    let selector = selector(target, query)?;
    let (page, metadata) = read_page(server, target, query)?;
    let mut items = Vec::with_capacity(page.items.len());
    for kv in &page.items {
        let object = decode_stored(&kv.value, kv.mod_revision, &*target.strategy)?;
        if selector.matches(&object) {
            items.push(object);
        }
    }
    Ok(json!({
        "kind": format!("{}List", target.info().kind),
        "apiVersion": target.info().api_version(),
        "metadata": metadata,
        "items": items,
    }))
}

/// A list with no selector, written straight from the stored bytes as the store reads
/// them: each object gets its resourceVersion spliced in rather than being parsed and
/// written again (the cost of a list of many objects is otherwise mostly JSON round trips),
/// and the body goes out a chunk at a time while the store reads on, so a large list is
/// never held whole.
pub async fn list_unfiltered(server: &Shared, target: &Target, query: &Query) -> Result<Body, ApiError> {
    let (prefix, start_after, limit) = page_wanted(target, query)?;
    let (sender, mut chunks) = mpsc::channel(ListWriter::CHUNKS_AHEAD);
    let writer = ListWriter::new(target, sender);
    let store = server.store.clone();
    let reader = tokio::task::spawn_blocking(move || writer.write(&*store, &prefix, start_after.as_deref(), limit));
    // The first chunk holds the list's head, or the error that kept the list from being
    // read: that one still answers with its own status.
    let first = chunks.recv().await.unwrap_or_else(|| Err(ApiError::internal("the list's reader ended")))?;
    let rest = futures_util::stream::poll_fn(move |cx| chunks.poll_recv(cx))
        .map(|chunk| chunk.map_err(|e| std::io::Error::other(e.message)));
    // A reader that panicked ends the chunks as if the list were whole: breaking the body
    // instead tells the client it is not.
    let failed = futures_util::stream::once(reader).filter_map(|joined| async move {
        joined.err().map(|e| Err(std::io::Error::other(format!("the list's reader failed: {e}"))))
    });
    Ok(Body::from_stream(futures_util::stream::iter([Ok(first)]).chain(rest).chain(failed)))
}

/// Writes a list's JSON from the store's read of its page ([`PageSink`]), in chunks sent
/// to the response as they fill.
struct ListWriter {
    strategy: Arc<dyn Strategy>,
    api_version: String,
    out: Vec<u8>,
    items: usize,
    chunks: mpsc::Sender<Result<Bytes, ApiError>>,
    /// The read stopped early: the client went away, or an object could not be written.
    stopped: bool,
    /// When the client must have taken the whole list.
    deadline: tokio::time::Instant,
}

impl ListWriter {
    /// Fewer, larger chunks cost fewer hand-overs between the reading thread and the
    /// connection's (measured: 512 KiB lists 10,000 pods ~6 % faster than 128 KiB).
    const CHUNK: usize = 512 * 1024;
    /// Chunks written ahead of the client: enough to keep the store reading while the
    /// connection sends, few enough to hold little.
    const CHUNKS_AHEAD: usize = 4;

    fn new(target: &Target, chunks: mpsc::Sender<Result<Bytes, ApiError>>) -> ListWriter {
        ListWriter {
            strategy: target.strategy.clone(),
            api_version: target.info().api_version(),
            out: Vec::with_capacity(Self::CHUNK + Self::CHUNK / 4),
            items: 0,
            chunks,
            stopped: false,
            deadline: tokio::time::Instant::now() + REQUEST_TIMEOUT,
        }
    }

    /// Reads the page from `store` into the response; runs where it may block.
    fn write(mut self, store: &dyn Store, prefix: &str, start_after: Option<&str>, limit: usize) {
        match store.list_into(prefix, start_after, limit, &mut self) {
            Ok(()) if !self.stopped => {
                self.out.extend_from_slice(b"]}");
                let _ = self.flush();
            }
            Ok(()) => {}
            Err(e) => {
                let error = ApiError::from_store(e, &self.strategy.info().plural, "");
                let _ = self.send(Err(error));
            }
        }
        if self.items >= LARGE_LIST {
            give_back_freed_memory();
        }
    }

    fn flush(&mut self) -> ControlFlow<()> {
        let chunk = std::mem::replace(&mut self.out, Vec::with_capacity(Self::CHUNK + Self::CHUNK / 4));
        self.send(Ok(Bytes::from(chunk)))
    }

    /// A client that has not taken the list within kube-apiserver's `--request-timeout` is
    /// cut off, so that it cannot hold the store's read (a snapshot) open.
    fn send(&mut self, chunk: Result<Bytes, ApiError>) -> ControlFlow<()> {
        let sent = match self.chunks.try_send(chunk) {
            Err(TrySendError::Full(chunk)) => {
                let left = self.deadline.saturating_duration_since(tokio::time::Instant::now());
                tokio::runtime::Handle::current().block_on(self.chunks.send_timeout(chunk, left)).is_ok()
            }
            sent => sent.is_ok(),
        };
        if !sent {
            self.stopped = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

impl PageSink for ListWriter {
    fn begin(&mut self, revision: i64, continue_after: Option<&str>) -> ControlFlow<()> {
        let kind = &self.strategy.info().kind;
        let metadata = list_metadata(revision, continue_after);
        let head =
            format!(r#"{{"kind":"{kind}List","apiVersion":"{}","metadata":{metadata},"items":["#, self.api_version);
        self.out.extend_from_slice(head.as_bytes());
        ControlFlow::Continue(())
    }

    fn item(&mut self, kv: KeyValueRef<'_>) -> ControlFlow<()> {
        if self.items > 0 {
            self.out.push(b',');
        }
        self.items += 1;
        if let Err(e) = write_served(&mut self.out, kv, &*self.strategy, &self.api_version) {
            let _ = self.send(Err(e));
            self.stopped = true;
            return ControlFlow::Break(());
        }
        if self.out.len() >= Self::CHUNK {
            return self.flush();
        }
        ControlFlow::Continue(())
    }
}

/// How many objects make a list large enough to free what it held at once.
const LARGE_LIST: usize = 1000;

/// Returns the heap's free pages to the kernel: what a large list held (its chunks, or a
/// store's whole page: tens of MB for 10,000 pods) the allocator would otherwise keep as
/// resident memory until the process ends.
fn give_back_freed_memory() {
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Appends stored `kv` as clients of `strategy`'s resource see it: spliced when the
/// stored form is the served one, converted otherwise.
fn write_served(
    out: &mut Vec<u8>,
    kv: KeyValueRef<'_>,
    strategy: &dyn Strategy,
    api_version: &str,
) -> Result<(), ApiError> {
    if strategy.stored_as_served() {
        return splice_stored(out, kv.value, kv.mod_revision, api_version);
    }
    serde_json::to_writer(&mut *out, &decode_stored(kv.value, kv.mod_revision, strategy)?)
        .expect("JSON values serialise");
    Ok(())
}

/// Appends stored object `value` as read through `api_version`, with `"resourceVersion"`
/// first in its metadata.
fn splice_stored(out: &mut Vec<u8>, value: &[u8], revision: i64, api_version: &str) -> Result<(), ApiError> {
    const VERSION: &[u8] = b"{\"apiVersion\":\"";
    let at = own_metadata(value).ok_or_else(|| ApiError::internal("stored object without metadata"))?;
    let mut from = 0;
    if let Some(rest) = value.strip_prefix(VERSION)
        && !(rest.starts_with(api_version.as_bytes()) && rest.get(api_version.len()) == Some(&b'"'))
        && let Some(end) = rest.iter().position(|b| *b == b'"')
    {
        out.extend_from_slice(VERSION);
        out.extend_from_slice(api_version.as_bytes());
        // From the closing quote of the stored version on.
        from = VERSION.len() + end;
    }
    out.extend_from_slice(&value[from..at]);
    out.extend_from_slice(format!("\"resourceVersion\":\"{revision}\"").as_bytes());
    if value.get(at) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(&value[at..]);
    Ok(())
}

/// Where the object's own metadata's members start in compact JSON `value`: just after
/// the `{` of the top-level `"metadata"` key (not one nested in a field that sorts before
/// it, nor one spelled inside a string).
fn own_metadata(value: &[u8]) -> Option<usize> {
    const KEY: &[u8] = b"\"metadata\":{";
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &byte) in value.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' if depth == 1 && value[i..].starts_with(KEY) => return Some(i + KEY.len()),
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
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

/// Whether a request only tries (`dryRun=All`).
pub fn is_dry_run(query: &Query) -> bool {
    dry_run(query, &DeleteOptions::default())
}

fn dry_run(query: &Query, options: &DeleteOptions) -> bool {
    query.all("dryRun").any(|d| d == "All") || options.dry_run
}

/// Held while a write checks what it reads and writes it: alone for the writes that read
/// what they then write (a Service's allocations, a namespace's quotas), shared by all
/// others, whose commits can then share an fsync. The guard is held, never read.
#[allow(dead_code)]
enum Exclusion<'a> {
    Alone(tokio::sync::RwLockWriteGuard<'a, ()>),
    Shared(tokio::sync::RwLockReadGuard<'a, ()>),
}

async fn exclusion<'a>(server: &'a Shared, target: &Target, quotas: bool) -> Exclusion<'a> {
    let allocates = target.info().kind == "Service" && target.info().group.is_empty();
    match allocates || quotas {
        true => Exclusion::Alone(server.writes.write().await),
        false => Exclusion::Shared(server.writes.read().await),
    }
}

pub async fn create(
    server: &Shared,
    target: &Target,
    object: Value,
    query: &Query,
    validation: &mut Validation,
) -> Result<(u16, Value), ApiError> {
    // Fields are owned as the client wrote them (defaults included), before admission
    // adds its own, as kube-apiserver's field manager sees them.
    let admit = |object: &mut Value| {
        if !target.writer.applies {
            managed::record_update(&*target.strategy, None, object, &target.writer, None);
        }
        admission::mutate_create(server, target, object)
    };
    let object = objects::prepare_create(&*target.strategy, target.namespace.as_deref(), object, validation, admit)?;
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let _writes = exclusion(server, target, admission::has_quotas(server, target)).await;
    admission::check_quota(server, target, &object)?;
    let object = match target.info().kind.as_str() {
        "Service" if target.info().group.is_empty() => server.allocator.allocate(&*server.store, object, None)?,
        _ => object,
    };
    if is_dry_run(query) {
        return Ok((201, object));
    }
    let revision = server
        .store
        .create(&target.key(&name), &encode(&*target.strategy, &object))
        .map_err(store_error(target, &name))?;
    server.cache.observe(&target.key(&name), revision, Some(&object));
    if target.info().kind == "Namespace" && target.info().group.is_empty() {
        populate_namespace(server, &name)?;
    }
    if let Some(namespace) = target.namespace.as_deref().filter(|_| target.info().namespaced) {
        admission::refresh_quotas(server, namespace)?;
    }
    let mut object = object;
    object["metadata"]["resourceVersion"] = revision.to_string().into();
    Ok((201, object))
}

/// What a new namespace holds from the start: the `default` ServiceAccount and the
/// `kube-root-ca.crt` ConfigMap (the work of kube-controller-manager's serviceaccount and
/// root-ca-cert-publisher controllers, done at once).
pub fn populate_namespace(server: &Shared, namespace: &str) -> Result<(), ApiError> {
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
    let root_ca = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt",
        "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
        "data": {"ca.crt": server.root_ca}});
    for (plural, object) in [("serviceaccounts", account), ("configmaps", root_ca)] {
        let strategy = server.registry.find("", "v1", plural).expect("core kinds are served");
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let object = objects::prepare_create(
            &*strategy,
            Some(namespace),
            object,
            &mut Validation::from_query(None),
            |_| Ok(()),
        )?;
        let key = strategy.info().key(Some(namespace), &name);
        match server.store.create(&key, &encode(&*strategy, &object)) {
            Ok(revision) => server.cache.observe(&key, revision, Some(&object)),
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(ApiError::from_store(e, plural, &name)),
        }
    }
    Ok(())
}

/// Reads the object, lets `change` make the new one from it, and writes it if nothing
/// wrote in between (409 otherwise, or when the client's resourceVersion is stale).
/// `subresource` is `status` for a status write.
pub async fn update(
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
    let next = change(&current)?;
    // The client's resourceVersion, if it sent one, must be the current one.
    let expected = match next["metadata"]["resourceVersion"].as_str().filter(|v| !v.is_empty()) {
        Some(v) => v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?,
        None => current_kv.mod_revision,
    };
    if expected != current_kv.mod_revision {
        return Err(ApiError::conflict(&qualified_resource(target.info()), name));
    }
    let mut next = objects::prepare_update(&*target.strategy, &current, next, subresource, validation)?;
    if !target.writer.applies {
        let written = target.subresource.as_deref().or(subresource);
        managed::record_update(&*target.strategy, Some(&current), &mut next, &target.writer, written);
    }
    admission::mutate_update(server, target, &next, &current)?;
    let _writes = exclusion(server, target, false).await;
    let next = match target.info().kind.as_str() {
        "Service" if target.info().group.is_empty() && subresource.is_none() => {
            server.allocator.allocate(&*server.store, next, Some(&current))?
        }
        _ => next,
    };
    if is_dry_run(query) {
        return Ok(next);
    }
    // Finalizers gone from an object being deleted with no grace period left: it goes
    // now (a bound pod waits for its node's deletion instead).
    let finished = next["metadata"].get("deletionTimestamp").is_some()
        && next["metadata"]["deletionGracePeriodSeconds"].as_i64().is_none_or(|g| g == 0)
        && next["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty)
        && !target.strategy.awaits_finalization(&next);
    if finished {
        let (_, revision) = server.store.delete(&key, Some(expected)).map_err(store_error(target, name))?;
        server.cache.observe(&key, revision, None);
        return Ok(next);
    }
    let bytes = encode(&*target.strategy, &next);
    // An update that changes nothing writes nothing: the object keeps its resourceVersion
    // and watchers see no event (kube-apiserver's GuaranteedUpdate).
    if bytes == current_kv.value {
        return Ok(current);
    }
    let revision = server.store.update(&key, &bytes, Some(expected)).map_err(store_error(target, name))?;
    server.cache.observe(&key, revision, Some(&next));
    let mut next = next;
    next["metadata"]["resourceVersion"] = revision.to_string().into();
    Ok(next)
}

/// A server-side apply of `config` (a PATCH of type application/apply-patch+yaml) by
/// the target's field manager: merged into the object as `managed` settles it, or made
/// into the object when there is none yet (201).
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    server: &Shared,
    target: &Target,
    name: &str,
    subresource: Option<&str>,
    config: Value,
    force: bool,
    query: &Query,
    validation: &mut Validation,
) -> Result<(u16, Value), ApiError> {
    if config["apiVersion"].as_str().is_none_or(str::is_empty) || config["kind"].as_str().is_none_or(str::is_empty) {
        return Err(ApiError::bad_request("the applied configuration must set apiVersion and kind"));
    }
    let mut target = target.clone();
    target.writer.applies = true;
    let manager = target.writer.manager.clone();
    let applier = managed::Applier { manager: &manager, subresource, force };
    let strategy = target.strategy.clone();
    match read(server, &target, name) {
        Err(e) if e.code == 404 && subresource.is_none() => {
            let mut object = managed::apply(&*strategy, None, &config, &applier)?;
            if object["metadata"]["name"].as_str().is_some_and(|n| n != name) {
                return Err(ApiError::bad_request(format!(
                    "the name of the object does not match the name on the URL ({name})"
                )));
            }
            object["metadata"]["name"] = name.into();
            create(server, &target, object, query, validation).await
        }
        Err(e) => Err(e),
        Ok(_) => {
            let merge = |current: &Value| managed::apply(&*strategy, Some(current), &config, &applier);
            let written = update(server, &target, name, subresource, merge, query, validation).await?;
            Ok((200, written))
        }
    }
}

/// metav1.DeleteOptions, from a DELETE's body and query (the body wins, as kube-apiserver
/// reads them).
#[derive(Debug, Default, PartialEq)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub dry_run: bool,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    /// `Orphan`, `Background` or `Foreground`.
    pub propagation_policy: Option<String>,
}

impl DeleteOptions {
    pub fn read(body: &Value, query: &Query) -> Result<DeleteOptions, ApiError> {
        let from_query = |key: &str| query.get(key).map(String::from);
        let grace = match body["gracePeriodSeconds"].as_i64() {
            Some(g) => Some(g),
            None => from_query("gracePeriodSeconds")
                .map(|g| {
                    g.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))
                })
                .transpose()?,
        };
        let dry_run = body["dryRun"].as_array().is_some_and(|d| d.iter().any(|v| v == "All"))
            || query.all("dryRun").any(|d| d == "All");
        for value in body["dryRun"].as_array().into_iter().flatten() {
            if value != "All" {
                return Err(ApiError::bad_request(format!("unsupported dryRun value {value} (only \"All\")")));
            }
        }
        let orphan = body["orphanDependents"].as_bool().or_else(|| query.get("orphanDependents").map(|o| o == "true"));
        let policy = body["propagationPolicy"].as_str().map(String::from).or_else(|| from_query("propagationPolicy"));
        if orphan.is_some() && policy.is_some() {
            return Err(ApiError::invalid(
                "DeleteOptions",
                "",
                vec![(
                    "propagationPolicy".into(),
                    "Invalid value: \"\": orphanDependents and deletionPropagation cannot be both set".into(),
                )],
            ));
        }
        let policy = policy.or_else(|| orphan.map(|o| if o { "Orphan" } else { "Background" }.to_string()));
        if let Some(p) = policy.as_deref().filter(|p| !["Orphan", "Background", "Foreground"].contains(p)) {
            return Err(ApiError::invalid(
                "DeleteOptions",
                "",
                vec![(
                    "propagationPolicy".into(),
                    format!("Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""),
                )],
            ));
        }
        if grace.is_some_and(|g| g < 0) {
            return Err(ApiError::invalid(
                "DeleteOptions",
                "",
                vec![("gracePeriodSeconds".into(), "Invalid value: must be greater than or equal to 0".into())],
            ));
        }
        Ok(DeleteOptions {
            grace_period_seconds: grace,
            dry_run,
            precondition_uid: body["preconditions"]["uid"].as_str().map(String::from),
            precondition_resource_version: body["preconditions"]["resourceVersion"].as_str().map(String::from),
            propagation_policy: policy,
        })
    }
}

/// Deletes an object: a CustomResourceDefinition with its custom resources, anything
/// else alone (a namespace waits for the namespace controller to empty it).
pub async fn delete(
    server: &Shared,
    target: &Target,
    name: &str,
    options: &DeleteOptions,
    query: &Query,
) -> Result<(u16, Value), ApiError> {
    match (target.info().group.as_str(), target.info().kind.as_str()) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            delete_definition(server, target, name, options, query).await
        }
        _ => delete_object(server, target, name, options, query).await,
    }
}

/// Removes the object, or marks it for deletion when something must confirm first: its
/// finalizers (the garbage collector's `foregroundDeletion` or `orphan` among them, as the
/// propagation policy asks), or, for a pod bound to a node, the node (which stops it, then
/// deletes it with a grace period of 0).
async fn delete_object(
    server: &Shared,
    target: &Target,
    name: &str,
    options: &DeleteOptions,
    query: &Query,
) -> Result<(u16, Value), ApiError> {
    let (kv, object) = read(server, target, name)?;
    admission::admit_delete(target, &object)?;
    let resource = qualified_resource(target.info());
    if let Some(uid) = &options.precondition_uid
        && object["metadata"]["uid"].as_str() != Some(uid)
    {
        return Err(ApiError::conflict_because(
            &resource,
            name,
            format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                object["metadata"]["uid"].as_str().unwrap_or("")
            ),
        ));
    }
    if let Some(version) = &options.precondition_resource_version
        && *version != kv.mod_revision.to_string()
    {
        return Err(ApiError::conflict_because(
            &resource,
            name,
            format!(
                "Precondition failed: ResourceVersion in precondition: {version}, ResourceVersion in object meta: {}",
                kv.mod_revision
            ),
        ));
    }
    let bound_pod = target.info().kind == "Pod"
        && target.info().group.is_empty()
        && object["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty())
        && !matches!(object["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    let grace = if bound_pod {
        options.grace_period_seconds.or(object["spec"]["terminationGracePeriodSeconds"].as_i64()).unwrap_or(30)
    } else {
        0
    };
    let propagation_finalizer = match options.propagation_policy.as_deref() {
        Some("Foreground") => Some("foregroundDeletion"),
        Some("Orphan") => Some("orphan"),
        _ => None,
    };
    let mut finalizers: Vec<String> = object["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(String::from))
        .collect();
    if let Some(finalizer) = propagation_finalizer
        && !finalizers.iter().any(|f| f == finalizer)
    {
        finalizers.push(finalizer.into());
    }
    let graceful = !finalizers.is_empty() || grace > 0 || target.strategy.awaits_finalization(&object);
    if dry_run(query, options) {
        return Ok((200, object));
    }
    if graceful {
        let already = object["metadata"].get("deletionTimestamp").is_some();
        let previous_grace = object["metadata"]["deletionGracePeriodSeconds"].as_i64();
        // Deleting again changes nothing, unless it shortens the grace period.
        if already && previous_grace.is_none_or(|p| grace >= p) && finalizers == current_finalizers(&object) {
            return Ok((202, object));
        }
        let mut marked = object.clone();
        if !already {
            marked["metadata"]["deletionTimestamp"] = objects::now().into();
        }
        marked["metadata"]["deletionGracePeriodSeconds"] = grace.into();
        marked["metadata"]["finalizers"] = finalizers.into();
        if target.info().kind == "Namespace" && target.info().group.is_empty() {
            marked["status"]["phase"] = "Terminating".into();
        }
        let revision = server
            .store
            .update(&kv.key, &encode(&*target.strategy, &marked), Some(kv.mod_revision))
            .map_err(store_error(target, name))?;
        server.cache.observe(&kv.key, revision, Some(&marked));
        marked["metadata"]["resourceVersion"] = revision.to_string().into();
        return Ok((202, marked));
    }
    let (_, revision) = server.store.delete(&kv.key, Some(kv.mod_revision)).map_err(store_error(target, name))?;
    server.cache.observe(&kv.key, revision, None);
    if let Some(namespace) = target.namespace.as_deref().filter(|_| target.info().namespaced) {
        admission::refresh_quotas(server, namespace)?;
    }
    Ok((200, object))
}

fn current_finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(String::from))
        .collect()
}

/// Deletes every object under `prefix` (of resource `plural`).
fn sweep(server: &Shared, prefix: &str, plural: &str) -> Result<(), ApiError> {
    let page = server.store.list(prefix, None, 0).map_err(|e| ApiError::from_store(e, plural, ""))?;
    for kv in page.items {
        match server.store.delete(&kv.key, None) {
            Ok((_, revision)) => server.cache.observe(&kv.key, revision, None),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(ApiError::from_store(e, plural, &kv.key)),
        }
    }
    Ok(())
}

/// A CustomResourceDefinition's deletion: the definition goes (so its resources are no
/// longer served), then every custom resource it defined (the work of
/// apiextensions-apiserver's finalizer controller, done at once).
async fn delete_definition(
    server: &Shared,
    target: &Target,
    name: &str,
    options: &DeleteOptions,
    query: &Query,
) -> Result<(u16, Value), ApiError> {
    let alone = server.writes.write().await;
    let (code, deleted) = delete_object(server, target, name, options, query).await?;
    if code == 200 && !dry_run(query, options) {
        let spec = &deleted["spec"];
        let (group, plural) = (spec["group"].as_str().unwrap_or(""), spec["names"]["plural"].as_str().unwrap_or(""));
        if !group.is_empty() && !plural.is_empty() {
            sweep(server, &format!("/registry/{group}/{plural}/"), plural)?;
        }
    }
    drop(alone);
    Ok((code, deleted))
}

pub async fn delete_collection(
    server: &Shared,
    target: &Target,
    query: &Query,
    options: &DeleteOptions,
) -> Result<Value, ApiError> {
    let listed = list(server, target, query)?;
    let mut deleted = Vec::new();
    for object in listed["items"].as_array().into_iter().flatten() {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = object["metadata"]["namespace"].as_str().map(String::from);
        let one = Target { namespace, name: Some(name.into()), subresource: None, ..target.clone() };
        match delete(server, &one, name, options, query).await {
            Ok((_, object)) => deleted.push(object),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let mut result = listed;
    result["items"] = deleted.into();
    Ok(result)
}

/// The autoscaling/v1 Scale of a workload.
pub fn scale_of(target: &Target, object: &Value) -> Result<Value, ApiError> {
    let scale = target.strategy.scale(object).ok_or_else(|| ApiError::no_route("scale"))?;
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"],
            "uid": object["metadata"]["uid"], "resourceVersion": object["metadata"]["resourceVersion"],
            "creationTimestamp": object["metadata"]["creationTimestamp"]
        },
        "spec": {"replicas": scale.replicas},
        "status": {"replicas": scale.current, "selector": scale.selector}
    }))
}

/// How a watch's events go out: JSON lines (as a Table each, when asked), or protobuf
/// frames.
#[derive(Clone, Copy, PartialEq)]
pub enum WatchFormat {
    Json,
    Table(table::IncludeObject),
    Protobuf,
}

/// A watch: events after `resourceVersion` (or, without one, the current objects as
/// ADDED first), then each write as it commits; ends after `timeoutSeconds`, or with an
/// ERROR event (410) when that history is compacted. With a selector, an object that
/// stops matching is DELETED to the watcher and one that starts matching ADDED, as
/// kube-apiserver's watch cache tells them. `sendInitialEvents=true` ends the initial
/// objects with a BOOKMARK annotated `k8s.io/initial-events-end`.
/// What a watch sends an event of: an object as stored (at a revision), or one it made.
enum Payload {
    Stored(Vec<u8>, i64),
    Object(Value),
}

pub fn watch(server: &Shared, target: &Target, query: &Query, format: WatchFormat) -> Result<Response, ApiError> {
    let selector = selector(target, query)?;
    let prefix = target.info().prefix(target.namespace.as_deref());
    let initial_events = query.flag("sendInitialEvents");
    if initial_events && query.get("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::invalid(
            "ListOptions",
            "",
            vec![(
                "resourceVersionMatch".into(),
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into(),
            )],
        ));
    }
    let since = match query.get("resourceVersion").filter(|v| !v.is_empty() && *v != "0") {
        Some(v) if !initial_events => {
            Some(v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?)
        }
        _ => None,
    };
    // Subscribed before the store's revision is read: whatever is committed after that read
    // comes live, so a watch from the current revision has nothing to catch up on.
    let mut live = server.store.subscribe();
    let current = server.store.revision().map_err(store_error(target, ""))?;
    if let Some(since) = since.filter(|since| *since > current) {
        return Err(ApiError::timeout(format!("Too large resource version: {since}, current: {current}")));
    }
    let timeout = Duration::from_secs(query.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(1800));
    let bookmarks = query.flag("allowWatchBookmarks");
    let strategy = target.strategy.clone();
    let store = server.store.clone();
    let (sender, receiver) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let info = strategy.info().clone();
        let api_version = info.api_version();
        let send = |kind: &str, payload: Payload| {
            let sender = sender.clone();
            let kind = kind.to_string();
            let strategy = strategy.clone();
            let api_version = &api_version;
            async move {
                let object = match (format, payload) {
                    // As stored, its resourceVersion spliced in: not parsed, not written again.
                    (WatchFormat::Json, Payload::Stored(value, revision)) if strategy.stored_as_served() => {
                        let mut line = format!(r#"{{"type":"{kind}","object":"#).into_bytes();
                        if splice_stored(&mut line, &value, revision, api_version).is_err() {
                            return false;
                        }
                        line.extend_from_slice(b"}\n");
                        return sender.send(Bytes::from(line)).await.is_ok();
                    }
                    (_, Payload::Stored(value, revision)) => match decode_stored(&value, revision, &*strategy) {
                        Ok(object) => object,
                        Err(_) => return false,
                    },
                    (_, Payload::Object(object)) => object,
                };
                let bytes = match format {
                    WatchFormat::Protobuf => match super::protobuf::encode_watch_event(&kind, &object) {
                        Ok(frame) => frame,
                        Err(_) => return false,
                    },
                    _ => {
                        let object = match format {
                            WatchFormat::Table(include) => {
                                let version = object["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
                                table::render(&*strategy, &[object], &version, None, include)
                            }
                            _ => object,
                        };
                        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("JSON");
                        line.push(b'\n');
                        line
                    }
                };
                sender.send(Bytes::from(bytes)).await.is_ok()
            }
        };
        let bookmark = |revision: i64, initial_end: bool| {
            let mut metadata = json!({"resourceVersion": revision.to_string()});
            if initial_end {
                metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": metadata})
        };
        // What an event is to this watcher: the new object's match, against the old one's.
        // A selector on names alone is decided from the key, without reading the object.
        let whole = info.prefix(None);
        let identity = |key: &str| {
            let rest = key.strip_prefix(whole.as_str()).unwrap_or(key);
            let (namespace, name) =
                if info.namespaced { rest.split_once('/').unwrap_or(("", rest)) } else { ("", rest) };
            json!({"metadata": {"name": name, "namespace": namespace}})
        };
        let deliver = |event: &Event| -> Option<(&'static str, Payload)> {
            if !event.kv.key.starts_with(&prefix) {
                return None;
            }
            let stored = || Payload::Stored(event.kv.value.clone(), event.revision);
            let (matches, matched) = if selector.is_empty() {
                (true, true)
            } else if selector.on_identity_only() {
                let matches = selector.matches(&identity(&event.kv.key));
                (matches, matches)
            } else {
                let object: Value = serde_json::from_slice(&event.kv.value).ok()?;
                let matches = selector.matches(&object);
                let matched = match (&event.kind, &event.prev) {
                    (EventKind::Put, Some(prev)) => {
                        serde_json::from_slice(prev).ok().is_some_and(|p| selector.matches(&p))
                    }
                    // A put with no history left: the watcher may have it.
                    (EventKind::Put, None) => !event.created,
                    (EventKind::Delete, _) => matches,
                };
                (matches, matched)
            };
            let kind = match (&event.kind, event.created, matched, matches) {
                (EventKind::Delete, _, true, _) => "DELETED",
                (EventKind::Delete, _, false, _) => return None,
                (EventKind::Put, true, _, true) => "ADDED",
                (EventKind::Put, false, true, true) => "MODIFIED",
                (EventKind::Put, false, false, true) => "ADDED",
                (EventKind::Put, false, true, false) => "DELETED",
                (EventKind::Put, _, _, false) => return None,
            };
            Some((kind, stored()))
        };
        let mut last = match since {
            Some(revision) => revision,
            None => match store.list(&prefix, None, 0) {
                Ok(page) => {
                    for kv in &page.items {
                        let matches = selector.is_empty()
                            || serde_json::from_slice::<Value>(&kv.value).is_ok_and(|o| selector.matches(&o));
                        if matches && !send("ADDED", Payload::Stored(kv.value.clone(), kv.mod_revision)).await {
                            return;
                        }
                    }
                    if initial_events && !send("BOOKMARK", Payload::Object(bookmark(page.revision, true))).await {
                        return;
                    }
                    page.revision
                }
                Err(_) => return,
            },
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut catch_up = last < current;
        loop {
            if catch_up {
                match store.events_since(&prefix, last) {
                    Ok(events) => {
                        for event in &events {
                            last = event.revision;
                            if let Some((kind, object)) = deliver(event)
                                && !send(kind, object).await
                            {
                                return;
                            }
                        }
                    }
                    Err(StoreError::Compacted { requested, compacted }) => {
                        let gone = ApiError::gone(format!("too old resource version: {requested} ({compacted})"));
                        let _ = send("ERROR", Payload::Object(gone.status())).await;
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
                        if let Some((kind, object)) = deliver(&event) && !send(kind, object).await {
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
                    if !send("BOOKMARK", Payload::Object(bookmark(last, false))).await {
                        return;
                    }
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), receiver))
    });
    let content_type = match format {
        WatchFormat::Protobuf => "application/vnd.kubernetes.protobuf;stream=watch",
        _ => "application/json",
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
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
        let deployments = super::super::registry::Registry::builtin().find("apps", "v1", "deployments").unwrap();
        let stored = encode(&*deployments, &Value::Object(object));
        let mut out = Vec::new();
        splice_stored(&mut out, &stored, 42, "apps/v1").unwrap();
        let spliced: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(spliced["apiVersion"], "apps/v1", "stored in the resource's version");
        assert_eq!(spliced["metadata"], json!({"name": "d", "resourceVersion": "42"}));
        assert_eq!(spliced["spec"]["template"]["metadata"], json!({"labels": {"a": "b"}}));
        let mut out = Vec::new();
        splice_stored(&mut out, br#"{"metadata":{}}"#, 7, "v1").unwrap();
        assert_eq!(out, br#"{"metadata":{"resourceVersion":"7"}}"#);
        // Read through another version of a custom resource.
        let mut out = Vec::new();
        splice_stored(&mut out, br#"{"apiVersion":"x.io/v1","kind":"K","metadata":{}}"#, 7, "x.io/v1beta1").unwrap();
        assert_eq!(out, br#"{"apiVersion":"x.io/v1beta1","kind":"K","metadata":{"resourceVersion":"7"}}"#);
        let mut out = Vec::new();
        splice_stored(&mut out, br#"{"apiVersion":"x.io/v1","metadata":{}}"#, 7, "x.io/v1").unwrap();
        assert_eq!(out, br#"{"apiVersion":"x.io/v1","metadata":{"resourceVersion":"7"}}"#);
        // A field that sorts before `metadata` (a ControllerRevision's `data`, a custom
        // resource's anything) may hold a metadata of its own, and strings may spell one.
        let revision = br#"{"apiVersion":"apps/v1","data":{"note":"\"metadata\":{","spec":{"template":{"metadata":{"labels":{}}}}},"kind":"ControllerRevision","metadata":{"name":"r"},"revision":1}"#;
        let mut out = Vec::new();
        splice_stored(&mut out, revision, 9, "apps/v1").unwrap();
        let spliced: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(spliced["metadata"], json!({"name": "r", "resourceVersion": "9"}));
        assert_eq!(spliced["data"]["spec"]["template"]["metadata"], json!({"labels": {}}));
    }

    #[test]
    fn delete_options_come_from_the_body_then_the_query() {
        let query = Query::parse("gracePeriodSeconds=5&propagationPolicy=Orphan");
        let options = DeleteOptions::read(
            &json!({"dryRun": ["All"], "gracePeriodSeconds": 0,
            "preconditions": {"uid": "u1"}}),
            &query,
        )
        .unwrap();
        assert_eq!(
            options,
            DeleteOptions {
                grace_period_seconds: Some(0),
                dry_run: true,
                precondition_uid: Some("u1".into()),
                precondition_resource_version: None,
                propagation_policy: Some("Orphan".into()),
            }
        );
        let orphan = DeleteOptions::read(&json!({"orphanDependents": true}), &Query::default()).unwrap();
        assert_eq!(orphan.propagation_policy.as_deref(), Some("Orphan"));
        assert_eq!(
            DeleteOptions::read(&json!({"propagationPolicy": "Never"}), &Query::default()).unwrap_err().code,
            422
        );
        let both = json!({"orphanDependents": true, "propagationPolicy": "Foreground"});
        assert_eq!(DeleteOptions::read(&both, &Query::default()).unwrap_err().code, 422);
    }
}
