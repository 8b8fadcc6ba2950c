//! `kubectl exec` on the node: a command run in a container, its streams carried over a
//! WebSocket in Kubernetes' channel protocol (`v5.channel.k8s.io`, and `v4`, which lacks
//! only the close signal): every binary message starts with its channel — 0 stdin,
//! 1 stdout, 2 stderr, 3 the outcome (a `metav1.Status`), 4 terminal resizes, 255 "this
//! channel is closed" (v5). Kubernetes' `remotecommand` package defines them.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use runtime::{ExecStdio, ExitStatus, Pod, Runtime};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// What the client asked for (kubelet's `/exec` query: `command` repeated, `input`,
/// `output`, `error`, `tty`).
#[derive(Debug, Default, PartialEq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecRequest {
    pub fn parse<'a>(query: impl Iterator<Item = (&'a str, &'a str)>) -> Result<ExecRequest, String> {
        let mut request = ExecRequest::default();
        for (key, value) in query {
            let flag = matches!(value, "1" | "true");
            match key {
                "command" => request.command.push(value.to_string()),
                "input" => request.stdin = flag,
                "output" => request.stdout = flag,
                "error" => request.stderr = flag,
                "tty" => request.tty = flag,
                _ => {}
            }
        }
        if request.command.is_empty() {
            return Err("you must specify at least 1 command".into());
        }
        if !(request.stdin || request.stdout || request.stderr) {
            return Err("you must specify at least one of stdin, stdout, stderr".into());
        }
        Ok(request)
    }
}

/// A channel message: its number, then the data.
fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    message
}

/// The terminal the command got, once it exists, and the size to give it.
#[derive(Default)]
struct Terminal {
    master: Option<File>,
    size: Option<libc::winsize>,
}

impl Terminal {
    fn resize(&mut self, size: libc::winsize) {
        self.size = Some(size);
        self.apply_size();
    }

    fn apply_size(&self) {
        if let (Some(master), Some(size)) = (&self.master, &self.size) {
            // SAFETY: TIOCSWINSZ reads a winsize we own.
            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, size) };
        }
    }
}

/// A command running for a client, whatever carries its streams: what it writes comes out
/// of `to_client` as `channel byte + data` messages (the outcome last, on [`ERROR`]), and
/// ends when the command has exited and all of it was sent.
pub struct Session {
    pub to_client: mpsc::Receiver<Vec<u8>>,
    stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    terminal: Arc<Mutex<Terminal>>,
    thread: std::thread::JoinHandle<()>,
}

impl Session {
    pub fn start(runtime: Runtime, pod: Pod, container: String, request: ExecRequest) -> Session {
        let (outgoing, to_client) = mpsc::channel::<Vec<u8>>(64);
        let (stdin, stdin_data) = mpsc::unbounded_channel::<Vec<u8>>();
        let stdin = request.stdin.then_some(stdin);
        let terminal = Arc::new(Mutex::new(Terminal::default()));
        let thread = {
            let terminal = terminal.clone();
            std::thread::spawn(move || run(&runtime, &pod, &container, &request, stdin_data, &terminal, outgoing))
        };
        Session { to_client, stdin, terminal, thread }
    }

    pub fn stdin(&self, data: &[u8]) {
        if let Some(stdin) = &self.stdin {
            let _ = stdin.send(data.to_vec());
        }
    }

    /// The client's end of input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// A terminal size as remotecommand sends it: `{"Width":80,"Height":24}`.
    pub fn resize(&self, json: &[u8]) {
        if let Some(size) = window_size(json) {
            self.terminal.lock().expect("terminal lock").resize(size);
        }
    }

