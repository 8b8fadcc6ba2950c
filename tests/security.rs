//! What a hostile container or a local user must not get from a node: devices, the pod
//! init's descriptors and socket, other containers' processes, secrets on disk. As root,
//! each test on a scratch node in a network namespace of its own.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::node::Node;

fn node() -> Node {
    Node::new(env!("CARGO_BIN_EXE_podctl")).with_busybox()
}

/// Opens each of the node's devices a container must not reach (made with mknod, which
/// CAP_MKNOD allows) and says how each open went, one line per device.
const OPEN_DEVICES: &str = r#"
mknod /tmp/loop0 b 7 0; mknod /tmp/kmsg c 1 11; mknod /tmp/tun c 10 200; mknod /tmp/fuse c 10 229
mknod /tmp/loop-control c 10 237; mknod /tmp/tty1 c 4 1
for d in loop0 kmsg tun fuse loop-control tty1; do
  if (: < /tmp/$d) 2>/tmp/err; then echo "$d opened"; else echo "$d: $(cat /tmp/err)"; fi
done
head -c 3 /dev/urandom | wc -c; echo x > /dev/null && echo null"#;

#[test]
fn a_container_can_make_device_nodes_but_open_only_the_default_devices() {
    let node = node();
    let (code, out, err) = node.sh(&[], OPEN_DEVICES);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    for line in &lines[..6] {
        assert!(line.ends_with("Operation not permitted"), "{out}");
    }
    assert_eq!(lines[6..], ["3", "null"], "the default devices work: {out}");
    // The same device given explicitly opens; the others stay shut.
    let (code, out, err) = node.sh(
        &["--device", "/dev/fuse", "--device", "/dev/net/tun:/dev/tun-ro:r"],
        r#"
(: < /dev/fuse) && echo fuse opened; (: < /dev/tun-ro) && echo tun opened
(echo x > /dev/tun-ro) 2>&1; true"#,
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["fuse opened", "tun opened"], "{out}");
    assert!(lines[2].ends_with("Operation not permitted"), "read-only: {out}");
    // Privileged: the node's devices.
    let (_, out, _) = node.sh(&["--privileged"], "(: < /dev/loop-control) && echo opened");
    assert_eq!(out, "opened\n");
    let err = node.fails(&["run", "--rm", "--device", "/etc/passwd", "busybox"]);
    assert!(err.contains("/etc/passwd is not a device"), "{err}");
}

