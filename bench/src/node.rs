//! `bench/run node`: `podctl node` with `podctl apiserver`, as a cluster's node runs them:
//! pod start latency (a pod's create sent → its Ready condition seen through a watch, one
//! pod at a time), 100 pods created at once until all are Ready, and the agent's memory
//! and CPU (idle, then with 100 idle pods).

use std::io::BufRead;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::apiserver::{Access, Connection};

use crate::{BenchNode, BusyDisk, Process, create_pods, median, p99, report, rss_mib};

const SEQUENTIAL: usize = 30;
const AT_ONCE: usize = 100;
const CLIENTS: usize = 8;

fn pod(name: &str) -> Vec<u8> {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"nodeName":"bench","terminationGracePeriodSeconds":0,"containers":[{{"name":"c","image":"busybox:latest","imagePullPolicy":"IfNotPresent","command":["sleep","3600"]}}]}}}}"#
    )
    .into_bytes()
}

/// A watch of the pods in `default` from `revision` on.
fn watch(access: &Access, revision: &str) -> Connection {
    let mut watch = access.connect();
    let path = format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={revision}&timeoutSeconds=600");
    watch.write_request("GET", &path, &[], b"");
    watch.read_head();
    watch
}

/// The next pod event's object (skipping the chunk framing lines).
fn next_pod(watch: &mut Connection) -> Value {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(watch.reader.read_line(&mut line).unwrap() > 0, "the watch ended");
        if line.starts_with('{') {
            let event: Value = serde_json::from_str(&line).unwrap();
            return event["object"].clone();
        }
    }
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn revision(connection: &mut Connection) -> String {
    let (_, list) = connection.request("GET", "/api/v1/namespaces/default/pods?limit=1", b"");
    let list: Value = serde_json::from_slice(&list).unwrap();
    list["metadata"]["resourceVersion"].as_str().unwrap().to_string()
}

pub fn node(podctl: &Path) {
    let node = BenchNode::new(podctl);
    let api_dir = testkit::temp_dir();
    let (api, _) = testkit::apiserver::start(podctl, api_dir.path(), &[]);
    let _api = Process(api);
    let kubeconfig = api_dir.path().join("kubeconfig");
    let access = Access::from_kubeconfig(&kubeconfig);
    let agent = node
        .command()
        .args(["node", "--node-name", "bench", "--listen", "127.0.0.1:10250", "--max-pods", "250"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stderr(Stdio::null())
        .spawn()
        .expect("podctl node starts");
    let agent = Process(agent);
    let mut connection = access.connect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while connection.request("GET", "/api/v1/nodes/bench", b"").0 != 200 {
        assert!(Instant::now() < deadline, "the node did not register");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    report("agent_rss_idle_mib", rss_mib(agent.0.id()), "MiB");

    // One pod at a time: from the create sent to Ready seen; then the same while the disk
    // of the node's data (and of the API server's store) is busy.
    for suffix in ["", "_busy_disk"] {
        let _busy = (!suffix.is_empty()).then(|| BusyDisk::start(node.dir.path()));
        let mut latencies = Vec::new();
        for i in 0..SEQUENTIAL {
            let name = format!("seq{suffix}-{i}").replace('_', "-");
            let mut watch = watch(&access, &revision(&mut connection));
            let sent = Instant::now();
            let (status, body) = connection.request("POST", "/api/v1/namespaces/default/pods", &pod(&name));
            assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
            loop {
                let object = next_pod(&mut watch);
                if object["metadata"]["name"] == name.as_str() && is_ready(&object) {
                    break;
                }
            }
            latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        report(&format!("pod_startup_p50_ms{suffix}"), median(latencies.clone()), "ms");
        report(&format!("pod_startup_p99_ms{suffix}"), p99(latencies), "ms");
    }

    // 100 at once, from CLIENTS connections: until every one is Ready.
    let mut watch = watch(&access, &revision(&mut connection));
    let start = Instant::now();
    let clients = create_pods(&access, CLIENTS, AT_ONCE, |i| pod(&format!("many-{i}")));
    let mut ready = std::collections::HashSet::new();
    while ready.len() < AT_ONCE {
        let object = next_pod(&mut watch);
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if name.starts_with("many-") && is_ready(&object) {
            ready.insert(name);
        }
    }
    report("pods_100_ready_s", start.elapsed().as_secs_f64(), "s");
    for client in clients {
        client.join().unwrap();
    }
    std::thread::sleep(Duration::from_secs(5));
    report("agent_rss_100_pods_mib", rss_mib(agent.0.id()), "MiB");
    let before = crate::cpu_seconds(agent.0.id());
    let window = Duration::from_secs(60);
    std::thread::sleep(window);
    let used = crate::cpu_seconds(agent.0.id()) - before;
    report("agent_cpu_idle_pct", used / window.as_secs_f64() * 100.0, "%");

    // The pods go with the agent gone: removed here, as `podctl rm -f` does.
    drop(agent);
    node.remove_pods();
}
