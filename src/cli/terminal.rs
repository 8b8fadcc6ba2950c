//! Our own terminal, while a container's terminal is relayed to it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

/// Gives terminal `to` the window size of terminal `from`.
pub fn copy_window_size(from: i32, to: i32) {
    if let Some(size) = runtime::WindowSize::of(from) {
        let _ = size.apply_to(to);
    }
}

/// Whether our terminal was resized since last looked (SIGWINCH).
static RESIZED: AtomicBool = AtomicBool::new(false);

extern "C" fn resized(_: libc::c_int) {
    RESIZED.store(true, Ordering::SeqCst);
}

/// Our terminal relayed to a container's: in raw mode, and the container's kept the size
/// of ours as it is resized, until dropped.
pub struct Relay {
    _raw: RawMode,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Relays terminal `ours` to the container's terminal `theirs` (its master).
    pub fn start(ours: i32, theirs: OwnedFd) -> Result<Relay> {
        copy_window_size(ours, theirs.as_raw_fd());
        let raw = RawMode::enter(ours)?;
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(libc::SIGWINCH, resized as *const () as libc::sighandler_t) };
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        // A resize is seen within a tick: no thread blocks on signals.
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                if RESIZED.swap(false, Ordering::SeqCst) {
                    copy_window_size(ours, theirs.as_raw_fd());
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        Ok(Relay { _raw: raw, stop })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Our terminal in raw mode until dropped (keys go to the container's pty as typed).
pub struct RawMode {
    fd: i32,
    saved: libc::termios,
}

impl RawMode {
    pub fn enter(fd: i32) -> Result<RawMode> {
        // SAFETY: termios is plain data, filled by tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error()).context("tcgetattr");
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw edits the struct we own; tcsetattr applies it.
        unsafe {
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return Err(io::Error::last_os_error()).context("tcsetattr");
            }
        }
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring the settings read in enter().
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// `-it` relays our terminal: refused, as docker refuses it, when stdin is not one (a
/// pipe's input would otherwise be echoed back by the container's terminal, and the
/// session would never end).
pub fn require_terminal(wanted: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if wanted && !std::io::stdin().is_terminal() {
        anyhow::bail!("the input device is not a TTY: use -i without -t to pass it, or run from a terminal");
    }
    Ok(())
}
