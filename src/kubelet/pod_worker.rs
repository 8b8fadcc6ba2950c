//! One pod's worker, as kubelet's: each sync compares the pod the API server asks for
//! with what the runtime shows and acts (create the sandbox, run init containers in
//! order, start and restart containers with back-off, probe them, stop and remove the
//! pod when it is deleted), then says the status it sees. Level-triggered: everything
//! it needs is read again at each sync, so a sync may be repeated or skipped, and an
//! agent that died and came back finds its pods where it left them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod, Probe};
use runtime::{ExitStatus, NetworkMode, Runtime};
use serde_json::Value;
use tokio::sync::Notify;

use super::backoff::Backoff;
use super::env::{ApiObjects, PodContext};
use super::image_manager::{ImageError, ImageManager, pull_policy};
use super::probes::{self, Action, Target};
use super::spec::{self, NodeSettings, ResolvedImage};
use super::status::{self, ContainerObserved, Observed, RunState};
use super::{sandbox, volumes};
use crate::events::Event;

/// The default terminationGracePeriodSeconds.
const DEFAULT_GRACE: i64 = 30;

/// What the node gives every pod worker.
pub struct NodeContext {
    pub name: String,
    pub host_ip: String,
    pub runtime: Runtime,
    pub network: net::PodNetwork,
    pub images: ImageManager,
    pub log_dir: PathBuf,
    /// The host's resolv.conf (dnsPolicy Default).
    pub host_resolv_conf: String,
    /// `--cluster-dns` and `--cluster-domain`.
    pub cluster_dns: Option<String>,
    pub cluster_domain: String,
    pub objects: Box<dyn ApiObjects + Send + Sync>,
    pub admission: Mutex<Admission>,
    pub metrics: Arc<super::metrics::Metrics>,
}

/// What a sync asks of the API.
#[derive(Default)]
pub struct Outcome {
    /// A status to write (it differs from the one written last).
    pub status: Option<Value>,
    pub events: Vec<Event>,
    /// The pod is stopped and removed: delete its object with grace 0.
    pub delete: bool,
    /// Nothing is left of the pod here, nor in the API: the worker ends.
    pub done: bool,
    /// Sync again this soon (a back-off ends, a probe is due), else at the next resync.
    pub wake_in: Option<Duration>,
}

/// The node's allocatable resources and the pods admitted against them (kubelet's
/// predicate admit handler).
pub struct Admission {
    pub max_pods: usize,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    admitted: HashMap<String, (u64, u64)>,
}

impl Admission {
    pub fn new(max_pods: usize, cpu_millis: u64, memory_bytes: u64) -> Admission {
        Admission { max_pods, cpu_millis, memory_bytes, admitted: HashMap::new() }
    }

    /// Admits the pod, or says why not: (reason, message) as kubelet words them.
    pub fn admit(&mut self, uid: &str, pod: &Pod, force: bool) -> Result<(), (String, String)> {
        if self.admitted.contains_key(uid) {
            return Ok(());
        }
        let (cpu, memory) = requests(pod);
        let used = |f: fn(&(u64, u64)) -> u64| self.admitted.values().map(f).sum::<u64>();
        let refuse = |resource: &str, requested: u64, used: u64, capacity: u64| {
            Err((
                format!("OutOf{resource}"),
                format!(
                    "Pod was rejected: Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
                ),
            ))
        };
        if !force {
            if self.admitted.len() >= self.max_pods {
                return refuse("pods", 1, self.admitted.len() as u64, self.max_pods as u64);
            }
            if cpu > 0 && used(|r| r.0) + cpu > self.cpu_millis {
                return refuse("cpu", cpu, used(|r| r.0), self.cpu_millis);
            }
            if memory > 0 && used(|r| r.1) + memory > self.memory_bytes {
                return refuse("memory", memory, used(|r| r.1), self.memory_bytes);
            }
        }
        self.admitted.insert(uid.to_string(), (cpu, memory));
        Ok(())
    }

    pub fn release(&mut self, uid: &str) {
        self.admitted.remove(uid);
    }
}

