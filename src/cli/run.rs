//! `podctl run`: one pod on this host, no API server. The flags make a v1 Pod as
//! `kubectl run` would (or `-f` reads one); it then goes the way a node runs any pod:
//! init containers in order, each to completion, then the app containers. In the
//! foreground it streams their output and exits with the first failing container's exit
//! code (0 if none failed); SIGINT and SIGTERM stop the pod gracefully.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use images::Store;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HostPathVolumeSource, Pod, PodSecurityContext, PodSpec as K8sPodSpec,
    ResourceRequirements, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use runtime::{ContainerSpec, NetworkMode, Runtime};

use super::pods::LogFollower;
use super::terminal::Relay;
use super::{NodeOptions, require_root};
use crate::kubelet::env::{NoApiServer, PodContext};
use crate::kubelet::sandbox;
use crate::kubelet::spec::{self, NodeSettings, ResolvedImage};

#[derive(Args)]
pub struct RunArgs {
    /// Run the v1 Pod in this YAML or JSON file (several containers, init containers,
    /// emptyDir and hostPath volumes) instead of one IMAGE
    #[arg(short = 'f', long = "file", value_name = "POD.yaml", conflicts_with = "image")]
    file: Option<PathBuf>,
    /// Pod name (default: the image's name and a random suffix)
    #[arg(long)]
    name: Option<String>,
    /// Remove the pod when it exits
    #[arg(long, conflicts_with = "restart")]
    rm: bool,
    /// Start the containers again when they exit: no, on-failure[:MAX_RETRIES] or always
    /// (with -d: a process of podctl's own keeps them up, with kubelet's back-off; `stop`
    /// ends it)
    #[arg(long, value_name = "POLICY", value_parser = parse_restart)]
    restart: Option<runtime::Restart>,
    /// Run in the background and print the pod's name
    #[arg(short, long)]
    detach: bool,
    /// Pass our stdin to the container (its end-of-file closes the container's stdin)
    #[arg(short, long)]
    interactive: bool,
    /// Give the container a terminal (made inside it); with -i, ours is relayed to it in
    /// raw mode
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass this one's)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Network: pod (an address on the node's bridge; the default unless the pod asks for
    /// hostNetwork), host (the node's own), none (loopback only)
    #[arg(long, value_name = "MODE", value_parser = ["pod", "host", "none"])]
    net: Option<String>,
    /// Forward a port of this host to the container (a hostPort):
    /// [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp|sctp]; may be repeated
    #[arg(short = 'p', long = "publish", value_name = "[IP:]PORT:PORT[/PROTO]", value_parser = parse_publish, conflicts_with = "file")]
    publish: Vec<ContainerPort>,
    /// User and group: UID[:GID] or NAME[:GROUP] from the image's /etc/passwd and /etc/group
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// Bind-mount a host directory: HOSTDIR:CTRDIR[:ro]
    #[arg(short, long = "volume", value_name = "HOSTDIR:CTRDIR[:ro]")]
    volumes: Vec<String>,
    /// All capabilities, no seccomp, the host's /dev, writable /sys
    #[arg(long)]
    privileged: bool,
    /// Give the containers a device of the node: HOSTPATH[:CTRPATH][:rwm] (read, write,
    /// mknod; all three by default); every other device but the defaults is refused them
    #[arg(long = "device", value_name = "HOSTPATH[:CTRPATH][:rwm]", value_parser = parse_device)]
    devices: Vec<runtime::Device>,
    /// Mount the container's root filesystem read-only
    #[arg(long)]
    read_only: bool,
    /// Memory limit, as a Kubernetes quantity (64Mi, 1Gi, 500M)
    #[arg(short, long, value_name = "SIZE", value_parser = spec::parse_bytes)]
    memory: Option<u64>,
    /// CPU limit: cores as a decimal (0.5) or millicores (500m)
    #[arg(long, value_name = "N", value_parser = spec::parse_millicores)]
    cpus: Option<u64>,
    /// Most processes (and threads) each container may have
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pids_limit: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when stopping
    #[arg(long, default_value_t = 30)]
    grace_period: u64,
    /// When to pull the image from its registry: when it is not in the store (missing),
    /// before every run (always), or never
    #[arg(long, value_name = "POLICY", default_value = "missing", value_parser = ["missing", "always", "never"])]
    pull: String,
    /// Pull over plain HTTP (a registry on loopback without TLS)
    #[arg(long)]
    insecure: bool,
    /// Image: a name in the local store, or a path `podctl image import` accepts
    #[arg(required_unless_present = "file")]
    image: Option<String>,
    /// Command and arguments (replace the image's Cmd; its Entrypoint stays), after the
    /// image (everything after it is the command's) or after `--`
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// How many times SIGINT or SIGTERM came: once stops the pod gracefully, twice kills it.
static STOP_REQUESTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn request_stop(_: libc::c_int) {
    STOP_REQUESTS.fetch_add(1, Ordering::SeqCst);
}

impl RunArgs {
    pub fn run(self, opts: &NodeOptions) -> Result<ExitCode> {
        require_root("podctl run")?;
        super::terminal::require_terminal(self.interactive && self.tty)?;
        // From here on SIGINT and SIGTERM stop the pod rather than abandon it half-made.
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler only adds to an atomic.
            unsafe { libc::signal(signal, request_stop as *const () as libc::sighandler_t) };
        }
        let store = Store::open(&opts.data_dir)?;
        let uid = random_uid();
        let mut pod = match &self.file {
            Some(path) => refuse_unrun(read_pod(path)?, path)?,
            None => self.pod_from_flags(&uid, &store)?,
        };
        if let Some(name) = &self.name {
            pod.metadata.name = Some(name.clone());
        }
        let name = validate_name(pod.metadata.name.as_deref().unwrap_or_default())?;
        let runtime = opts.runtime()?;
        if runtime.pods()?.iter().any(|p| p.record.spec.origin == runtime::Origin::Run && p.name() == name) {
            bail!("a pod named {name} already exists (podctl rm {name})");
        }
        let node = NodeSettings {
            log_dir: &opts.log_dir,
            resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            pids_limit: self.pids_limit,
            cluster_domain: "cluster.local",
        };
        let context = PodContext::default();
        let mut plan = spec::plan(&pod, &uid, &node, &NoApiServer, &context, &mut |reference| {
            resolve_image(&store, reference, &self.pull, self.insecure)
        })?;
        // A terminal relayed from ours starts with its size.
        let window = std::io::stdin().is_terminal().then(|| runtime::WindowSize::of(libc::STDIN_FILENO)).flatten();
        for container in plan.init_containers.iter_mut().chain(&mut plan.containers) {
            container.devices = self.devices.clone();
            if container.tty && container.stdin {
                container.window = window;
            }
        }
        match self.net.as_deref() {
            Some("host") => plan.pod.network = NetworkMode::Host,
            Some("none") => plan.pod.network = NetworkMode::None,
            Some("pod") => plan.pod.network = NetworkMode::Pod,
            _ => {}
        }
        let manifest_policy = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
        plan.pod.restart = match (self.restart, manifest_policy) {
            (Some(restart), _) => restart,
            (None, Some("Always")) => runtime::Restart::Always,
            (None, Some("OnFailure")) => runtime::Restart::OnFailure { max_retries: None },
            _ => runtime::Restart::No,
        };
        if plan.pod.restart != runtime::Restart::No && !self.detach {
            bail!("a restart policy keeps the pod up in the background, by a process of podctl's own: add -d");
        }
        if plan.pod.restart != runtime::Restart::No && self.rm {
            bail!("--rm removes the pod when its containers exit, its restart policy starts them again: choose one");
        }
        if !self.publish.is_empty() && plan.pod.network != NetworkMode::Pod {
            bail!("-p forwards a port of the host to the pod's address: it needs the pod network (--net pod)");
        }
        let sandbox = runtime.create_pod(&plan.pod)?;
        if plan.pod.network == NetworkMode::Pod
            && let Err(e) = sandbox::attach_network(&runtime, &opts.network(), &sandbox, &|ip| {
                spec::hosts_file(&pod, &node, Some(ip))
            })
        {
            sandbox::remove(&runtime, &opts.network(), &sandbox, &opts.log_dir)?;
            let _ = super::pods::in_background(opts, "__sweep", None);
            return Err(e);
        }
        let code = self.run_containers(&runtime, &sandbox, &plan)?;
        if self.detach {
            if self.rm {
                super::pods::in_background(opts, "__cleanup", Some(sandbox.uid()))?;
            }
            if plan.pod.restart != runtime::Restart::No {
                super::pods::in_background(opts, "__supervise", Some(sandbox.uid()))?;
            }
            println!("{name}");
            return Ok(ExitCode::SUCCESS);
        }
        if self.rm {
            sandbox::remove(&runtime, &opts.network(), &sandbox, &opts.log_dir)?;
            super::pods::in_background(opts, "__sweep", None)?;
        }
        Ok(ExitCode::from(code.clamp(0, 255) as u8))
    }

