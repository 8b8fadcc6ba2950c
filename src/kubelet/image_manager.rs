//! Images for the node's pods, as kubelet's image manager gets them: from the store, or
//! pulled as the container's imagePullPolicy says, with the pod's imagePullSecrets. Pods
//! that need one image wait for one pull.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use images::{Image, Platform, PullOptions, RegistryCredentials, Store};

/// Why a container's image is not there (the container's waiting reason, and its message).
#[derive(Debug)]
pub enum ImageError {
    /// `ErrImageNeverPull`.
    NeverPull(String),
    /// `InvalidImageName`.
    InvalidName(String),
    /// `ErrImagePull` (then `ImagePullBackOff` while it waits to try again).
    Pull(String),
}

impl ImageError {
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::NeverPull(_) => "ErrImageNeverPull",
            ImageError::InvalidName(_) => "InvalidImageName",
            ImageError::Pull(_) => "ErrImagePull",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            ImageError::NeverPull(m) | ImageError::InvalidName(m) | ImageError::Pull(m) => m,
        }
    }
}

/// kubelet's default pull policy: Always for `:latest` or no tag, else IfNotPresent.
pub fn pull_policy(image: &str, policy: Option<&str>) -> String {
    if let Some(policy) = policy.filter(|p| !p.is_empty()) {
        return policy.to_string();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains('@') {
        return "IfNotPresent".into();
    }
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent".into(),
        _ => "Always".into(),
    }
}

pub struct ImageManager {
    pub store: Store,
    /// Registries spoken to over plain HTTP (`--insecure-registry`).
    insecure: Vec<String>,
    /// One lock per image being pulled: a second pod waits for the first's pull.
    pulling: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Each reference's image ID (`repo@digest`), as last resolved.
    ids: Mutex<HashMap<String, String>>,
}

/// What `ensure` did.
pub struct Ensured {
    pub image: Image,
    /// Pulled now (not found in the store).
    pub pulled: bool,
}

impl ImageManager {
    pub fn new(store: Store, insecure: Vec<String>) -> ImageManager {
        ImageManager { store, insecure, pulling: Mutex::new(HashMap::new()), ids: Mutex::new(HashMap::new()) }
    }

    /// The image ID a container status shows for `reference` (kubelet's imageID: the
    /// repository at the manifest digest), from what `ensure` last found.
    pub fn image_id(&self, reference: &str) -> String {
        self.ids.lock().expect("image ids").get(reference).cloned().unwrap_or_default()
    }

    fn found(&self, reference: &str, image: Image, pulled: bool) -> Ensured {
        let repository = reference.split('@').next().unwrap_or(reference);
        let repository = match repository.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => repo,
            _ => repository,
        };
        let id = format!("{repository}@{}", image.manifest_digest);
        self.ids.lock().expect("image ids").insert(reference.to_string(), id);
        Ensured { image, pulled }
    }

    /// The image, from the store or pulled as `policy` says; blocks (run it off the
    /// async threads).
    pub fn ensure(
        &self,
        reference: &str,
        policy: &str,
        credentials: &RegistryCredentials,
    ) -> Result<Ensured, ImageError> {
        let name: images::ImageName = reference.parse().map_err(|e: images::Error| {
            ImageError::InvalidName(format!("Failed to apply default image tag {reference:?}: {e}"))
        })?;
        let present = || self.store.resolve(reference).ok();
        match policy {
            "Never" => {
                return present().map(|image| self.found(reference, image, false)).ok_or_else(|| {
                    ImageError::NeverPull(format!(
                        "Container image {reference:?} is not present with pull policy of Never"
                    ))
                });
            }
            "IfNotPresent" => {
                if let Some(image) = present() {
                    return Ok(self.found(reference, image, false));
                }
            }
            _ => {}
        }
        let lock = self.pulling.lock().expect("pull locks").entry(reference.to_string()).or_default().clone();
        let _one_pull = lock.lock().expect("pull lock");
        // Pulled by another pod while this one waited.
        if policy == "IfNotPresent"
            && let Some(image) = present()
        {
            return Ok(self.found(reference, image, false));
        }
        let options = PullOptions {
            insecure: self.insecure.iter().any(|r| r == name.domain()),
            credentials: credentials.clone(),
            platform: Platform::host(),
            unpack: true,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ImageError::Pull(e.to_string()))?;
        let pulled = runtime.block_on(self.store.pull(reference, &options, &()));
        self.pulling.lock().expect("pull locks").remove(reference);
        match pulled {
            Ok(image) => Ok(self.found(reference, image, true)),
            Err(e) => Err(ImageError::Pull(format!("failed to pull and unpack image {reference:?}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policies() {
        assert_eq!(pull_policy("busybox", None), "Always");
        assert_eq!(pull_policy("busybox:latest", None), "Always");
        assert_eq!(pull_policy("localhost:5000/busybox", None), "Always");
        assert_eq!(pull_policy("localhost:5000/busybox:1.36", None), "IfNotPresent");
        assert_eq!(pull_policy("busybox@sha256:abc", None), "IfNotPresent");
        assert_eq!(pull_policy("busybox", Some("Never")), "Never");
    }
}
