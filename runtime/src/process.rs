//! The last steps of a container process before exec: its own mount namespace and root
//! filesystem, working directory, limits, user, capabilities, no_new_privs, seccomp, then
//! execve.
//! Runs in a child the pod init forked (so already in the pod's PID, network, IPC and UTS
//! namespaces); returns only on failure.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability};
use nix::sched::CloneFlags;

use crate::rootfs::{self, ContainerPaths, KernelMounter, Mounter};
use crate::seccomp;
use crate::spec::{ContainerSpec, WindowSize};

/// The capabilities a container gets by default: containerd's and Docker's set
/// (containerd `oci/spec.go` `defaultUnixCaps`).
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// The capability set of Kubernetes' securityContext.capabilities: the default set, less
/// `drop`, plus `add` (names with or without `CAP_`, any case; `ALL` in either).
pub fn capabilities(add: &[String], drop: &[String]) -> Result<Vec<String>, String> {
    let parse = |name: &String| -> Result<Option<Capability>, String> {
        let upper = name.to_uppercase();
        if upper == "ALL" {
            return Ok(None);
        }
        let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
        full.parse::<Capability>().map(Some).map_err(|_| format!("unknown capability {name:?}"))
    };
    let mut set: HashSet<Capability> = DEFAULT_CAPABILITIES.iter().copied().collect();
    for name in drop {
        match parse(name)? {
            None => set.clear(),
            Some(cap) => {
                set.remove(&cap);
            }
        }
    }
    for name in add {
        match parse(name)? {
            None => set.extend(caps::all()),
            Some(cap) => {
                set.insert(cap);
            }
        }
    }
    let mut names: Vec<String> = set.iter().map(|c| c.to_string()).collect();
    names.sort();
    Ok(names)
}

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a container did not start, with the exit code it is reported with (127: command not
/// found, 126: not executable, as shells and docker do).
#[derive(Debug)]
pub struct StartError {
    pub exit_code: i32,
    pub message: String,
}

impl StartError {
    fn setup(e: impl std::fmt::Display) -> StartError {
        StartError { exit_code: 128, message: e.to_string() }
    }
}

/// Builds the container around the calling process (already in its cgroup) and execs its
/// command. With
/// `send_pty`, the command's stdio is a terminal made inside the container, whose master
/// goes to `send_pty`.
pub fn setup_and_exec(container: &ContainerSpec, paths: &ContainerPaths, send_pty: Option<SendPty>) -> StartError {
    match setup(container, paths, send_pty) {
        Ok(exec) => exec.run(),
        Err(e) => e,
    }
}

fn setup(container: &ContainerSpec, paths: &ContainerPaths, send_pty: Option<SendPty>) -> Result<Exec, StartError> {
    nix::unistd::setsid().map_err(|e| StartError::setup(format!("setsid: {e}")))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| StartError::setup(format!("new mount namespace: {e}")))?;
    rootfs::make_private().map_err(StartError::setup)?;
    let mut mounter = KernelMounter::default();
    for step in rootfs::steps(container, paths) {
        mounter.apply(&step).map_err(StartError::setup)?;
    }
    // Inside the new root now. The working directory is made if the image lacks it, as
    // docker and containerd do.
    let cwd = if container.working_dir.is_empty() { "/" } else { &container.working_dir };
    std::fs::create_dir_all(cwd).map_err(|e| StartError::setup(format!("working directory {cwd}: {e}")))?;
    nix::unistd::chdir(cwd).map_err(|e| StartError::setup(format!("chdir {cwd}: {e}")))?;
    if let Some(send) = send_pty {
        attach_new_pty(send, container.window).map_err(|e| StartError::setup(format!("terminal: {e}")))?;
    }
    set_rlimits()?;
    let exec = Exec::resolve(container)?;
    restrict(container)?;
    Ok(exec)
}

/// Hands a terminal's master to whoever asked for it.
pub type SendPty<'a> = &'a dyn Fn(BorrowedFd) -> io::Result<()>;

