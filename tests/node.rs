//! `podctl node` with `podctl apiserver`, driven by the real kubectl: the node registers,
//! keeps its lease, runs the pods bound to it (kubelet's sync loop) and serves their logs
//! and exec through the API server. The API server, the agent and their pods live in a
//! scratch node's network namespace (its bridge and veths never reach the host), and
//! kubectl runs there too.

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::apiserver::ApiServer;
use testkit::node::Node;

const PODCTL: &str = env!("CARGO_BIN_EXE_podctl");
const IMAGE: &str = "busybox:1.36";

const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec:
  nodeName: test-node
  restartPolicy: OnFailure
  containers:
  - name: app
    image: busybox:1.36
    command: [sh, -c, "echo hello; echo oops >&2; while true; do sleep 1; done"]
  - name: short
    image: busybox:1.36
    command: [sh, -c, "echo one; sleep 2; echo two"]
"#;

/// A process of the test, killed and reaped when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An API server and `podctl node` registered as `test-node` on a scratch node, both in
/// its network namespace. Dropped in this order: the agent first (it would start again
/// what the node's cleanup removes), then the API server, then the node and its pods.
struct Cluster {
    agent: Process,
    api: ApiServer,
    node: Node,
    endpoint: SocketAddr,
    flags: Vec<String>,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// With more flags for `podctl node`.
    fn start_with(flags: &[&str]) -> Cluster {
        let node = Node::new(PODCTL).with_busybox_as(IMAGE);
        let api = ApiServer::start_in(PODCTL, node.netns.path(), &[]);
        let endpoint = SocketAddr::from(([127, 0, 0, 1], 10250));
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let agent = start_agent(&node, &api, endpoint, &flags);
        let cluster = Cluster { agent, api, node, endpoint, flags };
        cluster.wait("the node registers", 10, || cluster.kubectl(&["get", "node", "test-node"]).status.success());
        cluster
    }

    /// Kills the agent with SIGKILL, as a crash would.
    fn kill_agent(&mut self) {
        let _ = self.agent.0.kill();
        let _ = self.agent.0.wait();
    }

    fn start_agent_again(&mut self) {
        self.agent = start_agent(&self.node, &self.api, self.endpoint, &self.flags);
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.api.kubectl_output(args, None)
    }

    fn apply(&self, yaml: &str) {
        self.api.kubectl_stdin(&["apply", "-f", "-"], yaml);
    }

