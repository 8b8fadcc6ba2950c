//! Pod and container cgroups, v1 and v2, in kubelet's cgroupfs-driver layout:
//! `<root>/kubepods/{burstable,besteffort}/pod<uid>/<container>`, Guaranteed pods directly
//! under `kubepods`. `<root>` is the cgroup podctl itself runs in (per hierarchy on v1), so
//! podctl only ever creates cgroups below its own; `--cgroup-root` may name another
//! (absolute, as kubelet's flag, or relative to podctl's own).
//!
//! A thin layer of our own rather than cgroups-rs: that crate pins an older nix, always
//! brings a D-Bus client, and picks v1 or v2 for the whole machine, where the hybrid layout
//! (v1 controllers beside an empty v2 tree) needs the controllers found one by one.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::devices;
use crate::spec::Resources;

/// kubelet's CFS period (100 ms) and the smallest quota it sets (1 ms).
const CFS_PERIOD_US: u64 = 100_000;
const MIN_QUOTA_US: u64 = 1_000;
/// kubelet's MinShares / MaxShares.
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// Kubernetes' rule: Guaranteed when every container's CPU and memory limits are set
    /// (requests then equal them), BestEffort when nothing is set, Burstable otherwise.
    pub fn of<'a>(containers: impl IntoIterator<Item = &'a Resources>) -> QosClass {
        let all: Vec<&Resources> = containers.into_iter().collect();
        let guaranteed = !all.is_empty()
            && all.iter().all(|r| {
                r.cpu_limit_millis.is_some()
                    && r.memory_limit_bytes.is_some()
                    && r.cpu_request_millis.is_none_or(|req| Some(req) == r.cpu_limit_millis)
            });
        let nothing = all
            .iter()
            .all(|r| r.cpu_limit_millis.is_none() && r.memory_limit_bytes.is_none() && r.cpu_request_millis.is_none());
        match (guaranteed, nothing) {
            (true, _) => QosClass::Guaranteed,
            (_, true) => QosClass::BestEffort,
            _ => QosClass::Burstable,
        }
    }

    fn dir(self) -> Option<&'static str> {
        match self {
            QosClass::Guaranteed => None,
            QosClass::Burstable => Some("burstable"),
            QosClass::BestEffort => Some("besteffort"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    Cpu,
    Memory,
    Pids,
    /// v1's device access controller (on v2, device access is a BPF program).
    Devices,
    /// The v2 tree, which holds every controller.
    Unified,
}

/// One hierarchy podctl uses: where its `<root>` is on it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Root {
    controller: Controller,
    dir: PathBuf,
}

/// The cgroup hierarchies of this machine, as podctl uses them.
#[derive(Clone, Debug)]
pub struct Cgroups {
    roots: Vec<Root>,
}

/// A cgroup in every hierarchy podctl uses (one directory on v2, one per controller on v1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    pub dirs: Vec<(Controller, PathBuf)>,
}

