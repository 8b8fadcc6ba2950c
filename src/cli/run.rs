//! `podctl run`: one pod on this host, no API server. In the foreground it streams the
//! container's output and exits with its exit code; SIGINT and SIGTERM stop it gracefully.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use images::{Image, Store};
use runtime::{ContainerSpec, Mount, NetworkMode, PodSpec, QosClass, Resources, Runtime, User, Volume, VolumeSource};

use super::pods::{LogFollower, remove_pod_and_logs};
use super::{Dirs, require_root};

#[derive(Args)]
pub struct RunArgs {
    /// Pod name (default: the image's name and a random suffix)
    #[arg(long)]
    name: Option<String>,
    /// Remove the pod when it exits
    #[arg(long)]
    rm: bool,
    /// Run in the background and print the pod's name
    #[arg(short, long)]
    detach: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass this one's)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Network: none (own namespace, loopback only) or host
    #[arg(long, value_name = "MODE", default_value = "none", value_parser = ["none", "host"])]
    net: String,
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
    /// Mount the container's root filesystem read-only
    #[arg(long)]
    read_only: bool,
    /// Memory limit, as a Kubernetes quantity (64Mi, 1Gi, 500M)
    #[arg(short, long, value_name = "SIZE", value_parser = parse_bytes)]
    memory: Option<u64>,
    /// CPU limit: cores as a decimal (0.5) or millicores (500m)
    #[arg(long, value_name = "N", value_parser = parse_millicores)]
    cpus: Option<u64>,
    /// Most processes (and threads) the container may have
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pids_limit: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when stopping
    #[arg(long, default_value_t = 30)]
    grace_period: u64,
    /// Image: a name in the local store, or a path `podctl image import` accepts
    image: String,
    /// Command and arguments (replace the image's Cmd; its Entrypoint stays)
    #[arg(last = true)]
    command: Vec<String>,
}

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

