//! From a Kubernetes Pod to what the runtime runs, as kubelet does it: command and args
//! merged with the image's Entrypoint and Cmd, `$(VAR)` references expanded, the user
//! resolved, volumes checked, the QoS class chosen.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::env::{ApiObjects, PodContext, container_env};
use super::volumes::{is_api_volume, is_secret_volume};
use crate::validation;
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Container, HostPathVolumeSource, Pod, PodSpec as K8sPodSpec, Volume as K8sVolume};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use runtime::{ContainerSpec, Mount, NetworkMode, PodSpec, QosClass, Resources, User, Volume, VolumeSource};

/// An image ready for a container: its config and unpacked layers.
pub struct ResolvedImage {
    pub image: images::Image,
    pub lower_dirs: Vec<PathBuf>,
}

/// A pod as the runtime takes it.
pub struct PodPlan {
    pub pod: PodSpec,
    pub init_containers: Vec<ContainerSpec>,
    pub containers: Vec<ContainerSpec>,
}

/// Node-level settings the Pod object does not carry.
pub struct NodeSettings<'a> {
    pub log_dir: &'a Path,
    pub resolv_conf: String,
    /// kubelet's podPidsLimit, per container here.
    pub pids_limit: Option<u64>,
    /// The cluster's DNS domain (a pod with a subdomain is named under it).
    pub cluster_domain: &'a str,
}

/// The pod's /etc/hosts, as kubelet writes it: the pod's hostname (after its fully
/// qualified name when it has a subdomain) on its address (127.0.1.1 until it has one),
/// then its hostAliases.
pub fn hosts_file(pod: &Pod, node: &NodeSettings, address: Option<Ipv4Addr>) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let hostname = spec.and_then(|s| s.hostname.as_deref()).unwrap_or(name);
    let address = address.map_or("127.0.1.1".to_string(), |a| a.to_string());
    let names = match spec.and_then(|s| s.subdomain.as_deref()).filter(|s| !s.is_empty()) {
        Some(subdomain) => {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            format!("{hostname}.{subdomain}.{namespace}.svc.{}\t{hostname}", node.cluster_domain)
        }
        None => hostname.to_string(),
    };
    let mut hosts = format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
         {address}\t{names}\n"
    );
    let aliases = spec.and_then(|s| s.host_aliases.as_ref()).filter(|a| !a.is_empty());
    if let Some(aliases) = aliases {
        hosts.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            hosts.push_str(&format!("{}\t{}\n", alias.ip, alias.hostnames.as_deref().unwrap_or_default().join("\t")));
        }
    }
    hosts
}

