//! The pod network and the service proxy, as root. Every test runs its nodes in network
//! namespaces it made (testkit's Node), with no route off the machine: bridges, veths,
//! routes and iptables rules all land there and go with them.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use testkit::netns::{self, Netns};
use testkit::node::Node;

const PODCTL: &str = env!("CARGO_BIN_EXE_podctl");

/// The packet filter a test's node keeps its rules in (`--proxy-mode`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Nftables,
    Iptables,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Nftables => "nftables",
            Mode::Iptables => "iptables",
        }
    }

    fn node(self) -> Node {
        Node::new(PODCTL).with_busybox().with_env("PODCTL_PROXY_MODE", self.name())
    }

    /// Everything this packet filter holds in `netns`.
    fn rules(self, netns: &Netns) -> String {
        match self {
            Mode::Nftables => netns.run("nft", &["list", "ruleset"]),
            Mode::Iptables => iptables_save(netns, "nat") + &iptables_save(netns, "filter"),
        }
    }
}

/// A test run once per packet filter: `name::nftables` and `name::iptables`.
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn nftables() {
                super::$name(super::Mode::Nftables)
            }
            #[test]
            fn iptables() {
                super::$name(super::Mode::Iptables)
            }
        }
    )*};
}

in_both_modes!(
    pods_on_the_bridge_reach_each_other_and_leave_nothing,
    cluster_ip_balances_node_port_reaches_hairpin_affinity_holds_and_no_endpoints_rejects,
    a_resync_removes_stale_chains_and_repairs_what_was_flushed,
    pods_on_two_nodes_talk_without_nat,
    a_sync_killed_midway_leaves_the_old_rules_or_the_new,
    a_udp_flow_follows_its_service_to_a_new_endpoint,
    local_policies_keep_to_this_nodes_endpoints_and_the_clients_address,
    load_balancer_source_ranges_admit_their_sources_only,
);

fn node() -> Node {
    Node::new(PODCTL).with_busybox()
}

/// A pod that serves its /etc (so `/hostname` names it) over HTTP on `port`.
fn web(node: &Node, name: &str, port: u16) -> String {
    node.ok(&[
        "run",
        "-d",
        "--name",
        name,
        "busybox",
        "--",
        "httpd",
        "-f",
        "-vv",
        "-p",
        &port.to_string(),
        "-h",
        "/etc",
    ]);
    node.pod_ip(name)
}

fn sleeper(node: &Node, name: &str) -> String {
    node.ok(&["run", "-d", "--name", name, "busybox", "--", "sleep", "600"]);
    node.pod_ip(name)
}

