//! The kernel's connection tracking table over ctnetlink
//! (uapi/linux/netfilter/nfnetlink_conntrack.h): its UDP flows listed, and flows deleted.
//! The service proxy needs this because NAT is decided on a flow's first packet only: a
//! UDP client that keeps its source port keeps its DNAT to an endpoint that has gone, for
//! as long as it keeps sending (the flow's timeout restarts with each packet).

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::Error;
use crate::nfnetlink::{Buffer, Dumped, NLM_F_DUMP, NLM_F_REQUEST, Socket, attribute, attributes};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const AF_INET: u8 = 2;
const IPPROTO_UDP: u8 = 17;

// Attributes, each enum from 1 (UNSPEC is 0).
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// Deletions sent in one datagram: the errors they may answer must fit the socket's
/// receive buffer.
const DELETES_PER_SEND: usize = 256;

/// A tracked UDP flow: its original direction, where its replies come from (the endpoint,
/// when the first packet was DNATed), and its conntrack zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub source: SocketAddrV4,
    pub destination: SocketAddrV4,
    pub reply_source: Ipv4Addr,
    pub zone: u16,
}

/// The connection tracking table of the caller's network namespace.
pub struct Conntrack {
    socket: Socket,
}

impl Conntrack {
    pub fn open() -> Result<Conntrack, Error> {
        Ok(Conntrack { socket: Socket::open()? })
    }

    /// The IPv4 UDP flows the kernel tracks.
    pub fn udp_flows(&self) -> Result<Vec<Flow>, Error> {
        let mut request = Buffer::default();
        request.message(ctnetlink(IPCTNL_MSG_CT_GET), NLM_F_REQUEST | NLM_F_DUMP, 1, AF_INET, 0, |_| {});
        let mut flows = Vec::new();
        // nfgenmsg (4 bytes), then the flow's attributes.
        match self.socket.dump(&request.bytes, |payload| flows.extend(flow(payload.get(4..).unwrap_or_default())))? {
            Dumped::Done => Ok(flows),
            Dumped::Refused(error) => {
                Err(Error::Netlink { context: "list conntrack flows".into(), message: error.to_string() })
            }
        }
    }

    /// Deletes `flows`; one already gone is no error. Returns how many were deleted.
    pub fn delete(&self, flows: &[&Flow]) -> Result<usize, Error> {
        let mut deleted = 0;
        for batch in flows.chunks(DELETES_PER_SEND) {
            let mut request = Buffer::default();
            for (i, flow) in batch.iter().enumerate() {
                request.message(ctnetlink(IPCTNL_MSG_CT_DELETE), NLM_F_REQUEST, i as u32 + 1, AF_INET, 0, |b| {
                    write_tuple(b, CTA_TUPLE_ORIG, IPPROTO_UDP, flow.source, flow.destination);
                    write_zone(b, flow.zone);
                });
            }
            self.socket.send(&request.bytes)?;
            let mut gone = 0;
            for (seq, error) in self.socket.refusals()? {
                if error.raw_os_error() != Some(libc::ENOENT) {
                    let flow = batch.get((seq as usize).wrapping_sub(1));
                    return Err(Error::Netlink {
                        context: format!("delete conntrack flow {flow:?}"),
                        message: error.to_string(),
                    });
                }
                gone += 1;
            }
            deleted += batch.len() - gone;
        }
        Ok(deleted)
    }
}

fn ctnetlink(kind: u16) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | kind
}

/// A tuple (CTA_TUPLE_ORIG or _REPLY) as ctnetlink reads and writes it.
fn write_tuple(b: &mut Buffer, kind: u16, protocol: u8, from: SocketAddrV4, to: SocketAddrV4) {
    b.nested(kind, |b| {
        b.nested(CTA_TUPLE_IP, |b| {
            b.attr(CTA_IP_V4_SRC, &from.ip().octets());
            b.attr(CTA_IP_V4_DST, &to.ip().octets());
        });
        b.nested(CTA_TUPLE_PROTO, |b| {
            b.attr(CTA_PROTO_NUM, &[protocol]);
            b.attr(CTA_PROTO_SRC_PORT, &from.port().to_be_bytes());
            b.attr(CTA_PROTO_DST_PORT, &to.port().to_be_bytes());
        });
    });
}

