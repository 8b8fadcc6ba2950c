//! podctl's benchmarks (see bench/run). Each figure is one line
//! `BENCH <name> <value> <unit>`; where an issue names a peer, the peer runs in the same
//! process run, alternating with ours, and both medians and their ratio are printed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use images::Store;
use testkit::registry::Registry;
use testkit::{Layer, TarBuilder, TestImage};

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
        groups = vec!["images".into(), "pod".into()];
    }
    let podctl = fs::canonicalize(&podctl).expect("podctl binary");
    for group in groups {
        match group.as_str() {
            "images" => {
                unpack_vs_tar();
                pull_vs_skopeo(&podctl);
            }
            "pod" => {
                pod_start_vs_runc(&podctl);
                pod_init_rss(&podctl);
            }
            other => {
                eprintln!("podctl-bench: unknown group {other:?} (groups: images, pod)");
                std::process::exit(2);
            }
        }
    }
}

fn report(name: &str, value: f64, unit: &str) {
    println!("BENCH {name} {value:.3} {unit}");
    let _ = std::io::stdout().flush();
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
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

/// A small deterministic generator, so every run unpacks the same bytes.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `len` bytes: text-like (compressible) or random (not).
    fn bytes(&mut self, len: usize, text: bool) -> Vec<u8> {
        const WORDS: [&[u8]; 8] =
            [b"pod ", b"node ", b"image ", b"layer ", b"kernel ", b"cgroup\n", b"mount ", b"netns "];
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            let r = self.next();
            if text {
                out.extend_from_slice(WORDS[(r % 8) as usize]);
            } else {
                out.extend_from_slice(&r.to_le_bytes());
            }
        }
        out.truncate(len);
        out
    }
}

/// About `total` bytes of files as a real image has them: many small text files in nested
/// directories, some binaries, a few large files, symlinks and hardlinks.
fn mixed_tar(total: usize, seed: u64) -> Vec<u8> {
    let mut noise = Noise(seed);
    let mut tar = TarBuilder::new();
    let mut written = 0;
    let mut n = 0;
    while written < total {
        let dir = format!("usr/lib/pkg{}/sub{}/", n / 200, (n / 20) % 10);
        if n % 20 == 0 {
            tar.dir(&dir, 0o755);
        }
        let (len, text) = match n % 100 {
            0 => (4_000_000 + (noise.next() % 4_000_000) as usize, false),
            1..=9 => (100_000 + (noise.next() % 400_000) as usize, false),
            _ => (500 + (noise.next() % 12_000) as usize, true),
        };
        let name = format!("{dir}file{n}");
        tar.file(&name, 0o644, &noise.bytes(len, text));
        if n % 50 == 0 {
            tar.symlink(&format!("{dir}link{n}"), &format!("file{n}"));
            tar.hardlink(&format!("{dir}hard{n}"), &name);
        }
        written += len;
        n += 1;
    }
    tar.finish()
}

/// `unpack_vs_tar`: one ~200 MB gzip layer unpacked into a snapshot by the store (through
/// `Store::lower_dirs`, the path a container start takes) beside `tar -xzf` of the same file.
fn unpack_vs_tar() {
    let work = testkit::temp_dir();
    let layer = Layer::gzip(mixed_tar(200_000_000, 0x9e37_79b9_7f4a_7c15));
    let gz = work.path().join("layer.tar.gz");
    fs::write(&gz, &layer.blob).unwrap();
    let image = TestImage::new(vec![layer], &["sh"]);
    let layout = work.path().join("layout");
    image.write_oci_layout(&layout, None);
    let store = Store::open(&work.path().join("data")).unwrap();
    let imported = store.import(&layout, Some("bench/unpack:1")).unwrap().remove(0);
    let snapshot = store.lower_dirs(&imported).unwrap().remove(0);
    let tar_out = work.path().join("tar-out");

    let medians = alternate(
        &mut || {
            let _ = fs::remove_dir_all(&snapshot);
            let _ = fs::remove_dir_all(&tar_out);
            fs::create_dir(&tar_out).unwrap();
        },
        &mut [
            &mut || {
                store.lower_dirs(&imported).unwrap();
            },
            &mut || run(Command::new("tar").arg("-xzf").arg(&gz).arg("-C").arg(&tar_out)),
        ],
    );
    let (ours, peer) = (medians[0], medians[1]);
    report("unpack_podctl", ours, "s");
    report("unpack_tar", peer, "s");
    report("unpack_vs_tar", ours / peer, "ratio");
}