/// The pod's /etc/resolv.conf as its dnsPolicy and dnsConfig ask (kubelet's dns
/// configurer): the cluster's DNS server with the namespace's search path for
/// ClusterFirst (the host's file when no cluster DNS is given, as kubelet falls back),
/// the host's for Default, only dnsConfig for None.
pub fn resolv_conf(pod: &Pod, host: &str, cluster_dns: Option<&str>, cluster_domain: &str) -> String {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network) == Some(true);
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let field = |key: &str| -> Vec<String> {
        host.lines().filter_map(|l| l.strip_prefix(key)).flat_map(|v| v.split_whitespace().map(String::from)).collect()
    };
    let (mut servers, mut searches, mut options) = (field("nameserver "), field("search "), field("options "));
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    if policy == "None" {
        (servers, searches, options) = (vec![], vec![], vec![]);
    } else if cluster && let Some(dns) = cluster_dns {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut cluster_searches = vec![
            format!("{namespace}.svc.{cluster_domain}"),
            format!("svc.{cluster_domain}"),
            cluster_domain.to_string(),
        ];
        cluster_searches.append(&mut searches);
        (servers, searches, options) = (vec![dns.to_string()], cluster_searches, vec!["ndots:5".to_string()]);
    }
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        for server in config.nameservers.iter().flatten() {
            if !servers.contains(server) {
                servers.push(server.clone());
            }
        }
        for search in config.searches.iter().flatten() {
            if !searches.contains(search) {
                searches.push(search.clone());
            }
        }
        for option in config.options.iter().flatten() {
            let value = match &option.value {
                Some(v) => format!("{}:{v}", option.name.as_deref().unwrap_or("")),
                None => option.name.clone().unwrap_or_default(),
            };
            let name = value.split(':').next().unwrap_or("").to_string();
            options.retain(|o| o.split(':').next() != Some(name.as_str()));
            options.push(value);
        }
    }
    let mut text = String::new();
    if !searches.is_empty() {
        text.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for server in servers.iter().take(3) {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !options.is_empty() {
        text.push_str(&format!("options {}\n", options.join(" ")));
    }
    text
}

/// Plans `pod` (already validated as a v1 Pod) under `uid`; `resolve` finds each image,
/// `objects` and `context` give what the environment draws on.
pub fn plan(
    pod: &Pod,
    uid: &str,
    node: &NodeSettings,
    objects: &dyn ApiObjects,
    context: &PodContext,
    resolve: &mut dyn FnMut(&str) -> Result<ResolvedImage>,
) -> Result<PodPlan> {
    let sandbox = sandbox(pod, uid, node, objects)?;
    let spec = pod.spec.as_ref().context("spec: required")?;
    let mut convert = |c: &Container, field: String| -> Result<ContainerSpec> {
        let image = c.image.as_deref().filter(|i| !i.is_empty()).context("image: required");
        image
            .and_then(|image| resolve(image))
            .and_then(|image| container_spec(pod, &sandbox, c, node, objects, context, image))
            .with_context(|| format!("{field} ({})", c.name))
    };
    let init_containers = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| convert(c, format!("spec.initContainers[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    let containers = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| convert(c, format!("spec.containers[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    Ok(PodPlan { pod: sandbox, init_containers, containers })
}

/// The pod's sandbox as the runtime takes it: names checked (they become paths, cgroups
/// and log directories), volumes, hostname, QoS class.
pub fn sandbox(pod: &Pod, uid: &str, node: &NodeSettings, objects: &dyn ApiObjects) -> Result<PodSpec> {
    let name = pod.metadata.name.clone().context("metadata.name: required")?;
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let spec = pod.spec.as_ref().context("spec: required")?;
    if spec.containers.is_empty() {
        bail!("spec.containers: at least one container is required");
    }
    let mut causes = validation::check("metadata.name", &name, validation::dns_subdomain);
    causes.extend(validation::check("metadata.namespace", &namespace, validation::dns_label));
    causes.extend(validation::pod_spec_names(spec, "spec"));
    if !causes.is_empty() {
        let lines: Vec<String> = causes.iter().map(|(field, why)| format!("{field}: {why}")).collect();
        bail!("{}", lines.join("\n"));
    }
    let volumes = spec
        .volumes
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, v)| volume(v, i, &namespace, objects))
        .collect::<Result<Vec<_>>>()?;
    let all = spec.init_containers.iter().flatten().chain(&spec.containers);
    let resources = all.map(|c| resources(c, node)).collect::<Result<Vec<_>>>()?;
    let hostname = spec.hostname.clone().unwrap_or_else(|| name.clone());
    let host_network = spec.host_network == Some(true);
    Ok(PodSpec {
        uid: uid.to_string(),
        name,
        namespace,
        hostname: hostname.clone(),
        network: if spec.host_network == Some(true) { NetworkMode::Host } else { NetworkMode::Pod },
        hosts: hosts_file(pod, node, None),
        resolv_conf: node.resolv_conf.clone(),
        volumes,
        qos: QosClass::of(resources.iter()),
        share_process_namespace: spec.share_process_namespace == Some(true),
        origin: runtime::Origin::Run,
        // On the host's network a hostPort is the container's own port already.
        host_ports: if host_network { vec![] } else { host_ports(spec)? },
        restart: runtime::Restart::No,
    })
}

/// The containers' hostPorts (kubelet's portmap capability): each forwards a port of the
/// node to the container's port.
fn host_ports(spec: &K8sPodSpec) -> Result<Vec<runtime::HostPort>> {
    let mut ports: Vec<runtime::HostPort> = Vec::new();
    for (i, container) in spec.containers.iter().enumerate() {
        for (j, port) in container.ports.iter().flatten().enumerate() {
            let Some(host_port) = port.host_port.filter(|p| *p > 0) else { continue };
            let field = format!("spec.containers[{i}].ports[{j}]");
            let number = |value: i32, what: &str| {
                u16::try_from(value)
                    .ok()
                    .filter(|p| *p > 0)
                    .with_context(|| format!("{field}.{what}: {value} is no port"))
            };
            let host_ip = match port.host_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "0.0.0.0") {
                Some(ip) => Some(ip.parse().with_context(|| format!("{field}.hostIP: {ip:?} is no IPv4 address"))?),
                None => None,
            };
            let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => "tcp",
                "UDP" => "udp",
                "SCTP" => "sctp",
                other => bail!(
                    "{field}.protocol: Unsupported value: {other:?}: supported values: \"SCTP\", \"TCP\", \"UDP\""
                ),
            };
            let mapping = runtime::HostPort {
                host_ip,
                host_port: number(host_port, "hostPort")?,
                container_port: number(port.container_port, "containerPort")?,
                protocol: protocol.into(),
            };
            if let Some(other) = ports.iter().find(|p| p.overlaps(&mapping)) {
                bail!(
                    "{field}.hostPort: {} is taken twice (also for port {})",
                    mapping.host_port,
                    other.container_port
                );
            }
            ports.push(mapping);
        }
    }
    Ok(ports)
}

