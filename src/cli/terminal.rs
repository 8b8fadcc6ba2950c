//! Our own terminal, while a container's terminal is relayed to it.

use std::io;

use anyhow::{Context, Result};

/// Gives terminal `to` the window size of terminal `from`.
pub fn copy_window_size(from: i32, to: i32) {
    if let Some(size) = runtime::WindowSize::of(from) {
        let _ = size.apply_to(to);
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
