//! A container's root filesystem as a list of steps (a pure function of the specs, so tests
//! check the sequence without root), and the [`Mounter`] that carries them out.
//!
//! The steps follow the OCI runtime spec's defaults (config-linux.md, runc's libcontainer
//! `rootfs_linux.go`): overlay rootfs, `/proc`, a minimal tmpfs `/dev` with the default
//! devices, `/dev/pts` as a new devpts instance, `/dev/shm` shared by the pod, `/sys`
//! read-only, the masked and read-only paths.
//!
//! The image decides what every path in the rootfs is, symlinks included: a path named
//! before `pivot_root(2)` can lead out of the rootfs (CVE-2021-30465 and its kin in runc).
//! So only the overlay is mounted before it; what comes from the node (the pod's files,
//! `/dev/shm`, volumes) is taken beforehand as a detached copy of its mount
//! (open_tree(2) `OPEN_TREE_CLONE`) and attached after it (move_mount(2)), when every path
//! resolves inside the new root.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::spec::{ContainerSpec, DeviceKind};

/// Paths prepared for one container.
#[derive(Clone, Debug)]
pub struct ContainerPaths {
    /// Where the overlay is mounted, inside the container's mount namespace.
    pub rootfs: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The pod's shared `/dev/shm` (a tmpfs the pod owns).
    pub shm: PathBuf,
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    /// Each volume of the pod by name, resolved to a host path.
    pub volumes: Vec<(String, PathBuf)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A new mount of a filesystem.
    Mount {
        source: String,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    /// A detached copy of the mount tree at `source` on the node (before pivot_root), kept
    /// for an [`Step::Attach`]; clones are numbered in order from 0.
    Clone {
        source: PathBuf,
    },
    /// Attaches clone number `clone` at `target` (after pivot_root), read-only if asked.
    Attach {
        clone: usize,
        target: PathBuf,
        read_only: bool,
    },
    /// A device node (`mknod(2)`), mode 0666.
    Device {
        path: PathBuf,
        kind: DeviceKind,
        major: u32,
        minor: u32,
    },
    Symlink {
        target: String,
        path: PathBuf,
    },
    Mkdir {
        path: PathBuf,
    },
    /// An empty file to bind-mount over (created only if missing).
    Touch {
        path: PathBuf,
    },
    /// `pivot_root(2)` into `new_root`, then detach the old root.
    PivotRoot {
        new_root: PathBuf,
    },
    /// Hide a path: /dev/null over a file, an empty read-only tmpfs over a directory.
    Mask {
        path: PathBuf,
    },
    /// Bind a path onto itself and remount it read-only.
    ReadOnly {
        path: PathBuf,
    },
}

/// The OCI default masked paths (runc, containerd's `oci.WithMaskedPaths` defaults).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The OCI default read-only paths.
pub const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Character devices every container gets (OCI config-linux.md "Default Devices").
const DEVICES: &[(&str, u32, u32)] =
    &[("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

fn flags(list: &[MsFlags]) -> MsFlags {
    list.iter().fold(MsFlags::empty(), |a, b| a | *b)
}

/// Every step that builds `container`'s root filesystem, in order.
pub fn steps(container: &ContainerSpec, paths: &ContainerPaths) -> Vec<Step> {
    let path = |p: &str| PathBuf::from(p);
    let (nosuid, nodev, noexec) = (MsFlags::MS_NOSUID, MsFlags::MS_NODEV, MsFlags::MS_NOEXEC);
    let lower: Vec<String> = container.lower_dirs.iter().map(|p| p.display().to_string()).collect();
    // `volatile` (Linux 5.10): no sync of the upper filesystem, which overlayfs otherwise
    // does at every unmount (ovl_sync_fs), so at every container exit: a disk flush of
    // several ms. A container's upper dir never outlives a crash: a reboot empties the run
    // directory and recovery then deletes pod data with no state.
    let mut steps = vec![Step::Mount {
        source: "overlay".into(),
        target: paths.rootfs.clone(),
        fstype: Some("overlay".into()),
        flags: MsFlags::empty(),
        data: Some(format!(
            "lowerdir={},upperdir={},workdir={},volatile",
            lower.join(":"),
            paths.upper.display(),
            paths.work.display()
        )),
    }];
    // What comes from the node, cloned before pivot_root, attached after it.
    let mut binds: Vec<(PathBuf, PathBuf, bool)> = vec![(paths.shm.clone(), path("/dev/shm"), false)];
    for (source, file) in
        [(&paths.hostname, "/etc/hostname"), (&paths.hosts, "/etc/hosts"), (&paths.resolv_conf, "/etc/resolv.conf")]
    {
        binds.push((source.clone(), path(file), false));
    }
    for m in &container.mounts {
        if let Some((_, source)) = paths.volumes.iter().find(|(name, _)| *name == m.volume) {
            binds.push((source.clone(), path(&m.destination), m.read_only));
        }
    }
    if container.privileged {
        binds.push((path("/dev"), path("/dev"), false));
    }
    steps.extend(binds.iter().map(|(source, _, _)| Step::Clone { source: source.clone() }));
    let attach = |clone: usize| {
        let (source, target, read_only) = &binds[clone];
        let place =
            if source.is_file() { Step::Touch { path: target.clone() } } else { Step::Mkdir { path: target.clone() } };
        [place, Step::Attach { clone, target: target.clone(), read_only: *read_only }]
    };
    let mount = |source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>| Step::Mount {
        source: source.into(),
        target: path(target),
        fstype: Some(fstype.into()),
        flags,
        data: data.map(String::from),
    };
    steps.push(Step::PivotRoot { new_root: paths.rootfs.clone() });
    steps.push(Step::Mkdir { path: path("/proc") });
    steps.push(mount("proc", "/proc", "proc", flags(&[nosuid, nodev, noexec]), None));
    if container.privileged {
        steps.extend(attach(binds.len() - 1));
    } else {
        steps.push(Step::Mkdir { path: path("/dev") });
        steps.push(mount(
            "tmpfs",
            "/dev",
            "tmpfs",
            flags(&[nosuid, MsFlags::MS_STRICTATIME]),
            Some("mode=755,size=65536k"),
        ));
        for (name, major, minor) in DEVICES {
            let path = path(&format!("/dev/{name}"));
            steps.push(Step::Device { path, kind: DeviceKind::Char, major: *major, minor: *minor });
        }
        steps.push(Step::Mkdir { path: path("/dev/pts") });
        steps.push(mount(
            "devpts",
            "/dev/pts",
            "devpts",
            flags(&[nosuid, noexec]),
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ));
        for (target, link) in [
            ("pts/ptmx", "/dev/ptmx"),
            ("/proc/self/fd", "/dev/fd"),
            ("/proc/kcore", "/dev/core"),
            ("/proc/self/fd/0", "/dev/stdin"),
            ("/proc/self/fd/1", "/dev/stdout"),
            ("/proc/self/fd/2", "/dev/stderr"),
        ] {
            steps.push(Step::Symlink { target: target.into(), path: path(link) });
        }
        steps.push(Step::Mkdir { path: path("/dev/mqueue") });
        steps.push(mount("mqueue", "/dev/mqueue", "mqueue", flags(&[nosuid, nodev, noexec]), None));
        for device in &container.devices {
            let node = path(&device.path);
            steps.push(Step::Mkdir { path: node.parent().unwrap_or(Path::new("/")).to_path_buf() });
            steps.push(Step::Device { path: node, kind: device.kind, major: device.major, minor: device.minor });
        }
    }
    steps.extend(attach(0));
    steps.push(Step::Mkdir { path: path("/sys") });
    let sys_flags = match container.privileged {
        true => flags(&[nosuid, nodev, noexec]),
        false => flags(&[nosuid, nodev, noexec, MsFlags::MS_RDONLY]),
    };
    steps.push(mount("sysfs", "/sys", "sysfs", sys_flags, None));
    steps.push(Step::Mkdir { path: path("/etc") });
    let volumes = binds.len() - usize::from(container.privileged);
    for clone in 1..volumes {
        steps.extend(attach(clone));
    }
    if !container.privileged {
        steps.extend(MASKED_PATHS.iter().map(|p| Step::Mask { path: path(p) }));
        steps.extend(READONLY_PATHS.iter().map(|p| Step::ReadOnly { path: path(p) }));
    }
    if container.read_only_rootfs {
        steps.push(Step::ReadOnly { path: path("/") });
    }
    steps
}

/// Carries out [`Step`]s: the kernel for real, a recorder in tests.
pub trait Mounter {
    fn apply(&mut self, step: &Step) -> io::Result<()>;
}

/// The real thing: mount(2), mknod(2), pivot_root(2), in the calling process's mount
/// namespace (which must be private: see [`make_private`]).
#[derive(Default)]
pub struct KernelMounter {
    /// The detached mount trees of [`Step::Clone`], by number.
    clones: Vec<OwnedFd>,
}

impl Mounter for KernelMounter {
    fn apply(&mut self, step: &Step) -> io::Result<()> {
        let err = |what: &str, path: &Path, e: nix::Error| {
            io::Error::new(io::Error::from(e).kind(), format!("{what} {}: {e}", path.display()))
        };
        match step {
            Step::Mount { source, target, fstype, flags, data } => {
                nix::mount::mount(Some(source.as_str()), target, fstype.as_deref(), *flags, data.as_deref()).map_err(
                    |e| match (fstype.as_deref(), e) {
                        // Kernels before 5.10 do not know `volatile` (see steps).
                        (Some("overlay"), nix::Error::EINVAL) => {
                            err("mount overlay (needs Linux 5.10 or newer)", target, e)
                        }
                        _ => err("mount", target, e),
                    },
                )
            }
            Step::Clone { source } => {
                self.clones.push(clone_tree(source).map_err(|e| with_path("take a copy of the mount", source, e))?);
                Ok(())
            }
            Step::Attach { clone, target, read_only } => {
                let tree = self.clones.get(*clone).expect("clones come before their attachment");
                if *read_only {
                    make_read_only(tree).map_err(|e| with_path("make read-only", target, e))?;
                }
                attach_tree(tree, target).map_err(|e| with_path("attach", target, e))
            }
            Step::Device { path, kind, major, minor } => {
                let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
                let kind = match kind {
                    DeviceKind::Char => nix::sys::stat::SFlag::S_IFCHR,
                    DeviceKind::Block => nix::sys::stat::SFlag::S_IFBLK,
                };
                nix::sys::stat::mknod(path, kind, mode, libc::makedev(*major, *minor))
                    .map_err(|e| err("mknod", path, e))?;
                // mknod(2) applies the umask.
                nix::sys::stat::fchmodat(nix::fcntl::AT_FDCWD, path, mode, nix::sys::stat::FchmodatFlags::FollowSymlink)
                    .map_err(|e| err("chmod", path, e))
            }
            Step::Symlink { target, path } => std::os::unix::fs::symlink(target, path).or_else(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(io::Error::new(e.kind(), format!("symlink {}: {e}", path.display()))),
            }),
            Step::Mkdir { path } => std::fs::create_dir_all(path)
                .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", path.display()))),
            Step::Touch { path } => {
                if std::fs::symlink_metadata(path).is_err() {
                    std::fs::File::create(path)
                        .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", path.display())))?;
                }
                Ok(())
            }
            Step::PivotRoot { new_root } => pivot_root(new_root),
            Step::Mask { path } => match std::fs::metadata(path) {
                Err(_) => Ok(()),
                Ok(m) if m.is_dir() => {
                    nix::mount::mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>)
                        .map_err(|e| err("mask", path, e))
                }
                Ok(_) => nix::mount::mount(Some("/dev/null"), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                    .map_err(|e| err("mask", path, e)),
            },
            Step::ReadOnly { path } => {
                if std::fs::symlink_metadata(path).is_err() {
                    return Ok(());
                }
                nix::mount::mount(Some(path), path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                    .map_err(|e| err("bind", path, e))?;
                nix::mount::mount(
                    None::<&str>,
                    path,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| err("remount read-only", path, e))
            }
        }
    }
}

fn with_path(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// open_tree(2) with `OPEN_TREE_CLONE | AT_RECURSIVE`: a detached copy of the mounts at
/// and below `source`.
fn clone_tree(source: &Path) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let path = CString::new(source.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: a valid C string; the descriptor returned is owned right away.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// mount_setattr(2) `MOUNT_ATTR_RDONLY` on a detached tree, all of it, before it is
/// attached: only adds the flag (a remount would also drop nosuid, nodev or noexec), and
/// acts on the tree itself, not on whatever a path to it would lead to.
fn make_read_only(tree: &OwnedFd) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 1;
    let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let flags = libc::AT_EMPTY_PATH | libc::AT_RECURSIVE;
    // SAFETY: mount_setattr reads `attr`, alive for the call, of the size given.
    let done = unsafe {
        libc::syscall(libc::SYS_mount_setattr, tree.as_raw_fd(), c"".as_ptr(), flags, &attr, size_of::<MountAttr>())
    };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// move_mount(2) of a detached tree onto `target`, following symlinks in it: after
/// pivot_root they resolve inside the container's root.
fn attach_tree(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    const MOVE_MOUNT_T_SYMLINKS: libc::c_uint = 0x10;
    let target = CString::new(target.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: valid C strings and descriptors for the call.
    let done = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_SYMLINKS,
        )
    };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes every mount in this (new) mount namespace private, so nothing the container
/// mounts propagates back to the host (mount_namespaces(7), shared subtrees).
pub fn make_private() -> io::Result<()> {
    nix::mount::mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("make / private: {e}")))
}

/// `pivot_root(".", ".")` then detach the old root, as runc does: no directory for the old
/// root is needed in the image, and nothing of the host stays reachable.
fn pivot_root(new_root: &Path) -> io::Result<()> {
    let e = |what: &str, e: nix::Error| io::Error::new(io::Error::from(e).kind(), format!("{what}: {e}"));
    nix::unistd::chdir(new_root).map_err(|x| e("chdir to rootfs", x))?;
    let dot = CString::new(".").expect("no NUL");
    // SAFETY: valid C strings; pivot_root has no libc wrapper.
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } < 0 {
        return Err(io::Error::new(
            io::Error::last_os_error().kind(),
            format!("pivot_root {}: {}", new_root.display(), io::Error::last_os_error()),
        ));
    }
    nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(|x| e("detach old root", x))?;
    nix::unistd::chdir("/").map_err(|x| e("chdir /", x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::*;

    fn container() -> ContainerSpec {
        ContainerSpec {
            name: "c".into(),
            init: false,
            image: "busybox".into(),
            lower_dirs: vec!["/s/top".into(), "/s/base".into()],
            args: vec!["sh".into()],
            env: vec![],
            working_dir: "/".into(),
            user: User::default(),
            privileged: false,
            read_only_rootfs: false,
            mounts: vec![Mount { volume: "data".into(), destination: "/data".into(), read_only: true }],
            devices: vec![],
            capabilities: None,
            resources: Resources::default(),
            stdin: false,
            tty: false,
            window: None,
            log_path: "/l/0.log".into(),
            target: None,
        }
    }

    fn paths() -> ContainerPaths {
        ContainerPaths {
            rootfs: "/r".into(),
            upper: "/c/upper".into(),
            work: "/c/work".into(),
            shm: "/p/shm".into(),
            hostname: "/p/hostname".into(),
            hosts: "/p/hosts".into(),
            resolv_conf: "/p/resolv.conf".into(),
            volumes: vec![("data".into(), "/v/data".into())],
        }
    }

    fn targets(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Mount { target, fstype, flags, .. } => format!(
                    "mount {} {}{}",
                    fstype.as_deref().unwrap_or("bind"),
                    target.display(),
                    if flags.contains(MsFlags::MS_RDONLY) { " ro" } else { "" }
                ),
                Step::Clone { source } => format!("clone {}", source.display()),
                Step::Attach { clone, target, read_only } => {
                    format!("attach {clone} {}{}", target.display(), if *read_only { " ro" } else { "" })
                }
                Step::PivotRoot { new_root } => format!("pivot {}", new_root.display()),
                Step::Mask { path } => format!("mask {}", path.display()),
                Step::ReadOnly { path } => format!("ro {}", path.display()),
                other => format!("{other:?}").split_whitespace().next().unwrap().to_string(),
            })
            .filter(|s| {
                !s.starts_with("Mkdir")
                    && !s.starts_with("Touch")
                    && !s.starts_with("Symlink")
                    && !s.starts_with("Device")
            })
            .collect()
    }

    #[test]
    fn default_container_mount_sequence() {
        let steps = steps(&container(), &paths());
        let Step::Mount { data, .. } = &steps[0] else { panic!() };
        assert_eq!(data.as_deref(), Some("lowerdir=/s/top:/s/base,upperdir=/c/upper,workdir=/c/work,volatile"));
        let got = targets(&steps);
        let pivot = got.iter().position(|s| s == "pivot /r").unwrap();
        // Before pivot_root only the overlay is mounted; what comes from the node is
        // cloned there and attached after it, where the image's symlinks cannot lead out.
        assert_eq!(
            &got[..=pivot],
            [
                "mount overlay /r",
                "clone /p/shm",
                "clone /p/hostname",
                "clone /p/hosts",
                "clone /p/resolv.conf",
                "clone /v/data",
                "pivot /r",
            ]
        );
        let masks = got.iter().position(|s| s.starts_with("mask")).unwrap();
        assert_eq!(
            &got[pivot + 1..masks],
            [
                "mount proc /proc",
                "mount tmpfs /dev",
                "mount devpts /dev/pts",
                "mount mqueue /dev/mqueue",
                "attach 0 /dev/shm",
                "mount sysfs /sys ro",
                "attach 1 /etc/hostname",
                "attach 2 /etc/hosts",
                "attach 3 /etc/resolv.conf",
                "attach 4 /data ro",
            ]
        );
        assert!(got[masks..].contains(&"mask /proc/kcore".to_string()));
        assert!(got[masks..].contains(&"ro /proc/sys".to_string()));
        let devices: Vec<_> = steps.iter().filter(|s| matches!(s, Step::Device { .. })).collect();
        assert_eq!(devices.len(), 6);
        assert!(steps.contains(&Step::Symlink { target: "pts/ptmx".into(), path: "/dev/ptmx".into() }));
        // Every path after the overlay's is inside the new root.
        let before_pivot = steps.iter().position(|s| matches!(s, Step::PivotRoot { .. })).unwrap();
        assert!(steps[..before_pivot].iter().all(|s| matches!(s, Step::Mount { .. } | Step::Clone { .. })));
    }

    #[test]
    fn explicit_devices_are_made_inside_the_new_root() {
        let mut c = container();
        c.devices = vec![Device {
            path: "/dev/fuse".into(),
            kind: DeviceKind::Char,
            major: 10,
            minor: 229,
            access: "rwm".into(),
        }];
        let steps = steps(&c, &paths());
        let pivot = steps.iter().position(|s| matches!(s, Step::PivotRoot { .. })).unwrap();
        let fuse = Step::Device { path: "/dev/fuse".into(), kind: DeviceKind::Char, major: 10, minor: 229 };
        assert!(steps.iter().position(|s| *s == fuse).unwrap() > pivot);
    }

    #[test]
    fn privileged_and_read_only_rootfs() {
        let mut c = container();
        c.privileged = true;
        c.read_only_rootfs = true;
        let got = targets(&steps(&c, &paths()));
        assert!(
            got.contains(&"clone /dev".to_string()) && got.contains(&"attach 5 /dev".to_string()),
            "real /dev: {got:?}"
        );
        assert!(got.contains(&"mount sysfs /sys".to_string()), "/sys writable: {got:?}");
        assert!(!got.iter().any(|s| s.starts_with("mask")), "no masked paths: {got:?}");
        assert_eq!(got.last().unwrap(), "ro /");
    }
}
