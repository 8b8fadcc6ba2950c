//! The content-addressed store: blobs, the tag index, snapshots, and garbage collection.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};

use crate::digest::Hasher;
use crate::{Digest, Error, ImageName, Result, unpack};

/// Largest manifest or config the store accepts, as containerd does: these are parsed in
/// memory, so a hostile source must not be able to make us allocate without bound.
pub(crate) const MAX_JSON_BLOB: u64 = 8 << 20;

const NAME_ANNOTATION: &str = "io.containerd.image.name";
const TAG_ANNOTATION: &str = "org.opencontainers.image.ref.name";

#[derive(Clone)]
pub struct Store {
    root: PathBuf,
}

/// An image in the store: a platform manifest, its config, and the names that point at it.
#[derive(Clone, Debug)]
pub struct Image {
    /// The config digest, as docker and containerd define an image ID.
    pub id: Digest,
    pub names: Vec<String>,
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
}

impl Image {
    /// Layers bottom-up, each as (blob digest, diff ID): the diff ID names the uncompressed
    /// tar, and so the snapshot.
    pub fn layers(&self) -> Result<Vec<(Digest, Digest)>> {
        layers_with_diff_ids(&self.manifest, &self.config, &format!("image {}", self.display_name()))?
            .into_iter()
            .map(|(layer, diff_id)| Ok((layer.digest().to_string().parse()?, diff_id)))
            .collect()
    }

    /// Compressed size of the layers plus the config, as `image ls` reports it.
    pub fn size(&self) -> u64 {
        self.manifest.config().size() + self.manifest.layers().iter().map(|l| l.size()).sum::<u64>()
    }

    /// The first name, or the short ID for an untagged image.
    pub fn display_name(&self) -> String {
        self.names.first().cloned().unwrap_or_else(|| self.id.short().to_string())
    }
}

/// What a garbage collection freed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub untagged: Vec<String>,
    pub blobs: usize,
    pub snapshots: usize,
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    manifests: Vec<IndexEntry>,
}

#[derive(Serialize, Deserialize, Clone)]
struct IndexEntry {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

impl IndexEntry {
    fn name(&self) -> Option<&str> {
        self.annotations.get(NAME_ANNOTATION).map(String::as_str)
    }
}

impl Store {
    /// Opens (creating if needed) the store under `DATA_DIR/images`.
    pub fn open(data_dir: &Path) -> Result<Store> {
        let root = data_dir.join("images");
        for dir in ["blobs/sha256", "ingest", "snapshots"] {
            let path = root.join(dir);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .map_err(Error::io(format!("create {}", path.display())))?;
        }
        // Only root reads the images (a private registry's are as secret as its
        // credentials), as containerd's content store; fixed for a store made before.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .map_err(Error::io(format!("set the mode of {}", root.display())))?;
        let store = Store { root };
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            store.write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !store.index_path().exists() {
            // Under the index lock: a second process opening a new store at the same moment
            // must not replace an index the first one has already written to.
            let _lock = Lock::exclusive(&store.root.join("index.lock"))?;
            if !store.index_path().exists() {
                store.write_index(&IndexFile { schema_version: 2, manifests: vec![] })?;
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub(crate) fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).exists()
    }

    pub(crate) fn open_blob(&self, digest: &Digest, what: &str) -> Result<File> {
        File::open(self.blob_path(digest)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::MissingBlob { what: what.to_string(), digest: digest.clone() },
            _ => Error::Io { context: format!("{what}: open blob {digest}"), error: e },
        })
    }

    /// Reads a manifest or config blob (bounded by [`MAX_JSON_BLOB`]).
    pub(crate) fn read_json_blob(&self, digest: &Digest, what: &str) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open_blob(digest, what)?
            .take(MAX_JSON_BLOB + 1)
            .read_to_end(&mut bytes)
            .map_err(Error::io(format!("{what}: read blob {digest}")))?;
        if bytes.len() as u64 > MAX_JSON_BLOB {
            return Err(Error::malformed(what, format!("larger than {MAX_JSON_BLOB} bytes")));
        }
        Ok(bytes)
    }

    pub(crate) fn blob_writer(&self, what: &str) -> Result<BlobWriter> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!("{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let path = self.root.join("ingest").join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::io(format!("{what}: create {}", path.display())))?;
        Ok(BlobWriter {
            file,
            path,
            blobs: self.root.join("blobs/sha256"),
            hasher: Hasher::default(),
            what: what.to_string(),
        })
    }