/// `exec` into a running container (the process `pid`, as this PID namespace sees it):
/// its mount namespace and so its root, its working directory, environment, user,
/// capabilities and seccomp filter; then `args`. The caller is already in its cgroup and
/// the pod's other namespaces. With `terminal`, the command gets a terminal made inside
/// the container (its devpts), of that size if given, whose master goes to the `SendPty`.
/// Returns only on failure.
pub fn exec_in(
    container: &ContainerSpec,
    pid: i32,
    args: &[String],
    terminal: Option<(SendPty, Option<WindowSize>)>,
) -> StartError {
    let entered = (|| {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
            .map_err(|e| StartError::setup(format!("container mount namespace: {e}")))?;
        // setns(2) into a mount namespace also sets root and cwd to its root.
        nix::sched::setns(ns, CloneFlags::CLONE_NEWNS).map_err(|e| StartError::setup(format!("setns: {e}")))?;
        if let Some((send, window)) = terminal {
            nix::unistd::setsid().map_err(|e| StartError::setup(format!("setsid: {e}")))?;
            attach_new_pty(send, window).map_err(|e| StartError::setup(format!("terminal: {e}")))?;
        }
        let cwd = if container.working_dir.is_empty() { "/" } else { &container.working_dir };
        nix::unistd::chdir(cwd).map_err(|e| StartError::setup(format!("chdir {cwd}: {e}")))?;
        set_rlimits()?;
        let exec = Exec::resolve(&ContainerSpec { args: args.to_vec(), ..container.clone() })?;
        restrict(container)?;
        Ok(exec)
    })();
    match entered {
        Ok(exec) => exec.run(),
        Err(e) => e,
    }
}

/// Opens a pty in the container's /dev/pts, hands its master to `send`, and makes its slave
/// our stdio and controlling terminal (we lead a session of our own already).
fn attach_new_pty(send: SendPty, window: Option<WindowSize>) -> io::Result<()> {
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/ptmx")?
        .into();
    let unlock: libc::c_int = 0;
    // SAFETY: pty ioctls on the master we own: unlock the slave (TIOCSPTLCK), then open it
    // through the master (TIOCGPTPEER, no path lookup).
    let slave = unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    if let Some(window) = window {
        window.apply_to(master.as_raw_fd())?;
    }
    send(master.as_fd())?;
    drop(master);
    for target in 0..3 {
        // SAFETY: duplicating our slave onto the standard descriptors.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: making the pty (now stdin) our controlling terminal.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// User, capabilities, no_new_privs, seccomp and closed descriptors: the last steps before
/// exec, the same for a container and for an exec into it.
fn restrict(container: &ContainerSpec) -> Result<(), StartError> {
    let filters = match container.privileged {
        true => vec![],
        false => seccomp::runtime_default().map_err(|e| StartError::setup(format!("seccomp filter: {e}")))?,
    };
    set_user_and_capabilities(container)?;
    if !container.privileged {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(StartError::setup(format!("no_new_privs: {}", io::Error::last_os_error())));
        }
        seccomp::apply(&filters).map_err(|e| StartError::setup(format!("seccomp: {e}")))?;
    }
    // Nothing of the pod init's (or the agent's) may reach the container: every descriptor
    // above stdio closes at exec (CVE-2024-21626 leaked one into runc containers).
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) } != 0 {
        return Err(StartError::setup(format!("close_range: {}", io::Error::last_os_error())));
    }
    Ok(())
}

fn set_rlimits() -> Result<(), StartError> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // containerd's default: RLIMIT_NOFILE 1048576, as high as the node allows.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| StartError::setup(format!("getrlimit: {e}")))?;
    let limit = hard.min(1 << 20);
    setrlimit(Resource::RLIMIT_NOFILE, limit, limit).map_err(|e| StartError::setup(format!("setrlimit NOFILE: {e}")))
}

