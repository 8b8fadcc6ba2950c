//! `kubectl exec` on the node: a command run in a container, its streams carried over a
//! WebSocket in Kubernetes' channel protocol (`v5.channel.k8s.io`, and `v4`, which lacks
//! only the close signal): every binary message starts with its channel — 0 stdin,
//! 1 stdout, 2 stderr, 3 the outcome (a `metav1.Status`), 4 terminal resizes, 255 "this
//! channel is closed" (v5). Kubernetes' `remotecommand` package defines them.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use runtime::{ExecStdio, ExitStatus, Pod, Runtime, WindowSize};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// How often an attach looks for what the container wrote.
const ATTACH_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// How long the client gets to answer our Close.
const CLOSE_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(2);

/// How long the first frame waits after the upgrade. client-go (kubectl) reads the socket
/// before it has registered its streams (tools/remotecommand/websocket.go starts
/// readDemuxLoop, then creates the streams) and drops a frame for a stream it does not
/// know yet ("Unknown stream id 1, discarding message"): a command that ends within a
/// millisecond lost its output and its status, and kubectl said "closed all streams".
const FIRST_FRAME_HOLD: std::time::Duration = std::time::Duration::from_millis(20);

/// What the client asked for (kubelet's `/exec` query: `command` repeated, `input`,
/// `output`, `error`, `tty`; `/attach` has no command: it joins the container's own
/// process).
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
        let request = ExecRequest::parse_streams(query)?;
        if request.command.is_empty() {
            return Err("you must specify at least 1 command".into());
        }
        Ok(request)
    }

    /// The streams of an attach (a command, if given, is ignored).
    pub fn parse_attach<'a>(query: impl Iterator<Item = (&'a str, &'a str)>) -> Result<ExecRequest, String> {
        let mut request = ExecRequest::parse_streams(query)?;
        request.command.clear();
        Ok(request)
    }

    fn parse_streams<'a>(query: impl Iterator<Item = (&'a str, &'a str)>) -> Result<ExecRequest, String> {
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
    size: Option<WindowSize>,
}

/// The terminal between the transport (which resizes it) and the command's side (which
/// waits for its first size before starting the command).
#[derive(Default)]
struct SharedTerminal {
    state: Mutex<Terminal>,
    sized: Condvar,
}

/// How long a command with a terminal waits for the client's first size: kubectl sends
/// it at once, and a command that reads its terminal's size must not see 0×0.
const FIRST_SIZE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Terminal {
    fn resize(&mut self, size: WindowSize) {
        self.size = Some(size);
        self.apply_size();
    }

    fn apply_size(&self) {
        if let (Some(master), Some(size)) = (&self.master, self.size) {
            let _ = size.apply_to(master.as_raw_fd());
        }
    }

    /// SIGHUP to the terminal's foreground process group, as a terminal that goes away
    /// gives it. Closing our master does not: the pumps hold copies of it. (TIOCSIG
    /// cannot send SIGHUP, tty_ioctl(4); TIOCGPGRP on a master names the slave's
    /// foreground group, in our PID namespace.)
    fn hang_up(&mut self) {
        if let Some(master) = self.master.take() {
            let mut group: libc::pid_t = 0;
            // SAFETY: TIOCGPGRP fills a pid_t we own; kill(2) takes plain numbers.
            unsafe {
                if libc::ioctl(master.as_raw_fd(), libc::TIOCGPGRP, &mut group) == 0 && group > 1 {
                    libc::kill(-group, libc::SIGHUP);
                }
            }
        }
    }
}

/// What the client sent for stdin and the command has not read yet, in bytes: bounded, so
/// a client cannot fill the node's memory; the transport stops reading from the client
/// while it is full.
#[derive(Default)]
pub struct StdinQueue {
    queued: AtomicUsize,
    drained: Notify,
}

const STDIN_QUEUE_LIMIT: usize = 1 << 20;

impl StdinQueue {
    pub fn has_room(&self) -> bool {
        self.queued.load(Ordering::Relaxed) < STDIN_QUEUE_LIMIT
    }

    /// Resolves once the command has read some of what is queued.
    pub async fn drained(&self) {
        self.drained.notified().await
    }
}

/// A command running for a client, whatever carries its streams: what it writes comes out
/// of `to_client` as `channel byte + data` messages (the outcome last, on [`ERROR`]), and
/// ends when the command has exited and all of it was sent.
pub struct Session {
    pub to_client: mpsc::Receiver<Vec<u8>>,
    stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    stdin_queue: Arc<StdinQueue>,
    terminal: Arc<SharedTerminal>,
}