impl Cgroups {
    /// Finds the hierarchies from /proc/self/mountinfo and /proc/self/cgroup.
    pub fn detect(root: Option<&str>) -> io::Result<Cgroups> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let own = fs::read_to_string("/proc/self/cgroup")?;
        Cgroups::from_layout(&mountinfo, &own, root)
    }

    /// The same from the two files' text: v1 when the cpu, memory and pids controllers are
    /// mounted as v1 (the hybrid layout included, with the devices controller when it is
    /// mounted), else v2.
    pub fn from_layout(mountinfo: &str, own: &str, root: Option<&str>) -> io::Result<Cgroups> {
        let mut v1 = Vec::new();
        let mut v2 = None;
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let mount_point = left.split(' ').nth(4).unwrap_or_default();
            let mut right = right.split(' ');
            let (fstype, options) = (right.next().unwrap_or_default(), right.nth(1).unwrap_or_default());
            match fstype {
                "cgroup2" => v2 = Some(PathBuf::from(mount_point)),
                "cgroup" => {
                    for (name, controller) in [
                        ("cpu", Controller::Cpu),
                        ("memory", Controller::Memory),
                        ("pids", Controller::Pids),
                        ("devices", Controller::Devices),
                    ] {
                        if options.split(',').any(|o| o == name) && !v1.iter().any(|(c, _)| *c == controller) {
                            v1.push((controller, PathBuf::from(mount_point)));
                        }
                    }
                }
                _ => {}
            }
        }
        let own_path = |key: &str| {
            own.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                let matches = match key {
                    "" => controllers.is_empty(),
                    name => controllers.split(',').any(|c| c == name),
                };
                matches.then(|| path.to_string())
            })
        };
        let place = |mount: &Path, own: Option<String>| -> PathBuf {
            let base = match root {
                Some(r) if r.starts_with('/') => PathBuf::from(r),
                Some(r) => PathBuf::from(own.unwrap_or_else(|| "/".into())).join(r),
                None => PathBuf::from(own.unwrap_or_else(|| "/".into())),
            };
            mount.join(base.strip_prefix("/").unwrap_or(&base))
        };
        let resources = [Controller::Cpu, Controller::Memory, Controller::Pids];
        let roots = if resources.iter().all(|wanted| v1.iter().any(|(c, _)| c == wanted)) {
            v1.into_iter()
                .map(|(controller, mount)| {
                    let key = match controller {
                        Controller::Cpu => "cpu",
                        Controller::Memory => "memory",
                        Controller::Pids => "pids",
                        _ => "devices",
                    };
                    Root { controller, dir: place(&mount, own_path(key)) }
                })
                .collect()
        } else if let Some(mount) = v2 {
            vec![Root { controller: Controller::Unified, dir: place(&mount, own_path("")) }]
        } else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no cgroup hierarchy with cpu, memory and pids found"));
        };
        Ok(Cgroups { roots })
    }

    fn cgroup(&self, relative: &Path) -> Cgroup {
        Cgroup { dirs: self.roots.iter().map(|r| (r.controller, r.dir.join(relative))).collect() }
    }

    fn pod_relative(qos: QosClass, pod_uid: &str) -> PathBuf {
        let mut path = PathBuf::from("kubepods");
        if let Some(dir) = qos.dir() {
            path.push(dir);
        }
        path.join(format!("pod{pod_uid}"))
    }

    /// `cgroup` in every hierarchy podctl uses now: one recorded by an older podctl may
    /// lack one (the v1 devices controller), which is then found at the same place below
    /// its root as the others.
    pub fn complete(&self, cgroup: &Cgroup) -> Cgroup {
        let relative = cgroup.dirs.iter().find_map(|(controller, dir)| {
            let root = self.roots.iter().find(|r| r.controller == *controller)?;
            dir.strip_prefix(&root.dir).ok().map(Path::to_path_buf)
        });
        let mut complete = cgroup.clone();
        for root in &self.roots {
            if let Some(relative) = &relative
                && !complete.dirs.iter().any(|(c, _)| *c == root.controller)
            {
                complete.dirs.push((root.controller, root.dir.join(relative)));
            }
        }
        complete
    }

    /// The cgroup `kubepods` goes in (`<root>`): to be removed only by whoever made it
    /// (tests that pass a `--cgroup-root` of their own).
    pub fn root(&self) -> Cgroup {
        self.cgroup(Path::new(""))
    }

    pub fn pod(&self, qos: QosClass, pod_uid: &str) -> Cgroup {
        self.cgroup(&Cgroups::pod_relative(qos, pod_uid))
    }

    /// Creates `cgroup` (and its parents) with `resources` as its limits. On v2 each
    /// parent podctl created gets the controllers enabled for its children; podctl's own
    /// cgroup must already delegate them.
    pub fn create(&self, cgroup: &Cgroup, resources: &Resources) -> io::Result<()> {
        for (root, (controller, dir)) in self.roots.iter().zip(&cgroup.dirs) {
            if *controller == Controller::Unified {
                let available = fs::read_to_string(root.dir.join("cgroup.controllers")).unwrap_or_default();
                for wanted in ["cpu", "memory", "pids"] {
                    if !available.split_whitespace().any(|c| c == wanted) {
                        return Err(io::Error::other(format!(
                            "cgroup v2: the {wanted} controller is not available in {} (enable it in its parent's cgroup.subtree_control)",
                            root.dir.display()
                        )));
                    }
                }
                let mut parent = root.dir.clone();
                for part in dir.strip_prefix(&root.dir).map_err(io::Error::other)?.components() {
                    if parent != root.dir {
                        write(&parent.join("cgroup.subtree_control"), "+cpu +memory +pids")?;
                    }
                    parent.push(part);
                    make_dir(&parent)?;
                }
            } else {
                fs::create_dir_all(dir)
                    .map_err(|e| io::Error::new(e.kind(), format!("create cgroup {}: {e}", dir.display())))?;
            }
        }
        for (controller, file, value) in limits(&self.roots, resources) {
            if let Some((_, dir)) = cgroup.dirs.iter().find(|(c, _)| *c == controller) {
                write(&dir.join(file), &value)?;
            }
        }
        Ok(())
    }
}

