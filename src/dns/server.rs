//! The DNS server: messages read and written with hickory-proto; the zone answers the
//! cluster's names and every other query is forwarded to the node's resolvers, as CoreDNS's
//! `forward . /etc/resolv.conf` does.
//!
//! UDP is served by one thread per socket (the sockets share the address with
//! SO_REUSEPORT, so the kernel spreads clients over them), answering the zone's names
//! inline: no task, channel or runtime wake-up per query. Forwarded queries, and TCP
//! connections, get a task.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::zone::{Answer, Zone};

/// How long one upstream has to answer before the next is asked (resolv.conf's default
/// `timeout:`, shortened: the client itself retries).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest UDP message read, from clients and upstreams.
const BUFFER: usize = 4096;

/// The UDP payload we offer in our own EDNS (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

/// How long a TCP client may stay silent before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The zone as last built from the watches, swapped whole.
pub type SharedZone = Arc<RwLock<Arc<Zone>>>;

/// At most this many queries are forwarded at once; more are answered SERVFAIL at once
/// rather than each holding a task and a socket while an upstream is slow.
const MAX_FORWARDS: usize = 512;

pub struct Responder {
    pub zone: SharedZone,
    /// The node's resolvers, tried in order.
    pub upstreams: Vec<SocketAddr>,
    forwards: Arc<tokio::sync::Semaphore>,
}

impl Responder {
    pub fn new(zone: SharedZone, upstreams: Vec<SocketAddr>) -> Responder {
        Responder { zone, upstreams, forwards: Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS)) }
    }
}

/// What answering a request takes.
enum Reply {
    /// The response, complete.
    Ready(Message),
    /// The upstream's answer, relayed.
    Forward,
    /// The response (a CNAME out of the cluster), with the target's records to add.
    Chase(Message, Name, RecordType),
}

impl Responder {
    /// The answer to `request`, as far as the zone gives it; None for a message that gets
    /// no answer (a response: answering it could loop between servers).
    fn reply(&self, request: &Message) -> Option<Reply> {
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut response = response_to(request);
        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return Some(Reply::Ready(response));
        }
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return Some(Reply::Ready(response));
        };
        let zone = self.zone.read().expect("zone lock").clone();
        let reply = match zone.answer(query.name(), query.query_type()) {
            Answer::Records { answers, additional } => {
                response.metadata.authoritative = true;
                let target = external_target(&answers, query.query_type());
                response.answers = answers;
                response.additionals = additional;
                match target {
                    Some(target) => Reply::Chase(response, target, query.query_type()),
                    None => Reply::Ready(response),
                }
            }
            negative @ (Answer::NoData | Answer::NxDomain) => {
                response.metadata.authoritative = true;
                if negative == Answer::NxDomain {
                    response.metadata.response_code = ResponseCode::NXDomain;
                }
                response.authorities = vec![zone.soa()];
                Reply::Ready(response)
            }
            Answer::NotOurs => Reply::Forward,
        };
        Some(reply)
    }

    /// Completes what `reply` left to the upstreams.
    async fn complete(&self, request: &Message, raw: &[u8], reply: Reply) -> Message {
        match reply {
            Reply::Ready(response) => response,
            Reply::Chase(mut response, target, kind) => {
                // A target in the cluster's domain (an alias of another Service) is the
                // zone's to answer; any other, the upstreams'. One step: no CNAME loops.
                let zone = self.zone.read().expect("zone lock").clone();
                match zone.answer(&target, kind) {
                    Answer::Records { answers, .. } => response.answers.extend(answers),
                    Answer::NotOurs => {
                        let mut query = Message::query();
                        query.metadata.recursion_desired = true;
                        query.add_query(Query::query(target, kind));
                        if let Ok(bytes) = query.to_vec()
                            && let Some(upstream) = self.forward(&bytes).await
                        {
                            response.answers.extend(upstream.answers);
                        }
                    }
                    Answer::NoData | Answer::NxDomain => {}
                }
                response
            }
            Reply::Forward => {
                let mut response = response_to(request);
                match self.forward(raw).await {
                    Some(upstream) => {
                        response.metadata.response_code = upstream.metadata.response_code;
                        response.metadata.recursion_available = upstream.metadata.recursion_available;
                        response.metadata.authentic_data = upstream.metadata.authentic_data;
                        response.answers = upstream.answers;
                        response.authorities = upstream.authorities;
                        response.additionals = upstream.additionals;
                    }
                    None => response.metadata.response_code = ResponseCode::ServFail,
                }
                response
            }
        }
    }

    /// The upstream's answer to the raw `query`, from the first upstream that gives one;
    /// over TCP when the UDP answer was truncated.
    async fn forward(&self, query: &[u8]) -> Option<Message> {
        for upstream in &self.upstreams {
            match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange_udp(*upstream, query)).await {
                Ok(Ok(answer)) if answer.metadata.truncation => {
                    return match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange_tcp(*upstream, query)).await {
                        Ok(Ok(whole)) => Some(whole),
                        _ => Some(answer),
                    };
                }
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(e)) => tracing::debug!("forward to {upstream}: {e}"),
                Err(_) => tracing::debug!("forward to {upstream}: no answer in {UPSTREAM_TIMEOUT:?}"),
            }
        }
        None
    }
}

/// An empty response to `request`: its id, question and EDNS presence.
fn response_to(request: &Message) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.queries = request.queries.clone();
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        response.edns = Some(edns);
    }
    response
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