fn volume(v: &K8sVolume, i: usize, namespace: &str, objects: &dyn ApiObjects) -> Result<Volume> {
    let field = format!("spec.volumes[{i}]");
    let source = if let Some(empty) = &v.empty_dir {
        VolumeSource::EmptyDir {
            memory: empty.medium.as_deref() == Some("Memory"),
            size_limit: empty
                .size_limit
                .as_ref()
                .map(|q| bytes(q, &format!("{field}.emptyDir.sizeLimit")))
                .transpose()?,
        }
    } else if let Some(host) = &v.host_path {
        VolumeSource::HostPath { path: host_path(host, &format!("{field}.hostPath"))? }
    } else if let Some(claim) = &v.persistent_volume_claim {
        // The claim's bound volume, a directory of this node's (hostPath or local).
        let field = format!("{field}.persistentVolumeClaim");
        let volume = objects.claimed_volume(namespace, &claim.claim_name).with_context(|| field.clone())?;
        let name = volume.metadata.name.clone().unwrap_or_default();
        let spec = volume.spec.unwrap_or_default();
        let path = match (&spec.host_path, &spec.local) {
            (Some(host), _) => host_path(host, &format!("{field} (volume {name}).hostPath"))?,
            (None, Some(local)) if Path::new(&local.path).is_dir() => PathBuf::from(&local.path),
            (None, Some(local)) => bail!("{field}: volume {name}'s local path {} is no directory", local.path),
            (None, None) => bail!("{field}: volume {name} is neither hostPath nor local: it cannot be mounted here"),
        };
        VolumeSource::HostPath { path }
    } else if is_api_volume(v) {
        // A directory of the pod's that the node agent fills (volumes.rs); secrets in memory only.
        VolumeSource::EmptyDir { memory: is_secret_volume(v), size_limit: None }
    } else {
        bail!(
            "{field} ({}): only emptyDir, hostPath, persistentVolumeClaim, configMap, secret, downwardAPI and projected volumes are supported",
            v.name
        );
    };
    Ok(Volume { name: v.name.clone(), source })
}