impl Session {
    pub fn start(runtime: Runtime, pod: Pod, container: String, request: ExecRequest) -> Session {
        let (outgoing, to_client) = mpsc::channel::<Vec<u8>>(64);
        let (stdin, stdin_data) = mpsc::unbounded_channel::<Vec<u8>>();
        let stdin = request.stdin.then_some(stdin);
        let stdin_queue = Arc::new(StdinQueue::default());
        let terminal = Arc::new(SharedTerminal::default());
        {
            let (terminal, stdin) = (terminal.clone(), (stdin_data, stdin_queue.clone()));
            // Ends when the command has exited and its output is handed over (or nobody
            // takes it any more).
            std::thread::spawn(move || run(&runtime, &pod, &container, &request, stdin, &terminal, outgoing));
        }
        Session { to_client, stdin, stdin_queue, terminal }
    }

    pub fn stdin(&self, data: &[u8]) {
        if let Some(stdin) = &self.stdin {
            self.stdin_queue.queued.fetch_add(data.len(), Ordering::Relaxed);
            if stdin.send(data.to_vec()).is_err() {
                self.stdin_queue.queued.fetch_sub(data.len(), Ordering::Relaxed);
            }
        }
    }

    /// How much of the client's input waits for the command: the transport reads from
    /// the client only while it has room.
    pub fn stdin_queue(&self) -> Arc<StdinQueue> {
        self.stdin_queue.clone()
    }

    /// The client's end of input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// A terminal size as remotecommand sends it: `{"Width":80,"Height":24}`.
    pub fn resize(&self, json: &[u8]) {
        if let Some(size) = window_size(json) {
            self.terminal.state.lock().expect("terminal lock").resize(size);
            self.terminal.sized.notify_all();
        }
    }

    /// The client is gone or the command is done: its stdin ends, its terminal hangs up,
    /// and what it still writes has nowhere to go (its pipes break), so it ends too.
    pub fn finish(self) {
        self.terminal.state.lock().expect("terminal lock").hang_up();
    }
}