/// Runs `script` with sh in pod `name`; returns (exit code, stdout + stderr).
fn exec(node: &Node, name: &str, script: &str) -> (i32, String) {
    let out = node.podctl(&["exec", name, "--", "sh", "-c", script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn links(netns: &Netns) -> Vec<String> {
    netns
        .ip(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect()
}

fn leases(node: &Node) -> Vec<String> {
    let dir = node.data_dir().join("net/leases");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    names.sort();
    names
}

fn iptables_save(netns: &Netns, table: &str) -> String {
    netns.run("iptables-save", &["-t", table])
}

fn pods_on_the_bridge_reach_each_other_and_leave_nothing(mode: Mode) {
    let node = mode.node();
    let a = web(&node, "a", 80);
    let b = sleeper(&node, "b");
    assert_ne!(a, b);
    for ip in [&a, &b] {
        assert!(ip.starts_with("10.88."), "{ip} from the default pod CIDR");
    }
    let (code, out) = exec(&node, "b", &format!("wget -qO- http://{a}/hostname && grep -w b /etc/hosts && ip route"));
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("a\n"), "{out}");
    assert!(out.contains(&format!("{b}\tb")), "pod's own address in /etc/hosts: {out}");
    assert!(out.contains("default via 10.88.0.1 dev eth0"), "{out}");

    let bridge = node.netns.ip(&["-o", "addr", "show", "podctl0"]);
    assert!(bridge.contains("inet 10.88.0.1/16"), "{bridge}");
    let veths: Vec<String> = links(&node.netns).into_iter().filter(|l| l.starts_with("veth")).collect();
    assert_eq!(veths.len(), 2, "{veths:?}");
    let hairpin = node.netns.run("bridge", &["-d", "link", "show", "dev", &veths[0]]);
    assert!(hairpin.contains("hairpin on"), "{hairpin}");
    let rules = mode.rules(&node.netns);
    match mode {
        Mode::Nftables => {
            assert!(rules.contains("table ip podctl {"), "{rules}");
            assert!(rules.contains("ip saddr 10.88.0.0/16 ip daddr != 224.0.0.0/4 masquerade"), "{rules}");
            assert!(!iptables_save(&node.netns, "nat").contains("PODCTL"), "nothing of ours in iptables");
        }
        Mode::Iptables => {
            assert!(rules.contains("-A PODCTL-POSTROUTING -s 10.88.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE"), "{rules}");
            assert!(
                rules.contains("-A POSTROUTING -m comment --comment \"podctl pod network\" -j PODCTL-POSTROUTING"),
                "{rules}"
            );
            assert!(!node.netns.run("nft", &["list", "tables"]).contains("ip podctl"), "nothing of ours in nftables");
        }
    }
    assert_eq!(node.netns.run("cat", &["/proc/sys/net/ipv4/ip_forward"]).trim(), "1");

    node.ok(&["rm", "-f", "a", "b"]);
    assert!(leases(&node).is_empty(), "{:?}", leases(&node));
    // The kernel destroys each veth pair with its pod's namespace, in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while links(&node.netns).iter().any(|l| l.starts_with("veth")) {
        assert!(std::time::Instant::now() < deadline, "veths left: {:?}", links(&node.netns));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn net_none_and_host() {
    let node = node();
    let out =
        node.ok(&["run", "--rm", "--net", "none", "busybox", "--", "sh", "-c", "ls /sys/class/net | tr '\\n' ' '"]);
    assert_eq!(out.trim(), "lo");
    node.netns.ip(&["link", "add", "marker0", "type", "veth", "peer", "name", "marker1"]);
    let out =
        node.ok(&["run", "--rm", "--net", "host", "busybox", "--", "sh", "-c", "ls /sys/class/net | tr '\\n' ' '"]);
    assert!(out.contains("marker0"), "the node's interfaces: {out}");
    assert!(leases(&node).is_empty());
}

#[test]
fn exhausted_cidr_is_a_clear_error_and_leaves_nothing() {
    // A /30 holds the gateway and one pod.
    let node = node().with_env("PODCTL_POD_CIDR", "10.7.0.0/30");
    sleeper(&node, "one");
    let err = node.fails(&["run", "-d", "--name", "two", "busybox", "--", "sleep", "1"]);
    assert!(err.contains("no free address left in pod CIDR 10.7.0.0/30"), "{err}");
    assert_eq!(node.ok(&["ps", "-a", "-q"]).trim(), "one", "the failed pod is gone");
    assert_eq!(links(&node.netns).iter().filter(|l| l.starts_with("veth")).count(), 1);
}

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: web, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec:
  clusterIP: 10.96.0.11
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: self, namespace: shop}
spec:
  clusterIP: 10.96.0.12
  ports: [{port: 8000, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: shop}
spec:
  clusterIP: 10.96.0.13
  sessionAffinity: ClientIP
  ports: [{port: 80, targetPort: 8080}]
"#;

fn endpoints(name: &str, ips: &[&str], port_name: Option<&str>, port: u16) -> String {
    let addresses: Vec<String> = ips.iter().map(|ip| format!("{{ip: {ip}}}")).collect();
    let name_field = port_name.map(|n| format!("name: {n}, ")).unwrap_or_default();
    format!(
        "---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: shop}}\nsubsets: [{{addresses: [{}], ports: [{{{name_field}port: {port}}}]}}]\n",
        addresses.join(", ")
    )
}

fn cluster_ip_balances_node_port_reaches_hairpin_affinity_holds_and_no_endpoints_rejects(mode: Mode) {
    let node = mode.node();
    // A default route, as a real node has, to a fake upstream: without one a cluster IP
    // with no rules is simply unreachable, and the REJECT rule would go untested.
    let upstream = Netns::new(&node.dir.path().join("upstream"));
    netns::link(&node.netns, "up0", "192.168.99.1/24", &upstream, "up1", "192.168.99.2/24");
    node.netns.ip(&["route", "add", "default", "via", "192.168.99.2"]);
    let backends: Vec<String> = (0..3).map(|i| web(&node, &format!("web-{i}"), 8080)).collect();
    sleeper(&node, "client");
    let manifest = node.dir.path().join("services.yaml");
    let ips: Vec<&str> = backends.iter().map(String::as_str).collect();
    std::fs::write(
        &manifest,
        format!(
            "{SERVICES}{}{}{}",
            endpoints("web", &ips, Some("http"), 8080),
            endpoints("self", &ips[..1], None, 8080),
            endpoints("sticky", &ips, None, 8080)
        ),
    )
    .unwrap();
    let printed = node.ok(&["proxy", "--print", "-f", manifest.to_str().unwrap()]);
    let capture = match mode {
        Mode::Nftables => "add element ip kube-proxy service-ips { 10.96.0.10 . tcp . 80 : goto service-",
        Mode::Iptables => "-A KUBE-SERVICES -m comment --comment \"shop/web:http cluster IP\"",
    };
    assert!(printed.contains(capture), "{printed}");
    node.ok(&["proxy", "-f", manifest.to_str().unwrap()]);

    // 300 requests through the cluster IP reach all three pods.
    let (code, out) = exec(&node, "client", "for i in $(seq 300); do wget -qO- http://10.96.0.10/hostname; done");
    assert_eq!(code, 0, "{out}");
    let seen: HashSet<&str> = out.lines().collect();
    assert_eq!(seen, HashSet::from(["web-0", "web-1", "web-2"]), "{out}");
    assert_eq!(out.lines().count(), 300);

    // The NodePort, from the node itself, on its address on the bridge.
    let out = node.netns.run(testkit::BUSYBOX, &["wget", "-qO-", "http://10.88.0.1:30080/hostname"]);
    assert!(out.starts_with("web-"), "{out}");

    // Hairpin: web-0 reaches itself through a service whose only endpoint it is.
    let (code, out) = exec(&node, "web-0", "for i in 1 2 3; do wget -qO- http://10.96.0.12:8000/hostname; done");
    assert_eq!((code, out.as_str()), (0, "web-0\nweb-0\nweb-0\n"));

    // ClientIP affinity: every request of one client goes to the same pod.
    let (code, out) = exec(&node, "client", "for i in $(seq 30); do wget -qO- http://10.96.0.13/hostname; done");
    assert_eq!(code, 0, "{out}");
    let seen: HashSet<&str> = out.lines().collect();
    assert_eq!((seen.len(), out.lines().count()), (1, 30), "{out}");

    // No endpoints: refused at once rather than left to time out (busybox wget -T crashes).
    let (code, out) = exec(&node, "client", "timeout 10 wget -O- http://10.96.0.11/");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("refused"), "{code} {out}");
}

fn udp_service(endpoint: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: shop}}\nspec: {{clusterIP: 10.96.0.30, ports: [{{port: 9000, protocol: UDP}}]}}\n\
         ---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: echo, namespace: shop}}\nsubsets: [{{addresses: [{{ip: {endpoint}}}], ports: [{{port: 9000, protocol: UDP}}]}}]\n"
    )
}