/// Checks (or creates) a hostPath as its `type` asks, as kubelet does.
fn host_path(host: &HostPathVolumeSource, field: &str) -> Result<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let path = PathBuf::from(&host.path);
    if !path.is_absolute() {
        bail!("{field}.path: {:?} is not absolute", host.path);
    }
    let kind = host.type_.as_deref().unwrap_or("");
    let meta = std::fs::metadata(&path);
    let is = |check: fn(&std::fs::FileType) -> bool| meta.as_ref().is_ok_and(|m| check(&m.file_type()));
    let ok = match kind {
        "" => true,
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(&path).with_context(|| format!("{field}: create {}", path.display()))?;
            }
            path.is_dir()
        }
        "FileOrCreate" => {
            if meta.is_err() {
                std::fs::File::create(&path).with_context(|| format!("{field}: create {}", path.display()))?;
            }
            path.is_file()
        }
        "Directory" => is(|t| t.is_dir()),
        "File" => is(|t| t.is_file()),
        "Socket" => is(|t| t.is_socket()),
        "CharDevice" => is(|t| t.is_char_device()),
        "BlockDevice" => is(|t| t.is_block_device()),
        other => bail!("{field}.type: unknown type {other:?}"),
    };
    if !ok {
        bail!("{field}: {} is not a {kind}", path.display());
    }
    Ok(path)
}