impl Cgroups {
    /// Limits the devices the processes of `cgroup` may use to `rules` (see
    /// [`crate::devices`]): the v1 devices controller, else a device program on v2.
    /// `None` leaves them unrestricted (a privileged container).
    pub fn restrict_devices(&self, cgroup: &Cgroup, rules: Option<&[devices::Rule]>) -> io::Result<()> {
        let Some(rules) = rules else { return Ok(()) };
        if let Some((_, dir)) = cgroup.dirs.iter().find(|(c, _)| *c == Controller::Devices) {
            return devices::v1_writes(rules).iter().try_for_each(|(file, line)| write(&dir.join(file), line));
        }
        match cgroup.dirs.iter().find(|(c, _)| *c == Controller::Unified) {
            Some((_, dir)) => devices::attach_v2(dir, &devices::v2_program(rules)),
            None => {
                Err(io::Error::other("the v1 devices controller is not mounted: device access cannot be restricted"))
            }
        }
    }
}

/// The limit files to write for `resources`: (controller, file, value).
fn limits(roots: &[Root], r: &Resources) -> Vec<(Controller, &'static str, String)> {
    let v2 = roots.iter().any(|root| root.controller == Controller::Unified);
    let shares = cpu_shares(r.cpu_request_millis.or(r.cpu_limit_millis));
    let quota = r.cpu_limit_millis.map(|m| (m * CFS_PERIOD_US / 1000).max(MIN_QUOTA_US));
    let mut out = Vec::new();
    if v2 {
        // kubelet's CpuSharesToCpuWeight: [2, 262144] onto [1, 10000].
        out.push((Controller::Unified, "cpu.weight", (1 + (shares - 2) * 9999 / 262_142).to_string()));
        let max = quota.map_or("max".to_string(), |q| q.to_string());
        out.push((Controller::Unified, "cpu.max", format!("{max} {CFS_PERIOD_US}")));
        if let Some(m) = r.memory_limit_bytes {
            out.push((Controller::Unified, "memory.max", m.to_string()));
            // No swap beyond the limit, as kubelet's default (LimitedSwap off).
            out.push((Controller::Unified, "memory.swap.max", "0".to_string()));
        }
        if let Some(p) = r.pids_limit {
            out.push((Controller::Unified, "pids.max", p.to_string()));
        }
    } else {
        out.push((Controller::Cpu, "cpu.shares", shares.to_string()));
        if let Some(q) = quota {
            out.push((Controller::Cpu, "cpu.cfs_period_us", CFS_PERIOD_US.to_string()));
            out.push((Controller::Cpu, "cpu.cfs_quota_us", q.to_string()));
        }
        if let Some(m) = r.memory_limit_bytes {
            out.push((Controller::Memory, "memory.limit_in_bytes", m.to_string()));
        }
        if let Some(p) = r.pids_limit {
            out.push((Controller::Pids, "pids.max", p.to_string()));
        }
    }
    out
}

/// kubelet's MilliCPUToShares: no request means the minimum.
fn cpu_shares(millis: Option<u64>) -> u64 {
    millis.map_or(MIN_SHARES, |m| (m * 1024 / 1000).clamp(MIN_SHARES, MAX_SHARES))
}