/// An exec's process, held by strace right before its execve: what a process of the
/// container could take from it then. Running as the container's user (root, or 1000),
/// it must not be dumpable: a process with the container's credentials cannot open its
/// /proc fd links (ptrace access mode checks). And it must hold nothing of the pod
/// init's: not its socket, its signalfd, other clients or the containers' pipes.
#[test]
fn an_exec_holds_nothing_of_the_pod_init_before_it_runs_the_command() {
    let node = node();
    for (pod, uid) in [("as-root", "0"), ("as-user", "1000")] {
        node.ok(&["run", "-d", "--name", pod, "--user", &format!("{uid}:{uid}"), "busybox", "--", "sleep", "300"]);
        let init = node.pod_init_pid(pod);
        let container = children(init)[0];
        let mut strace = Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=execve", "-e", "inject=execve:delay_enter=3000000"])
            .args(["-p", &init.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .expect("strace (apt install strace)");
        // strace is attached once the pod init shows a tracer.
        let deadline = Instant::now() + Duration::from_secs(10);
        while tracer(init) == 0 {
            assert!(Instant::now() < deadline, "strace did not attach");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut exec = node.command().args(["exec", pod, "--", "true"]).stdout(Stdio::null()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let child = loop {
            if let Some(pid) = children(init).into_iter().find(|pid| *pid != container) {
                break pid;
            }
            assert!(Instant::now() < deadline, "no exec process appeared");
            std::thread::sleep(Duration::from_millis(5));
        };
        // Held at execve's entry once it has the container's capabilities (and user).
        let deadline = Instant::now() + Duration::from_secs(5);
        while status_field(child, "CapBnd:") != CONTAINER_CAPS_HEX
            || status_field(child, "Uid:").split_whitespace().next() != Some(uid)
        {
            assert!(Instant::now() < deadline, "the exec never took the container's credentials");
            std::thread::sleep(Duration::from_millis(5));
        }
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{child}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|target| target.display().to_string())
            .collect();
        // What the container's root (or user) could read of it.
        let caps = CONTAINER_CAPS.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(",");
        let peek = Command::new("setpriv")
            .args([&format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups"])
            .arg(format!("--bounding-set=-all,{caps}"))
            .args(["ls", "-l", &format!("/proc/{child}/fd/")])
            .output()
            .unwrap();
        let _ = strace.kill();
        let _ = strace.wait();
        let _ = exec.wait();
        assert!(
            !peek.status.success(),
            "{pod}: the container's credentials read the exec's descriptors: {}",
            String::from_utf8_lossy(&peek.stdout)
        );
        assert!(
            !fds.iter().any(|fd| fd.starts_with("socket:") || fd.contains("signalfd") || fd.ends_with(".log")),
            "{pod}: the exec holds the pod init's descriptors: {fds:?}"
        );
        assert!(fds.len() <= 4, "{pod}: stdio and the status pipe only: {fds:?}");
        node.ok(&["rm", "-f", pod]);
    }
}

/// containerd's default capabilities, as setpriv names them, and as /proc shows the set.
const CONTAINER_CAPS: [&str; 14] = [
    "chown",
    "dac_override",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "net_bind_service",
    "net_raw",
    "sys_chroot",
    "mknod",
    "audit_write",
    "setfcap",
];
const CONTAINER_CAPS_HEX: &str = "00000000a80425fb";

fn children(pid: i32) -> Vec<i32> {
    let tasks = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    tasks.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

fn status_field(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(field)).unwrap_or_default().trim().to_string()
}

fn tracer(pid: i32) -> i32 {
    status_field(pid, "TracerPid:").parse().unwrap_or(0)
}

/// The pod init, and so whatever the kernel runs of podctl's binary inside a container
/// (`#!/proc/self/exe`), runs it from a read-only mount: `/proc/<pid>/exe` cannot be opened
/// to write, however the kernel treats writes to a running program (CVE-2019-5736).
#[test]
fn the_pod_init_runs_a_binary_nobody_can_write() {
    let node = node();
    node.ok(&["run", "-d", "--name", "target", "busybox", "--", "sleep", "300"]);
    let exe = format!("/proc/{}/exe", node.pod_init_pid("target"));
    let opened = std::fs::File::open(&exe).unwrap();
    // SAFETY: statvfs fills the struct we own.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstatvfs(std::os::fd::AsRawFd::as_raw_fd(&opened), &mut stat) }, 0);
    assert_ne!(stat.f_flag & libc::ST_RDONLY, 0, "the pod init's binary is on a writable mount");
    // This kernel says ETXTBSY first; the mount's EROFS stands behind it.
    let write = std::fs::OpenOptions::new().append(true).open(&exe).unwrap_err();
    assert!(matches!(write.raw_os_error(), Some(libc::EROFS | libc::ETXTBSY)), "{write}");
    node.ok(&["rm", "-f", "target"]);
}

/// The pod init's socket answers only the node: a process inside the pod's PID namespace
/// (here podctl itself, entered there by nsenter) is hung up on, whatever it asks.
#[test]
fn the_pod_init_acts_on_no_request_from_inside_the_pod() {
    let node = node();
    node.ok(&["run", "-d", "--name", "target", "busybox", "--", "sleep", "300"]);
    let init = node.pod_init_pid("target");
    let inside = |args: &[&str]| {
        let mut nsenter = Command::new("nsenter");
        nsenter.args(["--target", &init.to_string(), "--pid", "--"]);
        let podctl = node.command();
        nsenter.arg(podctl.get_program()).args(podctl.get_args()).args(args);
        nsenter.output().unwrap()
    };
    let exec = inside(&["exec", "target", "--", "echo", "forged"]);
    assert!(!exec.status.success(), "{}", String::from_utf8_lossy(&exec.stdout));
    assert!(!String::from_utf8_lossy(&exec.stdout).contains("forged"));
    let stop = inside(&["stop", "-t", "0", "target"]);
    assert!(!stop.status.success());
    assert!(node.ok(&["ps"]).contains("Running"), "the pod init stopped nothing");
    assert_eq!(node.ok(&["exec", "target", "--", "echo", "real"]), "real\n", "the node is still heard");
    node.ok(&["rm", "-f", "target"]);
}

/// `podctl exec` gives the command pipes, never the caller's own descriptors: a process
/// in the container cannot reopen the file the caller's output goes to.
#[test]
fn exec_gives_the_command_pipes_not_the_callers_files() {
    let node = node();
    node.ok(&["run", "-d", "--name", "target", "busybox", "--", "sleep", "300"]);
    let output = node.dir.path().join("caller-output");
    std::fs::write(&output, "the caller's own file\n").unwrap();
    let file = std::fs::OpenOptions::new().append(true).open(&output).unwrap();
    let status = node
        .command()
        .args([
            "exec",
            "target",
            "--",
            "sh",
            "-c",
            "stat -L -c %F /proc/self/fd/1 /proc/self/fd/2; : > /proc/self/fd/1",
        ])
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // Neither reopened (a file, not a pipe) nor truncated through /proc/self/fd.
    let written = std::fs::read_to_string(&output).unwrap();
    assert_eq!(written, "the caller's own file\nfifo\nfifo\n");
    node.ok(&["rm", "-f", "target"]);
}

/// The pod's /etc/hosts, /etc/hostname and /etc/resolv.conf are on its disk, not in the
/// run directory (a tmpfs on a node: a container could fill the node's memory).
#[test]
fn the_pods_etc_files_are_on_its_disk() {
    let node = node();
    std::fs::create_dir_all(node.run_dir()).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(node.run_dir()).status();
    assert!(mounted.unwrap().success());
    let (code, out, err) = node.sh(&[], "stat -f -c %T /etc/hosts /etc/hostname /etc/resolv.conf");
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().all(|fs| fs != "tmpfs") && out.lines().count() == 3, "{out}");
}

/// Only root reads what the node keeps: pod records (the containers' environment, so
/// Secret data), logs, the admin kubeconfig and the API server's store; modes made loose
/// before (by an older podctl) are set right when the node starts (`ps` here).
#[test]
fn state_logs_and_credentials_are_roots_alone() {
    let node = node();
    node.ok(&["run", "-d", "--name", "secret", "-e", "PASSWORD=hunter2", "busybox", "--", "sleep", "300"]);
    let run = node.run_dir();
    let pod_dir =
        std::fs::read_dir(run.join("pods")).unwrap().filter_map(|e| e.ok()).find(|e| e.path().is_dir()).unwrap().path();
    let containers = std::fs::read_dir(pod_dir.join("containers")).unwrap();
    let spec = containers.filter_map(|e| e.ok()).next().unwrap().path().join("spec.json");
    assert!(std::fs::read_to_string(&spec).unwrap().contains("hunter2"));
    let log = walk(&node.log_dir()).into_iter().find(|p| p.extension().is_some_and(|e| e == "log")).unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&run.join("pods")), 0o700);
    assert_eq!(mode(&pod_dir), 0o700);
    assert_eq!(mode(&spec), 0o600);
    assert_eq!(mode(&log), 0o640);
    assert_eq!(mode(&node.data_dir().join("pods")), 0o700);
    assert_eq!(mode(&node.data_dir().join("images")), 0o700);
    assert!(!readable_by_nobody(&spec) && !readable_by_nobody(&log));
    // Loosened by hand (or by an older podctl), set right by the next start.
    for (path, loose) in [(&run.join("pods"), 0o755), (&pod_dir, 0o755), (&spec, 0o644), (&log, 0o644)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(loose)).unwrap();
    }
    node.ok(&["ps"]);
    assert_eq!((mode(&run.join("pods")), mode(&pod_dir), mode(&spec), mode(&log)), (0o700, 0o700, 0o600, 0o640));
    node.ok(&["rm", "-f", "secret"]);
}

fn readable_by_nobody(path: &Path) -> bool {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok()) {
        if entry.path().is_dir() {
            found.extend(walk(&entry.path()));
        } else {
            found.push(entry.path());
        }
    }
    found
}