/// One container of the pod as the runtime takes it, on its resolved image.
pub fn container_spec(
    k8s_pod: &Pod,
    pod: &PodSpec,
    c: &Container,
    node: &NodeSettings,
    objects: &dyn ApiObjects,
    context: &PodContext,
    resolved: ResolvedImage,
) -> Result<ContainerSpec> {
    let spec = k8s_pod.spec.as_ref().context("spec: required")?;
    let reference = c.image.as_deref().unwrap_or_default();
    let ResolvedImage { image, lower_dirs } = resolved;
    let config = image.config.config().clone().unwrap_or_default();

    let image_env: Vec<(String, String)> = config
        .env()
        .iter()
        .flatten()
        .map(|e| e.split_once('=').map_or((e.clone(), String::new()), |(k, v)| (k.into(), v.into())))
        .collect();
    let env = container_env(k8s_pod, c, &image_env, objects, context)?;
    // kubelet's rule: command replaces the Entrypoint and drops the Cmd; args replace the Cmd.
    let (entrypoint, cmd) = match (&c.command, &c.args) {
        (Some(command), args) => (command.clone(), args.clone().unwrap_or_default()),
        (None, Some(args)) => (config.entrypoint().clone().unwrap_or_default(), args.clone()),
        (None, None) => (config.entrypoint().clone().unwrap_or_default(), config.cmd().clone().unwrap_or_default()),
    };
    let args = entrypoint.iter().chain(&cmd).map(|a| expand(a, &env)).collect();

    let pod_security = spec.security_context.as_ref();
    let security = c.security_context.as_ref();
    let image_user = config.user().clone().filter(|u| !u.is_empty());
    let mut user = match image_user {
        Some(u) => resolve_user(&u, &lower_dirs).context("the image's User")?,
        None => User::default(),
    };
    if let Some(uid) = security.and_then(|s| s.run_as_user).or(pod_security.and_then(|s| s.run_as_user)) {
        user.uid = id(uid, "securityContext.runAsUser")?;
        // A uid the image names in /etc/passwd brings its group, as containerd resolves it.
        user.gid = passwd_entry(&lower_dirs, &uid.to_string()).map_or(0, |(_, gid)| gid);
    }
    if let Some(gid) = security.and_then(|s| s.run_as_group).or(pod_security.and_then(|s| s.run_as_group)) {
        user.gid = id(gid, "securityContext.runAsGroup")?;
    }
    for g in pod_security.and_then(|s| s.supplemental_groups.as_ref()).into_iter().flatten() {
        user.additional_gids.push(id(*g, "securityContext.supplementalGroups")?);
    }
    // The pod's fsGroup owns its volumes (the node agent chowns them): every container
    // is in it.
    if let Some(group) = pod_security.and_then(|s| s.fs_group) {
        user.additional_gids.push(id(group, "securityContext.fsGroup")?);
    }
    // kubelet's check: a container that must not run as root does not start as root, and
    // an image user that is a name cannot be checked.
    let non_root = security.and_then(|s| s.run_as_non_root).or(pod_security.and_then(|s| s.run_as_non_root));
    let explicit_uid = security.and_then(|s| s.run_as_user).or(pod_security.and_then(|s| s.run_as_user));
    if non_root == Some(true) {
        let image_user = config.user().clone().unwrap_or_default();
        let image_uid = image_user.split(':').next().unwrap_or("");
        if explicit_uid.is_none() && !image_uid.is_empty() && image_uid.parse::<u32>().is_err() {
            bail!(
                "container has runAsNonRoot and image has non-numeric user ({image_uid}), cannot verify user is non-root"
            );
        }
        if user.uid == 0 {
            bail!("container has runAsNonRoot and image will run as root");
        }
    }

    let read_only_volumes: Vec<&str> =
        spec.volumes.iter().flatten().filter(|v| is_api_volume(v)).map(|v| v.name.as_str()).collect();
    let mut mounts = Vec::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        if !pod.volumes.iter().any(|v| v.name == m.name) {
            bail!("volumeMounts[{i}].name: no volume named {:?} in the pod", m.name);
        }
        if m.sub_path.as_deref().is_some_and(|s| !s.is_empty()) {
            bail!("volumeMounts[{i}].subPath: not supported yet");
        }
        if !m.mount_path.starts_with('/') {
            bail!("volumeMounts[{i}].mountPath: {:?} is not absolute", m.mount_path);
        }
        mounts.push(Mount {
            volume: m.name.clone(),
            destination: m.mount_path.clone(),
            read_only: m.read_only == Some(true) || read_only_volumes.contains(&m.name.as_str()),
        });
    }

    let resources = resources(c, node)?;

    let working_dir = c
        .working_dir
        .clone()
        .or_else(|| config.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let mut spec = ContainerSpec {
        name: c.name.clone(),
        init: spec.init_containers.iter().flatten().any(|i| i.name == c.name),
        image: reference.to_string(),
        lower_dirs,
        args,
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        working_dir,
        user,
        privileged: security.and_then(|s| s.privileged) == Some(true),
        read_only_rootfs: security.and_then(|s| s.read_only_root_filesystem) == Some(true),
        mounts,
        devices: vec![],
        capabilities: match security.and_then(|s| s.capabilities.as_ref()) {
            Some(caps) => Some(
                runtime::capabilities(
                    caps.add.as_deref().unwrap_or_default(),
                    caps.drop.as_deref().unwrap_or_default(),
                )
                .map_err(|e| anyhow::anyhow!("securityContext.capabilities: {e}"))?,
            ),
            None => None,
        },
        resources,
        stdin: c.stdin == Some(true),
        tty: c.tty == Some(true),
        window: None,
        log_path: super::sandbox::log_dir(node.log_dir, pod).join(&c.name).join("0.log"),
        target: None,
    };
    if spec.tty {
        spec.set_terminal_type(None);
    }
    Ok(spec)
}

