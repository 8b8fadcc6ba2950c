//! `podctl run` and the pod runtime, as root, each test on a scratch node in a network
//! namespace of its own.

use std::process::Stdio;
use std::time::{Duration, Instant};

use testkit::node::{Node, outcome};

fn node() -> Node {
    Node::new(env!("CARGO_BIN_EXE_podctl")).with_busybox()
}

#[test]
fn runs_a_command_and_streams_its_output() {
    let node = node();
    let (code, out, err) = node.sh(&[], "echo out; echo err >&2; exit 7");
    assert_eq!((code, out.as_str(), err.as_str()), (7, "out\n", "err\n"));
    assert!(node.mounts().is_empty(), "nothing left mounted: {:?}", node.mounts());
    assert_eq!(node.ok(&["ps", "-a", "-q"]), "", "--rm removed the pod");
}

#[test]
fn the_container_is_pid_1_of_its_own_namespace_and_sees_only_its_own_processes() {
    let node = node();
    let (code, out, _) =
        node.sh(&["--name", "iso"], "cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'; hostname");
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "sh -c cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'; hostname ");
    // sh and the pipeline's commands: not the pod init, nothing of the host.
    let pids: usize = lines[1].parse().unwrap();
    assert!(pids <= 4, "{pids} processes visible: {out}");
    assert_eq!(lines[2], "iso");
}