    /// Init containers one after another, each to a zero exit, then the app containers;
    /// in the foreground, until they have all exited. Returns the exit code to report.
    fn run_containers(&self, runtime: &Runtime, pod: &runtime::Pod, plan: &spec::PodPlan) -> Result<i32> {
        for init in &plan.init_containers {
            let mut logs = (!self.detach).then(|| LogFollower::new(&init.log_path));
            let code = match runtime.start_container(pod, init) {
                Ok(_) => {
                    let _terminal =
                        if self.detach { None } else { attach_stdin(runtime, pod, std::slice::from_ref(init))? };
                    self.follow(runtime, pod, std::slice::from_ref(init), logs.as_mut().map(std::slice::from_mut))?
                }
                Err(e) => start_failure(runtime, pod, init, e),
            };
            if code != 0 {
                eprintln!("podctl: init container {} exited with {code}", init.name);
                return Ok(code);
            }
        }
        let mut code = 0;
        let mut started = Vec::new();
        for container in &plan.containers {
            match runtime.start_container(pod, container) {
                Ok(_) => started.push(container.clone()),
                Err(e) => {
                    let failed = start_failure(runtime, pod, container, e);
                    if code == 0 {
                        code = failed;
                    }
                }
            }
        }
        if self.detach {
            if code != 0 {
                bail!("pod {} did not start", pod.name());
            }
            return Ok(0);
        }
        let _terminal = attach_stdin(runtime, pod, &started)?;
        let mut logs: Vec<LogFollower> = started.iter().map(|c| LogFollower::new(&c.log_path)).collect();
        let exited = self.follow(runtime, pod, &started, Some(&mut logs))?;
        Ok(if code != 0 { code } else { exited })
    }

