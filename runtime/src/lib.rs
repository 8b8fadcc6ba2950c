//! Pod sandboxes and containers: namespaces, process spawning, rootfs and mounts,
//! capabilities, logs. Knows images only as a list of read-only lower directories (see
//! `images::Store::lower_dirs`), and nothing of Kubernetes objects: see [`spec`].
//!
//! The process model (DESIGN.md): one pod init per pod ([`init`]), PID 1 of the pod's PID
//! namespace and parent of its containers; nothing per container. The agent (`podctl`) may
//! die at any moment: pods keep running, and everything the agent needs to find them again
//! is in the state directory ([`state`]).

pub mod cgroups;
mod channel;
pub mod devices;
pub mod init;
pub mod logs;
mod process;
pub mod rootfs;
mod seccomp;
pub mod spec;
pub mod state;

use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::mount::{MntFlags, MsFlags};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;

pub use cgroups::{Cgroup, Cgroups, QosClass, Usage};

pub use init::{Request, Response};
pub use process::{DEFAULT_CAPABILITIES, DEFAULT_PATH, capabilities};
pub use spec::{
    ContainerSpec, Device, DeviceKind, HostPort, Mount, NetworkMode, Origin, PodSpec, Resources, Restart, User, Volume,
    VolumeSource, WindowSize,
};
pub use state::{ExitStatus, PodDirs, PodRecord, ProcessRecord};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
    #[error("pod {0} already exists")]
    PodExists(String),
    #[error("no such pod: {0}")]
    NoSuchPod(String),
    #[error("pod {pod}: the pod init is not running")]
    InitGone { pod: String },
    #[error("pod {pod}: container {container}: {message}")]
    Container { pod: String, container: String, message: String },
}

impl Error {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |error| Error::Io { context, error }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where an exec's stdin, stdout and stderr come from.
pub enum ExecStdio<'a> {
    Fds([std::os::fd::BorrowedFd<'a>; 3]),
    /// A terminal, of this size if known, for a client of this terminal type (TERM) if
    /// known: its master goes to the function.
    Pty(Option<WindowSize>, Option<String>, Box<dyn FnMut(std::os::fd::OwnedFd) + 'a>),
}

/// The node's pods, as found under the run and data directories.
#[derive(Clone)]
pub struct Runtime {
    pub run_dir: PathBuf,
    pub data_dir: PathBuf,
    pub cgroups: Cgroups,
    /// The program to exec as the pod init (`podctl` itself: `/proc/self/exe`).
    pub init_program: PathBuf,
}

/// A pod that exists on this node.
#[derive(Clone, Debug)]
pub struct Pod {
    pub dirs: PodDirs,
    pub record: PodRecord,
    pub init: Option<ProcessRecord>,
}

impl Pod {
    pub fn name(&self) -> &str {
        &self.record.spec.name
    }

    pub fn uid(&self) -> &str {
        &self.record.spec.uid
    }

    pub fn is_running(&self) -> bool {
        self.init.is_some_and(|p| p.is_alive())
    }

    /// The containers started in this pod, by name.
    pub fn containers(&self) -> Vec<ContainerSpec> {
        let Ok(entries) = std::fs::read_dir(self.dirs.state.join("containers")) else { return vec![] };
        let mut specs: Vec<ContainerSpec> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| state::read_json(&self.dirs.container_record(&e.file_name().to_string_lossy())).ok()?)
            .collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        specs
    }

    /// Names of the started containers that have not exited (none once the pod init is gone).
    pub fn running_containers(&self) -> Vec<String> {
        if !self.is_running() {
            return vec![];
        }
        let exits = self.exits();
        self.containers().into_iter().map(|c| c.name).filter(|name| !exits.iter().any(|(n, _)| n == name)).collect()
    }

    /// How each container that has run ended, by name.
    pub fn exits(&self) -> Vec<(String, ExitStatus)> {
        let Ok(entries) = std::fs::read_dir(self.dirs.state.join("containers")) else { return vec![] };
        let mut exits: Vec<(String, ExitStatus)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let status = state::read_json(&self.dirs.exit_record(&name)).ok()??;
                Some((name, status))
            })
            .collect();
        exits.sort_by(|a, b| a.0.cmp(&b.0));
        exits
    }
}

impl Runtime {
    pub fn new(run_dir: &Path, data_dir: &Path, cgroups: Cgroups) -> Runtime {
        Runtime {
            run_dir: run_dir.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            cgroups,
            init_program: PathBuf::from("/proc/self/exe"),
        }
    }

