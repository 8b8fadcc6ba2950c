//! Serving HTTP/1.1, plain or over TLS, to clients that may be slow or hostile: the API
//! server and the node's endpoint both serve this way.
//!
//! - A client gets [`HEADER_READ_TIMEOUT`] to send a request's headers, and as long to send
//!   the next one on a kept-alive connection (hyper's header read timeout also runs while
//!   a connection waits for its next request): a slowloris client is cut off.
//! - A TLS handshake gets [`HANDSHAKE_TIMEOUT`], on a task of its own.
//! - At most [`MAX_CONNECTIONS`] connections at once; more wait in the listen backlog.
//! - Upgrades (exec, attach, port-forward) are spliced through.
//! - At `shutdown`, no new connection is taken, idle connections close, and requests in
//!   flight get `grace` to end (watches and followed logs are cut then).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// Go's http.Server in kube-apiserver waits 32 s for headers; no client of ours needs
/// more than a few.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_CONNECTIONS: usize = 4096;

/// What a server process needs before it serves:
/// - SIGPIPE ignored: a connection whose other end is gone must cost a write (EPIPE), not
///   the process (the command line restores SIGPIPE for `podctl … | head`);
/// - as many descriptors as the node allows (the soft RLIMIT_NOFILE up to the hard one, as
///   Go does for kube-apiserver and kubelet): the connection cap, the store and the pods'
///   sockets and logs all need them.
pub fn prepare_process() -> Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // SAFETY: setting a signal's disposition to "ignore" before the server starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    // Buffers of a megabyte or more (a list of thousands of objects) are mapped for each
    // use and given back when freed: glibc's adaptive threshold would otherwise keep them
    // in the heap for good after the first one.
    // SAFETY: mallopt only sets an allocator parameter, before the server's threads start.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    Ok(())
}

/// For the processes that keep a node's many small objects (the agent, `podctl up`): two
/// malloc arenas instead of glibc's eight per core. Their threads allocate little at a
/// time, and the arenas each would keep cost a tenth of the resident memory (measured
/// with `bench/run cluster`).
pub fn few_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter, before the process's threads start.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
}

/// The client certificate a TLS connection's peer presented, verified by the acceptor
/// (DER), in the extensions of every request on the connection.
#[derive(Clone)]
pub struct ClientCertificate(pub Arc<Vec<u8>>);

pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit?,
            () = &mut shutdown => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                // Out of descriptors, say: wait a little rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let (http, tls, service, stopping) = (http.clone(), tls.clone(), router.clone(), stopping.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                Some(acceptor) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        // A verified client certificate goes with each of the connection's requests.
                        let peer = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
                        let service = match peer {
                            Some(der) => service.layer(axum::Extension(ClientCertificate(Arc::new(der)))),
                            None => service,
                        };
                        connection(&http, stream, service, stopping).await;
                    }
                }
                None => connection(&http, tcp, service, stopping).await,
            }
        });
    }
    let _ = stop.send(true);
    // Every connection holds a permit until it ends.
    let _ = tokio::time::timeout(grace, connections.acquire_many(MAX_CONNECTIONS as u32)).await;
    Ok(())
}

/// Serves one connection until it ends, or until `stopping`: then it finishes the request
/// in flight, if any, and closes.
async fn connection<I>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    router: Router,
    mut stopping: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let served = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(router)).with_upgrades();
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => {}
        _ = stopping.changed() => {
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        }
    }
}
