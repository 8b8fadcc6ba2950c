//! `bench/run cluster`: `podctl up` (API server, controllers, scheduler and node agent in
//! one process) as its users drive it with kubectl: a 100-replica Deployment applied until
//! every pod is Ready, then rolled to a new image until the rollout is complete; and the
//! process's memory and CPU with those 100 pods idle.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::apiserver::Access;

use crate::{BenchNode, Process, report, rss_mib};

const REPLICAS: usize = 100;
const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl";

fn deployment(image: &str) -> String {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"bench"}},"spec":{{"replicas":{REPLICAS},
        "selector":{{"matchLabels":{{"app":"bench"}}}},"template":{{"metadata":{{"labels":{{"app":"bench"}}}},
        "spec":{{"terminationGracePeriodSeconds":0,"containers":[{{"name":"c","image":"{image}","imagePullPolicy":"IfNotPresent","command":["sleep","3600"]}}]}}}}}}}}"#
    )
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new(KUBECTL)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("kubectl runs");
    child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "kubectl {args:?}");
}

/// Polls the Deployment until `done` says its status is what was waited for.
fn wait_for(access: &Access, what: &str, done: impl Fn(&Value) -> bool) {
    let mut connection = access.connect();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, body) = connection.request("GET", "/apis/apps/v1/namespaces/default/deployments/bench", b"");
        let deployment: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if done(&deployment) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within 300 s: {}", deployment["status"]);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// kubectl rollout status's test: the newest generation seen, every replica updated and
/// available, no old one left.
fn rolled_out(d: &Value, image: &str) -> bool {
    let status = &d["status"];
    let count = |field: &str| status[field].as_u64().unwrap_or(0) as usize;
    d["spec"]["template"]["spec"]["containers"][0]["image"] == image
        && status["observedGeneration"].as_i64() >= d["metadata"]["generation"].as_i64()
        && count("updatedReplicas") == REPLICAS
        && count("replicas") == REPLICAS
        && count("availableReplicas") == REPLICAS
}

pub fn cluster(podctl: &Path) {
    let node = BenchNode::new(podctl);
    let archive = node.dir.path().join("busybox-next.tar");
    testkit::busybox_image().write_docker_archive(&archive, Some("busybox:next"));
    crate::run(node.command().args(["image", "import"]).arg(&archive));
    let up = node
        .command()
        .args(["up", "--node-name", "bench", "--max-pods", "250"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("podctl up starts");
    let up = Process(up);
    let kubeconfig = node.dir.path().join("data").join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        assert!(Instant::now() < deadline, "podctl up wrote no kubeconfig");
        std::thread::sleep(Duration::from_millis(50));
    }
    let access = Access::from_kubeconfig(&kubeconfig);
    let mut connection = access.connect();
    while connection.request("GET", "/api/v1/nodes/bench", b"").0 != 200 {
        assert!(Instant::now() < deadline, "the node did not register");
        std::thread::sleep(Duration::from_millis(50));
    }

    let start = Instant::now();
    kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&deployment("busybox:latest")));
    wait_for(&access, "100 ready", |d| d["status"]["readyReplicas"].as_u64() == Some(REPLICAS as u64));
    report("deploy_100_ready_s", start.elapsed().as_secs_f64(), "s");

    let start = Instant::now();
    kubectl(&kubeconfig, &["set", "image", "deployment/bench", "c=busybox:next"], None);
    wait_for(&access, "the rollout", |d| rolled_out(d, "busybox:next"));
    report("rollout_100_s", start.elapsed().as_secs_f64(), "s");

    // Idle: the old pods gone, the new ones running.
    std::thread::sleep(Duration::from_secs(10));
    report("up_rss_mib", rss_mib(up.0.id()), "MiB");
    let before = crate::cpu_seconds(up.0.id());
    let window = Duration::from_secs(60);
    std::thread::sleep(window);
    let used = crate::cpu_seconds(up.0.id()) - before;
    // API server, controllers, scheduler and agent together: what the controllers use
    // idle is at most this.
    report("up_cpu_idle_pct", used / window.as_secs_f64() * 100.0, "%");

    drop(up);
    node.remove_pods();
}
