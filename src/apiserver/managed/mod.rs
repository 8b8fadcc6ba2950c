//! Field management, as kube-apiserver's fieldmanager keeps it: every write records, in
//! `metadata.managedFields`, which manager owns which fields. An update (create, update,
//! patch) gives its manager the fields it changed and takes them from the others; a
//! server-side apply owns exactly what its configuration sets, fails on fields others
//! own with other values (409, unless forced), and removes what it applied before and
//! no one owns any more.

mod set;
mod structured;

use std::collections::HashMap;

use serde_json::{Value, json};

use self::set::{Set, display};
use self::structured::{Type, Typed};
use super::errors::ApiError;
use super::openapi;
use super::registry::Strategy;

/// The manager of the server's own writes.
pub const SERVER: &str = "kube-apiserver";

/// Who writes: the request's field manager, and whether it applies (its fields are
/// then settled by [`apply`], not recorded as an update).
#[derive(Clone, Debug)]
pub struct Writer {
    pub manager: String,
    pub applies: bool,
}

impl Writer {
    /// The request's `fieldManager`, or what its User-Agent starts with (kube-apiserver's
    /// default); at most 128 characters.
    pub fn of_request(field_manager: Option<&str>, user_agent: &str) -> Result<Writer, ApiError> {
        let manager = match field_manager {
            Some(manager) => manager.to_string(),
            None => user_agent.split('/').next().unwrap_or_default().chars().take(128).collect(),
        };
        if manager.len() > 128 {
            return Err(ApiError::bad_request(format!(
                "fieldManager: Too long: may not be more than 128 bytes (was {})",
                manager.len()
            )));
        }
        if manager.chars().any(|c| c.is_control()) {
            return Err(ApiError::bad_request("fieldManager: Invalid value: may only contain printable characters"));
        }
        Ok(Writer { manager, applies: false })
    }

    pub fn server() -> Writer {
        Writer { manager: SERVER.into(), applies: false }
    }
}

/// One managedFields entry.
#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    applies: bool,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    fields: Set,
}

impl Entry {
    fn read(entry: &Value) -> Option<Entry> {
        Some(Entry {
            manager: entry["manager"].as_str().unwrap_or_default().to_string(),
            applies: entry["operation"] == "Apply",
            api_version: entry["apiVersion"].as_str().unwrap_or_default().to_string(),
            time: entry["time"].as_str().map(String::from),
            subresource: entry["subresource"].as_str().filter(|s| !s.is_empty()).map(String::from),
            fields: Set::from_fields_v1(entry.get("fieldsV1")?),
        })
    }

    fn write(&self) -> Value {
        let mut entry = json!({
            "manager": self.manager,
            "operation": if self.applies { "Apply" } else { "Update" },
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.fields.to_fields_v1(),
        });
        if let Some(time) = &self.time {
            entry["time"] = time.clone().into();
        }
        if let Some(subresource) = &self.subresource {
            entry["subresource"] = subresource.clone().into();
        }
        entry
    }

    /// Whether this is the entry of `manager` doing `applies` to `subresource` (through
    /// `api_version`, for updates: an applier is one manager whatever version it uses).
    fn is(&self, manager: &str, applies: bool, subresource: Option<&str>, api_version: &str) -> bool {
        self.manager == manager
            && self.applies == applies
            && self.subresource.as_deref() == subresource
            && (applies || self.api_version == api_version)
    }

    fn describe(&self) -> String {
        let mut text = format!("{:?}", self.manager);
        if let Some(subresource) = &self.subresource {
            text.push_str(&format!(" with subresource {subresource:?}"));
        }
        if !self.applies {
            text.push_str(&format!(" using {}", self.api_version));
        }
        text
    }
}

/// The schema view of a resource's objects.
fn typed(strategy: &dyn Strategy) -> Typed<'_> {
    let index = openapi::index();
    let info = strategy.info();
    let root = match (strategy.schema(), index.kind(&info.group, &info.version, &info.kind)) {
        (Some(schema), _) => Type::Schema(schema, true),
        (None, Some(definition)) => Type::Definition(definition),
        (None, None) => Type::Deduced,
    };
    Typed::new(index, root)
}