    /// Prints the containers' logs until they have all exited; stops them on SIGINT or
    /// SIGTERM. Returns the first non-zero exit code, in container order, or 0.
    fn follow(
        &self,
        runtime: &Runtime,
        pod: &runtime::Pod,
        containers: &[ContainerSpec],
        mut logs: Option<&mut [LogFollower]>,
    ) -> Result<i32> {
        if containers.is_empty() {
            return Ok(0);
        }
        let (done_tx, done) = mpsc::channel();
        for (i, container) in containers.iter().enumerate() {
            let (runtime, pod, name, done_tx) = (runtime.clone(), pod.clone(), container.name.clone(), done_tx.clone());
            std::thread::spawn(move || {
                let _ = done_tx.send((i, runtime.wait_container(&pod, &name, None)));
            });
        }
        let mut codes: Vec<Option<i32>> = vec![None; containers.len()];
        let (mut stopping, mut killing) = (false, false);
        while codes.iter().any(Option::is_none) {
            match done.recv_timeout(Duration::from_millis(20)) {
                Ok((i, status)) => {
                    let status = status?.context("the container's exit was not recorded")?;
                    codes[i] = Some(status.exit_code);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("lost the wait for the containers"),
            }
            for log in logs.iter_mut().flat_map(|l| l.iter_mut()) {
                log.print_new()?;
            }
            let requests = STOP_REQUESTS.load(Ordering::SeqCst);
            if requests >= 1 && !stopping {
                stopping = true;
                eprintln!(
                    "podctl: stopping {} (SIGKILL after {} s; Ctrl-C again to kill it now)",
                    pod.name(),
                    self.grace_period
                );
                let (runtime, pod, grace) = (runtime.clone(), pod.clone(), Duration::from_secs(self.grace_period));
                let names: Vec<String> = containers.iter().map(|c| c.name.clone()).collect();
                std::thread::spawn(move || runtime.stop_pod(&pod, &names, grace));
            }
            if requests >= 2 && !killing {
                killing = true;
                eprintln!("podctl: killing {}", pod.name());
                for (container, code) in containers.iter().zip(&codes) {
                    if code.is_none() {
                        let _ = runtime.kill_container(pod, &container.name, libc::SIGKILL);
                    }
                }
            }
        }
        Ok(codes.into_iter().flatten().find(|c| *c != 0).unwrap_or(0))
    }

    /// The Pod `kubectl run NAME --image IMAGE -- ARGS` would make, with these flags.
    fn pod_from_flags(&self, uid: &str, store: &Store) -> Result<Pod> {
        let reference = self.image.clone().context("an IMAGE or -f POD.yaml is required")?;
        let resolved = resolve_image(store, &reference, &self.pull, self.insecure)?;
        // A path was imported: from now on the image goes by its name (or ID).
        let image = match store.resolve(&reference) {
            Ok(_) => reference,
            Err(_) => resolved.image.names.first().cloned().unwrap_or_else(|| resolved.image.id.to_string()),
        };
        let name = match &self.name {
            Some(name) => name.clone(),
            None => format!("{}-{}", image_base_name(&image), &uid[..6]),
        };
        let mut volumes = Vec::new();
        let mut mounts = Vec::new();
        for (i, v) in self.volumes.iter().enumerate() {
            let (host, target, read_only) = parse_volume(v)?;
            let volume = format!("volume-{i}");
            volumes.push(Volume {
                name: volume.clone(),
                host_path: Some(HostPathVolumeSource { path: host, type_: None }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: volume,
                mount_path: target,
                read_only: Some(read_only),
                ..Default::default()
            });
        }
        // Names need the image's /etc/passwd: resolved here, as docker does for --user.
        let (run_as_user, run_as_group) = match &self.user {
            Some(user) => {
                let user = spec::resolve_user(user, &resolved.lower_dirs)?;
                (Some(i64::from(user.uid)), Some(i64::from(user.gid)))
            }
            None => (None, None),
        };
        let mut limits = BTreeMap::new();
        if let Some(m) = self.memory {
            limits.insert("memory".to_string(), Quantity(m.to_string()));
        }
        if let Some(c) = self.cpus {
            limits.insert("cpu".to_string(), Quantity(format!("{c}m")));
        }
        // Flags mean what they say, as with docker: `$` is escaped so that Kubernetes'
        // `$(VAR)` expansion gives it back unchanged.
        let verbatim = |s: &str| s.replace('$', "$$");
        let env = self
            .env
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => EnvVar { name: k.into(), value: Some(verbatim(v)), value_from: None },
                None => {
                    EnvVar { name: e.clone(), value: std::env::var(e).ok().map(|v| verbatim(&v)), value_from: None }
                }
            })
            .collect::<Vec<_>>();
        // A terminal of the type ours is (the pod's default is xterm).
        let mut env = env;
        if self.tty
            && !env.iter().any(|e| e.name == "TERM")
            && let Some(term) = std::env::var("TERM").ok().filter(|t| !t.is_empty())
        {
            env.push(EnvVar { name: "TERM".into(), value: Some(verbatim(&term)), value_from: None });
        }
        let container = Container {
            name: name.clone(),
            image: Some(image),
            args: (!self.command.is_empty()).then(|| self.command.iter().map(|a| verbatim(a)).collect()),
            env: (!env.is_empty()).then_some(env),
            working_dir: self.workdir.clone(),
            stdin: self.interactive.then_some(true),
            stdin_once: self.interactive.then_some(true),
            tty: self.tty.then_some(true),
            volume_mounts: (!mounts.is_empty()).then_some(mounts),
            ports: (!self.publish.is_empty()).then(|| self.publish.clone()),
            resources: (!limits.is_empty())
                .then(|| ResourceRequirements { limits: Some(limits), ..Default::default() }),
            security_context: Some(SecurityContext {
                privileged: self.privileged.then_some(true),
                read_only_root_filesystem: self.read_only.then_some(true),
                run_as_user,
                run_as_group,
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(Pod {
            metadata: ObjectMeta { name: Some(name), ..Default::default() },
            spec: Some(K8sPodSpec {
                containers: vec![container],
                volumes: (!volumes.is_empty()).then_some(volumes),
                host_network: (self.net.as_deref() == Some("host")).then_some(true),
                restart_policy: Some("Never".into()),
                security_context: None::<PodSecurityContext>,
                ..Default::default()
            }),
            status: None,
        })
    }
}

/// Gives our stdin to the first of `containers` that takes one, in the background. To a
/// container's terminal, our own terminal goes in raw mode (keys as typed: ^C reaches the
/// container) with its window size, followed as it changes; the returned guard ends that.
fn attach_stdin(runtime: &Runtime, pod: &runtime::Pod, containers: &[ContainerSpec]) -> Result<Option<Relay>> {
    let mut relay = None;
    if let Some(container) = containers.iter().find(|c| c.stdin) {
        let input = runtime.attach_stdin(pod, &container.name)?;
        let stdin = std::io::stdin();
        if container.tty && stdin.is_terminal() {
            relay = Some(Relay::start(stdin.as_raw_fd(), input.try_clone()?)?);
        }
        let mut input = std::fs::File::from(input);
        // Ends at our end-of-file (closing the container's stdin) or when it stops reading.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut input);
        });
    }
    Ok(relay)
}

fn start_failure(runtime: &Runtime, pod: &runtime::Pod, container: &ContainerSpec, e: runtime::Error) -> i32 {
    let status = runtime.wait_container(pod, &container.name, Some(Duration::from_secs(1))).ok().flatten();
    eprintln!("podctl: {e}");
    status.map_or(125, |s| s.exit_code)
}

/// A v1 Pod from a YAML or JSON file.
fn read_pod(path: &Path) -> Result<Pod> {
    let mut objects = super::manifest::read_objects(path)?;
    if objects.len() != 1 {
        bail!("{}: one Pod expected, found {} objects", path.display(), objects.len());
    }
    super::manifest::typed(objects.remove(0), "v1", "Pod", path)
}

/// `pod`, unless it asks for what a single-host pod does not do yet: restarts (its
/// containers run once) and probes or lifecycle hooks (the node agent's lifecycle is not
/// shared with `podctl run` yet). Said, rather than silently ignored.
fn refuse_unrun(pod: Pod, path: &Path) -> Result<Pod> {
    let Some(spec) = pod.spec.as_ref() else { return Ok(pod) };
    if let Some(volume) = spec.volumes.iter().flatten().find(|v| crate::kubelet::volumes::is_api_volume(v)) {
        bail!(
            "{}: volume {}: configMap, secret, downwardAPI and projected volumes need an API server (podctl node): use emptyDir or hostPath",
            path.display(),
            volume.name
        );
    }
    let containers = spec.init_containers.iter().flatten().chain(&spec.containers);
    for container in containers {
        let asked = [
            ("livenessProbe", container.liveness_probe.is_some()),
            ("readinessProbe", container.readiness_probe.is_some()),
            ("startupProbe", container.startup_probe.is_some()),
            ("lifecycle", container.lifecycle.is_some()),
        ];
        if let Some((field, _)) = asked.iter().find(|(_, set)| *set) {
            bail!(
                "{}: container {}: {field} is not run by podctl run yet: leave it out",
                path.display(),
                container.name
            );
        }
    }
    Ok(pod)
}

/// A path to import, else a name in the store, pulled from its registry as `pull`
/// (missing, always, never) says; unpacked.
fn resolve_image(store: &Store, reference: &str, pull: &str, insecure: bool) -> Result<ResolvedImage> {
    let is_path = Path::new(reference).exists();
    let found = match (pull, is_path) {
        ("always", false) => Err(images::Error::NotFound(reference.to_string())),
        _ => store.resolve(reference),
    };
    let image = match found {
        Ok(image) => image,
        Err(images::Error::NotFound(_)) if is_path => {
            let mut imported = store.import(Path::new(reference), None)?;
            match imported.len() {
                1 => imported.remove(0),
                n => bail!("{reference} holds {n} images: import it with podctl image import and name one"),
            }
        }
        Err(images::Error::NotFound(_)) if pull == "never" => {
            bail!("image {reference} is not in the store and --pull never: podctl image pull or import it first")
        }
        Err(images::Error::NotFound(_)) => super::image::pull(store, reference, insecure, None, true)
            .with_context(|| format!("image {reference} is not in the store, and pulling it failed"))?,
        Err(e) => return Err(e.into()),
    };
    let lower_dirs = store.lower_dirs(&image)?;
    Ok(ResolvedImage { image, lower_dirs })
}

/// `docker.io/library/busybox:latest` → `busybox`; a path → its file name.
fn image_base_name(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    let base = last.split([':', '@', '.']).next().unwrap_or(last);
    let clean: String =
        base.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect::<String>().to_lowercase();
    if clean.is_empty() { "pod".into() } else { clean }
}

/// Pod names are DNS labels (RFC 1123), as Kubernetes requires.
fn validate_name(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "invalid pod name {name:?}: lowercase letters, digits and '-', at most 63, starting and ending alphanumeric"
        );
    }
    Ok(name.to_string())
}

