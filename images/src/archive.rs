//! Where an import reads from: a directory, or a tar archive read in place by offset.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use crate::{Error, Result, sys};

/// The files of an OCI layout or a `docker save` archive, by their relative path.
pub(crate) struct Source {
    path: PathBuf,
    kind: SourceKind,
}

enum SourceKind {
    Dir(OwnedFd),
    /// Regular files of the archive by cleaned path: (offset of the data, size).
    Tar {
        file: File,
        files: HashMap<PathBuf, (u64, u64)>,
    },
}

impl Source {
    /// Opens a directory, or indexes a tar archive (gzip-compressed archives are first
    /// inflated to `scratch`, which the caller removes).
    pub(crate) fn open(path: &Path, scratch: &Path) -> Result<Source> {
        let meta = fs::metadata(path).map_err(Error::io(format!("open {}", path.display())))?;
        if meta.is_dir() {
            let dir = File::open(path).map_err(Error::io(format!("open {}", path.display())))?;
            return Ok(Source { path: path.to_path_buf(), kind: SourceKind::Dir(dir.into()) });
        }
        let mut file = File::open(path).map_err(Error::io(format!("open {}", path.display())))?;
        if is_gzip(&mut file).map_err(Error::io(format!("read {}", path.display())))? {
            let mut out = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(scratch)
                .map_err(Error::io(format!("create {}", scratch.display())))?;
            io::copy(&mut flate2::read::MultiGzDecoder::new(BufReader::new(file)), &mut out).map_err(|e| {
                Error::UnknownFormat { path: path.to_path_buf(), reason: format!("bad gzip stream: {e}") }
            })?;
            out.seek(SeekFrom::Start(0)).map_err(Error::io(format!("read {}", scratch.display())))?;
            file = out;
        }
        let files = index_tar(&mut file).map_err(|e| Error::UnknownFormat {
            path: path.to_path_buf(),
            reason: format!("not a directory or tar archive: {e}"),
        })?;
        Ok(Source { path: path.to_path_buf(), kind: SourceKind::Tar { file, files } })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `name` with its size; `None` when it does not exist. Names come from hostile
    /// manifests, so they may not leave the source.
    pub(crate) fn open_file(&self, name: &str) -> Result<Option<(Box<dyn Read + '_>, u64)>> {
        let context = || format!("{}: {name}", self.path.display());
        let clean = clean(Path::new(name)).ok_or_else(|| Error::malformed(context(), "path leaves the archive"))?;
        match &self.kind {
            SourceKind::Dir(dir) => match sys::open_file_beneath(dir.as_raw_fd(), &clean) {
                Ok(fd) => {
                    let file = File::from(fd);
                    let meta = file.metadata().map_err(Error::io(context()))?;
                    if !meta.is_file() {
                        return Err(Error::malformed(context(), "not a regular file"));
                    }
                    Ok(Some((Box::new(file), meta.len())))
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    Err(Error::malformed(context(), "path leaves the layout through a symlink"))
                }
                Err(e) => Err(Error::Io { context: context(), error: e }),
            },
            SourceKind::Tar { file, files } => match files.get(&clean) {
                Some(&(offset, size)) => {
                    let mut file = file.try_clone().map_err(Error::io(context()))?;
                    file.seek(SeekFrom::Start(offset)).map_err(Error::io(context()))?;
                    Ok(Some((Box::new(file.take(size)), size)))
                }
                None => Ok(None),
            },
        }
    }

    /// Reads a small JSON file whole, refusing one larger than `limit`.
    pub(crate) fn read_small(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let Some((reader, size)) = self.open_file(name)? else {
            return Ok(None);
        };
        if size > limit {
            return Err(Error::malformed(
                format!("{}: {name}", self.path.display()),
                format!("larger than {limit} bytes"),
            ));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        reader
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(Error::io(format!("{}: read {name}", self.path.display())))?;
        Ok(Some(bytes))
    }
}

fn is_gzip(file: &mut File) -> io::Result<bool> {
    let magic = BufReader::new(&mut *file).fill_buf()?.starts_with(&[0x1f, 0x8b]);
    file.seek(SeekFrom::Start(0))?;
    Ok(magic)
}

/// Lists the regular files of a tar with the offset of their data, following symlinks
/// that stay inside the archive (`docker save` links repeated layers).
fn index_tar(file: &mut File) -> io::Result<HashMap<PathBuf, (u64, u64)>> {
    let mut files = HashMap::new();
    let mut links = Vec::new();
    let mut archive = tar::Archive::new(&*file);
    for entry in archive.entries_with_seek()? {
        let entry = entry?;
        let Some(path) = clean(&entry.path()?) else {
            continue;
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                files.insert(path, (entry.raw_file_position(), entry.size()));
            }
            tar::EntryType::Symlink => {
                if let Some(target) = entry.link_name()? {
                    let target = path.parent().unwrap_or(Path::new("")).join(target);
                    links.push((path, target));
                }
            }
            _ => {}
        }
    }
    for (link, target) in links {
        if let Some(found) = clean(&target).and_then(|t| files.get(&t).copied()) {
            files.insert(link, found);
        }
    }
    Ok(files)
}

/// `path` relative to the source root, `..` resolved lexically; `None` if it leaves the root.
fn clean(path: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_stays_inside() {
        assert_eq!(clean(Path::new("./blobs/sha256/ab")), Some(PathBuf::from("blobs/sha256/ab")));
        assert_eq!(clean(Path::new("a/../b/layer.tar")), Some(PathBuf::from("b/layer.tar")));
        assert_eq!(clean(Path::new("../etc/shadow")), None);
        assert_eq!(clean(Path::new("/etc/shadow")), None);
    }
}
