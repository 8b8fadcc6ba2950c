//! `bench/run net`: service proxy syncs, per-pod network setup and teardown, and what a
//! cluster IP costs a request.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use net::proxy::{Protocol, Proxier, ProxyConfig, ServicePort};
use net::{Firewall, Iptables, NetworkConfig, PodNetwork};

use crate::{BenchNode, RUNS, median, report, run};

const ENDPOINTS_PER_SERVICE: usize = 10;

/// `services` services of `ENDPOINTS_PER_SERVICE` endpoints each; `generation` moves
/// every endpoint of service `changed` to fresh addresses.
fn synthetic(services: usize, changed: Option<(usize, u32)>) -> Vec<ServicePort> {
    (0..services)
        .map(|i| {
            let generation = changed.filter(|(c, _)| *c == i).map_or(0, |(_, g)| g);
            ServicePort {
                namespace: format!("ns{}", i % 50),
                name: format!("svc{i}"),
                port_name: "http".into(),
                protocol: Protocol::Tcp,
                cluster_ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 1 + i as u32),
                port: 80,
                node_port: None,
                external_ips: Vec::new(),
                load_balancer_ips: Vec::new(),
                source_ranges: Vec::new(),
                internal_local: false,
                external_local: false,
                affinity_timeout: None,
                endpoints: (0..ENDPOINTS_PER_SERVICE)
                    .map(|j| {
                        let index = (i * ENDPOINTS_PER_SERVICE + j) as u32 + 1 + generation * 1_000_000;
                        SocketAddrV4::new(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + index), 8080)
                    })
                    .collect(),
                local_endpoints: Vec::new(),
            }
        })
        .collect()
}

fn proxy_config() -> ProxyConfig {
    ProxyConfig { cluster_cidr: Some("10.88.0.0/16".parse().unwrap()), random_fully: true }
}

/// `proxy_full_sync_{1k,10k}`: a full sync (build the rules, list what the node holds for
/// stale chains, one transaction) of that many services × 10 endpoints onto a node that
/// holds them already (the periodic resync). `proxy_partial_sync_{1k,10k}`: one service's
/// endpoints change. `proxy_first_sync_*`: onto an empty node. `proxy_build_10k`: the pure
/// rule generation alone.
///
/// On nftables (no suffix), and beside it, as the peer, on iptables-nft (`_iptables`) and
/// iptables-legacy (`_iptables_legacy`). iptables-nft 1.8.9 spends time quadratic in the
/// number of chains inside iptables-restore (a 1k sync takes seconds), so it is measured
/// at 1k only.
pub fn proxy_sync() {
    let services = synthetic(10_000, None);
    let start = Instant::now();
    let rules = net::proxy::rule_count(&Firewall::Nftables, &services, &proxy_config());
    report("proxy_build_10k", start.elapsed().as_secs_f64() * 1000.0, "ms");
    report("proxy_rules_10k", rules as f64, "rules");
    let mut backends = vec![(Firewall::Nftables, "", true)];
    backends.extend(Iptables::named("iptables-nft").map(|i| (Firewall::Iptables(i), "_iptables", false)));
    backends.extend(Iptables::named("iptables-legacy").map(|i| (Firewall::Iptables(i), "_iptables_legacy", true)));
    for (firewall, suffix, with_10k) in backends {
        let sizes: &[(&str, usize)] = if with_10k { &[("1k", 1_000), ("10k", 10_000)] } else { &[("1k", 1_000)] };
        for &(label, count) in sizes {
            proxy_sync_at(&firewall, &format!("{label}{suffix}"), count);
        }
        // Leave the namespace's tables empty for what follows.
        Proxier::new(&firewall, proxy_config(), Duration::ZERO).sync(&[]).expect("empty sync");
    }
}

fn proxy_sync_at(firewall: &Firewall, label: &str, count: usize) {
    let services = synthetic(count, None);
    let mut proxier = Proxier::new(firewall, proxy_config(), Duration::ZERO);
    let first = Instant::now();
    proxier.sync(&services).expect("first sync");
    report(&format!("proxy_first_sync_{label}"), first.elapsed().as_secs_f64() * 1000.0, "ms");
    let samples: Vec<f64> = (0..3)
        .map(|_| {
            let start = Instant::now();
            assert!(proxier.sync(&services).expect("full sync").full);
            start.elapsed().as_secs_f64()
        })
        .collect();
    report(&format!("proxy_full_sync_{label}"), median(samples) * 1000.0, "ms");

    let mut proxier = Proxier::new(firewall, proxy_config(), Duration::from_secs(3600));
    proxier.sync(&services).expect("full sync");
    let samples: Vec<f64> = (1..=RUNS as u32)
        .map(|generation| {
            let services = synthetic(count, Some((generation as usize * 997 % count, generation)));
            let start = Instant::now();
            let report = proxier.sync(&services).expect("partial sync");
            let elapsed = start.elapsed().as_secs_f64();
            assert!(!report.full && report.lines_written > 0, "{report:?}");
            elapsed
        })
        .collect();
    report(&format!("proxy_partial_sync_{label}"), median(samples) * 1000.0, "ms");
}

