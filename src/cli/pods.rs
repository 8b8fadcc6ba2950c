//! `podctl ps`, `logs`, `stop`, `rm`: the pods `podctl run` made on this host.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use runtime::logs::{LogTail, Stream};
use runtime::{Origin, Pod, Runtime};

use super::{NodeOptions, require_root};
use crate::kubelet::sandbox;

#[derive(Args)]
pub struct PsArgs {
    /// Show exited pods too
    #[arg(short, long)]
    all: bool,
    /// Print pod names only
    #[arg(short, long)]
    quiet: bool,
    /// `table` (the default), or `json`: an array of the pods, times in RFC 3339
    #[arg(long, value_name = "FORMAT", default_value = "table", value_parser = ["table", "json"])]
    format: String,
}

#[derive(Args)]
pub struct LogsArgs {
    /// Keep printing as the container writes, until it exits
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines written so far (then, with -f, what follows)
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// Only what was written since: a duration back from now (10s, 5m, 2h) or an RFC 3339
    /// time
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    since: Option<String>,
    /// Each line after the time it was written (RFC 3339, nanoseconds)
    #[arg(short, long)]
    timestamps: bool,
    /// Container (default: the pod's only one)
    #[arg(short, long)]
    container: Option<String>,
    /// The pod, by name or the start of its ID
    pod: String,
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds between SIGTERM and SIGKILL
    #[arg(short, long, default_value_t = 30)]
    time: u64,
    /// Pods, by name or the start of their ID
    #[arg(required = true)]
    pods: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Stop running pods (SIGKILL) before removing them
    #[arg(short, long)]
    force: bool,
    /// Pods, by name or the start of their ID
    #[arg(required = true)]
    pods: Vec<String>,
}

/// A pod by name or by a prefix of its uid.
pub fn find_pod(runtime: &Runtime, name: &str) -> Result<Pod> {
    let pods = runtime.pods()?;
    if let Some(pod) = pods.iter().find(|p| display_name(p) == name) {
        return Ok(pod.clone());
    }
    let by_uid: Vec<&Pod> = pods.iter().filter(|p| name.len() >= 4 && p.uid().starts_with(name)).collect();
    match by_uid.as_slice() {
        [pod] => Ok((*pod).clone()),
        [] => bail!("no such pod: {name}"),
        _ => bail!("pod id {name} is ambiguous"),
    }
}

/// A pod as podctl's commands name it: `podctl run`'s by name, the node agent's as
/// NAMESPACE/NAME (names repeat across namespaces).
pub fn display_name(pod: &Pod) -> String {
    match pod.record.spec.origin {
        Origin::Run => pod.name().to_string(),
        Origin::Node => format!("{}/{}", pod.record.spec.namespace, pod.name()),
    }
}

/// Who made the pod, in `ps` words.
fn origin(pod: &Pod) -> &'static str {
    match pod.record.spec.origin {
        Origin::Run => "run",
        Origin::Node => "node",
    }
}

/// What a pod is doing, in `ps` words: a container that failed beside running ones is
/// named; an exited pod shows its (first) app container's exit.
fn status(pod: &Pod) -> String {
    let apps: Vec<String> = pod.containers().into_iter().filter(|c| !c.init).map(|c| c.name).collect();
    let exits = pod.exits();
    if !pod.running_containers().is_empty() {
        let failed: Vec<String> = exits
            .iter()
            .filter(|(name, exit)| exit.exit_code != 0 && apps.contains(name))
            .map(|(name, exit)| format!("{name} exited {}", exit.exit_code))
            .collect();
        return if failed.is_empty() { "Running".into() } else { format!("Running ({})", failed.join(", ")) };
    }
    match exits.iter().find(|(name, _)| apps.contains(name)).or(exits.first()) {
        Some((_, status)) if status.reason == "Completed" || status.reason == "Error" => {
            format!("Exited ({})", status.exit_code)
        }
        Some((_, status)) => format!("Exited ({}) {}", status.exit_code, status.reason),
        None => "Created".into(),
    }
}

