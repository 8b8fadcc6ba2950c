//! `podctl apiserver` on a loopback port, for the API server's tests and benchmarks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
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
    launch(podctl, data_dir, addr, None, extra)
}

/// The same inside the network namespace bound at `netns`, when given.
fn launch(podctl: &Path, data_dir: &Path, addr: SocketAddr, netns: Option<&Path>, extra: &[&str]) -> Child {
    let _ = std::fs::remove_file(data_dir.join("kubeconfig"));
    let mut command = Command::new(podctl);
    if let Some(netns) = netns {
        crate::netns::enter_path(netns, &mut command);
    }
    let child = command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["apiserver", "--listen", &addr.to_string()])
        .args(extra)
        // What it says goes to DATA_DIR/apiserver.log, for a failing test to be read.
        .stderr(log_file(data_dir))
        .spawn()
        .expect("podctl apiserver starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(data_dir.join("kubeconfig").exists() && crate::netns::connects(netns, addr)) {
        assert!(Instant::now() < deadline, "apiserver did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn log_file(data_dir: &Path) -> Stdio {
    let file = std::fs::File::options().create(true).append(true).open(data_dir.join("apiserver.log"));
    file.map_or_else(|_| Stdio::null(), Stdio::from)
}

/// A `podctl apiserver` of a test, on a scratch data directory, ended when dropped; and
/// the real kubectl pointed at it.
pub struct ApiServer {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub addr: SocketAddr,
    podctl: PathBuf,
    /// The network namespace it serves in (a scratch node's), and its kubectl runs in.
    netns: Option<PathBuf>,
}

impl ApiServer {
    pub fn start(podctl: &str, extra: &[&str]) -> ApiServer {
        let dir = tempfile::tempdir().unwrap();
        let (child, addr) = start(podctl.as_ref(), dir.path(), extra);
        ApiServer { dir, child, addr, podctl: podctl.into(), netns: None }
    }

    /// A server on the loopback of the network namespace bound at `netns` (a scratch
    /// node's: its agent reaches it there, and so does kubectl).
    pub fn start_in(podctl: &str, netns: &Path, extra: &[&str]) -> ApiServer {
        ApiServer::start_in_on(podctl, netns, SocketAddr::from(([127, 0, 0, 1], 6443)), extra)
    }

    /// The same listening on `addr` (an address of that namespace's, for other nodes).
    pub fn start_in_on(podctl: &str, netns: &Path, addr: SocketAddr, extra: &[&str]) -> ApiServer {
        let dir = tempfile::tempdir().unwrap();
        let child = launch(podctl.as_ref(), dir.path(), addr, Some(netns), extra);
        ApiServer { dir, child, addr, podctl: podctl.into(), netns: Some(netns.to_path_buf()) }
    }

    /// Kills the server (SIGKILL) and starts another on what it stored, at `addr`.
    pub fn restart_on(&mut self, addr: SocketAddr, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = launch(&self.podctl, self.dir.path(), addr, self.netns.as_deref(), extra);
        self.addr = addr;
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        self.kubectl_command_of(KUBECTL, args)
    }

    /// A command of the kubectl at `binary` (one of KUBECTL_DIR's releases).
    pub fn kubectl_command_of(&self, binary: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary);
        if let Some(netns) = &self.netns {
            crate::netns::enter_path(netns, &mut cmd);
        }
        // HOME holds kubectl's discovery cache: one per server and release.
        let home = self.dir.path().join(binary.rsplit('/').next().unwrap_or("kubectl"));
        cmd.args(args).env("KUBECONFIG", self.kubeconfig()).env("HOME", home);
        cmd
    }

    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.kubectl_output_of(KUBECTL, args, stdin)
    }

    pub fn kubectl_output_of(&self, binary: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .kubectl_command_of(binary, args)
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
        self.kubectl_stdin_fails(args, "")
    }

    pub fn kubectl_stdin_fails(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_output(args, Some(stdin));
        assert!(!out.status.success(), "kubectl {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }

    /// How its admin kubeconfig reaches it.
    pub fn access(&self) -> Access {
        Access::from_kubeconfig(&self.kubeconfig())
    }

    /// One request as the admin (unless `headers` carry an `Authorization` of their own):
    /// status and body (JSON when it parses).
    pub fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        let (status, _, body) = self.access().connect().send(method, path, headers, body);
        (status, serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned())))
    }

    /// The same with no credentials at all.
    pub fn http_anonymous(&self, method: &str, path: &str) -> (u16, Value) {
        let mut access = self.access();
        access.token = None;
        let (status, _, body) = access.connect().send(method, path, &[], b"");
        (status, serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned())))
    }
}