/// `pod_net_setup`, `pod_net_teardown`: one pod's address, veth, routes (the bridge and
/// the node's rules exist already), and their removal, on fresh network namespaces.
pub fn pod_net_setup_teardown() {
    const PODS: usize = 21;
    let work = testkit::temp_dir();
    let network = PodNetwork::new(NetworkConfig {
        bridge: "benchbr0".into(),
        pod_cidr: "10.99.0.0/16".parse().unwrap(),
        mtu: None,
        lease_dir: work.path().join("leases"),
        mode: None,
    });
    let namespaces: Vec<testkit::netns::Netns> =
        (0..=PODS).map(|i| testkit::netns::Netns::new(&work.path().join(format!("pod{i}")))).collect();
    // The first pod makes the bridge and the node's rules.
    network.setup("warm-up", namespaces[0].path()).expect("setup");
    network.teardown("warm-up", namespaces[0].path()).expect("teardown");
    let (mut setups, mut teardowns, mut ip_deletes) = (Vec::new(), Vec::new(), Vec::new());
    for (i, netns) in namespaces[1..].iter().enumerate() {
        let uid = format!("bench-pod-{i}");
        let start = Instant::now();
        network.setup(&uid, netns.path()).expect("setup");
        setups.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        network.teardown(&uid, netns.path()).expect("teardown");
        teardowns.push(start.elapsed().as_secs_f64());
        // The floor: the kernel unregisters a veth pair after RCU grace periods, whoever asks.
        let netns = netns.path().to_str().unwrap();
        run(Command::new("ip").args([
            "link",
            "add",
            "benchveth",
            "type",
            "veth",
            "peer",
            "name",
            "eth1",
            "netns",
            netns,
        ]));
        let start = Instant::now();
        run(Command::new("ip").args(["link", "del", "benchveth"]));
        ip_deletes.push(start.elapsed().as_secs_f64());
    }
    report("pod_net_setup", median(setups) * 1000.0, "ms");
    report("pod_net_teardown", median(teardowns) * 1000.0, "ms");
    report("pod_net_teardown_ip_link_del", median(ip_deletes) * 1000.0, "ms");
}

/// A node with two pods: `server` answers each connection's line with `pong` (on a thread
/// of ours in its network namespace), `client` is where requests start from.
struct EchoPods {
    node: BenchNode,
    server_ip: Ipv4Addr,
    client_netns: PathBuf,
    stop: Arc<AtomicBool>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl EchoPods {
    fn start(podctl: &Path) -> EchoPods {
        let node = BenchNode::new(podctl);
        for name in ["server", "client"] {
            run(node.command().args(["run", "-d", "--name", name, "busybox", "--", "sleep", "600"]));
        }
        let server_ip = pod_ip(&node, "server");
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let (netns, stop) = (pod_netns(&node, "server"), stop.clone());
            std::thread::spawn(move || serve(&netns, &stop))
        };
        let client_netns = pod_netns(&node, "client");
        EchoPods { node, server_ip, client_netns, stop, server: Some(server) }
    }

    /// A service port at `cluster_ip:80` to the server's 8080.
    fn service(&self, cluster_ip: Ipv4Addr) -> ServicePort {
        ServicePort {
            namespace: "bench".into(),
            name: "echo".into(),
            port_name: String::new(),
            protocol: Protocol::Tcp,
            cluster_ip,
            port: 80,
            node_port: None,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            source_ranges: Vec::new(),
            internal_local: false,
            external_local: false,
            affinity_timeout: None,
            endpoints: vec![SocketAddrV4::new(self.server_ip, 8080)],
            local_endpoints: Vec::new(),
        }
    }

