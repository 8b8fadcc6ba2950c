//! When a server should stop: SIGTERM (systemd, kill) or SIGINT (Ctrl-C); and what a
//! server does not stop for.

/// A server writes to connections whose other end may be gone: that must be an EPIPE
/// error, not the SIGPIPE that ends the process (which the command line restores for
/// `podctl … | head`).
pub fn ignore_broken_pipes() {
    // SAFETY: setting a signal's disposition to "ignore" before the server starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

pub async fn signalled() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