/// The pod's requests (millicores, bytes): the larger of its containers' sum and its
/// largest init container, as the scheduler and kubelet count them.
pub fn requests(pod: &Pod) -> (u64, u64) {
    let Some(spec) = pod.spec.as_ref() else { return (0, 0) };
    let of = |c: &Container| {
        let get = |k: &str| {
            let r = c.resources.as_ref();
            r.and_then(|r| r.requests.as_ref())
                .and_then(|m| m.get(k))
                .or_else(|| r.and_then(|r| r.limits.as_ref()).and_then(|m| m.get(k)))
        };
        let cpu = get("cpu").and_then(|q| spec::parse_millicores(&q.0).ok()).unwrap_or(0);
        let memory = get("memory").and_then(|q| spec::parse_bytes(&q.0).ok()).unwrap_or(0);
        (cpu, memory)
    };
    let sum = spec.containers.iter().map(of).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    spec.init_containers.iter().flatten().map(of).fold(sum, |a, b| (a.0.max(b.0), a.1.max(b.1)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    fn name(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// A probe of one run of a container.
struct ProbeState {
    /// The run it belongs to (the container's start time).
    run: String,
    next: Instant,
    successes: i32,
    failures: i32,
}

/// What a sync of a pod that runs works with.
#[derive(Clone, Copy)]
struct Running<'a> {
    node: &'a NodeContext,
    pod: &'a Pod,
    actual: &'a runtime::Pod,
    sandbox_spec: &'a runtime::PodSpec,
    settings: &'a NodeSettings<'a>,
    context: &'a PodContext,
}

/// One pod's worker state: what the runtime does not keep.
pub struct PodWorker {
    pub uid: String,
    pub notify: Arc<Notify>,
    known: Observed,
    backoff: HashMap<String, Backoff>,
    image_backoff: HashMap<String, (Backoff, Instant)>,
    probes: HashMap<(String, ProbeKind), ProbeState>,
    /// Containers whose exit a thread waits for, by name and run.
    waiters: HashSet<(String, String)>,
    /// The status written last (or found in the API at the first sync).
    reported: Option<Value>,
    /// The files last written to each API volume.
    volumes: HashMap<String, volumes::Payload>,
    /// The sandbox's address, by the sandbox's creation time.
    address: Option<(String, std::net::Ipv4Addr)>,
    /// The OOM kills reported, by container and time.
    oom_reported: HashSet<(String, String)>,
    admitted: bool,
    /// Its start was counted in the metrics (or it was running before this agent).
    start_counted: bool,
}

/// The container's runtime id: the pod, the container and its run.
fn container_id(uid: &str, name: &str, restart: u32) -> String {
    format!("podctl://{uid}/{name}/{restart}")
}

fn parse_time(text: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(t.unix_timestamp_nanos()).ok()?))
}

fn since(text: &str) -> Duration {
    parse_time(text).and_then(|t| SystemTime::now().duration_since(t).ok()).unwrap_or_default()
}

impl PodWorker {
    pub fn new(uid: String) -> PodWorker {
        PodWorker {
            uid,
            notify: Arc::new(Notify::new()),
            known: Observed::default(),
            backoff: HashMap::new(),
            image_backoff: HashMap::new(),
            probes: HashMap::new(),
            waiters: HashSet::new(),
            reported: None,
            volumes: HashMap::new(),
            address: None,
            oom_reported: HashSet::new(),
            admitted: false,
            start_counted: false,
        }
    }

    /// One sync of the pod against `desired` (`None`: the API has no such pod any more).
    pub fn sync(&mut self, node: &NodeContext, desired: Option<&Pod>) -> Outcome {
        let actual = match node.runtime.pod(&self.uid) {
            Ok(pod) => Some(pod),
            Err(runtime::Error::NoSuchPod(_)) => None,
            Err(e) => {
                tracing::warn!("pod {}: {e}", self.uid);
                return Outcome { wake_in: Some(Duration::from_secs(1)), ..Default::default() };
            }
        };
        let mut outcome = Outcome::default();
        match desired {
            None => {
                if let Some(actual) = &actual {
                    self.stop(node, None, actual, Duration::ZERO, &mut outcome);
                    if let Err(e) = sandbox::remove(&node.runtime, &node.network, actual, &node.log_dir) {
                        tracing::warn!("pod {}: remove: {e:#}", self.uid);
                        return Outcome { wake_in: Some(Duration::from_secs(1)), ..outcome };
                    }
                }
                node.admission.lock().expect("admission").release(&self.uid);
                outcome.done = true;
            }
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                if let Some(actual) = &actual {
                    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(DEFAULT_GRACE).max(0);
                    self.stop(node, Some(pod), actual, Duration::from_secs(grace as u64), &mut outcome);
                    self.observe(node, pod, actual);
                    if let Err(e) = sandbox::remove(&node.runtime, &node.network, actual, &node.log_dir) {
                        tracing::warn!("pod {}: remove: {e:#}", self.uid);
                        return Outcome { wake_in: Some(Duration::from_secs(1)), ..outcome };
                    }
                }
                node.admission.lock().expect("admission").release(&self.uid);
                self.known.sandbox_ready = false;
                self.known.pod_ip = None;
                self.known.waiting.clear();
                outcome.status = self.changed_status(pod);
                outcome.delete = true;
                outcome.wake_in = Some(Duration::from_secs(1));
            }
            Some(pod) => {
                if let Err(e) = self.run(node, pod, actual, &mut outcome) {
                    node.metrics.sync_failed();
                    tracing::warn!("pod {}: {e:#}", self.uid);
                    // Said where kubectl describe shows it; a repeat counts up on the first.
                    outcome.events.push(warning("FailedSync", &format!("{e:#}"), None));
                    outcome.wake_in =
                        Some(outcome.wake_in.map_or(Duration::from_secs(2), |w| w.min(Duration::from_secs(2))));
                }
                outcome.status = self.changed_status(pod);
                self.count_start(node, pod);
            }
        }
        outcome
    }

    /// Counts the pod's start once all its containers run, from its creation.
    fn count_start(&mut self, node: &NodeContext, pod: &Pod) {
        let containers = pod.spec.as_ref().map_or(&[][..], |s| &s.containers[..]);
        let running = |c: &Container| {
            matches!(self.known.containers.get(&c.name).map(|c| &c.state), Some(RunState::Running { .. }))
        };
        if self.start_counted || !containers.iter().all(running) {
            return;
        }
        self.start_counted = true;
        if let Some(created) = &pod.metadata.creation_timestamp {
            let took = SystemTime::now().duration_since(SystemTime::from(created.0)).unwrap_or_default();
            node.metrics.pod_started(took);
        }
    }

    /// The status written last did not reach the API: the next sync writes it again.
    pub fn forget_reported(&mut self) {
        self.reported = None;
    }

    /// The status to write, if it is not the one written last.
    fn changed_status(&mut self, pod: &Pod) -> Option<Value> {
        if self.reported.is_none() {
            self.reported = pod.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
            // Running before this agent started: not a start of ours to count.
            self.start_counted |= self.reported.as_ref().is_some_and(|s| s["phase"] == "Running");
        }
        let status = status::pod_status(pod, &self.known);
        if self.reported.as_ref() == Some(&status) {
            return None;
        }
        self.reported = Some(status.clone());
        Some(status)
    }

    /// A pod that runs: admitted, its sandbox up, its containers started in order and kept
    /// running as its restart policy says.
    fn run(
        &mut self,
        node: &NodeContext,
        pod: &Pod,
        actual: Option<runtime::Pod>,
        outcome: &mut Outcome,
    ) -> Result<()> {
        let spec = pod.spec.as_ref().context("spec: required")?;
        self.known.host_ip = node.host_ip.clone();
        if !self.admitted {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if actual.is_none() && matches!(phase, Some("Failed") | Some("Succeeded")) {
                // Ended before this agent (re)started: nothing to run again.
                return Ok(());
            }
            match node.admission.lock().expect("admission").admit(&self.uid, pod, actual.is_some()) {
                Ok(()) => self.admitted = true,
                Err(rejected) => {
                    outcome.events.push(warning(&rejected.0, &rejected.1, None));
                    self.known.rejected = Some(rejected);
                    return Ok(());
                }
            }
        }
        if self.known.rejected.is_some() {
            return Ok(());
        }
        let terminal = matches!(status::phase(pod, &self.known), "Succeeded" | "Failed");
        if terminal && actual.as_ref().is_some_and(|a| a.running_containers().is_empty()) {
            node.admission.lock().expect("admission").release(&self.uid);
            return Ok(());
        }
        let settings = self.settings(node, pod);
        let sandbox_spec = spec::sandbox(pod, &self.uid, &settings, &*node.objects)?;
        let actual = match actual {
            Some(actual) => actual,
            None => {
                let mut sandbox_spec = sandbox_spec.clone();
                sandbox_spec.origin = runtime::Origin::Node;
                let all = spec.init_containers.iter().flatten().chain(&spec.containers);
                sandbox_spec.volumes.extend(all.map(|c| runtime::Volume {
                    name: termination_volume(&c.name),
                    source: runtime::VolumeSource::HostPath { path: termination_file(node, &self.uid, &c.name) },
                }));
                let created = node.runtime.create_pod(&sandbox_spec).context("create the pod's sandbox")?;
                if let Some(group) = fs_group(pod) {
                    for volume in spec.volumes.iter().flatten().filter(|v| v.empty_dir.is_some()) {
                        volumes::give_to_group(&created.dirs.data.join("volumes").join(&volume.name), group, true)?;
                    }
                }
                created
            }
        };
        if actual.record.spec.network == NetworkMode::Pod {
            // A sandbox keeps its address: looked up once (the leases are files to read).
            let known = self.address.as_ref().filter(|(sandbox, _)| *sandbox == actual.record.created_at);
            let address = match known {
                Some((_, address)) => *address,
                None => match node.network.address(&self.uid)? {
                    Some(address) => address,
                    None => {
                        let hosts = |ip| spec::hosts_file(pod, &settings, Some(ip));
                        sandbox::attach_network(&node.runtime, &node.network, &actual, &hosts)?
                    }
                },
            };
            self.address = Some((actual.record.created_at.clone(), address));
            self.known.pod_ip = Some(address.to_string());
        } else {
            self.known.pod_ip = Some(node.host_ip.clone());
        }
        self.known.sandbox_ready = true;
        let context = self.context(node);
        if let Some(deadline) = spec.active_deadline_seconds
            && let Some(start) = pod.status.as_ref().and_then(|s| s.start_time.as_ref())
        {
            let elapsed = SystemTime::now().duration_since(SystemTime::from(start.0)).unwrap_or_default();
            if elapsed >= Duration::from_secs(deadline.max(0) as u64) {
                if !self.known.deadline_exceeded {
                    outcome.events.push(warning(
                        "DeadlineExceeded",
                        "Pod was active on the node longer than the specified deadline",
                        None,
                    ));
                }
                self.known.deadline_exceeded = true;
                self.stop(node, Some(pod), &actual, grace_of(pod), outcome);
                self.observe(node, pod, &actual);
                return Ok(());
            }
            outcome.wake_in = Some(Duration::from_secs(deadline.max(0) as u64) - elapsed);
        }
        for volume in spec.volumes.iter().flatten().filter(|v| volumes::is_api_volume(v)) {
            let dir = actual.dirs.data.join("volumes").join(&volume.name);
            let written = volumes::payload(pod, volume, node.objects.as_ref(), &context).and_then(|payload| {
                // What this worker wrote last needs no look at the disk.
                if self.volumes.get(&volume.name) != Some(&payload) {
                    volumes::write_atomically(&dir, &payload)?;
                    if let Some(group) = fs_group(pod) {
                        volumes::give_to_group(&dir, group, false)?;
                    }
                    self.volumes.insert(volume.name.clone(), payload);
                }
                Ok(())
            });
            if let Err(e) = written {
                let message = format!("MountVolume.SetUp failed for volume {:?} : {e:#}", volume.name);
                outcome.events.push(warning("FailedMount", &message, None));
                self.observe(node, pod, &actual);
                outcome.wake_in = Some(Duration::from_secs(2));
                return Ok(());
            }
        }
        self.observe(node, pod, &actual);
        self.watch_exits(node, &actual);
        self.report_oom_kills(outcome);
        let acted = outcome.events.len();

        let running =
            Running { node, pod, actual: &actual, sandbox_spec: &sandbox_spec, settings: &settings, context: &context };
        let policy = spec.restart_policy.as_deref().unwrap_or("Always");
        // Init containers one after another, each to a zero exit; the app containers after.
        let mut initialized = true;
        for init in spec.init_containers.iter().flatten() {
            let field = format!("spec.initContainers{{{}}}", init.name);
            match self.known.containers.get(&init.name).map(|c| c.state.clone()) {
                Some(RunState::Exited(exit)) if exit.exit_code == 0 => continue,
                Some(RunState::Running { .. }) => {
                    initialized = false;
                    break;
                }
                Some(RunState::Exited(exit)) => {
                    if policy != "Never" {
                        self.restart(&running, init, &exit, &field, outcome);
                    }
                    initialized = false;
                    break;
                }
                None => {
                    self.start(&running, init, 0, &field, None, outcome);
                    initialized = false;
                    break;
                }
            }
        }
        for c in spec.containers.iter().filter(|_| initialized) {
            let field = format!("spec.containers{{{}}}", c.name);
            match self.known.containers.get(&c.name).map(|c| c.state.clone()) {
                Some(RunState::Running { started_at }) => self.probe(&running, c, &started_at, outcome),
                Some(RunState::Exited(exit)) => {
                    let again = match policy {
                        "Never" => false,
                        "OnFailure" => exit.exit_code != 0,
                        _ => true,
                    };
                    if again {
                        self.restart(&running, c, &exit, &field, outcome);
                    }
                }
                None => self.start(&running, c, 0, &field, None, outcome),
            }
        }
        // Ephemeral containers (`kubectl debug`), even while init containers run (to debug
        // them): each started once, never again, whatever its exit.
        for ephemeral in spec.ephemeral_containers.iter().flatten() {
            if self.known.containers.contains_key(&ephemeral.name) {
                continue;
            }
            let target = ephemeral.target_container_name.as_deref();
            if let Some(target) = target
                && !matches!(self.known.containers.get(target).map(|c| &c.state), Some(RunState::Running { .. }))
            {
                let message = format!("target container {target} is not running");
                self.known.waiting.insert(ephemeral.name.clone(), ("CreateContainerError".into(), message));
                wake(outcome, Duration::from_secs(2));
                continue;
            }
            let field = format!("spec.ephemeralContainers{{{}}}", ephemeral.name);
            let mut container = as_container(ephemeral);
            // Its termination message file would need a sandbox volume, which sandboxes get
            // for the containers they know when they are made.
            container.termination_message_path = Some(String::new());
            self.start(&running, &container, 0, &field, target, outcome);
        }
        // Every action says so in an event: without one, nothing changed since the look above.
        if outcome.events.len() > acted {
            self.observe(node, pod, &actual);
            self.watch_exits(node, &actual);
        }
        Ok(())
    }

    fn settings<'a>(&self, node: &'a NodeContext, pod: &Pod) -> NodeSettings<'a> {
        NodeSettings {
            log_dir: &node.log_dir,
            resolv_conf: spec::resolv_conf(
                pod,
                &node.host_resolv_conf,
                node.cluster_dns.as_deref(),
                &node.cluster_domain,
            ),
            pids_limit: None,
            cluster_domain: &node.cluster_domain,
        }
    }

    fn context(&self, node: &NodeContext) -> PodContext {
        let admission = node.admission.lock().expect("admission");
        PodContext {
            pod_ip: self.known.pod_ip.clone(),
            host_ip: Some(node.host_ip.clone()),
            node_cpu_millis: admission.cpu_millis,
            node_memory_bytes: admission.memory_bytes,
        }
    }

    /// Reads the containers' states from the runtime.
    fn observe(&mut self, node: &NodeContext, pod: &Pod, actual: &runtime::Pod) {
        let all: Vec<&Container> =
            pod.spec.iter().flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers)).collect();
        let exits: BTreeMap<String, ExitStatus> = actual.exits().into_iter().collect();
        let alive = actual.is_running();
        let mut containers = BTreeMap::new();
        for c in actual.containers() {
            let restart: u32 =
                c.log_path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()).unwrap_or(0);
            let state = match exits.get(&c.name) {
                Some(exit) => {
                    let mut exit = exit.clone();
                    if let Some(spec) = all.iter().find(|s| s.name == c.name) {
                        let message = termination_message(node, &self.uid, spec, &c.log_path, exit.exit_code);
                        if !message.is_empty() {
                            exit.message = Some(message);
                        }
                    }
                    RunState::Exited(exit)
                }
                None if alive => {
                    let process: Option<runtime::state::ContainerProcess> =
                        runtime::state::read_json(&actual.dirs.process_record(&c.name)).ok().flatten();
                    RunState::Running { started_at: process.map(|p| p.started_at).unwrap_or_default() }
                }
                // The pod init is gone: its containers with it.
                None => continue,
            };
            let image_id = node.images.image_id(&c.image);
            containers.insert(
                c.name.clone(),
                ContainerObserved {
                    restart_count: restart,
                    container_id: container_id(&self.uid, &c.name, restart),
                    image_id,
                    state,
                },
            );
        }
        self.known.containers = containers;
    }

    /// An event for each run of a container the kernel's OOM killer ended.
    fn report_oom_kills(&mut self, outcome: &mut Outcome) {
        for (name, c) in &self.known.containers {
            let RunState::Exited(exit) = &c.state else { continue };
            if exit.reason == "OOMKilled" && self.oom_reported.insert((name.clone(), exit.finished_at.clone())) {
                let message = format!("Memory cgroup out of memory: the kernel killed container {name}");
                outcome.events.push(warning("OOMKilling", &message, Some(&format!("spec.containers{{{name}}}"))));
            }
        }
    }

    /// A thread per running container waits for its exit and wakes the worker.
    fn watch_exits(&mut self, node: &NodeContext, actual: &runtime::Pod) {
        // Runs that ended have no waiter left: only the current ones are kept.
        let containers = &self.known.containers;
        self.waiters.retain(|(name, run)| {
            matches!(containers.get(name).map(|c| &c.state), Some(RunState::Running { started_at }) if started_at == run)
        });
        for (name, c) in &self.known.containers {
            let RunState::Running { started_at } = &c.state else { continue };
            let key = (name.clone(), started_at.clone());
            if !self.waiters.insert(key) {
                continue;
            }
            let (runtime, pod, name, notify) =
                (node.runtime.clone(), actual.clone(), name.clone(), self.notify.clone());
            let spawned =
                std::thread::Builder::new().name("exit-waiter".into()).stack_size(64 * 1024).spawn(move || {
                    let _ = runtime.wait_container(&pod, &name, None);
                    notify.notify_one();
                });
            if let Err(e) = spawned {
                tracing::warn!("pod {}: watch container {}: {e}", self.uid, c.container_id);
            }
        }
    }

    /// Restarts an exited container unless it is in back-off (kubelet's doBackOff).
    fn restart(&mut self, running: &Running, c: &Container, exit: &ExitStatus, field: &str, outcome: &mut Outcome) {
        let pod = running.pod;
        let now = Instant::now();
        let finished_ago = since(&exit.finished_at);
        let entry = self.backoff.get(&c.name).copied();
        if let Some(backoff) = entry
            && finished_ago < backoff.delay
        {
            let name = format!(
                "{}_{}({})",
                pod.metadata.name.as_deref().unwrap_or(""),
                pod.metadata.namespace.as_deref().unwrap_or("default"),
                self.uid
            );
            let message =
                format!("back-off {}s restarting failed container={} pod={name}", backoff.delay.as_secs(), c.name);
            if self.known.waiting.get(&c.name).map(|w| w.0.as_str()) != Some("CrashLoopBackOff") {
                outcome.events.push(warning(
                    "BackOff",
                    &format!("Back-off restarting failed container {} in pod {name}", c.name),
                    Some(field),
                ));
            }
            self.known.waiting.insert(c.name.clone(), ("CrashLoopBackOff".into(), message));
            self.known.last_state.insert(
                c.name.clone(),
                status::terminated(exit, &container_id(&self.uid, &c.name, self.restart_count(&c.name))),
            );
            wake(outcome, backoff.delay - finished_ago);
            return;
        }
        self.backoff.insert(c.name.clone(), Backoff::next(entry, now));
        let restart = self.restart_count(&c.name) + 1;
        self.known
            .last_state
            .insert(c.name.clone(), status::terminated(exit, &container_id(&self.uid, &c.name, restart - 1)));
        self.start(running, c, restart, field, None, outcome);
    }

    fn restart_count(&self, name: &str) -> u32 {
        self.known.containers.get(name).map_or(0, |c| c.restart_count)
    }

    /// Pulls the image as its policy says, plans and starts the container (in the PID
    /// namespace of container `target`, if given), runs its postStart hook.
    fn start(
        &mut self,
        running: &Running,
        c: &Container,
        restart: u32,
        field: &str,
        target: Option<&str>,
        outcome: &mut Outcome,
    ) {
        let Running { node, pod, actual, sandbox_spec, settings, context } = *running;
        let Some(image) = self.image(node, pod, c, field, outcome) else { return };
        let mut container =
            match spec::container_spec(pod, sandbox_spec, c, settings, node.objects.as_ref(), context, image) {
                Ok(container) => container,
                Err(e) => {
                    let message = format!("{e:#}");
                    outcome.events.push(warning("Failed", &format!("Error: {message}"), Some(field)));
                    self.known.waiting.insert(c.name.clone(), ("CreateContainerConfigError".into(), message));
                    wake(outcome, Duration::from_secs(2));
                    return;
                }
            };
        container.log_path.set_file_name(format!("{restart}.log"));
        container.target = target.map(String::from);
        // The termination message file, empty for this run, bind-mounted where the
        // container writes it (kubelet's terminationMessagePath; 0666: any user may).
        let message_path = c.termination_message_path.as_deref().unwrap_or("/dev/termination-log");
        if !message_path.is_empty() {
            let file = termination_file(node, &self.uid, &c.name);
            let made = file.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
                std::fs::File::create(&file)?;
                std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            });
            match made {
                Ok(()) => container.mounts.push(runtime::Mount {
                    volume: termination_volume(&c.name),
                    destination: message_path.to_string(),
                    read_only: false,
                }),
                Err(e) => tracing::warn!("pod {}: termination message file of {}: {e}", self.uid, c.name),
            }
        }
        match node.runtime.start_container(actual, &container) {
            Ok(_) => {
                self.known.waiting.remove(&c.name);
                outcome.events.push(normal("Created", &format!("Created container: {}", c.name), Some(field)));
                outcome.events.push(normal("Started", &format!("Started container {}", c.name), Some(field)));
                if let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref())
                    && let Some(action) = handler_action(handler)
                {
                    let target = Target { runtime: &node.runtime, pod: actual, container: c, pod_ip: self.pod_ip() };
                    if let Err(message) = probes::run(&action, &target, grace_of(pod)) {
                        outcome.events.push(warning(
                            "FailedPostStartHook",
                            &format!("PostStartHook failed: {message}"),
                            Some(field),
                        ));
                        let _ = stop_container(&node.runtime, actual, &c.name, grace_of(pod));
                    }
                }
            }
            Err(e) => {
                let message = e.to_string();
                outcome.events.push(warning("Failed", &format!("Error: {message}"), Some(field)));
                // The runtime recorded the failed start as an exit: it is restarted with back-off.
                self.known.waiting.remove(&c.name);
            }
        }
        self.probes.retain(|(name, _), _| *name != c.name);
    }

    /// The container's image, ready; `None` with the container waiting when it is not.
    fn image(
        &mut self,
        node: &NodeContext,
        pod: &Pod,
        c: &Container,
        field: &str,
        outcome: &mut Outcome,
    ) -> Option<ResolvedImage> {
        let reference = c.image.clone().unwrap_or_default();
        let policy = pull_policy(&reference, c.image_pull_policy.as_deref());
        if let Some((_, until)) = self.image_backoff.get(&reference)
            && Instant::now() < *until
        {
            let message = format!("Back-off pulling image {reference:?}");
            if self.known.waiting.get(&c.name).map(|w| w.0.as_str()) != Some("ImagePullBackOff") {
                outcome.events.push(normal("BackOff", &message, Some(field)));
            }
            self.known.waiting.insert(c.name.clone(), ("ImagePullBackOff".into(), message));
            wake(outcome, *until - Instant::now());
            return None;
        }
        let present = node.images.store.resolve(&reference).is_ok();
        let pulling = policy == "Always" || (policy == "IfNotPresent" && !present);
        if pulling {
            outcome.events.push(normal("Pulling", &format!("Pulling image {reference:?}"), Some(field)));
        }
        let started = Instant::now();
        let credentials = self.pull_credentials(node, pod);
        match node.images.ensure(&reference, &policy, &credentials) {
            Ok(ensured) => {
                self.image_backoff.remove(&reference);
                let message = if ensured.pulled {
                    format!("Successfully pulled image {reference:?} in {}ms", started.elapsed().as_millis())
                } else {
                    format!("Container image {reference:?} already present on machine")
                };
                outcome.events.push(normal("Pulled", &message, Some(field)));
                match node.images.store.lower_dirs(&ensured.image) {
                    Ok(lower_dirs) => Some(ResolvedImage { image: ensured.image, lower_dirs }),
                    Err(e) => {
                        self.known.waiting.insert(c.name.clone(), ("CreateContainerError".into(), e.to_string()));
                        wake(outcome, Duration::from_secs(2));
                        None
                    }
                }
            }
            Err(e) => {
                outcome.events.push(warning(
                    "Failed",
                    &format!("Failed to pull image {reference:?}: {}", e.message()),
                    Some(field),
                ));
                outcome.events.push(warning("Failed", &format!("Error: {}", e.reason()), Some(field)));
                self.known.waiting.insert(c.name.clone(), (e.reason().into(), e.message().into()));
                if let ImageError::Pull(_) = e {
                    let previous = self.image_backoff.get(&reference).map(|(b, _)| *b);
                    let backoff = Backoff::next(previous, Instant::now());
                    self.image_backoff.insert(reference, (backoff, Instant::now() + backoff.delay));
                    wake(outcome, backoff.delay);
                } else {
                    wake(outcome, Duration::from_secs(10));
                }
                None
            }
        }
    }

    /// The pod's imagePullSecrets (kubernetes.io/dockerconfigjson), in order.
    fn pull_credentials(&self, node: &NodeContext, pod: &Pod) -> images::RegistryCredentials {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut credentials = images::RegistryCredentials::default();
        for reference in pod.spec.as_ref().and_then(|s| s.image_pull_secrets.as_ref()).into_iter().flatten() {
            let secret = node.objects.secret(namespace, &reference.name).ok().flatten();
            let data = secret.as_ref().and_then(|s| s.data.as_ref());
            let config = data.and_then(|d| d.get(".dockerconfigjson").or_else(|| d.get(".dockercfg")));
            let source = PathBuf::from(format!("secret {namespace}/{}", reference.name));
            match config.map(|c| images::RegistryCredentials::parse(&c.0, &source)) {
                Some(Ok(found)) => credentials.merge(found),
                Some(Err(e)) => tracing::warn!("{e}"),
                None => {}
            }
        }
        credentials
    }

    fn pod_ip(&self) -> Option<IpAddr> {
        self.known.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
    }

    /// Runs the running container's due probes and acts on their results.
    fn probe(&mut self, running: &Running, c: &Container, run: &str, outcome: &mut Outcome) {
        let field = format!("spec.containers{{{}}}", c.name);
        let started = match &c.startup_probe {
            None => true,
            Some(_) => self.known.started.get(&c.name).copied().unwrap_or(false),
        };
        if !started && let Some(probe) = &c.startup_probe {
            match self.run_probe(running, c, run, ProbeKind::Startup, probe, outcome) {
                Some(true) => {
                    self.known.started.insert(c.name.clone(), true);
                }
                Some(false) => {
                    self.kill_unhealthy(running, c, "failed startup probe", &field, outcome);
                    return;
                }
                None => return,
            }
        } else if c.startup_probe.is_none() {
            self.known.started.insert(c.name.clone(), true);
        }
        if let Some(probe) = &c.liveness_probe
            && self.run_probe(running, c, run, ProbeKind::Liveness, probe, outcome) == Some(false)
        {
            self.kill_unhealthy(running, c, "failed liveness probe", &field, outcome);
            return;
        }
        if let Some(probe) = &c.readiness_probe
            && let Some(ready) = self.run_probe(running, c, run, ProbeKind::Readiness, probe, outcome)
        {
            self.known.ready.insert(c.name.clone(), ready);
        }
    }

    /// Runs a probe if it is due; `Some` once its thresholds decide (true: success).
    fn run_probe(
        &mut self,
        running: &Running,
        c: &Container,
        run: &str,
        kind: ProbeKind,
        probe: &Probe,
        outcome: &mut Outcome,
    ) -> Option<bool> {
        let (node, actual) = (running.node, running.actual);
        let key = (c.name.clone(), kind);
        let now = Instant::now();
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        let state = self.probes.entry(key.clone()).or_insert_with(|| {
            let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
            let next = now + delay.saturating_sub(since(run));
            ProbeState { run: run.to_string(), next, successes: 0, failures: 0 }
        });
        if state.run != run {
            *state = ProbeState { run: run.to_string(), next: now, successes: 0, failures: 0 };
        }
        if now < state.next {
            wake(outcome, state.next - now);
            return None;
        }
        let action = probe_action(probe)?;
        let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
        let target = Target { runtime: &node.runtime, pod: actual, container: c, pod_ip: self.pod_ip() };
        let result = probes::run(&action, &target, timeout);
        node.metrics.probed(kind.name(), result.is_ok());
        let state = self.probes.get_mut(&key).expect("probe state");
        state.next = Instant::now() + period;
        wake(outcome, period);
        match result {
            Ok(()) => {
                state.failures = 0;
                state.successes += 1;
                (state.successes >= probe.success_threshold.unwrap_or(1).max(1)).then_some(true)
            }
            Err(message) => {
                state.successes = 0;
                state.failures += 1;
                let field = format!("spec.containers{{{}}}", c.name);
                outcome.events.push(warning(
                    "Unhealthy",
                    &format!("{} probe failed: {message}", kind.name()),
                    Some(&field),
                ));
                (state.failures >= probe.failure_threshold.unwrap_or(3).max(1)).then_some(false)
            }
        }
    }

    fn kill_unhealthy(&mut self, running: &Running, c: &Container, why: &str, field: &str, outcome: &mut Outcome) {
        let Running { node, pod, actual, .. } = *running;
        outcome.events.push(normal("Killing", &format!("Container {} {why}, will be restarted", c.name), Some(field)));
        self.probes.retain(|(name, _), _| *name != c.name);
        self.known.ready.remove(&c.name);
        self.known.started.remove(&c.name);
        let grace = c
            .liveness_probe
            .as_ref()
            .and_then(|p| p.termination_grace_period_seconds)
            .map_or_else(|| grace_of(pod), |s| Duration::from_secs(s.max(0) as u64));
        self.pre_stop(node, actual, c, grace);
        if let Err(e) = stop_container(&node.runtime, actual, &c.name, grace) {
            tracing::warn!("pod {}: stop {}: {e}", self.uid, c.name);
        }
        wake(outcome, Duration::ZERO);
    }

    fn pre_stop(&self, node: &NodeContext, actual: &runtime::Pod, c: &Container, grace: Duration) {
        if let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
            && let Some(action) = handler_action(handler)
        {
            let target = Target { runtime: &node.runtime, pod: actual, container: c, pod_ip: self.pod_ip() };
            if let Err(message) = probes::run(&action, &target, grace) {
                tracing::warn!("pod {}: container {}: PreStopHook failed: {message}", self.uid, c.name);
            }
        }
    }

    /// Stops the running containers: preStop hooks, then SIGTERM, then SIGKILL at the end
    /// of the grace period (kubelet's killContainer, for all containers at once).
    fn stop(
        &mut self,
        node: &NodeContext,
        pod: Option<&Pod>,
        actual: &runtime::Pod,
        grace: Duration,
        outcome: &mut Outcome,
    ) {
        let running = actual.running_containers();
        if running.is_empty() {
            return;
        }
        let deadline = Instant::now() + grace;
        if let Some(spec) = pod.and_then(|p| p.spec.as_ref()) {
            let all: Vec<&Container> = spec.init_containers.iter().flatten().chain(&spec.containers).collect();
            std::thread::scope(|scope| {
                for c in all.iter().filter(|c| running.contains(&c.name)) {
                    outcome.events.push(normal(
                        "Killing",
                        &format!("Stopping container {}", c.name),
                        Some(&format!("spec.containers{{{}}}", c.name)),
                    ));
                    scope.spawn(|| self.pre_stop(node, actual, c, grace));
                }
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = node.runtime.stop_pod(actual, &running, left) {
            tracing::warn!("pod {}: stop: {e}", self.uid);
        }
    }
}

/// An ephemeral container as the container it runs as (kubelet's
/// ephemeralContainerToContainer): the same fields, but its target's name.
pub fn as_container(ephemeral: &EphemeralContainer) -> Container {
    let mut fields = serde_json::to_value(ephemeral).expect("a container serializes");
    if let Some(fields) = fields.as_object_mut() {
        fields.remove("targetContainerName");
    }
    serde_json::from_value(fields).expect("an ephemeral container's fields are a container's")
}

/// The pod's fsGroup, which owns its volumes.
fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec.as_ref()?.security_context.as_ref()?.fs_group.and_then(|g| u32::try_from(g).ok())
}

/// kubelet's limits: a termination message file is read up to 4 KiB; a message from the
/// log (FallbackToLogsOnError) is its last 80 lines, at most 2 KiB.
const MAX_MESSAGE: usize = 4096;
const FALLBACK_LINES: usize = 80;
const FALLBACK_BYTES: usize = 2048;

/// The pod volume holding a container's termination message file (a name no pod volume
/// can have: they are DNS labels).
fn termination_volume(container: &str) -> String {
    format!("..termination/{container}")
}

fn termination_file(node: &NodeContext, uid: &str, container: &str) -> PathBuf {
    runtime::PodDirs::new(&node.runtime.run_dir, &node.runtime.data_dir, uid).data.join("termination").join(container)
}

/// What an exited container left as its message: its termination message file, else (with
/// FallbackToLogsOnError, after a failure) the end of its log.
fn termination_message(node: &NodeContext, uid: &str, c: &Container, log: &std::path::Path, exit_code: i32) -> String {
    use std::io::Read;
    let mut message = Vec::new();
    if let Ok(file) = std::fs::File::open(termination_file(node, uid, &c.name)) {
        let _ = file.take(MAX_MESSAGE as u64).read_to_end(&mut message);
    }
    if message.is_empty() && exit_code != 0 && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
    {
        let mut lines: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
        let mut current = Vec::new();
        let _ = runtime::logs::LogTail::new(log).read_new(|record| {
            current.extend_from_slice(record.content);
            if record.full {
                lines.push_back(std::mem::take(&mut current));
                if lines.len() > FALLBACK_LINES {
                    lines.pop_front();
                }
            }
            Ok(())
        });
        let text: Vec<u8> = lines
            .into_iter()
            .flat_map(|mut l| {
                l.push(b'\n');
                l
            })
            .collect();
        message = text[text.len().saturating_sub(FALLBACK_BYTES)..].to_vec();
    }
    String::from_utf8_lossy(&message).into_owned()
}

fn stop_container(runtime: &Runtime, pod: &runtime::Pod, name: &str, grace: Duration) -> runtime::Result<()> {
    runtime.stop_pod(pod, &[name.to_string()], grace)
}

fn grace_of(pod: &Pod) -> Duration {
    let seconds = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(DEFAULT_GRACE);
    Duration::from_secs(seconds.max(0) as u64)
}

fn wake(outcome: &mut Outcome, after: Duration) {
    outcome.wake_in = Some(outcome.wake_in.map_or(after, |w| w.min(after)));
}

fn probe_action(probe: &Probe) -> Option<Action<'_>> {
    if let Some(exec) = &probe.exec {
        Some(Action::Exec(exec))
    } else if let Some(http) = &probe.http_get {
        Some(Action::Http(http))
    } else {
        probe.tcp_socket.as_ref().map(Action::Tcp)
    }
}

fn handler_action(handler: &k8s_openapi::api::core::v1::LifecycleHandler) -> Option<Action<'_>> {
    if let Some(exec) = &handler.exec {
        Some(Action::Exec(exec))
    } else if let Some(http) = &handler.http_get {
        Some(Action::Http(http))
    } else if let Some(sleep) = &handler.sleep {
        Some(Action::Sleep(sleep.seconds))
    } else {
        handler.tcp_socket.as_ref().map(Action::Tcp)
    }
}

fn normal(reason: &str, message: &str, field_path: Option<&str>) -> Event {
    Event { field_path: field_path.map(String::from), ..Event::normal(reason, message) }
}

fn warning(reason: &str, message: &str, field_path: Option<&str>) -> Event {
    Event { field_path: field_path.map(String::from), ..Event::warning(reason, message) }
}
