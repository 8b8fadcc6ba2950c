//! `podctl apiserver` driven by the real kubectl (the newest on the machine) and by raw
//! HTTP for what kubectl never sends wrong. Each test starts its own server on a loopback
//! port with a scratch data directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use testkit::apiserver::{ApiServer, KUBECTL_DIR};

const PODCTL: &str = env!("CARGO_BIN_EXE_podctl");

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {color: blue}
---
apiVersion: v1
kind: Secret
metadata: {name: token, namespace: shop}
stringData: {token: abc}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: busybox, command: [httpd, -f, -p, "8080"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: solo, namespace: shop, labels: {app: solo}}
spec:
  containers: [{name: c, image: busybox, command: [sleep, "3600"], env: [{name: A, value: "1"}]}]
"#;

#[test]
fn kubectl_creates_applies_gets_patches_scales_and_deletes() {
    let api = ApiServer::start(PODCTL, &[]);
    assert!(api.kubectl(&["version"]).contains("Server Version: v1.33.0-podctl"));
    assert_eq!(api.kubectl(&["create", "namespace", "team"]), "namespace/team created\n");
    api.kubectl(&["create", "configmap", "cfg", "-n", "team", "--from-literal=a=b"]);
    let err = api.kubectl_fails(&["create", "namespace", "team"]);
    assert!(err.contains("namespaces \"team\" already exists"), "{err}");

    // apply twice: created, then unchanged.
    let first = api.kubectl_stdin(&["apply", "-f", "-"], MANIFEST);
    assert_eq!(
        first,
        "namespace/shop created\nconfigmap/settings created\nsecret/token created\nservice/web created\n\
         deployment.apps/web created\npod/solo created\n"
    );
    let second = api.kubectl_stdin(&["apply", "-f", "-"], MANIFEST);
    assert!(second.lines().all(|l| l.ends_with(" unchanged")), "{second}");
    let changed = api.kubectl_stdin(&["apply", "-f", "-"], &MANIFEST.replace("color: blue", "color: red"));
    assert!(changed.contains("configmap/settings configured"), "{changed}");

    let services = api.kubectl(&["get", "svc", "-n", "shop", "-o", "wide"]);
    let row: Vec<&str> = services.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!((row[0], row[1], row[4], row[6]), ("web", "NodePort", "80:30000/TCP", "app=web"), "{services}");
    assert!(row[2].starts_with("10.96."), "{services}");
    let all = api.kubectl(&["get", "all", "-n", "shop"]);
    for name in ["pod/solo", "service/web", "deployment.apps/web"] {
        assert!(all.contains(name), "{all}");
    }
    assert_eq!(api.kubectl(&["get", "pods", "-A", "-l", "app=solo", "-o", "name"]), "pod/solo\n");
    assert_eq!(
        api.kubectl(&["get", "pods", "-n", "shop", "--field-selector", "metadata.name!=solo", "-o", "name"]),
        ""
    );
    let yaml = api.kubectl(&["get", "pod", "solo", "-n", "shop", "-o", "yaml"]);
    assert!(yaml.contains("restartPolicy: Always") && yaml.contains("uid: "), "{yaml}");
    let described = api.kubectl(&["describe", "pod", "solo", "-n", "shop"]);
    assert!(described.contains("Status:           Pending"), "{described}");

    // The three patch types.
    api.kubectl(&[
        "patch",
        "pod",
        "solo",
        "-n",
        "shop",
        "-p",
        r#"{"spec":{"containers":[{"name":"c","env":[{"name":"B","value":"2"}]}]}}"#,
    ]);
    api.kubectl(&["patch", "pod", "solo", "-n", "shop", "--type=merge", "-p", r#"{"metadata":{"labels":{"m":"1"}}}"#]);
    api.kubectl(&[
        "patch",
        "pod",
        "solo",
        "-n",
        "shop",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/j","value":"2"}]"#,
    ]);
    let pod: Value = serde_json::from_str(&api.kubectl(&["get", "pod", "solo", "-n", "shop", "-o", "json"])).unwrap();
    assert_eq!(pod["spec"]["containers"][0]["env"], json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
    assert_eq!(
        (pod["metadata"]["labels"]["m"].as_str(), pod["metadata"]["labels"]["j"].as_str()),
        (Some("1"), Some("2"))
    );
    // Unknown fields refused when the client asks for strict validation.
    let (status, body) = api.http(
        "PATCH",
        "/api/v1/namespaces/shop/pods/solo?fieldValidation=Strict",
        &[("Content-Type", "application/strategic-merge-patch+json")],
        br#"{"spec":{"containers":[{"name":"c","imagee":"x"}]}}"#,
    );
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("unknown field \"spec.containers[0].imagee\""), "{body}");
    // By default they are dropped with a warning, which kubectl prints.
    let out = api.kubectl_output(
        &["patch", "pod", "solo", "-n", "shop", "-p", r#"{"spec":{"containers":[{"name":"c","imagee":"x"}]}}"#],
        None,
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Warning: unknown field \"spec.containers[0].imagee\""), "{stderr}");
    let pod = api.kubectl(&["get", "pod", "solo", "-n", "shop", "-o", "json"]);
    assert!(!pod.contains("imagee"), "{pod}");

    api.kubectl(&["scale", "deployment", "web", "-n", "shop", "--replicas=5"]);
    assert_eq!(api.kubectl(&["get", "deploy", "web", "-n", "shop", "-o", "jsonpath={.spec.replicas}"]), "5");

    // An unbound pod goes at once; deleting a namespace takes what is in it.
    assert_eq!(api.kubectl(&["delete", "pod", "solo", "-n", "shop"]), "pod \"solo\" deleted\n");
    api.kubectl(&["delete", "namespace", "shop"]);
    let (status, _) = api.http("GET", "/api/v1/namespaces/shop/configmaps/settings", &[], b"");
    assert_eq!(status, 404);
    let err = api.kubectl_fails(&["get", "configmap", "settings", "-n", "shop"]);
    assert!(err.contains("namespaces \"shop\" not found"), "{err}");
}

#[test]
fn watches_see_every_change_in_order_and_resume() {
    let api = ApiServer::start(PODCTL, &["--compaction-interval", "1"]);
    let mut watch = api
        .kubectl_command(&["get", "configmaps", "-w", "-o", "json", "--output-watch-events", "--request-timeout=20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    api.kubectl(&["create", "configmap", "a", "--from-literal=k=1"]);
    api.kubectl(&["label", "configmap", "a", "x=y"]);
    api.kubectl(&["delete", "configmap", "a"]);
    let mut events = serde_json::Deserializer::from_reader(watch.stdout.take().unwrap()).into_iter::<Value>();
    let seen: Vec<String> = (0..3)
        .map(|_| {
            let event = events.next().unwrap().unwrap();
            format!(
                "{} configmap/{}",
                event["type"].as_str().unwrap(),
                event["object"]["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(seen, ["ADDED configmap/a", "MODIFIED configmap/a", "DELETED configmap/a"]);

    // From a resourceVersion: what came after it, then 410 Gone once compacted.
    let (_, created) = api.http(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[("Content-Type", "application/json")],
        br#"{"metadata":{"name":"b"}}"#,
    );
    let rv = created["metadata"]["resourceVersion"].as_str().unwrap().parse::<i64>().unwrap();
    api.kubectl(&["label", "configmap", "b", "x=1"]);
    let (status, body) = api.http(
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    let events: Vec<Value> = match body {
        // Chunked: JSON lines between chunk sizes.
        Value::String(text) => {
            text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(Value::is_object).collect()
        }
        one => vec![one],
    };
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "MODIFIED");
    std::thread::sleep(Duration::from_millis(2500));
    let (_, body) = api.http(
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1&timeoutSeconds=1",
        &[],
        b"",
    );
    let text = body.as_str().map(String::from).unwrap_or_else(|| body.to_string());
    assert!(text.contains("\"type\":\"ERROR\"") && text.contains("\"code\":410"), "{text}");
}

#[test]
fn kubectl_works_the_same_on_the_etcd_backend() {
    let etcd = testkit::etcd::Etcd::start();
    let api = ApiServer::start(PODCTL, &["--etcd-endpoints", &etcd.endpoint]);
    let first = api.kubectl_stdin(&["apply", "-f", "-"], MANIFEST);
    assert!(first.contains("deployment.apps/web created"), "{first}");
    let second = api.kubectl_stdin(&["apply", "-f", "-"], MANIFEST);
    assert!(second.lines().all(|l| l.ends_with(" unchanged")), "{second}");
    assert_eq!(api.kubectl(&["get", "pods", "-n", "shop", "-o", "name"]), "pod/solo\n");
    api.kubectl(&["scale", "deployment", "web", "-n", "shop", "--replicas=3"]);
    assert_eq!(api.kubectl(&["get", "deploy", "web", "-n", "shop", "-o", "jsonpath={.spec.replicas}"]), "3");
    // The objects live in etcd: a new server on another data directory finds them.
    let again = ApiServer::start(PODCTL, &["--etcd-endpoints", &etcd.endpoint]);
    assert_eq!(again.kubectl(&["get", "configmap", "settings", "-n", "shop", "-o", "jsonpath={.data.color}"]), "blue");
    api.kubectl(&["delete", "namespace", "shop"]);
    assert!(!again.kubectl(&["get", "namespaces", "-o", "name"]).contains("shop"));
}

#[test]
fn objects_survive_a_killed_server() {
    let mut api = ApiServer::start(PODCTL, &[]);
    api.kubectl(&["create", "configmap", "kept", "--from-literal=k=v"]);
    api.restart_on(api.addr, &[]);
    assert_eq!(api.kubectl(&["get", "configmap", "kept", "-o", "jsonpath={.data.k}"]), "v");
    // Revisions go on from where they were.
    let (_, created) =
        api.http("POST", "/api/v1/namespaces/default/configmaps", &[], br#"{"metadata":{"name":"next"}}"#);
    assert!(created["metadata"]["resourceVersion"].as_str().unwrap().parse::<i64>().unwrap() > 5);
}

#[test]
fn https_with_tokens_refuses_anyone_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, tokens) = (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("tokens.csv"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=podctl", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(&tokens, "s3cret-token,admin,1,\"system:masters\"\n").unwrap();
    let api = ApiServer::start(
        PODCTL,
        &[
            "--token-file",
            tokens.to_str().unwrap(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-private-key-file",
            key.to_str().unwrap(),
        ],
    );
    // The kubeconfig the server wrote trusts its certificate and carries the token.
    assert!(api.kubectl(&["get", "namespaces", "-o", "name"]).contains("namespace/default"));
    let err = api.kubectl_fails(&["get", "--raw", "/api/v1/namespaces", "--token", "wrong"]);
    assert!(err.contains("Unauthorized") || err.contains("provide credentials"), "{err}");

    // Without TLS, tokens still guard every request (a 401 Status).
    let api = ApiServer::start(PODCTL, &["--token-file", tokens.to_str().unwrap()]);
    let (status, body) = api.http("GET", "/api/v1/namespaces", &[], b"");
    assert_eq!((status, body["kind"].as_str(), body["reason"].as_str()), (401, Some("Status"), Some("Unauthorized")));
    let (status, _) = api.http("GET", "/api/v1/namespaces", &[("Authorization", "Bearer wrong")], b"");
    assert_eq!(status, 401);
    let (status, _) = api.http("GET", "/api/v1/namespaces", &[("Authorization", "Bearer s3cret-token")], b"");
    assert_eq!(status, 200);

    // Beyond loopback with no authentication: refused unless asked for.
    let out = Command::new(PODCTL)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["apiserver", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without authentication"));
}

#[test]
fn bad_requests_get_a_status_naming_the_problem() {
    let api = ApiServer::start(PODCTL, &[]);
    let json = [("Content-Type", "application/json")];
    let post = |path: &str, body: &str| api.http("POST", path, &json, body.as_bytes());
    let (status, body) = post("/api/v1/namespaces/default/pods", "{not json");
    assert_eq!((status, body["reason"].as_str()), (400, Some("BadRequest")));
    let (status, body) =
        post("/api/v1/namespaces/default/pods", r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"}}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("do not match the URL"), "{body}");
    let (status, body) = post(
        "/api/v1/namespaces/default/pods",
        r#"{"metadata":{"name":"Bad_Name"},"spec":{"containers":[{"name":"c"}]}}"#,
    );
    assert_eq!((status, body["reason"].as_str()), (422, Some("Invalid")));
    let fields: Vec<&str> =
        body["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["metadata.name", "spec.containers[0].image"]);
    let (status, body) = post("/api/v1/namespaces/nowhere/configmaps", r#"{"metadata":{"name":"x"}}"#);
    assert_eq!((status, body["message"].as_str()), (404, Some("namespaces \"nowhere\" not found")));
    let (status, _) =
        post("/api/v1/namespaces/default/configmaps?fieldValidation=Strict", r#"{"metadata":{"name":"x"},"dataa":{}}"#);
    assert_eq!(status, 400);
    let big = format!(r#"{{"metadata":{{"name":"big"}},"data":{{"k":"{}"}}}}"#, "x".repeat(4 << 20));
    let (status, body) = post("/api/v1/namespaces/default/configmaps", &big);
    assert_eq!((status, body["reason"].as_str()), (413, Some("RequestEntityTooLarge")));
    let (status, _) = api.http("GET", "/api/v1/namespaces/default/configmaps/big", &[], b"");
    assert_eq!(status, 404, "nothing half-written");

    // Optimistic concurrency: an update from a stale read is refused.
    let (_, made) = post("/api/v1/namespaces/default/configmaps", r#"{"metadata":{"name":"cc"},"data":{"v":"1"}}"#);
    let mut stale = made.clone();
    let mut fresh = made;
    fresh["data"]["v"] = "2".into();
    let (status, _) = api.http("PUT", "/api/v1/namespaces/default/configmaps/cc", &json, fresh.to_string().as_bytes());
    assert_eq!(status, 200);
    stale["data"]["v"] = "3".into();
    let (status, body) =
        api.http("PUT", "/api/v1/namespaces/default/configmaps/cc", &json, stale.to_string().as_bytes());
    assert_eq!((status, body["reason"].as_str()), (409, Some("Conflict")));
    assert!(body["message"].as_str().unwrap().contains("the object has been modified"), "{body}");

    // Paging: limit and continue walk the whole list once.
    for i in 0..5 {
        post("/api/v1/namespaces/default/configmaps", &format!(r#"{{"metadata":{{"name":"p{i}"}}}}"#));
    }
    let (mut names, mut token) = (Vec::new(), String::new());
    loop {
        let (_, page) =
            api.http("GET", &format!("/api/v1/namespaces/default/configmaps?limit=2&continue={token}"), &[], b"");
        names.extend(
            page["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(next) => token = next.to_string(),
            None => break,
        }
    }
    assert_eq!(names, ["cc", "p0", "p1", "p2", "p3", "p4"]);
    // dryRun stores nothing; generateName makes a name.
    let (status, made) =
        post("/api/v1/namespaces/default/configmaps?dryRun=All", r#"{"metadata":{"generateName":"gen-"}}"#);
    assert_eq!(status, 201);
    let name = made["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9);
    let (status, _) = api.http("GET", &format!("/api/v1/namespaces/default/configmaps/{name}"), &[], b"");
    assert_eq!(status, 404);
}

#[test]
fn a_watcher_that_does_not_read_holds_back_no_one() {
    let api = ApiServer::start(PODCTL, &[]);
    let watch = |stream: &mut TcpStream| {
        let request = format!(
            "GET /api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=60 HTTP/1.1\r\nHost: {}\r\n\r\n",
            api.addr
        );
        stream.write_all(request.as_bytes()).unwrap();
    };
    // One watcher never reads a byte; another counts what it gets.
    let mut stalled = TcpStream::connect(api.addr).unwrap();
    watch(&mut stalled);
    let mut reader = TcpStream::connect(api.addr).unwrap();
    watch(&mut reader);
    std::thread::sleep(Duration::from_millis(300));
    const WRITES: usize = 3000;
    let addr = api.addr;
    let counter = std::thread::spawn(move || {
        reader.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        const ADDED: &[u8] = b"\"type\":\"ADDED\"";
        let (mut seen, mut tail, mut chunk) = (0, Vec::new(), [0u8; 65536]);
        while seen < WRITES {
            let n = reader.read(&mut chunk).expect("events keep coming");
            assert!(n > 0, "watch ended after {seen} events");
            // What is new, with the end of the last read in case a marker straddles both.
            tail.extend_from_slice(&chunk[..n]);
            seen += tail.windows(ADDED.len()).filter(|w| *w == ADDED).count();
            let keep = tail.len().saturating_sub(ADDED.len() - 1);
            tail.drain(..keep);
        }
        seen
    });
    let big = "x".repeat(2000);
    let mut connection = TcpStream::connect(addr).unwrap();
    let mut reply = BufReader::new(connection.try_clone().unwrap());
    for i in 0..WRITES {
        let body = format!(r#"{{"metadata":{{"name":"cm-{i}"}},"data":{{"pad":"{big}"}}}}"#);
        let request = format!(
            "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        connection.write_all(request.as_bytes()).unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reply.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reply.read_exact(&mut body).unwrap();
    }
    assert_eq!(counter.join().unwrap(), WRITES);
    drop(stalled);
}

/// A kube-rs watcher, as a controller runs one, sees every change in order: across a
/// restart of the server it resumes from its last revision; when what it missed has been
/// compacted, it gets 410 Gone and lists again.
#[test]
fn a_kube_rs_watcher_follows_restarts_and_compactions() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::WatchStreamExt;
    use kube::runtime::watcher::{self, Event};

    let mut api = ApiServer::start(PODCTL, &[]);
    let home = api.addr;
    api.kubectl(&["create", "configmap", "a"]);
    api.kubectl(&["create", "configmap", "b"]);
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(api.kubeconfig()).unwrap();
    let client = tokio.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        kube::Client::try_from(config).unwrap()
    });
    let (events, seen) = std::sync::mpsc::channel();
    tokio.spawn(async move {
        let configmaps: kube::Api<ConfigMap> = kube::Api::namespaced(client, "default");
        // Errors (the server away) are retried after a backoff, as controllers do.
        let mut stream = watcher::watcher(configmaps, watcher::Config::default()).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            let name = |cm: ConfigMap| cm.metadata.name.unwrap_or_default();
            let text = match event {
                Ok(Event::Init) => "list".to_string(),
                Ok(Event::InitApply(cm)) => format!("listed {}", name(cm)),
                Ok(Event::InitDone) => "listed".to_string(),
                Ok(Event::Apply(cm)) => format!("apply {}", name(cm)),
                Ok(Event::Delete(cm)) => format!("delete {}", name(cm)),
                Err(_) => continue,
            };
            if events.send(text).is_err() {
                break;
            }
        }
    });
    let next = |n: usize| -> Vec<String> {
        (0..n).map(|_| seen.recv_timeout(Duration::from_secs(30)).expect("a watch event")).collect()
    };
    assert_eq!(next(4), ["list", "listed a", "listed b", "listed"]);
    api.kubectl(&["create", "configmap", "c"]);
    api.kubectl(&["label", "configmap", "a", "x=1"]);
    api.kubectl(&["delete", "configmap", "b"]);
    assert_eq!(next(3), ["apply c", "apply a", "delete b"]);

    // Killed and started again: the watcher carries on from where it was, without a list.
    api.restart_on(home, &[]);
    api.kubectl(&["create", "configmap", "d"]);
    assert_eq!(next(1), ["apply d"]);

    // Changes made while the server is elsewhere, then compacted away.
    let (_, listed) = api.http("GET", "/api/v1/namespaces/default/configmaps", &[], b"");
    let seen_revision = listed["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    api.restart_on(SocketAddr::from(([127, 0, 0, 1], testkit::free_port())), &["--compaction-interval", "1"]);
    api.kubectl(&["create", "configmap", "e"]);
    api.kubectl(&["delete", "configmap", "c"]);
    let gone =
        format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={seen_revision}&timeoutSeconds=1");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !api.http("GET", &gone, &[], b"").1.to_string().contains("410") {
        assert!(std::time::Instant::now() < deadline, "no compaction past {seen_revision}");
        std::thread::sleep(Duration::from_millis(200));
    }
    api.restart_on(home, &[]);
    assert_eq!(next(5), ["list", "listed a", "listed d", "listed e", "listed"]);
    api.kubectl(&["create", "configmap", "f"]);
    assert_eq!(next(1), ["apply f"]);
}

/// kubectl 1.32+ sends its typed creates as protobuf: each arrives whole, with what Go
/// always marshals (zero ports, empty strings) read as unset.
#[test]
fn kubectl_typed_creates_in_protobuf() {
    let api = ApiServer::start(PODCTL, &[]);
    api.kubectl(&["create", "deployment", "web", "--image=nginx", "--port=80", "--replicas=2"]);
    api.kubectl(&["create", "deployment", "idle", "--image=nginx", "--replicas=0"]);
    api.kubectl(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    api.kubectl(&["create", "service", "nodeport", "np", "--tcp=81:http", "--node-port=30081"]);
    api.kubectl(&["create", "serviceaccount", "robot"]);
    let get = |what: &[&str]| -> Value {
        serde_json::from_str(&api.kubectl(&[&["get"], what, &["-o", "json"]].concat())).unwrap()
    };
    let web = get(&["deployment", "web"]);
    assert_eq!(web["spec"]["replicas"], 2);
    assert_eq!(web["spec"]["selector"]["matchLabels"], json!({"app": "web"}));
    let container = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!((&container["name"], &container["image"]), (&json!("nginx"), &json!("nginx")));
    assert_eq!(container["ports"][0]["containerPort"], 80);
    assert!(container["ports"][0].get("hostPort").is_none(), "{container}");
    assert_eq!(get(&["deployment", "idle"])["spec"]["replicas"], 0);
    let service = get(&["service", "web"]);
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}])
    );
    assert!(service["spec"]["clusterIP"].as_str().unwrap().starts_with("10."), "{service}");
    let node_port = get(&["service", "np"]);
    assert_eq!(node_port["spec"]["ports"][0]["nodePort"], 30081);
    assert_eq!(node_port["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(get(&["serviceaccount", "robot"])["metadata"]["name"], "robot");
    // A target port of 0, as Go sends an unset one, is the port itself (kube-apiserver's
    // defaulting).
    let (status, created) = api.http(
        "POST",
        "/api/v1/namespaces/default/services",
        &[("Content-Type", "application/json")],
        br#"{"metadata":{"name":"zero"},"spec":{"ports":[{"port":90,"targetPort":0}]}}"#,
    );
    assert_eq!((status, &created["spec"]["ports"][0]["targetPort"]), (201, &json!(90)), "{created}");
}

/// kubectl learns every resource from the two aggregated discovery documents (`/api` and
/// `/apis`), not from one request per group version.
#[test]
fn kubectl_discovers_through_aggregated_discovery() {
    let api = ApiServer::start(PODCTL, &[]);
    let out = api.kubectl_output(&["api-resources", "-v=6"], None);
    let (stdout, log) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    let row = |name: &str| stdout.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_default();
    assert_eq!(
        row("deployments").split_whitespace().collect::<Vec<_>>(),
        ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    );
    assert_eq!(row("nodes").split_whitespace().collect::<Vec<_>>(), ["nodes", "no", "v1", "false", "Node"]);
    assert!(log.contains("/apis?") && log.contains("/api?"), "{log}");
    assert!(!log.contains("/apis/apps/v1") && !log.contains("/api/v1?"), "asked per group version: {log}");
}

/// Every kubectl on the machine (1.27 to 1.33) drives the server: older ones learn that
/// fields are validated by the server from OpenAPI v2 in protobuf, newer ones from v3 and
/// send protobuf bodies.
#[test]
fn every_kubectl_from_1_27_creates_applies_and_gets() {
    let api = ApiServer::start(PODCTL, &[]);
    let versions: Vec<String> = (27..=33)
        .map(|minor| format!("{KUBECTL_DIR}/kubectl.1.{minor}"))
        .filter(|path| std::path::Path::new(path).exists())
        .collect();
    assert!(versions.len() >= 2 && versions[0].ends_with("1.27"), "kubectl 1.27 to 1.33 expected: {versions:?}");
    for kubectl in &versions {
        let run = |args: &[&str], stdin: &str| -> Output {
            let home = api.dir.path().join(kubectl.rsplit('/').next().unwrap());
            let mut child = Command::new(kubectl)
                .args(args)
                .env("KUBECONFIG", api.kubeconfig())
                .env("HOME", home)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        };
        let namespace = format!("ns{}", kubectl.rsplit('.').next().unwrap());
        for (args, stdin) in [
            (vec!["create", "namespace", &namespace], ""),
            (vec!["-n", &namespace, "create", "deployment", "web", "--image=nginx"], ""),
            (
                vec!["-n", &namespace, "apply", "-f", "-"],
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n",
            ),
        ] {
            let out = run(&args, stdin);
            assert!(out.status.success(), "{kubectl} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let strict = run(
            &["-n", &namespace, "apply", "-f", "-"],
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: d}\nbogus: 1\n",
        );
        let err = String::from_utf8_lossy(&strict.stderr);
        assert!(!strict.status.success() && err.contains("unknown field \"bogus\""), "{kubectl}: {err}");
        let got = run(&["-n", &namespace, "get", "deploy,cm", "-o", "name"], "");
        let names = String::from_utf8_lossy(&got.stdout);
        assert!(names.contains("deployment.apps/web") && names.contains("configmap/c"), "{kubectl}: {names}");
    }
}
