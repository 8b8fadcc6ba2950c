//! Volumes whose files come from the API (configMap, secret, downwardAPI, projected), and
//! kubelet's atomic writer that puts them in place: the files of one version live in a
//! directory `..<time>`, the symbolic link `..data` names the current one, and each
//! visible name is a link through `..data`. Renaming a new `..data` over the old one
//! switches every file at once, so a container never reads half an update.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use super::env::{ApiObjects, PodContext, config_map_data, field_value, resource_value, secret_data};

/// A file of a volume: its path under the volume, its bytes and mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub data: Vec<u8>,
    pub mode: u32,
}

pub type Payload = BTreeMap<String, File>;

const DEFAULT_MODE: i32 = 0o644;
/// kubelet's default lifetime of a projected service account token.
const TOKEN_SECONDS: i64 = 3600;

/// Whether kubelet fills this volume from the API (and mounts it read-only).
pub fn is_api_volume(volume: &Volume) -> bool {
    volume.config_map.is_some()
        || volume.secret.is_some()
        || volume.downward_api.is_some()
        || volume.projected.is_some()
}

/// Whether the volume holds secrets, and so lives in memory (tmpfs) only.
pub fn is_secret_volume(volume: &Volume) -> bool {
    volume.secret.is_some() || volume.projected.is_some()
}

/// The files of an API-backed volume (an optional source that is missing adds none).
pub fn payload(pod: &Pod, volume: &Volume, objects: &dyn ApiObjects, context: &PodContext) -> Result<Payload> {
    let source = Sources { pod, objects, context };
    let mut payload = Payload::new();
    if let Some(s) = &volume.config_map {
        let mode = s.default_mode.unwrap_or(DEFAULT_MODE);
        source.keys_of(&mut payload, Keyed::ConfigMap, &s.name, s.items.as_deref(), mode, s.optional)?;
    } else if let Some(s) = &volume.secret {
        let mode = s.default_mode.unwrap_or(DEFAULT_MODE);
        source.keys_of(
            &mut payload,
            Keyed::Secret,
            s.secret_name.as_deref().unwrap_or_default(),
            s.items.as_deref(),
            mode,
            s.optional,
        )?;
    } else if let Some(s) = &volume.downward_api {
        source.downward_api(
            &mut payload,
            s.items.as_deref().unwrap_or_default(),
            s.default_mode.unwrap_or(DEFAULT_MODE),
        )?;
    } else if let Some(projected) = &volume.projected {
        let mode = projected.default_mode.unwrap_or(DEFAULT_MODE);
        for p in projected.sources.iter().flatten() {
            if let Some(s) = &p.config_map {
                source.keys_of(&mut payload, Keyed::ConfigMap, &s.name, s.items.as_deref(), mode, s.optional)?;
            }
            if let Some(s) = &p.secret {
                source.keys_of(&mut payload, Keyed::Secret, &s.name, s.items.as_deref(), mode, s.optional)?;
            }
            if let Some(s) = &p.downward_api {
                source.downward_api(&mut payload, s.items.as_deref().unwrap_or_default(), mode)?;
            }
            if let Some(s) = &p.service_account_token {
                let seconds = s.expiration_seconds.unwrap_or(TOKEN_SECONDS);
                let token = objects.service_account_token(pod, s.audience.as_deref(), seconds)?;
                // kubelet writes tokens 0600 unless a mode is asked for.
                let token_mode = if projected.default_mode.is_some() { mode } else { 0o600 };
                insert(&mut payload, &s.path, token.into_bytes(), token_mode)?;
            }
        }
    }
    Ok(payload)
}

/// The API objects whose keys become files.
#[derive(Clone, Copy)]
enum Keyed {
    ConfigMap,
    Secret,
}

impl Keyed {
    fn name(self) -> &'static str {
        match self {
            Keyed::ConfigMap => "configmap",
            Keyed::Secret => "secret",
        }
    }
}

/// Where a volume's files come from: the API's objects and the pod itself.
struct Sources<'a> {
    pod: &'a Pod,
    objects: &'a dyn ApiObjects,
    context: &'a PodContext,
}

impl Sources<'_> {
    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// The keys of a ConfigMap or a Secret, as files.
    fn keys_of(
        &self,
        payload: &mut Payload,
        kind: Keyed,
        name: &str,
        items: Option<&[KeyToPath]>,
        mode: i32,
        optional: Option<bool>,
    ) -> Result<()> {
        let data = match kind {
            Keyed::ConfigMap => self.objects.config_map(self.namespace(), name)?.map(|m| config_map_data(&m)),
            Keyed::Secret => self.objects.secret(self.namespace(), name)?.map(|s| secret_data(&s)),
        };
        match data {
            Some(data) => keys(payload, &bytes_of(data), items, mode, optional),
            None if optional == Some(true) => Ok(()),
            None => bail!("{} {name:?} not found", kind.name()),
        }
    }

    fn downward_api(&self, payload: &mut Payload, items: &[DownwardAPIVolumeFile], mode: i32) -> Result<()> {
        for item in items {
            let value = match (&item.field_ref, &item.resource_field_ref) {
                (Some(field), _) => field_value(self.pod, field, self.context)?,
                (None, Some(resource)) => resource_value(self.pod, None, resource, self.context)?,
                (None, None) => bail!("downwardAPI item {:?}: fieldRef or resourceFieldRef required", item.path),
            };
            insert(payload, &item.path, value.into_bytes(), item.mode.unwrap_or(mode))?;
        }
        Ok(())
    }
}

