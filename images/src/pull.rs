//! `podctl image pull`: the Distribution API v2, through `oci-client` (which answers the
//! `WWW-Authenticate` challenges: bearer tokens and basic auth).

use std::io::{Read, Write};
use std::path::PathBuf;

use bytes::Bytes;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use crate::store::{MAX_JSON_BLOB, layers_with_diff_ids};
use crate::{Digest, Error, Image, ImageName, Platform, RegistryCredentials, Result, Store, unpack};

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
    /// Unpack layers into snapshots while they download. Without it, a layer is unpacked
    /// when a container first needs it ([`Store::lower_dirs`]).
    pub unpack: bool,
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
        let reference = &name.reference();
        let registry_error = |e: oci_client::errors::OciDistributionError| Error::Registry {
            reference: name.to_string(),
            reason: with_causes(&e),
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
        let manifest_what = format!("image {name}: manifest");
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::malformed(&manifest_what, e))?;
        if manifest.schema_version() != 2 {
            return Err(Error::malformed(&manifest_what, "only schema version 2 manifests are supported"));
        }

        let config = manifest.config();
        let config_digest: Digest = config.digest().to_string().parse()?;
        let what = format!("image {name}: config");
        if !self.has_blob(&config_digest) {
            if config.size() > MAX_JSON_BLOB {
                return Err(Error::malformed(&what, format!("{} bytes is larger than {MAX_JSON_BLOB}", config.size())));
            }
            let mut buf = Vec::new();
            client.pull_blob(reference, config_digest.as_str(), &mut buf).await.map_err(registry_error)?;
            self.write_blob(&buf, Some((&config_digest, config.size())), &what)?;
        }
        let image_config: ImageConfiguration = serde_json::from_slice(&self.read_json_blob(&config_digest, &what)?)
            .map_err(|e| Error::malformed(&what, e))?;
        let layers = layers_with_diff_ids(&manifest, &image_config, &manifest_what)?;

        futures_util::stream::iter(layers)
            .map(|(layer, diff_id)| {
                let unpack_to = options.unpack.then(|| self.snapshot_dir(&diff_id)).filter(|dir| !dir.exists());
                self.fetch_layer(&client, reference, layer, diff_id, unpack_to, name, progress)
            })
            .buffer_unordered(CONCURRENT_LAYERS)
            .try_collect::<Vec<()>>()
            .await?;

        // Only now, with every blob present, does the manifest enter the store.
        self.write_blob(&bytes, Some((&digest, bytes.len() as u64)), &manifest_what)?;
        let names = name.tagged().into_iter().collect();
        Ok(self.complete(vec![(digest, names)], options.unpack)?.remove(0))
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
            .map_err(|e| Error::Registry { reference: name.to_string(), reason: with_causes(&e) })?;
        if bytes.len() as u64 > MAX_JSON_BLOB {
            return Err(Error::malformed(format!("image {name}: manifest"), "too large"));
        }
        let digest = Digest::of(&bytes);
        if let Some(expected) = reference.digest()
            && expected != digest.as_str()
        {
            return Err(Error::DigestMismatch {
                what: format!("image {name}: manifest"),
                expected: expected.parse()?,
                actual: digest,
            });
        }
        Ok((bytes.to_vec(), digest))
    }

    /// Downloads a layer into its blob and, given `unpack_to`, unpacks it there at the same
    /// time: the unpacker reads the same bytes as they arrive.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_layer(
        &self,
        client: &Client,
        reference: &Reference,
        layer: &Descriptor,
        diff_id: Digest,
        unpack_to: Option<PathBuf>,
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
        let registry_error = |e: &dyn std::error::Error| Error::Registry {
            reference: name.to_string(),
            reason: format!("layer {digest}: {}", with_causes(e)),
        };
        let mut stream = client.pull_blob_stream(reference, digest.as_str()).await.map_err(|e| registry_error(&e))?;
        let mut writer = self.blob_writer(&what)?;
        let (mut feed, unpacker) = match unpack_to {
            None => (None, None),
            Some(target) => {
                let (tx, rx) = tokio::sync::mpsc::channel(32);
                let unpack =
                    move || unpack::unpack_layer(ChannelReader { rx, current: Bytes::new() }, &diff_id, &target);
                (Some(tx), Some(tokio::task::spawn_blocking(unpack)))
            }
        };
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| registry_error(&e))?;
            written += chunk.len() as u64;
            if written > layer.size() {
                return Err(Error::SizeMismatch { what, expected: layer.size(), actual: written });
            }
            writer.write_all(&chunk).map_err(Error::io(format!("{what}: write")))?;
            progress.layer_advanced(&digest, chunk.len() as u64);
            if let Some(tx) = &feed
                && tx.send(chunk).await.is_err()
            {
                // The unpacker stopped; it reports why below.
                feed = None;
            }
        }
        drop(feed);
        let committed = writer.commit(Some((&digest, layer.size())));
        let unpacked = match unpacker {
            Some(handle) => {
                handle.await.expect("unpacker does not panic").map_err(|e| e.into_error(&name.to_string(), &digest))
            }
            None => Ok(()),
        };
        committed?;
        unpacked?;
        progress.layer_finished(&digest, false);
        Ok(())
    }
}

/// Reads the chunks a download hands over; ends when the sender is dropped.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(next) => self.current = next,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
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

/// An error with the chain of what caused it (`error sending request` says little; the
/// connection refused, the name not resolved or the certificate refused under it say
/// what to do).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}