impl Cgroup {
    /// A cgroup below this one: a container's in its pod's (the pod init's is `init`).
    pub fn child(&self, name: &str) -> Cgroup {
        Cgroup { dirs: self.dirs.iter().map(|(c, d)| (*c, d.join(name))).collect() }
    }

    /// Removes this cgroup and those below it, once nothing runs in them.
    pub fn remove(&self) -> io::Result<()> {
        self.dirs.iter().try_for_each(|(_, dir)| remove_tree(dir))
    }

    /// Forks the calling process with the child inside this cgroup before it runs anything
    /// of its own, and with `new_pid_namespace` as PID 1 of a PID namespace of its own
    /// (pid_namespaces(7)). Moving a whole process takes the kernel's
    /// `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace period (10–20
    /// ms on the development machines, paid by every runc start); this never takes it:
    /// - v2: clone3(2) with `CLONE_INTO_CGROUP`, so the child is born there;
    /// - v1: the child writes 0 to each hierarchy's `tasks`, which moves only the calling
    ///   thread and so skips that lock (`cgroup_procs_write_start()` in
    ///   kernel/cgroup/cgroup.c); the child of a single-threaded process is then wholly in.
    ///
    /// # Safety
    /// As fork(2): the calling process is single-threaded.
    pub unsafe fn fork_into(&self, new_pid_namespace: bool) -> io::Result<Forked> {
        let v2 = self.dirs.iter().find(|(c, _)| *c == Controller::Unified).map(|(_, dir)| dir);
        let cgroup = v2
            .map(|dir| {
                fs::File::open(dir).map_err(|e| io::Error::new(e.kind(), format!("open cgroup {}: {e}", dir.display())))
            })
            .transpose()?;
        // What the child writes to join the v1 hierarchies, made before the fork: the child
        // of a process with other threads must not allocate (a lock another thread held at
        // the fork stays held in the child for good).
        let tasks = self
            .dirs
            .iter()
            .filter(|(c, _)| *c != Controller::Unified)
            .map(|(_, dir)| std::ffi::CString::new(dir.join("tasks").into_os_string().into_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a cgroup path holds a NUL byte"))?;
        // SAFETY: as this function's contract.
        Ok(match unsafe { clone(cgroup.as_ref(), new_pid_namespace) }? {
            Forked::Child(joined) => Forked::Child(joined.and_then(|()| enter_v1(&tasks))),
            parent => parent,
        })
    }

    /// SIGKILL to every process left in this cgroup (as read from its first hierarchy's
    /// `cgroup.procs`, pids as the caller's PID namespace sees them): what a container's
    /// processes that outlived its first one get, as containerd's shim does when the
    /// containers of a pod share a PID namespace.
    pub fn kill_all(&self) {
        let Some((_, dir)) = self.dirs.first() else { return };
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()).filter(|pid| *pid > 0) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// What the processes of this cgroup use, from whichever hierarchies hold each figure.
    pub fn usage(&self) -> Usage {
        let read = |controller: Controller, file: &str| {
            let (_, dir) = self.dirs.iter().find(|(c, _)| *c == controller)?;
            fs::read_to_string(dir.join(file)).ok()
        };
        let number = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
        let stat = |text: Option<String>, key: &str| {
            text.and_then(|t| {
                t.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
            })
        };
        let v2 = self.dirs.iter().any(|(c, _)| *c == Controller::Unified);
        if v2 {
            let memory = number(read(Controller::Unified, "memory.current"));
            let inactive = stat(read(Controller::Unified, "memory.stat"), "inactive_file").unwrap_or(0);
            Usage {
                cpu_ns: stat(read(Controller::Unified, "cpu.stat"), "usage_usec").map(|us| us * 1000),
                memory_bytes: memory.map(|m| m.saturating_sub(inactive)),
                memory_limit: number(read(Controller::Unified, "memory.max")),
                pids: number(read(Controller::Unified, "pids.current")),
            }
        } else {
            let memory = number(read(Controller::Memory, "memory.usage_in_bytes"));
            let inactive = stat(read(Controller::Memory, "memory.stat"), "total_inactive_file").unwrap_or(0);
            // v1's "no limit" is the largest page-aligned value.
            let limit = number(read(Controller::Memory, "memory.limit_in_bytes")).filter(|l| *l < 1 << 62);
            Usage {
                // cpuacct may be a hierarchy of its own, which podctl does not use: then
                // the CPU time of the processes there now.
                cpu_ns: number(read(Controller::Cpu, "cpuacct.usage")).or_else(|| self.processes_cpu_ns()),
                memory_bytes: memory.map(|m| m.saturating_sub(inactive)),
                memory_limit: limit,
                pids: number(read(Controller::Pids, "pids.current")),
            }
        }
    }

    /// The CPU time of the processes in this cgroup and below (user and system,
    /// /proc/PID/stat fields 14 and 15), in nanoseconds.
    fn processes_cpu_ns(&self) -> Option<u64> {
        let (_, dir) = self.dirs.first()?;
        // SAFETY: sysconf has no preconditions.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let mut ticks = 0;
        let mut dirs = vec![dir.clone()];
        while let Some(dir) = dirs.pop() {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).ok()?;
            for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
                let Some((_, rest)) = stat.rsplit_once(')') else { continue };
                let fields: Vec<&str> = rest.split_whitespace().collect();
                ticks += fields.get(11).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
                ticks += fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
            }
            let children =
                fs::read_dir(&dir).ok()?.filter_map(|e| e.ok()).filter(|e| e.file_type().is_ok_and(|t| t.is_dir()));
            dirs.extend(children.map(|e| e.path()));
        }
        Some(ticks * 1_000_000_000 / ticks_per_second)
    }

