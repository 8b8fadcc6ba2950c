//! Thin wrappers over the *at(2) calls that keep file access inside a directory.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn check_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: the kernel just returned this descriptor to us.
        Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
    }
}

/// Opens `path` under `root`, refusing to leave `root` through `..`, absolute symlinks or
/// symlinks that point out (openat2(2), RESOLVE_BENEATH: EXDEV).
fn open_beneath(root: RawFd, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    let c = cstr(path.as_os_str())?;
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid C string and open_how of the size we pass.
    check_fd(unsafe {
        libc::syscall(libc::SYS_openat2, root, c.as_ptr(), &how as *const libc::open_how, size_of::<libc::open_how>())
    })
}

pub(crate) fn open_dir_beneath(root: RawFd, path: &Path) -> io::Result<OwnedFd> {
    open_beneath(root, path, libc::O_RDONLY | libc::O_DIRECTORY)
}

pub(crate) fn open_file_beneath(root: RawFd, path: &Path) -> io::Result<OwnedFd> {
    open_beneath(root, path, libc::O_RDONLY)
}

pub(crate) fn openat_dir(dir: RawFd, name: &OsStr) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check_fd(unsafe {
        libc::openat(dir, c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
    } as libc::c_long)
}

pub(crate) fn create_file(dir: RawFd, name: &OsStr) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid C string.
    check_fd(unsafe { libc::openat(dir, c.as_ptr(), flags, 0o600) } as libc::c_long)
}

pub(crate) fn mkdirat(dir: RawFd, name: &OsStr, mode: libc::mode_t) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode) })
}

pub(crate) fn mknodat(dir: RawFd, name: &OsStr, file_type: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknodat(dir, c.as_ptr(), file_type | 0o600, dev) })
}

pub(crate) fn symlinkat(target: &OsStr, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let (t, c) = (cstr(target)?, cstr(name)?);
    // SAFETY: valid C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) })
}

pub(crate) fn linkat(from_dir: RawFd, from: &OsStr, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let (f, c) = (cstr(from)?, cstr(name)?);
    // SAFETY: valid C strings.
    check(unsafe { libc::linkat(from_dir, f.as_ptr(), dir, c.as_ptr(), 0) })
}

fn lstat_at(dir: RawFd, name: &OsStr) -> Option<libc::stat> {
    let c = cstr(name).ok()?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and stat buffer.
    (unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0).then_some(st)
}

pub(crate) fn is_dir_at(dir: RawFd, name: &OsStr) -> bool {
    lstat_at(dir, name).is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

pub(crate) fn is_symlink_at(dir: RawFd, name: &OsStr) -> bool {
    lstat_at(dir, name).is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
}

pub(crate) fn chown(fd: RawFd, name: Option<&OsStr>, uid: u32, gid: u32) -> io::Result<()> {
    match name {
        // SAFETY: plain syscalls on a descriptor and C string we own.
        None => check(unsafe { libc::fchown(fd, uid, gid) }),
        Some(n) => {
            let c = cstr(n)?;
            check(unsafe { libc::fchownat(fd, c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
        }
    }
}

pub(crate) fn chmod(fd: RawFd, name: Option<&OsStr>, mode: u32) -> io::Result<()> {
    match name {
        // SAFETY: plain syscalls on a descriptor and C string we own.
        None => check(unsafe { libc::fchmod(fd, mode) }),
        Some(n) => {
            let c = cstr(n)?;
            check(unsafe { libc::fchmodat(fd, c.as_ptr(), mode, 0) })
        }
    }
}

pub(crate) fn set_mtime(fd: RawFd, name: Option<&OsStr>, mtime: libc::timespec) -> io::Result<()> {
    let times = [mtime, mtime];
    match name {
        // SAFETY: plain syscalls on a descriptor, C string and two timespecs we own.
        None => check(unsafe { libc::futimens(fd, times.as_ptr()) }),
        Some(n) => {
            let c = cstr(n)?;
            check(unsafe { libc::utimensat(fd, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
        }
    }
}

pub(crate) fn fsetxattr(fd: RawFd, key: &str, value: &[u8]) -> io::Result<()> {
    let k = CString::new(key).expect("static key");
    // SAFETY: valid C string and buffer.
    check(unsafe { libc::fsetxattr(fd, k.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

/// On `fd`, or on `name` in `dir` without following it (via the /proc path of `dir`, as
/// there is no lsetxattrat).
pub(crate) fn setxattr(fd: RawFd, name: Option<&OsStr>, key: &CString, value: &[u8]) -> io::Result<()> {
    match name {
        None => check(unsafe { libc::fsetxattr(fd, key.as_ptr(), value.as_ptr().cast(), value.len(), 0) }),
        Some(n) => {
            let mut path = format!("/proc/self/fd/{fd}/").into_bytes();
            path.extend_from_slice(n.as_bytes());
            let c = cstr(OsStr::from_bytes(&path))?;
            // SAFETY: valid C strings and buffer.
            check(unsafe { libc::lsetxattr(c.as_ptr(), key.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
        }
    }
}

pub(crate) fn syncfs(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    check(unsafe { libc::syncfs(fd) })
}
