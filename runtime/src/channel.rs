//! The agent ↔ pod init channel: a SOCK_SEQPACKET unix socket, so every request and every
//! response is one message (unix(7)), and file descriptors (an exec's stdio) travel with
//! the message that needs them (SCM_RIGHTS).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest message: a container spec with its environment fits many times over.
const MAX_MESSAGE: usize = 1 << 20;

pub struct Channel(OwnedFd);

pub struct Listener(OwnedFd);

fn seqpacket(nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    socket::socket(AddressFamily::Unix, SockType::SeqPacket, flags, None).map_err(io::Error::from)
}

impl Listener {
    pub fn bind(path: &Path) -> io::Result<Listener> {
        let _ = std::fs::remove_file(path);
        let fd = seqpacket(true)?;
        socket::bind(fd.as_raw_fd(), &UnixAddr::new(path).map_err(io::Error::from)?).map_err(io::Error::from)?;
        socket::listen(&fd, Backlog::new(64).map_err(io::Error::from)?).map_err(io::Error::from)?;
        Ok(Listener(fd))
    }

    /// A waiting connection, if any.
    pub fn accept(&self) -> Option<Channel> {
        let fd = socket::accept4(self.0.as_raw_fd(), SockFlag::SOCK_CLOEXEC).ok()?;
        // SAFETY: accept4 just returned this descriptor.
        Some(Channel(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Channel {
    /// Two connected ends, for a parent and the child it forks.
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = socket::socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(io::Error::from)?;
        Ok((Channel(a), Channel(b)))
    }

    pub fn connect(path: &Path, timeout: Option<Duration>) -> io::Result<Channel> {
        let fd = seqpacket(false)?;
        socket::connect(fd.as_raw_fd(), &UnixAddr::new(path).map_err(io::Error::from)?).map_err(io::Error::from)?;
        if let Some(t) = timeout {
            let tv = nix::sys::time::TimeVal::new(t.as_secs() as i64, t.subsec_micros() as i64);
            socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &tv).map_err(io::Error::from)?;
        }
        Ok(Channel(fd))
    }

    /// Whether the process at the other end is root and outside our PID namespace: its pid
    /// as we see it is 0 when it is not in our PID namespace or one below it (SO_PEERCRED,
    /// unix(7); pid_namespaces(7)). Every process of a pod is inside the pod init's.
    pub fn peer_is_outside_the_pod(&self) -> bool {
        socket::getsockopt(&self.0, socket::sockopt::PeerCredentials)
            .is_ok_and(|peer| peer.pid() == 0 && peer.uid() == 0)
    }

    /// Sends one message, with `fds` attached.
    pub fn send<T: Serialize>(&self, message: &T, fds: &[BorrowedFd]) -> io::Result<()> {
        let bytes = serde_json::to_vec(message).expect("messages serialise");
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let control = [ControlMessage::ScmRights(&raw)];
        let control: &[ControlMessage] = if raw.is_empty() { &[] } else { &control };
        socket::sendmsg::<()>(self.0.as_raw_fd(), &[IoSlice::new(&bytes)], control, MsgFlags::MSG_NOSIGNAL, None)
            .map_err(io::Error::from)?;
        Ok(())
    }

    /// Receives one message and the descriptors that came with it; `None` at end of stream.
    pub fn recv<T: DeserializeOwned>(&self) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        let timed_out = |e| match e {
            nix::Error::EAGAIN => io::Error::new(io::ErrorKind::TimedOut, "no answer in time"),
            e => io::Error::from(e),
        };
        // The next message's size first (MSG_PEEK | MSG_TRUNC give a packet's full length,
        // recv(2)), so the buffer is as large as the message, not as the largest one.
        let size =
            socket::recv(self.0.as_raw_fd(), &mut [], MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC).map_err(timed_out)?;
        let mut buf = vec![0u8; size.clamp(1, MAX_MESSAGE)];
        let mut cmsg = nix::cmsg_space!([RawFd; 3]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = socket::recvmsg::<()>(self.0.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(timed_out)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(received) = c {
                // SAFETY: the kernel installed these descriptors for us.
                fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        let len = msg.bytes;
        if len == 0 {
            return Ok(None);
        }
        let message = serde_json::from_slice(&buf[..len]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some((message, fds)))
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
