//! `podctl apiserver` driven by the real kubectl (the newest on the machine) and by raw
//! HTTP for what kubectl never sends wrong. Each test starts its own server on a loopback
//! port with a scratch data directory.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    // The API and the namespace controller alone: none to make the Deployment's pods
    // (tests/cluster.rs has them).
    let api = ApiServer::start(PODCTL, &["--controllers=namespace"]);
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
    assert_unchanged_but_the_secret(&second);
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
        r#"{"spec":{"containers":[{"name":"c","image":"busybox:2"}]}}"#,
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
    let container = &pod["spec"]["containers"][0];
    assert_eq!((&container["image"], &container["env"]), (&json!("busybox:2"), &json!([{"name": "A", "value": "1"}])));
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
    let events = serde_json::Deserializer::from_reader(watch.stdout.take().unwrap()).into_iter::<Value>();
    // Every namespace holds kube-root-ca.crt from the start.
    let seen: Vec<String> = events
        .map(|event| {
            let event = event.unwrap();
            format!(
                "{} configmap/{}",
                event["type"].as_str().unwrap(),
                event["object"]["metadata"]["name"].as_str().unwrap()
            )
        })
        .filter(|seen| !seen.ends_with("/kube-root-ca.crt"))
        .take(3)
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

/// A second apply of MANIFEST changes nothing. kubectl says `configured` of the Secret,
/// as it does against kube-apiserver: its `stringData` is merged into `data` and never
/// stored, so kubectl always finds it missing.
fn assert_unchanged_but_the_secret(output: &str) {
    for line in output.lines() {
        let expected = if line.starts_with("secret/") { " configured" } else { " unchanged" };
        assert!(line.ends_with(expected), "{output}");
    }
}