    /// Creates the pod sandbox: its state, its shared /dev/shm, and the pod init in new
    /// namespaces. The pod record is written first, so that recovery can undo a creation
    /// that did not finish.
    pub fn create_pod(&self, spec: &PodSpec) -> Result<Pod> {
        let dirs = PodDirs::new(&self.run_dir, &self.data_dir, &spec.uid);
        if dirs.state.exists() {
            return Err(Error::PodExists(spec.name.clone()));
        }
        let record = PodRecord {
            spec: spec.clone(),
            data_dir: dirs.data.clone(),
            created_at: logs::rfc3339_nano(SystemTime::now()),
            cgroup: self.cgroups.pod(spec.qos, &spec.uid),
        };
        // Held until the sandbox is up: recovery takes a pod without a pod init whose
        // lock it can get for one whose creator died. Making the state dir and locking it
        // happen under the node's state lock, so recovery never sees the dir unlocked.
        let _creating = self
            .state_lock(libc::LOCK_SH)
            .and_then(|_state| {
                let pods = dirs.state.parent().expect("pod state lives in a directory");
                state::create_private_dir(pods)?;
                // One made by an older podctl may be open to all.
                state::set_mode(pods, 0o700)?;
                std::fs::DirBuilder::new().mode(0o700).create(&dirs.state)?;
                CreationLock::take(&dirs.state, true)
            })
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Error::PodExists(spec.name.clone()),
                _ => Error::Io { context: format!("pod {}: state dir", spec.name), error: e },
            })?
            .expect("a new pod's lock is free");
        state::write_json_atomic(&dirs.record(), &record)
            .map_err(Error::io(format!("pod {}: write record", spec.name)))?;
        let mut pod = Pod { dirs, record, init: None };
        match self.start_sandbox(&pod) {
            Ok(init) => {
                pod.init = Some(init);
                Ok(pod)
            }
            Err(e) => {
                pod.init = state::read_json(&pod.dirs.init_record()).ok().flatten();
                let _ = self.remove_pod(&pod);
                Err(e)
            }
        }
    }

    /// Writes the pod's files, mounts its /dev/shm and memory-backed volumes, starts its
    /// pod init and binds its network namespace.
    fn start_sandbox(&self, pod: &Pod) -> Result<ProcessRecord> {
        let name = pod.name();
        let dirs = &pod.dirs;
        let spec = &pod.record.spec;
        let data = dirs.data.parent().expect("pod data lives in a directory");
        state::create_private_dir(&dirs.data)
            .and_then(|()| state::set_mode(data, 0o700))
            .map_err(Error::io(format!("pod {name}: data dir")))?;
        let write = |file: &str, content: &str| {
            std::fs::write(dirs.etc_file(file), content).map_err(Error::io(format!("pod {name}: write {file}")))
        };
        write("hostname", &format!("{}\n", spec.hostname))?;
        write("hosts", &spec.hosts)?;
        write("resolv.conf", &spec.resolv_conf)?;
        for volume in &spec.volumes {
            if let VolumeSource::EmptyDir { memory, size_limit } = volume.source {
                let dir = dirs.data.join("volumes").join(&volume.name);
                std::fs::create_dir_all(&dir).map_err(Error::io(format!("pod {name}: volume {}", volume.name)))?;
                if memory {
                    let size = size_limit.map(|s| format!(",size={s}")).unwrap_or_default();
                    mount_tmpfs(&dir, &format!("mode=1777{size}"))
                        .map_err(Error::io(format!("pod {name}: volume {}", volume.name)))?;
                }
            }
        }
        let init_cgroup = pod.record.cgroup.child("init");
        self.cgroups.create(&init_cgroup, &Resources::default()).map_err(Error::io(format!("pod {name}: cgroup")))?;
        std::fs::create_dir_all(dirs.shm()).map_err(Error::io(format!("pod {name}: shm")))?;
        mount_tmpfs(&dirs.shm(), "mode=1777,size=65536k").map_err(Error::io(format!("pod {name}: mount shm")))?;
        let init = self.spawn_init(dirs).map_err(Error::io(format!("pod {name}: start pod init")))?;
        if spec.network != NetworkMode::Host {
            bind_netns(init.pid, &dirs.netns).map_err(Error::io(format!("pod {name}: bind netns")))?;
        }
        Ok(init)
    }

    /// Execs the pod init helper, which forks the pod init and records it in init.json.
    ///
    /// The helper (and so the pod init and everything it forks) runs podctl's binary
    /// through a read-only bind mount of it, in a mount namespace of its own: a container
    /// that gets the kernel to run that binary inside it (`#!/proc/self/exe`) and opens
    /// `/proc/<pid>/exe` to write finds a read-only file, whatever the kernel thinks of
    /// writing to a running program (CVE-2019-5736; runc's read-only bind of its binary).
    fn spawn_init(&self, dirs: &PodDirs) -> io::Result<ProcessRecord> {
        let program = std::fs::canonicalize(&self.init_program)?;
        let program_c = std::ffi::CString::new(program.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        let mut command = Command::new(&program);
        // SAFETY: between fork and exec the closure makes raw system calls only, on a
        // C string made before the fork.
        unsafe {
            command.pre_exec(move || {
                let path = program_c.as_ptr();
                let none = std::ptr::null::<libc::c_char>();
                let check = |result: libc::c_int| if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
                check(libc::unshare(libc::CLONE_NEWNS))?;
                // Nothing mounted here goes back to the node (mount_namespaces(7)).
                check(libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_SLAVE, std::ptr::null()))?;
                check(libc::mount(path, path, none, libc::MS_BIND, std::ptr::null()))?;
                let read_only = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                check(libc::mount(none, path, none, read_only, std::ptr::null()))
            })
        };
        let mut helper = command
            .arg("__pod-init")
            .arg(&dirs.state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(helper.stdout.take().expect("piped")).read_line(&mut line)?;
        let output = helper.wait_with_output()?;
        if line.trim().parse::<i32>().is_err() {
            return Err(io::Error::other(format!(
                "pod init did not start: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        state::read_json(&dirs.init_record())?.ok_or_else(|| io::Error::other("pod init record missing"))
    }

    /// Replaces the pod's /etc/hosts, in place (containers bind-mount the file).
    pub fn write_hosts(&self, pod: &Pod, hosts: &str) -> Result<()> {
        std::fs::write(pod.dirs.etc_file("hosts"), hosts).map_err(Error::io(format!("pod {}: write hosts", pod.name())))
    }

    pub fn pod(&self, uid: &str) -> Result<Pod> {
        let dirs = PodDirs::new(&self.run_dir, &self.data_dir, uid);
        let record: PodRecord = state::read_json(&dirs.record())
            .map_err(Error::io(format!("pod {uid}: read record")))?
            .ok_or_else(|| Error::NoSuchPod(uid.to_string()))?;
        let init = state::read_json(&dirs.init_record()).map_err(Error::io(format!("pod {uid}: read init record")))?;
        Ok(Pod { dirs, record, init })
    }

    /// Removes what interrupted operations left: pods whose creator died before their pod
    /// init ran, and pod data directories and network namespace files with no pod state
    /// (after a reboot emptied the run directory, or a removal was cut short). Running pods are left alone: they are simply found again.
    pub fn recover(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let _state = self.state_lock(libc::LOCK_EX).map_err(Error::io("lock the pod state"))?;
        self.secure().map_err(Error::io("set the modes of the pod state"))?;
        let state = self.run_dir.join("pods");
        for entry in std::fs::read_dir(&state).into_iter().flatten().filter_map(|e| e.ok()) {
            let uid = entry.file_name().to_string_lossy().into_owned();
            let pod = match self.pod(&uid) {
                Ok(pod) if pod.init.is_some() => continue,
                Ok(pod) => Some(pod),
                Err(Error::NoSuchPod(_)) => None,
                Err(e) => return Err(e),
            };
            let Ok(Some(_lock)) = CreationLock::take(&entry.path(), false) else { continue };
            match pod {
                Some(pod) => self.remove_pod(&pod)?,
                None => std::fs::remove_dir_all(entry.path()).map_err(Error::io(format!("pod {uid}: remove state")))?,
            }
            removed.push(uid);
        }
        let data = self.data_dir.join("pods");
        for entry in std::fs::read_dir(&data).into_iter().flatten().filter_map(|e| e.ok()) {
            let uid = entry.file_name().to_string_lossy().into_owned();
            let dirs = PodDirs::new(&self.run_dir, &self.data_dir, &uid);
            if !dirs.state.exists() {
                unmount_all_under(&dirs.data).map_err(Error::io(format!("pod {uid}: unmount")))?;
                state::move_aside(&dirs.data, &dirs.removed).map_err(Error::io(format!("pod {uid}: remove data")))?;
                removed.push(uid);
            }
        }
        // Network namespace files whose pod is gone: a removal stopped before it got to them.
        for entry in std::fs::read_dir(self.run_dir.join("netns")).into_iter().flatten().filter_map(|e| e.ok()) {
            let uid = entry.file_name().to_string_lossy().into_owned();
            if !PodDirs::new(&self.run_dir, &self.data_dir, &uid).state.exists() {
                unmount_all_under(&entry.path()).map_err(Error::io(format!("pod {uid}: unmount netns")))?;
                std::fs::remove_file(entry.path()).map_err(Error::io(format!("pod {uid}: remove netns")))?;
                if !removed.contains(&uid) {
                    removed.push(uid);
                }
            }
        }
        Ok(removed)
    }

    /// Gives the run and data directories, and the pod state and records made before
    /// their modes were set at creation, the modes only root gets into (0711 for the two
    /// roots, as containerd's, 0700 below, 0600 for records).
    pub fn secure(&self) -> io::Result<()> {
        for (dir, mode) in [(&self.run_dir, 0o711), (&self.data_dir, 0o711)] {
            state::set_mode(dir, mode)?;
        }
        for dir in ["pods", "netns"].map(|d| self.run_dir.join(d)).into_iter().chain([self.data_dir.join("pods")]) {
            state::set_mode(&dir, 0o700)?;
        }
        for pod in self.pods().map_err(io::Error::other)? {
            for container in pod.containers() {
                let logs = container.log_path.parent().map(std::fs::read_dir).into_iter().flatten().flatten();
                for log in logs.filter_map(|e| e.ok()) {
                    state::set_mode(&log.path(), logs::LOG_FILE_MODE)?;
                }
            }
        }
        for pod in std::fs::read_dir(self.run_dir.join("pods")).into_iter().flatten().filter_map(|e| e.ok()) {
            state::set_mode(&pod.path(), 0o700)?;
            let containers = std::fs::read_dir(pod.path().join("containers")).into_iter().flatten();
            let records = std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .chain(containers.filter_map(|c| std::fs::read_dir(c.ok()?.path()).ok()).flatten());
            for record in records.filter_map(|e| e.ok()) {
                if record.file_name().to_string_lossy().ends_with(".json") {
                    state::set_mode(&record.path(), 0o600)?;
                }
            }
        }
        Ok(())
    }

    /// `RUN_DIR/pods.lock`, flocked with `operation` (shared by creators, exclusive for
    /// recovery) until the file is dropped.
    fn state_lock(&self, operation: i32) -> io::Result<std::fs::File> {
        if !self.run_dir.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o711).create(&self.run_dir)?;
        }
        let file =
            std::fs::File::options().create(true).append(true).mode(0o600).open(self.run_dir.join("pods.lock"))?;
        Ok(flock(file, operation)?.expect("a blocking flock is held once it returns"))
    }

    /// Every pod with a record under the run directory.
    pub fn pods(&self) -> Result<Vec<Pod>> {
        let dir = self.run_dir.join("pods");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(Error::Io { context: format!("list {}", dir.display()), error: e }),
        };
        let mut pods = Vec::new();
        for entry in entries.filter_map(|e| e.ok()) {
            match self.pod(&entry.file_name().to_string_lossy()) {
                Ok(pod) => pods.push(pod),
                // A pod being created this moment (its record is not written yet).
                Err(Error::NoSuchPod(_)) => {}
                Err(e) => return Err(e),
            }
        }
        pods.sort_by(|a, b| a.record.created_at.cmp(&b.record.created_at));
        Ok(pods)
    }

    /// Connects to the pod's init and sends `request` with `fds` attached.
    fn call(
        &self,
        pod: &Pod,
        request: &Request,
        fds: &[std::os::fd::BorrowedFd],
        timeout: Option<Duration>,
    ) -> Result<channel::Channel> {
        if !pod.is_running() {
            return Err(Error::InitGone { pod: pod.name().to_string() });
        }
        let context = || format!("pod {}: talk to pod init", pod.name());
        let channel = channel::Channel::connect(&pod.dirs.socket(), timeout).map_err(Error::io(context()))?;
        channel.send(request, fds).map_err(Error::io(context()))?;
        Ok(channel)
    }

    /// The pod init's next answer on `channel`, with the descriptors that came with it.
    fn answer(pod: &Pod, channel: &channel::Channel) -> Result<(Response, Vec<std::os::fd::OwnedFd>)> {
        let context = || format!("pod {}: talk to pod init", pod.name());
        channel
            .recv::<Response>()
            .map_err(Error::io(context()))?
            .ok_or_else(|| Error::InitGone { pod: pod.name().to_string() })
    }

    fn request(&self, pod: &Pod, request: &Request, timeout: Option<Duration>) -> Result<Response> {
        let channel = self.call(pod, request, &[], timeout)?;
        Ok(Self::answer(pod, &channel)?.0)
    }

    /// Runs `args` in a running container and returns how it exited. Its stdio is ours
    /// to give ([`ExecStdio::Fds`]: stdin, stdout, stderr), or a terminal made in the
    /// container whose master [`ExecStdio::Pty`] receives as soon as it exists.
    pub fn exec(&self, pod: &Pod, container: &str, args: &[String], stdio: ExecStdio) -> Result<ExitStatus> {
        let (fds, window, term, mut on_pty) = match stdio {
            ExecStdio::Fds(fds) => (fds.to_vec(), None, None, None),
            ExecStdio::Pty(window, term, on_pty) => (vec![], window, term, Some(on_pty)),
        };
        let tty = on_pty.is_some();
        let request = Request::Exec { container: container.to_string(), args: args.to_vec(), tty, window, term };
        let channel = self.call(pod, &request, &fds, None)?;
        loop {
            match Self::answer(pod, &channel)? {
                (Response::Pty, mut received) => match (on_pty.as_mut(), received.pop()) {
                    (Some(on_pty), Some(master)) => on_pty(master),
                    _ => return Err(container_error(pod, container, "a terminal nobody asked for")),
                },
                (Response::Exited(status), _) => return Ok(status),
                (other, _) => return Err(unexpected(pod, container, other)),
            }
        }
    }

    /// Takes the write side of a started container's stdin (it must have `stdin` set):
    /// closing it is the container's end-of-file.
    pub fn attach_stdin(&self, pod: &Pod, container: &str) -> Result<std::os::fd::OwnedFd> {
        let channel = self.call(pod, &Request::Attach { container: container.to_string() }, &[], None)?;
        match Self::answer(pod, &channel)? {
            (Response::Attached, mut fds) => {
                fds.pop().ok_or_else(|| container_error(pod, container, "attached without a descriptor"))
            }
            (other, _) => Err(unexpected(pod, container, other)),
        }
    }

    /// Starts a container in the pod; returns its pid (as seen from the node).
    pub fn start_container(&self, pod: &Pod, container: &ContainerSpec) -> Result<i32> {
        let cgroup = self.cgroups.complete(&pod.record.cgroup).child(&container.name);
        let error = |e: io::Error| container_error(pod, &container.name, e);
        let devices = devices::rules(container.privileged, &container.devices).map_err(error)?;
        // A container started again gets a cgroup made anew: on v2 a second device
        // program would otherwise stack on the first.
        cgroup.remove().map_err(error)?;
        self.cgroups.create(&cgroup, &container.resources).map_err(error)?;
        self.cgroups.restrict_devices(&cgroup, devices.as_deref()).map_err(error)?;
        match self.request(pod, &Request::Start { container: Box::new(container.clone()), cgroup }, None)? {
            Response::Started { pid } => Ok(pid),
            other => Err(unexpected(pod, &container.name, other)),
        }
    }

    /// Waits for a container to exit (up to `timeout`); `None` on timeout.
    pub fn wait_container(&self, pod: &Pod, name: &str, timeout: Option<Duration>) -> Result<Option<ExitStatus>> {
        if let Some(status) = state::read_json::<ExitStatus>(&pod.dirs.exit_record(name)).ok().flatten() {
            return Ok(Some(status));
        }
        match self.request(pod, &Request::Wait { container: name.to_string() }, timeout) {
            Ok(Response::Exited(status)) => Ok(Some(status)),
            Ok(other) => Err(unexpected(pod, name, other)),
            Err(Error::Io { error, .. })
                if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn kill_container(&self, pod: &Pod, name: &str, signal: i32) -> Result<()> {
        match self.request(pod, &Request::Kill { container: name.to_string(), signal }, None)? {
            Response::Ok => Ok(()),
            other => Err(unexpected(pod, name, other)),
        }
    }

    /// Stops every running container of the pod: SIGTERM, then SIGKILL for those still
    /// running after `grace` (kubelet's terminationGracePeriodSeconds).
    pub fn stop_pod(&self, pod: &Pod, containers: &[String], grace: Duration) -> Result<()> {
        if !pod.is_running() {
            return Ok(());
        }
        for name in containers {
            self.kill_container(pod, name, libc::SIGTERM)?;
        }
        let deadline = Instant::now() + grace;
        for name in containers {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            if self.wait_container(pod, name, Some(left))?.is_none() {
                self.kill_container(pod, name, libc::SIGKILL)?;
                self.wait_container(pod, name, Some(Duration::from_secs(10)))?;
            }
        }
        Ok(())
    }

    /// Ends the pod init (and with it every process of the pod) and removes all the pod
    /// left on the node: mounts, network namespace file, state and data directories.
    /// Safe to repeat, and safe on a pod whose creation stopped half-way.
    pub fn remove_pod(&self, pod: &Pod) -> Result<()> {
        let name = pod.name().to_string();
        if pod.is_running() {
            let _ = self.request(pod, &Request::Shutdown, Some(Duration::from_secs(5)));
            let init = pod.init.expect("running pod has an init");
            if !init.wait_exit(Duration::from_secs(5)) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(init.pid), nix::sys::signal::SIGKILL);
                init.wait_exit(Duration::from_secs(5));
            }
        }
        pod.record.cgroup.remove().map_err(Error::io(format!("pod {name}: remove cgroup")))?;
        unmount_all_under(&pod.dirs.netns).map_err(Error::io(format!("pod {name}: unmount netns")))?;
        let _ = std::fs::remove_file(&pod.dirs.netns);
        unmount_all_under(&pod.dirs.state).map_err(Error::io(format!("pod {name}: unmount state")))?;
        unmount_all_under(&pod.dirs.data).map_err(Error::io(format!("pod {name}: unmount volumes")))?;
        // The state directory is in memory (the run directory); what is on disk is deleted
        // later, by `sweep_removed`.
        state::move_aside(&pod.dirs.data, &pod.dirs.removed)
            .map_err(Error::io(format!("pod {name}: remove {}", pod.dirs.data.display())))?;
        state::remove_dir_all_if_present(&pod.dirs.state)
            .map_err(Error::io(format!("pod {name}: remove {}", pod.dirs.state.display())))
    }

    /// Deletes what removed pods and restarted containers left on disk: run it where no
    /// one waits for it (a background process, the agent's timer).
    pub fn sweep_removed(&self) -> Result<()> {
        let removed = state::removed_dir(&self.data_dir);
        state::sweep(&removed).map_err(Error::io(format!("delete what {} holds", removed.display())))
    }
}

fn container_error(pod: &Pod, container: &str, message: impl ToString) -> Error {
    Error::Container { pod: pod.name().to_string(), container: container.to_string(), message: message.to_string() }
}

/// The pod init's error as it said it, or any answer that was not the one expected.
fn unexpected(pod: &Pod, container: &str, response: Response) -> Error {
    match response {
        Response::Error { message } => container_error(pod, container, message),
        other => container_error(pod, container, format!("unexpected answer {other:?}")),
    }
}

/// flock(2) on a pod's state directory while it is being created.
struct CreationLock {
    _dir: std::fs::File,
}

impl CreationLock {
    /// `None` when someone else holds it (and `wait` is false).
    fn take(dir: &Path, wait: bool) -> io::Result<Option<CreationLock>> {
        let op = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
        Ok(flock(std::fs::File::open(dir)?, op)?.map(|dir| CreationLock { _dir: dir }))
    }
}

/// flock(2) with `operation` on `file`, held until the file is dropped; `None` when
/// `LOCK_NB` was given and someone else holds it.
fn flock(file: std::fs::File, operation: i32) -> io::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        return Ok(Some(file));
    }
    match io::Error::last_os_error() {
        e if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        e => Err(e),
    }
}

fn mount_tmpfs(dir: &Path, options: &str) -> io::Result<()> {
    nix::mount::mount(Some("tmpfs"), dir, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(options))
        .map_err(io::Error::from)
}

/// Bind-mounts the pod init's network namespace at `path`, so the `net` crate can enter it
/// and it outlives the agent.
fn bind_netns(pid: i32, path: &Path) -> io::Result<()> {
    state::create_private_dir(path.parent().expect("netns dir"))?;
    std::fs::File::options().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    nix::mount::mount(
        Some(&PathBuf::from(format!("/proc/{pid}/ns/net"))),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// Unmounts every mount at or below `path` (deepest first), as read from
/// /proc/self/mountinfo.
fn unmount_all_under(path: &Path) -> io::Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut targets: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(path))
        .collect();
    targets.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for target in targets {
        match nix::mount::umount2(&target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(io::Error::other(format!("unmount {}: {e}", target.display()))),
        }
    }
    Ok(())
}
