//! A `docker-registry` (Debian's build of the CNCF Distribution registry) on a loopback
//! port, for tests and benchmarks that pull. Images are pushed with `skopeo`: a client we
//! did not write.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Registry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub credentials: Option<(String, String)>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// An open registry.
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// A registry that wants HTTP basic auth with this user and password.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Registry {
        Registry::start_with(Some((user.to_string(), password.to_string())))
    }

    fn start_with(credentials: Option<(String, String)>) -> Registry {
        let dir = crate::temp_dir();
        let auth = match &credentials {
            Some((user, password)) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd runs (apt-get install apache2-utils)");
                assert!(out.status.success(), "htpasswd failed");
                std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
                format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", dir.path().join("htpasswd").display())
            }
            None => String::new(),
        };
        // A free port: bind to port 0, read it, release it. Retried if someone takes it first.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let addr = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
                dir.path().join("data").display()
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("docker-registry runs (apt-get install docker-registry)");
            if wait_ready(&mut child, &addr) {
                return Registry { addr, credentials, child, _dir: dir };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start");
    }

    /// Pushes an OCI layout directory as `REPO:TAG` with skopeo.
    pub fn push(&self, layout: &Path, repo_tag: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some((user, password)) = &self.credentials {
            cmd.arg(format!("--dest-creds={user}:{password}"));
        }
        cmd.arg(format!("oci:{}", layout.display())).arg(format!("docker://{}/{repo_tag}", self.addr));
        let out = cmd.output().expect("skopeo runs (apt-get install skopeo)");
        assert!(out.status.success(), "skopeo copy failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `GET /v2/` for up to 10 s.
fn wait_ready(child: &mut Child, addr: &str) -> bool {
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut conn) = TcpStream::connect(addr) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let request = format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            let mut response = String::new();
            if conn.write_all(request.as_bytes()).is_ok()
                && conn.read_to_string(&mut response).is_ok()
                && response.starts_with("HTTP/1.")
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