#[test]
fn exit_codes_and_signals() {
    let node = node();
    assert_eq!(node.sh(&[], "exit 0").0, 0);
    assert_eq!(node.sh(&[], "exit 42").0, 42);
    // PID 1 of its namespace: the kernel keeps from it every signal it has no handler for.
    assert_eq!(node.sh(&[], "kill -9 $$; kill -TERM $$; echo alive").1, "alive\n");
    // Not PID 1 (the pod shares one namespace, the pod init's): the signal ends it. ($$ is
    // Kubernetes' escape for $ in a command.)
    for (signal, code) in [("-9", 137), ("-TERM", 143)] {
        let manifest = format!(
            "{{apiVersion: v1, kind: Pod, metadata: {{name: sig}}, spec: {{shareProcessNamespace: true, \
             containers: [{{name: c, image: busybox, command: [sh, -c, 'kill {signal} $$$$']}}]}}}}"
        );
        let (got, _, err) = run_manifest(&node, "sig", &manifest);
        assert_eq!(got, code, "kill {signal}: {err}");
    }
    let out = node.podctl(&["run", "--rm", "busybox", "--", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"no-such-command\": executable file not found in $PATH"), "{err}");
    let out = node.podctl(&["run", "--rm", "busybox", "--", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/etc/passwd: permission denied"));
    let err = node.fails(&["run", "--rm", "--pull", "never", "nosuchimage"]);
    assert!(err.contains("image nosuchimage is not in the store"), "{err}");
}

#[test]
fn env_args_workdir_and_user() {
    let node = node();
    let (code, out, _) = node.sh(
        &["-e", "GREETING=hi there", "-w", "/tmp/work", "--user", "1000:2000"],
        "echo \"$GREETING\"; pwd; id -u; id -g; echo $PATH",
    );
    assert_eq!(code, 0);
    assert_eq!(out, "hi there\n/tmp/work\n1000\n2000\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n");
    // A user by name, from the image's /etc/passwd; the image's Cmd when none is given.
    let (_, out, _) = node.sh(&["--user", "nobody"], "id -u; id -g");
    assert_eq!(out, "65534\n65534\n");
    let out = node.ok(&["run", "--rm", "busybox", "--", "echo", "a b", "c"]);
    assert_eq!(out, "a b c\n");
}

/// The capability sets of the container's main process, from /proc/self/status.
fn capabilities(node: &Node, flags: &[&str]) -> (u64, u64) {
    let (_, out, _) = node.sh(flags, "grep -E '^Cap(Eff|Bnd)' /proc/self/status");
    let get = |key: &str| {
        let line = out.lines().find(|l| l.starts_with(key)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    (get("CapEff"), get("CapBnd"))
}

#[test]
fn default_capabilities_no_sys_admin_and_no_new_privs() {
    let node = node();
    // containerd's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
    // NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
    assert_eq!(capabilities(&node, &[]), (0xa80425fb, 0xa80425fb));
    let (code, _, err) = node.sh(&[], "mkdir /mnt && mount -t tmpfs none /mnt");
    assert_ne!(code, 0, "mount must be refused");
    assert!(err.to_lowercase().contains("permission denied") || err.contains("not permitted"), "{err}");
    let (_, out, _) = node.sh(&[], "grep NoNewPrivs /proc/self/status");
    assert_eq!(out.split_whitespace().nth(1), Some("1"));
    // A non-root user keeps the bounding set but has no effective capabilities.
    assert_eq!(capabilities(&node, &["--user", "1000"]), (0, 0xa80425fb));
    let (eff, _) = capabilities(&node, &["--privileged"]);
    assert!(eff & (1 << 21) != 0, "privileged has CAP_SYS_ADMIN");
}

#[test]
fn seccomp_refuses_what_runtime_default_refuses() {
    let node = node();
    // A user namespace needs no capability, so only the seccomp filter stops it.
    let (code, _, err) = node.sh(&["--user", "1000"], "unshare -U true");
    assert_ne!(code, 0, "unshare must be refused");
    assert!(err.contains("Operation not permitted"), "{err}");
    let (code, _, err) = node.sh(&[], "unshare -n true");
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "{err}");
    let (_, out, _) = node.sh(&[], "grep Seccomp: /proc/self/status");
    assert_eq!(out.split_whitespace().nth(1), Some("2"), "filter mode");
    // Privileged containers run unfiltered.
    let (code, out, err) = node.sh(&["--privileged"], "grep Seccomp: /proc/self/status; unshare -n true && echo ok");
    assert_eq!((code, out.split_whitespace().nth(1)), (0, Some("0")), "{err}");
    assert!(out.ends_with("ok\n"));
}

#[test]
fn masked_and_read_only_paths_and_read_only_rootfs() {
    let node = node();
    let (_, out, _) = node
        .sh(&[], "wc -c < /proc/timer_list; echo x 2>&1 > /proc/sys/kernel/domainname; echo ok > /tmp/f && cat /tmp/f");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].trim(), "0", "/proc/timer_list is masked");
    assert!(lines[1].contains("Read-only file system"), "{out}");
    assert_eq!(lines[2], "ok");
    let (code, _, err) = node.sh(&["--read-only"], "touch /newfile");
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    let (_, out, _) = node.sh(&[], "ls /dev | sort | tr '\\n' ' '");
    for dev in ["full", "mqueue", "null", "ptmx", "pts", "random", "shm", "tty", "urandom", "zero"] {
        assert!(out.split_whitespace().any(|d| d == dev), "/dev/{dev} missing: {out}");
    }
}

#[test]
fn a_memory_hog_is_oom_killed() {
    let node = node();
    let hog = ["--memory", "32Mi", "busybox", "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"];
    let mut args = vec!["run", "--name", "hog"];
    args.extend(hog);
    let out = node.podctl(&args);
    assert_eq!(out.status.code(), Some(137), "{}", String::from_utf8_lossy(&out.stderr));
    let ps = node.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (137) OOMKilled"), "{ps}");
    // The same program within its limit completes.
    let out = node.podctl(&[
        "run",
        "--rm",
        "--memory",
        "128Mi",
        "busybox",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_pids_limit_stops_a_fork_bomb() {
    let node = node();
    let (code, _, err) =
        node.sh(&["--pids-limit", "10"], "i=0; while [ $i -lt 40 ]; do sleep 1 & i=$((i+1)); done; wait");
    assert_ne!(code, 0);
    assert!(err.contains("can't fork"), "forks beyond the limit fail: {err}");
}

#[test]
fn a_cpu_limit_holds() {
    let node = node();
    // Three seconds of a busy loop under a limit of half a CPU: about 1.5 s of CPU time,
    // read from the shell's cutime + cstime (clock ticks of 1/100 s).
    let (code, out, err) = node.sh(&["--cpus", "0.5"], "timeout 3 sh -c 'while :; do :; done'; cat /proc/$$/stat");
    assert_eq!(code, 0, "{err}");
    let fields: Vec<&str> = out.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
    // cutime cstime (proc_pid_stat(5)).
    let ticks: u64 = fields[13].parse::<u64>().unwrap() + fields[14].parse::<u64>().unwrap();
    assert!((127..=173).contains(&ticks), "{ticks} ticks of CPU in 3 s at 0.5 CPU (150 ± 15%)");
}

#[test]
fn host_volumes_read_write_and_read_only() {
    let node = node();
    let shared = node.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("in"), "from host\n").unwrap();
    let rw = format!("{}:/data", shared.display());
    let (code, out, _) = node.sh(&["-v", &rw], "cat /data/in; echo back > /data/out");
    assert_eq!((code, out.as_str()), (0, "from host\n"));
    assert_eq!(std::fs::read_to_string(shared.join("out")).unwrap(), "back\n");
    let ro = format!("{}:/data:ro", shared.display());
    let (code, _, err) = node.sh(&["-v", &ro], "echo x > /data/out");
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
}

#[test]
fn logs_are_in_cri_format() {
    let node = node();
    node.ok(&["run", "--name", "logger", "busybox", "--", "sh", "-c", "echo one; echo two >&2; printf tail"]);
    let dir = std::fs::read_dir(node.log_dir()).unwrap().next().unwrap().unwrap().path();
    assert!(dir.file_name().unwrap().to_string_lossy().starts_with("default_logger_"));
    let log = std::fs::read_to_string(dir.join("logger/0.log")).unwrap();
    let records: Vec<Vec<&str>> = log.lines().map(|l| l.splitn(4, ' ').collect()).collect();
    assert_eq!(records.len(), 3, "{log}");
    for r in &records {
        assert!(r[0].ends_with('Z') && r[0].len() == 30, "RFC3339Nano timestamp: {}", r[0]);
    }
    let mut streams: Vec<(&str, &str, &str)> = records.iter().map(|r| (r[1], r[2], r[3])).collect();
    streams.sort();
    assert_eq!(streams, [("stderr", "F", "two"), ("stdout", "F", "one"), ("stdout", "F", "tail")]);
    assert_eq!(node.ok(&["logs", "logger"]), "one\ntail\n");
    node.ok(&["rm", "logger"]);
    assert!(!dir.exists(), "rm removes the pod's logs");
    // -f follows until the container exits.
    node.ok(&["run", "-d", "--name", "later", "busybox", "--", "sh", "-c", "echo early; sleep 0.5; echo late"]);
    assert_eq!(node.ok(&["logs", "-f", "later"]), "early\nlate\n");
}

#[test]
fn detach_ps_logs_stop_rm() {
    let node = node();
    assert_eq!(
        node.ok(&[
            "run",
            "-d",
            "--name",
            "ticker",
            "busybox",
            "--",
            "sh",
            "-c",
            "trap 'exit 143' TERM; while true; do echo tick; sleep 0.1; done"
        ]),
        "ticker\n"
    );
    assert!(node.ok(&["ps"]).contains("ticker"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(node.ok(&["logs", "ticker"]).starts_with("tick\n"));
    assert!(node.fails(&["rm", "ticker"]).contains("is running"));
    let start = Instant::now();
    node.ok(&["stop", "-t", "5", "ticker"]);
    assert!(start.elapsed() < Duration::from_secs(4), "sh traps SIGTERM and exits, no need to wait for SIGKILL");
    assert!(!node.ok(&["ps"]).contains("ticker"));
    assert!(node.ok(&["ps", "-a"]).contains("Exited (143)"));
    // A process that ignores SIGTERM is killed after the grace period.
    node.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "busybox",
        "--",
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 0.1; done",
    ]);
    let start = Instant::now();
    node.ok(&["stop", "-t", "1", "stubborn"]);
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert!(node.ok(&["ps", "-a"]).contains("Exited (137)"));
    node.ok(&["rm", "ticker", "stubborn"]);
    assert_eq!(node.ok(&["ps", "-a", "-q"]), "");
    assert!(node.mounts().is_empty(), "{:?}", node.mounts());
}

#[test]
fn sigint_stops_a_foreground_pod() {
    let node = node();
    let mut child = node
        .command()
        .args([
            "run",
            "--rm",
            "--name",
            "fg",
            "busybox",
            "--",
            "sh",
            "-c",
            "trap 'exit 143' TERM; echo started; while true; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_running(&node);
    nix_kill(child.id(), libc::SIGINT);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "sh ended by the SIGTERM it was sent");
    assert_eq!(node.ok(&["ps", "-a", "-q"]), "");
}

fn nix_kill(pid: u32, signal: i32) {
    // SAFETY: signalling a child we started.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

/// Waits (up to 10 s) until `ps` shows a running pod.
fn wait_until_running(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.ok(&["ps"]).contains("Running") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_runner_leaves_the_pod_running_and_rm_cleans_everything() {
    let node = node();
    let mut child = node
        .command()
        .args(["run", "--name", "survivor", "busybox", "--", "sh", "-c", "while true; do sleep 0.1; done"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_running(&node);
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let ps = node.ok(&["ps", "-a"]);
    assert!(ps.contains("Running"), "the pod outlives its runner: {ps}");
    let netns = node.run_dir().join("netns");
    assert_eq!(std::fs::read_dir(&netns).unwrap().count(), 1);
    node.ok(&["rm", "-f", "survivor"]);
    assert_eq!(node.ok(&["ps", "-a", "-q"]), "");
    assert!(node.mounts().is_empty(), "{:?}", node.mounts());
    assert_eq!(std::fs::read_dir(&netns).unwrap().count(), 0, "netns file removed");
    assert_eq!(std::fs::read_dir(node.run_dir().join("pods")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(node.data_dir().join("pods")).unwrap().count(), 0);
}

/// `ps` recovers what interrupted creations left while other pods are being created: it
/// must never take a pod being made for a leftover.
#[test]
fn recovery_leaves_pods_being_created_alone() {
    const PODS: usize = 40;
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Stops the `ps` loops when dropped, failure included, so the node is cleaned up.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let node = node();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    node.ok(&["ps", "-a"]);
                }
            });
        }
        let _stop = Stop(&done);
        for i in 0..PODS {
            node.ok(&["run", "-d", "--net", "none", "--name", &format!("p{i}"), "busybox", "--", "true"]);
        }
    });
    assert_eq!(node.ok(&["ps", "-a", "-q"]).lines().count(), PODS);
}

/// Writes a pod manifest into the node's directory and runs it in the foreground.
fn run_manifest(node: &Node, name: &str, yaml: &str) -> (i32, String, String) {
    outcome(node.podctl(&["run", "--rm", "--pull", "never", "-f", &manifest(node, name, yaml)]))
}

/// The same, detached (`run -d`), expecting it to start.
fn run_manifest_detached(node: &Node, name: &str, yaml: &str) {
    node.ok(&["run", "-d", "--pull", "never", "-f", &manifest(node, name, yaml)]);
}

/// A pod manifest written into the node's directory; its path. (Test images are all in
/// the store: nothing is pulled from anywhere.)
fn manifest(node: &Node, name: &str, yaml: &str) -> String {
    let path = node.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn containers_of_a_pod_share_ipc_uts_and_volumes_but_not_with_other_pods() {
    let node = node();
    node.ok(&["run", "-d", "--name", "other", "busybox", "--", "sleep", "30"]);
    let (code, out, err) = run_manifest(
        &node,
        "shared",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: shared}
spec:
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: fast, emptyDir: {medium: Memory}}
  containers:
  - name: writer
    image: busybox
    command: [sh, -c, "echo disk > /scratch/x; echo mem > /fast/y; echo ipc > /dev/shm/z; sleep 3"]
    volumeMounts: [{name: scratch, mountPath: /scratch}, {name: fast, mountPath: /fast}]
  - name: reader
    image: busybox
    command: [sh, -c, "for i in $(seq 100); do [ -s /dev/shm/z ] && break; sleep 0.1; done; cat /data/x /fast/y /dev/shm/z; hostname; ps -o args | grep -v '^sh -c' | sort | tr '\n' ' '; echo; mount | grep ' /fast '"]
    volumeMounts: [{name: scratch, mountPath: /data, readOnly: true}, {name: fast, mountPath: /fast}]
"#,
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..4], ["disk", "mem", "ipc", "shared"], "{out}");
    // Each container sees its own processes only: not the writer's sleep, not the pod
    // init, not the other pod's (Kubernetes without shareProcessNamespace).
    // (Busybox runs some applets by exec'ing /proc/self/exe: their comm is `exe`, so
    // the command lines tell the processes apart.)
    assert!(!lines[4].contains("sleep 3"), "{out}");
    assert!(!lines[4].contains("__pod-init") && !lines[4].contains("podctl"), "{out}");
    assert!(lines[5].contains("tmpfs"), "medium: Memory is a tmpfs: {out}");
    node.ok(&["rm", "-f", "other"]);
}

#[test]
fn share_process_namespace_shows_the_containers_each_other() {
    let node = node();
    let (code, out, err) = run_manifest(
        &node,
        "together",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: together}
spec:
  shareProcessNamespace: true
  containers:
  - {name: sleeper, image: busybox, command: [sh, -c, "echo secret=1 > /tmp/mine; exec sleep 3"]}
  - name: looker
    image: busybox
    command: [sh, -c, "sleep 1; ps -o comm | sort | tr '\n' ' '; echo; cat /proc/$(pidof sleep)/root/tmp/mine"]
"#,
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].split_whitespace().filter(|c| *c == "sleep").count(), 1, "{out}");
    // The pod's PID 1 is the pod init: the namespace is the pod's.
    assert!(lines[0].contains("exe") || lines[0].contains("podctl"), "{out}");
    assert_eq!(lines[1], "secret=1", "{out}");
}

