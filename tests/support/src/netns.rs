//! Network namespaces the tests make for themselves: a fake node (or a fake remote
//! machine) with only loopback and what the test adds, so nothing a test does reaches the
//! host's interfaces, routes or iptables.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A network namespace bound at a file; dropped, it is unmounted, and with its last user
/// gone the kernel deletes it and everything in it (links, routes, iptables rules).
pub struct Netns {
    path: PathBuf,
}

impl Netns {
    /// A new namespace bound at `path` (which must not exist), loopback up.
    pub fn new(path: &Path) -> Netns {
        std::fs::File::create(path).expect("create netns file");
        let target = path.to_path_buf();
        // unshare(CLONE_NEWNET) acts on the calling thread only: do it on a thread of its own.
        std::thread::spawn(move || {
            // SAFETY: plain syscalls on this thread; the thread ends right after.
            unsafe {
                assert_eq!(libc::unshare(libc::CLONE_NEWNET), 0, "unshare(CLONE_NEWNET)");
                let source = c"/proc/thread-self/ns/net";
                let target = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
                assert_eq!(
                    libc::mount(source.as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()),
                    0,
                    "bind netns: {}",
                    std::io::Error::last_os_error()
                );
            }
        })
        .join()
        .unwrap();
        let netns = Netns { path: path.to_path_buf() };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes `cmd` start inside this namespace.
    pub fn enter(&self, cmd: &mut Command) {
        enter_path(&self.path, cmd);
    }

    /// Runs a command inside this namespace, expecting success; returns stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let mut cmd = Command::new(program);
        cmd.args(args);
        self.enter(&mut cmd);
        let out = cmd.output().unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} in {}: {}",
            self.path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `ip ARGS` inside this namespace (test scaffolding only; podctl itself uses netlink).
    pub fn ip(&self, args: &[&str]) -> String {
        self.run("ip", args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = umount_detach(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn umount_detach(path: &Path) -> std::io::Result<()> {
    let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: umount2 of a path we mounted.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `cmd` start inside the namespace bound at `path`.
pub fn enter_path(path: &Path, cmd: &mut Command) {
    let file = std::fs::File::open(path).expect("open netns");
    // SAFETY: setns is async-signal-safe; `file` is moved into the closure and stays open.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `f` inside the namespace bound at `netns` (the test's own when `None`), on a
/// thread that enters it for this call only.
pub fn within<T: Send>(netns: Option<&Path>, f: impl FnOnce() -> T + Send) -> T {
    let Some(netns) = netns else { return f() };
    let file = std::fs::File::open(netns).expect("open netns");
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: setns on this short-lived thread only.
                let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("the thread in the namespace")
    })
}

/// Whether something listens at `addr` inside the namespace bound at `netns`.
pub fn connects(netns: Option<&Path>, addr: std::net::SocketAddr) -> bool {
    within(netns, || std::net::TcpStream::connect(addr).is_ok())
}

/// Joins two namespaces with a veth pair (`a_name` in `a`, `b_name` in `b`), each end with
/// the given address (CIDR form) and up: an "underlay" between two fake nodes.
pub fn link(a: &Netns, a_name: &str, a_addr: &str, b: &Netns, b_name: &str, b_addr: &str) {
    a.ip(&["link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b.path().to_str().unwrap()]);
    a.ip(&["addr", "add", a_addr, "dev", a_name]);
    a.ip(&["link", "set", a_name, "up"]);
    b.ip(&["addr", "add", b_addr, "dev", b_name]);
    b.ip(&["link", "set", b_name, "up"]);
}