    /// Whether the kernel's OOM killer has killed a process of this cgroup
    /// (v2 `memory.events`, v1 `memory.oom_control`: `oom_kill N`).
    pub fn oom_killed(&self) -> bool {
        self.dirs.iter().any(|(controller, dir)| {
            let file = match controller {
                Controller::Unified => "memory.events",
                Controller::Memory => "memory.oom_control",
                _ => return false,
            };
            fs::read_to_string(dir.join(file)).is_ok_and(|s| {
                s.lines().any(|l| {
                    l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0)
                })
            })
        })
    }
}

/// What a cgroup's processes use (`None`: this machine's hierarchies do not say).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time, in nanoseconds, since the cgroup was made.
    pub cpu_ns: Option<u64>,
    /// Memory, less the page cache that can be dropped (inactive files), as docker counts.
    pub memory_bytes: Option<u64>,
    /// The memory limit, if there is one.
    pub memory_limit: Option<u64>,
    pub pids: Option<u64>,
}

/// The two sides of [`Cgroup::fork_into`].
pub enum Forked {
    Parent(Pid),
    /// Whether the child got into its cgroup: it must not run the container otherwise.
    Child(io::Result<()>),
}

/// clone3(2) like fork(2) (a new process, copy of this one, SIGCHLD to us on exit), into
/// the v2 cgroup open at `cgroup` if given, in a new PID namespace if asked.
///
/// # Safety
/// As fork(2). Unlike glibc's fork, no atfork handlers run: this process is
/// single-threaded, so no lock they would reset can be held.
unsafe fn clone(cgroup: Option<&fs::File>, new_pid_namespace: bool) -> io::Result<Forked> {
    use std::os::fd::AsRawFd;
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    // SAFETY: clone_args is plain integers; zero is "unset" for every field.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.exit_signal = libc::SIGCHLD as u64;
    if let Some(cgroup) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cgroup.as_raw_fd() as u64;
    }
    if new_pid_namespace {
        args.flags |= libc::CLONE_NEWPID as u64;
    }
    // SAFETY: a valid clone_args of the size given; no CLONE_VM, so the child has its own
    // copy of this process, as after fork(2).
    match unsafe { libc::syscall(libc::SYS_clone3, &args as *const libc::clone_args, size_of::<libc::clone_args>()) } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child(Ok(()))),
        pid => Ok(Forked::Parent(Pid::from_raw(pid as i32))),
    }
}