/// How to reach an API server as a kubeconfig says: its address, TLS trusting its
/// authority, its bearer token.
#[derive(Clone)]
pub struct Access {
    pub addr: SocketAddr,
    pub token: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Access {
    pub fn from_kubeconfig(path: &Path) -> Access {
        let config: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).expect("a JSON kubeconfig");
        let cluster = &config["clusters"][0]["cluster"];
        let server = cluster["server"].as_str().unwrap();
        let (scheme, authority) = server.split_once("://").unwrap();
        let addr = authority.parse().unwrap();
        let tls = (scheme == "https").then(|| {
            use base64::Engine;
            let ca = base64::engine::general_purpose::STANDARD
                .decode(cluster["certificate-authority-data"].as_str().unwrap())
                .unwrap();
            let mut roots = rustls::RootCertStore::empty();
            for cert in <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(&ca) {
                roots.add(cert.unwrap()).unwrap();
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        });
        let token = config["users"][0]["user"]["token"].as_str().map(String::from);
        Access { addr, token, tls }
    }

    /// A new connection, its TLS handshake done.
    pub fn stream(&self) -> Stream {
        let tcp = TcpStream::connect(self.addr).unwrap();
        tcp.set_nodelay(true).unwrap();
        match &self.tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let name = rustls_pki_types::ServerName::from(self.addr.ip());
                let client = rustls::ClientConnection::new(config.clone(), name).unwrap();
                let mut stream = rustls::StreamOwned::new(client, tcp);
                while stream.conn.is_handshaking() {
                    stream.conn.complete_io(&mut stream.sock).unwrap();
                }
                Stream::Tls(Box::new(stream))
            }
        }
    }

    pub fn connect(&self) -> Connection {
        Connection { reader: BufReader::new(self.stream()), access: self.clone() }
    }

    /// The request head, with the token unless `headers` carry an `Authorization`.
    pub fn head(&self, method: &str, path: &str, headers: &[(&str, &str)], length: usize) -> String {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {length}\r\n", self.addr);
        if let Some(token) =
            self.token.as_ref().filter(|_| !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("authorization")))
        {
            head += &format!("Authorization: Bearer {token}\r\n");
        }
        for (name, value) in headers {
            head += &format!("{name}: {value}\r\n");
        }
        head + "\r\n"
    }
}

/// A connection to the server, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A kept-alive HTTP/1.1 connection.
pub struct Connection {
    pub reader: BufReader<Stream>,
    access: Access,
}

impl Connection {
    /// Sends a request (JSON unless `headers` say otherwise) and reads the whole answer:
    /// status, headers (names lowercase), body.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        self.write_request(method, path, headers, body);
        let (status, headers) = self.read_head();
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let mut body = Vec::new();
        if header("transfer-encoding") == Some("chunked") {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).unwrap();
                let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(length) = header("content-length") {
            body = vec![0; length.parse().unwrap()];
            self.reader.read_exact(&mut body).unwrap();
        } else {
            let _ = self.reader.read_to_end(&mut body);
        }
        (status, headers, body)
    }

    /// `send` for JSON, the status and body only.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let (status, _, body) = self.send(method, path, &[("Content-Type", "application/json")], body);
        (status, body)
    }

    pub fn write_request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let head = self.access.head(method, path, headers, body.len());
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        stream.flush().unwrap();
    }

    /// The status line and headers of the next answer.
    pub fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut headers = Vec::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        (status, headers)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