    /// Stores `bytes`, checking them against `expected` (digest and size) when given.
    pub(crate) fn write_blob(&self, bytes: &[u8], expected: Option<(&Digest, u64)>, what: &str) -> Result<Digest> {
        let actual = Digest::of(bytes);
        if let Some((digest, size)) = expected {
            check_blob(what, digest, size, &actual, bytes.len() as u64)?;
        }
        if !self.has_blob(&actual) {
            let mut w = self.blob_writer(what)?;
            w.write_all(bytes).map_err(Error::io(format!("{what}: write blob")))?;
            w.commit(None)?;
        }
        Ok(actual)
    }

    /// Loads the image whose platform manifest is `manifest_digest`, checking that its
    /// config and layers are all present.
    pub(crate) fn load_image(&self, manifest_digest: &Digest, names: Vec<String>) -> Result<Image> {
        let label = names.first().cloned().unwrap_or_else(|| manifest_digest.to_string());
        let what = format!("image {label}: manifest");
        let manifest: ImageManifest = serde_json::from_slice(&self.read_json_blob(manifest_digest, &what)?)
            .map_err(|e| Error::malformed(&what, e))?;
        let id: Digest = manifest.config().digest().to_string().parse()?;
        let what = format!("image {label}: config");
        let config: ImageConfiguration =
            serde_json::from_slice(&self.read_json_blob(&id, &what)?).map_err(|e| Error::malformed(&what, e))?;
        let image = Image { id, names, manifest_digest: manifest_digest.clone(), manifest, config };
        for (layer, _) in image.layers()? {
            if !self.has_blob(&layer) {
                return Err(Error::MissingBlob { what: format!("image {label}: layer"), digest: layer });
            }
        }
        Ok(image)
    }

    /// Points each image's names at its manifest (moving them off any image they named
    /// before); an image without names is recorded untagged. Only called once every blob is
    /// stored, so a name never dangles.
    pub(crate) fn record(&self, images: &[Image]) -> Result<()> {
        let entries: Vec<(Image, u64, String)> = images
            .iter()
            .map(|image| {
                let size = self.blob_path(&image.manifest_digest).metadata().map(|m| m.len()).unwrap_or(0);
                let media_type = image.manifest.media_type().clone().unwrap_or(MediaType::ImageManifest).to_string();
                (image.clone(), size, media_type)
            })
            .collect();
        self.update_index(|index| {
            for (image, size, media_type) in &entries {
                let entry = |annotations| IndexEntry {
                    media_type: media_type.clone(),
                    digest: image.manifest_digest.clone(),
                    size: *size,
                    annotations,
                };
                let same = |e: &IndexEntry| e.digest == image.manifest_digest;
                if image.names.is_empty() {
                    if !index.manifests.iter().any(same) {
                        index.manifests.push(entry(BTreeMap::new()));
                    }
                    continue;
                }
                index.manifests.retain(|e| match e.name() {
                    Some(n) => !image.names.iter().any(|new| new == n),
                    None => !same(e),
                });
                for name in &image.names {
                    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
                    index.manifests.push(entry(BTreeMap::from([
                        (NAME_ANNOTATION.to_string(), name.clone()),
                        (TAG_ANNOTATION.to_string(), tag.to_string()),
                    ])));
                }
            }
        })
    }

    /// Every image, one per manifest, with all its names.
    pub fn images(&self) -> Result<Vec<Image>> {
        let index = self.read_index()?;
        let mut by_manifest: Vec<(Digest, Vec<String>)> = Vec::new();
        for entry in index.manifests {
            match by_manifest.iter_mut().find(|(d, _)| *d == entry.digest) {
                Some((_, names)) => names.extend(entry.name().map(String::from)),
                None => by_manifest.push((entry.digest.clone(), entry.name().map(String::from).into_iter().collect())),
            }
        }
        by_manifest.into_iter().map(|(digest, names)| self.load_image(&digest, names)).collect()
    }

    /// Finds an image by name (`busybox`, `reg:5000/app:v1`, `name@sha256:…`), by ID or
    /// manifest digest, or by a unique prefix of its ID (as `docker image` does).
    pub fn resolve(&self, reference: &str) -> Result<Image> {
        find(&self.images()?, reference).cloned()
    }

    /// Removes a name, or, given an ID, the image with all its names (every manifest with
    /// that config); then frees the blobs and snapshots that no image uses any more.
    pub fn remove(&self, reference: &str) -> Result<Removed> {
        let images = self.images()?;
        let image = find(&images, reference)?;
        let by_name = reference.parse::<ImageName>().ok().and_then(|n| n.tagged()).filter(|n| image.names.contains(n));
        let (untagged, manifests): (Vec<String>, Vec<Digest>) = match by_name {
            Some(name) => (vec![name], vec![]),
            None => {
                let same_id: Vec<&Image> = images.iter().filter(|i| i.id == image.id).collect();
                (
                    same_id.iter().flat_map(|i| i.names.clone()).collect(),
                    same_id.iter().map(|i| i.manifest_digest.clone()).collect(),
                )
            }
        };
        self.update_index(|index| {
            index.manifests.retain(|e| {
                !manifests.contains(&e.digest) && !e.name().is_some_and(|n| untagged.iter().any(|u| u == n))
            })
        })?;
        let _exclusive = Lock::exclusive(&self.root.join("gc.lock"))?;
        let mut removed = self.collect_garbage()?;
        removed.untagged = untagged;
        Ok(removed)
    }