/// What a write of the main resource or of a subresource may own: never the type and
/// identity fields, the status only through `status`, and through a subresource only
/// the part it writes.
fn owned_part(mut set: Set, strategy: &dyn Strategy, subresource: Option<&str>) -> Set {
    const SERVER_METADATA: [&str; 11] = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "managedFields",
        "clusterName",
    ];
    // A subresource that writes one part of the object owns only that part.
    let part: &[&str] = match subresource {
        Some("status") => &["f:status"],
        Some("ephemeralcontainers") => &["f:spec", "f:ephemeralContainers"],
        _ => &[],
    };
    if let Some((last, parents)) = part.split_last() {
        let mut only = Set::default();
        if let Some(found) = parents.iter().try_fold(&set, |s, p| s.child(p)).and_then(|s| s.child(last)) {
            let mut node = Set::default();
            node.put(last, found.clone());
            only = parents.iter().rev().fold(node, |inner, p| {
                let mut outer = Set::default();
                outer.put(p, inner);
                outer
            });
        }
        return only;
    }
    set.remove("f:apiVersion");
    set.remove("f:kind");
    if strategy.info().has_subresource("status") {
        set.remove("f:status");
    }
    if let Some(metadata) = set.child_mut("f:metadata") {
        metadata.set_member(false);
        for field in SERVER_METADATA {
            metadata.remove(&format!("f:{field}"));
        }
    }
    set
}

fn entries(object: &Value) -> Vec<Entry> {
    object["metadata"]["managedFields"].as_array().into_iter().flatten().filter_map(Entry::read).collect()
}

/// Writes `entries` into `object`, as kube-apiserver orders them: appliers first, then
/// by time, manager, version and subresource.
fn set_entries(object: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.fields.is_empty());
    cap_updaters(&mut entries);
    entries.sort_by(|a, b| {
        (!a.applies, &a.time, &a.manager, &a.api_version, &a.subresource).cmp(&(
            !b.applies,
            &b.time,
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
    });
    let written: Vec<Value> = entries.iter().map(Entry::write).collect();
    match object["metadata"].as_object_mut() {
        Some(metadata) if written.is_empty() => drop(metadata.remove("managedFields")),
        Some(metadata) => drop(metadata.insert("managedFields".into(), written.into())),
        None => {}
    }
}

/// How many Update entries an object keeps (kube-apiserver's DefaultMaxUpdateManagers).
const MAX_UPDATERS: usize = 10;
/// The entry older updates are merged into, one per API version.
const ANCIENT_CHANGES: &str = "ancient-changes";

/// Keeps at most `MAX_UPDATERS` Update entries: the oldest are merged, by API version,
/// into an `ancient-changes` entry dated by the newest update it took (fieldmanager's
/// capManagersManager, so that a stream of distinct writers cannot grow an object
/// without bound).
fn cap_updaters(entries: &mut Vec<Entry>) {
    let mut updaters: Vec<usize> = (0..entries.len()).filter(|&i| !entries[i].applies).collect();
    if updaters.len() <= MAX_UPDATERS {
        return;
    }
    updaters.sort_by(|&a, &b| {
        let key = |e: &Entry| (e.time.clone(), e.manager.clone(), e.api_version.clone(), e.subresource.clone());
        key(&entries[a]).cmp(&key(&entries[b]))
    });
    let mut left = updaters.len();
    let mut first_of_version: HashMap<String, usize> = HashMap::new();
    let mut merged = Vec::new();
    for &i in &updaters {
        if left <= MAX_UPDATERS {
            break;
        }
        let version = entries[i].api_version.clone();
        let Some(&first) = first_of_version.get(&version) else {
            first_of_version.insert(version, i);
            continue;
        };
        let bucket = (0..entries.len())
            .find(|&b| !merged.contains(&b) && entries[b].is(ANCIENT_CHANGES, false, None, &version))
            .unwrap_or(first);
        entries[bucket].manager = ANCIENT_CHANGES.into();
        entries[bucket].subresource = None;
        entries[bucket].fields = entries[i].fields.union(&entries[bucket].fields);
        entries[bucket].time = entries[i].time.clone();
        merged.push(i);
        left -= 1;
    }
    let mut index = 0;
    entries.retain(|_| {
        index += 1;
        !merged.contains(&(index - 1))
    });
}

/// Whether the client sent managedFields of its own: `[{}]` clears them, other
/// non-empty lists replace the live ones.
fn sent(object: &Value) -> Option<Vec<Entry>> {
    let given = object["metadata"]["managedFields"].as_array().filter(|l| !l.is_empty())?;
    if given.len() == 1 && given[0].as_object().is_some_and(|e| e.is_empty()) {
        return Some(vec![]);
    }
    Some(given.iter().filter_map(Entry::read).collect())
}

/// An update's conflicts, and what every other manager keeps (structured-merge-diff's
/// Updater.update): with `force`, the others lose what the write changed; all lose what it
/// removed.
fn settle_others(
    entries: &mut [Entry],
    me: usize,
    changed: &Set,
    removed: &Set,
    force: bool,
) -> Result<(), Vec<(String, Vec<String>)>> {
    let mut conflicts = Vec::new();
    for (i, entry) in entries.iter_mut().enumerate() {
        if i == me {
            continue;
        }
        let conflict = entry.fields.intersection(changed);
        if !conflict.is_empty() {
            if !force {
                conflicts.extend(conflict.paths().into_iter().map(|p| (entry.describe(), p)));
                continue;
            }
            entry.fields = entry.fields.difference(&conflict);
        }
        entry.fields = entry.fields.difference(removed);
    }
    if conflicts.is_empty() { Ok(()) } else { Err(conflicts) }
}

fn find_or_add(
    entries: &mut Vec<Entry>,
    manager: &str,
    applies: bool,
    subresource: Option<&str>,
    api_version: &str,
) -> usize {
    match entries.iter().position(|e| e.is(manager, applies, subresource, api_version)) {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: manager.to_string(),
                applies,
                api_version: api_version.to_string(),
                time: None,
                subresource: subresource.map(String::from),
                fields: Set::default(),
            });
            entries.len() - 1
        }
    }
}