/// `$(VAR)` → the value of VAR defined so far; `$$(VAR)` → `$(VAR)`; an unknown
/// reference stays as written (Kubernetes' expansion rules).
pub(super) fn expand(input: &str, env: &[(String, String)]) -> String {
    let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = String::new();
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            out.push('$');
            rest = escaped;
        } else if let Some(close) = after.strip_prefix('(').and_then(|s| s.find(')')) {
            let name = &after[1..=close];
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => out.push_str(&rest[i..i + close + 3]),
            }
            rest = &after[close + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn resources(c: &Container, node: &NodeSettings) -> Result<Resources> {
    let resources = c.resources.as_ref();
    let limit = |k: &str| resources.and_then(|r| r.limits.as_ref()).and_then(|l| l.get(k));
    let request = |k: &str| resources.and_then(|r| r.requests.as_ref()).and_then(|l| l.get(k));
    Ok(Resources {
        cpu_request_millis: request("cpu").map(|q| millicores(q, "resources.requests.cpu")).transpose()?,
        cpu_limit_millis: limit("cpu").map(|q| millicores(q, "resources.limits.cpu")).transpose()?,
        memory_limit_bytes: limit("memory").map(|q| bytes(q, "resources.limits.memory")).transpose()?,
        pids_limit: node.pids_limit,
    })
}

fn id(value: i64, field: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| anyhow::anyhow!("{field}: {value} is not a valid id"))
}

/// A Kubernetes quantity of bytes (`64Mi`, `1Gi`, `500M`, `1.5Gi`, `1e9`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    match crate::quantity::Quantity::parse(s).map(|q| q.units()) {
        Some(bytes) if bytes >= 1 => u64::try_from(bytes).map_err(|_| format!("{s:?} is too many bytes")),
        _ => Err(format!("{s:?} is not a quantity of bytes (e.g. 64Mi, 1Gi, 500M)")),
    }
}

/// CPUs as cores (`0.5`, `2`) or millicores (`500m`), in millicores.
pub fn parse_millicores(s: &str) -> Result<u64, String> {
    match crate::quantity::Quantity::parse(s).map(|q| q.millis()) {
        Some(millis) if millis >= 1 => u64::try_from(millis).map_err(|_| format!("{s:?} is too many CPUs")),
        _ => Err(format!("{s:?} is not a CPU amount (e.g. 0.5, 2, 500m)")),
    }
}

fn bytes(q: &Quantity, field: &str) -> Result<u64> {
    parse_bytes(&q.0).map_err(|e| anyhow::anyhow!("{field}: {e}"))
}

fn millicores(q: &Quantity, field: &str) -> Result<u64> {
    parse_millicores(&q.0).map_err(|e| anyhow::anyhow!("{field}: {e}"))
}

/// `UID[:GID]` or `NAME[:GROUP]`, names looked up in the image's /etc/passwd and
/// /etc/group; a user without a group gets its passwd group (or 0), as docker does.
pub fn resolve_user(spec: &str, lower_dirs: &[PathBuf]) -> Result<User> {
    let (user, group) = spec.split_once(':').map_or((spec, None), |(u, g)| (u, Some(g)));
    let entry = passwd_entry(lower_dirs, user);
    let uid: u32 = match (user.parse(), entry) {
        (Ok(uid), _) => uid,
        (Err(_), Some((uid, _))) => uid,
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
        None => entry.map_or(0, |(_, gid)| gid),
    };
    Ok(User { uid, gid, additional_gids: vec![] })
}

/// (uid, gid) of the image's /etc/passwd entry for a user name or uid.
fn passwd_entry(lower_dirs: &[PathBuf], user: &str) -> Option<(u32, u32)> {
    image_file(lower_dirs, "etc/passwd")
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user || f[2] == user))
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
}