    /// Deletes what no image refers to: blobs, snapshots, and leftovers of interrupted
    /// writes. Called with the gc lock held exclusively, so no writer is active.
    fn collect_garbage(&self) -> Result<Removed> {
        let mut live_blobs = HashSet::new();
        let mut live_snapshots = HashSet::new();
        for image in self.images()? {
            live_blobs.insert(image.manifest_digest.hex().to_string());
            live_blobs.insert(image.id.hex().to_string());
            for (layer, diff_id) in image.layers()? {
                live_blobs.insert(layer.hex().to_string());
                live_snapshots.insert(diff_id.hex().to_string());
            }
        }
        let mut removed = Removed::default();
        for name in list_dir(&self.root.join("ingest"))? {
            remove_path(&self.root.join("ingest").join(name))?;
        }
        for name in list_dir(&self.root.join("blobs/sha256"))? {
            if !live_blobs.contains(&name) {
                remove_path(&self.root.join("blobs/sha256").join(&name))?;
                removed.blobs += 1;
            }
        }
        for name in list_dir(&self.root.join("snapshots"))? {
            if !live_snapshots.contains(&name) {
                remove_path(&self.root.join("snapshots").join(&name))?;
                removed.snapshots += usize::from(!name.starts_with('.'));
            }
        }
        Ok(removed)
    }

    /// Held by every operation that adds to the store; garbage collection waits for all of
    /// them, so it never deletes a blob that an import is about to reference.
    pub(crate) fn writer_lock(&self) -> Result<Lock> {
        Lock::shared(&self.root.join("gc.lock"))
    }

    /// After a failed import: frees what it left, unless another writer is busy (then a later
    /// collection will).
    pub(crate) fn collect_garbage_if_idle(&self, writer: Lock) {
        drop(writer);
        if let Ok(Some(_exclusive)) = Lock::try_exclusive(&self.root.join("gc.lock"))
            && let Err(e) = self.collect_garbage()
        {
            tracing::warn!("cleaning up after a failed import: {e}");
        }
    }

    /// Where the layer with this diff ID is (or will be) unpacked.
    pub fn snapshot_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("snapshots").join(diff_id.hex())
    }

    /// Unpacks every layer of `image` that has no snapshot yet.
    pub(crate) fn unpack(&self, image: &Image) -> Result<()> {
        for (layer, diff_id) in image.layers()? {
            let target = self.snapshot_dir(&diff_id);
            if target.exists() {
                continue;
            }
            let blob = self.open_blob(&layer, &format!("image {}: layer", image.display_name()))?;
            unpack::unpack_layer(blob, &diff_id, &target).map_err(|e| e.into_error(&image.display_name(), &layer))?;
        }
        Ok(())
    }

    /// The overlayfs lower directories for a container of `image`, topmost layer first (the
    /// order `lowerdir=` wants), unpacking any layer not yet unpacked.
    pub fn lower_dirs(&self, image: &Image) -> Result<Vec<PathBuf>> {
        let layers = image.layers()?;
        if layers.iter().any(|(_, diff_id)| !self.snapshot_dir(diff_id).exists()) {
            let _writer = self.writer_lock()?;
            self.unpack(image)?;
        }
        Ok(layers.iter().rev().map(|(_, diff_id)| self.snapshot_dir(diff_id)).collect())
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn read_index(&self) -> Result<IndexFile> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(Error::io(format!("read {}", path.display())))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::malformed(path.display().to_string(), e))
    }

    fn write_index(&self, index: &IndexFile) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(index).expect("index serialises");
        self.write_atomic(&self.index_path(), &bytes)
    }

    fn update_index(&self, change: impl FnOnce(&mut IndexFile)) -> Result<()> {
        let _lock = Lock::exclusive(&self.root.join("index.lock"))?;
        let mut index = self.read_index()?;
        change(&mut index);
        self.write_index(&index)
    }

    /// Replaces `path` by write-to-temporary, fsync, rename, fsync of the directory: a crash
    /// leaves either the old or the new content.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let context = || format!("write {}", path.display());
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)?;
            File::open(path.parent().expect("store paths have a parent"))?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(Error::io(context()))
    }
}

