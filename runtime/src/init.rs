//! The pod init: PID 1 of the pod's PID namespace, in the pod's network, IPC and UTS
//! namespaces. It is the parent of every container process of the pod, so it alone can
//! reap them and record how they ended; it also carries their stdout/stderr into the CRI
//! log files. It is single-threaded, so forking a container from it and running Rust in
//! the child until exec is sound (fork(2) in a multi-threaded process is not).
//!
//! The agent talks to it over `init.sock`, one JSON request per line, one JSON response per
//! line ([`Request`], [`Response`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::SystemTime;

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::cgroups::{Cgroup, Forked};
use crate::channel::{Channel, Listener};
use crate::logs::{CriLog, Stream, rfc3339_nano};
use crate::process;
use crate::spec::{ContainerSpec, NetworkMode, WindowSize};
use crate::state::{
    ContainerProcess, ExitStatus, PodDirs, PodRecord, ProcessRecord, move_aside, read_json, write_json_atomic,
};

const LOG_MAX_SIZE: u64 = 10 << 20;
const LOG_MAX_FILES: usize = 5;
/// How long the pod init waits, idle, before it gives back the pages its work touched.
const RELEASE_AFTER_IDLE_MS: i32 = 200;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Fork, build and exec a container in `cgroup`; answered once it has exec'd or
    /// failed to.
    Start {
        container: Box<ContainerSpec>,
        cgroup: Cgroup,
    },
    /// Answered when the container has exited and its output is in the log.
    Wait {
        container: String,
    },
    Kill {
        container: String,
        signal: i32,
    },
    /// Run `args` in a running container with the three descriptors sent along as its
    /// stdin, stdout and stderr (a pty's slave with `tty`); answered with `Exited`.
    Exec {
        container: String,
        args: Vec<String>,
        tty: bool,
        /// The terminal's size from the start, so the command never sees it unset.
        #[serde(default)]
        window: Option<WindowSize>,
        /// The client's terminal type (TERM), when it has one.
        #[serde(default)]
        term: Option<String>,
    },
    /// Take the write side of a container's stdin (one client, once).
    Attach {
        container: String,
    },
    /// Exit; the kernel then kills every process left in the pod's PID namespace.
    Shutdown,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Response {
    Started {
        pid: i32,
    },
    /// The master side of an exec's pty (attached), which exists inside the container.
    Pty,
    /// The container's stdin (attached).
    Attached,
    Exited(ExitStatus),
    Ok,
    Error {
        message: String,
    },
}

/// `podctl __pod-init STATE_DIR`: enter new namespaces, fork the real pod init (PID 1 of the
/// new PID namespace), print its pid, and exit. Never returns.
pub fn main(state_dir: &Path) -> ! {
    match enter(state_dir) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("podctl pod init: {e}");
            std::process::exit(1)
        }
    }
}