    fn pod(&self, name: &str) -> Value {
        let out = self.kubectl(&["get", "pod", name, "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Waits up to `seconds` for `check`, saying what it waited for when it gives up.
    fn wait(&self, what: &str, seconds: u64, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while !check() {
            if Instant::now() > deadline {
                let pods = text(&self.kubectl(&["get", "pods", "-A", "-o", "wide"]).stdout);
                let events = text(&self.kubectl(&["get", "events", "-A"]).stdout);
                let log = std::fs::read_to_string(self.node.dir.path().join("agent.log")).unwrap_or_default();
                panic!("{what}: not within {seconds}s\n{pods}\n{events}\nagent:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_ready(&self, name: &str) -> Value {
        self.wait(&format!("pod {name} ready"), 30, || ready(&self.pod(name)));
        self.pod(name)
    }
}

fn start_agent(node: &Node, api: &ApiServer, endpoint: SocketAddr, flags: &[String]) -> Process {
    let log = std::fs::File::options().create(true).append(true).open(node.dir.path().join("agent.log")).unwrap();
    let agent = node
        .command()
        .args(["node", "--node-name", "test-node", "--listen", &endpoint.to_string()])
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(flags)
        .stderr(log)
        .spawn()
        .unwrap();
    Process(agent)
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn container_status<'a>(pod: &'a Value, name: &str) -> &'a Value {
    let all = pod["status"]["containerStatuses"].as_array().into_iter().flatten();
    all.chain(pod["status"]["initContainerStatuses"].as_array().into_iter().flatten())
        .find(|c| c["name"] == name)
        .unwrap_or(&Value::Null)
}

/// The reasons of the events on a pod, oldest first.
fn events_of(cluster: &Cluster, pod: &str) -> String {
    let selector = format!("involvedObject.name={pod}");
    text(&cluster.kubectl(&["get", "events", "--field-selector", &selector, "--sort-by", ".lastTimestamp"]).stdout)
}

#[test]
fn the_node_registers_and_renews_its_lease() {
    let mut cluster =
        Cluster::start_with(&["--node-labels", "tier=edge", "--register-with-taints", "dedicated=infra:NoSchedule"]);
    // One agent per node: a second on the same data directory is refused.
    let second = cluster
        .node
        .command()
        .args(["node", "--node-name", "test-node", "--listen", "127.0.0.1:0"])
        .arg("--kubeconfig")
        .arg(cluster.api.kubeconfig())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(125));
    assert!(text(&second.stderr).contains("is in use by another podctl node"), "{}", text(&second.stderr));
    let node: Value = serde_json::from_str(&cluster.api.kubectl(&["get", "node", "test-node", "-o", "json"])).unwrap();
    assert_eq!(node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"], cluster.endpoint.port());
    assert_eq!(node["status"]["addresses"][0], serde_json::json!({"type": "InternalIP", "address": "127.0.0.1"}));
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    assert!(node["status"]["capacity"]["ephemeral-storage"].as_str().unwrap().ends_with("Ki"), "{node}");
    assert_eq!(node["metadata"]["labels"]["tier"], "edge");
    assert_eq!(
        node["spec"]["taints"],
        serde_json::json!([{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}])
    );
    let condition = |node: &Value, kind: &str| {
        node["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == kind).cloned().unwrap_or_default()
    };
    assert_eq!(condition(&node, "Ready")["status"], "True");
    assert_eq!(condition(&node, "MemoryPressure")["reason"], "KubeletHasSufficientMemory");
    assert_eq!(condition(&node, "DiskPressure")["status"], "False");
    assert_eq!(condition(&node, "PIDPressure")["status"], "False");
    // The status loop adds the node's images.
    cluster.wait("the node lists its images", 15, || {
        let node: Value =
            serde_json::from_slice(&cluster.kubectl(&["get", "node", "test-node", "-o", "json"]).stdout).unwrap();
        node["status"]["images"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i["names"][0] == "docker.io/library/busybox:1.36")
    });
    let wide = cluster.api.kubectl(&["get", "nodes"]);
    assert!(wide.lines().any(|l| l.starts_with("test-node") && l.contains("Ready")), "{wide}");
    let lease = cluster.api.kubectl(&["get", "lease", "-n", "kube-node-lease", "test-node", "-o", "json"]);
    let lease: Value = serde_json::from_str(&lease).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "test-node");

    // The endpoint lets in the API server's client certificate only (whoever reaches it
    // could exec into every container): not plain HTTP, not a client without a
    // certificate, not the cluster's admin token.
    let token = cluster.api.access().token.unwrap();
    for (url, auth) in [
        (format!("http://{}/pods", cluster.endpoint), None),
        (format!("https://{}/pods", cluster.endpoint), None),
        (format!("https://{}/pods", cluster.endpoint), Some(format!("Authorization: Bearer {token}"))),
    ] {
        let mut curl = std::process::Command::new("curl");
        cluster.node.netns.enter(&mut curl);
        curl.args(["-sS", "-k", "--max-time", "10", &url]);
        if let Some(auth) = &auth {
            curl.args(["-H", auth]);
        }
        let out = curl.output().unwrap();
        assert!(!out.status.success() && !text(&out.stdout).contains("PodList"), "let in at {url} with {auth:?}");
    }

    // A bad label or taint is refused, named.
    let bad = cluster.node.podctl(&["node", "--node-labels", "a b=c", "--register-with-taints", "x:Sometimes"]);
    assert!(text(&bad.stderr).contains("a b=c"), "{}", text(&bad.stderr));

    // A node agent started again finds its Node and brings it up to date.
    cluster.kill_agent();
    cluster.endpoint = SocketAddr::from(([127, 0, 0, 1], 10251));
    cluster.start_agent_again();
    cluster.wait("the node's new port", 10, || {
        let path = "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}";
        text(&cluster.kubectl(&["get", "node", "test-node", "-o", path]).stdout) == "10251"
    });
}

#[test]
fn a_pod_bound_to_the_node_runs_and_says_so() {
    let cluster = Cluster::start();
    cluster.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: test-node
  initContainers:
  - {name: setup, image: busybox:1.36, command: [sh, -c, "echo prepared > /work/ready-file"], volumeMounts: [{name: work, mountPath: /work}]}
  containers:
  - name: app
    image: busybox:1.36
    command: [sh, -c, "cat /work/ready-file; exec sleep 3600"]
    volumeMounts: [{name: work, mountPath: /work}]
    readinessProbe: {exec: {command: [test, -f, /work/go]}, periodSeconds: 1}
  volumes: [{name: work, emptyDir: {}}]
"#,
    );
    cluster.wait("web runs", 30, || cluster.pod("web")["status"]["phase"] == "Running");
    let pod = cluster.pod("web");
    assert!(!ready(&pod), "not ready before its probe passes: {pod}");
    let ip = pod["status"]["podIP"].as_str().unwrap_or_default().to_string();
    assert!(ip.starts_with("10.88."), "{pod}");
    assert_eq!(pod["status"]["hostIP"], "127.0.0.1");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    let setup = container_status(&pod, "setup");
    assert_eq!(setup["state"]["terminated"]["reason"], "Completed", "{pod}");
    let app = container_status(&pod, "app");
    assert!(app["state"]["running"]["startedAt"].is_string(), "{pod}");
    assert!(app["containerID"].as_str().unwrap().starts_with("podctl://"), "{pod}");
    assert_eq!(app["ready"], false);
    assert_eq!(app["started"], true);

    // Readiness gates Ready.
    cluster.api.kubectl(&["exec", "web", "--", "touch", "/work/go"]);
    let pod = cluster.wait_ready("web");
    assert_eq!(container_status(&pod, "app")["ready"], true);
    assert_eq!(text(&cluster.kubectl(&["logs", "web"]).stdout), "prepared\n");
    let wide = cluster.api.kubectl(&["get", "pod", "web", "-o", "wide"]);
    assert!(
        wide.contains("1/1") && wide.contains("Running") && wide.contains(&ip) && wide.contains("test-node"),
        "{wide}"
    );
    let events = events_of(&cluster, "web");
    for reason in ["Pulled", "Created", "Started"] {
        assert!(events.contains(reason), "{events}");
    }
    // The pod answers on its address from the node.
    cluster.node.netns.run("busybox", &["ping", "-c", "1", "-W", "2", &ip]);

    // The node's endpoint, through the API server's node proxy: its pods, its health, its
    // metrics.
    let raw = |path: &str| cluster.api.kubectl(&["get", "--raw", &format!("/api/v1/nodes/test-node/proxy/{path}")]);
    let pods: Value = serde_json::from_str(&raw("pods")).unwrap();
    assert_eq!(pods["kind"], "PodList");
    assert_eq!(pods["items"][0]["metadata"]["name"], "web");
    assert_eq!(raw("healthz"), "ok");
    let metrics = raw("metrics");
    for line in [
        "kubelet_running_pods 1",
        "kubelet_pod_start_duration_seconds_count 1",
        "prober_probe_total{probe_type=\"Readiness\",result=\"successful\"}",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // podctl ps shows the agent's pod with its origin, by namespace and name.
    let ps = cluster.node.ok(&["ps"]);
    let row = ps.lines().find(|l| l.contains("default/web")).unwrap_or_else(|| panic!("{ps}"));
    assert!(row.ends_with("node") && row.contains(&ip), "{ps}");
}

#[test]
fn kubectl_logs_reads_the_node_through_the_api_server() {
    let cluster = Cluster::start();
    cluster.apply(WEB);
    cluster.wait("web runs", 30, || cluster.pod("web")["status"]["phase"] == "Running");
    // Follows the short container until it exits: its whole output, in order.
    let followed = cluster.kubectl(&["logs", "-f", "web", "-c", "short"]);
    assert!(followed.status.success(), "{}", text(&followed.stderr));
    assert_eq!(text(&followed.stdout), "one\ntwo\n");

    cluster.wait("app logs its two lines", 10, || {
        text(&cluster.kubectl(&["logs", "web", "-c", "app"]).stdout) == "hello\noops\n"
    });
    assert_eq!(text(&cluster.kubectl(&["logs", "web", "-c", "app", "--tail", "1"]).stdout), "oops\n");
    assert_eq!(text(&cluster.kubectl(&["logs", "web", "-c", "app", "--limit-bytes", "3"]).stdout), "hel");
    let stamped = text(&cluster.kubectl(&["logs", "web", "-c", "app", "--timestamps"]).stdout);
    let first = stamped.lines().next().unwrap();
    assert!(first.ends_with("Z hello") && first.starts_with("20"), "{stamped}");

    // kubectl picks the first container when none is named.
    let defaulted = cluster.kubectl(&["logs", "web"]);
    assert_eq!(text(&defaulted.stdout), "hello\noops\n", "{}", text(&defaulted.stderr));
    let missing = text(&cluster.kubectl(&["logs", "nope"]).stderr);
    assert!(missing.contains("pods \"nope\" not found"), "{missing}");
    let previous = text(&cluster.kubectl(&["logs", "web", "-c", "app", "--previous"]).stderr);
    assert!(previous.contains("previous terminated container \"app\""), "{previous}");
    let bad = text(&cluster.kubectl(&["logs", "web", "-c", "nope"]).stderr);
    assert!(bad.contains("container nope is not valid for pod web"), "{bad}");

    // The short container completed, and OnFailure leaves it so.
    cluster.wait("short completes", 10, || {
        container_status(&cluster.pod("web"), "short")["state"]["terminated"]["exitCode"] == 0
    });
    assert_eq!(container_status(&cluster.pod("web"), "short")["restartCount"], 0);
}

#[test]
fn kubectl_exec_runs_in_the_container_over_a_websocket() {
    let cluster = Cluster::start();
    cluster.apply(WEB);
    cluster.wait("web runs", 30, || cluster.pod("web")["status"]["phase"] == "Running");
    let out = cluster.kubectl(&["exec", "web", "-c", "app", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));

    // stdin, to its end (v5's close signal).
    let upper =
        cluster.api.kubectl_stdin(&["exec", "-i", "web", "-c", "app", "--", "tr", "a-z", "A-Z"], "hello\nworld\n");
    assert_eq!(upper, "HELLO\nWORLD\n");
    assert_eq!(cluster.api.kubectl(&["exec", "web", "-c", "app", "--", "hostname"]), "web\n");

    let not_found = cluster.kubectl(&["exec", "web", "-c", "app", "--", "/no/such/program"]);
    assert!(!not_found.status.success());
    assert!(text(&not_found.stderr).contains("/no/such/program"), "{}", text(&not_found.stderr));
    let bad = text(&cluster.kubectl(&["exec", "web", "-c", "nope", "--", "true"]).stderr);
    assert!(bad.contains("container nope is not valid for pod web"), "{bad}");

    // A pod no node has (none matches its selector) is refused by the API server.
    cluster.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: nowhere}\n\
         spec: {nodeSelector: {disk: none}, containers: [{name: c, image: busybox}]}\n",
    );
    let unbound = text(&cluster.kubectl(&["exec", "nowhere", "--", "true"]).stderr);
    assert!(unbound.contains("pod nowhere does not have a host assigned"), "{unbound}");
}

/// With a terminal, over a WebSocket (kubectl 1.33) and over SPDY (1.29).
#[test]
fn kubectl_exec_with_a_terminal_gets_one_of_its_size() {
    let cluster = Cluster::start();
    cluster.apply(WEB);
    cluster.wait("web runs", 30, || cluster.pod("web")["status"]["phase"] == "Running");
    let spdy = format!("{}/kubectl.1.29", testkit::apiserver::KUBECTL_DIR);
    for kubectl in [testkit::apiserver::KUBECTL, spdy.as_str()] {
        let (master, slave) = open_pty(30, 100);
        let slave_fd = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        let mut command = cluster
            .api
            .kubectl_command_of(kubectl, &["exec", "-it", "web", "-c", "app", "--", "sh", "-c", "tty; stty size"]);
        let child = command.stdin(slave_fd(&slave)).stdout(slave_fd(&slave)).stderr(slave_fd(&slave)).spawn().unwrap();
        // Only kubectl may hold the terminal now (the command keeps its copies until dropped).
        drop((command, slave));
        let mut child = Process(child);
        // Ends with EIO once kubectl, the last holder of the terminal, is gone.
        let reader = std::thread::spawn(move || {
            let mut master = std::fs::File::from(master);
            let mut all = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = master.read(&mut buf) {
                all.extend_from_slice(&buf[..n]);
            }
            text(&all)
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{kubectl} exec -it did not end");
            std::thread::sleep(Duration::from_millis(50));
        };
        let output = reader.join().unwrap();
        assert!(status.success(), "{kubectl}: {output}");
        assert!(output.contains("/dev/pts/"), "{kubectl}: {output}");
        assert!(output.contains("30 100"), "{kubectl}: the terminal has kubectl's size: {output}");
    }
}

/// A pseudo-terminal of `rows` × `cols`: (master, slave).
fn open_pty(rows: u16, cols: u16) -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty fills two descriptors we then own.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both were just opened and are ours alone.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// `kubectl logs` and `kubectl exec` work with every kubectl on the machine: those from
/// 1.30 exec over a WebSocket, older ones over SPDY/3.1.
#[test]
fn every_kubectl_reads_logs_and_execs() {
    let cluster = Cluster::start();
    cluster.apply(WEB);
    cluster.wait("app logs its two lines", 30, || {
        text(&cluster.kubectl(&["logs", "web", "-c", "app"]).stdout) == "hello\noops\n"
    });
    let versions: Vec<(u32, String)> = (27..=33)
        .map(|minor| (minor, format!("{}/kubectl.1.{minor}", testkit::apiserver::KUBECTL_DIR)))
        .filter(|(_, path)| std::path::Path::new(path).exists())
        .collect();
    assert!(versions.iter().any(|(minor, _)| *minor < 30), "an SPDY-only kubectl expected: {versions:?}");
    assert!(versions.iter().any(|(minor, _)| *minor >= 30), "a WebSocket kubectl expected: {versions:?}");
    for (minor, kubectl) in &versions {
        let run = |args: &[&str], stdin: &str| -> Output { cluster.api.kubectl_output_of(kubectl, args, Some(stdin)) };
        let logs = run(&["logs", "web", "-c", "app", "--tail", "1"], "");
        assert_eq!(text(&logs.stdout), "oops\n", "kubectl 1.{minor}: {}", text(&logs.stderr));
        let exec = run(&["exec", "-i", "web", "-c", "app", "--", "sh", "-c", "cat; exit 4"], "piped\n");
        assert_eq!(exec.status.code(), Some(4), "kubectl 1.{minor}: {}", text(&exec.stderr));
        assert_eq!(text(&exec.stdout), "piped\n", "kubectl 1.{minor}");
        let stderr = run(&["exec", "web", "-c", "app", "--", "sh", "-c", "echo to-stderr >&2"], "");
        assert!(stderr.status.success(), "kubectl 1.{minor}: {}", text(&stderr.stderr));
        assert_eq!(text(&stderr.stderr), "to-stderr\n", "kubectl 1.{minor}");
    }
}

/// A client that goes away mid-exec ends the command: its output has nowhere to go (`yes`
/// meets a broken pipe), and a terminal hangs up (`sleep` gets SIGHUP).
#[test]
fn an_exec_whose_client_is_gone_ends() {
    let cluster = Cluster::start();
    cluster.apply(WEB);
    cluster.wait("web runs", 30, || cluster.pod("web")["status"]["phase"] == "Running");
    // `[x]yz` matches the command's line in `ps`, not the line of this grep.
    let running = |pattern: &str| {
        let grep = format!("ps -o args | grep '[{}]{}' || true", &pattern[..1], &pattern[1..]);
        let out = cluster.kubectl(&["exec", "web", "-c", "app", "--", "sh", "-c", &grep]);
        !text(&out.stdout).trim().is_empty()
    };
    let gone_within = |pattern: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while running(pattern) {
            assert!(Instant::now() < deadline, "{pattern} still runs in the container after its client left");
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    let mut yes = cluster.api.kubectl_command(&["exec", "web", "-c", "app", "--", "yes", "left-behind"]);
    let mut yes = Process(yes.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap());
    let mut some = [0u8; 4096];
    yes.0.stdout.as_mut().unwrap().read_exact(&mut some).unwrap();
    assert!(running("yes left-behind"));
    drop(yes);
    gone_within("yes left-behind");

    let (master, slave) = open_pty(24, 80);
    let mut sleep = cluster.api.kubectl_command(&["exec", "-it", "web", "-c", "app", "--", "sleep", "1001"]);
    let slave_fd = || Stdio::from(slave.try_clone().unwrap());
    let sleep = Process(sleep.stdin(slave_fd()).stdout(slave_fd()).stderr(slave_fd()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(15);
    while !running("sleep 1001") {
        assert!(Instant::now() < deadline, "sleep 1001 did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop((sleep, master, slave));
    gone_within("sleep 1001");
}

#[test]
fn a_crashing_container_backs_off_and_a_failing_liveness_probe_restarts_one() {
    let cluster = Cluster::start();
    cluster.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  nodeName: test-node
  containers:
  - {name: app, image: busybox:1.36, command: [sh, -c, "echo run; exit 3"]}
---
apiVersion: v1
kind: Pod
metadata: {name: sick}
spec:
  nodeName: test-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:1.36
    command: [sh, -c, "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 3600"]
    livenessProbe: {exec: {command: [test, -f, /tmp/alive]}, periodSeconds: 1, failureThreshold: 2}
"#,
    );
    // The first restart is at once, the next after 10 s: restartCount 2 in CrashLoopBackOff.
    cluster.wait("crash backs off", 40, || {
        let app = container_status(&cluster.pod("crash"), "app").clone();
        app["restartCount"].as_u64() >= Some(2) && app["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let pod = cluster.pod("crash");
    let app = container_status(&pod, "app");
    assert_eq!(app["lastState"]["terminated"]["exitCode"], 3, "{pod}");
    assert_eq!(app["lastState"]["terminated"]["reason"], "Error", "{pod}");
    assert!(app["state"]["waiting"]["message"].as_str().unwrap().starts_with("back-off "), "{pod}");
    assert_eq!(pod["status"]["phase"], "Running");
    let events = events_of(&cluster, "crash");
    assert!(events.contains("BackOff") && events.contains("Back-off restarting failed container app"), "{events}");
    let table = cluster.api.kubectl(&["get", "pod", "crash"]);
    assert!(table.contains("CrashLoopBackOff") || table.contains("Error"), "{table}");
    assert_eq!(text(&cluster.kubectl(&["logs", "crash", "--previous"]).stdout), "run\n");

    cluster.wait("sick restarts", 30, || {
        container_status(&cluster.pod("sick"), "app")["restartCount"].as_u64() >= Some(1)
    });
    let events = events_of(&cluster, "sick");
    assert!(events.contains("Unhealthy") && events.contains("Liveness probe failed"), "{events}");
    assert!(events.contains("failed liveness probe, will be restarted"), "{events}");
}

#[test]
fn an_oom_kill_is_reported() {
    let cluster = Cluster::start();
    cluster.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  nodeName: test-node
  restartPolicy: Never
  containers:
  - name: app
    image: busybox:1.36
    command: [sh, -c, "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo $x | wc -c"]
    resources: {limits: {memory: 32Mi}}
"#,
    );
    cluster.wait("hog fails", 30, || cluster.pod("hog")["status"]["phase"] == "Failed");
    let pod = cluster.pod("hog");
    assert_eq!(container_status(&pod, "app")["state"]["terminated"]["reason"], "OOMKilled", "{pod}");
    assert_eq!(container_status(&pod, "app")["state"]["terminated"]["exitCode"], 137, "{pod}");
    cluster.wait("an OOMKilling event", 10, || events_of(&cluster, "hog").contains("OOMKilling"));
}

#[test]
fn deleting_a_pod_runs_its_prestop_hook_and_leaves_nothing() {
    let cluster = Cluster::start();
    let shared = cluster.node.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    cluster.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: leaving}}
spec:
  nodeName: test-node
  terminationGracePeriodSeconds: 5
  containers:
  - name: app
    image: busybox:1.36
    command: [sh, -c, "trap 'echo got TERM >> /shared/trace; exit 0' TERM; while true; do sleep 0.1; done"]
    lifecycle: {{preStop: {{exec: {{command: [sh, -c, "echo preStop >> /shared/trace"]}}}}}}
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  volumes: [{{name: shared, hostPath: {{path: {}}}}}]
"#,
        shared.display()
    ));
    cluster.wait_ready("leaving");
    let out = cluster.kubectl(&["delete", "pod", "leaving", "--timeout", "30s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(shared.join("trace")).unwrap(), "preStop\ngot TERM\n");
    assert!(text(&cluster.kubectl(&["get", "pods", "-o", "name"]).stdout).is_empty());
    // Nothing of the pod is left on the node.
    assert_eq!(cluster.node.ok(&["ps", "-a", "-q"]), "");
    assert!(cluster.node.mounts().is_empty(), "{:?}", cluster.node.mounts());
    let pods = std::fs::read_dir(cluster.node.run_dir().join("pods")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(pods, 0);
    let links = cluster.node.netns.ip(&["-o", "link"]);
    assert!(!links.contains("veth"), "{links}");
}

#[test]
fn environment_and_volumes_come_from_the_api() {
    let cluster = Cluster::start();
    cluster.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast, level: "3"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Pod
metadata: {name: env, labels: {tier: back}}
spec:
  nodeName: test-node
  subdomain: backends
  hostAliases: [{ip: 192.0.2.10, hostnames: [db.example]}]
  containers:
  - name: app
    image: busybox:1.36
    command: [sh, -c, "exec sleep 3600"]
    envFrom: [{configMapRef: {name: settings}, prefix: CFG_}]
    env:
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    - {name: MISSING, valueFrom: {secretKeyRef: {name: nope, key: x, optional: true}}}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: GREETING, value: "$(POD_NAME) on $(NODE)"}
    volumeMounts:
    - {name: settings, mountPath: /etc/settings}
    - {name: info, mountPath: /etc/info}
    - {name: creds, mountPath: /etc/creds}
  volumes:
  - {name: settings, configMap: {name: settings}}
  - {name: info, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}
  - {name: creds, secret: {secretName: creds, defaultMode: 0400}}
"#,
    );
    let pod = cluster.wait_ready("env");
    let exec = |script: &str| cluster.api.kubectl(&["exec", "env", "--", "sh", "-c", script]);
    let env = exec("env");
    let ip = pod["status"]["podIP"].as_str().unwrap();
    for line in [
        "CFG_mode=fast",
        "CFG_level=3",
        "PASSWORD=hunter2",
        "POD_NAME=env",
        "NODE=test-node",
        "GREETING=env on test-node",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in\n{env}");
    }
    assert!(env.lines().any(|l| l == format!("POD_IP={ip}")), "{env}");
    assert!(!env.contains("MISSING="), "{env}");
    let hosts = exec("cat /etc/hosts");
    assert!(hosts.contains(&format!("{ip}\tenv.backends.default.svc.cluster.local\tenv\n")), "{hosts}");
    assert!(hosts.contains("192.0.2.10\tdb.example\n"), "{hosts}");
    assert_eq!(exec("cat /etc/settings/mode"), "fast");
    assert_eq!(exec("cat /etc/info/labels"), "tier=\"back\"");
    assert_eq!(exec("cat /etc/creds/password; stat -L -c %a /etc/creds/password"), "hunter2400\n");
    // Volumes from the API are read-only; the service account's token is there.
    assert!(!cluster.kubectl(&["exec", "env", "--", "touch", "/etc/settings/x"]).status.success());
    assert_eq!(exec("cat /var/run/secrets/kubernetes.io/serviceaccount/namespace"), "default");
    assert!(exec("cat /var/run/secrets/kubernetes.io/serviceaccount/token").starts_with("ey"));

    // A change of the ConfigMap reaches the file within a sync period (10 s).
    cluster.api.kubectl(&["patch", "configmap", "settings", "-p", r#"{"data":{"mode":"slow"}}"#]);
    cluster.wait("the file follows its ConfigMap", 25, || exec("cat /etc/settings/mode") == "slow");
}

#[test]
fn images_are_pulled_as_their_policy_says() {
    let mut cluster = Cluster::start();
    let registry = testkit::registry::Registry::start_in(cluster.node.netns.path());
    let layout = cluster.node.dir.path().join("layout");
    testkit::busybox_image().write_oci_layout(&layout, Some("1.0"));
    registry.push(&layout, "team/busybox:1.0");
    let private = testkit::registry::Registry::start_in_with_basic_auth(cluster.node.netns.path(), "puller", "s3cret");
    private.push(&layout, "private/busybox:1.0");
    // The agent speaks plain HTTP to these registries only when told to.
    cluster.kill_agent();
    cluster.flags =
        ["--insecure-registry", &registry.addr, "--insecure-registry", &private.addr].map(String::from).to_vec();
    cluster.start_agent_again();
    let image = format!("{}/team/busybox:1.0", registry.addr);
    let missing = format!("{}/team/busybox:nope", registry.addr);
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: pulled}}\nspec:\n  nodeName: test-node\n  containers: [{{name: app, image: \"{image}\", command: [sleep, \"3600\"]}}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: absent}}\nspec:\n  nodeName: test-node\n  containers: [{{name: app, image: \"{missing}\"}}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: never}}\nspec:\n  nodeName: test-node\n  containers: [{{name: app, image: \"{}/other:1\", imagePullPolicy: Never}}]\n",
        registry.addr
    ));
    cluster.wait_ready("pulled");
    let events = events_of(&cluster, "pulled");
    assert!(events.contains("Pulling") && events.contains("Successfully pulled image"), "{events}");
    cluster.wait("absent backs off", 30, || {
        container_status(&cluster.pod("absent"), "app")["state"]["waiting"]["reason"] == "ImagePullBackOff"
    });
    let events = events_of(&cluster, "absent");
    assert!(events.contains("ErrImagePull") && events.contains("Failed to pull image"), "{events}");
    cluster.wait("never is refused", 10, || {
        container_status(&cluster.pod("never"), "app")["state"]["waiting"]["reason"] == "ErrImageNeverPull"
    });

    // A registry that wants credentials: the pod's imagePullSecrets give them.
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("puller:s3cret");
    let config = serde_json::json!({"auths": {private.addr.clone(): {"auth": auth}}}).to_string();
    let config = base64::engine::general_purpose::STANDARD.encode(config);
    let private_image = format!("{}/private/busybox:1.0", private.addr);
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: regcred}}\ntype: kubernetes.io/dockerconfigjson\ndata: {{.dockerconfigjson: {config}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: with-secret}}\nspec:\n  nodeName: test-node\n  imagePullSecrets: [{{name: regcred}}]\n  containers: [{{name: app, image: \"{private_image}\", command: [sleep, \"3600\"]}}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: without-secret}}\nspec:\n  nodeName: test-node\n  containers: [{{name: app, image: \"{private_image}\", imagePullPolicy: Always, command: [sleep, \"3600\"]}}]\n"
    ));
    cluster.wait_ready("with-secret");
    cluster.wait("without-secret is refused", 30, || {
        let reason = container_status(&cluster.pod("without-secret"), "app")["state"]["waiting"]["reason"].clone();
        reason == "ErrImagePull" || reason == "ImagePullBackOff"
    });
}

#[test]
fn pods_beyond_max_pods_are_refused() {
    let cluster = Cluster::start_with(&["--max-pods", "1"]);
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: test-node\n  containers: [{{name: app, image: busybox:1.36, command: [sleep, '3600']}}]\n"
        )
    };
    cluster.apply(&pod("first"));
    cluster.wait_ready("first");
    cluster.apply(&pod("second"));
    cluster.wait("second is refused", 20, || cluster.pod("second")["status"]["phase"] == "Failed");
    let second = cluster.pod("second");
    assert_eq!(second["status"]["reason"], "OutOfpods", "{second}");
    assert!(
        second["status"]["message"].as_str().unwrap().contains("Node didn't have enough resource: pods"),
        "{second}"
    );
    assert_eq!(cluster.node.ok(&["ps", "-q"]).lines().count(), 1);
}

/// kill -9 of the agent stops no pod; the agent started again adopts every pod, restarts
/// none that was fine, starts those bound while it was down, removes those deleted.
#[test]
fn a_killed_agent_finds_its_pods_again() {
    let mut cluster = Cluster::start();
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: test-node\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: app, image: busybox:1.36, command: [sleep, '3600']}}]\n---\n"
        )
    };
    // A pod of podctl run's is not the agent's: it is neither adopted nor removed.
    cluster.node.ok(&["run", "-d", "--name", "solo", "--net", "none", "--pull", "never", IMAGE, "--", "sleep", "600"]);
    let first: String = (0..10).map(|i| pod(&format!("p{i}"))).collect();
    cluster.apply(&first);
    cluster.wait("10 pods ready", 60, || (0..10).all(|i| ready(&cluster.pod(&format!("p{i}")))));
    let ids = |cluster: &Cluster| -> Vec<String> {
        (0..10).map(|i| container_status(&cluster.pod(&format!("p{i}")), "app")["containerID"].to_string()).collect()
    };
    let before = ids(&cluster);
    let more: String = (10..15).map(|i| pod(&format!("p{i}"))).collect();
    cluster.apply(&more);
    std::thread::sleep(Duration::from_millis(300));
    cluster.kill_agent();
    // While it is down: every pod keeps running; one is deleted, one is bound.
    assert!(cluster.node.ok(&["ps", "-q"]).lines().count() >= 10);
    cluster.api.kubectl(&["delete", "pod", "p0", "--wait=false"]);
    cluster.apply(&pod("late"));
    cluster.start_agent_again();
    cluster.wait("14 pods and late ready, p0 gone", 60, || {
        (1..15).all(|i| ready(&cluster.pod(&format!("p{i}"))))
            && ready(&cluster.pod("late"))
            && cluster.pod("p0").is_null()
    });
    let after = ids(&cluster);
    assert_eq!(before[1..], after[1..], "no container was started again");
    for i in 1..15 {
        assert_eq!(container_status(&cluster.pod(&format!("p{i}")), "app")["restartCount"], 0);
    }
    let ps = cluster.node.ok(&["ps", "-a", "-q"]);
    assert_eq!(ps.lines().count(), 16, "{ps}");
    let solo = cluster.node.ok(&["ps"]);
    assert!(solo.lines().any(|l| l.contains(" solo ") && l.contains("Running") && l.ends_with("run")), "{solo}");
    // No leak: one veth, one address and one network namespace per pod.
    let veths = cluster.node.netns.ip(&["-o", "link"]).lines().filter(|l| l.contains("veth")).count();
    assert_eq!(veths, 15);
    let netns = std::fs::read_dir(cluster.node.run_dir().join("netns")).unwrap().count();
    assert_eq!(netns, 16, "15 pods and solo");
    let leases = std::fs::read_dir(cluster.node.data_dir().join("net/leases")).unwrap().count();
    assert!(leases <= 16, "{leases} leases for 15 pods");
}