fn bytes_of(data: BTreeMap<String, String>) -> BTreeMap<String, Vec<u8>> {
    data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect()
}

/// Every key as a file of its name, or the items asked for (a missing key is an error
/// unless the source is optional).
fn keys(
    payload: &mut Payload,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: i32,
    optional: Option<bool>,
) -> Result<()> {
    match items {
        None => {
            for (key, value) in data {
                insert(payload, key, value.clone(), mode)?;
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => insert(payload, &item.path, value.clone(), item.mode.unwrap_or(mode))?,
                    None if optional == Some(true) => {}
                    None => bail!("configured to use key {:?}, but it does not exist", item.key),
                }
            }
        }
    }
    Ok(())
}

fn insert(payload: &mut Payload, path: &str, data: Vec<u8>, mode: i32) -> Result<()> {
    check_path(path)?;
    payload.insert(path.to_string(), File { data, mode: (mode & 0o777) as u32 });
    Ok(())
}

/// A relative path that stays in the volume and does not begin with `..` (kubelet's rule).
fn check_path(path: &str) -> Result<()> {
    let p = Path::new(path);
    let ok = !path.is_empty() && !path.starts_with("..") && p.components().all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        bail!("{path:?}: a volume's file path must be relative, without '..'");
    }
    Ok(())
}

/// Puts `payload` in `dir` as kubelet's AtomicWriter does; nothing happens when the
/// current version already holds exactly it. Returns whether anything changed.
pub fn write_atomically(dir: &Path, payload: &Payload) -> Result<bool> {
    let data_link = dir.join("..data");
    let current = std::fs::read_link(&data_link).ok();
    if let Some(current) = &current
        && read_version(&dir.join(current)).ok().as_ref() == Some(payload)
    {
        return Ok(false);
    }
    let stamp = runtime::logs::rfc3339_nano(std::time::SystemTime::now()).replace([':', '-', 'T', '.'], "_");
    let version = format!("..{stamp}");
    let version_dir = dir.join(&version);
    std::fs::create_dir_all(&version_dir).with_context(|| format!("create {}", version_dir.display()))?;
    std::fs::set_permissions(&version_dir, std::fs::Permissions::from_mode(0o755))?;
    for (path, file) in payload {
        let target = version_dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, &file.data).with_context(|| format!("write {}", target.display()))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file.mode))?;
    }
    let temporary = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(&version, &temporary)?;
    std::fs::rename(&temporary, &data_link).context("switch ..data")?;
    // The visible names: one link per top-level entry, through ..data.
    let wanted: std::collections::BTreeSet<String> =
        payload.keys().map(|p| p.split('/').next().unwrap_or(p).to_string()).collect();
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)?.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale_link = !name.starts_with("..") && !wanted.contains(&name);
        let stale_version = name.starts_with("..") && name != "..data" && name != version;
        if stale_link || stale_version {
            remove_any(&entry.path())?;
        }
    }
    Ok(true)
}

/// Gives a volume to the pod's fsGroup, as kubelet's SetVolumeOwnership does: every file
/// group-owned by it and group-readable (group-writable too in a `writable` volume),
/// directories set-group-ID so what is made in them stays the group's.
pub fn give_to_group(dir: &Path, group: u32, writable: bool) -> Result<()> {
    let gid = Some(nix::unistd::Gid::from_raw(group));
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).with_context(|| format!("{}", path.display()))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        nix::unistd::chown(&path, None, gid).with_context(|| format!("chown {}", path.display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        let mut wanted = mode | 0o040 | if writable { 0o020 } else { 0 };
        if meta.is_dir() {
            wanted |= 0o2010;
            stack.extend(std::fs::read_dir(&path)?.filter_map(|e| e.ok()).map(|e| e.path()));
        }
        if wanted != mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wanted))?;
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The files of one version directory, as a payload.
fn read_version(dir: &Path) -> io::Result<Payload> {
    let mut payload = Payload::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push((entry.path(), format!("{name}/")));
            } else {
                let data = std::fs::read(entry.path())?;
                payload.insert(name, File { data, mode: meta.permissions().mode() & 0o777 });
            }
        }
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> File {
        File { data: text.as_bytes().to_vec(), mode: 0o644 }
    }

    #[test]
    fn versions_switch_whole_and_stale_names_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut payload = Payload::new();
        payload.insert("a".into(), file("one"));
        payload.insert("conf/b".into(), file("two"));
        assert!(write_atomically(dir.path(), &payload).unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(dir.path().join("conf/b")).unwrap(), "two");
        assert_eq!(std::fs::read_link(dir.path().join("a")).unwrap(), Path::new("..data/a"));
        assert!(!write_atomically(dir.path(), &payload).unwrap(), "the same payload changes nothing");

        payload.remove("conf/b");
        payload.insert("a".into(), File { data: b"three".to_vec(), mode: 0o600 });
        assert!(write_atomically(dir.path(), &payload).unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "three");
        assert!(std::fs::symlink_metadata(dir.path().join("conf")).is_err());
        let entries: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(entries.len(), 3, "a, ..data and one version: {entries:?}");
        let mode = std::fs::metadata(dir.path().join("a")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn paths_stay_in_the_volume() {
        let mut payload = Payload::new();
        for bad in ["../x", "/etc/passwd", "a/../../b", "..data", ""] {
            assert!(insert(&mut payload, bad, vec![], 0o644).is_err(), "{bad}");
        }
        assert!(insert(&mut payload, "a/b.conf", vec![], 0o644).is_ok());
    }
}
