//! `podctl exec`: run a command in a running container. It gets pipes, or with `-t` a
//! terminal made inside the container, and we relay them to our stdin, stdout and stderr:
//! never our own descriptors, which a process in the container could reopen through
//! /proc/self/fd (reading back, or truncating, the file our output goes to) or keep after
//! the command ends.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use runtime::ExecStdio;

use super::pods::find_pod;
use super::terminal::Relay;
use super::{NodeOptions, require_root};

#[derive(Args)]
pub struct ExecArgs {
    /// Keep stdin open for the command
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a terminal
    #[arg(short, long)]
    tty: bool,
    /// Container (default: the pod's only running one)
    #[arg(short, long)]
    container: Option<String>,
    /// The pod, by name or the start of its ID
    pod: String,
    /// The command and its arguments
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

impl ExecArgs {
    pub fn run(self, opts: &NodeOptions) -> Result<ExitCode> {
        require_root("podctl exec")?;
        super::terminal::require_terminal(self.interactive && self.tty)?;
        let runtime = opts.runtime()?;
        let pod = find_pod(&runtime, &self.pod)?;
        let running = pod.running_containers();
        let container = match &self.container {
            Some(name) if !running.contains(name) => {
                let names: Vec<String> = pod.containers().into_iter().map(|c| c.name).collect();
                if names.contains(name) {
                    bail!("container {name} of pod {} is not running", pod.name());
                }
                return Err(super::pods::no_container(&pod, name, &names));
            }
            Some(name) => name.clone(),
            None if running.len() == 1 => running[0].clone(),
            None if running.is_empty() => bail!("pod {} has no running container", pod.name()),
            None => bail!(
                "pod {} has {} running containers ({}): name one with -c",
                pod.name(),
                running.len(),
                running.join(", ")
            ),
        };
        let status = if self.tty {
            // The terminal gets our size before the command starts.
            let window = runtime::WindowSize::of(io::stdin().as_raw_fd());
            let term = std::env::var("TERM").ok();
            self.with_pty(|on_master| {
                runtime.exec(&pod, &container, &self.command, ExecStdio::Pty(window, term, on_master))
            })?
        } else {
            self.with_pipes(|stdio| runtime.exec(&pod, &container, &self.command, stdio))?
        };
        if status.reason == "StartError" {
            eprintln!("podctl: {}", status.message.as_deref().unwrap_or("exec failed"));
        }
        Ok(ExitCode::from(status.exit_code.clamp(0, 255) as u8))
    }

    /// Runs `exec` with pipes for its stdio, relayed to ours until the command has exited
    /// and its output is shown: what a process it left behind still writes is shown for
    /// [`DRAIN`] more at most.
    fn with_pipes<T>(&self, exec: impl FnOnce(ExecStdio) -> runtime::Result<T>) -> Result<T> {
        let pipe = || -> Result<(File, File)> {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            Ok((File::from(read), File::from(write)))
        };
        let (stdin_read, mut stdin_write) = pipe()?;
        let (stdout_read, stdout_write) = pipe()?;
        let (stderr_read, stderr_write) = pipe()?;
        if self.interactive {
            std::thread::spawn(move || io::copy(&mut io::stdin(), &mut stdin_write));
        } else {
            drop(stdin_write);
        }
        let (done, relayed) = std::sync::mpsc::channel();
        for (from, to) in
            [(stdout_read, Box::new(io::stdout()) as Box<dyn Write + Send>), (stderr_read, Box::new(io::stderr()))]
        {
            let done = done.clone();
            std::thread::spawn(move || {
                let _ = relay(from, to);
                let _ = done.send(());
            });
        }
        let result = exec(ExecStdio::Fds([stdin_read.as_fd(), stdout_write.as_fd(), stderr_write.as_fd()]));
        drop((stdin_read, stdout_write, stderr_write));
        let deadline = std::time::Instant::now() + DRAIN;
        for _ in 0..2 {
            if relayed.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).is_err() {
                break;
            }
        }
        Ok(result?)
    }

    /// Runs `exec`, relaying the terminal it makes in the container to ours (in raw mode)
    /// until the command has exited and its output is shown.
    fn with_pty<T>(&self, exec: impl FnOnce(Box<dyn FnMut(OwnedFd) + '_>) -> runtime::Result<T>) -> Result<T> {
        let stdin = io::stdin();
        let ours = stdin.is_terminal().then(|| stdin.as_raw_fd());
        let interactive = self.interactive;
        let mut output = None;
        let mut relay = None;
        let result = exec(Box::new(|master: OwnedFd| {
            if let Some(ours) = ours
                && let Ok(theirs) = master.try_clone()
            {
                relay = Relay::start(ours, theirs).ok();
            }
            if interactive && let Ok(to_master) = master.try_clone() {
                let mut to_master = File::from(to_master);
                std::thread::spawn(move || {
                    let _ = io::copy(&mut io::stdin(), &mut to_master);
                });
            }
            let mut from_master = File::from(master);
            // Ends with EIO once nothing holds the terminal any more.
            output = Some(std::thread::spawn(move || {
                let mut stdout = io::stdout();
                let mut buf = [0u8; 4096];
                while let Ok(n) = from_master.read(&mut buf) {
                    if n == 0 || stdout.write_all(&buf[..n]).and_then(|()| stdout.flush()).is_err() {
                        break;
                    }
                }
            }));
        }));
        if let Some(output) = output {
            let _ = output.join();
        }
        drop(relay);
        Ok(result?)
    }
}

/// How long output still comes through once the command has exited (from a process it
/// left running with its pipes).
const DRAIN: Duration = Duration::from_secs(1);

/// Copies `from` to `to`, flushing as it goes, until `from` ends or `to` breaks.
fn relay(mut from: File, mut to: Box<dyn Write + Send>) -> io::Result<()> {
    let mut buf = [0u8; 16 << 10];
    loop {
        match from.read(&mut buf)? {
            0 => return Ok(()),
            n => {
                to.write_all(&buf[..n])?;
                to.flush()?;
            }
        }
    }
}