const HTTP_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: NAME, labels: {app: NAME}}
spec:
  nodeName: NODE
  containers:
  - name: web
    image: busybox:1.36
    command: [httpd, -f, -p, "8080", -h, /etc]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
"#;

/// A Service whose endpoints are a hand-made EndpointSlice reaches its pod through its
/// cluster IP from another pod.
#[test]
fn a_service_reaches_its_pod_through_the_cluster_ip() {
    let cluster = Cluster::start();
    cluster.apply(&HTTP_POD.replace("NAME", "backend").replace("NODE", "test-node"));
    cluster.apply(&HTTP_POD.replace("NAME", "client").replace("NODE", "test-node"));
    let ip = cluster.wait_ready("backend")["status"]["podIP"].as_str().unwrap().to_string();
    cluster.wait_ready("client");
    cluster.apply(&format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec: {{ports: [{{port: 80, targetPort: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{port: 8080, protocol: TCP, name: ""}}]
endpoints: [{{addresses: ["{ip}"], conditions: {{ready: true}}}}]
"#
    ));
    let cluster_ip = cluster.api.kubectl(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let url = format!("http://{cluster_ip}/hostname");
    // (busybox wget -T crashes: `timeout` bounds it.)
    cluster.wait("the client reaches the service", 15, || {
        let out = cluster.kubectl(&["exec", "client", "--", "timeout", "3", "wget", "-qO-", &url]);
        text(&out.stdout) == "backend\n"
    });
    // A pod started after the Service finds it in its environment, as kubelet's service links.
    cluster.apply(&HTTP_POD.replace("NAME", "late").replace("NODE", "test-node"));
    cluster.wait_ready("late");
    let env = cluster.api.kubectl(&["exec", "late", "--", "env"]);
    assert!(env.lines().any(|l| l == format!("WEB_SERVICE_HOST={cluster_ip}")), "{env}");
    assert!(env.lines().any(|l| l == "WEB_SERVICE_PORT=80"), "{env}");
}

/// Two agents on two fake nodes joined by a link: each routes to the other's pod CIDR
/// from its Node object, so pods reach each other across nodes with no manual route.
#[test]
fn pods_on_two_nodes_reach_each_other() {
    let a = Node::new(PODCTL).with_env("PODCTL_POD_CIDR", "10.88.1.0/24").with_busybox_as(IMAGE);
    let b = Node::new(PODCTL).with_env("PODCTL_POD_CIDR", "10.88.2.0/24").with_busybox_as(IMAGE);
    testkit::netns::link(&a.netns, "underlay", "192.168.50.1/24", &b.netns, "underlay", "192.168.50.2/24");
    let api = ApiServer::start_in_on(PODCTL, a.netns.path(), "192.168.50.1:6443".parse().unwrap(), &[]);
    let agent = |node: &Node, name: &str, ip: &str| {
        let log = std::fs::File::create(node.dir.path().join("agent.log")).unwrap();
        let child = node
            .command()
            .args(["node", "--node-name", name, "--listen", &format!("{ip}:10250")])
            .arg("--kubeconfig")
            .arg(api.kubeconfig())
            .args(["--server", "https://192.168.50.1:6443"])
            .stderr(log)
            .spawn()
            .unwrap();
        Process(child)
    };
    let _agents = (agent(&a, "node-a", "192.168.50.1"), agent(&b, "node-b", "192.168.50.2"));
    api.kubectl_stdin(&["apply", "-f", "-"], &HTTP_POD.replace("NAME", "pa").replace("NODE", "node-a"));
    api.kubectl_stdin(&["apply", "-f", "-"], &HTTP_POD.replace("NAME", "pb").replace("NODE", "node-b"));
    let pod =
        |name: &str| -> Value { serde_json::from_str(&api.kubectl(&["get", "pod", name, "-o", "json"])).unwrap() };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(ready(&pod("pa")) && ready(&pod("pb"))) {
        let log = |n: &Node| std::fs::read_to_string(n.dir.path().join("agent.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "pods not ready:\n{}\n{}\n{}",
            api.kubectl(&["get", "pods", "-o", "wide"]),
            log(&a),
            log(&b)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ip_a, ip_b) = (pod("pa")["status"]["podIP"].to_string(), pod("pb")["status"]["podIP"].to_string());
    assert!(ip_a.contains("10.88.1.") && ip_b.contains("10.88.2."), "{ip_a} {ip_b}");
    let url = |ip: &str| format!("http://{}:8080/hostname", ip.trim_matches('"'));
    let fetch = |from: &str, ip: &str| {
        api.kubectl_output(&["exec", from, "--", "timeout", "3", "wget", "-qO-", &url(ip)], None)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ab, ba) = (fetch("pa", &ip_b), fetch("pb", &ip_a));
        if text(&ab.stdout) == "pb\n" && text(&ba.stdout) == "pa\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a→b: {} {}; b→a: {} {}",
            text(&ab.stdout),
            text(&ab.stderr),
            text(&ba.stdout),
            text(&ba.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Logs come from each node through the API server.
    assert!(api.kubectl_output(&["logs", "pb"], None).status.success());
}

/// `kubectl attach -i` joins the container's own process: our input to its stdin, its
/// output from then on back, until it exits (over a WebSocket, and over SPDY for 1.29).
#[test]
fn kubectl_attach_joins_a_running_container() {
    let cluster = Cluster::start();
    let talker = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: test-node\n  restartPolicy: Never\n  containers:\n  - name: app\n    image: busybox:1.36\n    stdin: true\n    stdinOnce: true\n    command: [sh, -c, 'echo ready; while read l; do echo \"got $l\"; done; echo bye >&2']\n"
        )
    };
    let spdy = format!("{}/kubectl.1.29", testkit::apiserver::KUBECTL_DIR);
    for (name, kubectl) in [("talk", testkit::apiserver::KUBECTL), ("talk-spdy", spdy.as_str())] {
        cluster.apply(&talker(name));
        cluster.wait_ready(name);
        let out = cluster.api.kubectl_output_of(kubectl, &["attach", "-i", name, "-c", "app"], Some("hello\nworld\n"));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("got hello\ngot world\n"), "{kubectl}: {stdout} {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("bye"), "{kubectl}: {}", text(&out.stderr));
        cluster.wait("the talker completes", 15, || cluster.pod(name)["status"]["phase"] == "Succeeded");
    }
    let done = text(&cluster.kubectl(&["attach", "talk"]).stderr);
    assert!(done.contains("a container in a completed pod; current phase is Succeeded"), "{done}");
}

/// `kubectl debug`: an ephemeral container joins a running pod — its network, and with
/// `--target` the processes of the container it names — runs once, and is attached to
/// and logged like any container.
#[test]
fn kubectl_debug_runs_an_ephemeral_container_in_the_pod() {
    let cluster = Cluster::start();
    cluster.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: dbg}\nspec:\n  nodeName: test-node\n  containers:\n  - name: app\n    image: busybox:1.36\n    command: [sleep, '3600']\n",
    );
    let ip = cluster.wait_ready("dbg")["status"]["podIP"].as_str().unwrap().to_string();
    let state = |name: &str| {
        let statuses = cluster.pod("dbg")["status"]["ephemeralContainerStatuses"].clone();
        statuses.as_array().into_iter().flatten().find(|s| s["name"] == name).map(|s| s["state"].clone())
    };

    // In the target's PID namespace, on the pod's network; done when its command is.
    let script = "ps -o args; ip -4 -o addr show eth0";
    let out = cluster.kubectl(&[
        "debug",
        "dbg",
        "--image=busybox:1.36",
        "--target=app",
        "-c",
        "look",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    cluster.wait("the debug container ends", 30, || state("look").is_some_and(|s| s["terminated"]["exitCode"] == 0));
    let logs = text(&cluster.kubectl(&["logs", "dbg", "-c", "look"]).stdout);
    assert!(logs.contains("sleep 3600"), "the target's processes: {logs}");
    assert!(logs.contains(&format!("inet {ip}/")), "the pod's address: {logs}");
    let pod = cluster.pod("dbg");
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0, "the app goes on: {pod}");

    // Interactive: kubectl waits for it to run, then attaches.
    let out = cluster.api.kubectl_output(
        &["debug", "-i", "dbg", "--image=busybox:1.36", "-c", "talk", "--", "sh", "-c", "read l; echo \"got $l\""],
        Some("hello\n"),
    );
    assert!(text(&out.stdout).contains("got hello"), "{} {}", text(&out.stdout), text(&out.stderr));
    cluster.wait("the interactive one ends", 30, || state("talk").is_some_and(|s| s["terminated"].is_object()));
    // Ended ephemeral containers are not started again.
    std::thread::sleep(Duration::from_secs(2));
    assert!(state("look").is_some_and(|s| s["terminated"].is_object()));
}

/// A LoadBalancer Service with `externalTrafficPolicy: Local` is given a health check node
/// port, on which the node answers how many of the Service's endpoints it runs
/// (kube-proxy's health checks, for the load balancer); with the policy back to Cluster,
/// the port and its server go.
#[test]
fn local_load_balancers_get_a_health_check_from_the_node() {
    let cluster = Cluster::start();
    cluster.apply("apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec: {type: LoadBalancer, externalTrafficPolicy: Local, ports: [{port: 80, targetPort: 8080}]}\n");
    let service: Value = serde_json::from_slice(&cluster.kubectl(&["get", "svc", "lb", "-o", "json"]).stdout).unwrap();
    let port = service["spec"]["healthCheckNodePort"].as_u64().expect("a health check port");
    assert!((30000..=32767).contains(&port), "{port}");
    let ask = || {
        let mut wget = std::process::Command::new("timeout");
        cluster.node.netns.enter(&mut wget);
        let url = format!("http://127.0.0.1:{port}/");
        let out = wget.args(["5", testkit::BUSYBOX, "wget", "-qO-", &url]).output().unwrap();
        (text(&out.stdout), text(&out.stderr))
    };
    cluster.wait("the node answers: no endpoint here", 20, || ask().1.contains("503"));
    let slice = |node: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: lb-1, labels: {{kubernetes.io/service-name: lb}}}}\naddressType: IPv4\nendpoints: [{{addresses: [10.88.0.99], nodeName: {node}}}]\nports: [{{port: 8080, protocol: TCP}}]\n"
        )
    };
    cluster.apply(&slice("test-node"));
    cluster.wait("the node answers: one endpoint here", 20, || ask().0.contains("\"localEndpoints\": 1"));
    cluster.apply(&slice("other-node"));
    cluster.wait("the node answers: none here again", 20, || ask().1.contains("503"));

    cluster.kubectl(&["patch", "svc", "lb", "-p", r#"{"spec":{"externalTrafficPolicy":"Cluster"}}"#]);
    let service: Value = serde_json::from_slice(&cluster.kubectl(&["get", "svc", "lb", "-o", "json"]).stdout).unwrap();
    assert!(service["spec"].get("healthCheckNodePort").is_none(), "{}", service["spec"]);
    cluster.wait("the server goes", 20, || ask().1.contains("refused"));
    let err = text(&cluster.kubectl(&["patch", "svc", "lb", "-p", r#"{"spec":{"healthCheckNodePort":31999}}"#]).stderr);
    assert!(
        err.contains("may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"),
        "{err}"
    );
}

/// `kubectl port-forward` reaches a port on the pod's loopback through the API server and
/// the node (kubectl 1.33 tries a WebSocket first; 1.29 speaks SPDY).
#[test]
fn kubectl_port_forward_reaches_the_pod() {
    let cluster = Cluster::start();
    cluster.apply(&HTTP_POD.replace("NAME", "pf").replace("NODE", "test-node"));
    cluster.wait_ready("pf");
    let spdy = format!("{}/kubectl.1.29", testkit::apiserver::KUBECTL_DIR);
    for (kubectl, port) in [(testkit::apiserver::KUBECTL, "18080"), (spdy.as_str(), "18081")] {
        let mut forward = cluster.api.kubectl_command_of(kubectl, &["port-forward", "pod/pf", &format!("{port}:8080")]);
        let mut forward = Process(forward.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
        let stdout = forward.0.stdout.take().unwrap();
        let (lines, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let first = listening.recv_timeout(Duration::from_secs(20));
        assert!(first.as_deref().is_ok_and(|l| l.contains("Forwarding from")), "{kubectl}: {first:?}");
        let url = format!("http://127.0.0.1:{port}/hostname");
        for _ in 0..2 {
            let mut wget = std::process::Command::new("timeout");
            cluster.node.netns.enter(&mut wget);
            let out = wget.args(["10", testkit::BUSYBOX, "wget", "-qO-", &url]).output().unwrap();
            assert_eq!(text(&out.stdout), "pf\n", "{kubectl}: {}", text(&out.stderr));
        }
        drop(forward);
    }
}

/// A container's termination message: what it wrote to terminationMessagePath, else with
/// FallbackToLogsOnError the end of its log after a failure.
#[test]
fn termination_messages_are_reported() {
    let cluster = Cluster::start();
    cluster.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: notes}
spec:
  nodeName: test-node
  restartPolicy: Never
  securityContext: {runAsUser: 1000}
  containers:
  - {name: file, image: busybox:1.36, command: [sh, -c, "echo -n 'bad config' > /dev/termination-log; exit 1"]}
  - {name: custom, image: busybox:1.36, command: [sh, -c, "echo done > /tmp/why"], terminationMessagePath: /tmp/why}
  - {name: logs, image: busybox:1.36, command: [sh, -c, "echo first; echo last words; exit 2"], terminationMessagePolicy: FallbackToLogsOnError}
"#,
    );
    cluster.wait("notes fails", 30, || cluster.pod("notes")["status"]["phase"] == "Failed");
    let pod = cluster.pod("notes");
    let message = |name: &str| container_status(&pod, name)["state"]["terminated"]["message"].clone();
    assert_eq!(message("file"), "bad config", "{pod}");
    assert_eq!(message("custom"), "done\n", "{pod}");
    assert_eq!(message("logs"), "first\nlast words\n", "{pod}");
}

/// securityContext: capabilities added and dropped, runAsNonRoot checked against the
/// user the container would run as, fsGroup owning the pod's volumes.
#[test]
fn security_contexts_are_honoured() {
    let cluster = Cluster::start();
    cluster.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: secure}
spec:
  nodeName: test-node
  securityContext: {runAsUser: 1000, fsGroup: 2000, runAsNonRoot: true}
  containers:
  - name: app
    image: busybox:1.36
    command: [sleep, "3600"]
    volumeMounts: [{name: data, mountPath: /data}]
  - name: caps
    image: busybox:1.36
    command: [sleep, "3600"]
    securityContext: {runAsUser: 0, runAsNonRoot: false, capabilities: {drop: [ALL], add: [NET_BIND_SERVICE, chown]}}
  volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Pod
metadata: {name: rooted}
spec:
  nodeName: test-node
  securityContext: {runAsNonRoot: true}
  containers: [{name: app, image: busybox:1.36, command: [sleep, "3600"]}]
"#,
    );
    cluster.wait_ready("secure");
    let exec = |container: &str, script: &str| {
        cluster.api.kubectl(&["exec", "secure", "-c", container, "--", "sh", "-c", script])
    };
    assert_eq!(
        exec(
            "app",
            "id -u; id -G | tr ' ' '\\n' | grep -x 2000; stat -c %g /data; touch /data/x && stat -c %g /data/x"
        ),
        "1000\n2000\n2000\n2000\n"
    );
    // CAP_CHOWN is bit 0, CAP_NET_BIND_SERVICE bit 10.
    assert_eq!(exec("caps", "grep CapEff /proc/self/status"), "CapEff:\t0000000000000401\n");
    cluster.wait("rooted is refused", 20, || {
        let app = container_status(&cluster.pod("rooted"), "app").clone();
        app["state"]["waiting"]["reason"] == "CreateContainerConfigError"
            && app["state"]["waiting"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("runAsNonRoot and image will run as root"))
    });
}

/// A Node given a pod CIDR (by the control plane) before its agent starts: the pods get
/// their addresses from it, not from --pod-cidr.
#[test]
fn the_nodes_pod_cidr_wins_over_the_flag() {
    let node = Node::new(PODCTL).with_busybox_as(IMAGE);
    let api = ApiServer::start_in(PODCTL, node.netns.path(), &[]);
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata: {name: test-node}\nspec: {podCIDR: 10.77.3.0/24}\n",
    );
    let _agent = start_agent(&node, &api, SocketAddr::from(([127, 0, 0, 1], 10250)), &[]);
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  nodeName: test-node\n  containers: [{name: c, image: busybox:1.36, command: [sleep, '3600']}]\n",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ip = api.kubectl(&["get", "pod", "p", "-o", "jsonpath={.status.podIP}"]);
        if !ip.is_empty() {
            assert!(ip.starts_with("10.77.3."), "{ip}");
            break;
        }
        assert!(Instant::now() < deadline, "no address");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// activeDeadlineSeconds: a pod that runs past it is stopped and fails, DeadlineExceeded.
#[test]
fn a_pod_past_its_deadline_fails() {
    let cluster = Cluster::start();
    cluster.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: brief}\nspec:\n  nodeName: test-node\n  activeDeadlineSeconds: 2\n  terminationGracePeriodSeconds: 1\n  containers: [{name: app, image: busybox:1.36, command: [sleep, '3600']}]\n",
    );
    cluster.wait("brief fails", 30, || cluster.pod("brief")["status"]["phase"] == "Failed");
    let pod = cluster.pod("brief");
    assert_eq!(pod["status"]["reason"], "DeadlineExceeded", "{pod}");
    assert!(container_status(&pod, "app")["state"]["terminated"].is_object(), "{pod}");
}

