//! Where a pod's state lives, and the small JSON records in it. Every record is written by
//! write-temporary-then-rename, so a reader (or recovery after a crash) sees the old or the
//! new record, never half of one.
//!
//! ```text
//! RUN_DIR/pods/<uid>/        pod.json (written first: the intent), init.json (pod init pid +
//!                            start time), init.sock, shm/ (tmpfs),
//!                            containers/<name>/{spec.json, process.json, exit.json}
//! RUN_DIR/netns/<uid>        the pod's network namespace, bind-mounted
//! DATA_DIR/pods/<uid>/       etc-hostname, etc-hosts, etc-resolv.conf,
//!                            containers/<name>/{upper,work,rootfs}, volumes/<name>
//! ```
//!
//! Only root may read any of it: records hold the containers' environment, so Secret data
//! (directories 0700, records 0600, as kubelet's and containerd's state).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;
use crate::rootfs::ContainerPaths;
use crate::spec::{ContainerSpec, PodSpec, VolumeSource};

#[derive(Clone, Debug)]
pub struct PodDirs {
    /// RUN_DIR/pods/<uid>
    pub state: PathBuf,
    /// DATA_DIR/pods/<uid>
    pub data: PathBuf,
    /// RUN_DIR/netns/<uid>
    pub netns: PathBuf,
    /// DATA_DIR/removed: what was the pod's on disk, waiting to be deleted ([`move_aside`]).
    pub removed: PathBuf,
}

impl PodDirs {
    pub fn new(run_dir: &Path, data_dir: &Path, uid: &str) -> PodDirs {
        PodDirs {
            state: run_dir.join("pods").join(uid),
            data: data_dir.join("pods").join(uid),
            netns: run_dir.join("netns").join(uid),
            removed: removed_dir(data_dir),
        }
    }

    pub fn record(&self) -> PathBuf {
        self.state.join("pod.json")
    }

    pub fn init_record(&self) -> PathBuf {
        self.state.join("init.json")
    }

    pub fn socket(&self) -> PathBuf {
        self.state.join("init.sock")
    }

    pub fn shm(&self) -> PathBuf {
        self.state.join("shm")
    }

    pub fn container_state(&self, name: &str) -> PathBuf {
        self.state.join("containers").join(name)
    }

    pub fn container_record(&self, name: &str) -> PathBuf {
        self.container_state(name).join("spec.json")
    }

    pub fn process_record(&self, name: &str) -> PathBuf {
        self.container_state(name).join("process.json")
    }

    pub fn exit_record(&self, name: &str) -> PathBuf {
        self.container_state(name).join("exit.json")
    }

    /// The pod's `/etc/hostname`, `/etc/hosts` or `/etc/resolv.conf` (`etc-hosts`, as
    /// kubelet names it): on the pod's disk, where what a container writes to them counts
    /// as the pod's, not in the run directory's memory.
    pub fn etc_file(&self, name: &str) -> PathBuf {
        let on_disk = self.data.join(format!("etc-{name}"));
        // A pod made before they moved keeps them in its state directory.
        let older = self.state.join(name);
        if !on_disk.exists() && older.exists() { older } else { on_disk }
    }

    pub fn container_paths(&self, pod: &PodSpec, container: &ContainerSpec) -> ContainerPaths {
        let dir = self.data.join("containers").join(&container.name);
        ContainerPaths {
            rootfs: dir.join("rootfs"),
            upper: dir.join("upper"),
            work: dir.join("work"),
            shm: self.shm(),
            hostname: self.etc_file("hostname"),
            hosts: self.etc_file("hosts"),
            resolv_conf: self.etc_file("resolv.conf"),
            volumes: pod
                .volumes
                .iter()
                .map(|v| {
                    let path = match &v.source {
                        VolumeSource::EmptyDir { .. } => self.data.join("volumes").join(&v.name),
                        VolumeSource::HostPath { path } => path.clone(),
                    };
                    (v.name.clone(), path)
                })
                .collect(),
        }
    }
}

/// `pod.json`: the pod as asked for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodRecord {
    pub spec: PodSpec,
    pub data_dir: PathBuf,
    pub created_at: String,
    /// The pod's cgroup; the pod init runs in its `init` child.
    pub cgroup: Cgroup,
}

/// A process by pid and start time (`/proc/<pid>/stat` field 22): a pid alone may have
/// been reused by the time anyone looks again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessRecord {
    pub fn of(pid: i32) -> Option<ProcessRecord> {
        process_start_time(pid).map(|start_time| ProcessRecord { pid, start_time })
    }

    /// Still the same process, and not a zombie.
    pub fn is_alive(&self) -> bool {
        let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", self.pid)) else { return false };
        let Some(fields) = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>()) else {
            return false;
        };
        fields.first() != Some(&"Z") && fields.get(19).and_then(|s| s.parse().ok()) == Some(self.start_time)
    }
}