    /// Runs `f` on a thread inside the client pod's network namespace.
    fn in_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let netns = self.client_netns.clone();
        std::thread::spawn(move || {
            enter_netns(&netns);
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for EchoPods {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&SocketAddrV4::new(self.server_ip, 8080).into(), Duration::from_secs(1));
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
        run(self.node.command().args(["rm", "-f", "server", "client"]));
    }
}

/// `clusterip_overhead`: the median time of one request (connect, send, receive the answer,
/// close) from one pod to another through a cluster IP, against straight to the pod's
/// address; the same two pods, blocks alternating. Printed as percent extra.
pub fn clusterip_overhead(podctl: &Path) {
    const BLOCKS: usize = 20;
    const PER_BLOCK: usize = 100;
    let pods = EchoPods::start(podctl);
    let firewall = Firewall::new(None).expect("a packet filter");
    let cluster_ip = Ipv4Addr::new(10, 96, 0, 10);
    Proxier::new(&firewall, proxy_config(), Duration::ZERO).sync(&[pods.service(cluster_ip)]).expect("proxy sync");
    let targets = [SocketAddrV4::new(pods.server_ip, 8080), SocketAddrV4::new(cluster_ip, 80)];
    let (direct, through_service) = pods.in_client(move || {
        let mut samples = [Vec::new(), Vec::new()];
        for block in 0..BLOCKS {
            for which in [block % 2, 1 - block % 2] {
                for _ in 0..PER_BLOCK {
                    samples[which].push(request(targets[which]));
                }
            }
        }
        let [direct, service] = samples;
        (median(direct), median(service))
    });
    Proxier::new(&firewall, proxy_config(), Duration::ZERO).sync(&[]).expect("empty sync");
    drop(pods);
    report("clusterip_request_direct", direct * 1e6, "us");
    report("clusterip_request_service", through_service * 1e6, "us");
    report("clusterip_overhead", (through_service / direct - 1.0) * 100.0, "%");
}

/// `clusterip_first_packet_{10,10k}`: the time a connection to a cluster IP takes to set up
/// (the first packet is the one the proxy's rules look at) while 10 and while 10,000
/// Services exist, blocks alternating; `clusterip_first_packet_10k_ratio` is the one over
/// the other. On nftables, then on iptables-legacy as the peer (`_iptables`).
pub fn clusterip_first_packet(podctl: &Path) {
    const BLOCKS: usize = 6;
    const PER_BLOCK: usize = 300;
    let pods = EchoPods::start(podctl);
    // Out of the synthetic services' range (10.96.0.1 on), and last in iptables' chain of
    // services (sorted by name): the peer's worst case, a linear walk of all of them.
    let echo = ServicePort { namespace: "zz-bench".into(), ..pods.service(Ipv4Addr::new(10, 95, 0, 10)) };
    let target = SocketAddrV4::new(echo.cluster_ip, 80);
    let mut peers = vec![(Firewall::Nftables, "")];
    peers.extend(Iptables::named("iptables-legacy").map(|i| (Firewall::Iptables(i), "_iptables")));
    for (firewall, suffix) in peers {
        let sets: Vec<Vec<ServicePort>> =
            [9, 9_999].into_iter().map(|n| std::iter::once(echo.clone()).chain(synthetic(n, None)).collect()).collect();
        let mut proxier = Proxier::new(&firewall, proxy_config(), Duration::from_secs(3600));
        let mut samples = [Vec::new(), Vec::new()];
        for block in 0..BLOCKS {
            let which = block % 2;
            proxier.sync(&sets[which]).expect("proxy sync");
            samples[which].extend(pods.in_client(move || (0..PER_BLOCK).map(|_| connect(target)).collect::<Vec<_>>()));
        }
        proxier.sync(&[]).expect("empty sync");
        net::proxy::remove_other_backend(&Firewall::Iptables(Iptables::detect())).expect("clean nftables");
        let [few, many] = samples.map(median);
        report(&format!("clusterip_first_packet_10{suffix}"), few * 1e6, "us");
        report(&format!("clusterip_first_packet_10k{suffix}"), many * 1e6, "us");
        report(&format!("clusterip_first_packet_10k_ratio{suffix}"), many / few, "x");
    }
}

/// The time TCP's handshake takes through to `target`.
fn connect(target: SocketAddrV4) -> f64 {
    let start = Instant::now();
    let stream = TcpStream::connect(target).expect("connect");
    let elapsed = start.elapsed().as_secs_f64();
    drop(stream);
    elapsed
}

fn request(target: SocketAddrV4) -> f64 {
    let start = Instant::now();
    let mut stream = TcpStream::connect(target).expect("connect");
    stream.write_all(b"ping\n").unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"pong\n");
    start.elapsed().as_secs_f64()
}

/// Answers each connection's line with `pong` until `stop`.
fn serve(netns: &Path, stop: &AtomicBool) {
    enter_netns(netns);
    let listener = TcpListener::bind("0.0.0.0:8080").expect("bind");
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut stream = stream.expect("accept");
        let mut line = [0u8; 5];
        if stream.read_exact(&mut line).is_ok() {
            let _ = stream.write_all(b"pong\n");
        }
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter_netns(path: &Path) {
    let file = fs::File::open(path).expect("open netns");
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

fn pod_uid(node: &BenchNode, name: &str) -> String {
    let pods = node.dir.path().join("run/pods");
    fs::read_dir(&pods)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| {
            let record: serde_json::Value =
                serde_json::from_slice(&fs::read(e.path().join("pod.json")).unwrap_or_default()).unwrap_or_default();
            record["spec"]["name"] == name
        })
        .map(|e| e.file_name().into_string().unwrap())
        .unwrap_or_else(|| panic!("pod {name}"))
}

fn pod_netns(node: &BenchNode, name: &str) -> PathBuf {
    node.dir.path().join("run/netns").join(pod_uid(node, name))
}

fn pod_ip(node: &BenchNode, name: &str) -> Ipv4Addr {
    let uid = pod_uid(node, name);
    let leases = node.dir.path().join("data/net/leases");
    fs::read_dir(&leases)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| fs::read_to_string(e.path()).is_ok_and(|owner| owner.trim() == uid))
        .and_then(|e| e.file_name().to_str()?.parse().ok())
        .unwrap_or_else(|| panic!("lease of pod {name}"))
}