impl RunArgs {
    pub fn run(self, dirs: &Dirs) -> Result<ExitCode> {
        require_root("podctl run")?;
        // From here on SIGINT and SIGTERM stop the pod rather than abandon it half-made.
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler only stores to an atomic.
            unsafe { libc::signal(signal, request_stop as *const () as libc::sighandler_t) };
        }
        let store = Store::open(&dirs.data_dir)?;
        let image = resolve_image(&store, &self.image)?;
        let lower_dirs = store.lower_dirs(&image)?;
        let uid = random_uid();
        let name = match &self.name {
            Some(name) => validate_name(name)?,
            None => format!("{}-{}", image_base_name(&self.image), &uid[..6]),
        };
        let runtime = dirs.runtime()?;
        if runtime.pods()?.iter().any(|p| p.name() == name) {
            bail!("a pod named {name} already exists (podctl rm {name})");
        }
        let (volumes, mounts) = parse_volumes(&self.volumes)?;
        let pod = PodSpec {
            uid: uid.clone(),
            name: name.clone(),
            namespace: "default".into(),
            hostname: name.clone(),
            network: if self.net == "host" { NetworkMode::Host } else { NetworkMode::None },
            hosts: format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{name}\n"),
            resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            volumes,
            qos: QosClass::of([&self.resources()]),
        };
        let container = self.container_spec(&image, lower_dirs, &pod, mounts, &dirs.log_dir)?;
        let pod = runtime.create_pod(&pod)?;
        let started = runtime.start_container(&pod, &container);
        if self.detach {
            started?;
            println!("{name}");
            return Ok(ExitCode::SUCCESS);
        }
        let follower = LogFollower::new(&container.log_path);
        let code = match started {
            Ok(_) => self.follow(&runtime, &pod, &container, follower)?,
            Err(e) => {
                let status = runtime.wait_container(&pod, &container.name, Some(Duration::from_secs(1))).ok().flatten();
                eprintln!("podctl: {e}");
                status.map_or(125, |s| s.exit_code)
            }
        };
        if self.rm {
            remove_pod_and_logs(&runtime, &pod, &dirs.log_dir)?;
        }
        Ok(ExitCode::from(code.clamp(0, 255) as u8))
    }

    /// Streams the container's log until it exits; stops it on SIGINT/SIGTERM.
    fn follow(
        &self,
        runtime: &Runtime,
        pod: &runtime::Pod,
        container: &ContainerSpec,
        mut logs: LogFollower,
    ) -> Result<i32> {
        let (done_tx, done) = mpsc::channel();
        {
            let (runtime, pod, name) = (runtime.clone(), pod.clone(), container.name.clone());
            std::thread::spawn(move || {
                let _ = done_tx.send(runtime.wait_container(&pod, &name, None));
            });
        }
        let mut stopping = false;
        loop {
            match done.recv_timeout(Duration::from_millis(20)) {
                Ok(status) => {
                    logs.print_new()?;
                    let status = status?.context("the container's exit was not recorded")?;
                    return Ok(status.exit_code);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => logs.print_new()?,
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("lost the wait for the container"),
            }
            if STOP_REQUESTED.load(Ordering::SeqCst) && !stopping {
                stopping = true;
                let (runtime, pod, names, grace) = (
                    runtime.clone(),
                    pod.clone(),
                    vec![container.name.clone()],
                    Duration::from_secs(self.grace_period),
                );
                std::thread::spawn(move || runtime.stop_pod(&pod, &names, grace));
            }
        }
    }

    /// Limits as `kubectl run --limits` sets them (requests default to limits).
    fn resources(&self) -> Resources {
        Resources {
            cpu_request_millis: None,
            cpu_limit_millis: self.cpus,
            memory_limit_bytes: self.memory,
            pids_limit: self.pids_limit,
        }
    }

    fn container_spec(
        &self,
        image: &Image,
        lower_dirs: Vec<PathBuf>,
        pod: &PodSpec,
        mounts: Vec<Mount>,
        log_dir: &Path,
    ) -> Result<ContainerSpec> {
        let config = image.config.config().clone().unwrap_or_default();
        let mut args = config.entrypoint().clone().unwrap_or_default();
        match self.command.is_empty() {
            true => args.extend(config.cmd().clone().unwrap_or_default()),
            false => args.extend(self.command.iter().cloned()),
        }
        let mut env = config.env().clone().unwrap_or_default();
        for e in &self.env {
            env.push(match e.split_once('=') {
                Some(_) => e.clone(),
                None => format!("{e}={}", std::env::var(e).unwrap_or_default()),
            });
        }
        let user_spec = self.user.clone().or_else(|| config.user().clone().filter(|u| !u.is_empty()));
        let user = match user_spec {
            Some(spec) => resolve_user(&spec, &lower_dirs)?,
            None => User::default(),
        };
        Ok(ContainerSpec {
            name: pod.name.clone(),
            image: self.image.clone(),
            lower_dirs,
            args,
            env,
            working_dir: self
                .workdir
                .clone()
                .or_else(|| config.working_dir().clone().filter(|w| !w.is_empty()))
                .unwrap_or_else(|| "/".into()),
            user,
            privileged: self.privileged,
            read_only_rootfs: self.read_only,
            mounts,
            resources: self.resources(),
            log_path: log_dir.join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid)).join(&pod.name).join("0.log"),
        })
    }
}

/// A Kubernetes quantity of bytes: `123`, `64Mi`, `1Gi`, `500M`, `1.5Gi`.
fn parse_bytes(s: &str) -> Result<u64, String> {
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) =
        SUFFIXES.iter().find_map(|(suffix, f)| s.strip_suffix(suffix).map(|n| (n, *f))).unwrap_or((s, 1.0));
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n * factor >= 1.0 => Ok((n * factor).round() as u64),
        _ => Err(format!("{s:?} is not a quantity of bytes (e.g. 64Mi, 1Gi, 500M)")),
    }
}

/// CPUs as cores (`0.5`, `2`) or millicores (`500m`), in millicores.
fn parse_millicores(s: &str) -> Result<u64, String> {
    let millis = match s.strip_suffix('m') {
        Some(m) => m.parse::<f64>().ok(),
        None => s.parse::<f64>().ok().map(|c| c * 1000.0),
    };
    match millis {
        Some(m) if m.is_finite() && m >= 1.0 => Ok(m.round() as u64),
        _ => Err(format!("{s:?} is not a CPU amount (e.g. 0.5, 2, 500m)")),
    }
}

