//! `kubectl port-forward`: kubelet's `/portForward/{namespace}/{pod}` over SPDY/3.1 in the
//! `portforward.k8s.io` protocol. For each connection the client opens two streams with the
//! same `requestid` and `port` headers: `error`, then `data`. We connect to that port on
//! the pod's loopback (a socket made inside the pod's network namespace), carry the data
//! stream both ways, end it with a FIN when the pod's side closes, and write on the error
//! stream why a connection could not be made.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{
    FLAG_FIN, Frame, GOAWAY, HeaderDecoder, HeaderEncoder, RST_STREAM, SYN_REPLY, SYN_STREAM, answer_ping,
    control_frame, data_frame, read_frame, stream_id,
};

pub const PROTOCOL: &str = "portforward.k8s.io";

/// Where the pod's ports are: its network namespace, or the node's own (host network).
#[derive(Clone)]
pub enum PodNetwork {
    Namespace(PathBuf),
    Host,
}

/// Connects to `port` on the pod's loopback, from a thread that enters the pod's network
/// namespace for this one connection (setns(2) acts on the calling thread only; the
/// socket stays in the namespace it was made in).
fn connect(network: &PodNetwork, port: u16) -> std::io::Result<std::net::TcpStream> {
    let PodNetwork::Namespace(path) = network else { return std::net::TcpStream::connect(("127.0.0.1", port)) };
    let netns = std::fs::File::open(path)?;
    std::thread::spawn(move || {
        // SAFETY: setns on this thread, which ends after the connect.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        std::net::TcpStream::connect(("127.0.0.1", port))
    })
    .join()
    .map_err(|_| std::io::Error::other("the connecting thread failed"))?
}

/// Serves port forwarding over an upgraded connection until the client goes away.
pub async fn serve<T>(io: T, pod: String, network: PodNetwork)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let (frames_out, mut outgoing) = mpsc::channel::<Vec<u8>>(64);
    let writing = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut decoder = HeaderDecoder::new();
    let mut encoder = HeaderEncoder::new();
    // requestid → its error stream; data stream → what goes to its connection (None: FIN).
    let mut error_streams: HashMap<String, u32> = HashMap::new();
    let mut connections: HashMap<u32, mpsc::UnboundedSender<Option<Vec<u8>>>> = HashMap::new();
    while let Ok(frame) = read_frame(&mut reader).await {
        match frame {
            Frame::Control { kind: SYN_STREAM, ref payload, .. } => {
                let (Some(stream), Some(headers)) =
                    (stream_id(payload), payload.get(10..).and_then(|b| decoder.decode(b)))
                else {
                    break;
                };
                let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
                let mut reply = stream.to_be_bytes().to_vec();
                reply.extend_from_slice(&encoder.encode(&[]));
                if frames_out.send(control_frame(SYN_REPLY, 0, &reply)).await.is_err() {
                    break;
                }
                let request = header("requestid").unwrap_or_default();
                match header("streamtype").as_deref() {
                    Some("error") => {
                        error_streams.insert(request, stream);
                    }
                    Some("data") => {
                        let (to_connection, from_client) = mpsc::unbounded_channel();
                        connections.insert(stream, to_connection);
                        let port = header("port").and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
                        let error_stream = error_streams.get(&request).copied();
                        let forward =
                            Forward { stream, error_stream, port, pod: pod.clone(), frames: frames_out.clone() };
                        tokio::spawn(forward.run(network.clone(), from_client));
                    }
                    _ => {}
                }
            }
            Frame::Data { stream, flags, data } => {
                if let Some(connection) = connections.get(&stream) {
                    if !data.is_empty() {
                        let _ = connection.send(Some(data));
                    }
                    if flags & FLAG_FIN != 0 {
                        let _ = connection.send(None);
                    }
                }
            }
            Frame::Control { kind: RST_STREAM, ref payload, .. } => {
                if let Some(stream) = stream_id(payload) {
                    connections.remove(&stream);
                }
            }
            Frame::Control { kind: GOAWAY, .. } => break,
            ref other => {
                let mut ping = Vec::new();
                if answer_ping(other, &mut ping).await.is_ok()
                    && !ping.is_empty()
                    && frames_out.send(ping).await.is_err()
                {
                    break;
                }
            }
        }
    }
    drop(connections);
    drop(frames_out);
    let _ = writing.await;
}

/// One forwarded connection: a data stream and the socket to the pod's port.
struct Forward {
    stream: u32,
    error_stream: Option<u32>,
    port: u16,
    pod: String,
    frames: mpsc::Sender<Vec<u8>>,
}

impl Forward {
    async fn run(self, network: PodNetwork, mut from_client: mpsc::UnboundedReceiver<Option<Vec<u8>>>) {
        let port = self.port;
        let connected = tokio::task::spawn_blocking(move || connect(&network, port)).await;
        let socket = match connected {
            Ok(Ok(socket)) => socket.set_nonblocking(true).and_then(|()| tokio::net::TcpStream::from_std(socket)),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        let socket = match socket {
            Ok(socket) => socket,
            Err(e) => {
                // kubelet's words, which kubectl prints.
                let message = format!(
                    "error forwarding port {port} to pod {}: failed to connect to localhost:{port} inside the pod's network namespace: {e}",
                    self.pod
                );
                if let Some(error) = self.error_stream {
                    let _ = self.frames.send(data_frame(error, FLAG_FIN, message.as_bytes())).await;
                }
                let _ = self.frames.send(data_frame(self.stream, FLAG_FIN, &[])).await;
                return;
            }
        };
        let (mut from_pod, mut to_pod) = socket.into_split();
        let (stream, frames) = (self.stream, self.frames.clone());
        let upstream = tokio::spawn(async move {
            let mut buffer = vec![0u8; 32 * 1024];
            loop {
                match from_pod.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if frames.send(data_frame(stream, 0, &buffer[..n])).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = frames.send(data_frame(stream, FLAG_FIN, &[])).await;
        });
        while let Some(Some(data)) = from_client.recv().await {
            if to_pod.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
        let _ = upstream.await;
        if let Some(error) = self.error_stream {
            let _ = self.frames.send(data_frame(error, FLAG_FIN, &[])).await;
        }
    }
}

/// The network a pod's ports are found in.
pub fn network_of(pod: &runtime::Pod) -> PodNetwork {
    match pod.record.spec.network {
        runtime::NetworkMode::Host => PodNetwork::Host,
        _ => PodNetwork::Namespace(Path::new(&pod.dirs.netns).to_path_buf()),
    }
}