/// socat in the network namespace of pod `name` (nsenter execs it: the child is socat
/// itself), ending after a minute without traffic whatever becomes of the test.
fn socat_in(node: &Node, name: &str, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new("nsenter");
    command.args([&format!("--net=/proc/{}/ns/net", node.pod_init_pid(name)), "socat", "-T", "60"]).args(args);
    command
}

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// NAT is decided on a flow's first packet: unless the proxy deletes the flow, a client
/// that keeps its source port keeps reaching the endpoint that left the service.
fn a_udp_flow_follows_its_service_to_a_new_endpoint(mode: Mode) {
    let node = mode.node();
    let endpoints: Vec<String> = (0..2).map(|i| sleeper(&node, &format!("udp-{i}"))).collect();
    sleeper(&node, "client");
    let received = |i: usize| std::fs::read_to_string(node.dir.path().join(format!("udp-{i}.log"))).unwrap_or_default();
    let _servers: Vec<Killed> = (0..2)
        .map(|i| {
            let log = node.dir.path().join(format!("udp-{i}.log"));
            let to = format!("OPEN:{},creat,append", log.display());
            Killed(socat_in(&node, &format!("udp-{i}"), &["-u", "UDP-RECV:9000", &to]).spawn().unwrap())
        })
        .collect();
    let send = |word: &str| {
        let mut client = socat_in(&node, "client", &["-u", "-", "UDP-SENDTO:10.96.0.30:9000,sourceport=4444"]);
        let mut client = client.stdin(std::process::Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(&mut client.stdin.take().unwrap(), format!("{word}\n").as_bytes()).unwrap();
        assert!(client.wait().unwrap().success());
    };
    let manifest = node.dir.path().join("echo.yaml");

    std::fs::write(&manifest, udp_service(&endpoints[0])).unwrap();
    node.ok(&["proxy", "-f", manifest.to_str().unwrap()]);
    // Until the server listens, a datagram may find no socket: send until one arrives.
    testkit::eventually("udp-0 receives a datagram", 10, || {
        send("one");
        received(0).contains("one")
    });

    std::fs::write(&manifest, udp_service(&endpoints[1])).unwrap();
    node.ok(&["proxy", "-f", manifest.to_str().unwrap()]);
    send("two");
    testkit::eventually("udp-1 receives the datagram sent after the change", 10, || received(1).contains("two"));
    assert!(!received(0).contains("two"), "{}", received(0));
}

/// `local`: one endpoint on this node (`node-a`), one on another (unreachable from here);
/// external IP 192.168.99.50 and a node port; both traffic policies Local. `inside`: the
/// same endpoints, a cluster IP only. `remote`: an endpoint on the other node only.
fn local_services(here: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: local, namespace: shop}}
spec:
  type: NodePort
  clusterIP: 10.96.0.40
  externalIPs: [192.168.99.50]
  internalTrafficPolicy: Local
  externalTrafficPolicy: Local
  ports: [{{port: 80, targetPort: 8080, nodePort: 30090}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: local, namespace: shop}}
