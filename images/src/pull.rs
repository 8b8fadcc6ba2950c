//! `podctl image pull`: the Distribution API v2, through `oci-client` (which answers the
//! `WWW-Authenticate` challenges: bearer tokens and basic auth).

use std::io::Write;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{ImageIndex, ImageManifest};

use crate::store::MAX_JSON_BLOB;
use crate::{Digest, Error, Image, ImageName, Platform, RegistryCredentials, Result, Store};

/// Layers downloaded at once, as docker and containerd do by default.
const CONCURRENT_LAYERS: usize = 3;

const ACCEPTED_MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

pub struct PullOptions {
    /// Plain HTTP (for a registry on loopback without TLS).
    pub insecure: bool,
    pub credentials: RegistryCredentials,
    pub platform: Platform,
}

/// Told about each layer's download; the CLI draws progress bars with it.
pub trait PullProgress: Send + Sync {
    fn layer_started(&self, _digest: &Digest, _size: u64) {}
    fn layer_advanced(&self, _digest: &Digest, _bytes: u64) {}
    /// `cached`: the blob was already in the store and was not fetched.
    fn layer_finished(&self, _digest: &Digest, _cached: bool) {}
}

impl PullProgress for () {}

impl Store {
    /// Pulls `reference` for `options.platform`. Blobs already in the store are not fetched
    /// again, so an interrupted pull resumes where it stopped.
    pub async fn pull(&self, reference: &str, options: &PullOptions, progress: &dyn PullProgress) -> Result<Image> {
        let name: ImageName = reference.parse()?;
        let writer = self.writer_lock()?;
        let result = self.pull_locked(&name, options, progress).await;
        if result.is_err() {
            self.collect_garbage_if_idle(writer);
        }
        result
    }

    async fn pull_locked(&self, name: &ImageName, options: &PullOptions, progress: &dyn PullProgress) -> Result<Image> {
        let reference = name.reference();
        let registry_error = |e: oci_client::errors::OciDistributionError| Error::Registry {
            reference: name.to_string(),
            reason: e.to_string(),
        };
        let client = Client::new(ClientConfig {
            protocol: if options.insecure { ClientProtocol::Http } else { ClientProtocol::Https },
            ..Default::default()
        });
        let auth = match options.credentials.for_registry(reference.registry()) {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        };

        let (mut bytes, mut digest) = self.fetch_manifest(&client, reference, &auth, name).await?;
        if is_index(&bytes) {
            let what = format!("image {name}: index");
            let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| Error::malformed(&what, e))?;
            let chosen = options
                .platform
                .choose(&index)
                .ok_or_else(|| Error::NoPlatform { image: name.to_string(), platform: options.platform.to_string() })?;
            let platform_ref = reference.clone_with_digest(index.manifests()[chosen].digest().to_string());
            (bytes, digest) = self.fetch_manifest(&client, &platform_ref, &auth, name).await?;
        }
        let what = format!("image {name}: manifest");
        let manifest: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| Error::malformed(&what, e))?;
        if manifest.schema_version() != 2 {
            return Err(Error::malformed(&what, "only schema version 2 manifests are supported"));
        }

        let config = manifest.config();
        let config_digest: Digest = config.digest().to_string().parse()?;
        if !self.has_blob(&config_digest) {
            let what = format!("image {name}: config");
            if config.size() > MAX_JSON_BLOB {
                return Err(Error::malformed(&what, format!("{} bytes is larger than {MAX_JSON_BLOB}", config.size())));
            }
            let mut buf = Vec::new();
            client.pull_blob(reference, config_digest.as_str(), &mut buf).await.map_err(registry_error)?;
            self.write_blob(&buf, Some((&config_digest, config.size())), &what)?;
        }

        futures_util::stream::iter(manifest.layers())
            .map(|layer| self.fetch_layer(&client, reference, layer, name, progress))
            .buffer_unordered(CONCURRENT_LAYERS)
            .try_collect::<Vec<()>>()
            .await?;

        // Only now, with every blob present, does the manifest enter the store.
        self.write_blob(&bytes, Some((&digest, bytes.len() as u64)), &what)?;
        let names = name.tagged().into_iter().collect();
        self.complete(digest, names)
    }

    async fn fetch_manifest(
        &self,
        client: &Client,
        reference: &Reference,
        auth: &RegistryAuth,
        name: &ImageName,
    ) -> Result<(Vec<u8>, Digest)> {
        let (bytes, _) = client
            .pull_manifest_raw(reference, auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| Error::Registry { reference: name.to_string(), reason: e.to_string() })?;
        if bytes.len() as u64 > MAX_JSON_BLOB {
            return Err(Error::malformed(format!("image {name}: manifest"), "too large"));
        }
        let digest = Digest::of(&bytes);
        if let Some(expected) = reference.digest() {
            if expected != digest.as_str() {
                return Err(Error::DigestMismatch {
                    what: format!("image {name}: manifest"),
                    expected: expected.parse()?,
                    actual: digest,
                });
            }
        }
        Ok((bytes.to_vec(), digest))
    }

    async fn fetch_layer(
        &self,
        client: &Client,
        reference: &Reference,
        layer: &oci_spec::image::Descriptor,
        name: &ImageName,
        progress: &dyn PullProgress,
    ) -> Result<()> {
        let digest: Digest = layer.digest().to_string().parse()?;
        if self.has_blob(&digest) {
            progress.layer_finished(&digest, true);
            return Ok(());
        }
        let what = format!("image {name}: layer {digest}");
        progress.layer_started(&digest, layer.size());
        let registry_error = |e: oci_client::errors::OciDistributionError| Error::Registry {
            reference: name.to_string(),
            reason: format!("layer {digest}: {e}"),
        };
        let mut stream = client.pull_blob_stream(reference, digest.as_str()).await.map_err(registry_error)?;
        let mut writer = self.blob_writer(&what)?;
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| Error::Registry { reference: name.to_string(), reason: format!("layer {digest}: {e}") })?;
            written += chunk.len() as u64;
            if written > layer.size() {
                return Err(Error::SizeMismatch { what, expected: layer.size(), actual: written });
            }
            writer.write_all(&chunk).map_err(Error::io(format!("{what}: write")))?;
            progress.layer_advanced(&digest, chunk.len() as u64);
        }
        writer.commit(Some((&digest, layer.size())))?;
        progress.layer_finished(&digest, false);
        Ok(())
    }
}

/// An image index or docker manifest list, by its `mediaType` or, when that is absent as
/// OCI allows, by having `manifests` rather than `layers`.
fn is_index(bytes: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return false;
    };
    match value.get("mediaType").and_then(|m| m.as_str()) {
        Some(m) => m.contains("index") || m.contains("manifest.list"),
        None => value.get("manifests").is_some() && value.get("layers").is_none(),
    }
}
