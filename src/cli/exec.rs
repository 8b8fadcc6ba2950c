//! `podctl exec`: run a command in a running container. Our own stdin, stdout and stderr
//! are handed to it (over the pod init's socket), so its output needs no relay; with `-t`
//! it gets a terminal made inside the container, whose master we relay to ours.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use runtime::ExecStdio;

use super::pods::find_pod;
use super::terminal::RawMode;
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
    pod: String,
    /// The command and its arguments
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

impl ExecArgs {
    pub fn run(self, opts: &NodeOptions) -> Result<ExitCode> {
        require_root("podctl exec")?;
        let runtime = opts.runtime()?;
        let pod = find_pod(&runtime, &self.pod)?;
        let running = pod.running_containers();
        let container = match &self.container {
            Some(name) => name.clone(),
            None if running.len() == 1 => running[0].clone(),
            None if running.is_empty() => bail!("pod {} has no running container", pod.name()),
            None => bail!("pod {} has {} running containers: name one with -c", pod.name(), running.len()),
        };
        let status = if self.tty {
            // The terminal gets our size before the command starts.
            let window = runtime::WindowSize::of(io::stdin().as_raw_fd());
            self.with_pty(|on_master| runtime.exec(&pod, &container, &self.command, ExecStdio::Pty(window, on_master)))?
        } else {
            let (null, stdin, stdout, stderr) = (File::open("/dev/null")?, io::stdin(), io::stdout(), io::stderr());
            let input = if self.interactive { stdin.as_fd() } else { null.as_fd() };
            let stdio = ExecStdio::Fds([input, stdout.as_fd(), stderr.as_fd()]);
            runtime.exec(&pod, &container, &self.command, stdio)?
        };
        if status.reason == "StartError" {
            eprintln!("podctl: {}", status.message.as_deref().unwrap_or("exec failed"));
        }
        Ok(ExitCode::from(status.exit_code.clamp(0, 255) as u8))
    }

    /// Runs `exec`, relaying the terminal it makes in the container to ours (in raw mode)
    /// until the command has exited and its output is shown.
    fn with_pty<T>(&self, exec: impl FnOnce(Box<dyn FnMut(OwnedFd) + '_>) -> runtime::Result<T>) -> Result<T> {
        let stdin = io::stdin();
        let _raw = stdin.is_terminal().then(|| RawMode::enter(stdin.as_raw_fd())).transpose()?;
        let interactive = self.interactive;
        let mut output = None;
        let result = exec(Box::new(|master: OwnedFd| {
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
        Ok(result?)
    }
}
