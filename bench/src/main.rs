//! podctl's benchmarks (see bench/run). Each figure is one line
//! `BENCH <name> <value> <unit>`; where an issue names a peer, the peer runs in the same
//! process run, alternating with ours, and both medians and their ratio are printed.
//!
//! The whole run happens in a network namespace of its own (made first thing, while the
//! process has one thread): bridges, veths, iptables rules and loopback registries all
//! live there and go with it.

mod api;
mod cluster;
mod dns;
mod images;
mod net;
mod node;
mod pod;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const RUNS: usize = 5;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut podctl = PathBuf::from("target/release/podctl");
    let mut groups = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--podctl" => podctl = PathBuf::from(args.next().expect("--podctl PATH")),
            group => groups.push(group.to_string()),
        }
    }
    if groups.is_empty() {
        groups = vec![
            "images".into(),
            "pod".into(),
            "net".into(),
            "api".into(),
            "node".into(),
            "cluster".into(),
            "dns".into(),
        ];
    }
    let podctl = fs::canonicalize(&podctl).expect("podctl binary");
    enter_own_network_namespace();
    for group in groups {
        match group.as_str() {
            "images" => {
                images::unpack_vs_tar();
                images::pull_vs_skopeo(&podctl);
            }
            "pod" => {
                pod::pod_start_vs_runc(&podctl);
                pod::pod_init_rss(&podctl);
            }
            "api" => api::api(&podctl),
            "node" => node::node(&podctl),
            "cluster" => cluster::cluster(&podctl),
            "dns" => dns::dns(&podctl),
            "net" => {
                net::proxy_sync();
                net::pod_net_setup_teardown();
                net::clusterip_overhead(&podctl);
                net::clusterip_first_packet(&podctl);
            }
            other => {
                eprintln!("podctl-bench: unknown group {other:?} (groups: images, pod, net, api, node, cluster, dns)");
                std::process::exit(2);
            }
        }
    }
}

/// unshare(CLONE_NEWNET) while this process has one thread, so it and every process it
/// starts live in the new namespace; loopback up.
fn enter_own_network_namespace() {
    // SAFETY: no other thread exists yet; unshare acts on this one.
    assert_eq!(
        unsafe { libc::unshare(libc::CLONE_NEWNET) },
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    run(Command::new("ip").args(["link", "set", "lo", "up"]));
}

fn report(name: &str, value: f64, unit: &str) {
    println!("BENCH {name} {value:.3} {unit}");
    let _ = std::io::stdout().flush();
}

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Creates `count` pods in `default` (pod `i` is `body(i)`) from `clients` connections at
/// once; the threads doing it, to join.
fn create_pods(
    access: &testkit::apiserver::Access,
    clients: usize,
    count: usize,
    body: fn(usize) -> Vec<u8>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let access = access.clone();
            std::thread::spawn(move || {
                let mut connection = access.connect();
                for i in (c..count).step_by(clients) {
                    let (status, answer) = connection.request("POST", "/api/v1/namespaces/default/pods", &body(i));
                    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
                }
            })
        })
        .collect()
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The 99th percentile (with fewer than 100 samples, the largest).
fn p99(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)]
}

/// Keeps the disk under a directory busy until dropped: a thread writes 2 MB and
/// fdatasyncs it, over and over, as a database, an image pull or a log shipper does on a
/// working node.
struct BusyDisk {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl BusyDisk {
    fn start(dir: &Path) -> BusyDisk {
        use std::io::Seek;
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let path = dir.join("busy-disk");
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Bytes a disk cannot compress or skip: xorshift.
                let mut x = 0x9e37_79b9_7f4a_7c15u64;
                let chunk: Vec<u8> = (0..2 << 20)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                let mut file = fs::File::create(&path).expect("busy disk file");
                let mut written = 0;
                while !stop.load(Ordering::Relaxed) {
                    if written >= 64 << 20 {
                        file.set_len(0).and_then(|()| file.rewind()).expect("rewind the busy disk file");
                        written = 0;
                    }
                    file.write_all(&chunk).and_then(|()| file.sync_data()).expect("write the busy disk file");
                    written += chunk.len();
                }
                drop(file);
                let _ = fs::remove_file(&path);
            })
        };
        BusyDisk { stop, writer: Some(writer) }
    }
}

impl Drop for BusyDisk {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Times each contender in turn, `RUNS` rounds, after `prepare` (untimed, with the page
/// cache's dirty data flushed so one run's writeback does not land in the next); returns
/// each one's median.
fn alternate(prepare: &mut dyn FnMut(), contenders: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let mut samples = vec![Vec::new(); contenders.len()];
    for _ in 0..RUNS {
        for (run, samples) in contenders.iter_mut().zip(&mut samples) {
            samples.push(timed(prepare, *run));
        }
    }
    samples.into_iter().map(median).collect()
}

fn timed(prepare: &mut dyn FnMut(), run: &mut dyn FnMut()) -> f64 {
    prepare();
    sync();
    let start = Instant::now();
    run();
    start.elapsed().as_secs_f64()
}

fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn run(cmd: &mut Command) {
    let out = cmd.stdout(Stdio::null()).output().expect("command runs");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A process of the benchmark, killed when dropped.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node for the pod and network benchmarks: scratch directories, the busybox image imported, and
/// cgroups below our own.
struct BenchNode {
    dir: testkit::TempDir,
    podctl: PathBuf,
}

impl BenchNode {
    /// Its run directory is a tmpfs, as /run is on a node (and /run/runc for runc).
    fn new(podctl: &Path) -> BenchNode {
        let node = BenchNode { dir: testkit::temp_dir(), podctl: podctl.to_path_buf() };
        fs::create_dir(node.run_dir()).unwrap();
        run(Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(node.run_dir()));
        let archive = node.dir.path().join("busybox.tar");
        testkit::busybox_image().write_docker_archive(&archive, Some("busybox:latest"));
        run(node.command().args(["image", "import"]).arg(&archive));
        node
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn cgroup_root(&self) -> String {
        self.dir.path().file_name().unwrap().to_string_lossy().into_owned()
    }

    /// Removes every pod of the node (an agent's pods outlive it), as `podctl rm -f` does.
    fn remove_pods(&self) {
        let out = self.command().args(["ps", "-a", "-q"]).output().unwrap();
        for name in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.command().args(["rm", "-f", name]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.podctl);
        for (flag, sub) in [("--data-dir", "data"), ("--run-dir", "run"), ("--log-dir", "log")] {
            cmd.arg(flag).arg(self.dir.path().join(sub));
        }
        cmd.arg("--cgroup-root").arg(self.cgroup_root());
        cmd
    }
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.run_dir()).status();
        if let Ok(cgroups) = runtime::Cgroups::detect(Some(&self.cgroup_root())) {
            let _ = cgroups.root().remove();
        }
        // runc makes its cgroup (below ours, named after this node) in every hierarchy.
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mountinfo.lines().filter(|l| l.contains(" - cgroup")) {
            if let Some(mount) = line.split(' ').nth(4) {
                remove_cgroups_named(Path::new(mount), &self.cgroup_root(), 4);
            }
        }
    }
}

/// rmdir, bottom-up, every cgroup directory called `name` within `depth` levels of `dir`.
fn remove_cgroups_named(dir: &Path, name: &str, depth: usize) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.filter_map(|e| e.ok()).filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
        if entry.file_name() == name {
            remove_tree(&entry.path());
        } else if depth > 0 {
            remove_cgroups_named(&entry.path(), name, depth - 1);
        }
    }
}

fn remove_tree(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok()) {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

/// User and system CPU time of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}