/// Records an update of `live` (None: a create) to `object` by `writer` (through
/// `subresource`) in `object`'s managedFields: the writer owns what it added or changed,
/// the others lose it, and everyone loses what it removed. The writer's entry is dated
/// when it changes.
pub fn record_update(
    strategy: &dyn Strategy,
    live: Option<&Value>,
    object: &mut Value,
    writer: &Writer,
    subresource: Option<&str>,
) {
    let mut entries = match sent(object) {
        Some(given) if given.is_empty() => {
            set_entries(object, vec![]);
            return;
        }
        Some(given) => given,
        None => live.map(entries).unwrap_or_default(),
    };
    let typed = typed(strategy);
    let empty = json!({});
    let comparison = typed.compare(live.unwrap_or(&empty), object);
    let changed = owned_part(comparison.added.union(&comparison.modified), strategy, subresource);
    let removed = owned_part(comparison.removed, strategy, subresource);
    let api_version = object["apiVersion"].as_str().unwrap_or_default().to_string();
    let me = find_or_add(&mut entries, &writer.manager, false, subresource, &api_version);
    let _ = settle_others(&mut entries, me, &changed, &removed, true);
    let mine = entries[me].fields.union(&changed).difference(&removed);
    if mine != entries[me].fields || entries[me].time.is_none() {
        entries[me].fields = mine;
        entries[me].time = Some(super::objects::now());
    }
    set_entries(object, entries);
}

/// What a server-side apply is: who applies, through which subresource, whether it
/// takes fields from their owners.
pub struct Applier<'a> {
    pub manager: &'a str,
    pub subresource: Option<&'a str>,
    pub force: bool,
}

/// A server-side apply of `config` to `live` (None: the object does not exist yet): the
/// merged object, its managedFields written in. Fields others own and the configuration
/// changes are conflicts (409) unless forced.
pub fn apply(
    strategy: &dyn Strategy,
    live: Option<&Value>,
    config: &Value,
    applier: &Applier,
) -> Result<Value, ApiError> {
    let kubectl = applier.manager == KUBECTL;
    let mut merged = match settle_apply(strategy, live, config, applier, applier.force) {
        Ok(merged) => merged,
        // kubectl moving from client-side to server-side apply: fields its client-side
        // applies last set, still as they set them, are its own to change
        // (kube-apiserver's lastAppliedManager).
        Err(conflicts)
            if kubectl
                && live
                    .and_then(|live| unchanged_since_last_applied(strategy, live))
                    .is_some_and(|allowed| conflicts.iter().all(|(_, path)| allowed.contains(path))) =>
        {
            settle_apply(strategy, live, config, applier, true).map_err(conflict_error)?
        }
        Err(conflicts) => return Err(conflict_error(conflicts)),
    };
    // ... and keeps client-side apply's record of what was applied current, so that a
    // later client-side apply sees the same (lastAppliedUpdater).
    if kubectl && live.is_some_and(|l| l["metadata"]["annotations"].get(LAST_APPLIED).is_some()) {
        let mut applied = config.clone();
        if let Some(annotations) = applied["metadata"]["annotations"].as_object_mut() {
            annotations.remove(LAST_APPLIED);
            if annotations.is_empty() {
                applied["metadata"].as_object_mut().map(|m| m.remove("annotations"));
            }
        }
        merged["metadata"]["annotations"][LAST_APPLIED] = applied.to_string().into();
    }
    Ok(merged)
}

