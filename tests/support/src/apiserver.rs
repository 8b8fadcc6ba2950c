//! `podctl apiserver` on a loopback port, for the API server's tests and benchmarks.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `podctl apiserver` on `data_dir` (what a previous server stored there stays) and
/// a free loopback port, with `extra` flags; returns once it answers and has written its
/// kubeconfig. The caller ends the child.
pub fn start(podctl: &Path, data_dir: &Path, extra: &[&str]) -> (Child, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
    (start_on(podctl, data_dir, addr, extra), addr)
}

/// The same on `addr`: a server restarted where its clients know to find it.
pub fn start_on(podctl: &Path, data_dir: &Path, addr: SocketAddr, extra: &[&str]) -> Child {
    let _ = std::fs::remove_file(data_dir.join("kubeconfig"));
    let child = Command::new(podctl)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["apiserver", "--listen", &addr.to_string()])
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .expect("podctl apiserver starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(data_dir.join("kubeconfig").exists() && TcpStream::connect(addr).is_ok()) {
        assert!(Instant::now() < deadline, "apiserver did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}