subsets: [{{addresses: [{{ip: {here}, nodeName: node-a}}, {{ip: 10.89.0.2, nodeName: node-b}}], ports: [{{port: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: inside, namespace: shop}}
spec: {{clusterIP: 10.96.0.42, internalTrafficPolicy: Local, ports: [{{port: 80, targetPort: 8080}}]}}
---
apiVersion: v1
kind: Endpoints
metadata: {{name: inside, namespace: shop}}
subsets: [{{addresses: [{{ip: {here}, nodeName: node-a}}, {{ip: 10.89.0.4, nodeName: node-b}}], ports: [{{port: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: remote, namespace: shop}}
spec: {{clusterIP: 10.96.0.41, internalTrafficPolicy: Local, ports: [{{port: 80, targetPort: 8080}}]}}
---
apiVersion: v1
kind: Endpoints
metadata: {{name: remote, namespace: shop}}
subsets: [{{addresses: [{{ip: 10.89.0.3, nodeName: node-b}}], ports: [{{port: 8080}}]}}]
"#
    )
}

/// internalTrafficPolicy and externalTrafficPolicy Local: traffic goes to this node's
/// endpoint only (the other node's would not answer), from outside with the client's own
/// address; with no endpoint here, packets are dropped, not refused.
fn local_policies_keep_to_this_nodes_endpoints_and_the_clients_address(mode: Mode) {
    let node = mode.node();
    let upstream = Netns::new(&node.dir.path().join("upstream"));
    netns::link(&node.netns, "up0", "192.168.99.1/24", &upstream, "up1", "192.168.99.2/24");
    node.netns.ip(&["route", "add", "default", "via", "192.168.99.2"]);
    upstream.ip(&["route", "add", "192.168.99.50/32", "via", "192.168.99.1"]);
    upstream.ip(&["route", "add", "10.96.0.0/16", "via", "192.168.99.1"]);
    let web = web(&node, "web-0", 8080);
    sleeper(&node, "client");
    let manifest = node.dir.path().join("local.yaml");
    std::fs::write(&manifest, local_services(&web)).unwrap();
    node.ok(&["proxy", "--node-name", "node-a", "-f", manifest.to_str().unwrap()]);

    // In the cluster, through the cluster IPs: always the endpoint on this node.
    for ip in ["10.96.0.40", "10.96.0.42"] {
        let script = format!("for i in $(seq 20); do wget -qO- http://{ip}/hostname; done");
        let (code, out) = exec(&node, "client", &script);
        assert_eq!((code, out.lines().filter(|l| *l == "web-0").count()), (0, 20), "{ip}: {out}");
    }

    // From outside, through the external IP and the node port: the same, and the pod
    // sees the client's address, not the node's.
    for url in ["http://192.168.99.50/hostname", "http://192.168.99.1:30090/hostname"] {
        for _ in 0..10 {
            let out = upstream.run(testkit::BUSYBOX, &["wget", "-qO-", url]);
            assert_eq!(out, "web-0\n", "{url}");
        }
    }
    let script = "mkdir -p /etc/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' \
                  > /etc/cgi-bin/client && chmod +x /etc/cgi-bin/client";
    assert_eq!(exec(&node, "web-0", script).0, 0);
    for url in ["http://192.168.99.50/cgi-bin/client", "http://192.168.99.1:30090/cgi-bin/client"] {
        // busybox httpd listens on IPv6 and names IPv4 clients in their mapped form.
        assert_eq!(upstream.run(testkit::BUSYBOX, &["wget", "-qO-", url]), "[::ffff:192.168.99.2]\n", "{url}");
    }

    // Endpoints on the other node only: dropped (a timeout), not refused.
    let (code, out) = exec(&node, "client", "timeout 3 wget -qO- http://10.96.0.41/");
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("refused"), "{out}");
}

/// A LoadBalancer service whose loadBalancerSourceRanges admit one of two outside
/// networks: its load balancer address answers that one and drops the other's packets
/// (a timeout, not a refusal); its node port, which the ranges do not cover, answers both.
fn load_balancer_source_ranges_admit_their_sources_only(mode: Mode) {
    let node = mode.node();
    let admitted = Netns::new(&node.dir.path().join("admitted"));
    let other = Netns::new(&node.dir.path().join("other"));
    netns::link(&node.netns, "up0", "192.168.99.1/24", &admitted, "up1", "192.168.99.2/24");
    netns::link(&node.netns, "ot0", "192.168.98.1/24", &other, "ot1", "192.168.98.2/24");
    node.netns.ip(&["route", "add", "default", "via", "192.168.99.2"]);
    admitted.ip(&["route", "add", "192.168.97.10/32", "via", "192.168.99.1"]);
    other.ip(&["route", "add", "192.168.97.10/32", "via", "192.168.98.1"]);
    let web = web(&node, "web-0", 8080);
    let manifest = node.dir.path().join("lb.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: lb, namespace: shop}}\n\
             spec: {{type: LoadBalancer, clusterIP: 10.96.0.60, loadBalancerSourceRanges: [192.168.99.0/24], \
             ports: [{{port: 80, targetPort: 8080, nodePort: 30091}}]}}\n\
             status: {{loadBalancer: {{ingress: [{{ip: 192.168.97.10}}]}}}}\n{}",
            endpoints("lb", &[&web], None, 8080)
        ),
    )
    .unwrap();
    node.ok(&["proxy", "-f", manifest.to_str().unwrap()]);

    let lb = "http://192.168.97.10/hostname";
    assert_eq!(admitted.run(testkit::BUSYBOX, &["wget", "-qO-", lb]), "web-0\n");
    let mut wget = std::process::Command::new("timeout");
    wget.args(["3", testkit::BUSYBOX, "wget", "-qO-", lb]);
    other.enter(&mut wget);
    let dropped = wget.output().unwrap();
    assert!(!dropped.status.success(), "{dropped:?}");
    assert!(!String::from_utf8_lossy(&dropped.stderr).contains("refused"), "{dropped:?}");
    for (netns, node_ip) in [(&admitted, "192.168.99.1"), (&other, "192.168.98.1")] {
        let url = format!("http://{node_ip}:30091/hostname");
        assert_eq!(netns.run(testkit::BUSYBOX, &["wget", "-qO-", &url]), "web-0\n", "{url}");
    }
}

fn a_resync_removes_stale_chains_and_repairs_what_was_flushed(mode: Mode) {
    let node = mode.node();
    let manifest = node.dir.path().join("services.yaml");
    std::fs::write(
        &manifest,
        format!("{SERVICES}{}", endpoints("web", &["10.88.0.50", "10.88.0.51"], Some("http"), 8080)),
    )
    .unwrap();
    node.ok(&["proxy", "-f", manifest.to_str().unwrap()]);
    // The endpoints the rules send to: in the endpoint map (nftables), in endpoint chains
    // (iptables).
    let routed = |rules: &str| match mode {
        Mode::Nftables => rules.matches(" . 8080").count(),
        Mode::Iptables => rules.lines().filter(|l| l.starts_with(":KUBE-SEP-")).count(),
    };
    let before = mode.rules(&node.netns);
    assert_eq!(routed(&before), 2, "{before}");
    // One endpoint goes: it leaves the rules, the rest stays; jumps are not duplicated.
    std::fs::write(&manifest, format!("{SERVICES}{}", endpoints("web", &["10.88.0.50"], Some("http"), 8080))).unwrap();
    node.ok(&["proxy", "-f", manifest.to_str().unwrap()]);
    let after = mode.rules(&node.netns);
    assert_eq!(routed(&after), 1, "{after}");
    let captured = match mode {
        Mode::Nftables => "10.96.0.10 . tcp . 80 : goto service-",
        Mode::Iptables => "-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"shop/web:http cluster IP\"",
    };
    assert!(after.contains(captured), "{after}");
    match mode {
        Mode::Nftables => {
            assert_eq!(after.matches("jump services").count(), 2, "nat-prerouting and nat-output: {after}");
            // Someone flushes the whole table, then someone deletes it: each time the next
            // sync puts it back.
            node.netns.run("nft", &["flush", "table", "ip", "kube-proxy"]);
            node.ok(&["proxy", "-f", manifest.to_str().unwrap()]);
            assert_eq!(mode.rules(&node.netns), after);
            node.netns.run("nft", &["delete", "table", "ip", "kube-proxy"]);
        }
        Mode::Iptables => {
            assert_eq!(
                after.lines().filter(|l| l.starts_with("-A PREROUTING") && l.ends_with("-j KUBE-SERVICES")).count(),
                1
            );
            // Someone flushes our chains and removes a jump: the next sync puts them back.
            node.netns.run("iptables", &["-t", "nat", "-F", "KUBE-SERVICES"]);
            let jump = ["-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"];
            node.netns.run("iptables", &[&["-t", "nat", "-D", "PREROUTING"][..], &jump].concat());
        }
    }
    node.ok(&["proxy", "-f", manifest.to_str().unwrap()]);
    assert_eq!(mode.rules(&node.netns).replace(char::is_numeric, ""), after.replace(char::is_numeric, ""));
}

/// `count` Services with one endpoint each, cluster IPs from `10.96.<block>.1` on.
fn many_services(block: u8, count: u8) -> String {
    (1..=count)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{block}-{i}, namespace: shop}}\n\
                 spec: {{clusterIP: 10.96.{block}.{i}, ports: [{{port: 80}}]}}\n{}",
                endpoints(&format!("s{block}-{i}"), &[&format!("10.88.{block}.{i}")], None, 8080)
            )
        })
        .collect()
}