/// A pod whose sandbox cannot be made says why in an event, and stays Pending.
#[test]
fn a_pod_that_cannot_start_says_why() {
    let cluster = Cluster::start();
    cluster.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: stuck}\nspec:\n  nodeName: test-node\n  volumes: [{name: v, hostPath: {path: /nonexistent/podctl-test, type: Directory}}]\n  containers: [{name: app, image: busybox:1.36, command: [sleep, '3600'], volumeMounts: [{name: v, mountPath: /v}]}]\n",
    );
    cluster.wait("stuck says why", 20, || {
        let events = events_of(&cluster, "stuck");
        events.contains("FailedSync") && events.contains("/nonexistent/podctl-test is not a Directory")
    });
    assert_eq!(cluster.pod("stuck")["status"]["phase"], "Pending");
}

/// An HTTPS probe takes the pod's certificate unchecked, as kubelet's: a host-network pod
/// probed on the node's own TLS endpoint (open to all here) becomes Ready; probed in plain
/// HTTP there, it does not.
#[test]
fn https_probes_do_not_check_the_certificate() {
    let cluster = Cluster::start_with(&["--allow-unauthenticated"]);
    let pod = |name: &str, scheme: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: test-node\n  hostNetwork: true\n  containers:\n  - name: app\n    image: busybox:1.36\n    command: [sleep, '3600']\n    readinessProbe: {{httpGet: {{scheme: {scheme}, port: 10250, path: /healthz}}, periodSeconds: 1}}\n"
        )
    };
    cluster.apply(&pod("secure", "HTTPS"));
    cluster.apply(&pod("plain", "HTTP"));
    let secure = cluster.wait_ready("secure");
    assert_eq!(secure["status"]["podIP"], "127.0.0.1");
    cluster.wait("plain's probe fails", 20, || events_of(&cluster, "plain").contains("Readiness probe failed"));
    assert!(!ready(&cluster.pod("plain")));
}
