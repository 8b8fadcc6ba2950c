//! `podctl up` — API server, controllers, scheduler and node agent in one process — driven
//! by the real kubectl as a user drives a cluster: Deployments scaled, rolled out and back,
//! self-healing, Services reaching their pods, cascading deletion, and a restart that
//! leaves the pods running. Everything lives in a scratch node's network namespace.

use std::collections::HashMap;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::dnsmasq::Dnsmasq;
use testkit::node::Node;

const PODCTL: &str = env!("CARGO_BIN_EXE_podctl");
const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl";

/// A web server that answers with its pod's name, ready once it listens.
fn web_deployment(name: &str, replicas: u32, image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        command: [sh, -c, "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          tcpSocket: {{port: http}}
          periodSeconds: 1
"#
    )
}

/// `podctl up` on a scratch node, killed when dropped (before the node removes its pods).
struct Up {
    process: Option<Child>,
    node: Node,
}

impl Up {
    fn start() -> Up {
        let mut up = Up::new();
        up.launch(&[]);
        up
    }

    /// Not started yet.
    fn new() -> Up {
        let node = Node::new(PODCTL).with_busybox_as("busybox:1.36").with_busybox_as("busybox:1.37");
        // The node's resolver, for names outside the cluster: a dnsmasq of the test's, when
        // there is one.
        std::fs::write(node.dir.path().join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        Up { process: None, node }
    }

    fn launch(&mut self, flags: &[&str]) {
        let log = std::fs::File::options().create(true).append(true).open(self.node.dir.path().join("up.log")).unwrap();
        let child = self
            .node
            .command()
            .args(["up", "--node-name", "test-node", "--service-cluster-ip-range", "10.96.0.0/24"])
            .args(["--resolv-conf", self.node.dir.path().join("resolv.conf").to_str().unwrap()])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.process = Some(child);
        self.wait("the node is Ready", 30, || {
            let node = self.json(&["get", "node", "test-node"]);
            conditions(&node).get("Ready").is_some_and(|s| s == "True")
        });
    }

    /// Stops `podctl up` as systemd would (SIGTERM) and waits for it.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.process.take().unwrap();
        // SAFETY: a signal to our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "podctl up did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(KUBECTL);
        testkit::netns::enter_path(self.node.netns.path(), &mut cmd);
        cmd.args(args)
            .env("KUBECONFIG", self.node.data_dir().join("kubeconfig"))
            .env("HOME", self.node.dir.path().join("kubectl-home"));
        cmd
    }

    fn kubectl_output(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_stdin(args, "")
    }

    fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_output(args, stdin);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let out = self.kubectl_output(&args, "");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The pods of a label selector: name → object.
    fn pods(&self, selector: &str) -> HashMap<String, Value> {
        let list = self.json(&["get", "pods", "-l", selector]);
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| (p["metadata"]["name"].as_str().unwrap().to_string(), p.clone()))
            .collect()
    }

    /// The ready, not terminating pods of a selector.
    fn ready_pods(&self, selector: &str) -> HashMap<String, Value> {
        self.pods(selector)
            .into_iter()
            .filter(|(_, p)| ready(p) && p["metadata"]["deletionTimestamp"].is_null())
            .collect()
    }

    fn wait(&self, what: &str, seconds: u64, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while !check() {
            if Instant::now() > deadline {
                let out = self.kubectl_output(&["get", "deploy,rs,pods,svc,endpointslices", "-o", "wide"], "");
                let state = text(&out.stdout) + &text(&out.stderr);
                let events = text(&self.kubectl_output(&["get", "events", "-A"], "").stdout);
                let log = std::fs::read_to_string(self.node.dir.path().join("up.log")).unwrap_or_default();
                panic!("{what}: not within {seconds}s\n{state}\n{events}\nup:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// An HTTP GET of `ip:port` from inside the node's network namespace (its "host"): the
    /// body.
    fn fetch_from_node(&self, ip: &str, port: i64) -> String {
        let mut cmd = Command::new("busybox");
        testkit::netns::enter_path(self.node.netns.path(), &mut cmd);
        let out = cmd.args(["sh", "-c", &http_get(ip, port)]).output().unwrap();
        body(&text(&out.stdout))
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A shell command that GETs `/` from `ip:port` over plain TCP (busybox's static wget
/// cannot resolve even an address without the C library's name service modules).
fn http_get(ip: &str, port: i64) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} {port}")
}

/// The body of an HTTP response.
fn body(response: &str) -> String {
    response.split("\r\n\r\n").nth(1).unwrap_or_default().trim().to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn conditions(object: &Value) -> HashMap<String, String> {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (c["type"].as_str().unwrap_or("").to_string(), c["status"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn ready(pod: &Value) -> bool {
    conditions(pod).get("Ready").is_some_and(|s| s == "True")
}

fn image_of(pod: &Value) -> String {
    pod["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_deployment_runs_heals_scales_and_is_served_by_its_service() {
    let up = Up::start();
    up.kubectl_stdin(&["apply", "-f", "-"], &web_deployment("web", 3, "busybox:1.36"));
    up.wait("3 ready pods", 60, || up.ready_pods("app=web").len() == 3);
    let pods = up.ready_pods("app=web");
    let ips: std::collections::HashSet<&str> = pods.values().map(|p| p["status"]["podIP"].as_str().unwrap()).collect();
    assert_eq!(ips.len(), 3, "distinct pod IPs: {ips:?}");
    for pod in pods.values() {
        assert_eq!(pod["spec"]["nodeName"], "test-node");
        assert!(pod["metadata"]["labels"]["pod-template-hash"].is_string());
    }
    up.wait("the deployment available", 30, || {
        let d = up.json(&["get", "deployment", "web"]);
        d["status"]["availableReplicas"] == 3 && conditions(&d).get("Available").is_some_and(|s| s == "True")
    });
    let status = up.kubectl(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    assert!(status.contains("successfully rolled out"), "{status}");

    // The Service reaches every pod: by its cluster IP from a pod, by its node port from
    // the node.
    up.kubectl(&["expose", "deployment", "web", "--port=80", "--target-port=http", "--type=NodePort"]);
    let service = up.json(&["get", "service", "web"]);
    let cluster_ip = service["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_port = service["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    up.wait("the service's endpoints", 30, || {
        let slices = up.json(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web"]);
        let ready = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .count();
        let endpoints = up.json(&["get", "endpoints", "web"]);
        let addresses = endpoints["subsets"][0]["addresses"].as_array().map_or(0, |a| a.len());
        ready == 3 && addresses == 3 && endpoints["subsets"][0]["ports"][0]["port"] == 8080
    });
    let client = pods.keys().next().unwrap().clone();
    let names: std::collections::HashSet<String> = pods.keys().cloned().collect();
    up.wait("answers from all 3 pods through the cluster IP", 30, || {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..30 {
            let out = up.kubectl_output(&["exec", &client, "--", "sh", "-c", &http_get(&cluster_ip, 80)], "");
            seen.insert(body(&text(&out.stdout)));
        }
        names.iter().all(|n| seen.contains(n))
    });
    // On the node's own address (kube-proxy leaves loopback out of node ports).
    let from_node = up.fetch_from_node("10.88.0.1", node_port);
    assert!(names.contains(&from_node), "node port: {from_node:?}");

    // The cluster DNS, through the kube-dns Service: the Service by its name (also through
    // the pod's search path), an outside name forwarded to the node's resolver.
    assert_eq!(up.json(&["get", "service", "kube-dns", "-n", "kube-system"])["spec"]["clusterIP"], "10.96.0.10");
    let _upstream = Dnsmasq::start(up.node.netns.path(), &[("outside.example", "192.0.2.7")]);
    let resolv_conf = up.kubectl(&["exec", &client, "--", "cat", "/etc/resolv.conf"]);
    assert_eq!(
        resolv_conf,
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    for name in ["web.default.svc.cluster.local", "web", "www.outside.example"] {
        let expected = if name.contains("outside") { "192.0.2.7".to_string() } else { cluster_ip.clone() };
        let out = up.kubectl_output(&["exec", &client, "--", "nslookup", name], "");
        let out = text(&out.stdout) + &text(&out.stderr);
        assert!(out.contains(&format!("Address: {expected}")), "nslookup {name}:\n{out}");
    }

    // A deleted pod is replaced.
    let victim = pods.keys().next().unwrap().clone();
    up.kubectl(&["delete", "pod", &victim, "--wait=false"]);
    up.wait("a replacement pod", 60, || {
        let ready = up.ready_pods("app=web");
        ready.len() == 3 && !ready.contains_key(&victim)
    });

    // Scaled up and down.
    up.kubectl(&["scale", "deployment", "web", "--replicas=5"]);
    up.wait("5 ready pods", 60, || up.ready_pods("app=web").len() == 5);
    up.kubectl(&["scale", "deployment", "web", "--replicas=1"]);
    up.wait("1 pod left", 60, || up.pods("app=web").len() == 1);

    // A Service without a selector, with Endpoints written by hand: mirrored into a slice
    // the proxy follows.
    up.wait("1 ready pod", 30, || up.ready_pods("app=web").len() == 1);
    let (last, pod) = up.ready_pods("app=web").into_iter().next().unwrap();
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let manual = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: manual}}\nspec: {{ports: [{{port: 80, targetPort: 8080}}]}}\n---\n\
         apiVersion: v1\nkind: Endpoints\nmetadata: {{name: manual}}\nsubsets: [{{addresses: [{{ip: \"{ip}\"}}], ports: [{{port: 8080}}]}}]\n"
    );
    up.kubectl_stdin(&["apply", "-f", "-"], &manual);
    let manual_ip = up.json(&["get", "service", "manual"])["spec"]["clusterIP"].as_str().unwrap().to_string();
    up.wait("the manual Endpoints mirrored and served", 30, || {
        let slices = up.json(&["get", "endpointslices", "-l", "kubernetes.io/service-name=manual"]);
        let mirrored = slices["items"][0]["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
            == "endpointslicemirroring-controller.k8s.io";
        let out = up.kubectl_output(&["exec", &last, "--", "sh", "-c", &http_get(&manual_ip, 80)], "");
        mirrored && body(&text(&out.stdout)) == last
    });

    // The ClusterIP of the range's first address is the API server's own Service.
    let kubernetes = up.json(&["get", "service", "kubernetes"]);
    assert_eq!(kubernetes["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(up.json(&["get", "endpoints", "kubernetes"])["subsets"][0]["ports"][0]["name"], "https");
}

/// Follows the pods of a selector through a watch (kubectl get -w), keeping the fewest
/// ready and the most live (neither finished nor being deleted) pods seen at any moment.
struct PodWatch {
    child: Child,
    seen: std::sync::Arc<std::sync::Mutex<(usize, usize)>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl PodWatch {
    /// Counts from when the watch has listed the `initial` pods there are.
    fn start(up: &Up, selector: &str, initial: usize) -> PodWatch {
        let mut child = up
            .kubectl_command(&["get", "pods", "-l", selector, "-w", "--output-watch-events", "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new((usize::MAX, 0)));
        let shared = seen.clone();
        let reader = std::thread::spawn(move || {
            let mut pods: HashMap<String, (bool, bool)> = HashMap::new();
            let mut listed = false;
            for event in serde_json::Deserializer::from_reader(std::io::BufReader::new(stdout)).into_iter::<Value>() {
                let Ok(event) = event else { break };
                let pod = &event["object"];
                let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
                if event["type"] == "DELETED" {
                    pods.remove(&name);
                } else {
                    // A pod that has finished counts as gone.
                    let finished = matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
                    pods.insert(name, (ready(pod), finished || !pod["metadata"]["deletionTimestamp"].is_null()));
                }
                let live = pods.values().filter(|(_, deleting)| !deleting).count();
                let ready = pods.values().filter(|(ready, deleting)| *ready && !deleting).count();
                listed |= pods.len() >= initial;
                if !listed {
                    continue;
                }
                let mut seen = shared.lock().unwrap();
                seen.0 = seen.0.min(ready);
                seen.1 = seen.1.max(live);
            }
        });
        PodWatch { child, seen, reader: Some(reader) }
    }

    /// (fewest ready, most live) seen so far.
    fn extremes(&self) -> (usize, usize) {
        *self.seen.lock().unwrap()
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// A DaemonSet whose pods answer with their name, on the node's port 18081 too.
fn daemon_set(image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: agent
        image: {image}
        command: [sh, -c, "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{containerPort: 8080, hostPort: 18081}}]
"#
    )
}

#[test]
fn a_daemonset_rolls_out_keeps_its_history_and_is_undone() {
    let up = Up::start();
    up.kubectl_stdin(&["apply", "-f", "-"], &daemon_set("busybox:1.36"));
    let status = up.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let image = || -> Vec<String> { up.ready_pods("app=agent").values().map(|p| image_of(p)).collect() };
    assert_eq!(image(), ["busybox:1.36"]);
    // Its hostPort: the node's port 18081 reaches the pod.
    let pod = up.ready_pods("app=agent").into_keys().next().unwrap();
    up.wait("the host port forwarded", 20, || up.fetch_from_node("10.88.0.1", 18081) == pod);

    up.kubectl(&["set", "image", "daemonset/agent", "agent=busybox:1.37"]);
    let status = up.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    up.wait("the pod of the new template", 30, || image() == ["busybox:1.37"] && up.pods("app=agent").len() == 1);
    let history = up.kubectl(&["rollout", "history", "daemonset/agent"]);
    let revisions: Vec<&str> = history.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revisions, ["daemonset.apps/agent", "REVISION", "1", "2"], "{history}");
    let second = up.kubectl(&["rollout", "history", "daemonset/agent", "--revision=2"]);
    assert!(second.contains("busybox:1.37"), "{second}");

    let undone = up.kubectl(&["rollout", "undo", "daemonset/agent"]);
    assert!(undone.contains("rolled back"), "{undone}");
    let status = up.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    up.wait("the pod of the first template again", 30, || {
        image() == ["busybox:1.36"] && up.pods("app=agent").len() == 1
    });
    let history = up.kubectl(&["rollout", "history", "daemonset/agent"]);
    let revisions: Vec<&str> = history.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(
        revisions,
        ["daemonset.apps/agent", "REVISION", "2", "3"],
        "the first template is the newest: {history}"
    );

    up.kubectl(&["delete", "daemonset", "agent"]);
    up.wait("the pods and revisions collected", 30, || {
        up.pods("app=agent").is_empty()
            && up.json(&["get", "controllerrevisions"])["items"].as_array().is_some_and(|i| i.is_empty())
    });
}

const STATEFUL_SET: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: stateful}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: 3
  serviceName: web
  selector: {matchLabels: {app: stateful}}
  template:
    metadata: {labels: {app: stateful}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: busybox:1.36
        command: [sh, -c, "test -f /data/first || date +%s%N > /data/first; exec httpd -f -p 8080 -h /data"]
        volumeMounts: [{name: data, mountPath: /data}]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 16Mi}}
"#;

/// The addresses an nslookup from inside `pod` answers for `name`.
fn resolve_from(up: &Up, pod: &str, name: &str) -> std::collections::BTreeSet<String> {
    let out = up.kubectl_output(&["exec", pod, "--", "nslookup", name], "");
    let text = text(&out.stdout);
    // The answer follows the `Name:` line (the lines before are the server's address).
    let answer = text.split_once("Name:").map_or("", |(_, answer)| answer);
    answer.lines().filter_map(|l| l.strip_prefix("Address: ")).map(|a| a.trim().to_string()).collect()
}

#[test]
fn a_statefulset_starts_in_order_keeps_names_and_volumes_and_is_found_by_name() {
    let up = Up::start();
    // Every pod event, in order: (name, ready).
    let mut watch = up
        .kubectl_command(&["get", "pods", "-l", "app=stateful", "-w", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let events = std::thread::spawn(move || {
        let mut events = Vec::new();
        for pod in serde_json::Deserializer::from_reader(std::io::BufReader::new(stdout)).into_iter::<Value>() {
            let Ok(pod) = pod else { break };
            events.push((pod["metadata"]["name"].as_str().unwrap_or_default().to_string(), ready(&pod)));
        }
        events
    });
    up.kubectl_stdin(&["apply", "-f", "-"], STATEFUL_SET);
    up.wait("3 ready pods", 90, || up.ready_pods("app=stateful").len() == 3);
    let _ = watch.kill();
    let _ = watch.wait();
    let events = events.join().unwrap();
    // OrderedReady: web-1 appears only once web-0 is ready, web-2 once web-1 is.
    for (before, after) in [("web-0", "web-1"), ("web-1", "web-2")] {
        let first = events.iter().position(|(name, _)| name == after).unwrap();
        assert!(
            events[..first].iter().any(|(name, ready)| name == before && *ready),
            "{after} before {before} was ready: {events:?}"
        );
    }
    let pods = up.ready_pods("app=stateful");
    let names: std::collections::BTreeSet<&str> = pods.keys().map(String::as_str).collect();
    assert_eq!(names, ["web-0", "web-1", "web-2"].into());
    for (name, pod) in &pods {
        assert_eq!(pod["spec"]["hostname"], name.as_str());
        assert_eq!(pod["spec"]["subdomain"], "web");
    }
    // Each pod has its own claim, provisioned on the node from the default class.
    let claims = up.json(&["get", "pvc"]);
    let bound: Vec<(&str, &str)> = claims["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["metadata"]["name"].as_str().unwrap(), c["status"]["phase"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(bound, [("data-web-0", "Bound"), ("data-web-1", "Bound"), ("data-web-2", "Bound")]);
    assert_eq!(claims["items"][0]["spec"]["storageClassName"], "local-path");

    // Found by name: the headless Service answers every pod, a pod's own name one.
    let ips: std::collections::BTreeSet<String> =
        pods.values().map(|p| p["status"]["podIP"].as_str().unwrap().to_string()).collect();
    up.wait("the headless Service resolves to the 3 pods", 30, || {
        resolve_from(&up, "web-0", "web.default.svc.cluster.local") == ips
    });
    let web_1 = pods["web-1"]["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(resolve_from(&up, "web-0", "web-1.web.default.svc.cluster.local"), [web_1].into());

    // A pod deleted comes back with its name and its volume's data.
    let first = up.kubectl(&["exec", "web-1", "--", "cat", "/data/first"]);
    let uid = pods["web-1"]["metadata"]["uid"].clone();
    up.kubectl(&["delete", "pod", "web-1", "--wait=false"]);
    up.wait("web-1 back", 60, || {
        up.ready_pods("app=stateful").get("web-1").is_some_and(|p| p["metadata"]["uid"] != uid)
    });
    assert_eq!(up.kubectl(&["exec", "web-1", "--", "cat", "/data/first"]), first, "the same volume");

    // A rolling update replaces the pods from the highest ordinal down; undone, it rolls back.
    let images =
        || -> std::collections::BTreeSet<String> { up.ready_pods("app=stateful").values().map(image_of).collect() };
    up.kubectl(&["set", "image", "statefulset/web", "web=busybox:1.37"]);
    let status = up.kubectl(&["rollout", "status", "statefulset/web", "--timeout=90s"]);
    assert!(status.contains("roll out complete"), "{status}");
    up.wait("every pod on the new template", 30, || images() == ["busybox:1.37".to_string()].into());
    up.kubectl(&["rollout", "undo", "statefulset/web"]);
    let status = up.kubectl(&["rollout", "status", "statefulset/web", "--timeout=90s"]);
    assert!(status.contains("roll out complete"), "{status}");
    up.wait("every pod on the first template again", 30, || {
        images() == ["busybox:1.36".to_string()].into() && up.ready_pods("app=stateful").len() == 3
    });
    assert_eq!(up.kubectl(&["exec", "web-1", "--", "cat", "/data/first"]), first, "still the same volume");

    // Scaled down from the highest ordinal; the claims stay.
    up.kubectl(&["scale", "statefulset", "web", "--replicas=1"]);
    up.wait("only web-0 left", 60, || up.pods("app=stateful").keys().eq(["web-0"].iter()));
    assert_eq!(up.json(&["get", "pvc"])["items"].as_array().unwrap().len(), 3);

    // A claim deleted releases its volume, which (reclaim Delete) goes with its directory.
    up.kubectl(&["delete", "statefulset", "web"]);
    up.wait("the pods gone", 60, || up.pods("app=stateful").is_empty());
    let volume = up.json(&["get", "pvc", "data-web-2"])["spec"]["volumeName"].as_str().unwrap().to_string();
    let path = up.json(&["get", "pv", &volume])["spec"]["hostPath"]["path"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&path).join("first").exists(), "{path}");
    up.kubectl(&["delete", "pvc", "data-web-2"]);
    up.wait("the volume and its directory gone", 30, || {
        !up.kubectl_output(&["get", "pv", &volume], "").status.success() && !std::path::Path::new(&path).exists()
    });
}

const IDLE: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: burn}
spec:
  replicas: 1
  selector: {matchLabels: {app: burn}}
  template:
    metadata: {labels: {app: burn}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: burn
        image: busybox:1.36
        command: [sleep, "3600"]
        resources: {requests: {cpu: 100m}}
"#;

#[test]
fn kubectl_top_shows_a_busy_pod_and_an_autoscaler_follows_its_cpu() {
    let mut up = Up::new();
    up.launch(&["--horizontal-pod-autoscaler-downscale-stabilization", "5"]);
    up.kubectl_stdin(&["apply", "-f", "-"], IDLE);
    up.wait("the pod ready", 60, || up.ready_pods("app=burn").len() == 1);
    let busy = up.ready_pods("app=burn").into_keys().next().unwrap();
    up.kubectl(&["autoscale", "deployment", "burn", "--cpu-percent=50", "--min=1", "--max=3"]);
    // A burner in the pod for 45 s: a whole core against a request of 100m.
    let mut burner = up
        .kubectl_command(&["exec", &busy, "--", "timeout", "45", "sh", "-c", "while :; do :; done"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let millicores = |top: &str, name: &str| -> Option<u64> {
        let line = top.lines().find(|l| l.split_whitespace().next() == Some(name))?;
        line.split_whitespace().nth(1)?.strip_suffix('m')?.parse().ok()
    };
    up.wait("kubectl top pods shows the burner", 60, || {
        let top = up.kubectl_output(&["top", "pods"], "");
        millicores(&text(&top.stdout), &busy).is_some_and(|m| m > 500)
    });
    let nodes = up.kubectl(&["top", "nodes"]);
    assert!(nodes.contains("test-node"), "{nodes}");
    up.wait("scaled up to the maximum", 90, || up.json(&["get", "deployment", "burn"])["spec"]["replicas"] == 3);
    let autoscaler = up.json(&["get", "hpa", "burn"]);
    assert!(
        autoscaler["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"].as_i64().unwrap() > 50,
        "{autoscaler}"
    );
    assert_eq!(conditions(&autoscaler).get("ScalingLimited").map(String::as_str), Some("True"), "{autoscaler}");
    let _ = burner.wait();
    up.wait("scaled back down once idle", 120, || up.json(&["get", "deployment", "burn"])["spec"]["replicas"] == 1);
    let events = up.kubectl(&["get", "events", "--field-selector", "reason=SuccessfulRescale"]);
    assert!(events.contains("New size: 3") && events.contains("New size: 1"), "{events}");
}

fn rollout_deployment() -> String {
    web_deployment("roll", 4, "busybox:1.36").replace(
        "  replicas: 4\n",
        "  replicas: 4\n  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}\n",
    )
}

#[test]
fn a_rollout_keeps_within_surge_and_unavailability_and_is_undone() {
    let up = Up::start();
    up.kubectl_stdin(&["apply", "-f", "-"], &rollout_deployment());
    up.kubectl(&["rollout", "status", "deployment/roll", "--timeout=60s"]);
    assert_eq!(up.ready_pods("app=roll").len(), 4);

    let watch = PodWatch::start(&up, "app=roll", 4);
    up.wait("the watch lists the pods", 10, || watch.extremes().1 == 4);
    up.kubectl(&["set", "image", "deployment/roll", "web=busybox:1.37"]);
    let status = up.kubectl(&["rollout", "status", "deployment/roll", "--timeout=90s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    up.wait("only new pods", 30, || {
        let pods = up.pods("app=roll");
        pods.len() == 4 && pods.values().all(|p| image_of(p) == "busybox:1.37" && ready(p))
    });
    let (fewest_ready, most_live) = watch.extremes();
    drop(watch);
    assert!(fewest_ready >= 3, "ready pods fell to {fewest_ready}, below replicas - maxUnavailable");
    assert!(most_live <= 5, "{most_live} pods at once, above replicas + maxSurge");

    // Revision 3 changes the environment; undo goes back to revision 2's template, and
    // --to-revision=1 to the first.
    up.kubectl(&["set", "env", "deployment/roll", "FOO=bar"]);
    up.kubectl(&["rollout", "status", "deployment/roll", "--timeout=90s"]);
    let history = up.kubectl(&["rollout", "history", "deployment/roll"]);
    for revision in ["1", "2", "3"] {
        assert!(history.lines().any(|l| l.split_whitespace().next() == Some(revision)), "{history}");
    }
    up.kubectl(&["rollout", "undo", "deployment/roll"]);
    up.kubectl(&["rollout", "status", "deployment/roll", "--timeout=90s"]);
    let template = &up.json(&["get", "deployment", "roll"])["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(template["image"], "busybox:1.37");
    assert!(template["env"].is_null(), "{template}");
    up.kubectl(&["rollout", "undo", "deployment/roll", "--to-revision=1"]);
    up.kubectl(&["rollout", "status", "deployment/roll", "--timeout=90s"]);
    let deployment = up.json(&["get", "deployment", "roll"]);
    assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["image"], "busybox:1.36");
    assert_eq!(deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "5");
    up.wait("the first template's pods", 30, || {
        let pods = up.pods("app=roll");
        pods.len() == 4 && pods.values().all(|p| image_of(p) == "busybox:1.36")
    });
    // Paused, a new template rolls out nothing until resumed; a restart rolls out anew.
    up.kubectl(&["rollout", "pause", "deployment/roll"]);
    up.kubectl(&["set", "image", "deployment/roll", "web=busybox:1.37"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(up.pods("app=roll").values().all(|p| image_of(p) == "busybox:1.36"), "a paused deployment rolled out");
    let paused = up.json(&["get", "deployment", "roll"]);
    assert!(
        paused["status"]["conditions"].as_array().unwrap().iter().any(|c| c["reason"] == "DeploymentPaused"),
        "{paused}"
    );
    up.kubectl(&["rollout", "resume", "deployment/roll"]);
    up.kubectl(&["rollout", "status", "deployment/roll", "--timeout=90s"]);
    up.kubectl(&["rollout", "undo", "deployment/roll"]);
    up.kubectl(&["rollout", "status", "deployment/roll", "--timeout=90s"]);
    let before: Vec<String> = up.pods("app=roll").into_keys().collect();
    up.kubectl(&["rollout", "restart", "deployment/roll"]);
    up.kubectl(&["rollout", "status", "deployment/roll", "--timeout=90s"]);
    up.wait("restarted pods", 30, || {
        let pods = up.pods("app=roll");
        pods.len() == 4 && pods.keys().all(|k| !before.contains(k))
    });
    let described = up.kubectl(&["describe", "deployment", "roll"]);
    assert!(
        described.contains("ScalingReplicaSet") && described.contains("Scaled up replica set roll-"),
        "{described}"
    );

    // Old ReplicaSets stay, scaled to 0, for later undos.
    let sets = up.json(&["get", "replicasets", "-l", "app=roll"]);
    let sizes: Vec<i64> =
        sets["items"].as_array().unwrap().iter().map(|rs| rs["spec"]["replicas"].as_i64().unwrap()).collect();
    assert_eq!(sizes.iter().sum::<i64>(), 4, "{sizes:?}");
    // One per template: 1.36, 1.37, 1.37 with FOO, 1.36 restarted.
    assert_eq!(sizes.len(), 4, "{sizes:?}");
}

#[test]
fn deleting_a_deployment_cascades_in_the_background_in_the_foreground_or_orphans() {
    let up = Up::start();
    for name in ["back", "fore", "orphan"] {
        up.kubectl_stdin(&["apply", "-f", "-"], &web_deployment(name, 2, "busybox:1.36"));
    }
    for name in ["back", "fore", "orphan"] {
        up.wait(&format!("{name} ready"), 60, || up.ready_pods(&format!("app={name}")).len() == 2);
    }

    up.kubectl(&["delete", "deployment", "back"]);
    up.wait("the background cascade", 60, || {
        up.pods("app=back").is_empty()
            && up.json(&["get", "replicasets", "-l", "app=back"])["items"] == serde_json::json!([])
    });

    up.kubectl(&["delete", "deployment", "fore", "--cascade=foreground", "--wait=false"]);
    let deleting = up.json(&["get", "deployment", "fore"]);
    assert!(
        deleting["metadata"]["finalizers"].as_array().unwrap().iter().any(|f| f == "foregroundDeletion"),
        "{deleting}"
    );
    // The owner goes last: while it is there, so are its dependents' objects or it waits.
    up.wait("the foreground cascade", 60, || {
        let gone = !up.kubectl_output(&["get", "deployment", "fore"], "").status.success();
        let sets = up.json(&["get", "replicasets", "-l", "app=fore"]);
        if gone {
            assert_eq!(sets["items"], serde_json::json!([]), "the deployment went before its ReplicaSet");
        }
        gone && up.pods("app=fore").is_empty()
    });

    up.kubectl(&["delete", "deployment", "orphan", "--cascade=orphan"]);
    up.wait("the orphaned ReplicaSet freed", 30, || {
        let sets = up.json(&["get", "replicasets", "-l", "app=orphan"]);
        sets["items"]
            .as_array()
            .is_some_and(|s| s.len() == 1 && s[0]["metadata"]["ownerReferences"].as_array().is_none_or(Vec::is_empty))
    });
    assert_eq!(up.ready_pods("app=orphan").len(), 2, "the orphaned pods keep running");
}

#[test]
fn an_unschedulable_pod_says_why_and_is_placed_once_a_node_fits() {
    let up = Up::start();
    let pod = r#"
apiVersion: v1
kind: Pod
metadata: {name: picky}
spec:
  nodeSelector: {disktype: ssd}
  terminationGracePeriodSeconds: 1
  containers:
  - {name: app, image: "busybox:1.36", command: [sleep, "3600"]}
"#;
    up.kubectl_stdin(&["apply", "-f", "-"], pod);
    let message = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.";
    up.wait("the pod marked unschedulable", 30, || {
        let pod = up.json(&["get", "pod", "picky"]);
        pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| {
            c["type"] == "PodScheduled"
                && c["status"] == "False"
                && c["reason"] == "Unschedulable"
                && c["message"] == message
        })
    });
    let events = up.kubectl(&["get", "events", "--field-selector", "involvedObject.name=picky"]);
    assert!(events.contains("FailedScheduling") && events.contains(message), "{events}");

    let hungry = r#"
apiVersion: v1
kind: Pod
metadata: {name: hungry}
spec:
  containers:
  - {name: app, image: "busybox:1.36", command: [sleep, "3600"], resources: {requests: {cpu: "1000"}}}
"#;
    up.kubectl_stdin(&["apply", "-f", "-"], hungry);
    up.wait("the greedy pod marked unschedulable", 30, || {
        let pod = up.json(&["get", "pod", "hungry"]);
        pod["status"]["conditions"][0]["message"] == "0/1 nodes are available: 1 Insufficient cpu."
    });

    // A node that fits (the same one, labelled) takes the pod.
    up.kubectl(&["label", "node", "test-node", "disktype=ssd"]);
    up.wait("the pod placed and running", 60, || {
        let pod = up.json(&["get", "pod", "picky"]);
        pod["spec"]["nodeName"] == "test-node" && ready(&pod)
    });
}

#[test]
fn podctl_up_stopped_and_started_again_keeps_its_pods_running() {
    let mut up = Up::start();
    up.kubectl_stdin(&["apply", "-f", "-"], &web_deployment("web", 2, "busybox:1.36"));
    up.wait("2 ready pods", 60, || up.ready_pods("app=web").len() == 2);
    let before = up.ready_pods("app=web");
    let status = up.stop();
    assert!(status.success(), "podctl up on SIGTERM: {status}");
    // The pods kept running while it was down.
    for pod in before.values() {
        let ip = pod["status"]["podIP"].as_str().unwrap();
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert_eq!(up.fetch_from_node(ip, 8080), name);
    }
    up.launch(&[]);
    up.wait("the same pods ready", 60, || {
        let after = up.ready_pods("app=web");
        after.len() == 2 && after.keys().all(|k| before.contains_key(k))
    });
    for pod in up.ready_pods("app=web").values() {
        assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0, "{pod}");
        let uid = pod["metadata"]["uid"].clone();
        assert_eq!(before[pod["metadata"]["name"].as_str().unwrap()]["metadata"]["uid"], uid);
    }
}

/// Runs `ip ARGS` in a network namespace.
fn ip_in(netns: &std::path::Path, args: &[&str]) {
    let mut cmd = Command::new("ip");
    testkit::netns::enter_path(netns, &mut cmd);
    let out = cmd.args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
}

#[test]
fn a_node_that_stops_is_marked_unreachable_and_its_pods_come_back_on_the_other() {
    // Two nodes, each in a network namespace of its own, joined by a veth pair: the
    // first runs `podctl up`, the second `podctl node` joined to it; a third joins later.
    let mut up = Up::new();
    let other = Node::new(PODCTL).with_busybox_as("busybox:1.36");
    ip_in(up.node.netns.path(), &["link", "add", "vA", "type", "veth", "peer", "name", "vB"]);
    ip_in(up.node.netns.path(), &["link", "set", "vB", "netns", other.netns.path().to_str().unwrap()]);
    ip_in(up.node.netns.path(), &["addr", "add", "192.168.77.1/24", "dev", "vA"]);
    ip_in(up.node.netns.path(), &["link", "set", "vA", "up"]);
    ip_in(other.netns.path(), &["addr", "add", "192.168.77.2/24", "dev", "vB"]);
    ip_in(other.netns.path(), &["link", "set", "vB", "up"]);
    // A third node, joining later, on a link of its own to the first.
    let third = Node::new(PODCTL).with_busybox_as("busybox:1.36");
    ip_in(up.node.netns.path(), &["link", "add", "vA2", "type", "veth", "peer", "name", "vC"]);
    ip_in(up.node.netns.path(), &["link", "set", "vC", "netns", third.netns.path().to_str().unwrap()]);
    ip_in(up.node.netns.path(), &["addr", "add", "192.168.78.1/24", "dev", "vA2"]);
    ip_in(up.node.netns.path(), &["link", "set", "vA2", "up"]);
    ip_in(third.netns.path(), &["addr", "add", "192.168.78.2/24", "dev", "vC"]);
    ip_in(third.netns.path(), &["link", "set", "vC", "up"]);
    let mut third_agent: Option<Child> = None;
    up.launch(&[
        "--listen",
        "0.0.0.0:6443",
        "--node-ip",
        "192.168.77.1",
        "--node-listen",
        "192.168.77.1:10250",
        "--node-monitor-grace-period",
        "15",
        "--default-unreachable-toleration-seconds",
        "2",
    ]);
    let log = std::fs::File::create(other.dir.path().join("agent.log")).unwrap();
    let mut agent = other
        .command()
        .args(["node", "--node-name", "node-b", "--listen", "192.168.77.2:10250", "--pod-cidr", "10.89.0.0/16"])
        .arg("--kubeconfig")
        .arg(up.node.data_dir().join("kubeconfig"))
        .args(["--server", "https://192.168.77.1:6443"])
        .stderr(log)
        .spawn()
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        up.wait("node-b Ready", 30, || {
            conditions(&up.json(&["get", "node", "node-b"])).get("Ready").is_some_and(|s| s == "True")
        });
        up.kubectl_stdin(&["apply", "-f", "-"], &web_deployment("spread", 2, "busybox:1.36"));
        up.wait("one pod on each node", 60, || {
            let pods = up.ready_pods("app=spread");
            let nodes: std::collections::HashSet<&str> =
                pods.values().map(|p| p["spec"]["nodeName"].as_str().unwrap()).collect();
            pods.len() == 2 && nodes.len() == 2
        });
        // Pods on one node reach pods on the other.
        let pods = up.ready_pods("app=spread");
        let local = pods.values().find(|p| p["spec"]["nodeName"] == "test-node").unwrap();
        let remote = pods.values().find(|p| p["spec"]["nodeName"] == "node-b").unwrap();
        let remote_ip = remote["status"]["podIP"].as_str().unwrap();
        assert!(remote_ip.starts_with("10.89."), "{remote_ip}");
        let local_name = local["metadata"]["name"].as_str().unwrap();
        up.wait("a pod reaches the other node's pod", 20, || {
            let out = up.kubectl_output(&["exec", local_name, "--", "sh", "-c", &http_get(remote_ip, 8080)], "");
            body(&text(&out.stdout)) == remote["metadata"]["name"].as_str().unwrap()
        });

        // A DaemonSet: a pod on each node, and on a third node once it joins.
        up.kubectl_stdin(&["apply", "-f", "-"], &daemon_set("busybox:1.36"));
        let daemon_nodes = || -> std::collections::BTreeSet<String> {
            up.ready_pods("app=agent").values().map(|p| p["spec"]["nodeName"].as_str().unwrap().to_string()).collect()
        };
        up.wait("a daemon pod on each node", 60, || daemon_nodes().len() == 2 && up.pods("app=agent").len() == 2);
        let log = std::fs::File::create(third.dir.path().join("agent.log")).unwrap();
        third_agent = Some(
            third
                .command()
                .args(["node", "--node-name", "node-c", "--listen", "192.168.78.2:10250", "--pod-cidr", "10.90.0.0/16"])
                .arg("--kubeconfig")
                .arg(up.node.data_dir().join("kubeconfig"))
                .args(["--server", "https://192.168.78.1:6443"])
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        up.wait("a daemon pod on the node that joined", 60, || {
            daemon_nodes() == ["node-b", "node-c", "test-node"].map(String::from).into()
        });

        let _ = agent.kill();
        let _ = agent.wait();
        up.wait("node-b unreachable", 60, || {
            let node = up.json(&["get", "node", "node-b"]);
            let tainted = node["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute");
            conditions(&node).get("Ready").is_some_and(|s| s == "Unknown") && tainted
        });
        up.wait("the evicted pod replaced on another node", 60, || {
            let pods = up.ready_pods("app=spread");
            pods.len() == 2 && pods.values().all(|p| p["spec"]["nodeName"] != "node-b")
        });
        let events = up.kubectl(&["get", "events", "-A"]);
        assert!(events.contains("TaintManagerEviction"), "{events}");
        // The daemon pod tolerates the unreachable node: it is not evicted.
        let daemon_pods = up.pods("app=agent");
        assert!(daemon_pods.values().any(|p| p["spec"]["nodeName"] == "node-b"), "{daemon_pods:?}");
    }));
    let _ = agent.kill();
    let _ = agent.wait();
    if let Some(mut third_agent) = third_agent {
        let _ = third_agent.kill();
        let _ = third_agent.wait();
    }
    drop(up);
    drop(other);
    drop(third);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn jobs_complete_fail_at_their_backoff_limit_and_tell_indexed_pods_their_index() {
    let up = Up::start();
    let jobs = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: five}
spec:
  completions: 5
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: "busybox:1.36", command: [sh, -c, "sleep 0.2"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: failing}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: "busybox:1.36", command: [sh, -c, "exit 3"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: indexed}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: "busybox:1.36", command: [sh, -c, "echo index $JOB_COMPLETION_INDEX on $(hostname)"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: fatal}
spec:
  backoffLimit: 6
  podFailurePolicy:
    rules:
    - {action: FailJob, onExitCodes: {containerName: c, operator: In, values: [42]}}
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: "busybox:1.36", command: [sh, -c, "exit 42"]}]
"#;
    up.kubectl_stdin(&["apply", "-f", "-"], jobs);
    // A watch of the first Job's pods: never more than parallelism running at once.
    let watch = PodWatch::start(&up, "job-name=five", 0);
    let waited = up.kubectl(&["wait", "--for=condition=complete", "job/five", "job/indexed", "--timeout=60s"]);
    assert!(waited.contains("job.batch/five condition met"), "{waited}");
    let five = up.json(&["get", "job", "five"]);
    assert_eq!(five["status"]["succeeded"], 5, "{}", five["status"]);
    assert_eq!(up.pods("job-name=five").values().filter(|p| p["status"]["phase"] == "Succeeded").count(), 5);
    let (_, most_live) = watch.extremes();
    drop(watch);
    assert!(most_live <= 2, "{most_live} pods of a Job with parallelism 2 at once");

    let indexed = up.json(&["get", "job", "indexed"]);
    assert_eq!(indexed["status"]["completedIndexes"], "0-2");
    let mut said: Vec<String> =
        up.pods("job-name=indexed").keys().map(|pod| up.kubectl(&["logs", pod]).trim().to_string()).collect();
    said.sort();
    assert_eq!(said, ["index 0 on indexed-0", "index 1 on indexed-1", "index 2 on indexed-2"]);

    // Two failures (the second after a 10 s back-off) are more than backoffLimit 1.
    let failed = up.kubectl(&["wait", "--for=condition=failed", "job/failing", "--timeout=60s"]);
    assert!(failed.contains("condition met"), "{failed}");
    let failing = up.json(&["get", "job", "failing"]);
    assert_eq!(failing["status"]["failed"], 2, "{}", failing["status"]);
    let reason =
        failing["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Failed").unwrap()["reason"]
            .clone();
    assert_eq!(reason, "BackoffLimitExceeded");

    // An exit code the pod failure policy names fails the Job at once, whatever the limit.
    let failed = up.kubectl(&["wait", "--for=condition=failed", "job/fatal", "--timeout=60s"]);
    assert!(failed.contains("condition met"), "{failed}");
    let fatal = up.json(&["get", "job", "fatal"]);
    let condition =
        fatal["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Failed").unwrap().clone();
    assert_eq!(condition["reason"], "PodFailurePolicy");
    assert!(
        condition["message"].as_str().unwrap().contains("failed with exit code 42 matching FailJob rule at index 0")
    );
    assert_eq!(fatal["status"]["failed"], 1);
}

#[test]
fn a_cronjob_makes_jobs_on_its_schedule_and_by_hand() {
    let up = Up::start();
    let cronjob = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "*/1 * * * *"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: c, image: "busybox:1.36", command: [echo, tick]}]
"#;
    up.kubectl_stdin(&["apply", "-f", "-"], cronjob);
    // kubectl's own Job from the CronJob's template, at once.
    up.kubectl(&["create", "job", "--from=cronjob/tick", "by-hand"]);
    up.kubectl(&["wait", "--for=condition=complete", "job/by-hand", "--timeout=60s"]);
    // The next minute's Job, made by the controller.
    up.wait("a scheduled Job complete", 90, || {
        let jobs = up.json(&["get", "jobs"]);
        jobs["items"].as_array().into_iter().flatten().any(|j| {
            j["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
                && j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"].is_string()
                && j["status"]["succeeded"] == 1
        })
    });
    up.wait("the CronJob's status", 30, || {
        let status = &up.json(&["get", "cronjob", "tick"])["status"];
        status["lastScheduleTime"].is_string() && status["lastSuccessfulTime"].is_string()
    });
}
