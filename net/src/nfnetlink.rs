//! Netfilter's netlink (NETLINK_NETFILTER, uapi/linux/netfilter/nfnetlink.h): the socket,
//! and messages written and read, shared by the subsystems the node speaks to — nf_tables
//! (`nft::netlink`) and connection tracking (`conntrack`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::Error;

const NETLINK_NETFILTER: i32 = 12;
const NETLINK_CAP_ACK: i32 = 10;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLA_F_NESTED: u16 = 0x8000;

/// How a dump ended.
pub enum Dumped {
    Done,
    Refused(std::io::Error),
}

/// A netfilter netlink socket of the caller's network namespace.
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    pub fn open() -> Result<Socket, Error> {
        // SAFETY: socket(2) with constant arguments; the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if fd < 0 {
            return Err(Error::io("open a netfilter netlink socket")(std::io::Error::last_os_error()));
        }
        // SAFETY: a fresh fd of ours.
        let socket = Socket { fd: unsafe { OwnedFd::from_raw_fd(fd) } };
        // An error names the message it refuses by its header, not a copy of it: a refused
        // batch answers each message that failed, and copies of 64 KiB messages overflow
        // the receive buffer (ENOBUFS hides the errors). netlink(7).
        socket.set_option(libc::SOL_NETLINK, NETLINK_CAP_ACK, 1)?;
        Ok(socket)
    }

    /// Sends the dump request `request` and hands the payload of each object the kernel
    /// lists to `each`, until it is done or refuses.
    pub fn dump(&self, request: &[u8], mut each: impl FnMut(&[u8])) -> Result<Dumped, Error> {
        self.send(request)?;
        loop {
            let reply = self.receive(0)?.unwrap_or_default();
            for (kind, _, payload) in messages(&reply) {
                match kind {
                    NLMSG_DONE => return Ok(Dumped::Done),
                    NLMSG_ERROR => return Ok(Dumped::Refused(std::io::Error::from_raw_os_error(-error_code(payload)))),
                    _ => each(payload),
                }
            }
        }
    }

    /// The errors the kernel answered to the requests sent so far, with their sequence
    /// numbers. A request to netfilter is handled in the sender's own call, so its answers
    /// wait on the socket when send returns.
    pub fn refusals(&self) -> Result<Vec<(u32, std::io::Error)>, Error> {
        let mut refused = Vec::new();
        while let Some(reply) = self.receive(libc::MSG_DONTWAIT)? {
            for (kind, seq, payload) in messages(&reply) {
                if kind == NLMSG_ERROR && error_code(payload) != 0 {
                    refused.push((seq, std::io::Error::from_raw_os_error(-error_code(payload))));
                }
            }
        }
        Ok(refused)
    }

    pub fn set_option(&self, level: i32, option: i32, value: usize) -> Result<(), Error> {
        let value = value.min(i32::MAX as usize) as libc::c_int;
        // SAFETY: setsockopt with a pointer to an int that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                option,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(Error::io("set an option of the netfilter netlink socket")(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    pub fn send(&self, bytes: &[u8]) -> Result<(), Error> {
        // SAFETY: a zeroed sockaddr_nl is the kernel's address (pid 0).
        let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and address outlive the call.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(Error::io("send to netfilter netlink")(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// One datagram of answers; `None` when `flags` has MSG_DONTWAIT and none is waiting.
    pub fn receive(&self, flags: i32) -> Result<Option<Vec<u8>>, Error> {
        let mut buffer = vec![0u8; 1 << 16];
        // SAFETY: the buffer outlives the call and its length is passed.
        let read = unsafe { libc::recv(self.fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), flags) };
        if read < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(Error::io("read from netfilter netlink")(error));
        }
        buffer.truncate(read as usize);
        Ok(Some(buffer))
    }
}

/// The netlink messages of a datagram: (type, sequence number, payload).
pub fn messages(datagram: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut found = Vec::new();
    let mut rest = datagram;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if len < 16 || len > rest.len() {
            break;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let seq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
        found.push((kind, seq, &rest[16..len]));
        rest = &rest[align(len).min(rest.len())..];
    }
    found
}

/// The top-level attributes of a payload: (type without flags, value).
pub fn attributes(mut payload: &[u8]) -> Vec<(u16, &[u8])> {
    let mut found = Vec::new();
    while payload.len() >= 4 {
        let len = u16::from_ne_bytes([payload[0], payload[1]]) as usize;
        if len < 4 || len > payload.len() {
            break;
        }
        found.push((u16::from_ne_bytes([payload[2], payload[3]]) & !NLA_F_NESTED, &payload[4..len]));
        payload = &payload[align(len).min(payload.len())..];
    }
    found
}

/// The value of attribute `kind` among `attributes`, if there.
pub fn attribute<'a>(attributes: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    attributes.iter().find(|(k, _)| *k == kind).map(|(_, value)| *value)
}

pub fn c_string(value: &[u8]) -> &str {
    std::str::from_utf8(value.split(|b| *b == 0).next().unwrap_or_default()).unwrap_or_default()
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The (negative) errno of an NLMSG_ERROR payload; 0 for an acknowledgement.
pub fn error_code(payload: &[u8]) -> i32 {
    i32::from_ne_bytes(payload.get(..4).and_then(|b| b.try_into().ok()).unwrap_or_default())
}

/// Netlink messages being written.
#[derive(Default)]
pub struct Buffer {
    pub bytes: Vec<u8>,
}

impl Buffer {
    /// A message: netlink header, nfgenmsg, then what `body` writes.
    pub fn message(
        &mut self,
        kind: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
        body: impl FnOnce(&mut Buffer),
    ) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 4]);
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(&flags.to_ne_bytes());
        self.bytes.extend_from_slice(&seq.to_ne_bytes());
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.bytes.extend_from_slice(&[family, 0]);
        self.bytes.extend_from_slice(&res_id.to_be_bytes());
        body(self);
        let len = (self.bytes.len() - start) as u32;
        self.bytes[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn attr(&mut self, kind: u16, value: &[u8]) {
        self.bytes.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(value);
        self.pad();
    }

    fn pad(&mut self) {
        self.bytes.resize(align(self.bytes.len()), 0);
    }

    pub fn string(&mut self, kind: u16, value: &str) {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.attr(kind, &bytes);
    }

    /// Netfilter's integers are big-endian.
    pub fn u32(&mut self, kind: u16, value: u32) {
        self.attr(kind, &value.to_be_bytes());
    }

    pub fn nested(&mut self, kind: u16, body: impl FnOnce(&mut Buffer)) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[0, 0]);
        self.bytes.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        body(self);
        let len = (self.bytes.len() - start) as u16;
        self.bytes[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }
}