/// Runs the exec over a WebSocket until the command has exited and all its output is sent.
pub async fn serve(mut socket: WebSocket, runtime: Runtime, pod: Pod, container: String, request: ExecRequest) {
    let mut session = Session::start(runtime, pod, container, request);
    let input = session.stdin_queue();
    tokio::time::sleep(FIRST_FRAME_HOLD).await;
    loop {
        tokio::select! {
            message = session.to_client.recv() => match message {
                Some(message) => if socket.send(Message::Binary(message.into())).await.is_err() { break },
                None => {
                    // client-go takes only a normal closure (1000) as the streams' end.
                    let close = CloseFrame { code: close_code::NORMAL, reason: "".into() };
                    if socket.send(Message::Close(Some(close))).await.is_ok() {
                        // The closing handshake: the client's Close, so that nothing it
                        // still sends meets a closed socket (a reset may lose our last bytes).
                        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
                            while let Some(Ok(message)) = socket.recv().await {
                                if matches!(message, Message::Close(_)) {
                                    break;
                                }
                            }
                        })
                        .await;
                    }
                    break;
                }
            },
            () = input.drained(), if !input.has_room() => {}
            message = socket.recv(), if input.has_room() => match message {
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
    session.finish();
}

/// `{"Width":80,"Height":24}` (remotecommand's TerminalSize).
fn window_size(json: &[u8]) -> Option<WindowSize> {
    let size: Value = serde_json::from_slice(json).ok()?;
    let dimension = |key: &str| size[key].as_u64().and_then(|v| u16::try_from(v).ok());
    Some(WindowSize { cols: dimension("Width")?, rows: dimension("Height")? })
}

/// The blocking side: starts the command with pipes (or a terminal), pumps its streams
/// into `outgoing` and stdin from `stdin_data`, and sends the outcome last.
fn run(
    runtime: &Runtime,
    pod: &Pod,
    container: &str,
    request: &ExecRequest,
    (stdin_data, stdin_queue): (mpsc::UnboundedReceiver<Vec<u8>>, Arc<StdinQueue>),
    terminal: &SharedTerminal,
    outgoing: mpsc::Sender<Vec<u8>>,
) {
    if request.command.is_empty() {
        let outcome = match attach(runtime, pod, container, request, (stdin_data, stdin_queue), &outgoing) {
            Ok(()) => json!({"metadata": {}, "status": "Success"}),
            Err(e) => failure("InternalError", &format!("error attaching to container: {e}")),
        };
        let _ = outgoing.blocking_send(frame(ERROR, outcome.to_string().as_bytes()));
        return;
    }
    let outcome = (|| -> Result<ExitStatus, String> {
        let io = |e: std::io::Error| e.to_string();
        let null = File::options().read(true).write(true).open("/dev/null").map_err(io)?;
        let mut pumps = Vec::new();
        if request.tty {
            let mut stdin_data = Some(stdin_data);
            let sized = terminal.state.lock().expect("terminal lock");
            let (sized, _) =
                terminal.sized.wait_timeout_while(sized, FIRST_SIZE_WAIT, |t| t.size.is_none()).expect("terminal lock");
            let window = sized.size;
            drop(sized);
            let status = runtime.exec(
                pod,
                container,
                &request.command,
                ExecStdio::Pty(
                    window,
                    // kubectl does not say what terminal it runs on.
                    None,
                    Box::new(|master: OwnedFd| {
                        let Ok(reader) = master.try_clone() else { return };
                        if let Some(stdin_data) = stdin_data.take()
                            && let Ok(writer) = master.try_clone()
                        {
                            pump_stdin(stdin_data, stdin_queue.clone(), File::from(writer));
                        }
                        let mut terminal = terminal.state.lock().expect("terminal lock");
                        terminal.master = Some(File::from(master));
                        terminal.apply_size();
                        pumps.push(pump_output(File::from(reader), STDOUT, outgoing.clone()));
                    }),
                ),
            );
            pumps.into_iter().for_each(|p| drop(p.join()));
            return status.map_err(|e| e.to_string());
        }
        let pipe_or_null = |wanted: bool| if wanted { pipe() } else { Ok((null.try_clone()?, null.try_clone()?)) };
        let (stdin_read, stdin_write) = pipe_or_null(request.stdin).map_err(io)?;
        let (stdout_read, stdout_write) = pipe_or_null(request.stdout).map_err(io)?;
        let (stderr_read, stderr_write) = pipe_or_null(request.stderr).map_err(io)?;
        if request.stdin {
            pump_stdin(stdin_data, stdin_queue, stdin_write);
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

/// Joins the container's own process: the client's input to its stdin (if it keeps one),
/// what it writes from now on to the client, until it exits or the client leaves.
fn attach(
    runtime: &Runtime,
    pod: &Pod,
    container: &str,
    request: &ExecRequest,
    (stdin_data, stdin_queue): (mpsc::UnboundedReceiver<Vec<u8>>, Arc<StdinQueue>),
    outgoing: &mpsc::Sender<Vec<u8>>,
) -> Result<(), String> {
    let spec = pod.containers().into_iter().find(|c| c.name == container).ok_or("the container has not started")?;
    if request.stdin && spec.stdin {
        let input = runtime.attach_stdin(pod, container).map_err(|e| e.to_string())?;
        pump_stdin(stdin_data, stdin_queue, File::from(input));
    }
    let mut tail = runtime::logs::LogTail::from_end(&spec.log_path);
    loop {
        let exited = !pod.running_containers().iter().any(|c| c == container);
        let sent = tail.read_new(|record| {
            let channel = match record.stream {
                runtime::logs::Stream::Stderr if !spec.tty => STDERR,
                _ => STDOUT,
            };
            let wanted = if channel == STDERR { request.stderr } else { request.stdout };
            if wanted {
                let mut data = record.content.to_vec();
                if record.full {
                    data.push(b'\n');
                }
                outgoing.blocking_send(frame(channel, &data)).map_err(|_| std::io::Error::other("client gone"))?;
            }
            Ok(())
        });
        if exited || sent.is_err() || outgoing.is_closed() {
            return Ok(());
        }
        std::thread::sleep(ATTACH_POLL);
    }
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
            "command terminated with non-zero exit code: error executing command [{}], exit code {}",
            command.join(" "),
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
fn pump_stdin(mut data: mpsc::UnboundedReceiver<Vec<u8>>, queue: Arc<StdinQueue>, mut to: File) {
    std::thread::spawn(move || {
        while let Some(bytes) = data.blocking_recv() {
            let written = to.write_all(&bytes);
            queue.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
            queue.drained.notify_one();
            if written.is_err() {
                break;
            }
        }
        // Nothing reads any more: let the client send on.
        queue.queued.store(0, Ordering::Relaxed);
        queue.drained.notify_one();
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
        assert_eq!(window_size(br#"{"Width":120,"Height":40}"#), Some(WindowSize { rows: 40, cols: 120 }));
    }
}
