//! `podctl apiserver` on a loopback port, for the API server's tests and benchmarks.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";
/// The newest kubectl on the machine.
pub const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

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

/// A `podctl apiserver` of a test, on a scratch data directory, ended when dropped; and
/// the real kubectl pointed at it.
pub struct ApiServer {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub addr: SocketAddr,
    podctl: PathBuf,
}

impl ApiServer {
    pub fn start(podctl: &str, extra: &[&str]) -> ApiServer {
        let dir = tempfile::tempdir().unwrap();
        let (child, addr) = start(podctl.as_ref(), dir.path(), extra);
        ApiServer { dir, child, addr, podctl: podctl.into() }
    }

    /// Kills the server (SIGKILL) and starts another on what it stored, at `addr`.
    pub fn restart_on(&mut self, addr: SocketAddr, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = start_on(&self.podctl, self.dir.path(), addr, extra);
        self.addr = addr;
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(KUBECTL);
        // HOME holds kubectl's discovery cache: one per server.
        cmd.args(args).env("KUBECONFIG", self.kubeconfig()).env("HOME", self.dir.path());
        cmd
    }

    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// kubectl ARGS, expecting success; stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_stdin(args, "")
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_output(args, Some(stdin));
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// kubectl ARGS, expecting failure; stderr.
    pub fn kubectl_fails(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args, None);
        assert!(!out.status.success(), "kubectl {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }

    /// One HTTP/1.1 request: status and body (JSON when it parses).
    pub fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (name, value) in headers {
            request += &format!("{name}: {value}\r\n");
        }
        request += "\r\n";
        stream.write_all(request.as_bytes()).unwrap();
        let _ = stream.write_all(body);
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, serde_json::from_str(payload).unwrap_or(Value::String(payload.to_string())))
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
