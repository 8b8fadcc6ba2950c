//! A container's root filesystem as a list of steps (a pure function of the specs, so tests
//! check the sequence without root), and the [`Mounter`] that carries them out.
//!
//! The steps follow the OCI runtime spec's defaults (config-linux.md, runc's libcontainer
//! `rootfs_linux.go`): overlay rootfs, `/proc`, a minimal tmpfs `/dev` with the default
//! devices, `/dev/pts` as a new devpts instance, `/dev/shm` shared by the pod, `/sys`
//! read-only, then `pivot_root(2)`, then the masked and read-only paths.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::spec::ContainerSpec;

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
    Mount {
        source: String,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    /// A character device node (`mknod(2)`), mode 0666.
    CharDevice {
        path: PathBuf,
        major: u64,
        minor: u64,
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
const DEVICES: &[(&str, u64, u64)] =
    &[("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

fn flags(list: &[MsFlags]) -> MsFlags {
    list.iter().fold(MsFlags::empty(), |a, b| a | *b)
}

/// Every step that builds `container`'s root filesystem, in order.
pub fn steps(container: &ContainerSpec, paths: &ContainerPaths) -> Vec<Step> {
    let root = &paths.rootfs;
    let inside = |p: &str| root.join(p.trim_start_matches('/'));
    let (nosuid, nodev, noexec) = (MsFlags::MS_NOSUID, MsFlags::MS_NODEV, MsFlags::MS_NOEXEC);
    let lower: Vec<String> = container.lower_dirs.iter().map(|p| p.display().to_string()).collect();
    // `volatile` (Linux 5.10): no sync of the upper filesystem, which overlayfs otherwise
    // does at every unmount (ovl_sync_fs), so at every container exit: a disk flush of
    // several ms. A container's upper dir never outlives a crash: a reboot empties the run
    // directory and recovery then deletes pod data with no state.
    let mut steps = vec![Step::Mount {
        source: "overlay".into(),
        target: root.clone(),
        fstype: Some("overlay".into()),
        flags: MsFlags::empty(),
        data: Some(format!(
            "lowerdir={},upperdir={},workdir={},volatile",
            lower.join(":"),
            paths.upper.display(),
            paths.work.display()
        )),
    }];
    let mount = |source: &str, target: PathBuf, fstype: &str, flags: MsFlags, data: Option<&str>| Step::Mount {
        source: source.into(),
        target,
        fstype: Some(fstype.into()),
        flags,
        data: data.map(String::from),
    };
    let bind = |source: &Path, target: PathBuf| Step::Mount {
        source: source.display().to_string(),
        target,
        fstype: None,
        flags: MsFlags::MS_BIND | MsFlags::MS_REC,
        data: None,
    };
    steps.push(Step::Mkdir { path: inside("/proc") });
    steps.push(mount("proc", inside("/proc"), "proc", flags(&[nosuid, nodev, noexec]), None));
    steps.push(Step::Mkdir { path: inside("/dev") });
    if container.privileged {
        steps.push(bind(Path::new("/dev"), inside("/dev")));
    } else {
        steps.push(mount(
            "tmpfs",
            inside("/dev"),
            "tmpfs",
            flags(&[nosuid, MsFlags::MS_STRICTATIME]),
            Some("mode=755,size=65536k"),
        ));
        for (name, major, minor) in DEVICES {
            steps.push(Step::CharDevice { path: inside(&format!("/dev/{name}")), major: *major, minor: *minor });
        }
        steps.push(Step::Mkdir { path: inside("/dev/pts") });
        steps.push(mount(
            "devpts",
            inside("/dev/pts"),
            "devpts",
            flags(&[nosuid, noexec]),
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ));
        for (target, link) in
            [("pts/ptmx", "/dev/ptmx"), ("/proc/self/fd", "/dev/fd"), ("/proc/kcore", "/dev/core")].into_iter().chain([
                ("/proc/self/fd/0", "/dev/stdin"),
                ("/proc/self/fd/1", "/dev/stdout"),
                ("/proc/self/fd/2", "/dev/stderr"),
            ])
        {
            steps.push(Step::Symlink { target: target.into(), path: inside(link) });
        }
        steps.push(Step::Mkdir { path: inside("/dev/mqueue") });
        steps.push(mount("mqueue", inside("/dev/mqueue"), "mqueue", flags(&[nosuid, nodev, noexec]), None));
    }
    steps.push(Step::Mkdir { path: inside("/dev/shm") });
    steps.push(bind(&paths.shm, inside("/dev/shm")));
    steps.push(Step::Mkdir { path: inside("/sys") });
    let sys_flags = match container.privileged {
        true => flags(&[nosuid, nodev, noexec]),
        false => flags(&[nosuid, nodev, noexec, MsFlags::MS_RDONLY]),
    };
    steps.push(mount("sysfs", inside("/sys"), "sysfs", sys_flags, None));
    for (source, file) in
        [(&paths.hostname, "/etc/hostname"), (&paths.hosts, "/etc/hosts"), (&paths.resolv_conf, "/etc/resolv.conf")]
    {
        steps.push(Step::Mkdir { path: inside("/etc") });
        steps.push(Step::Touch { path: inside(file) });
        steps.push(bind(source, inside(file)));
    }
    for m in &container.mounts {
        let source = paths.volumes.iter().find(|(name, _)| *name == m.volume).map(|(_, p)| p.clone());
        let Some(source) = source else { continue };
        let target = inside(&m.destination);
        let is_file = source.is_file();
        steps.push(if is_file { Step::Touch { path: target.clone() } } else { Step::Mkdir { path: target.clone() } });
        steps.push(bind(&source, target.clone()));
        if m.read_only {
            steps.push(Step::Mount {
                source: source.display().to_string(),
                target,
                fstype: None,
                flags: flags(&[MsFlags::MS_BIND, MsFlags::MS_REMOUNT, MsFlags::MS_RDONLY]),
                data: None,
            });
        }
    }
    steps.push(Step::PivotRoot { new_root: root.clone() });
    if !container.privileged {
        steps.extend(MASKED_PATHS.iter().map(|p| Step::Mask { path: PathBuf::from(p) }));
        steps.extend(READONLY_PATHS.iter().map(|p| Step::ReadOnly { path: PathBuf::from(p) }));
    }
    if container.read_only_rootfs {
        steps.push(Step::ReadOnly { path: PathBuf::from("/") });
    }
    steps
}

/// Carries out [`Step`]s: the kernel for real, a recorder in tests.
pub trait Mounter {
    fn apply(&mut self, step: &Step) -> io::Result<()>;
}

/// The real thing: mount(2), mknod(2), pivot_root(2), in the calling process's mount
/// namespace (which must be private: see [`make_private`]).
pub struct KernelMounter;

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
                )?;
                // A bind mount ignores MS_RDONLY and friends until remounted (mount(2)).
                let restricted = *flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
                if flags.contains(MsFlags::MS_BIND) && !flags.contains(MsFlags::MS_REMOUNT) && !restricted.is_empty() {
                    nix::mount::mount(None::<&str>, target, None::<&str>, *flags | MsFlags::MS_REMOUNT, None::<&str>)
                        .map_err(|e| err("remount", target, e))?;
                }
                Ok(())
            }
            Step::CharDevice { path, major, minor } => {
                let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
                nix::sys::stat::mknod(
                    path,
                    nix::sys::stat::SFlag::S_IFCHR,
                    mode,
                    libc::makedev(*major as u32, *minor as u32),
                )
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
            image: "busybox".into(),
            lower_dirs: vec!["/s/top".into(), "/s/base".into()],
            args: vec!["sh".into()],
            env: vec![],
            working_dir: "/".into(),
            user: User::default(),
            privileged: false,
            read_only_rootfs: false,
            mounts: vec![Mount { volume: "data".into(), destination: "/data".into(), read_only: true }],
            resources: Resources::default(),
            stdin: false,
            tty: false,
            log_path: "/l/0.log".into(),
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
                Step::PivotRoot { new_root } => format!("pivot {}", new_root.display()),
                Step::Mask { path } => format!("mask {}", path.display()),
                Step::ReadOnly { path } => format!("ro {}", path.display()),
                other => format!("{other:?}").split_whitespace().next().unwrap().to_string(),
            })
            .filter(|s| {
                !s.starts_with("Mkdir")
                    && !s.starts_with("Touch")
                    && !s.starts_with("Symlink")
                    && !s.starts_with("CharDevice")
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
        assert_eq!(
            &got[..pivot],
            [
                "mount overlay /r",
                "mount proc /r/proc",
                "mount tmpfs /r/dev",
                "mount devpts /r/dev/pts",
                "mount mqueue /r/dev/mqueue",
                "mount bind /r/dev/shm",
                "mount sysfs /r/sys ro",
                "mount bind /r/etc/hostname",
                "mount bind /r/etc/hosts",
                "mount bind /r/etc/resolv.conf",
                "mount bind /r/data",
                "mount bind /r/data ro",
            ]
        );
        assert!(got[pivot + 1..].contains(&"mask /proc/kcore".to_string()));
        assert!(got[pivot + 1..].contains(&"ro /proc/sys".to_string()));
        let devices: Vec<_> = steps.iter().filter(|s| matches!(s, Step::CharDevice { .. })).collect();
        assert_eq!(devices.len(), 6);
        assert!(steps.contains(&Step::Symlink { target: "pts/ptmx".into(), path: "/r/dev/ptmx".into() }));
    }

    #[test]
    fn privileged_and_read_only_rootfs() {
        let mut c = container();
        c.privileged = true;
        c.read_only_rootfs = true;
        let got = targets(&steps(&c, &paths()));
        assert!(got.contains(&"mount bind /r/dev".to_string()), "real /dev: {got:?}");
        assert!(got.contains(&"mount sysfs /r/sys".to_string()), "/sys writable: {got:?}");
        assert!(!got.iter().any(|s| s.starts_with("mask")), "no masked paths: {got:?}");
        assert_eq!(got.last().unwrap(), "ro /");
    }
}