/// A name in the store, else a path to import.
fn resolve_image(store: &Store, reference: &str) -> Result<Image> {
    match store.resolve(reference) {
        Ok(image) => Ok(image),
        Err(images::Error::NotFound(_)) if Path::new(reference).exists() => {
            let mut imported = store.import(Path::new(reference), None)?;
            match imported.len() {
                1 => Ok(imported.remove(0)),
                n => bail!("{reference} holds {n} images: import it with podctl image import and name one"),
            }
        }
        Err(images::Error::NotFound(_)) => {
            bail!("unknown image {reference}: podctl image pull or podctl image import it first")
        }
        Err(e) => Err(e.into()),
    }
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
    let h = hex(&bytes);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `-v HOSTDIR:CTRDIR[:ro]` → hostPath volumes and their mounts.
fn parse_volumes(specs: &[String]) -> Result<(Vec<Volume>, Vec<Mount>)> {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
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
        let name = format!("volume-{i}");
        volumes.push(Volume { name: name.clone(), source: VolumeSource::HostPath { path: host.into() } });
        mounts.push(Mount { volume: name, destination: target.into(), read_only });
    }
    Ok((volumes, mounts))
}

/// `UID[:GID]` or `NAME[:GROUP]`, names looked up in the image's /etc/passwd and
/// /etc/group; a user without a group gets its passwd group (or 0), as docker does.
fn resolve_user(spec: &str, lower_dirs: &[PathBuf]) -> Result<User> {
    let (user, group) = spec.split_once(':').map_or((spec, None), |(u, g)| (u, Some(g)));
    let passwd = image_file(lower_dirs, "etc/passwd");
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user || f[2] == user));
    let uid: u32 = match (user.parse(), &entry) {
        (Ok(uid), _) => uid,
        (Err(_), Some(f)) => f[2].parse().context("bad uid in the image's /etc/passwd")?,
        (Err(_), None) => bail!("unable to find user {user}: no matching entries in the image's /etc/passwd"),
    };
    let gid: u32 = match group {
        Some(g) => match g.parse() {
            Ok(gid) => gid,
            Err(_) => image_file(lower_dirs, "etc/group")
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .with_context(|| format!("unable to find group {g}: no matching entries in the image's /etc/group"))?,
        },
        None => entry.and_then(|f| f[3].parse().ok()).unwrap_or(0),
    };
    Ok(User { uid, gid, additional_gids: vec![] })
}

/// A file as the container will see it: from the topmost layer that has it.
fn image_file(lower_dirs: &[PathBuf], path: &str) -> String {
    lower_dirs.iter().find_map(|dir| std::fs::read_to_string(dir.join(path)).ok()).unwrap_or_default()
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
    fn users_from_image_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
            .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        assert_eq!(resolve_user("app", &dirs).unwrap(), User { uid: 1000, gid: 1001, additional_gids: vec![] });
        assert_eq!(resolve_user("1000:staff", &dirs).unwrap(), User { uid: 1000, gid: 50, additional_gids: vec![] });
        assert_eq!(resolve_user("4242", &dirs).unwrap(), User { uid: 4242, gid: 0, additional_gids: vec![] });
        assert!(resolve_user("nobody", &dirs).unwrap_err().to_string().contains("unable to find user nobody"));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_bytes("64Mi"), Ok(64 << 20));
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_bytes("500M"), Ok(500_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("lots").is_err() && parse_bytes("-1Mi").is_err() && parse_bytes("0").is_err());
        assert_eq!(parse_millicores("0.5"), Ok(500));
        assert_eq!(parse_millicores("250m"), Ok(250));
        assert_eq!(parse_millicores("2"), Ok(2000));
        assert!(parse_millicores("0").is_err() && parse_millicores("x").is_err());
    }

    #[test]
    fn volumes() {
        let (v, m) = parse_volumes(&["/tmp:/data:ro".into()]).unwrap();
        assert_eq!(v.len(), 1);
        assert!(m[0].read_only && m[0].destination == "/data");
        assert!(parse_volumes(&["tmp:/data".into()]).is_err());
        assert!(parse_volumes(&["/no/such/dir:/data".into()]).is_err());
    }
}
