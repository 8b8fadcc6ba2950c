//! Unpacking one layer into its snapshot directory.
//!
//! The layer is hostile input. We walk the tar entries ourselves (the `tar` crate's own
//! unpacker knows nothing of whiteouts and has a history of symlink escapes) and create
//! every file relative to a directory file descriptor that was opened with
//! `openat2(RESOLVE_BENEATH)` (openat2(2)): a path that would leave the snapshot, through
//! `..`, an absolute path, or a symlink created by an earlier entry, fails with EXDEV
//! instead of writing outside. Hardlink targets are resolved the same way. Everything is
//! unpacked into a temporary directory that is renamed into place only when the whole layer
//! was good, its uncompressed digest matched the image's diff ID, and its data is on disk.
//!
//! Whiteouts become what overlayfs reads (Documentation/filesystems/overlayfs.rst):
//! `.wh.NAME` a 0/0 character device `NAME`, `.wh..wh..opq` the `trusted.overlay.opaque=y`
//! xattr on its directory. Other `.wh..wh.` entries (aufs bookkeeping) are skipped, as
//! containerd does.

use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use tar::{EntryType, Header};

use crate::digest::Hasher;
use crate::sys;
use crate::{Digest, Error};

const CHUNK: usize = 128 << 10;
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Why a layer could not be unpacked; the caller adds the image and the layer.
#[derive(Debug)]
pub(crate) struct LayerError {
    entry: Option<String>,
    reason: String,
}

impl LayerError {
    fn new(entry: Option<&str>, reason: impl ToString) -> LayerError {
        LayerError { entry: entry.map(String::from), reason: reason.to_string() }
    }

    pub(crate) fn into_error(self, image: &str, layer: &Digest) -> Error {
        Error::Layer { image: image.to_string(), layer: layer.clone(), entry: self.entry, reason: self.reason }
    }
}

type LayerResult<T> = Result<T, LayerError>;

/// Unpacks the (gzip, zstd or uncompressed) tar read from `blob` into `target`, which must
/// not exist yet, checking that the uncompressed stream has digest `diff_id`.
pub(crate) fn unpack_layer(blob: impl Read + Send + 'static, diff_id: &Digest, target: &Path) -> LayerResult<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = format!(".tmp-{}-{}-{}", diff_id.short(), std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    let tmp = target.with_file_name(name);
    fs::create_dir(&tmp).map_err(|e| LayerError::new(None, format!("create {}: {e}", tmp.display())))?;
    let result = unpack_into(blob, diff_id, &tmp).and_then(|()| {
        fs::rename(&tmp, target).map_err(|e| LayerError::new(None, format!("rename into {}: {e}", target.display())))
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    match result {
        // Another process unpacked the same layer first (a snapshot only ever appears whole
        // and verified): theirs serves.
        Err(_) if target.is_dir() => Ok(()),
        other => other,
    }
}

fn unpack_into(blob: impl Read + Send + 'static, diff_id: &Digest, dir: &Path) -> LayerResult<()> {
    let root: OwnedFd = File::open(dir).map_err(|e| LayerError::new(None, e))?.into();
    let (chunks, chunk_rx) = sync_channel(8);
    let (spare, spare_rx) = sync_channel(8);
    // Decompression and hashing run beside the file writes, as `tar -xz` runs gzip beside tar.
    let decompressor = std::thread::spawn(move || decompress(blob, chunks, spare_rx));
    let mut stream = ChunkReader { chunks: chunk_rx, spare, current: Vec::new(), pos: 0 };
    let mut unpacker = Unpacker { root, parent_cache: None, dir_times: Vec::new() };
    let walked = unpacker.walk(&mut stream);
    // The digest covers the whole stream, including padding after the end-of-archive marker.
    let drained = walked.and_then(|()| io::copy(&mut stream, &mut io::sink()).map_err(|e| corrupt(None, e)));
    drop(stream);
    let digest = decompressor.join().expect("decompressor thread does not panic");
    drained?;
    let actual = digest.map_err(|e| corrupt(None, e))?;
    if actual != *diff_id {
        return Err(LayerError::new(None, format!("uncompressed digest {actual} does not match diff ID {diff_id}")));
    }
    unpacker.finish()
}

fn corrupt(entry: Option<&str>, e: io::Error) -> LayerError {
    LayerError::new(entry, format!("corrupt or truncated layer: {e}"))
}

/// Runs on its own thread: detects the compression by magic number, decompresses, hashes
/// the uncompressed bytes and hands them over in chunks.
fn decompress(
    blob: impl Read,
    chunks: SyncSender<io::Result<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
) -> io::Result<Digest> {
    let mut reader = BufReader::with_capacity(CHUNK, blob);
    let magic = reader.fill_buf()?;
    let mut input: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::Decoder::with_buffer(reader)?)
    } else {
        Box::new(reader)
    };
    let mut hasher = Hasher::default();
    loop {
        let mut buf = spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        buf.resize(CHUNK, 0);
        let n = match read_full(&mut input, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = chunks.send(Err(io::Error::new(e.kind(), e.to_string())));
                return Err(e);
            }
        };
        if n == 0 {
            return Ok(hasher.finish());
        }
        buf.truncate(n);
        hasher.update(&buf);
        if chunks.send(Ok(buf)).is_err() {
            // The unpacker stopped early with an error of its own.
            return Ok(hasher.finish());
        }
    }
}

fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The consumer side of the decompressor's channel; returns emptied buffers for reuse.
struct ChunkReader {
    chunks: Receiver<io::Result<Vec<u8>>>,
    spare: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.chunks.recv() {
                Ok(Ok(next)) => {
                    let done = std::mem::replace(&mut self.current, next);
                    let _ = self.spare.try_send(done);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

struct Unpacker {
    root: OwnedFd,
    /// The directory of the previous entry: tar streams list a directory's files together.
    /// Never stale, since no entry may replace a path an earlier entry created.
    parent_cache: Option<(PathBuf, OwnedFd)>,
    /// Directory mtimes, set last: creating entries inside a directory changes its mtime.
    dir_times: Vec<(PathBuf, libc::timespec)>,
}

/// What a tar entry asks for, after PAX records are applied.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: libc::timespec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Unpacker {
    fn walk(&mut self, stream: &mut ChunkReader) -> LayerResult<()> {
        let mut archive = tar::Archive::new(stream);
        let entries = archive.entries().map_err(|e| corrupt(None, e))?;
        let mut previous: Option<String> = None;
        for entry in entries {
            // An error here is in the header after `previous`.
            let mut entry = entry.map_err(|e| {
                let after = previous.as_ref().map(|p| format!(" (after entry {p:?})")).unwrap_or_default();
                LayerError::new(None, format!("malformed tar header{after}: {e}"))
            })?;
            let raw = entry.path_bytes();
            let label = String::from_utf8_lossy(&raw).into_owned();
            self.apply(&mut entry).map_err(|reason| LayerError::new(Some(&label), reason))?;
            previous = Some(label);
        }
        Ok(())
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), String> {
        let path = clean_path(&entry.path().map_err(|e| e.to_string())?)?;
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(());
        }
        let meta = entry_meta(entry)?;
        let Some(name) = path.file_name().map(OsStr::to_owned) else {
            // The layer's root directory itself ("./").
            return match kind {
                EntryType::Directory => self.set_meta(self.root.as_raw_fd(), None, &meta, false),
                _ => Err("the layer root must be a directory".into()),
            };
        };
        let parent = self.parent(path.parent().unwrap_or(Path::new("")))?;
        let name_str = name.to_string_lossy();
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if name_str == OPAQUE_WHITEOUT {
                return sys::fsetxattr(parent, OPAQUE_XATTR, b"y").map_err(|e| format!("mark directory opaque: {e}"));
            }
            if hidden.starts_with(WHITEOUT_PREFIX) {
                return Ok(());
            }
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err("whiteout names no file".into());
            }
            return sys::mknodat(parent, hidden.as_ref(), libc::S_IFCHR, 0).map_err(exists_is_duplicate);
        }
        let name = name.as_os_str();
        match kind {
            EntryType::Directory => {
                match sys::mkdirat(parent, name, 0o700) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) && sys::is_dir_at(parent, name) => {}
                    Err(e) => return Err(exists_is_duplicate(e)),
                }
                let dir = sys::openat_dir(parent, name).map_err(|e| e.to_string())?;
                self.set_meta(dir.as_raw_fd(), None, &meta, false)?;
                self.dir_times.push((path, meta.mtime));
                Ok(())
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let fd = sys::create_file(parent, name).map_err(exists_is_duplicate)?;
                let mut file = File::from(fd);
                io::copy(entry, &mut file).map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
                        format!("corrupt or truncated layer: {e}")
                    }
                    _ => format!("write: {e}"),
                })?;
                self.set_meta(file.as_raw_fd(), None, &meta, true)
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or("symlink without a target")?;
                if target.is_empty() {
                    return Err("symlink without a target".into());
                }
                sys::symlinkat(OsStr::from_bytes(&target), parent, name).map_err(exists_is_duplicate)?;
                self.set_meta(parent, Some(name), &meta, true)
            }
            EntryType::Link => {
                let target = entry.link_name().map_err(|e| e.to_string())?.ok_or("hardlink without a target")?;
                let target = clean_path(&target).map_err(|e| format!("hardlink target: {e}"))?;
                let target_name = target.file_name().ok_or("hardlink to the layer root")?;
                let target_dir = sys::open_dir_beneath(self.root.as_raw_fd(), target.parent().unwrap_or(Path::new("")))
                    .map_err(|e| format!("hardlink target {}: {}", target.display(), resolve_error(e)))?;
                // No AT_SYMLINK_FOLLOW: a link to a symlink is a link to the symlink itself.
                sys::linkat(target_dir.as_raw_fd(), target_name, parent, name).map_err(|e| match e.raw_os_error() {
                    Some(libc::ENOENT) => {
                        format!("hardlink target {} is not in this layer", target.display())
                    }
                    Some(libc::EEXIST) => "duplicate entry".to_string(),
                    Some(libc::EPERM) => {
                        format!("hardlink target {} is a directory", target.display())
                    }
                    _ => format!("hardlink to {}: {e}", target.display()),
                })
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (file_type, dev) = match kind {
                    EntryType::Fifo => (libc::S_IFIFO, 0),
                    _ => {
                        let header = entry.header();
                        let major = header.device_major().map_err(|e| format!("device major: {e}"))?.unwrap_or(0);
                        let minor = header.device_minor().map_err(|e| format!("device minor: {e}"))?.unwrap_or(0);
                        let file_type = if kind == EntryType::Char { libc::S_IFCHR } else { libc::S_IFBLK };
                        (file_type, libc::makedev(major, minor))
                    }
                };
                sys::mknodat(parent, name, file_type, dev).map_err(exists_is_duplicate)?;
                self.set_meta(parent, Some(name), &meta, true)
            }
            other => Err(format!("unsupported tar entry type {:?}", other.as_byte() as char)),
        }
    }

    /// Ownership, mode, xattrs and (when `times`) mtime, on `fd` itself or on `name` in the
    /// directory `fd` (for entries that cannot be opened: symlinks, devices, fifos).
    fn set_meta(&self, fd: RawFd, name: Option<&OsStr>, meta: &Meta, times: bool) -> Result<(), String> {
        let is_symlink = name.is_some_and(|n| sys::is_symlink_at(fd, n));
        sys::chown(fd, name, meta.uid, meta.gid).map_err(|e| format!("chown: {e}"))?;
        // After chown, which clears set-user-ID and set-group-ID bits (chown(2)).
        if !is_symlink {
            sys::chmod(fd, name, meta.mode).map_err(|e| format!("chmod: {e}"))?;
        }
        for (key, value) in &meta.xattrs {
            sys::setxattr(fd, name, key, value).map_err(|e| format!("set xattr {}: {e}", key.to_string_lossy()))?;
        }
        if times {
            sys::set_mtime(fd, name, meta.mtime).map_err(|e| format!("set mtime: {e}"))?;
        }
        Ok(())
    }

    /// The directory an entry goes in, created (0755, root-owned) when the layer did not list it.
    fn parent(&mut self, dir: &Path) -> Result<RawFd, String> {
        if dir.as_os_str().is_empty() {
            return Ok(self.root.as_raw_fd());
        }
        if self.parent_cache.as_ref().is_none_or(|(cached, _)| cached != dir) {
            let fd = self.open_or_create_dir(dir)?;
            self.parent_cache = Some((dir.to_path_buf(), fd));
        }
        Ok(self.parent_cache.as_ref().expect("just filled").1.as_raw_fd())
    }

    fn open_or_create_dir(&self, dir: &Path) -> Result<OwnedFd, String> {
        match sys::open_dir_beneath(self.root.as_raw_fd(), dir) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => {
                return other.map_err(|e| format!("directory {}: {}", dir.display(), resolve_error(e)));
            }
        }
        let name = dir.file_name().expect("cleaned non-empty path");
        let parent_path = dir.parent().unwrap_or(Path::new(""));
        let parent = match parent_path.as_os_str().is_empty() {
            true => None,
            false => Some(self.open_or_create_dir(parent_path)?),
        };
        let parent_fd = parent.as_ref().map_or(self.root.as_raw_fd(), |p| p.as_raw_fd());
        match sys::mkdirat(parent_fd, name, 0o755) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(format!("create directory {}: {e}", dir.display())),
        }
        sys::open_dir_beneath(self.root.as_raw_fd(), dir)
            .map_err(|e| format!("directory {}: {}", dir.display(), resolve_error(e)))
    }

    /// Sets directory mtimes, then makes the data durable before the snapshot is renamed
    /// into place: a snapshot that exists is complete, even after a power loss.
    fn finish(self) -> LayerResult<()> {
        for (path, mtime) in self.dir_times.iter().rev() {
            let dir = sys::open_dir_beneath(self.root.as_raw_fd(), path)
                .map_err(|e| LayerError::new(Some(&path.to_string_lossy()), resolve_error(e)))?;
            sys::set_mtime(dir.as_raw_fd(), None, *mtime)
                .map_err(|e| LayerError::new(Some(&path.to_string_lossy()), format!("set mtime: {e}")))?;
        }
        sys::syncfs(self.root.as_raw_fd()).map_err(|e| LayerError::new(None, format!("sync: {e}")))
    }
}