/// A flow's zone; none is zone 0.
fn write_zone(b: &mut Buffer, zone: u16) {
    if zone != 0 {
        b.attr(CTA_ZONE, &zone.to_be_bytes());
    }
}

/// A flow from a dump's attributes; `None` for what is not IPv4 UDP.
fn flow(attrs: &[u8]) -> Option<Flow> {
    let attrs = attributes(attrs);
    let (source, destination, protocol) = tuple(attribute(&attrs, CTA_TUPLE_ORIG)?)?;
    let (reply_source, _, _) = tuple(attribute(&attrs, CTA_TUPLE_REPLY)?)?;
    let zone = attribute(&attrs, CTA_ZONE).and_then(|v| Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?)));
    (protocol == IPPROTO_UDP).then_some(Flow {
        source,
        destination,
        reply_source: *reply_source.ip(),
        zone: zone.unwrap_or(0),
    })
}

/// A tuple's source, destination and protocol.
fn tuple(nested: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4, u8)> {
    let attrs = attributes(nested);
    let inner = |kind| attributes(attribute(&attrs, kind).unwrap_or_default());
    let (ip, proto) = (inner(CTA_TUPLE_IP), inner(CTA_TUPLE_PROTO));
    let address =
        |kind| -> Option<Ipv4Addr> { Some(Ipv4Addr::from(<[u8; 4]>::try_from(attribute(&ip, kind)?.get(..4)?).ok()?)) };
    let port = |kind| -> Option<u16> { Some(u16::from_be_bytes(attribute(&proto, kind)?.get(..2)?.try_into().ok()?)) };
    let protocol = *attribute(&proto, CTA_PROTO_NUM)?.first()?;
    // Flows without ports (ICMP) have none: 0 stands for them.
    let source = SocketAddrV4::new(address(CTA_IP_V4_SRC)?, port(CTA_PROTO_SRC_PORT).unwrap_or(0));
    let destination = SocketAddrV4::new(address(CTA_IP_V4_DST)?, port(CTA_PROTO_DST_PORT).unwrap_or(0));
    Some((source, destination, protocol))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dump message's attributes as the kernel writes them (ctnetlink_dump_tuples).
    fn dumped(
        protocol: u8,
        source: SocketAddrV4,
        destination: SocketAddrV4,
        reply: SocketAddrV4,
        zone: u16,
    ) -> Vec<u8> {
        let mut b = Buffer::default();
        write_tuple(&mut b, CTA_TUPLE_ORIG, protocol, source, destination);
        write_tuple(&mut b, CTA_TUPLE_REPLY, protocol, reply, source);
        write_zone(&mut b, zone);
        b.bytes
    }

    #[test]
    fn a_dumped_udp_flow_reads_back() {
        let (client, service, endpoint) =
            ("10.88.0.5:4444".parse().unwrap(), "10.96.0.10:53".parse().unwrap(), "10.88.0.9:5353".parse().unwrap());
        let read = flow(&dumped(IPPROTO_UDP, client, service, endpoint, 0)).unwrap();
        assert_eq!(
            read,
            Flow { source: client, destination: service, reply_source: "10.88.0.9".parse().unwrap(), zone: 0 }
        );
        assert_eq!(flow(&dumped(IPPROTO_UDP, client, service, endpoint, 7)).unwrap().zone, 7);
        assert_eq!(flow(&dumped(6, client, service, endpoint, 0)), None, "TCP is not listed");
        assert_eq!(flow(&[]), None);
    }
}