fn random_uid() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom fills the buffer it is given.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    assert_eq!(n, 16, "getrandom");
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// `HOSTDIR:CTRDIR[:ro]` → (host, container, read-only).
fn parse_volume(spec: &str) -> Result<(String, String, bool)> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, target, read_only) = match parts.as_slice() {
        [host, target] => (*host, *target, false),
        [host, target, "ro"] => (*host, *target, true),
        [host, target, "rw"] => (*host, *target, false),
        _ => bail!("invalid volume {spec:?}: expected HOSTDIR:CTRDIR[:ro]"),
    };
    if !host.starts_with('/') || !target.starts_with('/') {
        bail!("invalid volume {spec:?}: both paths must be absolute");
    }
    if !Path::new(host).exists() {
        bail!("invalid volume {spec:?}: {host} does not exist");
    }
    Ok((host.into(), target.into(), read_only))
}

/// `--device HOSTPATH[:CTRPATH][:rwm]`, as docker reads it: the node's device at HOSTPATH
/// (its kind and number), made at CTRPATH (HOSTPATH by default) in the container.
/// `no`, `on-failure[:MAX_RETRIES]` or `always`, as docker's `--restart` reads it.
fn parse_restart(value: &str) -> Result<runtime::Restart, String> {
    match value.split_once(':') {
        None if value == "no" => Ok(runtime::Restart::No),
        None if value == "always" => Ok(runtime::Restart::Always),
        None if value == "on-failure" => Ok(runtime::Restart::OnFailure { max_retries: None }),
        Some(("on-failure", retries)) => match retries.parse::<u32>() {
            Ok(max) => Ok(runtime::Restart::OnFailure { max_retries: Some(max) }),
            Err(_) => Err(format!("{retries:?}: the most retries is a number")),
        },
        _ => Err(format!("{value:?}: no, on-failure[:MAX_RETRIES] or always expected")),
    }
}