fn exists_is_duplicate(e: io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EEXIST) => "duplicate entry".to_string(),
        _ => e.to_string(),
    }
}

fn resolve_error(e: io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EXDEV) => "path leads outside the layer (through .. or a symlink)".to_string(),
        Some(libc::ENOTDIR) => "a path component is not a directory".to_string(),
        Some(libc::ELOOP) => "too many levels of symlinks".to_string(),
        _ => e.to_string(),
    }
}

/// The entry's path relative to the layer root. `.` components go; absolute paths and `..`
/// are refused, not rewritten: no tool that builds images writes them, so they are an attack.
fn clean_path(path: &Path) -> Result<PathBuf, String> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => clean.push(part),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
            Component::ParentDir => return Err("path contains ..".into()),
        }
    }
    Ok(clean)
}

fn entry_meta<R: Read>(entry: &mut tar::Entry<R>) -> Result<Meta, String> {
    let header: &Header = entry.header();
    let mut uid = header.uid().map_err(|e| e.to_string())?;
    let mut gid = header.gid().map_err(|e| e.to_string())?;
    let mut mtime = libc::timespec { tv_sec: header.mtime().map_err(|e| e.to_string())? as i64, tv_nsec: 0 };
    let mode = header.mode().map_err(|e| e.to_string())? & 0o7777;
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions().map_err(|e| e.to_string())? {
        for ext in pax {
            let ext = ext.map_err(|e| format!("malformed PAX record: {e}"))?;
            let key = ext.key().map_err(|_| "PAX key is not UTF-8")?;
            let value = ext.value_bytes();
            let number = || std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok());
            match key {
                "uid" => uid = number().ok_or("malformed PAX uid")?,
                "gid" => gid = number().ok_or("malformed PAX gid")?,
                "mtime" => mtime = parse_pax_time(value).ok_or("malformed PAX mtime")?,
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        if name.starts_with("trusted.overlay.") {
                            return Err(format!("xattr {name} is reserved for overlayfs"));
                        }
                        let name = CString::new(name).map_err(|_| "xattr name contains NUL")?;
                        xattrs.push((name, value.to_vec()));
                    }
                }
            }
        }
    }
    let uid = u32::try_from(uid).map_err(|_| format!("uid {uid} out of range"))?;
    let gid = u32::try_from(gid).map_err(|_| format!("gid {gid} out of range"))?;
    Ok(Meta { mode, uid, gid, mtime, xattrs })
}

/// A PAX time: decimal seconds with an optional fraction (`1700000000.25`).
fn parse_pax_time(value: &[u8]) -> Option<libc::timespec> {
    let s = std::str::from_utf8(value).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let tv_sec = secs.parse::<i64>().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    Some(libc::timespec { tv_sec, tv_nsec: digits.parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_paths_and_refuses_escapes() {
        assert_eq!(clean_path(Path::new("./a/./b/")).unwrap(), PathBuf::from("a/b"));
        assert_eq!(clean_path(Path::new("./")).unwrap(), PathBuf::new());
        assert_eq!(clean_path(Path::new("/etc/passwd")).unwrap_err(), "absolute path");
        assert_eq!(clean_path(Path::new("a/../../b")).unwrap_err(), "path contains ..");
    }

    #[test]
    fn parses_pax_times() {
        let t = parse_pax_time(b"1700000000.25").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 250_000_000));
        let t = parse_pax_time(b"42").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (42, 0));
        assert!(parse_pax_time(b"4x2").is_none());
        assert!(parse_pax_time(b"1.-5").is_none());
    }
}