/// The cluster IPs the proxy's rules capture.
fn captured_ips(mode: Mode, netns: &Netns) -> Vec<String> {
    let rules = match mode {
        Mode::Nftables => netns.run("nft", &["list", "map", "ip", "kube-proxy", "service-ips"]),
        Mode::Iptables => iptables_save(netns, "nat"),
    };
    let mut ips: Vec<String> = rules
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|word| word.starts_with("10.96.") && word.split('.').count() == 4)
        .map(String::from)
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// podctl killed at any point of a sync: the node holds the rules from before or those
/// from after, never part of each (the rule set goes to the kernel in one transaction, and
/// to nft or iptables-restore whole before either starts).
fn a_sync_killed_midway_leaves_the_old_rules_or_the_new(mode: Mode) {
    let node = mode.node();
    let sets = [many_services(1, 200), many_services(2, 200)];
    let manifests: Vec<String> = sets
        .iter()
        .enumerate()
        .map(|(i, set)| {
            let path = node.dir.path().join(format!("services-{i}.yaml"));
            std::fs::write(&path, set).unwrap();
            path.to_str().unwrap().to_string()
        })
        .collect();
    let ips = |block: u8| -> Vec<String> {
        let mut ips: Vec<String> = (1..=200).map(|i| format!("10.96.{block}.{i}")).collect();
        ips.sort();
        ips
    };
    let start = std::time::Instant::now();
    node.ok(&["proxy", "-f", &manifests[0]]);
    let sync_time = start.elapsed();
    assert_eq!(captured_ips(mode, &node.netns), ips(1));
    // From set 1 to set 2, killed later each round; then back to set 1.
    let mut outcomes = HashSet::new();
    for round in 0..10u32 {
        let mut child =
            node.command().args(["proxy", "-f", &manifests[1]]).stdout(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(sync_time * round / 4);
        let _ = child.kill();
        let _ = child.wait();
        // An nft or iptables-restore already started runs to its end: wait for the rules
        // to stop changing.
        let mut seen = captured_ips(mode, &node.netns);
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(100));
            let now = captured_ips(mode, &node.netns);
            if now == seen {
                break;
            }
            seen = now;
        }
        assert!(seen == ips(1) || seen == ips(2), "round {round}: a mix of {} addresses", seen.len());
        outcomes.insert(seen == ips(2));
        node.ok(&["proxy", "-f", &manifests[0]]);
    }
    assert_eq!(outcomes.len(), 2, "some rounds ended before the new rules, some after: {outcomes:?}");
}