/// When the containers share the pod's PID namespace, what a container left running when
/// its first process ended is ended with it (its PID namespace no longer does it).
#[test]
fn a_containers_leftovers_end_with_it_in_a_shared_pid_namespace() {
    let node = node();
    let (code, out, err) = run_manifest(
        &node,
        "leftovers",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: leftovers}
spec:
  shareProcessNamespace: true
  containers:
  - {name: parent, image: busybox, command: [sh, -c, "sleep 1000 & sleep 1"]}
  - {name: watcher, image: busybox, command: [sh, -c, "sleep 3; ps -o args | grep -c '^sleep 1000' || true"]}
"#,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "0", "sleep 1000 outlived its container");
}

#[test]
fn init_containers_run_in_order_before_the_app() {
    let node = node();
    let manifest = r#"
apiVersion: v1
kind: Pod
metadata: {name: ordered}
spec:
  volumes: [{name: work, emptyDir: {}}]
  initContainers:
  - {name: first, image: busybox, command: [sh, -c, "sleep 0.3; echo 1 >> /work/order"], volumeMounts: [{name: work, mountPath: /work}]}
  - {name: second, image: busybox, command: [sh, -c, "echo 2 >> /work/order"], volumeMounts: [{name: work, mountPath: /work}]}
  containers:
  - {name: app, image: busybox, command: [sh, -c, "echo 3 >> /work/order; cat /work/order"], volumeMounts: [{name: work, mountPath: /work}]}
"#;
    let (code, out, err) = run_manifest(&node, "ordered", manifest);
    assert_eq!((code, out.as_str()), (0, "1\n2\n3\n"), "{err}");
    // A failing init container stops the pod before the app runs.
    let failing = manifest.replace("echo 2 >> /work/order", "exit 3");
    let (code, out, err) = run_manifest(&node, "failing", &failing);
    assert_eq!((code, out.as_str()), (3, ""), "{err}");
    assert!(err.contains("init container second exited with 3"), "{err}");
}

