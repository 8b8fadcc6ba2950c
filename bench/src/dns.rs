//! `bench/run dns`: the cluster DNS (`podctl dns`, from an API server with 1,000 Services)
//! beside Debian's dnsmasq serving the same names from a hosts file, both on loopback:
//! queries per second and the 99th percentile of the answer time, from the same load (a
//! closed loop of CLIENTS threads asking for random Services' A records), alternating.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::api::Server;
use crate::{Process, median, report};

const SERVICES: usize = 1_000;
const CLIENTS: usize = 4;
const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;

fn name(i: usize) -> String {
    format!("svc-{i}.default.svc.cluster.local")
}

fn address(i: usize) -> String {
    format!("10.96.{}.{}", 10 + i / 250, 1 + i % 250)
}

/// An A query for `name` with id `id` (RFC 1035 section 4.1), recursion desired.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut bytes = id.to_be_bytes().to_vec();
    bytes.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        bytes.push(label.len() as u8);
        bytes.extend(label.as_bytes());
    }
    bytes.extend([0, 0, 1, 0, 1]);
    bytes
}

/// (answers per second, 99th percentile answer time in µs) of `server` under the load.
fn load(server: SocketAddr) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.connect(server).unwrap();
                socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut latencies = Vec::new();
                let mut buffer = [0u8; 512];
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    i = (i * 7919 + 13) % SERVICES;
                    let id = (latencies.len() % 65536) as u16;
                    let start = Instant::now();
                    socket.send(&query(id, &name(i))).unwrap();
                    let length = socket.recv(&mut buffer).expect("an answer within 1 s");
                    latencies.push(start.elapsed().as_secs_f64() * 1e6);
                    let answers = u16::from_be_bytes([buffer[6], buffer[7]]);
                    assert!(length > 12 && buffer[3] & 0x0f == 0 && answers == 1, "no answer for {}", name(i));
                }
                latencies
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(ROUND);
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<f64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    (latencies.len() as f64 / elapsed, latencies[latencies.len() * 99 / 100])
}

fn wait_answering(server: SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    for _ in 0..150 {
        socket.send_to(&query(1, &name(SERVICES - 1)), server).unwrap();
        let mut buffer = [0u8; 512];
        if socket.recv(&mut buffer).is_ok_and(|n| n > 12 && u16::from_be_bytes([buffer[6], buffer[7]]) == 1) {
            return;
        }
    }
    panic!("{server} does not answer {}", name(SERVICES - 1));
}

pub fn dns(podctl: &Path) {
    let api = Server::start(podctl, &["--controllers=", "--service-cluster-ip-range", "10.96.0.0/16"]);
    let mut connection = api.access.connect();
    for i in 0..SERVICES {
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"svc-{i}"}},"spec":{{"clusterIP":"{}","ports":[{{"port":80}}]}}}}"#,
            address(i)
        );
        let (status, answer) = connection.request("POST", "/api/v1/namespaces/default/services", body.as_bytes());
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
    }
    let dir = testkit::temp_dir();
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(&resolv_conf, "").unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, (0..SERVICES).map(|i| format!("{} {}\n", address(i), name(i))).collect::<String>()).unwrap();

    let ours: SocketAddr = "127.0.0.1:5301".parse().unwrap();
    let peer: SocketAddr = "127.0.0.1:5302".parse().unwrap();
    let _podctl_dns = Process(
        Command::new(podctl)
            .args(["dns", "--listen", &ours.to_string(), "--kubeconfig"])
            .arg(api.dir().join("kubeconfig"))
            .arg("--resolv-conf")
            .arg(&resolv_conf)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _dnsmasq = Process(
        Command::new("dnsmasq")
            .args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces"])
            .args(["--listen-address=127.0.0.1", "--port=5302", "--user=root", "--pid-file="])
            .arg(format!("--addn-hosts={}", hosts.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian's dnsmasq-base)"),
    );
    wait_answering(ours);
    wait_answering(peer);
    let (mut ours_runs, mut peer_runs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours_runs.push(load(ours));
        peer_runs.push(load(peer));
    }
    let qps = |runs: &[(f64, f64)]| median(runs.iter().map(|r| r.0).collect());
    let p99 = |runs: &[(f64, f64)]| median(runs.iter().map(|r| r.1).collect());
    report("dns_qps", qps(&ours_runs), "queries/s");
    report("dns_qps_dnsmasq", qps(&peer_runs), "queries/s");
    report("dns_qps_ratio", qps(&ours_runs) / qps(&peer_runs), "x");
    report("dns_p99_us", p99(&ours_runs), "us");
    report("dns_p99_us_dnsmasq", p99(&peer_runs), "us");
}