/// A node that changes modes keeps its rules in the new packet filter only: the service
/// proxy's, the pod network's and the host ports'.
#[test]
fn changing_modes_moves_every_rule_to_the_new_packet_filter() {
    let node = node();
    let manifest = node.dir.path().join("services.yaml");
    std::fs::write(&manifest, format!("{SERVICES}{}", endpoints("web", &["10.88.0.50"], Some("http"), 8080))).unwrap();
    let podctl = |mode: &str, args: &[&str]| {
        let out = node.command().env("PODCTL_PROXY_MODE", mode).args(args).output().unwrap();
        assert!(out.status.success(), "podctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let in_iptables = || iptables_save(&node.netns, "nat") + &iptables_save(&node.netns, "filter");
    let in_nftables = || node.netns.run("nft", &["list", "tables"]);
    for (mode, other) in [("iptables", "nftables"), ("nftables", "iptables"), ("iptables", "nftables")] {
        podctl(mode, &["proxy", "-f", manifest.to_str().unwrap()]);
        podctl(
            mode,
            &["run", "-d", "--name", &format!("web-{mode}-{other}"), "-p", "18080:80", "busybox", "--", "sleep", "60"],
        );
        podctl(mode, &["ps"]);
        let (iptables, nftables) = (in_iptables(), in_nftables());
        if mode == "nftables" {
            assert!(nftables.contains("table ip kube-proxy") && nftables.contains("table ip podctl"), "{nftables}");
            assert!(!iptables.contains("KUBE-") && !iptables.contains("PODCTL-"), "{iptables}");
        } else {
            for chain in ["KUBE-SERVICES", "PODCTL-POSTROUTING", "PODCTL-HOSTPORTS"] {
                assert!(iptables.contains(chain), "{chain}: {iptables}");
            }
            assert!(!nftables.contains("kube-proxy") && !nftables.contains("podctl"), "{nftables}");
        }
        podctl(mode, &["rm", "-f", &format!("web-{mode}-{other}")]);
    }
}

#[test]
fn after_a_crash_addresses_are_kept_and_nothing_leaks() {
    let node = node();
    let kept = sleeper(&node, "kept");
    let lost = sleeper(&node, "lost");
    let uid_of = |name: &str| {
        let dir = node.run_dir().join("pods");
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| {
                std::fs::read_to_string(e.path().join("pod.json"))
                    .unwrap_or_default()
                    .contains(&format!("\"name\":\"{name}\""))
            })
            .map(|e| e.file_name().into_string().unwrap())
            .expect("pod state")
    };
    let lost_uid = uid_of("lost");
    // The node goes down hard in the middle of removing `lost`: its pod init is killed and
    // its state is gone, but its netns file, veth and lease are still there.
    let init: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.run_dir().join("pods").join(&lost_uid).join("init.json")).unwrap())
            .unwrap();
    // SAFETY: signalling the pod init this test started.
    unsafe { libc::kill(init["pid"].as_i64().unwrap() as i32, libc::SIGKILL) };
    let state = node.run_dir().join("pods").join(&lost_uid);
    for mount in testkit::node::mounts_under(&state).iter().rev() {
        assert!(std::process::Command::new("umount").arg(mount).status().unwrap().success());
    }
    std::fs::remove_dir_all(&state).unwrap();
    assert_eq!(leases(&node).len(), 2);

    // The next podctl puts things right.
    let ps = node.ok(&["ps", "-a"]);
    assert!(!ps.contains("lost"), "{ps}");
    assert_eq!(node.pod_ip("kept"), kept, "a surviving pod keeps its address");
    assert_eq!(leases(&node), std::slice::from_ref(&kept));
    assert!(!Path::new(&node.run_dir().join("netns").join(&lost_uid)).exists());
    assert_eq!(links(&node.netns).iter().filter(|l| l.starts_with("veth")).count(), 1, "{:?}", links(&node.netns));
    // The freed address is not handed out again at once.
    let next = sleeper(&node, "next");
    assert_ne!(next, lost);
    let (code, out) = exec(&node, "next", &format!("ping -c 1 -W 2 {kept}"));
    assert_eq!(code, 0, "{out}");
}

