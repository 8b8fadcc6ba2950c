//! Probes and lifecycle hooks, as kubelet's prober runs them: a command in the container
//! (exec), an HTTP GET or a TCP connection to the pod's address; each with a timeout.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ExecAction, HTTPGetAction, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use runtime::{ExecStdio, Runtime};

/// What a probe or hook does.
pub enum Action<'a> {
    Exec(&'a ExecAction),
    Http(&'a HTTPGetAction),
    Tcp(&'a TCPSocketAction),
    Sleep(i64),
}

/// Where it does it.
pub struct Target<'a> {
    pub runtime: &'a Runtime,
    pub pod: &'a runtime::Pod,
    pub container: &'a Container,
    pub pod_ip: Option<IpAddr>,
}

/// kubelet keeps this much of a probe's output for its message.
const MAX_OUTPUT: usize = 10 * 1024;

/// Runs `action` within `timeout`: `Ok(())` on success, else why it failed.
pub fn run(action: &Action, target: &Target, timeout: Duration) -> Result<(), String> {
    match action {
        Action::Exec(exec) => run_exec(exec.command.as_deref().unwrap_or_default(), target, timeout),
        Action::Http(http) => run_http(http, target, timeout),
        Action::Tcp(tcp) => {
            let addr = address(tcp.host.as_deref(), &tcp.port, target)?;
            TcpStream::connect_timeout(&addr, timeout).map(drop).map_err(|e| format!("dial tcp {addr}: {e}"))
        }
        Action::Sleep(seconds) => {
            std::thread::sleep(Duration::from_secs((*seconds).max(0) as u64).min(timeout));
            Ok(())
        }
    }
}

fn run_exec(command: &[String], target: &Target, timeout: Duration) -> Result<(), String> {
    if command.is_empty() {
        return Err("exec: no command".into());
    }
    let (out_r, out_w) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let (runtime, pod, name, args) =
        (target.runtime.clone(), target.pod.clone(), target.container.name.clone(), command.to_vec());
    // The command may outlive its timeout (kubelet cannot end it either): its thread goes on
    // alone and its answer is dropped.
    std::thread::spawn(move || {
        let status = runtime.exec(&pod, &name, &args, ExecStdio::Fds([null.as_fd(), out_w.as_fd(), out_w.as_fd()]));
        drop(out_w);
        let _ = done_tx.send(status);
    });
    let (output_tx, output_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut output = Vec::new();
        let _ = std::fs::File::from(out_r).take(MAX_OUTPUT as u64).read_to_end(&mut output);
        let _ = output_tx.send(output);
    });
    let status = match done_rx.recv_timeout(timeout) {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("command {command:?} timed out after {}s", timeout.as_secs())),
    };
    let output = output_rx.recv_timeout(Duration::from_millis(100)).unwrap_or_default();
    let output = String::from_utf8_lossy(&output).trim_end().to_string();
    match status.exit_code {
        0 => Ok(()),
        code if output.is_empty() => Err(format!("command {command:?} exited with {code}")),
        _ => Err(output),
    }
}

/// An HTTP GET; HTTPS as kubelet's prober does it, without checking the pod's certificate.
fn run_http(http: &HTTPGetAction, target: &Target, timeout: Duration) -> Result<(), String> {
    let tls = http.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
    let addr = address(http.host.as_deref(), &http.port, target)?;
    let path = http.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
    let url = format!("{}://{addr}{path}", if tls { "https" } else { "http" });
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("Get {url:?}: dial tcp {addr}: {e}"))?;
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let mut stream: Box<dyn ReadWrite> = if tls {
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let connection = tokio_rustls::rustls::ClientConnection::new(crate::pki::any_server(), name)
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        Box::new(tokio_rustls::rustls::StreamOwned::new(connection, tcp))
    } else {
        Box::new(tcp)
    };
    let mut headers = String::new();
    let mut has_host = false;
    for h in http.http_headers.iter().flatten() {
        has_host |= h.name.eq_ignore_ascii_case("host");
        headers.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    if !has_host {
        headers.push_str(&format!("Host: {addr}\r\n"));
    }
    let request = format!(
        "GET {path} HTTP/1.1\r\n{headers}User-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("Get {url:?}: {e}"))?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(format!("Get {url:?}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..read]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("Get {url:?}: not an HTTP answer"))?;
    if (200..400).contains(&code) { Ok(()) } else { Err(format!("HTTP probe failed with statuscode: {code}")) }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The probe's address: its host or the pod's, and its port by number or by the name of
/// one of the container's ports.
fn address(host: Option<&str>, port: &IntOrString, target: &Target) -> Result<SocketAddr, String> {
    let port = match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range"))?,
        IntOrString::String(name) => match name.parse::<u16>() {
            Ok(n) => n,
            Err(_) => target
                .container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port {name:?} in container {}", target.container.name))?,
        },
    };
    let ip = match host.filter(|h| !h.is_empty()) {
        Some(host) => host.parse().map_err(|_| format!("host {host:?}: an IP address is expected"))?,
        None => target.pod_ip.unwrap_or(IpAddr::from([127, 0, 0, 1])),
    };
    Ok(SocketAddr::new(ip, port))
}