#[test]
fn manifest_errors_name_the_field() {
    let node = node();
    let bad = |yaml: &str| run_manifest(&node, "bad", yaml).2;
    let err = bad("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n");
    assert!(err.contains("apiVersion v1, kind Pod expected"), "{err}");
    let err = bad("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, image: nosuch}]}\n");
    assert!(err.contains("spec.containers[0] (a)") && err.contains("image nosuch is not in the store"), "{err}");
    let err = bad(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {volumes: [{name: h, hostPath: {path: /nonexistent-dir, type: Directory}}], containers: [{name: a, image: busybox}]}\n",
    );
    assert!(err.contains("spec.volumes[0].hostPath: /nonexistent-dir is not a Directory"), "{err}");
    let err =
        bad("apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: a, image: busybox}]}\n");
    assert!(err.contains("invalid pod name"), "{err}");
    assert_eq!(node.ok(&["ps", "-a", "-q"]), "", "nothing was created");
}

#[test]
fn runners_killed_while_creating_leave_nothing_after_recovery() {
    let node = node();
    for delay_ms in [2u64, 5, 10, 20, 40, 80] {
        let mut child = node
            .command()
            .args(["run", "-d", "busybox", "--", "sleep", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
    }
    // `ps` recovers: a pod whose creator died before its pod init ran is removed; the rest
    // are found again and removed by `rm -f`.
    for name in node.ok(&["ps", "-a", "-q"]).lines() {
        node.ok(&["rm", "-f", name]);
    }
    assert_eq!(node.ok(&["ps", "-a", "-q"]), "");
    assert!(node.mounts().is_empty(), "{:?}", node.mounts());
    for dir in [node.run_dir().join("pods"), node.run_dir().join("netns"), node.data_dir().join("pods")] {
        let left: Vec<_> = std::fs::read_dir(&dir).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
    }
    let cgroups = runtime::Cgroups::detect(Some(&node.cgroup_root())).unwrap();
    for (_, dir) in cgroups.root().dirs {
        let pods: Vec<_> = walk_dirs(&dir)
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("pod"))
            .collect();
        assert!(pods.is_empty(), "pod cgroups left: {pods:?}");
    }
}

fn walk_dirs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok()) {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(entry.path());
            out.extend(walk_dirs(&entry.path()));
        }
    }
    out
}