#[test]
fn kubectl_works_the_same_on_the_etcd_backend() {
    let etcd = testkit::etcd::Etcd::start();
    let api = ApiServer::start(PODCTL, &["--etcd-endpoints", &etcd.endpoint, "--controllers="]);
    let first = api.kubectl_stdin(&["apply", "-f", "-"], MANIFEST);
    assert!(first.contains("deployment.apps/web created"), "{first}");
    let second = api.kubectl_stdin(&["apply", "-f", "-"], MANIFEST);
    assert_unchanged_but_the_secret(&second);
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

/// Authenticated by default, as k3s: at first start the server makes a certificate
/// authority and an admin token (root's alone), serves HTTPS, and writes a kubeconfig that
/// trusts the one and carries the other. A wrong token gets 401; no token is the anonymous
/// user, whom RBAC lets read health checks and the version only (403 otherwise).
#[test]
fn https_and_a_token_by_default_and_health_checks_for_anyone() {
    let api = ApiServer::start(PODCTL, &[]);
    let kubeconfig = std::fs::read_to_string(api.kubeconfig()).unwrap();
    assert!(kubeconfig.contains("\"server\": \"https://127.0.0.1:"), "{kubeconfig}");
    assert!(api.kubectl(&["get", "namespaces", "-o", "name"]).contains("namespace/default"));
    let (status, body) = api.http_anonymous("GET", "/api/v1/namespaces");
    assert_eq!((status, body["kind"].as_str(), body["reason"].as_str()), (403, Some("Status"), Some("Forbidden")));
    assert_eq!(
        body["message"],
        "namespaces is forbidden: User \"system:anonymous\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
    );
    assert_eq!(api.http_anonymous("GET", "/apis").0, 403);
    let (status, _) = api.http("GET", "/api/v1/namespaces", &[("Authorization", "Bearer wrong")], b"");
    assert_eq!(status, 401);
    let err = api.kubectl_fails(&["get", "--raw", "/api/v1/namespaces", "--token", "wrong"]);
    assert!(err.contains("Unauthorized") || err.contains("provide credentials"), "{err}");
    for path in ["/healthz", "/livez", "/readyz", "/version"] {
        assert_eq!(api.http_anonymous("GET", path).0, 200, "{path}");
    }
    // Plain HTTP is not served.
    let mut plain = std::net::TcpStream::connect(api.addr).unwrap();
    std::io::Write::write_all(&mut plain, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
    // The credentials are root's alone.
    use std::os::unix::fs::PermissionsExt;
    for file in ["kubeconfig", "apiserver/tokens.csv", "apiserver/pki/ca.key", "apiserver/state.db"] {
        let mode = std::fs::metadata(api.dir.path().join(file)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    // Started again: the same authority and token, so the kubeconfig still works.
    let mut api = api;
    api.restart_on(api.addr, &[]);
    assert_eq!(std::fs::read_to_string(api.kubeconfig()).unwrap(), kubeconfig);
    assert!(api.kubectl(&["get", "namespaces", "-o", "name"]).contains("namespace/default"));
}

#[test]
fn a_certificate_and_token_file_of_ones_own_or_none_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, tokens) = (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("tokens.csv"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=podctl", "-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(&tokens, "s3cret-token,admin,1,\"system:masters\"\n").unwrap();
    let (cert, key, tokens) = (cert.to_str().unwrap(), key.to_str().unwrap(), tokens.to_str().unwrap());
    let api =
        ApiServer::start(PODCTL, &["--token-file", tokens, "--tls-cert-file", cert, "--tls-private-key-file", key]);
    assert!(api.kubectl(&["get", "namespaces", "-o", "name"]).contains("namespace/default"));
    assert_eq!(api.access().token.as_deref(), Some("s3cret-token"));
    assert_eq!(api.http_anonymous("GET", "/api/v1/namespaces").0, 403);
    // --allow-unauthenticated: plain HTTP, anyone is admin.
    let open = ApiServer::start(PODCTL, &["--allow-unauthenticated"]);
    assert!(std::fs::read_to_string(open.kubeconfig()).unwrap().contains("\"server\": \"http://"));
    assert_eq!(open.http_anonymous("GET", "/api/v1/namespaces").0, 200);
}

/// One server per data directory: a second one would rewrite the first one's kubeconfig.
#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let api = ApiServer::start(PODCTL, &[]);
    let out = Command::new(PODCTL)
        .arg("--data-dir")
        .arg(api.dir.path())
        .args(["apiserver", "--listen", &format!("127.0.0.1:{}", testkit::free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is in use by another podctl apiserver"), "{err}");
}

/// Labels and annotations are checked as kube-apiserver checks them, on objects and on
/// pod templates.
#[test]
fn labels_and_annotations_are_validated() {
    let api = ApiServer::start(PODCTL, &[]);
    let create =
        |body: Value| api.http("POST", "/api/v1/namespaces/default/configmaps", &[], body.to_string().as_bytes());
    let (status, body) = create(json!({"metadata": {"name": "a", "labels": {"x/y/z": "v"}}}));
    assert_eq!(status, 422, "{body}");
    let cause = &body["details"]["causes"][0];
    assert_eq!(cause["field"], "metadata.labels");
    assert!(cause["message"].as_str().unwrap().contains("a qualified name must consist of"), "{body}");
    let (status, body) = create(json!({"metadata": {"name": "a", "labels": {"k": "nul\u{0}"}}}));
    assert_eq!((status, body["details"]["causes"][0]["field"].as_str()), (422, Some("metadata.labels[k]")), "{body}");
    let (status, _) = create(json!({"metadata": {"name": "a", "annotations": {"-bad": "v"}}}));
    assert_eq!(status, 422);
    let (status, _) = create(json!({"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "web"}}}));
    assert_eq!(status, 201);
    let deployment = json!({
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b", "bad key": "x"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    });
    let (status, body) =
        api.http("POST", "/apis/apps/v1/namespaces/default/deployments", &[], deployment.to_string().as_bytes());
    assert_eq!(
        (status, body["details"]["causes"][0]["field"].as_str()),
        (422, Some("spec.template.metadata.labels")),
        "{body}"
    );
}

/// On etcd the server stops at SIGTERM without a panic (the etcd client's runtime once
/// panicked when dropped inside the server's), and a busy port is named as such.
#[test]
fn on_etcd_the_server_stops_cleanly_and_names_a_busy_port() {
    let etcd = testkit::etcd::Etcd::start();
    let mut api = ApiServer::start(PODCTL, &["--etcd-endpoints", &etcd.endpoint]);
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(PODCTL)
        .arg("--data-dir")
        .arg(other.path())
        .args(["apiserver", "--listen", &api.addr.to_string(), "--etcd-endpoints", &etcd.endpoint])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Address already in use") && !err.contains("panicked"), "{err}");
    // SAFETY: signalling the server this test started.
    unsafe { libc::kill(api.child.id() as i32, libc::SIGTERM) };
    let status = api.child.wait().unwrap();
    let log = std::fs::read_to_string(api.dir.path().join("apiserver.log")).unwrap();
    assert!(status.success() && !log.contains("panicked"), "{status}: {log}");
}

/// A client that hangs up while the server writes its answer costs the server that write
/// (EPIPE), never its life (SIGPIPE ends a process that does not ignore it).
#[test]
fn a_client_that_hangs_up_mid_answer_leaves_the_server_serving() {
    let api = ApiServer::start(PODCTL, &[]);
    let access = api.access();
    let mut connection = access.connect();
    let pad = "x".repeat(100_000);
    for i in 0..40 {
        let body = format!(r#"{{"metadata":{{"name":"big-{i}"}},"data":{{"pad":"{pad}"}}}}"#);
        assert_eq!(connection.request("POST", "/api/v1/namespaces/default/configmaps", body.as_bytes()).0, 201);
    }
    for _ in 0..20 {
        let mut gone = access.connect();
        gone.write_request("GET", "/api/v1/namespaces/default/configmaps", &[], b"");
        let _ = gone.reader.get_ref().tcp().shutdown(std::net::Shutdown::Both);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(api.http("GET", "/api/v1/namespaces/default/configmaps/big-0", &[], b"").0, 200);
}

/// A client that sends its headers a byte at a time, or sends nothing, is cut off after
/// the header read timeout (10 s), not held on to.
#[test]
fn a_slow_client_is_cut_off() {
    let api = ApiServer::start(PODCTL, &[]);
    let start = Instant::now();
    let idle = std::net::TcpStream::connect(api.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut slow = api.access().stream();
    let dripper = std::thread::spawn(move || {
        for byte in b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nX-Padding: ".iter().chain(b"a".repeat(60).iter()) {
            if std::io::Write::write_all(&mut slow, &[*byte]).and_then(|()| std::io::Write::flush(&mut slow)).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    });
    let mut buf = [0u8; 1];
    let closed = std::io::Read::read(&mut &idle, &mut buf);
    assert!(matches!(closed, Ok(0) | Err(_)), "the idle connection was answered");
    assert!(start.elapsed() < Duration::from_secs(20), "held {:?}", start.elapsed());
    assert!(dripper.join().unwrap(), "the slow client was never cut off");
    assert!(start.elapsed() < Duration::from_secs(25), "held {:?}", start.elapsed());
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
    assert_eq!(names, ["cc", "kube-root-ca.crt", "p0", "p1", "p2", "p3", "p4"]);
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
    let access = api.access();
    let watch = || {
        let mut connection = access.connect();
        connection.write_request("GET", "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=60", &[], b"");
        connection
    };
    // One watcher never reads a byte; another counts what it gets.
    let stalled = watch();
    let mut reader = watch();
    std::thread::sleep(Duration::from_millis(300));
    const WRITES: usize = 3000;
    // The watch lists kube-root-ca.crt first, then sees each write.
    const EVENTS: usize = WRITES + 1;
    let counter = std::thread::spawn(move || {
        reader.reader.get_ref().tcp().set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        const ADDED: &[u8] = b"\"type\":\"ADDED\"";
        let (mut seen, mut tail, mut chunk) = (0, Vec::new(), [0u8; 65536]);
        while seen < EVENTS {
            let n = reader.reader.read(&mut chunk).expect("events keep coming");
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
    let mut connection = access.connect();
    for i in 0..WRITES {
        let body = format!(r#"{{"metadata":{{"name":"cm-{i}"}},"data":{{"pad":"{big}"}}}}"#);
        let (status, _) = connection.request("POST", "/api/v1/namespaces/default/configmaps", body.as_bytes());
        assert_eq!(status, 201);
    }
    assert_eq!(counter.join().unwrap(), EVENTS);
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
                Ok(Event::InitApply(cm)) if name(cm.clone()) == "kube-root-ca.crt" => continue,
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
        let run = |args: &[&str], stdin: &str| -> Output { api.kubectl_output_of(kubectl, args, Some(stdin)) };
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
