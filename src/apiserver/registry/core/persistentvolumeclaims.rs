//! persistentvolumeclaims (core/v1): a claim asks for access modes and a size; once made
//! only its requested size grows (and its volume is named once).

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus};

use super::super::checks::{immutable, one_of};
use super::super::columns::{self, AGE, NAME};
use super::super::pod_template::{default_string, unset};
use super::super::{Cause, Column, Rules};
use crate::quantity::Quantity;

pub struct PersistentVolumeClaims;

pub const ACCESS_MODES: [&str; 4] = ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"];

/// A claim's defaults, also those of a stateful set's claim templates.
pub fn default_claim(claim: &mut PersistentVolumeClaim) {
    let spec = claim.spec.get_or_insert_with(PersistentVolumeClaimSpec::default);
    default_string(&mut spec.volume_mode, "Filesystem");
    let status = claim.status.get_or_insert_with(PersistentVolumeClaimStatus::default);
    default_string(&mut status.phase, "Pending");
}

fn requested_storage(claim: &PersistentVolumeClaim) -> Option<Quantity> {
    let requests = claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    Quantity::parse(&requests.get("storage")?.0)
}

/// Access modes abbreviated as `kubectl get pv,pvc` prints them.
pub fn access_modes(modes: &serde_json::Value) -> serde_json::Value {
    let short: Vec<&str> = modes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m.as_str()? {
            "ReadWriteOnce" => Some("RWO"),
            "ReadOnlyMany" => Some("ROX"),
            "ReadWriteMany" => Some("RWX"),
            "ReadWriteOncePod" => Some("RWOP"),
            _ => None,
        })
        .collect();
    short.join(",").into()
}

impl Rules for PersistentVolumeClaims {
    type Object = PersistentVolumeClaim;
    const SHORT_NAMES: &'static [&'static str] = &["pvc"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];

    fn default(claim: &mut PersistentVolumeClaim) {
        default_claim(claim);
    }

    fn prepare_for_create(claim: &mut PersistentVolumeClaim) {
        claim.status = Some(PersistentVolumeClaimStatus { phase: Some("Pending".into()), ..Default::default() });
        // StorageObjectInUseProtection admission.
        let finalizers = claim.metadata.finalizers.get_or_insert_with(Vec::new);
        if !finalizers.iter().any(|f| f == "kubernetes.io/pvc-protection") {
            finalizers.push("kubernetes.io/pvc-protection".into());
        }
    }

    fn validate(claim: &PersistentVolumeClaim) -> Vec<Cause> {
        let Some(spec) = claim.spec.as_ref() else { return vec![("spec".into(), "Required value".into())] };
        let mut causes = Vec::new();
        let modes = spec.access_modes.clone().unwrap_or_default();
        if modes.is_empty() {
            causes.push(("spec.accessModes".into(), "Required value: at least 1 access mode is required".into()));
        }
        for mode in &modes {
            causes.extend(one_of("spec.accessModes", Some(mode), &ACCESS_MODES));
        }
        if modes.len() > 1 && modes.iter().any(|m| m == "ReadWriteOncePod") {
            causes.push((
                "spec.accessModes".into(),
                "Forbidden: may not use ReadWriteOncePod with other access modes".into(),
            ));
        }
        match requested_storage(claim) {
            None => causes.push(("spec.resources[storage]".into(), "Required value".into())),
            Some(q) if q.is_negative() || q.is_zero() => {
                causes.push(("spec.resources[storage]".into(), "Invalid value: must be greater than zero".into()))
            }
            Some(_) => {}
        }
        causes.extend(one_of("spec.volumeMode", spec.volume_mode.as_deref(), &["Block", "Filesystem"]));
        causes
    }

    fn validate_update(new: &PersistentVolumeClaim, old: &PersistentVolumeClaim) -> Vec<Cause> {
        let (Some(new_spec), Some(old_spec)) = (new.spec.as_ref(), old.spec.as_ref()) else { return vec![] };
        let mut causes = Vec::new();
        // What may change: the requested size, the volume named once, a class set once.
        let mut rest = new_spec.clone();
        rest.resources = old_spec.resources.clone();
        rest.volume_attributes_class_name = old_spec.volume_attributes_class_name.clone();
        if unset(&old_spec.volume_name) {
            rest.volume_name = old_spec.volume_name.clone();
        }
        if old_spec.storage_class_name.is_none() {
            rest.storage_class_name = None;
        }
        if rest != *old_spec {
            causes.push((
                "spec".into(),
                "Forbidden: spec is immutable after creation except resources.requests and \
                 volumeAttributesClassName for bound claims"
                    .into(),
            ));
        }
        if let (Some(new_size), Some(old_size)) = (requested_storage(new), requested_storage(old))
            && new_size < old_size
        {
            causes.push((
                "spec.resources.requests.storage".into(),
                "Forbidden: field can not be less than previous value".into(),
            ));
        }
        causes.extend(immutable(&new_spec.volume_mode, &old_spec.volume_mode, "spec.volumeMode"));
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            columns::string("Status", 0, |o| match o["metadata"].get("deletionTimestamp") {
                Some(_) => "Terminating".into(),
                None => o["status"]["phase"].clone(),
            }),
            columns::string("Volume", 0, |o| o["spec"]["volumeName"].as_str().unwrap_or("").into()),
            columns::string("Capacity", 0, |o| match o["spec"]["volumeName"].as_str() {
                Some(v) if !v.is_empty() => o["status"]["capacity"]["storage"].as_str().unwrap_or("").into(),
                _ => "".into(),
            }),
            columns::string("Access Modes", 0, |o| match o["spec"]["volumeName"].as_str() {
                Some(v) if !v.is_empty() => access_modes(&o["status"]["accessModes"]),
                _ => "".into(),
            }),
            columns::string("StorageClass", 0, |o| o["spec"]["storageClassName"].as_str().unwrap_or("").into()),
            columns::string("VolumeAttributesClass", 0, |o| {
                o["spec"]["volumeAttributesClassName"].as_str().unwrap_or("<unset>").into()
            }),
            AGE,
            columns::string("VolumeMode", 1, |o| o["spec"]["volumeMode"].as_str().unwrap_or("<unset>").into()),
        ]
    }
}