/// `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]`, as docker's `-p` reads it.
fn parse_publish(value: &str) -> Result<ContainerPort, String> {
    let wrong = |why: &str| format!("{value:?}: {why} ([HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp|sctp] expected)");
    let (ports, protocol) = value.split_once('/').unwrap_or((value, "tcp"));
    let protocol = match protocol.to_lowercase().as_str() {
        "tcp" => "TCP",
        "udp" => "UDP",
        "sctp" => "SCTP",
        _ => return Err(wrong(&format!("unknown protocol {protocol:?}"))),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (host_ip, host_port, container_port) = match parts.as_slice() {
        [host, container] => (None, *host, *container),
        [ip, host, container] => {
            let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| wrong(&format!("{ip:?} is no IPv4 address")))?;
            (Some(ip.to_string()), *host, *container)
        }
        [_] => return Err(wrong("a host port is needed")),
        _ => return Err(wrong("too many parts")),
    };
    let port =
        |text: &str| text.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| wrong(&format!("{text:?} is no port")));
    Ok(ContainerPort {
        container_port: port(container_port)?.into(),
        host_port: Some(port(host_port)?.into()),
        host_ip,
        protocol: Some(protocol.into()),
        ..Default::default()
    })
}

fn parse_device(value: &str) -> Result<runtime::Device, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut parts: Vec<&str> = value.split(':').collect();
    let access = match parts.last() {
        Some(last) if parts.len() > 1 && !last.starts_with('/') => parts.pop().unwrap_or_default().to_string(),
        _ => "rwm".to_string(),
    };
    if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
        return Err(format!("{value}: the access {access:?} is not made of r, w and m"));
    }
    let (host, container) = match parts[..] {
        [host] => (host, host),
        [host, container] => (host, container),
        _ => return Err(format!("{value}: HOSTPATH[:CTRPATH][:rwm] expected")),
    };
    if !container.starts_with('/') || container.split('/').any(|c| c == "..") {
        return Err(format!("{value}: {container:?} is not an absolute path in the container"));
    }
    let meta = std::fs::metadata(host).map_err(|e| format!("{host}: {e}"))?;
    let kind = match meta.file_type() {
        t if t.is_char_device() => runtime::DeviceKind::Char,
        t if t.is_block_device() => runtime::DeviceKind::Block,
        _ => return Err(format!("{host} is not a device")),
    };
    let rdev = meta.rdev();
    Ok(runtime::Device {
        path: container.to_string(),
        kind,
        major: libc::major(rdev),
        minor: libc::minor(rdev),
        access,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(image_base_name("docker.io/library/busybox:latest"), "busybox");
        assert_eq!(image_base_name("/tmp/my_image.tar"), "myimage");
        assert!(validate_name("web-1").is_ok());
        assert!(validate_name("Web").is_err());
        assert!(validate_name("-x").is_err());
        let uid = random_uid();
        assert_eq!(uid.len(), 36);
        assert_ne!(uid, random_uid());
    }

    #[test]
    fn volumes() {
        assert_eq!(parse_volume("/tmp:/data:ro").unwrap(), ("/tmp".into(), "/data".into(), true));
        assert!(parse_volume("tmp:/data").is_err());
        assert!(parse_volume("/no/such/dir:/data").is_err());
    }
}
