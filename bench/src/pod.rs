//! `bench/run pod`: pod start beside runc, and the pod init's memory.

use std::fs;
use std::path::Path;
use std::process::Command;

use images::Store;

use crate::{BenchNode, BusyDisk, median, p99, report, rss_mib, run, sync, timed};

/// `pod_start_vs_runc`: `podctl run --rm --net none busybox -- /bin/true` (sandbox + one
/// container, warm image, removed after) beside `runc run` of a bundle with the same rootfs
/// (a network namespace with nothing in it, as runc's default spec has), alternating, after
/// a `sync` each; `pod_start_p99_ms` is podctl's slowest. `pod_start_podctl_pod_network`:
/// the same pod with an address on the bridge. `pod_start_vs_runc_busy_disk`,
/// `pod_start_p99_busy_disk_ms`: the same pairing while
/// [`BusyDisk`] writes and fdatasyncs on the data directory's filesystem.
pub fn pod_start_vs_runc(podctl: &Path) {
    const STARTS: usize = 21;
    const BUSY_STARTS: usize = 41;
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
    let runc_root = node.run_dir().join("runc");
    let start_podctl = || run(node.command().args(["run", "--rm", "--net", "none", "busybox", "--", "/bin/true"]));
    let start_runc = |id: String| {
        run(Command::new("runc").arg("--root").arg(&runc_root).args(["run", "--bundle"]).arg(&bundle).arg(id))
    };
    let seconds = |f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        f();
        start.elapsed().as_secs_f64()
    };

    let (mut ours, mut peer, mut networked) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..STARTS {
        ours.push(timed(&mut || {}, &mut || start_podctl()));
        networked
            .push(timed(&mut || {}, &mut || run(node.command().args(["run", "--rm", "busybox", "--", "/bin/true"]))));
        peer.push(timed(&mut || {}, &mut || start_runc(format!("bench{i}"))));
    }
    report("pod_start_podctl", median(ours.clone()) * 1000.0, "ms");
    report("pod_start_runc", median(peer.clone()) * 1000.0, "ms");
    report("pod_start_vs_runc", median(ours.clone()) / median(peer), "ratio");
    report("pod_start_p99_ms", p99(ours) * 1000.0, "ms");
    report("pod_start_podctl_pod_network", median(networked) * 1000.0, "ms");

    let busy = BusyDisk::start(node.dir.path());
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for i in 0..BUSY_STARTS {
        ours.push(seconds(&mut || start_podctl()));
        peer.push(seconds(&mut || start_runc(format!("busy{i}"))));
    }
    drop(busy);
    report("pod_start_podctl_busy_disk", median(ours.clone()) * 1000.0, "ms");
    report("pod_start_runc_busy_disk", median(peer.clone()) * 1000.0, "ms");
    report("pod_start_vs_runc_busy_disk", median(ours.clone()) / median(peer), "ratio");
    report("pod_start_p99_busy_disk_ms", p99(ours) * 1000.0, "ms");
}

/// `pod_init_rss`: resident memory of an idle pod's pod init.
pub fn pod_init_rss(podctl: &Path) {
    // A freshly built binary's pages are dirty in the page cache until written back, and
    // dirty pages stay resident in every process mapping them; on a node they are clean.
    sync();
    let node = BenchNode::new(podctl);
    run(node.command().args(["run", "-d", "--name", "idle", "busybox", "--", "sleep", "600"]));
    let pods = node.run_dir().join("pods");
    let pod = fs::read_dir(&pods).unwrap().next().unwrap().unwrap().path();
    let init: serde_json::Value = serde_json::from_slice(&fs::read(pod.join("init.json")).unwrap()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = init["pid"].as_u64().expect("pod init pid") as u32;
    report("pod_init_rss", rss_mib(pid), "MiB");
    run(node.command().args(["rm", "-f", "idle"]));
}
