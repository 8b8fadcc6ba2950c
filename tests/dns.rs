//! The cluster DNS (`podctl dns`) against an API server, asked over UDP and TCP as a pod's
//! resolver asks: Services by name, headless Services' endpoints, SRV, ExternalName,
//! reverse names, names that do not exist, and other names forwarded to an upstream
//! (Debian's dnsmasq) — all inside a scratch network namespace.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use testkit::apiserver::ApiServer;
use testkit::dnsmasq::Dnsmasq;
use testkit::netns::{Netns, within};

const PODCTL: &str = env!("CARGO_BIN_EXE_podctl");
const DNS: &str = "127.0.0.1:1053";

/// A child process killed and reaped when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn query(name: &str, kind: RecordType) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    message.to_vec().unwrap()
}

/// Asks the server over UDP from inside `netns`.
fn ask(netns: &Path, name: &str, kind: RecordType) -> Message {
    within(Some(netns), || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        socket.send_to(&query(name, kind), DNS).unwrap();
        let mut buffer = [0u8; 4096];
        let (length, _) = socket.recv_from(&mut buffer).expect("an answer within 5 s");
        Message::from_vec(&buffer[..length]).unwrap()
    })
}

/// Asks over TCP (two-byte length prefix, RFC 1035 section 4.2.2).
fn ask_tcp(netns: &Path, name: &str, kind: RecordType) -> Message {
    within(Some(netns), || {
        let mut stream = TcpStream::connect(DNS).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let bytes = query(name, kind);
        stream.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
        stream.write_all(&bytes).unwrap();
        let mut length = [0u8; 2];
        stream.read_exact(&mut length).unwrap();
        let mut answer = vec![0; u16::from_be_bytes(length) as usize];
        stream.read_exact(&mut answer).unwrap();
        Message::from_vec(&answer).unwrap()
    })
}

fn data(message: &Message) -> Vec<String> {
    records(&message.answers)
}

fn records(records: &[Record]) -> Vec<String> {
    let mut data: Vec<String> = records.iter().map(|r| r.data.to_string()).collect();
    data.sort();
    data
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.50
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{name: pg, port: 5432, protocol: TCP}]
endpoints:
- addresses: [10.244.0.10]
  hostname: db-0
  conditions: {ready: true}
- addresses: [10.244.0.11]
  hostname: db-1
  conditions: {ready: true}
- addresses: [10.244.0.12]
  hostname: db-2
  conditions: {ready: false}
---
apiVersion: v1
kind: Service
metadata: {name: search}
spec:
  type: ExternalName
  externalName: www.outside.example
"#;

#[test]
fn cluster_names_are_answered_from_the_api_and_other_names_forwarded() {
    testkit::assert_root();
    let dir = testkit::temp_dir();
    let netns = Netns::new(&dir.path().join("netns"));
    let api = ApiServer::start_in(PODCTL, netns.path(), &["--controllers="]);
    // The upstream: dnsmasq on the namespace's loopback, knowing one outside name.
    let _upstream = Dnsmasq::start(netns.path(), &[("outside.example", "192.0.2.7")]);
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(&resolv_conf, "search example.org\nnameserver 127.0.0.1\n").unwrap();
    api.kubectl_stdin(&["apply", "-f", "-"], OBJECTS);

    let mut dns = Command::new(PODCTL);
    dns.args(["dns", "--kubeconfig", api.kubeconfig().to_str().unwrap(), "--listen", DNS])
        .args(["--resolv-conf", resolv_conf.to_str().unwrap()])
        .stdout(Stdio::null());
    netns.enter(&mut dns);
    let _dns = Process(dns.spawn().unwrap());
    let answered = |name: &str| {
        within(Some(netns.path()), || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            socket.send_to(&query(name, RecordType::A), DNS).unwrap();
            socket.recv_from(&mut [0u8; 512]).is_ok()
        })
    };
    testkit::eventually("podctl dns answers", 20, || answered("web.default.svc.cluster.local."));

    // A ClusterIP Service: its address, its named port, its reverse name; any case.
    let web = ask(netns.path(), "WEB.default.svc.cluster.local.", RecordType::A);
    assert_eq!(web.metadata.response_code, ResponseCode::NoError);
    assert!(web.metadata.authoritative);
    assert_eq!(data(&web), ["10.96.0.50"]);
    let srv = ask(netns.path(), "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(data(&srv), ["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(records(&srv.additionals), ["10.96.0.50"], "the SRV target's address comes along");
    let ptr = ask(netns.path(), "50.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(data(&ptr), ["web.default.svc.cluster.local."]);
    assert_eq!(data(&ask_tcp(netns.path(), "web.default.svc.cluster.local.", RecordType::A)), ["10.96.0.50"]);

    // A headless Service: its ready endpoints, each also by its hostname.
    assert_eq!(
        data(&ask(netns.path(), "db.default.svc.cluster.local.", RecordType::A)),
        ["10.244.0.10", "10.244.0.11"]
    );
    assert_eq!(data(&ask(netns.path(), "db-1.db.default.svc.cluster.local.", RecordType::A)), ["10.244.0.11"]);
    let srv = ask(netns.path(), "_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        data(&srv),
        ["0 50 5432 db-0.db.default.svc.cluster.local.", "0 50 5432 db-1.db.default.svc.cluster.local."]
    );

    // Names that are not there, and one that is but has no such record.
    let missing = ask(netns.path(), "nope.default.svc.cluster.local.", RecordType::A);
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(missing.authorities.len(), 1, "the zone's SOA, for negative caching");
    let no_data = ask(netns.path(), "web.default.svc.cluster.local.", RecordType::AAAA);
    assert_eq!((no_data.metadata.response_code, no_data.answers.len()), (ResponseCode::NoError, 0));
    assert_eq!(data(&ask(netns.path(), "10-244-3-4.default.pod.cluster.local.", RecordType::A)), ["10.244.3.4"]);

    // Forwarded: an outside name, and the address behind an ExternalName Service's CNAME.
    let outside = ask(netns.path(), "www.outside.example.", RecordType::A);
    assert_eq!(data(&outside), ["192.0.2.7"]);
    assert!(!outside.metadata.authoritative);
    let search = ask(netns.path(), "search.default.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&search), ["192.0.2.7", "www.outside.example."]);

    // Watched, not polled: a Service deleted is gone, one created is there.
    api.kubectl(&["delete", "service", "web"]);
    testkit::eventually("web is NXDOMAIN once deleted", 20, || {
        ask(netns.path(), "web.default.svc.cluster.local.", RecordType::A).metadata.response_code
            == ResponseCode::NXDomain
    });
    api.kubectl(&["create", "service", "clusterip", "late", "--tcp=80", "--clusterip=10.96.0.60"]);
    testkit::eventually("late answers once created", 20, || {
        data(&ask(netns.path(), "late.default.svc.cluster.local.", RecordType::A)) == ["10.96.0.60"]
    });
}
