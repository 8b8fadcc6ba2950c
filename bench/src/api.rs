//! `bench/run api`: the API server on its embedded store: pod creates per second from
//! concurrent clients, a list of 10,000 pods, watch delivery latency to 100 watchers, and
//! the server's memory with 10,000 pods stored.

use std::io::BufRead;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::apiserver::Access;

use crate::{create_pods, median, report, rss_mib};

const CLIENTS: usize = 8;
const PODS: usize = 10_000;
const WATCHERS: usize = 100;

/// An API server of the benchmark's, on a scratch data directory, ended when dropped.
pub struct Server {
    child: Child,
    /// Its admin kubeconfig's way in: TLS and a token, as every client's.
    pub access: Access,
    dir: testkit::TempDir,
}

impl Server {
    pub fn start(podctl: &Path, extra: &[&str]) -> Server {
        let dir = testkit::temp_dir();
        let (child, _) = testkit::apiserver::start(podctl, dir.path(), extra);
        let access = Access::from_kubeconfig(&dir.path().join("kubeconfig"));
        Server { child, access, dir }
    }

    /// Its data directory (with the admin kubeconfig).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pod(name: &str, note: &str) -> Vec<u8> {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"bench"}},"annotations":{{"sent":"{note}"}}}},"spec":{{"containers":[{{"name":"c","image":"busybox"}}]}}}}"#
    )
    .into_bytes()
}

fn nanos_now() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// The figures on the embedded store, then on etcd (`_etcd`), whose own memory is not
/// counted in `api_rss_10k_etcd`.
pub fn api(podctl: &Path) {
    api_on(podctl, &[], "");
    let etcd = testkit::etcd::Etcd::start();
    api_on(podctl, &["--etcd-endpoints", &etcd.endpoint], "_etcd");
}

fn api_on(podctl: &Path, extra: &[&str], suffix: &str) {
    // The API server alone: no scheduler to mark 10,000 node-less pods unschedulable.
    let server = Server::start(podctl, &[extra, &["--controllers="]].concat());
    let access = server.access.clone();

    // Creates: CLIENTS connections, PODS pods in all.
    let start = Instant::now();
    for client in create_pods(&access, CLIENTS, PODS, |i| pod(&format!("pod-{i}"), "")) {
        client.join().unwrap();
    }
    report(&format!("api_creates_per_s{suffix}"), PODS as f64 / start.elapsed().as_secs_f64(), "objects/s");

    let mut connection = access.connect();
    let samples: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            let (status, body) = connection.request("GET", "/api/v1/namespaces/default/pods", b"");
            let elapsed = start.elapsed().as_secs_f64();
            assert_eq!(status, 200);
            assert!(body.len() > PODS * 100);
            elapsed
        })
        .collect();
    report(&format!("api_list_10k{suffix}"), median(samples) * 1000.0, "ms");
    report(&format!("api_rss_10k{suffix}"), rss_mib(server.child.id()), "MiB");

    // Watch latency: WATCHERS watches on pods; a writer updates one pod, stamping the
    // time it sent each write; every watcher notes when each event arrived.
    const WRITES: usize = 100;
    let (_, list) = connection.request("GET", "/api/v1/namespaces/default/pods?limit=1", b"");
    let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
    let revision = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let ready = Arc::new(Barrier::new(WATCHERS + 1));
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|_| {
            let (ready, revision, access) = (ready.clone(), revision.clone(), access.clone());
            std::thread::spawn(move || {
                let mut watch = access.connect();
                let path = format!(
                    "/api/v1/namespaces/default/pods?watch=true&resourceVersion={revision}&fieldSelector=metadata.name%3Dpod-0&timeoutSeconds=60"
                );
                watch.write_request("GET", &path, &[], b"");
                watch.read_head();
                let reader = &mut watch.reader;
                let mut line = String::new();
                ready.wait();
                let mut latencies = Vec::new();
                while latencies.len() < WRITES {
                    line.clear();
                    if reader.read_line(&mut line).unwrap() == 0 {
                        break;
                    }
                    // Chunk-size lines and blank lines interleave with the events.
                    if let Some(at) = line.find("\"sent\":\"") {
                        let arrived = nanos_now();
                        let rest = &line[at + 8..];
                        let sent: u128 = rest[..rest.find('"').unwrap()].parse().unwrap();
                        latencies.push((arrived - sent) as f64 / 1e6);
                    }
                }
                latencies
            })
        })
        .collect();
    ready.wait();
    let mut writer = access.connect();
    for _ in 0..WRITES {
        let patch = format!(r#"{{"metadata":{{"annotations":{{"sent":"{}"}}}}}}"#, nanos_now());
        let merge = [("Content-Type", "application/merge-patch+json")];
        let (status, _, body) = writer.send("PATCH", "/api/v1/namespaces/default/pods/pod-0", &merge, patch.as_bytes());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut all: Vec<f64> = watchers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    all.sort_by(f64::total_cmp);
    assert!(all.len() >= WATCHERS * WRITES * 9 / 10, "only {} events arrived", all.len());
    report(&format!("api_watch_p50{suffix}"), all[all.len() / 2], "ms");
    report(&format!("api_watch_p99{suffix}"), all[all.len() * 99 / 100], "ms");
}