fn enter(state_dir: &Path) -> io::Result<()> {
    // A Ctrl-C reaching the agent's process group must not stop this short-lived helper
    // between its fork and its record of the pod init.
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(signal);
    }
    mask.thread_block().map_err(io::Error::from)?;
    let record: PodRecord = read_json(&state_dir.join("pod.json"))?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "pod.json missing"))?;
    // The pod's data directory is DATA_DIR/pods/<uid>.
    let data_root = record.data_dir.ancestors().nth(2).unwrap_or(&record.data_dir);
    let dirs = PodDirs {
        state: state_dir.to_path_buf(),
        data: record.data_dir.clone(),
        netns: Default::default(),
        removed: crate::state::removed_dir(data_root),
    };
    let mut flags = CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    if record.spec.network != NetworkMode::Host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    nix::sched::unshare(flags).map_err(|e| io::Error::other(format!("unshare namespaces: {e}")))?;
    let _ = std::fs::remove_file(dirs.socket());
    let listener = Listener::bind(&dirs.socket())?;
    // CLONE_NEWPID applies to children (pid_namespaces(7)): the child is PID 1.
    // SAFETY: this process is single-threaded.
    match unsafe { record.cgroup.child("init").fork_into(false) }? {
        Forked::Parent(child) => {
            // Recorded before anyone hears of it: whoever finds the pod finds its init.
            let init = ProcessRecord::of(child.as_raw()).ok_or_else(|| io::Error::other("pod init exited at once"))?;
            write_json_atomic(&dirs.init_record(), &init)?;
            println!("{}", child.as_raw());
            io::stdout().flush()
        }
        Forked::Child(joined) => {
            let code = match joined.and_then(|()| PodInit::new(dirs, record, listener)).and_then(|mut init| init.run())
            {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("podctl pod init: {e}");
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

/// A process run by `exec` in a container, and who waits for it.
struct Exec {
    pid: Pid,
    client: u64,
}

struct Running {
    name: String,
    pid: Pid,
    started_at: String,
    /// The write side of the container's stdin, until a client attaches and takes it.
    stdin: Option<OwnedFd>,
    stdout: Option<File>,
    stderr: Option<File>,
    log: CriLog,
    cgroup: Cgroup,
    /// Its first process is not PID 1 of a namespace of its own (the pod shares one, or
    /// it targets another container's): its exit does not end the rest.
    shares_processes: bool,
    /// Set once reaped; the container is done when its pipes are drained too.
    exit: Option<WaitStatus>,
    waiters: Vec<u64>,
}

struct PodInit {
    dirs: PodDirs,
    record: PodRecord,
    listener: Listener,
    signals: SignalFd,
    clients: HashMap<u64, Channel>,
    execs: Vec<Exec>,
    next_client: u64,
    running: Vec<Running>,
    /// The pod's PID namespace, to come back to after starting an exec in a container's.
    own_pid_namespace: File,
    shutdown: bool,
}

impl PodInit {
    fn new(dirs: PodDirs, record: PodRecord, listener: Listener) -> io::Result<PodInit> {
        // Not dumpable, nor is any child it forks until that child execs: a process of the
        // pod can then neither ptrace it nor open its /proc/<pid>/fd, exe or root, nor
        // take its descriptors with pidfd_getfd(2) (ptrace access mode checks, ptrace(2)),
        // even once a child has taken a container's credentials (CVE-2019-5736,
        // CVE-2016-9962 in runc).
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        nix::unistd::setsid().map_err(io::Error::from)?;
        own_proc()?;
        let own_pid_namespace = File::open("/proc/self/ns/pid")?;
        nix::unistd::sethostname(&record.spec.hostname).map_err(|e| io::Error::other(format!("sethostname: {e}")))?;
        if record.spec.network != NetworkMode::Host {
            loopback_up()?;
        }
        // Nothing may hold the agent's pipes open, or its read of our pid never ends.
        let null = File::options().read(true).write(true).open("/dev/null")?;
        for fd in 0..3 {
            dup_onto(&null, fd)?;
        }
        let mut mask = SigSet::empty();
        for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            mask.add(signal);
        }
        mask.thread_block().map_err(io::Error::from)?;
        let signals =
            SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(io::Error::from)?;
        Ok(PodInit {
            dirs,
            record,
            listener,
            signals,
            clients: HashMap::new(),
            execs: Vec::new(),
            next_client: 0,
            running: Vec::new(),
            own_pid_namespace,
            shutdown: false,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        // Pages touched since the pod init last gave its clean pages back.
        let mut touched = true;
        while !self.shutdown {
            let mut fds = vec![
                libc::pollfd { fd: self.listener.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.signals.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            let clients: Vec<u64> = self.clients.keys().copied().collect();
            for id in &clients {
                fds.push(libc::pollfd { fd: self.clients[id].as_raw_fd(), events: libc::POLLIN, revents: 0 });
            }
            let mut pipes = Vec::new();
            for (i, c) in self.running.iter().enumerate() {
                for (stream, pipe) in [(Stream::Stdout, &c.stdout), (Stream::Stderr, &c.stderr)] {
                    if let Some(pipe) = pipe {
                        fds.push(libc::pollfd { fd: pipe.as_raw_fd(), events: libc::POLLIN, revents: 0 });
                        pipes.push((i, stream));
                    }
                }
            }
            // Memory is given back once the pod init has been idle a while, never between
            // a request and its answer.
            let timeout = if touched { RELEASE_AFTER_IDLE_MS } else { -1 };
            // SAFETY: fds is a valid array of pollfd.
            match unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) } {
                0 => {
                    release_clean_file_pages();
                    touched = false;
                    continue;
                }
                n if n < 0 => {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                _ => touched = true,
            }
            let ready = |i: usize| fds[i].revents != 0;
            if ready(1) {
                self.reap()?;
            }
            for (k, (i, stream)) in pipes.iter().enumerate() {
                if ready(2 + clients.len() + k) {
                    self.drain(*i, *stream);
                }
            }
            for (k, id) in clients.iter().enumerate() {
                if ready(2 + k) {
                    self.serve(*id);
                }
            }
            if ready(0) {
                self.accept();
            }
            self.finish_exited();
        }
        Ok(())
    }

    /// Takes the waiting clients that are the node's: a process of the pod that reached
    /// the socket is hung up on, unheard.
    fn accept(&mut self) {
        while let Some(channel) = self.listener.accept() {
            if channel.peer_is_outside_the_pod() {
                self.next_client += 1;
                self.clients.insert(self.next_client, channel);
            }
        }
    }

    /// Reads one request from a client and answers it (Wait and Exec are answered later).
    fn serve(&mut self, id: u64) {
        let received = self.clients[&id].recv::<Request>();
        let (request, fds) = match received {
            Ok(Some(message)) => message,
            Ok(None) | Err(_) => {
                self.drop_client(id);
                return;
            }
        };
        let response = match request {
            Request::Start { container, cgroup } => Some(self.start(*container, cgroup)),
            Request::Wait { container } => self.wait(id, &container),
            Request::Kill { container, signal } => Some(self.kill(&container, signal)),
            Request::Exec { container, args, tty, window, term } => {
                self.exec(id, &container, args, tty.then_some((window, term)), fds)
            }
            Request::Attach { container } => {
                self.attach(id, &container);
                None
            }
            Request::Shutdown => {
                self.shutdown = true;
                Some(Response::Ok)
            }
        };
        if let Some(response) = response {
            self.respond(id, &response);
        }
    }

    /// Hands the container's stdin to the client, which becomes its only writer: the
    /// container sees end-of-file when the client is done (Kubernetes' `stdinOnce`).
    fn attach(&mut self, id: u64, name: &str) {
        let stdin = self.running.iter_mut().find(|c| c.name == name).and_then(|c| c.stdin.take());
        let response = match &stdin {
            Some(_) => Response::Attached,
            None => Response::Error { message: format!("container {name} has no stdin to attach to") },
        };
        let fds: Vec<BorrowedFd> = stdin.iter().map(|fd| fd.as_fd()).collect();
        self.respond_with(id, &response, &fds);
    }

    /// Forgets a client that went away, with any wait it left (a waiter that timed out
    /// must not pile up for as long as the container runs).
    fn drop_client(&mut self, id: u64) {
        self.clients.remove(&id);
        for c in &mut self.running {
            c.waiters.retain(|w| *w != id);
        }
    }

    fn respond(&mut self, id: u64, response: &Response) {
        self.respond_with(id, response, &[]);
    }

    fn respond_with(&mut self, id: u64, response: &Response, fds: &[BorrowedFd]) {
        if self.clients.get(&id).is_some_and(|client| client.send(response, fds).is_err()) {
            self.drop_client(id);
        }
    }

    /// Runs `args` inside a running container, with the client's descriptors as stdio or
    /// (`terminal`: with this size, if known) a terminal; answered when it exits.
    fn exec(
        &mut self,
        client: u64,
        name: &str,
        args: Vec<String>,
        terminal: Option<(Option<WindowSize>, Option<String>)>,
        fds: Vec<OwnedFd>,
    ) -> Option<Response> {
        let Some(target) = self.running.iter().find(|c| c.name == name && c.exit.is_none()) else {
            return Some(Response::Error { message: format!("container {name} is not running") });
        };
        let stdio: Option<[OwnedFd; 3]> = match (terminal.is_some(), <[OwnedFd; 3]>::try_from(fds)) {
            (true, Err(fds)) if fds.is_empty() => None,
            (false, Ok(fds)) => Some(fds),
            _ => return Some(Response::Error { message: "exec takes three descriptors, or none with a tty".into() }),
        };
        let mut spec = match read_json::<ContainerSpec>(&self.dirs.container_record(name)) {
            Ok(Some(spec)) => spec,
            _ => return Some(Response::Error { message: format!("container {name}: spec missing") }),
        };
        let terminal = terminal.map(|(window, term)| {
            spec.set_terminal_type(term.as_deref());
            window
        });
        let (pid, cgroup) = (target.pid, target.cgroup.clone());
        let (status_r, status_w) = match pipe() {
            Ok(p) => p,
            Err(e) => return Some(Response::Error { message: e.to_string() }),
        };
        match self.fork_in_container(&cgroup, pid) {
            Err(e) => Some(Response::Error { message: format!("fork: {e}") }),
            Ok(Forked::Child(joined)) => {
                drop(status_r);
                let channel = &self.clients[&client];
                let mut keep = vec![status_w.as_raw_fd()];
                keep.extend(terminal.map(|_| channel.as_raw_fd()));
                keep.extend(stdio.iter().flatten().map(|fd| fd.as_raw_fd()));
                close_descriptors_except(&keep);
                let null = || File::open("/dev/null").map(OwnedFd::from);
                let send_pty = |master: BorrowedFd| channel.send(&Response::Pty, &[master]);
                let failure = (|| -> io::Result<()> {
                    joined?;
                    let [stdin, stdout, stderr] = match stdio {
                        Some(fds) => fds,
                        None => [null()?, null()?, null()?],
                    };
                    child_setup(stdin, stdout, stderr)
                })()
                .map_or_else(
                    |e| process::StartError { exit_code: 126, message: e.to_string() },
                    |()| {
                        let terminal = terminal.map(|window| (&send_pty as process::SendPty, window));
                        process::exec_in(&spec, pid.as_raw(), &args, terminal)
                    },
                );
                report_failure(status_w, failure)
            }
            Ok(Forked::Parent(child)) => {
                drop(status_w);
                match read_failure(status_r) {
                    // The child exits; reap() collects it.
                    Some((exit_code, message)) => Some(Response::Exited(ExitStatus {
                        exit_code,
                        signal: None,
                        reason: "StartError".into(),
                        message: Some(message),
                        started_at: None,
                        finished_at: rfc3339_nano(SystemTime::now()),
                    })),
                    None => {
                        self.execs.push(Exec { pid: child, client });
                        None
                    }
                }
            }
        }
    }

    /// Forks a child into `cgroup` and, unless the pod shares one PID namespace, into the
    /// PID namespace of the container whose first process is `pid`: setns(2) on a PID
    /// namespace only says where our next child goes, so the pod init goes back to its
    /// own right after the fork.
    fn fork_in_container(&self, cgroup: &Cgroup, pid: Pid) -> io::Result<Forked> {
        if self.record.spec.share_process_namespace {
            // SAFETY: the pod init is single-threaded.
            return unsafe { cgroup.fork_into(false) };
        }
        let namespace = File::open(format!("/proc/{pid}/ns/pid"))?;
        nix::sched::setns(&namespace, CloneFlags::CLONE_NEWPID).map_err(io::Error::from)?;
        // SAFETY: the pod init is single-threaded.
        let forked = unsafe { cgroup.fork_into(false) };
        if !matches!(forked, Ok(Forked::Child(_))) {
            // Our containers and execs would otherwise start in the wrong namespace.
            nix::sched::setns(&self.own_pid_namespace, CloneFlags::CLONE_NEWPID)
                .expect("the pod init returns to its own PID namespace");
        }
        forked
    }

    fn start(&mut self, container: ContainerSpec, cgroup: Cgroup) -> Response {
        if self.running.iter().any(|c| c.name == container.name) {
            return Response::Error { message: format!("container {} is already running", container.name) };
        }
        match self.spawn(&container, cgroup) {
            Ok(running) => {
                let pid = running.pid.as_raw();
                self.running.push(running);
                Response::Started { pid }
            }
            Err(e) => Response::Error { message: e.to_string() },
        }
    }

    fn spawn(&mut self, container: &ContainerSpec, cgroup: Cgroup) -> io::Result<Running> {
        // Each container is PID 1 of a PID namespace of its own, nested in the pod's, unless
        // the pod shares one or it targets another container's. A target that is not
        // running is no start of the container (nothing recorded): it may be tried again.
        let target = match &container.target {
            Some(name) => match self.running.iter().find(|c| &c.name == name && c.exit.is_none()) {
                Some(target) => Some(target.pid),
                None => return Err(io::Error::other(format!("target container {name} is not running"))),
            },
            None => None,
        };
        let paths = self.dirs.container_paths(&self.record.spec, container);
        // A restarted container starts again from its image, as kubelet's new container
        // would; and a `volatile` overlay's upper and work dirs cannot be mounted twice.
        for dir in [&paths.upper, &paths.work] {
            move_aside(dir, &self.dirs.removed)?;
        }
        for dir in [&paths.rootfs, &paths.upper, &paths.work] {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(self.dirs.exit_record(&container.name));
        write_json_atomic(&self.dirs.container_record(&container.name), container)?;
        let mut log = CriLog::open(&container.log_path, LOG_MAX_SIZE, LOG_MAX_FILES)?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (status_r, status_w) = pipe()?;
        // With `stdin`, the write side waits here for the first client that attaches (with
        // `tty`, that is the terminal's master).
        let (stdin_r, stdin_w) = match container.stdin && !container.tty {
            true => pipe().map(|(r, w)| (Some(r), Some(w)))?,
            false => (None, None),
        };
        // With `tty`, the container makes its terminal and sends us the master.
        let (pty_ours, pty_theirs) = match container.tty {
            true => Channel::pair().map(|(ours, theirs)| (Some(ours), Some(theirs)))?,
            false => (None, None),
        };
        let shares_processes = self.record.spec.share_process_namespace || target.is_some();
        let started_at = rfc3339_nano(SystemTime::now());
        let forked = match target {
            Some(pid) => self.fork_in_container(&cgroup, pid),
            // SAFETY: the pod init is single-threaded.
            None => unsafe { cgroup.fork_into(!self.record.spec.share_process_namespace) },
        };
        match forked? {
            Forked::Child(joined) => {
                drop((out_r, err_r, status_r, stdin_w, pty_ours));
                let mut keep = vec![out_w.as_raw_fd(), err_w.as_raw_fd(), status_w.as_raw_fd()];
                keep.extend(stdin_r.iter().map(|fd| fd.as_raw_fd()));
                keep.extend(pty_theirs.iter().map(|channel| channel.as_raw_fd()));
                close_descriptors_except(&keep);
                let stdin = match stdin_r.map_or_else(|| File::open("/dev/null").map(OwnedFd::from), Ok) {
                    Ok(stdin) => stdin,
                    // SAFETY: leaving the forked child.
                    Err(_) => unsafe { libc::_exit(128) },
                };
                let send_pty = |master: BorrowedFd| pty_theirs.as_ref().expect("tty").send(&(), &[master]);
                let failure = joined.and_then(|()| child_setup(stdin, out_w, err_w)).map_or_else(
                    |e| process::StartError { exit_code: 128, message: e.to_string() },
                    |()| {
                        let send: Option<process::SendPty> = container.tty.then_some(&send_pty);
                        process::setup_and_exec(container, &paths, send)
                    },
                );
                let mut status = File::from(status_w);
                let _ =
                    status.write_all(&serde_json::to_vec(&(failure.exit_code, &failure.message)).unwrap_or_default());
                // SAFETY: leaving the forked child without running the parent's atexit work.
                unsafe { libc::_exit(failure.exit_code) }
            }
            Forked::Parent(child) => {
                drop((out_w, err_w, status_w, pty_theirs));
                let failure = read_failure(status_r);
                if failure.is_none() {
                    let (stdin, stdout, stderr) = match pty_ours {
                        // Its output is read (and logged as stdout) from the master, and
                        // an attached client writes to a copy of it.
                        Some(channel) => {
                            let master = match channel.recv::<()>()? {
                                Some((_, mut fds)) if fds.len() == 1 => fds.remove(0),
                                _ => return Err(io::Error::other("the container sent no terminal")),
                            };
                            let input = container.stdin.then(|| master.try_clone()).transpose()?;
                            (input, Some(File::from(master)), None)
                        }
                        None => (stdin_w, Some(File::from(out_r)), Some(File::from(err_r))),
                    };
                    // Exec'd: the status pipe closed on exec (O_CLOEXEC) with nothing in it.
                    let process = ProcessRecord::of(child.as_raw())
                        .unwrap_or(ProcessRecord { pid: child.as_raw(), start_time: 0 });
                    write_json_atomic(
                        &self.dirs.process_record(&container.name),
                        &ContainerProcess { process, started_at: started_at.clone() },
                    )?;
                    return Ok(Running {
                        name: container.name.clone(),
                        pid: child,
                        started_at,
                        stdin,
                        stdout,
                        stderr,
                        log,
                        cgroup,
                        shares_processes,
                        exit: None,
                        waiters: Vec::new(),
                    });
                }
                let _ = nix::sys::wait::waitpid(child, None);
                let (exit_code, message) = failure.expect("checked above");
                let _ = log.write(Stream::Stderr, format!("podctl: {message}\n").as_bytes());
                let status = ExitStatus {
                    exit_code,
                    signal: None,
                    reason: "StartError".into(),
                    message: Some(message.clone()),
                    started_at: None,
                    finished_at: rfc3339_nano(SystemTime::now()),
                };
                write_json_atomic(&self.dirs.exit_record(&container.name), &status)?;
                Err(io::Error::other(message))
            }
        }
    }

    fn wait(&mut self, client: u64, name: &str) -> Option<Response> {
        if let Some(c) = self.running.iter_mut().find(|c| c.name == name) {
            c.waiters.push(client);
            return None;
        }
        Some(match read_json::<ExitStatus>(&self.dirs.exit_record(name)) {
            Ok(Some(status)) => Response::Exited(status),
            Ok(None) => Response::Error { message: format!("no container {name} in this pod") },
            Err(e) => Response::Error { message: e.to_string() },
        })
    }

    fn kill(&mut self, name: &str, signal: i32) -> Response {
        let Some(c) = self.running.iter().find(|c| c.name == name && c.exit.is_none()) else {
            return Response::Ok;
        };
        let signal = match Signal::try_from(signal) {
            Ok(s) => s,
            Err(e) => return Response::Error { message: format!("signal {signal}: {e}") },
        };
        match nix::sys::signal::kill(c.pid, signal) {
            Ok(()) | Err(nix::Error::ESRCH) => Response::Ok,
            Err(e) => Response::Error { message: format!("kill {name}: {e}") },
        }
    }

    /// Reaps every child that exited: containers and any orphan the pod left behind.
    fn reap(&mut self) -> io::Result<()> {
        while let Ok(Some(info)) = self.signals.read_signal() {
            if info.ssi_signo != libc::SIGCHLD as u32 {
                // SIGTERM/SIGINT/SIGHUP to PID 1 of a pod: ignored, as the kernel would.
                continue;
            }
        }
        loop {
            match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => return Ok(()),
                Ok(status) => {
                    if let Some(c) = self.running.iter_mut().find(|c| Some(c.pid) == status.pid()) {
                        c.exit = Some(status);
                        // In its own PID namespace, the kernel has ended the rest of the
                        // container with its first process; in a shared one, we do.
                        if c.shares_processes {
                            c.cgroup.kill_all();
                        }
                    } else if let Some(i) = self.execs.iter().position(|e| Some(e.pid) == status.pid()) {
                        let exec = self.execs.remove(i);
                        let (exit_code, signal) = exit_code(status);
                        let response = Response::Exited(ExitStatus {
                            exit_code,
                            signal,
                            reason: if exit_code == 0 { "Completed".into() } else { "Error".into() },
                            message: None,
                            started_at: None,
                            finished_at: rfc3339_nano(SystemTime::now()),
                        });
                        self.respond(exec.client, &response);
                    }
                }
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn drain(&mut self, i: usize, stream: Stream) {
        let c = &mut self.running[i];
        let pipe = match stream {
            Stream::Stdout => &mut c.stdout,
            Stream::Stderr => &mut c.stderr,
        };
        // On the heap: a buffer this size on the stack would keep the idle pod init's
        // stack deep (see release_clean_file_pages).
        let mut buf = vec![0u8; 64 << 10];
        let n = pipe.as_mut().map_or(Ok(0), |p| p.read(&mut buf));
        match n {
            Ok(n) if n > 0 => {
                let _ = c.log.write(stream, &buf[..n]);
            }
            Ok(_) | Err(_) => {
                let _ = c.log.close(stream);
                *pipe = None;
            }
        }
    }

    /// Records the exit of every container that was reaped and whose output is all
    /// logged, and answers whoever waits for it.
    fn finish_exited(&mut self) {
        let done: Vec<usize> = (0..self.running.len())
            .filter(|&i| {
                let c = &self.running[i];
                c.exit.is_some() && c.stdout.is_none() && c.stderr.is_none()
            })
            .collect();
        for i in done.into_iter().rev() {
            let c = self.running.remove(i);
            let (exit_code, signal) = exit_code(c.exit.expect("finished containers were reaped"));
            let reason = match (exit_code, signal) {
                (0, _) => "Completed",
                (_, Some(libc::SIGKILL)) if c.cgroup.oom_killed() => "OOMKilled",
                _ => "Error",
            };
            let status = ExitStatus {
                exit_code,
                signal,
                reason: reason.into(),
                message: None,
                started_at: Some(c.started_at.clone()),
                finished_at: rfc3339_nano(SystemTime::now()),
            };
            let response = match write_json_atomic(&self.dirs.exit_record(&c.name), &status) {
                Ok(()) => Response::Exited(status),
                Err(e) => Response::Error { message: format!("record exit of {}: {e}", c.name) },
            };
            for waiter in c.waiters {
                self.respond(waiter, &response);
            }
        }
    }
}

/// In a forked child whose setup failed: tell the parent why over the status pipe (which
/// an exec would have closed, O_CLOEXEC) and exit.
fn report_failure(status: OwnedFd, failure: process::StartError) -> ! {
    let mut status = File::from(status);
    let _ = status.write_all(&serde_json::to_vec(&(failure.exit_code, &failure.message)).unwrap_or_default());
    // SAFETY: leaving the forked child without running the parent's atexit work.
    unsafe { libc::_exit(failure.exit_code) }
}

/// In the parent: `None` once the child has exec'd (the pipe closed empty), else its exit
/// code and reason.
fn read_failure(status: OwnedFd) -> Option<(i32, String)> {
    let mut report = Vec::new();
    let _ = File::from(status).read_to_end(&mut report);
    (!report.is_empty())
        .then(|| serde_json::from_slice(&report).unwrap_or((128, String::from_utf8_lossy(&report).into_owned())))
}

/// The exit code, or 128 + the signal, as shells report it.
fn exit_code(status: WaitStatus) -> (i32, Option<i32>) {
    match status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, signal, _) => (128 + signal as i32, Some(signal as i32)),
        _ => (255, None),
    }
}

/// In a forked child: default signal handling (blocked signals and ignored SIGPIPE would
/// otherwise pass through exec) and the given standard descriptors.
fn child_setup(stdin: OwnedFd, stdout: OwnedFd, stderr: OwnedFd) -> io::Result<()> {
    SigSet::all().thread_unblock().map_err(io::Error::from)?;
    for signal in [Signal::SIGPIPE, Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: restoring the default disposition.
        unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl) }.map_err(io::Error::from)?;
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    dup_onto(&stdin, 0)?;
    dup_onto(&stdout, 1)?;
    dup_onto(&stderr, 2)
}

/// In a forked child: closes every descriptor but stdio and `keep` (close_range(2)). Closed,
/// not left to close-on-exec: the pod init's socket, its other clients and the containers'
/// pipes must not be open while the child takes a container's credentials.
fn close_descriptors_except(keep: &[RawFd]) {
    let close = |first: u32, last: u32| {
        // SAFETY: closes descriptors of this process that nothing in it uses any more.
        unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    };
    let mut keep: Vec<u32> = keep.iter().filter(|&&fd| fd > 2).map(|&fd| fd as u32).collect();
    keep.sort_unstable();
    let mut from = 3;
    for fd in keep {
        if fd > from {
            close(from, fd - 1);
        }
        from = from.max(fd + 1);
    }
    close(from, u32::MAX);
}

/// dup2(2) onto a standard descriptor (which then does not close on exec).
fn dup_onto(fd: &impl AsRawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: both are valid descriptors; `target` is one of 0, 1, 2, owned by the process.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Gives the pod init a /proc of the pod's PID namespace, so the pids it forks mean the
/// same in /proc: a mount namespace of its own, a slave of the node's (mounts the agent
/// makes later still arrive; nothing mounted here leaks out, mount_namespaces(7)).
fn own_proc() -> io::Result<()> {
    use nix::mount::{MsFlags, mount};
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| io::Error::other(format!("new mount namespace: {e}")))?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
        .map_err(|e| io::Error::other(format!("make / a slave: {e}")))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>)
        .map_err(|e| io::Error::other(format!("mount /proc: {e}")))
}

/// The pod init is exec'd from podctl's large binary, and starting it touches far more of
/// its code and read-only data than the idle loop ever uses again. The pages of its
/// read-only file mappings that are still the file's (not a private copy: /proc/self/pagemap
/// tells them apart, proc(5)) are dropped with MADV_DONTNEED (madvise(2)): nothing is lost,
/// they fault back in from the page cache when used. So are the stack pages below the
/// current frame, which only the deeper calls of startup used. Freed heap is returned
/// first: after the drop, every page touched faults back in with its neighbours (the
/// kernel's fault-around), so little but madvise runs between the drop and the next poll.
fn release_clean_file_pages() {
    // SAFETY: plain libc call.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return };
    let (ranges, stack) = read_only_file_mappings(&maps);
    drop(maps);
    let Ok(pagemap) = std::fs::File::open("/proc/self/pagemap") else { return };
    // SAFETY: plain libc call (malloc_trim(3)).
    unsafe { libc::malloc_trim(0) };
    for &(start, end) in ranges.iter().filter(|(start, end)| start < end) {
        release_file_pages(&pagemap, page_size, start, end);
    }
    // The stack grows down: everything more than a page below this frame is unused (the
    // page of margin covers the calls still to come from here).
    let here = &stack as *const _ as usize & !(page_size - 1);
    if let Some(start) = stack.filter(|&start| start < here - page_size) {
        // SAFETY: pages of our own stack below every live frame; they fault back as zeros.
        unsafe { libc::madvise(start as *mut libc::c_void, here - page_size - start, libc::MADV_DONTNEED) };
    }
}

/// Drops the pages of `start..end` that are present and still the file's, run by run.
fn release_file_pages(pagemap: &std::fs::File, page_size: usize, start: usize, end: usize) {
    use std::os::unix::fs::FileExt;
    // pagemap(5): one u64 per page; bit 63 present, bit 61 a file (or shared) page.
    const PRESENT: u64 = 1 << 63;
    const FILE_PAGE: u64 = 1 << 61;
    let mut entries = [0u64; 512];
    let mut page = start;
    let mut run: Option<usize> = None;
    let release = |from: usize, to: usize| {
        // SAFETY: pages of our own read-only mapping that hold the file's own content.
        unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_DONTNEED) };
    };
    while page < end {
        let count = ((end - page) / page_size).min(entries.len());
        // SAFETY: u64s are plain bytes; the slice covers exactly the array.
        let bytes = unsafe { std::slice::from_raw_parts_mut(entries.as_mut_ptr().cast::<u8>(), count * 8) };
        if pagemap.read_exact_at(bytes, (page / page_size * 8) as u64).is_err() {
            return;
        }
        for entry in &entries[..count] {
            match (entry & PRESENT != 0 && entry & FILE_PAGE != 0, run) {
                (true, None) => run = Some(page),
                (false, Some(from)) => {
                    release(from, page);
                    run = None;
                }
                _ => {}
            }
            page += page_size;
        }
    }
    if let Some(from) = run {
        release(from, end);
    }
}

/// From /proc/self/maps: the private, read-only, file-backed mappings, in a fixed array
/// so that using them allocates nothing; and where the stack mapping starts.
fn read_only_file_mappings(maps: &str) -> ([(usize, usize); 64], Option<usize>) {
    let mut ranges = [(0, 0); 64];
    let mut count = 0;
    let mut stack = None;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some((start, end)), Some(perms)) = (fields.next().and_then(|r| r.split_once('-')), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or_default();
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        if path == "[stack]" {
            stack = Some(start);
        }
        // Private, not writable, backed by a file (not [heap], [stack], [vdso], …).
        if perms.ends_with('p') && !perms.contains('w') && path.starts_with('/') && count < ranges.len() {
            ranges[count] = (start, end);
            count += 1;
        }
    }
    (ranges, stack)
}

/// Sets `lo` up in the pod's new network namespace (SIOCSIFFLAGS, netdevice(7)).
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2).
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let raw: RawFd = sock.as_raw_fd();
    // SAFETY: ioctls on a socket with a valid ifreq.
    unsafe {
        if libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