impl ProcessRecord {
    /// Waits up to `timeout` for the process to end; true if it has. Not our child, so a
    /// pidfd (pidfd_open(2)) tells when it exits, checked against the start time once open.
    pub fn wait_exit(&self, timeout: std::time::Duration) -> bool {
        // SAFETY: pidfd_open with a pid and no flags; the descriptor is owned right away.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) };
        if fd < 0 {
            return !self.is_alive();
        }
        // SAFETY: the kernel just returned this descriptor.
        let pidfd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        if !self.is_alive() {
            return true;
        }
        let mut pfd = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&pidfd), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis().min(i32::MAX as u128) as i32) };
        ready > 0 || !self.is_alive()
    }
}

/// Field 22 of /proc/<pid>/stat (after the parenthesised command, which may hold spaces).
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// `process.json`: a started container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerProcess {
    #[serde(flatten)]
    pub process: ProcessRecord,
    pub started_at: String,
}

/// `exit.json`: how a container ended, as the pod init saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitStatus {
    /// The exit code, or 128 + the signal that killed it.
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled` or `StartError`.
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: String,
}

/// Writes a record whole or not at all, as every other process sees it: what a kill -9 at
/// any point needs. Not fsync'd: the run directory lives as long as the boot (/run is a
/// tmpfs, as for runc and containerd), and the processes and mounts its records describe
/// do not outlive a power loss either; a sync here would put a disk flush (up to tens of
/// ms) in every pod start.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let dir = path.parent().expect("records live in a directory");
    create_private_dir(dir)?;
    let tmp = path.with_extension("json.tmp");
    let mut file = fs::File::options().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(&serde_json::to_vec(value).expect("records serialise"))?;
    fs::rename(&tmp, path)
}

/// Makes `dir` and its missing parents, each new one 0700 (only root enters).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Sets `path`'s mode, if it exists: what `secure` uses to put right a directory made
/// before its mode was ours to choose.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    match fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

/// Where directories under `root` wait to be deleted.
pub fn removed_dir(root: &Path) -> PathBuf {
    root.join("removed")
}

/// Moves `dir` into `removed` (one rename, on the same filesystem) for [`sweep`] to delete
/// off the caller's path. Deleting a tree frees its blocks, and a filesystem mounted with
/// `discard` may discard them there and then (ext4 without a journal: ext4_free_blocks →
/// blkdev_issue_discard → submit_bio_wait), each discard queued behind whatever else the
/// disk is writing: 8–12 ms per directory on a busy disk. A directory already gone is not
/// an error; one on another filesystem is deleted at once.
pub fn move_aside(dir: &Path, removed: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(removed)?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    match fs::rename(dir, removed.join(format!("{name}-{stamp}"))) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => remove_dir_all_if_present(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

/// Deletes everything [`move_aside`] put in `removed`.
pub fn sweep(removed: &Path) -> io::Result<()> {
    for entry in fs::read_dir(removed).into_iter().flatten() {
        let path = entry?.path();
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => remove_dir_all_if_present(&path)?,
            Ok(_) => fs::remove_file(&path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes `dir` and everything in it; a directory already gone is not an error.
pub fn remove_dir_all_if_present(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

/// `None` when the record does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_moved_aside_keeps_its_tree_until_swept() {
        let root = tempfile::tempdir().unwrap();
        let pod = root.path().join("pods/uid-1");
        fs::create_dir_all(pod.join("containers/c/upper")).unwrap();
        fs::write(pod.join("containers/c/upper/big"), vec![1u8; 4096]).unwrap();
        let removed = removed_dir(root.path());
        move_aside(&pod, &removed).unwrap();
        assert!(!pod.exists());
        let aside: Vec<PathBuf> = fs::read_dir(&removed).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(aside.len(), 1);
        assert!(aside[0].file_name().unwrap().to_string_lossy().starts_with("uid-1-"));
        assert!(aside[0].join("containers/c/upper/big").exists());
        // Gone already, or never there: nothing to do.
        move_aside(&pod, &removed).unwrap();
        sweep(&removed).unwrap();
        assert_eq!(fs::read_dir(&removed).unwrap().count(), 0);
        sweep(&root.path().join("nothing-here")).unwrap();
    }

    #[test]
    fn own_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessRecord::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        assert!(!ProcessRecord { start_time: me.start_time + 1, ..me }.is_alive());
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/exit.json");
        assert_eq!(read_json::<ExitStatus>(&path).unwrap(), None);
        let status = ExitStatus {
            exit_code: 137,
            signal: Some(9),
            reason: "Error".into(),
            message: None,
            started_at: None,
            finished_at: "x".into(),
        };
        write_json_atomic(&path, &status).unwrap();
        assert_eq!(read_json::<ExitStatus>(&path).unwrap(), Some(status));
    }
}