/// The field manager of `kubectl apply --server-side`.
const KUBECTL: &str = "kubectl";
/// What `kubectl apply` (client-side) last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The fields client-side apply's annotation names whose values the object still has.
fn unchanged_since_last_applied(strategy: &dyn Strategy, live: &Value) -> Option<Set> {
    let text = live["metadata"]["annotations"][LAST_APPLIED].as_str()?;
    let last: Value = serde_json::from_str(text).ok()?;
    let typed = typed(strategy);
    let comparison = typed.compare(live, &last);
    Some(typed.field_set(&last).difference(&comparison.modified).difference(&comparison.added))
}

/// One server-side apply, or its conflicts.
fn settle_apply(
    strategy: &dyn Strategy,
    live: Option<&Value>,
    config: &Value,
    applier: &Applier,
    force: bool,
) -> Result<Value, Vec<(String, Vec<String>)>> {
    let typed = typed(strategy);
    let empty = json!({});
    let live_object = live.unwrap_or(&empty);
    let api_version = config["apiVersion"].as_str().unwrap_or_default().to_string();
    let subresource = applier.subresource;
    let mut entries = live.map(entries).unwrap_or_default();
    let me = find_or_add(&mut entries, applier.manager, true, subresource, &api_version);
    let last = entries[me].fields.clone();
    let applied = owned_part(typed.field_set(config), strategy, subresource);
    let mut merged = typed.merge(live_object, config);
    let conflict_check = |entries: &mut Vec<Entry>, object: &Value| {
        let comparison = typed.compare(live_object, object);
        let changed = owned_part(comparison.added.union(&comparison.modified), strategy, subresource);
        let removed = owned_part(comparison.removed, strategy, subresource);
        settle_others(entries, me, &changed, &removed, force)
    };
    conflict_check(&mut entries, &merged)?;
    entries[me].fields = applied;
    let owned = entries.iter().fold(Set::default(), |all, e| all.union(&e.fields));
    typed.prune(&mut merged, &last, &owned);
    conflict_check(&mut entries, &merged)?;
    entries[me].api_version = api_version;
    if entries[me].fields != last || entries[me].time.is_none() {
        entries[me].time = Some(super::objects::now());
    }
    set_entries(&mut merged, entries);
    Ok(merged)
}