    /// The client is gone or the command is done: its stdin ends, closing the terminal
    /// hangs it up, and the command's side is waited for.
    pub async fn finish(mut self) {
        self.close_stdin();
        self.terminal.lock().expect("terminal lock").master = None;
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Runs the exec over a WebSocket until the command has exited and all its output is sent.
pub async fn serve(mut socket: WebSocket, runtime: Runtime, pod: Pod, container: String, request: ExecRequest) {
    let mut session = Session::start(runtime, pod, container, request);
    loop {
        tokio::select! {
            message = session.to_client.recv() => match message {
                Some(message) => if socket.send(Message::Binary(message.into())).await.is_err() { break },
                None => {
                    // client-go takes only a normal closure (1000) as the streams' end.
                    let close = CloseFrame { code: close_code::NORMAL, reason: "".into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    break;
                }
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(data))) => match (data.first(), &data[1.min(data.len())..]) {
                    (Some(&STDIN), bytes) => session.stdin(bytes),
                    (Some(&CLOSE), [STDIN]) => session.close_stdin(),
                    (Some(&RESIZE), json) => session.resize(json),
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    session.finish().await;
}

/// `{"Width":80,"Height":24}` (remotecommand's TerminalSize).
fn window_size(json: &[u8]) -> Option<libc::winsize> {
    let size: Value = serde_json::from_slice(json).ok()?;
    let dimension = |key: &str| size[key].as_u64().and_then(|v| u16::try_from(v).ok());
    Some(libc::winsize { ws_col: dimension("Width")?, ws_row: dimension("Height")?, ws_xpixel: 0, ws_ypixel: 0 })
}

/// The blocking side: starts the command with pipes (or a terminal), pumps its streams
/// into `outgoing` and stdin from `stdin_data`, and sends the outcome last.
fn run(
    runtime: &Runtime,
    pod: &Pod,
    container: &str,
    request: &ExecRequest,
    stdin_data: mpsc::UnboundedReceiver<Vec<u8>>,
    terminal: &Mutex<Terminal>,
    outgoing: mpsc::Sender<Vec<u8>>,
) {
    let outcome = (|| -> Result<ExitStatus, String> {
        let io = |e: std::io::Error| e.to_string();
        let null = File::options().read(true).write(true).open("/dev/null").map_err(io)?;
        let mut pumps = Vec::new();
        if request.tty {
            let mut stdin_data = Some(stdin_data);
            let status = runtime.exec(
                pod,
                container,
                &request.command,
                ExecStdio::Pty(Box::new(|master: OwnedFd| {
                    let Ok(reader) = master.try_clone() else { return };
                    if let Some(stdin_data) = stdin_data.take()
                        && let Ok(writer) = master.try_clone()
                    {
                        pump_stdin(stdin_data, File::from(writer));
                    }
                    let mut terminal = terminal.lock().expect("terminal lock");
                    terminal.master = Some(File::from(master));
                    terminal.apply_size();
                    pumps.push(pump_output(File::from(reader), STDOUT, outgoing.clone()));
                })),
            );
            pumps.into_iter().for_each(|p| drop(p.join()));
            return status.map_err(|e| e.to_string());
        }
        let pipe_or_null = |wanted: bool| if wanted { pipe() } else { Ok((null.try_clone()?, null.try_clone()?)) };
        let (stdin_read, stdin_write) = pipe_or_null(request.stdin).map_err(io)?;
        let (stdout_read, stdout_write) = pipe_or_null(request.stdout).map_err(io)?;
        let (stderr_read, stderr_write) = pipe_or_null(request.stderr).map_err(io)?;
        if request.stdin {
            pump_stdin(stdin_data, stdin_write);
        }
        if request.stdout {
            pumps.push(pump_output(stdout_read, STDOUT, outgoing.clone()));
        }
        if request.stderr {
            pumps.push(pump_output(stderr_read, STDERR, outgoing.clone()));
        }
        let stdio = ExecStdio::Fds([stdin_read.as_fd(), stdout_write.as_fd(), stderr_write.as_fd()]);
        let status = runtime.exec(pod, container, &request.command, stdio);
        // Ours are the last write ends once the command is gone: the pumps see the end.
        drop((stdin_read, stdout_write, stderr_write));
        pumps.into_iter().for_each(|p| drop(p.join()));
        status.map_err(|e| e.to_string())
    })();
    let status = match outcome {
        Ok(status) => outcome_status(&request.command, &status),
        Err(e) => failure("InternalError", &format!("error executing command in container: {e}")),
    };
    let _ = outgoing.blocking_send(frame(ERROR, status.to_string().as_bytes()));
}

/// kubelet's answer on the error channel: Success, or the exit code as a cause kubectl
/// exits with.
fn outcome_status(command: &[String], status: &ExitStatus) -> Value {
    if status.reason == "StartError" {
        return failure("InternalError", status.message.as_deref().unwrap_or("the command could not start"));
    }
    if status.exit_code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {command:?}, exit code {}",
            status.exit_code
        ),
        "details": {"causes": [{"reason": "ExitCode", "message": status.exit_code.to_string()}]},
    })
}

fn failure(reason: &str, message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "reason": reason, "message": message})
}

fn pipe() -> std::io::Result<(File, File)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((File::from(read), File::from(write)))
}

/// Copies what the client types into the command's stdin until the client closes it.
fn pump_stdin(mut data: mpsc::UnboundedReceiver<Vec<u8>>, mut to: File) {
    std::thread::spawn(move || {
        while let Some(bytes) = data.blocking_recv() {
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
    });
}

/// Sends one of the command's output streams on `channel` until it ends (or nobody reads).
fn pump_output(mut from: File, channel: u8, outgoing: mpsc::Sender<Vec<u8>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = vec![0; 32 << 10];
        // A terminal's master ends with EIO once nothing holds its other side.
        while let Ok(n @ 1..) = from.read(&mut buffer) {
            if outgoing.blocking_send(frame(channel, &buffer[..n])).is_err() {
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_the_command_and_streams() {
        let query = [("command", "sh"), ("command", "-c"), ("command", "exit 3"), ("output", "1"), ("error", "1")];
        let request = ExecRequest::parse(query.into_iter()).unwrap();
        assert_eq!(request.command, ["sh", "-c", "exit 3"]);
        assert!(request.stdout && request.stderr && !request.stdin && !request.tty);
        assert!(ExecRequest::parse([("output", "1")].into_iter()).unwrap_err().contains("at least 1 command"));
        assert!(ExecRequest::parse([("command", "ls")].into_iter()).unwrap_err().contains("at least one of"));
    }

    #[test]
    fn a_non_zero_exit_is_a_cause_kubectl_exits_with() {
        let exit = |exit_code, reason: &str| ExitStatus {
            exit_code,
            signal: None,
            reason: reason.into(),
            message: None,
            started_at: None,
            finished_at: String::new(),
        };
        let status = exit(3, "Error");
        let outcome = outcome_status(&["false".into()], &status);
        assert_eq!(outcome["reason"], "NonZeroExitCode");
        assert_eq!(outcome["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
        let success = exit(0, "Completed");
        assert_eq!(outcome_status(&["true".into()], &success)["status"], "Success");
        assert_eq!(window_size(br#"{"Width":120,"Height":40}"#).map(|s| (s.ws_col, s.ws_row)), Some((120, 40)));
    }
}