fn pods_on_two_nodes_talk_without_nat(mode: Mode) {
    let a = mode.node().with_env("PODCTL_POD_CIDR", "10.1.0.0/24");
    let b = mode.node().with_env("PODCTL_POD_CIDR", "10.2.0.0/24");
    netns::link(&a.netns, "under0", "192.168.50.1/24", &b.netns, "under0", "192.168.50.2/24");
    let client = sleeper(&a, "client");
    let server = web(&b, "server", 8080);
    a.ok(&["routes", "192.168.50.2=10.2.0.0/24"]);
    b.ok(&["routes", "192.168.50.1=10.1.0.0/24"]);
    let routes = a.netns.ip(&["route", "show", "10.2.0.0/24"]);
    assert!(routes.contains("via 192.168.50.2"), "{routes}");

    let (code, out) = exec(&a, "client", &format!("wget -qO- http://{server}:8080/hostname"));
    assert_eq!((code, out.as_str()), (0, "server\n"));
    // httpd -vv logs each client's address: the pod's own, not node a's.
    std::thread::sleep(Duration::from_millis(200));
    let log = b.ok(&["logs", "server"]) + &String::from_utf8_lossy(&b.podctl(&["logs", "server"]).stderr);
    assert!(log.contains(&client), "server saw {client}: {log}");

    // Routes are level-triggered: an empty list removes ours, and nothing else.
    a.ok(&["routes"]);
    assert_eq!(a.netns.ip(&["route", "show", "10.2.0.0/24"]).trim(), "");
    assert!(a.netns.ip(&["route"]).contains("192.168.50.0/24 dev under0"));
}
