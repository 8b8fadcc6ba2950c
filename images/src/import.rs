//! `podctl image import`: OCI image layout directories, `oci-archive` and `docker-archive`
//! tarballs. The format is detected from the files present, not flagged.

use std::io::{self, Read};
use std::path::Path;

use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use serde::Deserialize;

use crate::archive::Source;
use crate::store::MAX_JSON_BLOB;
use crate::{Digest, Error, Image, ImageName, Platform, Result, Store};

const OCI_NAME_ANNOTATION: &str = "io.containerd.image.name";
const OCI_REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// One image of a `docker save` manifest.json.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A manifest found in the source, with the names the source gives it.
struct Found {
    manifest: Digest,
    names: Vec<String>,
}

impl Store {
    /// Imports every image in `path` (for this node's platform). `name`, when given, names
    /// the single image the source must hold, replacing the names it carries.
    pub fn import(&self, path: &Path, name: Option<&str>) -> Result<Vec<Image>> {
        let name = name.map(parse_name).transpose()?;
        let writer = self.writer_lock()?;
        let scratch = self.root().join("ingest").join(format!("import-{}", std::process::id()));
        let result = Source::open(path, &scratch).and_then(|source| self.import_from(&source, name));
        let _ = std::fs::remove_file(&scratch);
        if result.is_err() {
            self.collect_garbage_if_idle(writer);
        }
        result
    }

    fn import_from(&self, source: &Source, name: Option<String>) -> Result<Vec<Image>> {
        let mut found = if source.open_file("oci-layout")?.is_some() {
            self.import_oci_layout(source)?
        } else if source.open_file("manifest.json")?.is_some() {
            self.import_docker_archive(source)?
        } else {
            return Err(Error::UnknownFormat {
                path: source.path().to_path_buf(),
                reason: "no oci-layout (OCI layout) or manifest.json (docker-archive) in it".into(),
            });
        };
        if let Some(name) = name {
            if found.len() != 1 {
                return Err(Error::malformed(
                    source.path().display().to_string(),
                    format!("--name needs exactly one image, the source holds {}", found.len()),
                ));
            }
            found[0].names = vec![name];
        }
        self.complete(found.into_iter().map(|f| (f.manifest, f.names)).collect(), true)
    }

    /// Loads and (if asked) unpacks stored images, and only when all of them are whole
    /// points their names at them, in one write of the index.
    pub(crate) fn complete(&self, manifests: Vec<(Digest, Vec<String>)>, unpack: bool) -> Result<Vec<Image>> {
        let images = manifests
            .into_iter()
            .map(|(manifest, names)| {
                let image = self.load_image(&manifest, names)?;
                if unpack {
                    self.unpack(&image)?;
                }
                Ok(image)
            })
            .collect::<Result<Vec<_>>>()?;
        self.record(&images)?;
        Ok(images)
    }

    fn import_oci_layout(&self, source: &Source) -> Result<Vec<Found>> {
        let label = source.path().display().to_string();
        let layout = source.read_small("oci-layout", 4096)?.unwrap_or_default();
        let version = serde_json::from_slice::<serde_json::Value>(&layout)
            .ok()
            .and_then(|v| v.get("imageLayoutVersion").and_then(|v| v.as_str()).map(String::from));
        if !version.as_deref().is_some_and(|v| v.starts_with("1.")) {
            return Err(Error::malformed(format!("{label}: oci-layout"), "imageLayoutVersion 1.x expected"));
        }
        let index = source
            .read_small("index.json", MAX_JSON_BLOB)?
            .ok_or_else(|| Error::malformed(&label, "OCI layout without index.json"))?;
        let index: ImageIndex =
            serde_json::from_slice(&index).map_err(|e| Error::malformed(format!("{label}: index.json"), e))?;
        let platform = Platform::host();
        let mut found = Vec::new();
        for desc in index.manifests() {
            if desc.platform().as_ref().is_some_and(|p| {
                p.os().to_string() != platform.os || p.architecture().to_string() != platform.architecture
            }) {
                continue;
            }
            let names = names_from_annotations(desc);
            let manifest = self.copy_manifest(source, desc, &platform, &label)?;
            found.push(Found { manifest, names });
        }
        if found.is_empty() {
            return Err(Error::NoPlatform { image: label, platform: platform.to_string() });
        }
        Ok(found)
    }

