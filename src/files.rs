//! Files only root may read (credentials, keys, the API server's store), written whole or
//! not at all; the random secrets in them; the lock that keeps a data directory to one
//! server.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `content` to `path` with mode 0600: a temporary file, synced, renamed over
/// `path`, and the directory synced, so that a crash leaves the old file or the new one.
pub fn write_private(path: &Path, content: &[u8]) -> Result<()> {
    let temp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        // Not through a symlink someone planted at the temporary name.
        let mut file = std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)?;
        // A file left by an older writer keeps its mode through open(2).
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(content)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
    };
    write().with_context(|| format!("write {}", path.display()))
}

/// Gives `path`, if it exists, mode 0600: a file written before its mode was ours to
/// choose. Needs no free space.
pub fn make_private(path: &Path) -> Result<()> {
    runtime::state::set_mode(path, 0o600).with_context(|| format!("set the mode of {}", path.display()))
}

/// Takes `path`'s exclusive lock (flock(2)) for as long as the file returned is open: one
/// holder at a time, and a holder that dies lets go.
pub fn lock_exclusive(path: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::options()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("lock {}", path.display()));
    }
    Ok(file)
}

/// `N` random bytes from the kernel (getrandom(2)).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: getrandom writes at most the rest of the buffer we own.
        let n = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
    bytes
}