/// `response` as bytes that fit in `limit`: when the records do not, none of them, with
/// the truncation bit set, so the client asks again over TCP (RFC 1035 section 4.2.1).
fn encode_within(mut response: Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = response.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    response.metadata.truncation = true;
    response.answers.clear();
    response.authorities.clear();
    response.additionals.clear();
    response.to_vec().ok()
}

/// Answers queries on `socket` until it fails, on the calling thread: blocking reads, no
/// async runtime between the packet and its answer (a wake-up of a runtime's worker per
/// query costs more than the answer). Forwarded queries go to `runtime`.
pub fn serve_udp(
    responder: Arc<Responder>,
    socket: std::net::UdpSocket,
    runtime: tokio::runtime::Handle,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; BUFFER];
    loop {
        let (length, client) = socket.recv_from(&mut buffer)?;
        let raw = &buffer[..length];
        let Ok(request) = Message::from_vec(raw) else { continue };
        // A client without EDNS takes 512 bytes over UDP; one with it, what it says (RFC 6891).
        let limit = request.max_payload().max(512) as usize;
        match responder.reply(&request) {
            None => {}
            Some(Reply::Ready(response)) => {
                if let Some(bytes) = encode_within(response, limit) {
                    let _ = socket.send_to(&bytes, client);
                }
            }
            Some(pending) => {
                let Ok(permit) = responder.forwards.clone().try_acquire_owned() else {
                    let mut refused = response_to(&request);
                    refused.metadata.response_code = ResponseCode::ServFail;
                    if let Some(bytes) = encode_within(refused, limit) {
                        let _ = socket.send_to(&bytes, client);
                    }
                    continue;
                };
                let Ok(socket) = socket.try_clone() else { continue };
                let (responder, raw) = (responder.clone(), raw.to_vec());
                runtime.spawn(async move {
                    let _permit = permit;
                    let response = responder.complete(&request, &raw, pending).await;
                    if let Some(bytes) = encode_within(response, limit) {
                        // A UDP send does not wait for the peer.
                        let _ = socket.send_to(&bytes, client);
                    }
                });
            }
        }
    }
}

/// Serves TCP clients (two-byte length before each message, RFC 1035 section 4.2.2)
/// until the listener fails.
pub async fn serve_tcp(responder: Arc<Responder>, listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve_connection(responder.clone(), stream));
    }
}

async fn serve_connection(responder: Arc<Responder>, mut stream: TcpStream) {
    loop {
        let Ok(Ok(length)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else { return };
        let mut raw = vec![0; length as usize];
        if stream.read_exact(&mut raw).await.is_err() {
            return;
        }
        let Ok(request) = Message::from_vec(&raw) else { return };
        let Some(reply) = responder.reply(&request) else { continue };
        let response = responder.complete(&request, &raw, reply).await;
        let Some(bytes) = encode_within(response, u16::MAX as usize) else { return };
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend(bytes);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

async fn exchange_udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Message> {
    let local: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let id = u16::from_be_bytes([query[0], query[1]]);
    let mut buffer = vec![0; BUFFER];
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
    let mut stream = TcpStream::connect(upstream).await?;
    let length = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    stream.write_all(&length.to_be_bytes()).await?;
    stream.write_all(query).await?;
    let length = stream.read_u16().await?;
    let mut answer = vec![0; length as usize];
    stream.read_exact(&mut answer).await?;
    Message::from_vec(&answer).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_external_name_inside_the_cluster_is_answered_from_the_zone() {
        let services: Vec<k8s_openapi::api::core::v1::Service> = serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "db", "namespace": "prod"}, "spec": {"clusterIP": "10.96.0.7"}},
            {"metadata": {"name": "alias", "namespace": "default"},
             "spec": {"type": "ExternalName", "externalName": "db.prod.svc.cluster.local"}},
        ]))
        .unwrap();
        let zone = Zone::build("cluster.local", &services, &[]).unwrap();
        // No upstream at all: the answer can only come from the zone.
        let responder = Responder::new(Arc::new(RwLock::new(Arc::new(zone))), vec![]);
        let mut request = Message::query();
        request.add_query(Query::query(Name::from_ascii("alias.default.svc.cluster.local.").unwrap(), RecordType::A));
        let reply = responder.reply(&request).unwrap();
        let response = responder.complete(&request, &request.to_vec().unwrap(), reply).await;
        let answers: Vec<String> = response.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(answers, ["db.prod.svc.cluster.local.", "10.96.0.7"]);
    }

    #[test]
    fn an_answer_too_long_for_udp_is_truncated_to_none() {
        let mut response = Message::response(7, OpCode::Query);
        let name = Name::from_ascii("many.default.svc.cluster.local.").unwrap();
        for i in 0..100u8 {
            response.answers.push(Record::from_rdata(
                name.clone(),
                5,
                RData::A(std::net::Ipv4Addr::new(10, 0, 0, i).into()),
            ));
        }
        let bytes = encode_within(response.clone(), 512).unwrap();
        let truncated = Message::from_vec(&bytes).unwrap();
        assert!(truncated.metadata.truncation && truncated.answers.is_empty());
        let whole = Message::from_vec(&encode_within(response, 65535).unwrap()).unwrap();
        assert_eq!((whole.metadata.truncation, whole.answers.len()), (false, 100));
    }
}
