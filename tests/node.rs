//! `podctl node` with `podctl apiserver`, driven by the real kubectl: the node registers
//! itself and keeps its lease, and `kubectl logs` and `kubectl exec` reach a pod on it
//! through the API server. The pod is started with `podctl run -d` on a scratch node (its
//! own network namespace); the node agent and the API server talk over loopback.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::apiserver::ApiServer;
use testkit::node::Node;

const PODCTL: &str = env!("CARGO_BIN_EXE_podctl");

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec:
  nodeName: test-node
  containers:
  - name: app
    image: busybox
    command: [sh, -c, "echo hello; echo oops >&2; while true; do sleep 1; done"]
  - name: short
    image: busybox
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

/// An API server, a scratch node running the `web` pod, and `podctl node` registered as
/// `test-node`, which lets in the API server's client certificate only.
struct Cluster {
    api: ApiServer,
    node: Node,
    agent: Process,
    endpoint: SocketAddr,
}

impl Cluster {
    fn start() -> Cluster {
        let node = Node::new(PODCTL).with_busybox();
        let api = ApiServer::start(PODCTL, &[]);
        let manifest = node.dir.path().join("web.yaml");
        std::fs::write(&manifest, POD).unwrap();
        node.ok(&["run", "-d", "-f", manifest.to_str().unwrap()]);
        let endpoint = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
        let agent = node
            .host_command()
            .args(["node", "--node-name", "test-node", "--listen", &endpoint.to_string()])
            .arg("--kubeconfig")
            .arg(api.kubeconfig())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let cluster = Cluster { api, node, agent: Process(agent), endpoint };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cluster.api.kubectl_output(&["get", "node", "test-node"], None).status.success() {
            assert!(Instant::now() < deadline, "the node did not register");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster.api.kubectl_stdin(&["apply", "-f", "-"], POD);
        cluster
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.api.kubectl_output(args, None)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_node_registers_and_renews_its_lease() {
    let cluster = Cluster::start();
    // One agent per node: a second on the same data directory is refused.
    let second = cluster
        .node
        .host_command()
        .args(["node", "--node-name", "test-node", "--listen", "127.0.0.1:0"])
        .arg("--kubeconfig")
        .arg(cluster.api.kubeconfig())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(125));
    assert!(text(&second.stderr).contains("is in use by another podctl node"), "{}", text(&second.stderr));
    let node = cluster.api.kubectl(&["get", "node", "test-node", "-o", "json"]);
    let node: serde_json::Value = serde_json::from_str(&node).unwrap();
    assert_eq!(node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"], cluster.endpoint.port());
    assert_eq!(node["status"]["addresses"][0], serde_json::json!({"type": "InternalIP", "address": "127.0.0.1"}));
    let ready = node["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "True");
    let wide = cluster.api.kubectl(&["get", "nodes"]);
    assert!(wide.lines().any(|l| l.starts_with("test-node") && l.contains("Ready")), "{wide}");
    let lease = cluster.api.kubectl(&["get", "lease", "-n", "kube-node-lease", "test-node", "-o", "json"]);
    let lease: serde_json::Value = serde_json::from_str(&lease).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "test-node");

    // The endpoint lets in the API server's client certificate only (whoever reaches it
    // could exec into every container): not plain HTTP, not a client without a
    // certificate, not the cluster's admin token.
    let mut stream = TcpStream::connect(cluster.endpoint).unwrap();
    std::io::Write::write_all(&mut stream, b"GET /containerLogs/default/web/app HTTP/1.1\r\nHost: node\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(!text(&answer).contains("hello"), "{}", text(&answer));
    let token = cluster.api.access().token.unwrap();
    let url = format!("https://{}/containerLogs/default/web/app", cluster.endpoint);
    for auth in [None, Some(format!("Authorization: Bearer {token}"))] {
        let mut curl = std::process::Command::new("curl");
        curl.args(["-sS", "-k", "--max-time", "10", &url]);
        if let Some(auth) = &auth {
            curl.args(["-H", auth]);
        }
        let out = curl.output().unwrap();
        assert!(
            !out.status.success() && !text(&out.stdout).contains("hello"),
            "let in with {auth:?}: {}",
            text(&out.stdout)
        );
    }

    // A node agent started again finds its Node and brings it up to date.
    let Cluster { api, node, agent, .. } = cluster;
    drop(agent);
    let endpoint = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let again = node
        .host_command()
        .args(["node", "--node-name", "test-node", "--listen", &endpoint.to_string(), "--allow-unauthenticated"])
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _again = Process(again);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let port =
            api.kubectl(&["get", "node", "test-node", "-o", "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}"]);
        if port == endpoint.port().to_string() {
            break;
        }
        assert!(Instant::now() < deadline, "the node kept port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kubectl_logs_reads_the_node_through_the_api_server() {
    let cluster = Cluster::start();
    // Follows the short container until it exits: its whole output, in order.
    let followed = cluster.kubectl(&["logs", "-f", "web", "-c", "short"]);
    assert!(followed.status.success(), "{}", text(&followed.stderr));
    assert_eq!(text(&followed.stdout), "one\ntwo\n");

    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let out = cluster.kubectl(&["logs", "web", "-c", "app"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        if text(&out.stdout).contains("oops") || Instant::now() > deadline {
            break text(&out.stdout);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(logs, "hello\noops\n", "stdout and stderr, merged in order");
    assert_eq!(text(&cluster.kubectl(&["logs", "web", "-c", "app", "--tail", "1"]).stdout), "oops\n");
    assert_eq!(text(&cluster.kubectl(&["logs", "web", "-c", "app", "--limit-bytes", "3"]).stdout), "hel");
    let stamped = text(&cluster.kubectl(&["logs", "web", "-c", "app", "--timestamps"]).stdout);
    let first = stamped.lines().next().unwrap();
    assert!(first.ends_with("Z hello") && first.starts_with("20"), "{stamped}");

    // kubectl picks the first container when none is named.
    let defaulted = cluster.kubectl(&["logs", "web"]);
    assert_eq!(text(&defaulted.stdout), "hello\noops\n", "{}", text(&defaulted.stderr));
    // What kubectl says when a request names nothing that exists.
    let missing = text(&cluster.kubectl(&["logs", "nope"]).stderr);
    assert!(missing.contains("pods \"nope\" not found"), "{missing}");
    let previous = text(&cluster.kubectl(&["logs", "web", "-c", "app", "--previous"]).stderr);
    assert!(previous.contains("previous terminated container \"app\""), "{previous}");
    let bad = text(&cluster.kubectl(&["logs", "web", "-c", "nope"]).stderr);
    assert!(bad.contains("container nope is not valid for pod web"), "{bad}");
}

#[test]
fn kubectl_exec_runs_in_the_container_over_a_websocket() {
    let cluster = Cluster::start();
    let out = cluster.kubectl(&["exec", "web", "-c", "app", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));

    // stdin, to its end (v5's close signal).
    let upper =
        cluster.api.kubectl_stdin(&["exec", "-i", "web", "-c", "app", "--", "tr", "a-z", "A-Z"], "hello\nworld\n");
    assert_eq!(upper, "HELLO\nWORLD\n");
    // In the pod: its hostname, its processes.
    assert_eq!(cluster.api.kubectl(&["exec", "web", "-c", "app", "--", "hostname"]), "web\n");

    let not_found = cluster.kubectl(&["exec", "web", "-c", "app", "--", "/no/such/program"]);
    assert!(!not_found.status.success());
    assert!(text(&not_found.stderr).contains("/no/such/program"), "{}", text(&not_found.stderr));
    let bad = text(&cluster.kubectl(&["exec", "web", "-c", "nope", "--", "true"]).stderr);
    assert!(bad.contains("container nope is not valid for pod web"), "{bad}");

    // A pod no node has is refused by the API server.
    cluster.api.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: nowhere}\nspec: {containers: [{name: c, image: busybox}]}\n",
    );
    let unbound = text(&cluster.kubectl(&["exec", "nowhere", "--", "true"]).stderr);
    assert!(unbound.contains("pod nowhere does not have a host assigned"), "{unbound}");
}

/// With a terminal, over a WebSocket (kubectl 1.33) and over SPDY (1.29).
#[test]
fn kubectl_exec_with_a_terminal_gets_one_of_its_size() {
    let cluster = Cluster::start();
    let spdy = format!("{}/kubectl.1.29", testkit::apiserver::KUBECTL_DIR);
    for kubectl in [testkit::apiserver::KUBECTL, spdy.as_str()] {
        let (master, slave) = open_pty(30, 100);
        let slave_fd = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        let mut command = std::process::Command::new(kubectl);
        command
            .args(["exec", "-it", "web", "-c", "app", "--", "sh", "-c", "tty; stty size"])
            .env("KUBECONFIG", cluster.api.kubeconfig())
            .env("HOME", cluster.api.dir.path());
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while text(&cluster.kubectl(&["logs", "web", "-c", "app"]).stdout) != "hello\noops\n" {
        assert!(Instant::now() < deadline, "the app container did not write its two lines");
        std::thread::sleep(Duration::from_millis(50));
    }
    let versions: Vec<(u32, String)> = (27..=33)
        .map(|minor| (minor, format!("{}/kubectl.1.{minor}", testkit::apiserver::KUBECTL_DIR)))
        .filter(|(_, path)| std::path::Path::new(path).exists())
        .collect();
    assert!(versions.iter().any(|(minor, _)| *minor < 30), "an SPDY-only kubectl expected: {versions:?}");
    assert!(versions.iter().any(|(minor, _)| *minor >= 30), "a WebSocket kubectl expected: {versions:?}");
    for (minor, kubectl) in &versions {
        let run = |args: &[&str], stdin: &str| -> Output {
            let mut child = std::process::Command::new(kubectl)
                .args(args)
                .env("KUBECONFIG", cluster.api.kubeconfig())
                .env("HOME", cluster.api.dir.path().join(format!("home-1.{minor}")))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        };
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