/// `pull_vs_skopeo`: `podctl image pull --no-unpack` of a 4-layer image from a loopback
/// registry into an empty store (fetch, verify, store: what skopeo does) beside `skopeo copy`
/// of it to an OCI directory. `pull_unpack_vs_skopeo`: the default pull, which also unpacks
/// every layer into its snapshot while downloading.
fn pull_vs_skopeo(podctl: &Path) {
    let work = testkit::temp_dir();
    let layers = (0..4).map(|i| Layer::gzip(mixed_tar(40_000_000, 0x1234_5678 + i))).collect();
    let image = TestImage::new(layers, &["sh"]);
    let layout = work.path().join("layout");
    image.write_oci_layout(&layout, None);
    let registry = Registry::start();
    registry.push(&layout, "bench/pull:1");
    let reference = format!("{}/bench/pull:1", registry.addr);
    let (data, oci) = (work.path().join("data"), work.path().join("skopeo-out"));
    let pull = |extra: &[&str]| {
        run(Command::new(podctl)
            .arg("--data-dir")
            .arg(&data)
            .args(["image", "pull", "--insecure", &reference])
            .args(extra))
    };

    let medians = alternate(
        &mut || {
            let _ = fs::remove_dir_all(&data);
            let _ = fs::remove_dir_all(&oci);
        },
        &mut [&mut || pull(&["--no-unpack"]), &mut || pull(&[]), &mut || {
            run(Command::new("skopeo")
                .args(["--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{reference}"))
                .arg(format!("oci:{}", oci.display())))
        }],
    );
    let (fetch, unpack, skopeo) = (medians[0], medians[1], medians[2]);
    report("pull_podctl", fetch, "s");
    report("pull_unpack_podctl", unpack, "s");
    report("pull_skopeo", skopeo, "s");
    report("pull_vs_skopeo", fetch / skopeo, "ratio");
    report("pull_unpack_vs_skopeo", unpack / skopeo, "ratio");
}

/// A node for the pod benchmarks: scratch directories, the busybox image imported, and
/// cgroups below our own.
struct BenchNode {
    dir: testkit::TempDir,
    podctl: PathBuf,
}

impl BenchNode {
    fn new(podctl: &Path) -> BenchNode {
        let node = BenchNode { dir: testkit::temp_dir(), podctl: podctl.to_path_buf() };
        let archive = node.dir.path().join("busybox.tar");
        testkit::busybox_image().write_docker_archive(&archive, Some("busybox:latest"));
        run(node.command().args(["image", "import"]).arg(&archive));
        node
    }

    fn cgroup_root(&self) -> String {
        self.dir.path().file_name().unwrap().to_string_lossy().into_owned()
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

/// `pod_start_vs_runc`: `podctl run --rm busybox -- /bin/true` (sandbox + one container, warm
/// image, removed after) beside `runc run` of a bundle with the same rootfs, alternating.
fn pod_start_vs_runc(podctl: &Path) {
    const STARTS: usize = 21;
    let node = BenchNode::new(podctl);
    let store = Store::open(&node.dir.path().join("data")).unwrap();
    let image = store.resolve("busybox").unwrap();
    // runc wants one directory: the image's layers copied into it in order.
    let bundle = node.dir.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    for layer in store.lower_dirs(&image).unwrap().iter().rev() {
        run(Command::new("cp").arg("-a").arg(format!("{}/.", layer.display())).arg(&rootfs));
    }
    run(Command::new("runc").arg("spec").current_dir(&bundle));
    let mut spec: serde_json::Value = serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    // Relative: below runc's own cgroup, never at the top of a hierarchy.
    spec["linux"]["cgroupsPath"] = format!("{}/runc", node.cgroup_root()).into();
    fs::write(bundle.join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    let runc_root = node.dir.path().join("runc-state");

    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for i in 0..STARTS {
        ours.push(timed(&mut || {}, &mut || run(node.command().args(["run", "--rm", "busybox", "--", "/bin/true"]))));
        peer.push(timed(&mut || {}, &mut || {
            run(Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(format!("bench{i}")))
        }));
    }
    let (ours, peer) = (median(ours), median(peer));
    report("pod_start_podctl", ours * 1000.0, "ms");
    report("pod_start_runc", peer * 1000.0, "ms");
    report("pod_start_vs_runc", ours / peer, "ratio");
}

/// `pod_init_rss`: resident memory of an idle pod's pod init.
fn pod_init_rss(podctl: &Path) {
    // A freshly built binary's pages are dirty in the page cache until written back, and
    // dirty pages stay resident in every process mapping them; on a node they are clean.
    sync();
    let node = BenchNode::new(podctl);
    run(node.command().args(["run", "-d", "--name", "idle", "busybox", "--", "sleep", "600"]));
    let pods = node.dir.path().join("run/pods");
    let pod = fs::read_dir(&pods).unwrap().next().unwrap().unwrap().path();
    let init: serde_json::Value = serde_json::from_slice(&fs::read(pod.join("init.json")).unwrap()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = fs::read_to_string(format!("/proc/{}/status", init["pid"])).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    report("pod_init_rss", kib / 1024.0, "MiB");
    run(node.command().args(["rm", "-f", "idle"]));
}
