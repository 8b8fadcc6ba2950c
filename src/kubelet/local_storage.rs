//! The node's part of the local-path provisioner (rancher's runs a helper pod for it): a
//! Released volume of the provisioner's on this node whose reclaim policy is Delete has
//! its directory removed, then the volume itself. Only directories under the node's own
//! storage directory are ever removed, whatever a volume says.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Api;
use tokio::sync::Notify;

use crate::controllers::LOCAL_PATH_PROVISIONER;

/// How long a reclaim that failed waits before it is tried again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// The directory of `volume` to remove, if it is a Released Delete volume of the
/// provisioner's on `node`, under `storage`.
pub fn to_reclaim(volume: &PersistentVolume, node: &str, storage: &Path) -> Option<PathBuf> {
    let annotations = volume.metadata.annotations.as_ref()?;
    if annotations.get("pv.kubernetes.io/provisioned-by").map(String::as_str) != Some(LOCAL_PATH_PROVISIONER) {
        return None;
    }
    let spec = volume.spec.as_ref()?;
    let released = volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    if !released || spec.persistent_volume_reclaim_policy.as_deref() != Some("Delete") {
        return None;
    }
    let terms = &spec.node_affinity.as_ref()?.required.as_ref()?.node_selector_terms;
    let here = terms.iter().flat_map(|t| t.match_expressions.iter().flatten()).any(|e| {
        e.key == "kubernetes.io/hostname" && e.operator == "In" && e.values.iter().flatten().any(|v| v == node)
    });
    let path = PathBuf::from(&spec.host_path.as_ref()?.path);
    let inside = path.parent() == Some(storage) && path.file_name().is_some();
    (here && inside).then_some(path)
}

/// Reclaims this node's volumes until the process ends.
pub async fn run(client: kube::Client, node: String, storage: PathBuf) {
    let changed = Arc::new(Notify::new());
    let volumes = crate::client::reflect::<PersistentVolume>(client.clone(), Some(changed.clone()));
    let api: Api<PersistentVolume> = Api::all(client);
    let mut failed = false;
    loop {
        // What failed is tried again after a while, whatever else changes.
        tokio::select! {
            () = changed.notified() => {}
            () = tokio::time::sleep(RETRY), if failed => {}
        }
        failed = false;
        for volume in volumes.state() {
            let Some(path) = to_reclaim(&volume, &node, &storage) else { continue };
            let name = volume.metadata.name.clone().unwrap_or_default();
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!("volume {name}: remove {}: {e}", path.display());
                    failed = true;
                    continue;
                }
            }
            let params = crate::client::delete_params(volume.metadata.uid.clone().unwrap_or_default(), None);
            if let Err(e) = api.delete(&name, &params).await {
                tracing::warn!("volume {name}: delete: {}", crate::client::message(&e));
                failed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn volume(node: &str, path: &str, phase: &str, policy: &str) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": "pvc-1", "annotations": {"pv.kubernetes.io/provisioned-by": LOCAL_PATH_PROVISIONER}},
            "spec": {"persistentVolumeReclaimPolicy": policy, "hostPath": {"path": path},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn only_released_delete_volumes_of_this_node_under_its_storage_are_reclaimed() {
        let storage = Path::new("/var/lib/podctl/storage");
        let path = "/var/lib/podctl/storage/pvc-1_default_data";
        assert_eq!(to_reclaim(&volume("a", path, "Released", "Delete"), "a", storage), Some(PathBuf::from(path)));
        assert_eq!(to_reclaim(&volume("b", path, "Released", "Delete"), "a", storage), None, "another node's");
        assert_eq!(to_reclaim(&volume("a", path, "Bound", "Delete"), "a", storage), None, "still bound");
        assert_eq!(to_reclaim(&volume("a", path, "Released", "Retain"), "a", storage), None, "retained");
        assert_eq!(to_reclaim(&volume("a", "/etc", "Released", "Delete"), "a", storage), None, "outside the storage");
        assert_eq!(to_reclaim(&volume("a", "/var/lib/podctl/storage/../x", "Released", "Delete"), "a", storage), None);
    }
}