    /// Copies a manifest (choosing this platform's entry from an index) with its config and
    /// layers; returns the platform manifest's digest.
    fn copy_manifest(&self, source: &Source, desc: &Descriptor, platform: &Platform, label: &str) -> Result<Digest> {
        let digest: Digest = desc.digest().to_string().parse()?;
        let what = format!("{label}: manifest {digest}");
        match desc.media_type() {
            MediaType::ImageIndex => {
                let bytes = self.copy_small_blob(source, &digest, desc.size(), &what)?;
                let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| Error::malformed(&what, e))?;
                let chosen = platform
                    .choose(&index)
                    .ok_or_else(|| Error::NoPlatform { image: label.to_string(), platform: platform.to_string() })?;
                self.copy_manifest(source, &index.manifests()[chosen], platform, label)
            }
            _ => {
                let bytes = self.copy_small_blob(source, &digest, desc.size(), &what)?;
                let manifest: oci_spec::image::ImageManifest =
                    serde_json::from_slice(&bytes).map_err(|e| Error::malformed(&what, e))?;
                let config = manifest.config();
                self.copy_small_blob(
                    source,
                    &config.digest().to_string().parse()?,
                    config.size(),
                    &format!("{label}: config"),
                )?;
                for layer in manifest.layers() {
                    self.copy_blob(
                        source,
                        &layer.digest().to_string().parse()?,
                        layer.size(),
                        &format!("{label}: layer"),
                    )?;
                }
                Ok(digest)
            }
        }
    }

    fn copy_small_blob(&self, source: &Source, digest: &Digest, size: u64, what: &str) -> Result<Vec<u8>> {
        if size > MAX_JSON_BLOB {
            return Err(Error::malformed(what, format!("{size} bytes is larger than {MAX_JSON_BLOB}")));
        }
        self.copy_blob(source, digest, size, what)?;
        self.read_json_blob(digest, what)
    }

    /// Copies `blobs/sha256/<hex>` from the layout into the store, verifying digest and size.
    fn copy_blob(&self, source: &Source, digest: &Digest, size: u64, what: &str) -> Result<()> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let (reader, _) = source
            .open_file(&format!("blobs/sha256/{}", digest.hex()))?
            .ok_or_else(|| Error::MissingBlob { what: what.to_string(), digest: digest.clone() })?;
        self.store_stream(reader, Some((digest, size)), what).map(|_| ())
    }

    /// Writes a stream to a new blob; with `expected`, refuses it unless digest and size match.
    fn store_stream(&self, reader: impl Read, expected: Option<(&Digest, u64)>, what: &str) -> Result<Digest> {
        let mut writer = self.blob_writer(what)?;
        // One byte past the expected size is enough to know it is too long.
        let limit = expected.map_or(u64::MAX, |(_, size)| size.saturating_add(1));
        io::copy(&mut reader.take(limit), &mut writer).map_err(Error::io(format!("{what}: copy")))?;
        writer.commit(expected)
    }

    fn import_docker_archive(&self, source: &Source) -> Result<Vec<Found>> {
        let label = source.path().display().to_string();
        let bytes = source.read_small("manifest.json", MAX_JSON_BLOB)?.unwrap_or_default();
        let images: Vec<DockerArchiveImage> =
            serde_json::from_slice(&bytes).map_err(|e| Error::malformed(format!("{label}: manifest.json"), e))?;
        if images.is_empty() {
            return Err(Error::malformed(format!("{label}: manifest.json"), "no images in it"));
        }
        images.into_iter().map(|image| self.copy_docker_image(source, image, &label)).collect()
    }

    /// Stores a docker-archive image as OCI: its config blob as it is (so the image ID is
    /// unchanged), each layer file as a blob, and a new OCI manifest that lists them.
    fn copy_docker_image(&self, source: &Source, image: DockerArchiveImage, label: &str) -> Result<Found> {
        let what = format!("{label}: {}", image.config);
        let config = source
            .read_small(&image.config, MAX_JSON_BLOB)?
            .ok_or_else(|| Error::malformed(&what, "config file named in manifest.json is missing"))?;
        let config_digest = self.write_blob(&config, None, &what)?;
        let mut layers = Vec::new();
        for path in &image.layers {
            let what = format!("{label}: layer {path}");
            let (reader, _) = source
                .open_file(path)?
                .ok_or_else(|| Error::malformed(&what, "layer file named in manifest.json is missing"))?;
            let digest = self.store_stream(reader, None, &what)?;
            let size = self.blob_path(&digest).metadata().map_err(Error::io(&what))?.len();
            layers.push(serde_json::json!({
                "mediaType": layer_media_type(&mut self.open_blob(&digest, &what)?),
                "digest": digest,
                "size": size,
            }));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::ImageManifest.to_string(),
            "config": { "mediaType": MediaType::ImageConfig.to_string(), "digest": config_digest, "size": config.len() },
            "layers": layers,
        });
        let manifest = self.write_blob(&serde_json::to_vec(&manifest).expect("manifest serialises"), None, label)?;
        let names = image.repo_tags.unwrap_or_default().iter().map(|t| parse_name(t)).collect::<Result<_>>()?;
        Ok(Found { manifest, names })
    }
}

/// The OCI media type of a layer blob, by its magic number.
fn layer_media_type(blob: &mut impl Read) -> String {
    let mut magic = [0u8; 4];
    let n = blob.read(&mut magic).unwrap_or(0);
    let media_type = match &magic[..n] {
        [0x1f, 0x8b, ..] => MediaType::ImageLayerGzip,
        [0x28, 0xb5, 0x2f, 0xfd] => MediaType::ImageLayerZstd,
        _ => MediaType::ImageLayer,
    };
    media_type.to_string()
}

fn parse_name(name: &str) -> Result<String> {
    let parsed: ImageName = name.parse()?;
    parsed.tagged().ok_or_else(|| Error::InvalidReference {
        reference: name.to_string(),
        reason: "a name needs a tag, not a digest".into(),
    })
}

/// The name an OCI layout gives a manifest: containerd's full-name annotation, else the
/// standard `ref.name` when it is a whole reference (a bare tag such as `latest` names no
/// repository, so the image is imported untagged).
fn names_from_annotations(desc: &Descriptor) -> Vec<String> {
    let annotations = desc.annotations().clone().unwrap_or_default();
    let full = annotations.get(OCI_NAME_ANNOTATION).cloned();
    let reference = annotations.get(OCI_REF_ANNOTATION).filter(|r| r.contains('/') || r.contains(':')).cloned();
    full.or(reference).and_then(|n| parse_name(&n).ok()).into_iter().collect()
}