/// Moves the calling thread into the v1 hierarchies whose `tasks` files are given, with
/// raw system calls only (it runs in a forked child).
fn enter_v1(tasks: &[std::ffi::CString]) -> io::Result<()> {
    for path in tasks {
        // SAFETY: a NUL-terminated path, a static buffer, and the descriptor opened here.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let written = libc::write(fd, c"0".as_ptr().cast(), 1);
            let error = (written != 1).then(io::Error::last_os_error);
            libc::close(fd);
            if let Some(error) = error {
                return Err(error);
            }
        }
    }
    Ok(())
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("write {value:?} to {}: {e}", path.display())))
}

fn make_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(io::Error::new(e.kind(), format!("create cgroup {}: {e}", dir.display())))
        }
        _ => Ok(()),
    }
}

/// rmdir(2) bottom-up: a cgroup directory is removed with rmdir, never by deleting files.
fn remove_tree(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.filter_map(|e| e.ok()) {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    // The kernel may still be tearing down the last process: retry briefly on EBUSY.
    for attempt in 0..500 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 499 => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("remove cgroup {}: {e}", dir.display()))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn usage_from_either_layout() {
        let dir = tempfile::tempdir().unwrap();
        let v2 = dir.path().join("v2");
        fs::create_dir_all(&v2).unwrap();
        fs::write(v2.join("cpu.stat"), "usage_usec 2500\nuser_usec 2000\n").unwrap();
        fs::write(v2.join("memory.current"), "10485760\n").unwrap();
        fs::write(v2.join("memory.stat"), "anon 1\ninactive_file 2097152\n").unwrap();
        fs::write(v2.join("memory.max"), "max\n").unwrap();
        fs::write(v2.join("pids.current"), "3\n").unwrap();
        let usage = Cgroup { dirs: vec![(Controller::Unified, v2)] }.usage();
        assert_eq!(
            usage,
            Usage { cpu_ns: Some(2_500_000), memory_bytes: Some(8 << 20), memory_limit: None, pids: Some(3) }
        );

        let (cpu, memory, pids) = (dir.path().join("cpu"), dir.path().join("memory"), dir.path().join("pids"));
        for d in [&cpu, &memory, &pids] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(cpu.join("cpuacct.usage"), "123456789\n").unwrap();
        fs::write(memory.join("memory.usage_in_bytes"), "4194304\n").unwrap();
        fs::write(memory.join("memory.stat"), "inactive_file 5\ntotal_inactive_file 1048576\n").unwrap();
        fs::write(memory.join("memory.limit_in_bytes"), "67108864\n").unwrap();
        fs::write(pids.join("pids.current"), "7\n").unwrap();
        let cgroup = Cgroup {
            dirs: vec![(Controller::Cpu, cpu), (Controller::Memory, memory.clone()), (Controller::Pids, pids)],
        };
        let usage = cgroup.usage();
        assert_eq!(
            usage,
            Usage {
                cpu_ns: Some(123_456_789),
                memory_bytes: Some(3 << 20),
                memory_limit: Some(64 << 20),
                pids: Some(7)
            }
        );
        fs::write(memory.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(cgroup.usage().memory_limit, None, "v1's largest value is no limit");
    }

    use super::*;

    const HYBRID_MOUNTS: &str = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,relatime shared:5 - cgroup2 cgroup2 rw
31 25 0:27 / /sys/fs/cgroup/cpu rw,relatime shared:6 - cgroup cgroup rw,cpu
32 25 0:28 / /sys/fs/cgroup/memory rw,relatime shared:7 - cgroup cgroup rw,memory
33 25 0:29 / /sys/fs/cgroup/pids rw,relatime shared:8 - cgroup cgroup rw,pids
34 25 0:30 / /sys/fs/cgroup/devices rw,relatime shared:9 - cgroup cgroup rw,devices
";
    const HYBRID_OWN: &str = "8:pids:/\n5:devices:/\n4:memory:/supervisor/job1\n1:cpu:/\n0::/\n";

    #[test]
    fn hybrid_layout_uses_v1_under_our_own_cgroups() {
        let cg = Cgroups::from_layout(HYBRID_MOUNTS, HYBRID_OWN, None).unwrap();
        let c = cg.pod(QosClass::Burstable, "abc").child("web");
        assert_eq!(
            c.dirs,
            vec![
                (Controller::Cpu, PathBuf::from("/sys/fs/cgroup/cpu/kubepods/burstable/podabc/web")),
                (
                    Controller::Memory,
                    PathBuf::from("/sys/fs/cgroup/memory/supervisor/job1/kubepods/burstable/podabc/web")
                ),
                (Controller::Pids, PathBuf::from("/sys/fs/cgroup/pids/kubepods/burstable/podabc/web")),
                (Controller::Devices, PathBuf::from("/sys/fs/cgroup/devices/kubepods/burstable/podabc/web")),
            ]
        );
        let relative = Cgroups::from_layout(HYBRID_MOUNTS, HYBRID_OWN, Some("test1")).unwrap();
        assert_eq!(
            relative.pod(QosClass::Guaranteed, "u").dirs[1].1,
            PathBuf::from("/sys/fs/cgroup/memory/supervisor/job1/test1/kubepods/podu")
        );
        // A pod recorded before the devices controller was used gets it at the same place.
        let recorded = Cgroup { dirs: cg.pod(QosClass::Burstable, "abc").dirs[..3].to_vec() };
        assert_eq!(cg.complete(&recorded), cg.pod(QosClass::Burstable, "abc"));
        let absolute = Cgroups::from_layout(HYBRID_MOUNTS, HYBRID_OWN, Some("/node")).unwrap();
        assert_eq!(
            absolute.pod(QosClass::BestEffort, "u").dirs[0].1,
            PathBuf::from("/sys/fs/cgroup/cpu/node/kubepods/besteffort/podu")
        );
    }

    #[test]
    fn qos_classes() {
        let limits = Resources { cpu_limit_millis: Some(500), memory_limit_bytes: Some(1 << 20), ..Default::default() };
        assert_eq!(QosClass::of([&limits]), QosClass::Guaranteed);
        assert_eq!(QosClass::of([&Resources::default()]), QosClass::BestEffort);
        let memory_only = Resources { memory_limit_bytes: Some(1 << 20), ..Default::default() };
        assert_eq!(QosClass::of([&limits, &memory_only]), QosClass::Burstable);
        let lower_request = Resources { cpu_request_millis: Some(100), ..limits.clone() };
        assert_eq!(QosClass::of([&lower_request]), QosClass::Burstable);
    }

    #[test]
    fn v1_limit_values() {
        let cg = Cgroups::from_layout(HYBRID_MOUNTS, HYBRID_OWN, None).unwrap();
        let r = Resources {
            cpu_limit_millis: Some(250),
            memory_limit_bytes: Some(64 << 20),
            pids_limit: Some(50),
            ..Default::default()
        };
        let got = limits(&cg.roots, &r);
        assert!(got.contains(&(Controller::Cpu, "cpu.shares", "256".into())));
        assert!(got.contains(&(Controller::Cpu, "cpu.cfs_quota_us", "25000".into())));
        assert!(got.contains(&(Controller::Memory, "memory.limit_in_bytes", (64u64 << 20).to_string())));
        assert!(got.contains(&(Controller::Pids, "pids.max", "50".into())));
        assert_eq!(limits(&cg.roots, &Resources::default()), vec![(Controller::Cpu, "cpu.shares", "2".into())]);
    }

    /// The v2 path against a fake cgroupfs: a temporary directory standing for
    /// /sys/fs/cgroup, whose own cgroup delegates cpu, memory and pids.
    #[test]
    fn v2_against_a_fake_cgroupfs() {
        let fake = tempfile::tempdir().unwrap();
        let mount = fake.path().join("cgroup");
        let own = mount.join("system.slice/podctl.service");
        fs::create_dir_all(&own).unwrap();
        fs::write(own.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        let mountinfo = format!("30 25 0:26 / {} rw,relatime - cgroup2 cgroup2 rw\n", mount.display());
        let cg = Cgroups::from_layout(&mountinfo, "0::/system.slice/podctl.service\n", None).unwrap();
        let container = cg.pod(QosClass::Burstable, "u1").child("app");
        assert_eq!(container.dirs, vec![(Controller::Unified, own.join("kubepods/burstable/podu1/app"))]);
        let r = Resources {
            cpu_request_millis: Some(100),
            cpu_limit_millis: Some(1500),
            memory_limit_bytes: Some(1 << 30),
            pids_limit: Some(100),
        };
        cg.create(&container, &r).unwrap();
        let read = |p: &str| fs::read_to_string(own.join(p)).unwrap();
        let dir = "kubepods/burstable/podu1/app";
        assert_eq!(read(&format!("{dir}/cpu.weight")), "4");
        assert_eq!(read(&format!("{dir}/cpu.max")), "150000 100000");
        assert_eq!(read(&format!("{dir}/memory.max")), (1u64 << 30).to_string());
        assert_eq!(read(&format!("{dir}/memory.swap.max")), "0");
        assert_eq!(read(&format!("{dir}/pids.max")), "100");
        // Controllers enabled in every cgroup podctl made above the container, never in
        // podctl's own cgroup (not ours to change).
        for parent in ["kubepods", "kubepods/burstable", "kubepods/burstable/podu1"] {
            assert_eq!(read(&format!("{parent}/cgroup.subtree_control")), "+cpu +memory +pids");
        }
        assert!(!own.join("cgroup.subtree_control").exists());
        // OOM kills are read from memory.events.
        assert!(!container.oom_killed());
        fs::write(own.join(dir).join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert!(container.oom_killed());
        // Without the controllers delegated, creation says which one is missing.
        fs::write(own.join("cgroup.controllers"), "cpu pids\n").unwrap();
        let err = cg.create(&cg.pod(QosClass::BestEffort, "u2").child("x"), &Resources::default()).unwrap_err();
        assert!(err.to_string().contains("memory controller is not available"), "{err}");
    }

    /// `fork_into` on this machine's real hierarchies (as root): a v1 cgroup below our own
    /// pids cgroup, and a v2 one below our own cgroup in the v2 tree (CLONE_INTO_CGROUP).
    /// The child checks /proc/self/cgroup with raw calls only: the test harness has other
    /// threads, and clone3 runs no atfork handler.
    #[test]
    fn fork_into_puts_the_child_in_the_cgroup() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root (as the whole suite)");
        }
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let name = format!("podctl-fork-into-{}", std::process::id());
        let mut cases = Vec::new();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let mount = PathBuf::from(left.split(' ').nth(4).unwrap());
            let (key, controller) = match right.split(' ').collect::<Vec<_>>()[..] {
                ["cgroup2", ..] => ("", Controller::Unified),
                ["cgroup", _, options] if options.split(',').any(|o| o == "pids") => ("pids", Controller::Pids),
                _ => continue,
            };
            let path = own.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                (controllers == key || controllers.split(',').any(|c| c == key && !key.is_empty())).then_some(path)
            });
            if let Some(path) = path {
                let line = format!("{}:{}\n", key, Path::new(path).join(&name).display());
                cases.push((
                    Cgroup { dirs: vec![(controller, mount.join(path.trim_start_matches('/')).join(&name))] },
                    line,
                ));
            }
        }
        assert!(!cases.is_empty(), "no cgroup hierarchy found");
        for (cgroup, expected) in cases {
            fs::create_dir(&cgroup.dirs[0].1).unwrap();
            // SAFETY: the child only makes raw system calls and exits.
            let forked = unsafe { cgroup.fork_into(false) };
            match forked {
                Ok(Forked::Child(joined)) => {
                    let mut buf = [0u8; 4096];
                    // SAFETY: raw calls on a stack buffer, then _exit.
                    unsafe {
                        let fd = libc::open(c"/proc/self/cgroup".as_ptr(), libc::O_RDONLY);
                        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                        let text = &buf[..n.max(0) as usize];
                        let found = text.windows(expected.len()).any(|w| w.ends_with(expected.as_bytes()));
                        libc::_exit(if joined.is_ok() && found { 0 } else { 1 })
                    }
                }
                Ok(Forked::Parent(child)) => {
                    let status = nix::sys::wait::waitpid(child, None).unwrap();
                    fs::remove_dir(&cgroup.dirs[0].1).unwrap();
                    assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0), "child not in {expected:?}");
                }
                Err(e) => {
                    let _ = fs::remove_dir(&cgroup.dirs[0].1);
                    panic!("fork_into: {e}");
                }
            }
        }
    }
}