pub fn ps(args: PsArgs, opts: &NodeOptions) -> Result<ExitCode> {
    let runtime = opts.runtime()?;
    let network = opts.network();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        runtime.recover()?;
        let live = runtime.pods()?.iter().map(|p| p.uid().to_string()).collect();
        network.reconcile(&live)?;
    }
    let mut rows = vec![[
        "POD ID".to_string(),
        "NAME".into(),
        "IMAGE".into(),
        "STATUS".into(),
        "IP".into(),
        "CREATED".into(),
        "ORIGIN".into(),
    ]];
    let mut listed = Vec::new();
    // On a terminal, how long ago; in a pipe, the time itself (stable for scripts).
    let ago = io::stdout().is_terminal();
    for pod in runtime.pods()? {
        let status = status(&pod);
        if !args.all && pod.running_containers().is_empty() {
            continue;
        }
        if args.quiet {
            println!("{}", display_name(&pod));
            continue;
        }
        let images: Vec<String> = pod.containers().into_iter().filter(|c| !c.init).map(|c| c.image).collect();
        let address = network.address(pod.uid())?.map(|a| a.to_string());
        listed.push(serde_json::json!({
            "Id": pod.uid(), "Name": display_name(&pod), "Images": images, "Status": status,
            "IP": address, "Created": pod.record.created_at, "Origin": origin(&pod),
        }));
        let created = match ago {
            true => format!("{} ago", crate::apiserver::human_age(&pod.record.created_at)),
            false => pod.record.created_at.clone(),
        };
        rows.push([
            pod.uid()[..12].to_string(),
            display_name(&pod),
            images.join(","),
            status,
            address.unwrap_or_else(|| "-".into()),
            created,
            origin(&pod).to_string(),
        ]);
    }
    match (args.quiet, args.format.as_str()) {
        (true, _) => {}
        (false, "json") => println!("{}", serde_json::to_string_pretty(&listed)?),
        (false, _) => super::print_table(&rows),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logs(args: LogsArgs, opts: &NodeOptions) -> Result<ExitCode> {
    let runtime = opts.runtime()?;
    let pod = find_pod(&runtime, &args.pod)?;
    let containers = pod.containers();
    let names: Vec<String> = containers.iter().map(|c| c.name.clone()).collect();
    let container = match &args.container {
        Some(name) => containers.iter().find(|c| c.name == *name).ok_or_else(|| no_container(&pod, name, &names))?,
        None if containers.len() == 1 => &containers[0],
        None => bail!("pod {} has {} containers ({}): name one with -c", pod.name(), names.len(), names.join(", ")),
    };
    let mut logs = LogFollower::new(&container.log_path);
    logs.since = args.since.clone();
    logs.timestamps = args.timestamps;
    logs.print_last(args.tail)?;
    if args.follow {
        // One wait for the exit, not a new request every tick.
        let (done_tx, done) = std::sync::mpsc::channel();
        let (waiter, waiting, name) = (runtime.clone(), pod.clone(), container.name.clone());
        std::thread::spawn(move || {
            let _ = done_tx.send(waiter.wait_container(&waiting, &name, None));
        });
        loop {
            let answer = done.recv_timeout(Duration::from_millis(100));
            logs.print_new()?;
            match answer {
                Ok(status) => break status.map(|_| ())?,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => bail!("lost the wait for the container"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct InspectArgs {
    /// Pods, by name or the start of their ID
    #[arg(required = true)]
    pods: Vec<String>,
}

/// `podctl inspect`: each pod as JSON, what `ps` summarises and more (its spec, each
/// container's state and exit, the address, mounts, cgroup and state paths), as `docker
/// inspect` shows a container.
pub fn inspect(args: InspectArgs, opts: &NodeOptions) -> Result<ExitCode> {
    let runtime = opts.runtime()?;
    let network = opts.network();
    let mut shown = Vec::new();
    let code = each_pod(&runtime, &args.pods, |pod| {
        shown.push(describe(pod, network.address(pod.uid())?.map(|a| a.to_string()))?);
        Ok(())
    });
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(code)
}

fn describe(pod: &Pod, address: Option<String>) -> Result<serde_json::Value> {
    let exits = pod.exits();
    let running = pod.running_containers();
    let containers: Vec<serde_json::Value> = pod
        .containers()
        .into_iter()
        .map(|c| {
            let exit = exits.iter().find(|(name, _)| *name == c.name).map(|(_, status)| status);
            let started =
                runtime::state::read_json::<runtime::state::ContainerProcess>(&pod.dirs.process_record(&c.name))
                    .ok()
                    .flatten();
            let state = match (running.contains(&c.name), exit) {
                (true, _) => "running",
                (false, Some(_)) => "exited",
                (false, None) => "created",
            };
            serde_json::json!({
                "Name": c.name, "Image": c.image, "State": state,
                "Pid": started.as_ref().filter(|_| state == "running").map(|p| p.process.pid),
                "StartedAt": started.as_ref().map(|p| p.started_at.clone()),
                "Exit": exit, "Command": c.args, "Env": c.env, "WorkingDir": c.working_dir,
                "User": c.user, "Privileged": c.privileged, "ReadOnlyRootfs": c.read_only_rootfs,
                "Mounts": c.mounts, "Resources": c.resources, "Tty": c.tty, "Stdin": c.stdin,
                "LogPath": c.log_path, "LowerDirs": c.lower_dirs,
            })
        })
        .collect();
    let spec = &pod.record.spec;
    Ok(serde_json::json!({
        "Id": spec.uid, "Name": spec.name, "Namespace": spec.namespace, "Hostname": spec.hostname,
        "Status": status(pod), "Created": pod.record.created_at,
        "Network": spec.network, "IP": address, "Qos": spec.qos, "Volumes": spec.volumes,
        "Init": pod.init.as_ref().map(|p| serde_json::json!({"Pid": p.pid, "Alive": p.is_alive()})),
        "Cgroup": pod.record.cgroup.dirs, "StateDir": pod.dirs.state, "Netns": pod.dirs.netns,
        "Containers": containers,
    }))
}

/// Waits for every container of pod `uid` to exit, then removes the pod (podman's
/// `container cleanup`, run by `run -d --rm` in a process of its own).
pub fn cleanup(uid: &str, opts: &NodeOptions) -> Result<ExitCode> {
    let runtime = opts.runtime()?;
    let find = || runtime.pods().ok()?.into_iter().find(|p| p.uid() == uid);
    let Some(pod) = find() else { return Ok(ExitCode::SUCCESS) };
    for container in pod.containers() {
        runtime.wait_container(&pod, &container.name, None)?;
    }
    // Removed meanwhile (`rm -f`): nothing left to do.
    if let Some(pod) = find() {
        sandbox::remove(&runtime, &opts.network(), &pod, &opts.log_dir)?;
        sandbox::sweep(&runtime, &opts.log_dir)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts one of podctl's helpers (`__cleanup`, `__supervise` for pod `uid`; `__sweep`),
/// in a process group of its own that outlives this command.
pub fn in_background(opts: &NodeOptions, helper: &str, uid: Option<&str>) -> Result<()> {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("/proc/self/exe")
        .arg(helper)
        .args(uid)
        .args(opts.as_flags())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("start podctl's {helper} process"))?;
    Ok(())
}

/// Where a pod's supervisor records itself (pid and start time: a pid alone may be reused).
fn supervisor_record(pod: &Pod) -> std::path::PathBuf {
    pod.dirs.state.join("supervisor.json")
}

/// Ends the pod's supervisor, if it has one, so that what is stopped stays stopped.
pub fn end_supervisor(pod: &Pod) {
    let path = supervisor_record(pod);
    let record: Option<runtime::ProcessRecord> = runtime::state::read_json(&path).ok().flatten();
    if let Some(record) = record.filter(|r| r.is_alive()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(record.pid), nix::sys::signal::SIGKILL);
        record.wait_exit(Duration::from_secs(5));
    }
    let _ = std::fs::remove_file(path);
}

/// The run number of a container: its log file's (`N.log`).
fn run_number(container: &runtime::ContainerSpec) -> u32 {
    container.log_path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Starts an exited container again, as its next run (a log file of its own).
fn start_again(runtime: &Runtime, pod: &Pod, container: &runtime::ContainerSpec) -> Result<()> {
    let mut next = container.clone();
    next.log_path.set_file_name(format!("{}.log", run_number(container) + 1));
    runtime.start_container(pod, &next)?;
    Ok(())
}

/// Keeps the app containers of pod `uid` up by its restart policy, with kubelet's
/// back-off between restarts, until none is to start again, the pod is gone, or `stop`
/// or `rm` ends it (run by `run -d --restart`, in a process of its own).
pub fn supervise(uid: &str, opts: &NodeOptions) -> Result<ExitCode> {
    let runtime = opts.runtime()?;
    let find = || runtime.pods().ok()?.into_iter().find(|p| p.uid() == uid && p.is_running());
    let Some(pod) = find() else { return Ok(ExitCode::SUCCESS) };
    let me = runtime::ProcessRecord::of(std::process::id() as i32).context("this process")?;
    runtime::state::write_json_atomic(&supervisor_record(&pod), &me)?;
    let policy = pod.record.spec.restart;
    let (exited, exits) = std::sync::mpsc::channel::<(String, i32)>();
    let watch = |name: String| {
        let (runtime, pod, exited) = (runtime.clone(), pod.clone(), exited.clone());
        std::thread::spawn(move || {
            if let Ok(Some(status)) = runtime.wait_container(&pod, &name, None) {
                let _ = exited.send((name, status.exit_code));
            }
        });
    };
    let mut watching = 0;
    for container in pod.containers().into_iter().filter(|c| !c.init) {
        watch(container.name);
        watching += 1;
    }
    let mut backoff: std::collections::HashMap<String, crate::kubelet::backoff::Backoff> = Default::default();
    while watching > 0 {
        let Ok((name, code)) = exits.recv() else { break };
        watching -= 1;
        let Some(pod) = find() else { break };
        let Some(container) = pod.containers().into_iter().find(|c| c.name == name) else { continue };
        if !policy.again(code, run_number(&container)) {
            continue;
        }
        // kubelet's doBackOff: the first restart at once, each later one after the delay.
        let entry = backoff.get(&name).copied();
        if let Some(entry) = entry {
            std::thread::sleep(entry.delay);
        }
        backoff.insert(name.clone(), crate::kubelet::backoff::Backoff::next(entry, std::time::Instant::now()));
        let Some(pod) = find() else { break };
        start_again(&runtime, &pod, &container)?;
        watch(name);
        watching += 1;
    }
    let _ = std::fs::remove_file(supervisor_record(&pod));
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct StartArgs {
    /// Pods, by name or the start of their ID
    #[arg(required = true)]
    pods: Vec<String>,
}

/// Starts the exited app containers of each pod again, and its supervisor when it has a
/// restart policy.
pub fn start(args: StartArgs, opts: &NodeOptions) -> Result<ExitCode> {
    require_root("podctl start")?;
    let runtime = opts.runtime()?;
    Ok(each_pod(&runtime, &args.pods, |pod| start_pod(&runtime, opts, pod)))
}

fn start_pod(runtime: &Runtime, opts: &NodeOptions, pod: &Pod) -> Result<()> {
    if pod.record.spec.origin != Origin::Run {
        bail!("pod {} is the node agent's: its object says what runs", pod.name());
    }
    if !pod.is_running() {
        bail!("pod {}: its sandbox is gone (the host restarted?): podctl rm it and run it again", pod.name());
    }
    let running = pod.running_containers();
    for container in pod.containers().iter().filter(|c| !c.init && !running.contains(&c.name)) {
        start_again(runtime, pod, container)?;
    }
    if pod.record.spec.restart != runtime::Restart::No {
        end_supervisor(pod);
        in_background(opts, "__supervise", Some(pod.uid()))?;
    }
    println!("{}", pod.name());
    Ok(())
}

pub fn restart(args: StopArgs, opts: &NodeOptions) -> Result<ExitCode> {
    require_root("podctl restart")?;
    let runtime = opts.runtime()?;
    Ok(each_pod(&runtime, &args.pods, |pod| {
        end_supervisor(pod);
        let containers: Vec<String> = pod.containers().into_iter().map(|c| c.name).collect();
        runtime.stop_pod(pod, &containers, Duration::from_secs(args.time))?;
        start_pod(&runtime, opts, pod)
    }))
}

/// The error of a container name the pod does not have, naming those it has.
pub fn no_container(pod: &Pod, name: &str, names: &[String]) -> anyhow::Error {
    anyhow::anyhow!("pod {} has no container {name} (its containers: {})", pod.name(), names.join(", "))
}

pub fn stop(args: StopArgs, opts: &NodeOptions) -> Result<ExitCode> {
    require_root("podctl stop")?;
    let runtime = opts.runtime()?;
    Ok(each_pod(&runtime, &args.pods, |pod| {
        end_supervisor(pod);
        let containers: Vec<String> = pod.containers().into_iter().map(|c| c.name).collect();
        runtime.stop_pod(pod, &containers, Duration::from_secs(args.time))?;
        println!("{}", pod.name());
        Ok(())
    }))
}

pub fn rm(args: RmArgs, opts: &NodeOptions) -> Result<ExitCode> {
    require_root("podctl rm")?;
    let runtime = opts.runtime()?;
    let code = each_pod(&runtime, &args.pods, |pod| {
        if !pod.running_containers().is_empty() && !args.force {
            bail!("pod {} is running: stop it first, or use rm -f", pod.name());
        }
        end_supervisor(pod);
        sandbox::remove(&runtime, &opts.network(), pod, &opts.log_dir)?;
        println!("{}", pod.name());
        Ok(())
    });
    in_background(opts, "__sweep", None)?;
    Ok(code)
}

/// Does `act` to each named pod, saying why it could not be done to some, as docker
/// does: all are tried, and the exit code is 1 if any failed.
fn each_pod(runtime: &Runtime, names: &[String], mut act: impl FnMut(&Pod) -> Result<()>) -> ExitCode {
    let mut failed = false;
    for name in names {
        if let Err(e) = find_pod(runtime, name).and_then(|pod| act(&pod)) {
            eprintln!("podctl: {e:#}");
            failed = true;
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Prints a CRI log as the container wrote it: stdout records to stdout, stderr records to
/// stderr, `P` pieces joined without a newline.
pub struct LogFollower {
    tail: LogTail,
    /// Records older than this (RFC 3339, nanoseconds) are left out.
    pub since: Option<String>,
    /// Lines begin with the time they were written.
    pub timestamps: bool,
    /// Whether the next record begins a line.
    at_line_start: bool,
}

impl LogFollower {
    pub fn new(path: &Path) -> LogFollower {
        LogFollower { tail: LogTail::new(path), since: None, timestamps: false, at_line_start: true }
    }

    /// Prints the complete records written since the last call.
    pub fn print_new(&mut self) -> Result<()> {
        self.print_last(None)
    }

    /// The same, only the last `lines` lines of them when given.
    pub fn print_last(&mut self, lines: Option<usize>) -> Result<()> {
        let mut records: Vec<(Stream, Vec<u8>, bool)> = Vec::new();
        let (since, timestamps) = (self.since.clone(), self.timestamps);
        let mut at_line_start = self.at_line_start;
        self.tail.read_new(|record| {
            if since.as_deref().is_some_and(|since| record.time < since) {
                return Ok(());
            }
            let mut text = Vec::with_capacity(record.content.len() + 32);
            if timestamps && at_line_start {
                text.extend_from_slice(record.time.as_bytes());
                text.push(b' ');
            }
            text.extend_from_slice(record.content);
            if record.full {
                text.push(b'\n');
            }
            at_line_start = record.full;
            records.push((record.stream, text, record.full));
            Ok(())
        })?;
        self.at_line_start = at_line_start;
        if let Some(lines) = lines {
            // Keep the records of the last `lines` lines (a line's pieces stay together).
            let mut full_lines = 0;
            let start = records
                .iter()
                .rposition(|(_, _, full)| {
                    full_lines += usize::from(*full);
                    full_lines > lines
                })
                .map_or(0, |i| i + 1);
            records.drain(..start);
        }
        let (mut out, mut err) = (io::stdout().lock(), io::stderr().lock());
        for (stream, text, _) in &records {
            let sink: &mut dyn Write = if *stream == Stream::Stderr { &mut err } else { &mut out };
            sink.write_all(text)?;
        }
        out.flush()?;
        Ok(())
    }
}

/// `--since`: a duration back from now (`10s`, `5m`, `2h`, `1h30m`) or an RFC 3339 time,
/// as the fixed-width time log records carry.
fn parse_since(value: &str) -> Result<String, String> {
    if let Ok(time) = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339) {
        let utc = time.to_offset(time::UtcOffset::UTC);
        let nanos = std::time::UNIX_EPOCH
            + Duration::from_nanos(u64::try_from(utc.unix_timestamp_nanos()).map_err(|_| "before 1970")?);
        return Ok(runtime::logs::rfc3339_nano(nanos));
    }
    let mut seconds = 0u64;
    let mut number = String::new();
    for c in value.chars() {
        match c {
            '0'..='9' => number.push(c),
            'h' | 'm' | 's' if !number.is_empty() => {
                let n: u64 = number.parse().map_err(|_| format!("{value}: not a duration"))?;
                seconds += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                number.clear();
            }
            _ => return Err(format!("{value}: a duration (10s, 5m, 2h) or an RFC 3339 time expected")),
        }
    }
    if !number.is_empty() || seconds == 0 {
        return Err(format!("{value}: a duration (10s, 5m, 2h) or an RFC 3339 time expected"));
    }
    Ok(runtime::logs::rfc3339_nano(std::time::SystemTime::now() - Duration::from_secs(seconds)))
}