fn set_user_and_capabilities(container: &ContainerSpec) -> Result<(), StartError> {
    let user = &container.user;
    let err = |what: &str, e: &dyn std::fmt::Display| StartError::setup(format!("{what}: {e}"));
    // What this kernel and this process have: a privileged container gets all of it.
    let have = caps::read(None, CapSet::Permitted).map_err(|e| err("read capabilities", &e))?;
    let wanted: HashSet<Capability> = match &container.capabilities {
        Some(names) => names
            .iter()
            .map(|n| n.parse::<Capability>().map_err(|_| StartError::setup(format!("unknown capability {n:?}"))))
            .collect::<Result<_, _>>()?,
        None => DEFAULT_CAPABILITIES.iter().copied().collect(),
    };
    let keep: HashSet<Capability> = match container.privileged {
        true => have,
        false => wanted.into_iter().filter(|c| have.contains(c)).collect(),
    };
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| err("drop bounding capability", &e))?;
        }
    }
    let mut groups: Vec<nix::unistd::Gid> = vec![nix::unistd::Gid::from_raw(user.gid)];
    groups.extend(user.additional_gids.iter().map(|g| nix::unistd::Gid::from_raw(*g)));
    nix::unistd::setgroups(&groups).map_err(|e| err("setgroups", &e))?;
    nix::unistd::setresgid(groups[0], groups[0], groups[0]).map_err(|e| err("setgid", &e))?;
    // For a non-root user setuid(2) empties the permitted and effective sets: such a user
    // runs without capabilities (the bounding set still limits what setuid binaries get).
    let uid = nix::unistd::Uid::from_raw(user.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| err("setuid", &e))?;
    let set = if user.uid == 0 { keep } else { HashSet::new() };
    caps::set(None, CapSet::Inheritable, &HashSet::new()).map_err(|e| err("inheritable capabilities", &e))?;
    caps::set(None, CapSet::Ambient, &HashSet::new()).map_err(|e| err("ambient capabilities", &e))?;
    caps::set(None, CapSet::Effective, &set).map_err(|e| err("effective capabilities", &e))?;
    caps::set(None, CapSet::Permitted, &set).map_err(|e| err("permitted capabilities", &e))?;
    Ok(())
}

/// The resolved command: its path in the container, argv and environment.
struct Exec {
    path: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
}

impl Exec {
    /// Finds argv[0] as execve would after a `$PATH` search, so a missing or
    /// non-executable command is reported with the path tried.
    fn resolve(container: &ContainerSpec) -> Result<Exec, StartError> {
        let Some(program) = container.args.first() else {
            return Err(StartError { exit_code: 127, message: "no command: the image and the pod give none".into() });
        };
        let path_var =
            container.env.iter().rev().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH).to_string();
        let path = if program.contains('/') {
            let p = PathBuf::from(program);
            check_executable(&p, program)?;
            p
        } else {
            path_var
                .split(':')
                .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(program))
                .find(|p| p.is_file())
                .ok_or_else(|| StartError {
                    exit_code: 127,
                    message: format!("exec: {program:?}: executable file not found in $PATH ({path_var})"),
                })
                .and_then(|p| check_executable(&p, program).map(|()| p))?
        };
        let cstr = |s: &str| CString::new(s).map_err(|_| StartError::setup(format!("{s:?} contains a NUL byte")));
        let mut env: Vec<CString> = container.env.iter().map(|e| cstr(e)).collect::<Result<_, _>>()?;
        if !container.env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(cstr(&format!("PATH={DEFAULT_PATH}"))?);
        }
        Ok(Exec {
            path: CString::new(path.as_os_str().as_bytes()).map_err(|_| StartError::setup("path contains NUL"))?,
            argv: container.args.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?,
            env,
        })
    }

    fn run(self) -> StartError {
        // SAFETY: NUL-terminated arrays of valid C strings that outlive the call.
        let err = nix::unistd::execve(&self.path, &self.argv, &self.env).unwrap_err();
        let shown = self.path.to_string_lossy();
        match err {
            nix::Error::ENOENT => {
                StartError { exit_code: 127, message: format!("exec {shown}: no such file or directory") }
            }
            nix::Error::EACCES => StartError { exit_code: 126, message: format!("exec {shown}: permission denied") },
            e => StartError { exit_code: 126, message: format!("exec {shown}: {e}") },
        }
    }
}

fn check_executable(path: &Path, program: &str) -> Result<(), StartError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(StartError { exit_code: 127, message: format!("exec: {program:?}: no such file or directory") })
        }
        Err(e) => Err(StartError { exit_code: 126, message: format!("exec: {program:?}: {e}") }),
        Ok(m) if m.is_dir() || m.permissions().mode() & 0o111 == 0 => {
            Err(StartError { exit_code: 126, message: format!("exec: {}: permission denied", path.display()) })
        }
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_from_add_and_drop() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(capabilities(&names(&["net_admin"]), &names(&["ALL"])).unwrap(), ["CAP_NET_ADMIN"]);
        let default = capabilities(&[], &names(&["CAP_KILL", "MKNOD"])).unwrap();
        assert_eq!(default.len(), DEFAULT_CAPABILITIES.len() - 2);
        assert!(!default.contains(&"CAP_KILL".to_string()) && default.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(capabilities(&names(&["ALL"]), &[]).unwrap().len(), caps::all().len());
        assert!(capabilities(&names(&["FLY"]), &[]).unwrap_err().contains("\"FLY\""));
    }
}
