//! The DNS server: hickory-server serves UDP and TCP; the zone answers the cluster's names
//! and every other query is forwarded to the node's resolvers, as CoreDNS's `forward .
//! /etc/resolv.conf` does.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::zone::{Answer, Zone};

/// How long one upstream has to answer before the next is asked (resolv.conf's default
/// `timeout:`, shortened: the client itself retries).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest UDP answer taken from an upstream (EDNS's common buffer size).
const UPSTREAM_BUFFER: usize = 4096;

/// The zone as last built from the watches, swapped whole.
pub type SharedZone = Arc<RwLock<Arc<Zone>>>;

pub struct Handler {
    pub zone: SharedZone,
    /// The node's resolvers, tried in order.
    pub upstreams: Vec<SocketAddr>,
}

/// A response's sections.
#[derive(Default)]
struct Sections {
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(512));
            edns
        });
        let mut metadata = Metadata::new(request.metadata.id, MessageType::Response, request.metadata.op_code);
        metadata.recursion_desired = request.metadata.recursion_desired;
        metadata.recursion_available = true;
        let (code, sections) =
            if request.metadata.message_type != MessageType::Query || request.metadata.op_code != OpCode::Query {
                (ResponseCode::NotImp, Sections::default())
            } else if let [query] = request.queries.queries() {
                let name = Name::from(query.name().clone());
                let zone = self.zone.read().expect("zone lock").clone();
                match zone.answer(&name, query.query_type()) {
                    Answer::Records { mut answers, additional } => {
                        metadata.authoritative = true;
                        if let Some(target) = external_target(&answers, query.query_type()) {
                            answers.extend(self.resolve(target, query.query_type()).await);
                        }
                        (ResponseCode::NoError, Sections { answers, additionals: additional, ..Sections::default() })
                    }
                    negative @ (Answer::NoData | Answer::NxDomain) => {
                        metadata.authoritative = true;
                        let code =
                            if negative == Answer::NxDomain { ResponseCode::NXDomain } else { ResponseCode::NoError };
                        (code, Sections { authorities: vec![zone.soa()], ..Sections::default() })
                    }
                    Answer::NotOurs => match self.forward(request.as_slice()).await {
                        Some(upstream) => {
                            metadata.recursion_available = upstream.metadata.recursion_available;
                            metadata.truncation = upstream.metadata.truncation;
                            let sections = Sections {
                                answers: upstream.answers,
                                authorities: upstream.authorities,
                                additionals: upstream.additionals,
                            };
                            (upstream.metadata.response_code, sections)
                        }
                        None => (ResponseCode::ServFail, Sections::default()),
                    },
                }
            } else {
                (ResponseCode::FormErr, Sections::default())
            };
        metadata.response_code = code;
        let message = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            sections.answers.iter(),
            sections.authorities.iter(),
            std::iter::empty(),
            sections.additionals.iter(),
        );
        match response.send_response(message).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("send a DNS answer to {}: {e}", request.src());
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}

impl Handler {
    /// The upstream's answer to the raw `query`, from the first upstream that gives one;
    /// over TCP when the UDP answer was truncated.
    async fn forward(&self, query: &[u8]) -> Option<Message> {
        for upstream in &self.upstreams {
            match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange_udp(*upstream, query)).await {
                Ok(Ok(answer)) if answer.metadata.truncation => {
                    match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange_tcp(*upstream, query)).await {
                        Ok(Ok(answer)) => return Some(answer),
                        _ => return Some(answer),
                    }
                }
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(e)) => tracing::debug!("forward to {upstream}: {e}"),
                Err(_) => tracing::debug!("forward to {upstream}: no answer in {UPSTREAM_TIMEOUT:?}"),
            }
        }
        None
    }

    /// The upstream's records for `name` (an ExternalName Service's target), so that stub
    /// resolvers that do not follow CNAMEs get the address in one answer.
    async fn resolve(&self, name: Name, kind: RecordType) -> Vec<Record> {
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(hickory_server::proto::op::Query::query(name, kind));
        let Ok(bytes) = query.to_vec() else { return vec![] };
        self.forward(&bytes).await.map(|answer| answer.answers).unwrap_or_default()
    }
}

/// The target of a lone CNAME answer to a query for another type.
fn external_target(answers: &[Record], kind: RecordType) -> Option<Name> {
    match answers {
        [record] if kind != RecordType::CNAME => match &record.data {
            RData::CNAME(target) => Some(target.0.clone()),
            _ => None,
        },
        _ => None,
    }
}

async fn exchange_udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Message> {
    let local: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let id = u16::from_be_bytes([query[0], query[1]]);
    let mut buffer = vec![0; UPSTREAM_BUFFER];
    loop {
        let received = socket.recv(&mut buffer).await?;
        // A stray datagram with another id is not the answer (RFC 5452 section 9.1).
        match Message::from_vec(&buffer[..received]) {
            Ok(answer) if answer.metadata.id == id => return Ok(answer),
            _ => continue,
        }
    }
}

async fn exchange_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Message> {
    let mut stream = tokio::net::TcpStream::connect(upstream).await?;
    let length = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    stream.write_all(&length.to_be_bytes()).await?;
    stream.write_all(query).await?;
    let length = stream.read_u16().await?;
    let mut answer = vec![0; length as usize];
    stream.read_exact(&mut answer).await?;
    Message::from_vec(&answer).map_err(std::io::Error::other)
}
