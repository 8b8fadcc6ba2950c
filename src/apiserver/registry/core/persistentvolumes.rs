//! persistentvolumes (core/v1, cluster-scoped): storage with exactly one source, a size
//! and access modes, kept (Retain) after its claim goes unless told otherwise; its source
//! fixed once made.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeSpec, PersistentVolumeStatus};
use serde_json::Value;

use super::super::checks::{immutable, one_of};
use super::super::columns::{self, AGE, NAME};
use super::super::pod_template::default_string;
use super::super::{Cause, Column, Rules};
use super::persistentvolumeclaims::{ACCESS_MODES, access_modes};
use crate::quantity::Quantity;

pub struct PersistentVolumes;

/// The fields of a PersistentVolumeSpec that are volume sources (one and only one).
const SOURCES: [&str; 20] = [
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "glusterfs",
    "hostPath",
    "iscsi",
    "local",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
];
const MORE_SOURCES: [&str; 2] = ["storageos", "vsphereVolume"];

fn sources(spec: &Value) -> Vec<&'static str> {
    SOURCES.iter().chain(&MORE_SOURCES).copied().filter(|s| spec.get(*s).is_some_and(|v| !v.is_null())).collect()
}

impl Rules for PersistentVolumes {
    type Object = PersistentVolume;
    const SHORT_NAMES: &'static [&'static str] = &["pv"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];

    fn default(volume: &mut PersistentVolume) {
        let spec = volume.spec.get_or_insert_with(PersistentVolumeSpec::default);
        default_string(&mut spec.persistent_volume_reclaim_policy, "Retain");
        default_string(&mut spec.volume_mode, "Filesystem");
        if let Some(host_path) = spec.host_path.as_mut() {
            host_path.type_.get_or_insert_with(String::new);
        }
        let status = volume.status.get_or_insert_with(PersistentVolumeStatus::default);
        default_string(&mut status.phase, "Pending");
    }

    fn prepare_for_create(volume: &mut PersistentVolume) {
        volume.status = Some(PersistentVolumeStatus {
            phase: Some("Pending".into()),
            last_phase_transition_time: k8s_openapi::jiff::Timestamp::from_second(
                time::OffsetDateTime::now_utc().unix_timestamp(),
            )
            .ok()
            .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
            ..Default::default()
        });
        // StorageObjectInUseProtection admission.
        let finalizers = volume.metadata.finalizers.get_or_insert_with(Vec::new);
        if !finalizers.iter().any(|f| f == "kubernetes.io/pv-protection") {
            finalizers.push("kubernetes.io/pv-protection".into());
        }
    }

    fn validate(volume: &PersistentVolume) -> Vec<Cause> {
        let Some(spec) = volume.spec.as_ref() else { return vec![("spec".into(), "Required value".into())] };
        let json = serde_json::to_value(spec).unwrap_or_default();
        let mut causes = Vec::new();
        match sources(&json).len() {
            0 => causes.push(("spec".into(), "Required value: must specify a volume type".into())),
            1 => {}
            _ => causes.push(("spec".into(), "Forbidden: may not specify more than 1 volume type".into())),
        }
        match spec.capacity.as_ref().and_then(|c| c.get("storage")) {
            None => causes.push(("spec.capacity".into(), "Required value".into())),
            Some(q) if Quantity::parse(&q.0).is_none_or(|q| q.is_negative()) => {
                causes.push((
                    "spec.capacity[storage]".into(),
                    format!("Invalid value: \"{}\": must be a quantity of 0 or more", q.0),
                ));
            }
            Some(_) => {}
        }
        let modes = spec.access_modes.clone().unwrap_or_default();
        if modes.is_empty() {
            causes.push(("spec.accessModes".into(), "Required value".into()));
        }
        for mode in &modes {
            causes.extend(one_of("spec.accessModes", Some(mode), &ACCESS_MODES));
        }
        let policy = spec.persistent_volume_reclaim_policy.as_deref();
        causes.extend(one_of("spec.persistentVolumeReclaimPolicy", policy, &["Delete", "Recycle", "Retain"]));
        causes.extend(one_of("spec.volumeMode", spec.volume_mode.as_deref(), &["Block", "Filesystem"]));
        if spec.local.is_some() && spec.node_affinity.is_none() {
            causes.push(("spec.nodeAffinity".into(), "Required value: Local volume requires node affinity".into()));
        }
        if spec.host_path.as_ref().is_some_and(|h| h.path == "/") && policy == Some("Recycle") {
            causes.push((
                "spec.persistentVolumeReclaimPolicy".into(),
                "Forbidden: may not be 'recycle' for a hostPath mount of '/'".into(),
            ));
        }
        causes
    }

    fn validate_update(new: &PersistentVolume, old: &PersistentVolume) -> Vec<Cause> {
        let (Some(new), Some(old)) = (new.spec.as_ref(), old.spec.as_ref()) else { return vec![] };
        let source = |spec: &PersistentVolumeSpec| {
            let json = serde_json::to_value(spec).unwrap_or_default();
            sources(&json).into_iter().map(|s| (s, json[s].clone())).collect::<Vec<_>>()
        };
        let mut causes = Vec::new();
        if source(new) != source(old) {
            causes.push((
                "spec.persistentvolumesource".into(),
                "Forbidden: spec.persistentvolumesource is immutable after creation".into(),
            ));
        }
        causes.extend(immutable(&new.volume_mode, &old.volume_mode, "spec.volumeMode"));
        if old.node_affinity.is_some() {
            causes.extend(immutable(&new.node_affinity, &old.node_affinity, "spec.nodeAffinity"));
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            columns::string("Capacity", 0, |o| o["spec"]["capacity"]["storage"].as_str().unwrap_or("").into()),
            columns::string("Access Modes", 0, |o| access_modes(&o["spec"]["accessModes"])),
            columns::string("Reclaim Policy", 0, |o| o["spec"]["persistentVolumeReclaimPolicy"].clone()),
            columns::string("Status", 0, |o| match o["metadata"].get("deletionTimestamp") {
                Some(_) => "Terminating".into(),
                None => o["status"]["phase"].clone(),
            }),
            columns::string("Claim", 0, |o| match o["spec"]["claimRef"]["name"].as_str() {
                Some(name) => format!("{}/{name}", o["spec"]["claimRef"]["namespace"].as_str().unwrap_or("")).into(),
                None => "".into(),
            }),
            columns::string("StorageClass", 0, |o| o["spec"]["storageClassName"].as_str().unwrap_or("").into()),
            columns::string("VolumeAttributesClass", 0, |o| {
                o["spec"]["volumeAttributesClassName"].as_str().unwrap_or("<unset>").into()
            }),
            columns::string("Reason", 0, |o| o["status"]["reason"].as_str().unwrap_or("").into()),
            AGE,
            columns::string("VolumeMode", 1, |o| o["spec"]["volumeMode"].as_str().unwrap_or("<unset>").into()),
        ]
    }
}