/// A file as the container will see it: from the topmost layer that has it.
fn image_file(lower_dirs: &[PathBuf], path: &str) -> String {
    lower_dirs.iter().find_map(|dir| std::fs::read_to_string(dir.join(path)).ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variable_references() {
        let env = vec![("A".to_string(), "one".to_string()), ("B".to_string(), "two".to_string())];
        assert_eq!(expand("$(A)-$(B)", &env), "one-two");
        assert_eq!(expand("$$(A) $(C) $A", &env), "$(A) $(C) $A");
        assert_eq!(expand("x$(A", &env), "x$(A");
    }

    #[test]
    fn hosts_name_the_pod_and_its_aliases() {
        let p = pod(
            "metadata: {name: web-0, namespace: shop}\nspec: {subdomain: web, hostAliases: [{ip: 192.0.2.9, hostnames: [a.example, b.example]}], containers: [{name: a, image: x}]}",
        );
        let node = NodeSettings {
            log_dir: Path::new("/l"),
            resolv_conf: String::new(),
            pids_limit: None,
            cluster_domain: "cluster.local",
        };
        let hosts = hosts_file(&p, &node, Some(Ipv4Addr::new(10, 88, 0, 4)));
        assert!(hosts.contains("\n10.88.0.4\tweb-0.web.shop.svc.cluster.local\tweb-0\n"), "{hosts}");
        assert!(hosts.ends_with("# Entries added by HostAliases.\n192.0.2.9\ta.example\tb.example\n"), "{hosts}");
    }

    #[test]
    fn resolv_conf_follows_the_dns_policy() {
        let host = "nameserver 192.0.2.1\nsearch example.com\n";
        let p = pod("metadata: {name: p, namespace: prod}\nspec: {containers: [{name: a, image: x}]}");
        assert_eq!(
            resolv_conf(&p, host, Some("10.96.0.10"), "cluster.local"),
            "search prod.svc.cluster.local svc.cluster.local cluster.local example.com\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        assert_eq!(resolv_conf(&p, host, None, "cluster.local"), "search example.com\nnameserver 192.0.2.1\n");
        let none = pod(
            "metadata: {name: p}\nspec: {dnsPolicy: None, dnsConfig: {nameservers: [1.1.1.1], options: [{name: ndots, value: '2'}]}, containers: [{name: a, image: x}]}",
        );
        assert_eq!(
            resolv_conf(&none, host, Some("10.96.0.10"), "cluster.local"),
            "nameserver 1.1.1.1\noptions ndots:2\n"
        );
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

    fn pod(yaml: &str) -> Pod {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn plan_of(p: &Pod) -> Result<PodPlan> {
        let node = NodeSettings {
            log_dir: Path::new("/logs"),
            resolv_conf: String::new(),
            pids_limit: None,
            cluster_domain: "cluster.local",
        };
        let config: oci_spec::image::ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
                "config":{"Entrypoint":["/entry"],"Cmd":["default"],"Env":["PATH=/bin","HOME=/root"],"WorkingDir":"/srv"}}"#,
        )
        .unwrap();
        let manifest: oci_spec::image::ImageManifest = serde_json::from_str(&format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{0}","size":1}},"layers":[]}}"#,
            "a".repeat(64)
        ))
        .unwrap();
        let image = images::Image {
            id: format!("sha256:{}", "a".repeat(64)).parse().unwrap(),
            names: vec![],
            manifest_digest: format!("sha256:{}", "b".repeat(64)).parse().unwrap(),
            manifest,
            config,
        };
        plan(p, "uid-1", &node, &super::super::env::NoApiServer, &PodContext::default(), &mut |_| {
            Ok(ResolvedImage { image: image.clone(), lower_dirs: vec![] })
        })
    }

    #[test]
    fn command_and_args_merge_with_the_image_as_kubelet_does() {
        let p = pod(r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - {name: a, image: x}
  - {name: b, image: x, args: ["--flag", "$(GREETING)"], env: [{name: GREETING, value: "hi $(HOME)"}]}
  - {name: c, image: x, command: ["/other"]}
  - {name: d, image: x, command: ["/other"], args: ["arg"], workingDir: /w}
"#);
        let plan = plan_of(&p).unwrap();
        let args: Vec<Vec<String>> = plan.containers.iter().map(|c| c.args.clone()).collect();
        assert_eq!(args[0], ["/entry", "default"]);
        assert_eq!(args[1], ["/entry", "--flag", "hi /root"]);
        assert_eq!(args[2], ["/other"]);
        assert_eq!(args[3], ["/other", "arg"]);
        assert_eq!(plan.containers[0].working_dir, "/srv");
        assert_eq!(plan.containers[3].working_dir, "/w");
        assert!(plan.containers[1].env.contains(&"GREETING=hi /root".to_string()));
        assert_eq!(plan.pod.qos, QosClass::BestEffort);
        assert_eq!(plan.containers[0].log_path, Path::new("/logs/default_web_uid-1/a/0.log"));
    }

    #[test]
    fn host_ports_forward_the_nodes_port_to_the_containers() {
        let spec = pod(
            "metadata: {name: p}\nspec: {containers: [{name: a, image: x, ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 53, hostPort: 53, protocol: UDP, hostIP: 192.0.2.1}, {containerPort: 9090}]}]}",
        );
        let ports = host_ports(spec.spec.as_ref().unwrap()).unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!((ports[0].host_port, ports[0].container_port, ports[0].protocol.as_str()), (8080, 80, "tcp"));
        assert_eq!((ports[1].host_ip, ports[1].protocol.as_str()), (Some("192.0.2.1".parse().unwrap()), "udp"));
        let twice = pod(
            "metadata: {name: p}\nspec: {containers: [{name: a, image: x, ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 81, hostPort: 8080}]}]}",
        );
        let e = host_ports(twice.spec.as_ref().unwrap()).unwrap_err().to_string();
        assert!(e.contains("spec.containers[0].ports[1].hostPort: 8080 is taken twice"), "{e}");
        // The protocol becomes part of a firewall rule: only the three there are.
        let odd = pod(
            "metadata: {name: p}\nspec: {containers: [{name: a, image: x, ports: [{containerPort: 80, hostPort: 8080, protocol: 'tcp -j ACCEPT'}]}]}",
        );
        let e = host_ports(odd.spec.as_ref().unwrap()).unwrap_err().to_string();
        assert!(e.contains("spec.containers[0].ports[0].protocol: Unsupported value"), "{e}");
    }

    #[test]
    fn bad_pods_name_the_field() {
        let err = |yaml: &str| format!("{:#}", plan_of(&pod(yaml)).err().unwrap());
        let e = err("metadata: {name: p}\nspec: {containers: []}");
        assert!(e.contains("spec.containers: at least one"), "{e}");
        let e = err(
            "metadata: {name: p}\nspec: {containers: [{name: a, image: x, volumeMounts: [{name: v, mountPath: /v}]}]}",
        );
        assert!(e.contains("spec.containers[0] (a)") && e.contains("no volume named \"v\""), "{e}");
        let e = err("metadata: {name: p}\nspec: {containers: [{name: a, image: x}, {name: a, image: x}]}");
        assert!(e.contains("spec.containers[1].name: Duplicate value: \"a\""), "{e}");
        // Names become paths and cgroups: `../../x` never reaches them.
        let e = err("metadata: {name: p}\nspec: {containers: [{name: ../../x, image: x}]}");
        assert!(e.contains("spec.containers[0].name: Invalid value: \"../../x\": a lowercase RFC 1123 label"), "{e}");
        let e = err("metadata: {name: a/b}\nspec: {containers: [{name: a, image: x}]}");
        assert!(e.contains("metadata.name: Invalid value: \"a/b\""), "{e}");
        let e = err(
            "metadata: {name: p}\nspec: {volumes: [{name: c, nfs: {server: x, path: /}}], containers: [{name: a, image: x}]}",
        );
        assert!(e.contains("spec.volumes[0] (c): only emptyDir, hostPath, persistentVolumeClaim, configMap"), "{e}");
        let e =
            err("metadata: {name: p}\nspec: {containers: [{name: a, image: x, resources: {limits: {memory: lots}}}]}");
        assert!(e.contains("resources.limits.memory"), "{e}");
    }
}