/// kube-apiserver's 409 for apply conflicts.
fn conflict_error(conflicts: Vec<(String, Vec<String>)>) -> ApiError {
    let message = match conflicts.as_slice() {
        [(manager, path)] => format!("Apply failed with 1 conflict: conflict with {manager}: {}", display(path)),
        _ => {
            let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
            managers.sort();
            managers.dedup();
            let mut lines = Vec::new();
            for manager in managers {
                lines.push(format!("conflicts with {manager}:"));
                lines.extend(conflicts.iter().filter(|(m, _)| m == manager).map(|(_, p)| format!("- {}", display(p))));
            }
            format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
        }
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(manager, path)| {
            json!({"type": "FieldManagerConflict", "message": format!("conflict with {manager}"), "field": display(path)})
        })
        .collect();
    ApiError::apply_conflict(message, causes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::Registry;

    fn writer(manager: &str) -> Writer {
        Writer { manager: manager.into(), applies: false }
    }

    fn applier(manager: &str, force: bool) -> Applier<'_> {
        Applier { manager, subresource: None, force }
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "d"}},
                        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    fn managers(object: &Value) -> Vec<(String, String)> {
        object["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["manager"].as_str().unwrap().to_string(), e["operation"].as_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn appliers_own_what_they_apply_and_conflict_with_other_owners() {
        let registry = Registry::builtin();
        let deployments = registry.find("apps", "v1", "deployments").unwrap();
        let mut created = deployment(2, "nginx");
        record_update(&*deployments, None, &mut created, &writer("kubectl-create"), None);
        assert_eq!(managers(&created), [("kubectl-create".to_string(), "Update".to_string())]);
        let fields = &created["metadata"]["managedFields"][0]["fieldsV1"];
        assert!(fields.get("f:apiVersion").is_none() && fields["f:metadata"].get("f:name").is_none(), "{fields}");

        // The same values: shared ownership, no conflict.
        let same = apply(&*deployments, Some(&created), &deployment(2, "nginx"), &applier("ops", false)).unwrap();
        assert_eq!(managers(&same).len(), 2);
        // Other values of fields kubectl-create owns: conflicts, then forced.
        let err = apply(&*deployments, Some(&created), &deployment(3, "httpd"), &applier("ops", false)).unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.starts_with("Apply failed with 2 conflicts: conflicts with \"kubectl-create\" using apps/v1:"),
            "{}",
            err.message
        );
        assert!(err.message.contains("- .spec.replicas"), "{}", err.message);
        let forced = apply(&*deployments, Some(&created), &deployment(3, "httpd"), &applier("ops", true)).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        let create_fields = &forced["metadata"]["managedFields"][1]["fieldsV1"];
        assert!(create_fields["f:spec"].get("f:replicas").is_none(), "taken from kubectl-create: {create_fields}");

        // What the applier stops applying, and no one else owns, goes.
        let mut config = deployment(3, "httpd");
        config["metadata"]["labels"] = json!({"team": "a"});
        let labelled = apply(&*deployments, Some(&forced), &config, &applier("ops", false)).unwrap();
        assert_eq!(labelled["metadata"]["labels"], json!({"team": "a"}));
        let unlabelled =
            apply(&*deployments, Some(&labelled), &deployment(3, "httpd"), &applier("ops", false)).unwrap();
        assert!(unlabelled["metadata"].get("labels").is_none(), "{}", unlabelled["metadata"]);
        // A no-op apply changes nothing, not even the entry's time.
        let again = apply(&*deployments, Some(&unlabelled), &deployment(3, "httpd"), &applier("ops", false)).unwrap();
        assert_eq!(again, unlabelled);
    }

    #[test]
    fn updates_take_what_they_change_and_everyone_loses_what_they_remove() {
        let registry = Registry::builtin();
        let deployments = registry.find("apps", "v1", "deployments").unwrap();
        let applied = apply(&*deployments, None, &deployment(2, "nginx"), &applier("ops", false)).unwrap();
        let mut scaled = applied.clone();
        scaled["spec"]["replicas"] = 5.into();
        record_update(&*deployments, Some(&applied), &mut scaled, &writer("kubectl-scale"), None);
        let entries = scaled["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries[1]["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        assert!(entries[0]["fieldsV1"]["f:spec"].get("f:replicas").is_none());
        let mut cleared = scaled.clone();
        cleared["metadata"]["managedFields"] = json!([{}]);
        record_update(&*deployments, Some(&scaled), &mut cleared, &writer("x"), None);
        assert!(cleared["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn the_oldest_of_more_than_ten_updaters_merge_into_ancient_changes() {
        let registry = Registry::builtin();
        let deployments = registry.find("apps", "v1", "deployments").unwrap();
        let mut object = deployment(1, "nginx");
        object["metadata"]["managedFields"] = (0..11)
            .map(|i| {
                json!({"manager": format!("writer-{i:02}"), "operation": "Update", "apiVersion": "apps/v1",
                    "time": format!("2026-01-01T00:00:{i:02}Z"), "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {format!("f:l{i}"): {}}}}})
            })
            .collect();
        let live = object.clone();
        object["metadata"]["managedFields"] = json!(null);
        object["spec"]["replicas"] = 2.into();
        record_update(&*deployments, Some(&live), &mut object, &writer("writer-11"), None);
        let entries = object["metadata"]["managedFields"].as_array().unwrap();
        let managers: Vec<&str> = entries.iter().map(|e| e["manager"].as_str().unwrap()).collect();
        assert_eq!(managers.len(), 10, "{managers:?}");
        assert_eq!(managers[0], "ancient-changes", "{managers:?}");
        assert!(!managers.iter().any(|m| ["writer-00", "writer-01", "writer-02"].contains(m)), "{managers:?}");
        assert_eq!(entries[0]["time"], "2026-01-01T00:00:02Z");
        assert_eq!(entries[0]["fieldsV1"], json!({"f:metadata": {"f:labels": {"f:l0": {}, "f:l1": {}, "f:l2": {}}}}));
    }
}