#[test]
fn exec_runs_inside_the_container_as_the_container() {
    let node = node();
    node.ok(&[
        "run",
        "-d",
        "--name",
        "target",
        "--user",
        "1000:1000",
        "-w",
        "/tmp",
        "-e",
        "FROM_SPEC=yes",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo marker > /tmp/m; sleep 30",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let out = node.podctl(&[
        "exec", "target", "--", "sh", "-c",
        "cat m; pwd; id -u; echo $FROM_SPEC; hostname; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t' ' '; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "marker\n/tmp\n1000\nyes\ntarget\nCapEff: 0000000000000000\nNoNewPrivs: 1\nSeccomp: 2\n"
    );
    // stdin only with -i.
    let mut child = node
        .command()
        .args(["exec", "-i", "target", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"piped in\n").unwrap();
    drop(child.stdin.take());
    assert_eq!(String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout), "piped in\n");
    assert_eq!(node.ok(&["exec", "target", "--", "cat"]), "", "no -i: stdin is empty");
    // -t: a terminal of the container's own devpts.
    let out = node.ok(&["exec", "-t", "target", "--", "tty"]);
    assert!(out.trim().starts_with("/dev/pts/"), "{out}");
    let out = node.podctl(&["exec", "target", "--", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("executable file not found"));
    node.ok(&["stop", "-t", "0", "target"]);
    assert!(node.fails(&["exec", "target", "--", "true"]).contains("no running container"));
}

#[test]
fn an_image_in_use_by_a_pod_is_not_removed() {
    let node = node();
    node.ok(&["run", "-d", "--name", "user", "busybox", "--", "sleep", "30"]);
    let err = node.fails(&["image", "rm", "busybox"]);
    assert!(err.contains("image busybox is in use by pod user"), "{err}");
    node.ok(&["rm", "-f", "user"]);
    node.ok(&["image", "rm", "busybox"]);
}

#[test]
fn interactive_run_passes_stdin_until_its_end() {
    let node = node();
    let mut child = node
        .command()
        .args(["run", "--rm", "-i", "busybox", "--", "sh", "-c", "tr a-z A-Z; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"hello\nworld\n").unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\nWORLD\ndone\n");
    assert_eq!(out.status.code(), Some(0));
    // Without -i the container's stdin is empty at once.
    assert_eq!(node.ok(&["run", "--rm", "busybox", "--", "cat"]), "");
}

#[test]
fn tty_gives_the_container_a_terminal_logged_as_stdout() {
    let node = node();
    let script = "tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-terminals; echo to-stderr >&2";
    let (code, out, _) = node.sh(&["-t", "--name", "term"], script);
    assert_eq!((code, out.as_str()), (0, "/dev/pts/0\r\nall-terminals\r\nto-stderr\r\n"));
    // With -i, what we type on our terminal reaches the container's (and is echoed, as a
    // terminal does).
    let (mut ours, theirs) = pty();
    let child = node
        .command()
        .args(["run", "-i", "-t", "--name", "typed", "busybox", "--", "sh", "-c", "read line; echo got $line; exit 3"])
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut ours, b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\r\ngot hello\r\n");
    // The whole terminal is the container's stdout in its CRI log.
    let log = node.ok(&["logs", "typed"]);
    assert_eq!(log, "hello\r\ngot hello\r\n");
    let dir = std::fs::read_dir(node.log_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().contains("_typed_"))
        .unwrap();
    let cri = std::fs::read_to_string(dir.path().join("typed/0.log")).unwrap();
    assert!(cri.lines().all(|l| l.split(' ').nth(1) == Some("stdout")), "{cri}");
}

/// A container started again in its pod gets a fresh writable layer, as kubelet's new
/// container would; the last one's overlay (mounted `volatile`) is not mounted twice.
#[test]
fn a_container_started_again_begins_from_its_image() {
    use runtime::{ContainerSpec, NetworkMode, PodSpec, QosClass, Resources, User};
    let node = node();
    let store = images::Store::open(&node.data_dir()).unwrap();
    let lower_dirs = store.lower_dirs(&store.resolve("busybox").unwrap()).unwrap();
    let cgroups = runtime::Cgroups::detect(Some(&node.cgroup_root())).unwrap();
    let mut node_runtime = runtime::Runtime::new(&node.run_dir(), &node.data_dir(), cgroups);
    node_runtime.init_program = env!("CARGO_BIN_EXE_podctl").into();
    let pod = node_runtime
        .create_pod(&PodSpec {
            uid: "0a1b2c3d-restart".into(),
            name: "restart".into(),
            namespace: "default".into(),
            hostname: "restart".into(),
            network: NetworkMode::None,
            hosts: "127.0.0.1 localhost\n".into(),
            resolv_conf: String::new(),
            volumes: vec![],
            qos: QosClass::BestEffort,
            share_process_namespace: false,
            origin: runtime::Origin::Run,
            host_ports: vec![],
            restart: runtime::Restart::No,
        })
        .unwrap();
    let container = ContainerSpec {
        name: "writer".into(),
        init: false,
        image: "busybox".into(),
        lower_dirs,
        args: ["sh", "-c", "test ! -e /written && touch /written"].map(String::from).to_vec(),
        env: vec!["PATH=/bin".into()],
        working_dir: "/".into(),
        user: User::default(),
        privileged: false,
        read_only_rootfs: false,
        mounts: vec![],
        devices: vec![],
        capabilities: None,
        resources: Resources::default(),
        stdin: false,
        tty: false,
        window: None,
        log_path: node.log_dir().join("restart/writer/0.log"),
        target: None,
    };
    for start in 0..2 {
        node_runtime.start_container(&pod, &container).unwrap();
        let status = node_runtime.wait_container(&pod, "writer", Some(Duration::from_secs(20))).unwrap();
        assert_eq!(status.map(|s| s.exit_code), Some(0), "start {start}");
    }
    node_runtime.remove_pod(&pod).unwrap();
}

#[test]
fn rm_and_stop_go_on_past_a_missing_pod_and_fail_at_the_end() {
    let node = node();
    node.ok(&["run", "-d", "--name", "kept", "busybox", "--", "sleep", "30"]);
    let out = node.podctl(&["stop", "--time", "1", "nope", "kept"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such pod: nope"), "{out:?}");
    let out = node.podctl(&["rm", "nope", "kept", "also-nope"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no such pod: nope") && stderr.contains("no such pod: also-nope"), "{stderr}");
    assert_eq!(node.ok(&["ps", "-a", "-q"]), "", "kept was removed all the same");
}

#[test]
fn podctls_own_failures_exit_125_and_commands_keep_theirs() {
    let node = node();
    assert_eq!(node.podctl(&["run", "--rm", "--pull", "never", "no-such-image"]).status.code(), Some(125));
    assert_eq!(node.podctl(&["run", "--no-such-flag"]).status.code(), Some(125));
    assert_eq!(node.sh(&[], "exit 1").0, 1);
    assert_eq!(node.podctl(&["run", "--rm", "busybox", "--", "/no/such/command"]).status.code(), Some(127));
    // The command may follow the image without `--`, as with docker run.
    let (code, out, _) = outcome(node.podctl(&["run", "--rm", "busybox", "echo", "-e", "a\\tb"]));
    assert_eq!((code, out.as_str()), (0, "a\tb\n"), "the command's own flags reach it");
}

#[test]
fn a_terminal_is_not_relayed_from_a_pipe() {
    let node = node();
    let mut child = node
        .command()
        .args(["run", "--rm", "-it", "busybox", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    // (It may have refused already: then the pipe is closed.)
    let _ = child.stdin.take().unwrap().write_all(b"hi\n");
    // Bounded: it must end by itself at once, not hang.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("podctl run -it from a pipe hangs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the input device is not a TTY"), "{out:?}");
}

#[test]
fn a_container_the_pod_does_not_have_is_named_with_those_it_has() {
    let node = node();
    run_manifest_detached(
        &node,
        "two",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: two}\nspec:\n  containers:\n  - {name: a, image: busybox, command: [sleep, '30']}\n  - {name: b, image: busybox, command: [sleep, '30']}\n",
    );
    let err = node.fails(&["logs", "two"]);
    assert!(err.contains("pod two has 2 containers (a, b): name one with -c"), "{err}");
    let err = node.fails(&["logs", "two", "-c", "nope"]);
    assert!(err.contains("pod two has no container nope (its containers: a, b)") && !err.contains("Some("), "{err}");
    let err = node.fails(&["exec", "-c", "nope", "two", "--", "true"]);
    assert!(err.contains("pod two has no container nope (its containers: a, b)"), "{err}");
    let err = node.fails(&["exec", "two", "--", "true"]);
    assert!(err.contains("2 running containers (a, b)"), "{err}");
    node.ok(&["rm", "-f", "two"]);
}

#[test]
fn a_pod_file_is_read_strictly_and_what_is_not_done_is_said() {
    let node = node();
    let run = |yaml: &str| {
        let path = node.dir.path().join("pod.yaml");
        std::fs::write(&path, yaml).unwrap();
        outcome(node.podctl(&["run", "--rm", "-f", path.to_str().unwrap()]))
    };
    let (code, _, err) = run(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: busybox, comand: [echo, hi]}]\n",
    );
    assert_eq!(code, 125);
    assert!(err.contains("Pod p: unknown field \"spec.containers[0].comand\""), "{err}");
    let (code, _, err) = run(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  restartPolicy: Always\n  containers: [{name: c, image: busybox}]\n",
    );
    assert_eq!(code, 125);
    assert!(
        err.contains("a restart policy keeps the pod up in the background, by a process of podctl's own: add -d"),
        "{err}"
    );
    let (code, _, err) = run(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: busybox, livenessProbe: {exec: {command: [/bin/true]}}}]\n",
    );
    assert_eq!(code, 125);
    assert!(err.contains("container c: livenessProbe is not run by podctl run yet"), "{err}");
    let (code, _, err) = run("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: p}\n");
    assert_eq!(code, 125);
    assert!(err.contains("(found apiVersion apps/v1, kind Deployment)") && !err.contains("Some("), "{err}");
    let (code, out, _) = run(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  restartPolicy: Never\n  containers: [{name: c, image: busybox, command: [echo, fine]}]\n",
    );
    assert_eq!((code, out.as_str()), (0, "fine\n"));
}

#[test]
fn a_detached_pod_run_with_rm_is_removed_when_it_is_done() {
    let node = node();
    let name = node.ok(&["run", "-d", "--rm", "--name", "brief", "busybox", "--", "sleep", "1"]);
    assert_eq!(name, "brief\n");
    assert!(node.ok(&["ps", "-a"]).contains("brief"), "there while it runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.ok(&["ps", "-a", "-q"]).is_empty() {
        assert!(Instant::now() < deadline, "never removed: {}", node.ok(&["ps", "-a"]));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(node.mounts().is_empty(), "nothing left mounted: {:?}", node.mounts());
    // Removed by hand before it is done: the cleanup finds nothing left to do.
    node.ok(&["run", "-d", "--rm", "--name", "gone", "busybox", "--", "sleep", "30"]);
    node.ok(&["rm", "-f", "gone"]);
    assert_eq!(node.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn terminal_sessions_get_a_terminal_type() {
    let node = node().with_env("TERM", "screen-256color");
    let (code, out, _) = node.sh(&["-t"], "echo $TERM");
    assert_eq!((code, out.as_str()), (0, "screen-256color\r\n"), "our own terminal's type");
    let (_, out, _) = node.sh(&["-t", "-e", "TERM=vt100"], "echo $TERM");
    assert_eq!(out, "vt100\r\n", "what the pod says wins");
    let (_, out, _) = node.sh(&[], "echo ${TERM:-none}");
    assert_eq!(out, "none\n", "no terminal, no type");
    node.ok(&["run", "-d", "--name", "term", "busybox", "--", "sleep", "30"]);
    let out = node.ok(&["exec", "-t", "term", "--", "sh", "-c", "echo $TERM"]);
    assert_eq!(out, "screen-256color\r\n");
    node.ok(&["rm", "-f", "term"]);
    let bare = node.with_env("TERM", "");
    let (_, out, _) = bare.sh(&["-t"], "echo $TERM");
    assert_eq!(out, "xterm\r\n", "xterm when ours is not known");
}

#[test]
fn logs_tail_since_and_timestamps() {
    let node = node();
    node.ok(&["run", "-d", "--name", "talk", "busybox", "--", "sh", "-c", "seq 1 5; sleep 2; echo later; sleep 30"]);
    let wait_for = |text: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !node.ok(&["logs", "talk"]).contains(text) {
            assert!(Instant::now() < deadline, "{text} never came");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("5\n");
    let between = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    wait_for("later");
    assert_eq!(node.ok(&["logs", "--tail", "2", "talk"]), "5\nlater\n");
    assert_eq!(node.ok(&["logs", "--since", &between, "talk"]), "later\n");
    assert_eq!(node.ok(&["logs", "--since", "1h", "--tail", "1", "talk"]), "later\n");
    let stamped = node.ok(&["logs", "-t", "--tail", "1", "talk"]);
    let (stamp, line) = stamped.trim_end().split_once(' ').unwrap();
    assert!(stamp.starts_with("20") && stamp.ends_with('Z') && line == "later", "{stamped}");
    assert!(node.fails(&["logs", "--since", "soon", "talk"]).contains("a duration (10s, 5m, 2h) or an RFC 3339 time"));
    node.ok(&["rm", "-f", "talk"]);
}

#[test]
fn inspect_shows_a_pod_and_its_containers_as_json() {
    let node = node();
    run_manifest_detached(
        &node,
        "mixed",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: mixed}\nspec:\n  containers:\n  - {name: long, image: busybox, command: [sleep, '30']}\n  - {name: brief, image: busybox, command: [sh, -c, 'exit 3']}\n",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let described = loop {
        let shown: serde_json::Value = serde_json::from_str(&node.ok(&["inspect", "mixed"])).unwrap();
        if shown[0]["Containers"].as_array().unwrap().iter().any(|c| c["State"] == "exited") {
            break shown[0].clone();
        }
        assert!(Instant::now() < deadline, "brief never exited: {shown}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(described["Name"], "mixed");
    assert_eq!(described["Status"], "Running (brief exited 3)");
    assert_eq!(described["IP"].as_str(), Some(node.pod_ip("mixed").as_str()));
    let container =
        |name: &str| described["Containers"].as_array().unwrap().iter().find(|c| c["Name"] == name).unwrap().clone();
    assert_eq!(container("long")["State"], "running");
    assert!(container("long")["Pid"].as_i64().is_some_and(|p| p > 0));
    assert_eq!(
        (container("brief")["State"].as_str(), container("brief")["Exit"]["exitCode"].as_i64()),
        (Some("exited"), Some(3))
    );
    assert!(described["Cgroup"].as_array().is_some_and(|d| !d.is_empty()), "{described}");
    let out = node.podctl(&["inspect", "mixed", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let both: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(both.as_array().unwrap().len(), 1, "the pods found, as JSON; the others named on stderr");
    node.ok(&["rm", "-f", "mixed"]);
}

#[test]
fn a_second_ctrl_c_kills_a_pod_that_ignores_the_first() {
    let node = node();
    // `sleep` as PID 1 has no handler for SIGTERM: it ignores it, for the whole grace.
    let child = node
        .command()
        .args(["run", "--rm", "--name", "stubborn", "--grace-period", "120", "busybox", "--", "sleep", "300"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.ok(&["ps"]).contains("stubborn") {
        assert!(Instant::now() < deadline, "never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "the second Ctrl-C did not kill it");
    assert_eq!(out.status.code(), Some(137));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stopping stubborn (SIGKILL after 120 s; Ctrl-C again to kill it now)"), "{err}");
    assert!(err.contains("killing stubborn"), "{err}");
}

/// A pty pair: (the side a terminal emulator holds, the side a program's stdin is).
fn pty() -> (std::fs::File, std::os::fd::OwnedFd) {
    let (mut ours, mut theirs) = (-1, -1);
    // SAFETY: openpty writes the two descriptors it opens; no name, settings or size.
    let opened =
        unsafe { libc::openpty(&mut ours, &mut theirs, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(opened, 0, "openpty");
    // SAFETY: both descriptors were just opened and are owned here alone.
    unsafe {
        use std::os::fd::FromRawFd;
        (std::fs::File::from_raw_fd(ours), std::os::fd::OwnedFd::from_raw_fd(theirs))
    }
}

fn set_size(terminal: &std::fs::File, rows: u16, cols: u16) {
    use std::os::fd::AsRawFd;
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads the winsize given.
    assert_eq!(unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &size) }, 0);
}

#[test]
fn a_relayed_terminal_follows_our_resizes() {
    let node = node();
    for exec in [false, true] {
        let (mut ours, theirs) = pty();
        set_size(&ours, 24, 80);
        let script = "stty size; read go; stty size";
        let args: Vec<&str> = if exec {
            node.ok(&["run", "-d", "--name", "resized", "busybox", "--", "sleep", "60"]);
            vec!["exec", "-i", "-t", "resized", "--", "sh", "-c", script]
        } else {
            vec!["run", "--rm", "-i", "-t", "busybox", "--", "sh", "-c", script]
        };
        let mut child = node.command().args(&args).stdin(Stdio::from(theirs)).stdout(Stdio::piped()).spawn().unwrap();
        // Read on a thread of its own, so that waiting for output is bounded.
        let mut stdout = child.stdout.take().unwrap();
        let (chunks, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
                if n == 0 || chunks.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let read_until = |text: &str, seen: &mut Vec<u8>| {
            while !String::from_utf8_lossy(seen).contains(text) {
                match received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(chunk) => seen.extend_from_slice(&chunk),
                    Err(_) => {
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                        panic!("{text} never came: {}", String::from_utf8_lossy(seen));
                    }
                }
            }
        };
        read_until("24 80", &mut seen);
        // As a terminal emulator resizes: the new size, then SIGWINCH to the program.
        set_size(&ours, 50, 132);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGWINCH).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        std::io::Write::write_all(&mut ours, b"go\r").unwrap();
        read_until("50 132", &mut seen);
        assert!(child.wait().unwrap().success());
        if exec {
            node.ok(&["rm", "-f", "resized"]);
        }
    }
}

#[test]
fn ps_as_json_and_times_for_scripts() {
    let node = node();
    node.ok(&["run", "-d", "--name", "listed", "busybox", "--", "sleep", "30"]);
    let listed: serde_json::Value = serde_json::from_str(&node.ok(&["ps", "--format", "json"])).unwrap();
    let pod = &listed[0];
    assert_eq!((pod["Name"].as_str(), pod["Status"].as_str()), (Some("listed"), Some("Running")));
    assert_eq!(pod["IP"].as_str(), Some(node.pod_ip("listed").as_str()));
    assert_eq!(pod["Images"], serde_json::json!(["busybox"]));
    // In a pipe, the table's times are RFC 3339, as in JSON.
    let table = node.ok(&["ps"]);
    let created = pod["Created"].as_str().unwrap();
    assert!(table.contains(created), "{table}");
    node.ok(&["rm", "-f", "listed"]);
}

/// `podctl stats`: a pod's CPU, memory against its limit, network bytes and processes.
#[test]
fn stats_show_what_a_pod_uses() {
    let node = node();
    let script = "ping -c 2 -W 1 10.88.0.1 >/dev/null; echo pinged; exec sleep 600";
    node.ok(&[
        "run", "-d", "--name", "busy", "--memory", "64Mi", "--pull", "never", "busybox", "--", "sh", "-c", script,
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.ok(&["logs", "busy"]).contains("pinged") {
        assert!(Instant::now() < deadline, "the pod did not ping");
        std::thread::sleep(Duration::from_millis(100));
    }
    let table = node.ok(&["stats", "--no-stream", "busy"]);
    let header = table.lines().next().unwrap();
    assert!(header.contains("CPU %") && header.contains("MEM USAGE / LIMIT") && header.contains("NET I/O"), "{table}");
    let row = table.lines().find(|l| l.contains(" busy ")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("/ 64MiB") && row.contains('%'), "{table}");
    let cells: Vec<&str> = row.split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert!(cells[2].ends_with('%'), "CPU measured: {table}");
    let network = row.split("   ").map(str::trim).find(|c| c.ends_with('B') && c.contains(" / ") && !c.contains("MiB"));
    assert!(network.is_some_and(|n| n != "0B / 0B"), "traffic counted: {table}");
    let missing = node.fails(&["stats", "--no-stream", "nope"]);
    assert!(missing.contains("no such pod: nope"), "{missing}");
}

/// `ps` names a container that failed beside running ones, and lists the images of the
/// app containers, not the init containers'.
#[test]
fn ps_names_a_failed_container_and_leaves_init_containers_out() {
    let node = node().with_busybox_as("tools:1");
    run_manifest_detached(
        &node,
        "mixed",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: mixed}\nspec:\n  restartPolicy: Never\n  initContainers: [{name: setup, image: 'tools:1', command: ['true']}]\n  containers:\n  - {name: good, image: busybox, command: [sleep, '600']}\n  - {name: bad, image: busybox, command: [sh, -c, 'exit 3']}\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let row = loop {
        let ps = node.ok(&["ps"]);
        if let Some(row) = ps.lines().find(|l| l.contains("Running (bad exited 3)")) {
            break row.to_string();
        }
        assert!(Instant::now() < deadline, "{ps}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!row.contains("tools"), "{row}");
}

/// GET / from `address` inside the node's network namespace: the body, if it answered.
fn fetch_in(node: &Node, address: &str) -> Option<String> {
    use std::io::{Read, Write};
    let address: std::net::SocketAddr = address.parse().unwrap();
    testkit::netns::within(Some(node.netns.path()), || {
        let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        answer.split_once("\r\n\r\n").map(|(_, body)| body.trim().to_string())
    })
}

/// `run -p`: a port of the host forwarded to the pod, from the host's addresses and its
/// loopback; a port another pod holds is refused, naming it; gone with the pod.
#[test]
fn published_ports_reach_the_pod_and_conflicts_are_refused() {
    let node = node();
    let server = "mkdir -p /www && echo published > /www/index.html && exec httpd -f -p 8080 -h /www";
    node.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "18080:8080",
        "--pull",
        "never",
        "busybox",
        "--",
        "sh",
        "-c",
        server,
    ]);
    for address in ["10.88.0.1:18080", "127.0.0.1:18080"] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while fetch_in(&node, address).as_deref() != Some("published") {
            assert!(Instant::now() < deadline, "nothing at {address}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let refused = node
        .fails(&["run", "-d", "--name", "second", "-p", "18080:80", "--pull", "never", "busybox", "--", "sleep", "30"]);
    assert!(refused.contains("host port 0.0.0.0:18080/tcp is already allocated to pod web"), "{refused}");
    assert!(!node.ok(&["ps", "-a"]).contains("second"), "nothing of the refused pod is left");
    let wrong = node.fails(&["run", "-p", "80", "busybox"]);
    assert!(wrong.contains("a host port is needed"), "{wrong}");
    node.ok(&["rm", "-f", "web"]);
    assert_eq!(fetch_in(&node, "127.0.0.1:18080"), None, "the port is forwarded no more");
}

/// The runs of a container of a `podctl run` pod: its log files (`N.log`).
fn runs_of(node: &Node, pod: &str, container: &str) -> usize {
    let Ok(dirs) = std::fs::read_dir(node.log_dir()) else { return 0 };
    dirs.filter_map(|d| d.ok())
        .filter(|d| d.file_name().to_string_lossy().starts_with(&format!("default_{pod}_")))
        .filter_map(|d| std::fs::read_dir(d.path().join(container)).ok())
        .flat_map(|files| files.filter_map(|f| f.ok()))
        .filter(|f| f.file_name().to_string_lossy().ends_with(".log"))
        .count()
}

/// `run -d --restart`: a container that exits is started again by the policy (the first
/// time at once, then after kubelet's back-off), at most MAX_RETRIES times for
/// on-failure; `stop` ends it, `start` and `restart` start the containers again.
#[test]
fn restart_policies_keep_pods_up_until_stopped() {
    let node = node();
    node.ok(&["run", "-d", "--name", "always", "--restart", "always", "--pull", "never", "busybox", "--", "true"]);
    node.ok(&[
        "run",
        "-d",
        "--name",
        "once",
        "--restart",
        "on-failure:1",
        "--pull",
        "never",
        "busybox",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    node.ok(&["run", "-d", "--name", "fine", "--restart", "on-failure", "--pull", "never", "busybox", "--", "true"]);
    let deadline = Instant::now() + Duration::from_secs(8);
    while runs_of(&node, "always", "always") < 2 || runs_of(&node, "once", "once") < 2 {
        assert!(
            Instant::now() < deadline,
            "no restart: {} {}",
            runs_of(&node, "always", "always"),
            runs_of(&node, "once", "once")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(runs_of(&node, "once", "once"), 2, "on-failure:1 restarts once");
    assert_eq!(runs_of(&node, "fine", "fine"), 1, "a zero exit is no failure");
    // Stopped, it stays stopped (its next restart, after the 10 s back-off, never comes).
    node.ok(&["stop", "-t", "1", "always"]);
    let stopped = runs_of(&node, "always", "always");
    node.ok(&["start", "fine"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while runs_of(&node, "fine", "fine") < 2 {
        assert!(Instant::now() < deadline, "start did not run the container again");
        std::thread::sleep(Duration::from_millis(100));
    }
    node.ok(&["run", "-d", "--name", "server", "--pull", "never", "busybox", "--", "sleep", "600"]);
    node.ok(&["restart", "-t", "1", "server"]);
    assert_eq!(runs_of(&node, "server", "server"), 2, "restart stops and starts the container");
    assert!(node.ok(&["ps"]).contains("server"), "running again");
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(runs_of(&node, "always", "always"), stopped, "a stopped pod is not restarted");
    let refused = node.fails(&["run", "--restart", "always", "--pull", "never", "busybox", "--", "true"]);
    assert!(refused.contains("add -d"), "{refused}");
    for pod in ["always", "once", "fine", "server"] {
        node.ok(&["rm", "-f", pod]);
    }
}

/// Removing a pod leaves the deletion of what it wrote to disk to a background process:
/// freeing blocks may wait for the disk (a synchronous discard behind other writes), and
/// no command should. The pod is gone from the node's records at once; its tree follows.
#[test]
fn a_removed_pods_files_are_deleted_in_the_background() {
    let node = node();
    node.ok(&[
        "run",
        "-d",
        "--name",
        "writer",
        "busybox",
        "--",
        "sh",
        "-c",
        "head -c 4000000 /dev/zero > /big; echo done; sleep 60",
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !node.ok(&["logs", "writer"]).contains("done") {
        assert!(std::time::Instant::now() < deadline, "the pod never wrote its file");
        std::thread::sleep(Duration::from_millis(50));
    }
    node.ok(&["rm", "-f", "writer"]);
    node.ok(&["run", "--rm", "busybox", "--", "sh", "-c", "head -c 4000000 /dev/zero > /big"]);
    assert_eq!(std::fs::read_dir(node.data_dir().join("pods")).unwrap().count(), 0, "the pods are gone at once");
    let removed = [node.data_dir().join("removed"), node.log_dir().join("removed")];
    let left = || -> Vec<std::path::PathBuf> {
        removed.iter().flat_map(|d| std::fs::read_dir(d).into_iter().flatten().map(|e| e.unwrap().path())).collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !left().is_empty() {
        assert!(std::time::Instant::now() < deadline, "never deleted: {:?}", left());
        std::thread::sleep(Duration::from_millis(50));
    }
}