/// The image `reference` names among `images` (see [`Store::resolve`]).
fn find<'a>(images: &'a [Image], reference: &str) -> Result<&'a Image> {
    if let Ok(name) = reference.parse::<ImageName>() {
        let found = match (name.tagged(), name.digest()) {
            (Some(tagged), _) => images.iter().find(|i| i.names.contains(&tagged)),
            (None, Some(digest)) => images.iter().find(|i| i.manifest_digest.as_str() == digest),
            (None, None) => None,
        };
        if let Some(image) = found {
            return Ok(image);
        }
    }
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let matches: Vec<&Image> =
            images.iter().filter(|i| i.id.hex().starts_with(hex) || i.manifest_digest.hex() == hex).collect();
        // One image ID may have several manifests (a docker-archive import and a pull of
        // the same image): that is still one image.
        match matches.first() {
            None => {}
            Some(first) if matches.iter().all(|i| i.id == first.id) => return Ok(first),
            Some(_) => return Err(Error::Ambiguous { reference: reference.to_string(), matches: matches.len() }),
        }
    }
    Err(Error::NotFound(reference.to_string()))
}

/// Pairs each layer of a manifest with its diff ID from the config.
pub(crate) fn layers_with_diff_ids<'m>(
    manifest: &'m ImageManifest,
    config: &ImageConfiguration,
    what: &str,
) -> Result<Vec<(&'m Descriptor, Digest)>> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(Error::malformed(
            what,
            format!("manifest has {} layers but config has {} diff IDs", manifest.layers().len(), diff_ids.len()),
        ));
    }
    manifest.layers().iter().zip(diff_ids).map(|(layer, diff_id)| Ok((layer, diff_id.parse()?))).collect()
}

pub(crate) fn check_blob(what: &str, digest: &Digest, size: u64, actual: &Digest, actual_size: u64) -> Result<()> {
    if actual_size != size {
        return Err(Error::SizeMismatch { what: format!("{what} {digest}"), expected: size, actual: actual_size });
    }
    if actual != digest {
        return Err(Error::DigestMismatch { what: what.to_string(), expected: digest.clone(), actual: actual.clone() });
    }
    Ok(())
}

/// A blob being written to `ingest/`: it becomes visible under `blobs/` only by
/// [`BlobWriter::commit`], after its digest and size are checked and its data is on disk.
/// Dropped uncommitted, it removes itself.
pub(crate) struct BlobWriter {
    file: File,
    path: PathBuf,
    blobs: PathBuf,
    hasher: Hasher,
    what: String,
}

impl BlobWriter {
    pub(crate) fn commit(mut self, expected: Option<(&Digest, u64)>) -> Result<Digest> {
        let size = self.hasher.len();
        let actual = std::mem::take(&mut self.hasher).finish();
        if let Some((digest, expected_size)) = expected {
            check_blob(&self.what, digest, expected_size, &actual, size)?;
        }
        let what = &self.what;
        self.file.sync_all().map_err(Error::io(format!("{what}: sync blob")))?;
        fs::rename(&self.path, self.blobs.join(actual.hex()))
            .map_err(Error::io(format!("{what}: store blob {actual}")))?;
        File::open(&self.blobs).and_then(|d| d.sync_all()).map_err(Error::io(format!("{what}: sync blob dir")))?;
        Ok(actual)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// An flock(2) held until dropped.
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    fn open(path: &Path) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(Error::io(format!("open lock {}", path.display())))
    }

    fn take(path: &Path, op: libc::c_int) -> Result<Option<Lock>> {
        let file = Lock::open(path)?;
        loop {
            // SAFETY: flock on a file descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(Some(Lock { _file: file }));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                _ => {
                    return Err(Error::Io { context: format!("lock {}", path.display()), error: e });
                }
            }
        }
    }

    pub(crate) fn shared(path: &Path) -> Result<Lock> {
        Ok(Lock::take(path, libc::LOCK_SH)?.expect("blocking flock"))
    }

    pub(crate) fn exclusive(path: &Path) -> Result<Lock> {
        Ok(Lock::take(path, libc::LOCK_EX)?.expect("blocking flock"))
    }

    fn try_exclusive(path: &Path) -> Result<Option<Lock>> {
        Lock::take(path, libc::LOCK_EX | libc::LOCK_NB)
    }
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let entries = fs::read_dir(dir).map_err(Error::io(format!("list {}", dir.display())))?;
    entries
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(Error::io(format!("list {}", dir.display())))
        })
        .collect()
}

fn remove_path(path: &Path) -> Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(Error::io(format!("remove {}", path.display())))
}
