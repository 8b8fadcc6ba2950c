//! The API server's semantics where real clients meet them — what kube-apiserver 1.33
//! answers, through kubectl and raw HTTP: DeleteOptions, Secret stringData, defaults,
//! update validation, strategic merge patch ordering, protobuf and YAML answers, 404s,
//! the scale subresource, watches with selectors, schemas for `kubectl explain`, field
//! selectors, and a server restarted on a full disk. Each test starts its own server.

use std::io::{BufRead, Read};
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use testkit::apiserver::{Access, ApiServer};

const PODCTL: &str = env!("CARGO_BIN_EXE_podctl");
const JSON: [(&str, &str); 1] = [("Content-Type", "application/json")];
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

fn post(api: &ApiServer, path: &str, object: Value) -> (u16, Value) {
    api.http("POST", path, &JSON, object.to_string().as_bytes())
}

fn get(api: &ApiServer, path: &str) -> (u16, Value) {
    api.http("GET", path, &[], b"")
}

/// Protobuf's length-delimited field `number`.
fn field(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = varint(u64::from(number) << 3 | 2);
    out.extend(varint(bytes.len() as u64));
    out.extend_from_slice(bytes);
    out
}

fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// `object` (protobuf bytes) in the `k8s\0` envelope naming its type.
fn envelope(api_version: &str, kind: &str, object: &[u8]) -> Vec<u8> {
    let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
    [b"k8s\0".to_vec(), field(1, &type_meta), field(2, object)].concat()
}

#[test]
fn delete_options_in_the_body_are_honoured() {
    let api = ApiServer::start(PODCTL, &[]);
    for name in ["a", "b", "c"] {
        post(&api, "/api/v1/namespaces/default/configmaps", json!({"metadata": {"name": name}}));
    }
    let cm = |name: &str| get(&api, &format!("/api/v1/namespaces/default/configmaps/{name}"));
    let delete = |path: &str, body: Value| api.http("DELETE", path, &JSON, body.to_string().as_bytes());

    // kubectl sends dryRun in the body.
    let out = api.kubectl(&["delete", "configmap", "a", "--dry-run=server"]);
    assert_eq!(out, "configmap \"a\" deleted (server dry run)\n");
    assert_eq!(cm("a").0, 200);
    let (status, _) = delete("/api/v1/namespaces/default/configmaps", json!({"dryRun": ["All"]}));
    assert_eq!(status, 200);
    let (_, list) = get(&api, "/api/v1/namespaces/default/configmaps");
    assert_eq!(list["items"].as_array().unwrap().len(), 3 + 1, "a, b, c and kube-root-ca.crt: {list}");

    // Preconditions.
    let (status, body) = delete("/api/v1/namespaces/default/configmaps/a", json!({"preconditions": {"uid": "nope"}}));
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("Precondition failed: UID in precondition: nope"), "{body}");
    let (status, _) =
        delete("/api/v1/namespaces/default/configmaps/a", json!({"preconditions": {"resourceVersion": "1"}}));
    assert_eq!(status, 409);
    let uid = cm("a").1["metadata"]["uid"].as_str().unwrap().to_string();
    let (status, _) = delete("/api/v1/namespaces/default/configmaps/a", json!({"preconditions": {"uid": uid}}));
    assert_eq!(status, 200);
    assert_eq!(cm("a").0, 404);

    // propagationPolicy: Foreground waits for the dependents (the garbage collector's
    // finalizer), a bad one is refused.
    let (status, body) = delete("/api/v1/namespaces/default/configmaps/b", json!({"propagationPolicy": "Sideways"}));
    assert_eq!(status, 422, "{body}");
    let (status, body) = delete("/api/v1/namespaces/default/configmaps/b", json!({"propagationPolicy": "Foreground"}));
    assert_eq!(status, 202, "{body}");
    let (_, b) = cm("b");
    assert_eq!(b["metadata"]["finalizers"], json!(["foregroundDeletion"]), "{b}");
    assert!(b["metadata"]["deletionTimestamp"].is_string(), "{b}");

    // The same options in protobuf, as typed clients (kubectl drain) send them.
    let dry_run = envelope("v1", "DeleteOptions", &field(5, b"All"));
    let headers = [("Content-Type", PROTOBUF)];
    let (status, _) = api.http("DELETE", "/api/v1/namespaces/default/configmaps/c", &headers, &dry_run);
    assert_eq!(status, 200);
    assert_eq!(cm("c").0, 200);
    let stale = envelope("v1", "DeleteOptions", &field(2, &field(1, b"nope")));
    let (status, _) = api.http("DELETE", "/api/v1/namespaces/default/configmaps/c", &headers, &stale);
    assert_eq!(status, 409);
    assert_eq!(cm("c").0, 200);
}

/// A deleted namespace is emptied by the namespace controller through ordinary deletes:
/// a pod bound to a node is deleted gracefully (its node stops it), an object with a
/// finalizer waits for it, and the namespace stays Terminating, saying what remains,
/// until nothing does. The three system namespaces may not be deleted.
#[test]
fn a_deleted_namespace_waits_for_its_content() {
    let api = ApiServer::start(PODCTL, &[]);
    api.kubectl(&["create", "namespace", "shop"]);
    let kept = json!({"metadata": {"name": "kept", "finalizers": ["example.com/keep"]}});
    assert_eq!(post(&api, "/api/v1/namespaces/shop/configmaps", kept).0, 201);
    let pod = json!({"metadata": {"name": "bound"}, "spec": {"nodeName": "elsewhere",
        "containers": [{"name": "c", "image": "busybox"}]}});
    assert_eq!(post(&api, "/api/v1/namespaces/shop/pods", pod).0, 201);
    assert_eq!(post(&api, "/api/v1/namespaces/shop/secrets", json!({"metadata": {"name": "plain"}})).0, 201);

    let out = api.kubectl(&["delete", "namespace", "shop", "--wait=false"]);
    assert_eq!(out, "namespace \"shop\" deleted\n");
    let condition = |kind: &str| {
        let (_, namespace) = get(&api, "/api/v1/namespaces/shop");
        let conditions = namespace["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conditions.into_iter().find(|c| c["type"] == kind).map(|c| c["message"].as_str().unwrap_or("").to_string())
    };
    let remaining =
        "Some resources are remaining: configmaps. has 1 resource instances, pods. has 1 resource instances";
    testkit::eventually("the namespace says what remains", 20, || {
        condition("NamespaceContentRemaining").as_deref() == Some(remaining)
    });
    assert_eq!(
        condition("NamespaceFinalizersRemaining").as_deref(),
        Some("Some content in the namespace has finalizers remaining: example.com/keep in 1 resource instances")
    );
    let (_, namespace) = get(&api, "/api/v1/namespaces/shop");
    assert_eq!(namespace["status"]["phase"], "Terminating", "{namespace}");
    assert_eq!(get(&api, "/api/v1/namespaces/shop/secrets/plain").0, 404);
    let (_, pod) = get(&api, "/api/v1/namespaces/shop/pods/bound");
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 30, "{pod}");
    let (_, kept) = get(&api, "/api/v1/namespaces/shop/configmaps/kept");
    assert!(kept["metadata"]["deletionTimestamp"].is_string(), "{kept}");
    let refused = api.kubectl_fails(&["create", "configmap", "late", "-n", "shop"]);
    assert!(refused.contains("because it is being terminated"), "{refused}");

    // The node confirms (grace 0), the finalizer's owner lets go: the namespace goes.
    api.kubectl(&["delete", "pod", "bound", "-n", "shop", "--grace-period=0", "--force"]);
    api.kubectl(&[
        "patch",
        "configmap",
        "kept",
        "-n",
        "shop",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    testkit::eventually("the emptied namespace goes", 20, || get(&api, "/api/v1/namespaces/shop").0 == 404);

    for system in ["default", "kube-system", "kube-public"] {
        let refused = api.kubectl_fails(&["delete", "namespace", system]);
        assert!(refused.contains("this namespace may not be deleted"), "{refused}");
    }
}

#[test]
fn secret_string_data_is_merged_into_data() {
    let api = ApiServer::start(PODCTL, &[]);
    let secret = json!({"metadata": {"name": "s"}, "data": {"b": "b2xk", "c": "Yw=="},
                        "stringData": {"a": "hello", "b": "new"}});
    let (status, made) = post(&api, "/api/v1/namespaces/default/secrets", secret);
    assert_eq!(status, 201, "{made}");
    let expected = json!({"a": "aGVsbG8=", "b": "bmV3", "c": "Yw=="});
    assert_eq!((&made["data"], made.get("stringData")), (&expected, None), "{made}");
    let (_, stored) = get(&api, "/api/v1/namespaces/default/secrets/s");
    assert_eq!((&stored["data"], stored.get("stringData")), (&expected, None), "{stored}");
    let mut updated = stored.clone();
    updated["stringData"] = json!({"d": "more"});
    let (status, updated) =
        api.http("PUT", "/api/v1/namespaces/default/secrets/s", &JSON, updated.to_string().as_bytes());
    assert_eq!((status, &updated["data"]["d"], updated.get("stringData")), (200, &json!("bW9yZQ=="), None));
}

#[test]
fn objects_get_kube_apiservers_defaults() {
    let api = ApiServer::start(PODCTL, &[]);
    let pods = "/api/v1/namespaces/default/pods";
    let limits = json!({"limits": {"cpu": "1", "memory": "1Gi"}});
    let (status, pod) = post(
        &api,
        pods,
        json!({"metadata": {"name": "p"}, "status": {},
               "spec": {"containers": [{"name": "c", "image": "busybox"},
                                       {"name": "d", "image": "busybox:1.36", "resources": limits}]}}),
    );
    assert_eq!(status, 201, "{pod}");
    let spec = &pod["spec"];
    let defaults = [
        "restartPolicy",
        "dnsPolicy",
        "schedulerName",
        "securityContext",
        "enableServiceLinks",
        "terminationGracePeriodSeconds",
        "serviceAccountName",
        "priority",
        "preemptionPolicy",
    ];
    assert_eq!(
        defaults.map(|key| spec[key].clone()),
        [
            json!("Always"),
            json!("ClusterFirst"),
            json!("default-scheduler"),
            json!({}),
            json!(true),
            json!(30),
            json!("default"),
            json!(0),
            json!("PreemptLowerPriority")
        ],
        "{pod}"
    );
    assert_eq!(
        spec["tolerations"],
        json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
               {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}])
    );
    let c = &spec["containers"][0];
    assert_eq!(
        (&c["imagePullPolicy"], &c["terminationMessagePath"], &c["terminationMessagePolicy"]),
        (&json!("Always"), &json!("/dev/termination-log"), &json!("File"))
    );
    let d = &spec["containers"][1];
    assert_eq!((&d["imagePullPolicy"], &d["resources"]["requests"]), (&json!("IfNotPresent"), &limits["limits"]));
    assert_eq!((&pod["status"]["phase"], &pod["status"]["qosClass"]), (&json!("Pending"), &json!("Burstable")));
    let qos = |name: &str, resources: Value| {
        let container = json!({"name": "c", "image": "busybox", "resources": resources});
        let (_, pod) = post(&api, pods, json!({"metadata": {"name": name}, "spec": {"containers": [container]}}));
        pod["status"]["qosClass"].clone()
    };
    assert_eq!(qos("guaranteed", limits.clone()), "Guaranteed");
    assert_eq!(qos("besteffort", json!({})), "BestEffort");

    let (_, deployment) = post(
        &api,
        "/apis/apps/v1/namespaces/default/deployments",
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
               "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    );
    let spec = &deployment["spec"];
    assert_eq!(
        (&spec["replicas"], &spec["revisionHistoryLimit"], &spec["progressDeadlineSeconds"], &spec["strategy"]),
        (
            &json!(1),
            &json!(10),
            &json!(600),
            &json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        ),
        "{deployment}"
    );
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");

    let (_, service) = post(
        &api,
        "/api/v1/namespaces/default/services",
        json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
    );
    let spec = &service["spec"];
    let defaults =
        ["sessionAffinity", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy", "externalTrafficPolicy"];
    assert_eq!(
        defaults.map(|key| spec[key].clone()),
        [json!("None"), json!(["IPv4"]), json!("SingleStack"), json!("Cluster"), json!("Cluster")],
        "{service}"
    );
    assert_eq!((&spec["ports"][0]["protocol"], &spec["ports"][0]["targetPort"]), (&json!("TCP"), &json!(80)));
    assert_eq!(spec["clusterIPs"], json!([spec["clusterIP"]]));

    // Go marshals an unset metav1.Time as an empty message: no time, not 1970.
    let meta = field(1, b"e");
    let involved = [field(1, b"Pod"), field(3, b"p")].concat();
    let event = [field(1, &meta), field(2, &involved), field(3, b"Started"), field(6, b""), field(7, b"")].concat();
    let body = envelope("v1", "Event", &event);
    let (status, made) = api.http("POST", "/api/v1/namespaces/default/events", &[("Content-Type", PROTOBUF)], &body);
    assert_eq!(status, 201, "{made}");
    assert!(made["firstTimestamp"].is_null() && made["lastTimestamp"].is_null(), "{made}");
}

#[test]
fn updates_are_validated_as_kube_apiserver_validates_them() {
    let api = ApiServer::start(PODCTL, &[]);
    let patch = |args: &[&str]| api.kubectl_output(&[&["patch"], args].concat(), None);
    let refused = |args: &[&str], why: &str| {
        let out = patch(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(why), "{args:?}: {stderr}");
    };
    let deployment = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let mut unmatched = deployment.clone();
    unmatched["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let (status, body) = post(&api, "/apis/apps/v1/namespaces/default/deployments", unmatched);
    assert_eq!(status, 422);
    assert!(body["message"].as_str().unwrap().contains("`selector` does not match template `labels`"), "{body}");
    post(&api, "/apis/apps/v1/namespaces/default/deployments", deployment);
    refused(
        &[
            "deployment",
            "web",
            "-p",
            r#"{"spec":{"selector":{"matchLabels":{"app":"x"}},"template":{"metadata":{"labels":{"app":"x"}}}}}"#,
        ],
        "field is immutable",
    );

    post(
        &api,
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "frozen"}, "data": {"a": "1"}, "immutable": true}),
    );
    refused(&["configmap", "frozen", "-p", r#"{"data":{"a":"2"}}"#], "field is immutable when `immutable` is set");
    refused(&["configmap", "frozen", "-p", r#"{"immutable":false}"#], "field is immutable when `immutable` is set");
    post(&api, "/api/v1/namespaces/default/secrets", json!({"metadata": {"name": "frozen"}, "immutable": true}));
    refused(&["secret", "frozen", "-p", r#"{"data":{"a":"Mg=="}}"#], "field is immutable when `immutable` is set");

    post(
        &api,
        "/api/v1/namespaces/default/pods",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1"]}]}}),
    );
    refused(
        &["pod", "p", "-p", r#"{"spec":{"containers":[{"name":"c","command":["sleep","2"]}]}}"#],
        "pod updates may not change fields",
    );
    assert!(
        patch(&["pod", "p", "-p", r#"{"spec":{"containers":[{"name":"c","image":"busybox:2"}]}}"#]).status.success()
    );
    assert!(patch(&["pod", "p", "-p", r#"{"spec":{"activeDeadlineSeconds":60}}"#]).status.success());
    // Tolerations may be added (a strategic merge would replace the list: JSON patch).
    let toleration = r#"[{"op":"add","path":"/spec/tolerations/-","value":{"key":"k","operator":"Exists"}}]"#;
    assert!(patch(&["pod", "p", "--type=json", "-p", toleration]).status.success());
    refused(
        &["pod", "p", "--type=json", "-p", r#"[{"op":"remove","path":"/spec/tolerations/0"}]"#],
        "only additions to existing tolerations",
    );
    // A uid in a patch is a precondition; a different one in a whole object is refused.
    refused(
        &["pod", "p", "--type=merge", "-p", r#"{"metadata":{"uid":"x"}}"#],
        "Precondition failed: UID in precondition: x",
    );
    let (_, mut pod) = get(&api, "/api/v1/namespaces/default/pods/p");
    pod["metadata"]["uid"] = "y".into();
    let (status, body) = api.http("PUT", "/api/v1/namespaces/default/pods/p", &JSON, pod.to_string().as_bytes());
    assert!(status == 409 || status == 422, "{body}");

    // A Service's cluster IP stays; its node port goes when its type no longer has one.
    let node_port = |name: &str| {
        post(
            &api,
            "/api/v1/namespaces/default/services",
            json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}}),
        )
    };
    assert_eq!(node_port("a").0, 201);
    let (status, body) = node_port("b");
    assert!(
        status == 422 && body["message"].as_str().unwrap().contains("provided port is already allocated"),
        "{body}"
    );
    refused(
        &["service", "a", "-p", r#"{"spec":{"clusterIP":"10.96.0.99","clusterIPs":["10.96.0.99"]}}"#],
        "may not change once set",
    );
    assert!(patch(&["service", "a", "-p", r#"{"spec":{"type":"ClusterIP"}}"#]).status.success());
    let (_, a) = get(&api, "/api/v1/namespaces/default/services/a");
    assert!(a["spec"]["ports"][0].get("nodePort").is_none(), "{a}");
    assert_eq!(node_port("b").0, 201);

    // A Local load balancer's health check port: given, kept by an update that leaves it
    // (and the node ports) out, a taken one refused as kube-apiserver does (500).
    let (status, lb) = post(
        &api,
        "/api/v1/namespaces/default/services",
        json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}}),
    );
    assert_eq!(status, 201, "{lb}");
    let given = (lb["spec"]["healthCheckNodePort"].clone(), lb["spec"]["ports"][0]["nodePort"].clone());
    assert!(given.0.is_u64() && given.1.is_u64(), "{lb}");
    let mut replaced = lb.clone();
    replaced["spec"].as_object_mut().unwrap().remove("healthCheckNodePort");
    replaced["spec"]["ports"][0].as_object_mut().unwrap().remove("nodePort");
    let path = "/api/v1/namespaces/default/services/lb";
    let (status, body) = api.http("PUT", path, &JSON, replaced.to_string().as_bytes());
    assert_eq!(status, 200, "{body}");
    let (_, lb) = get(&api, path);
    assert_eq!((lb["spec"]["healthCheckNodePort"].clone(), lb["spec"]["ports"][0]["nodePort"].clone()), given);
    let (status, body) = post(
        &api,
        "/api/v1/namespaces/default/services",
        json!({"metadata": {"name": "lb2"}, "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
               "healthCheckNodePort": given.0, "ports": [{"port": 80}]}}),
    );
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        status == 500
            && message.contains(&format!(
                "failed to allocate requested HealthCheck NodePort {}: provided port is already allocated",
                given.0
            )),
        "{status} {body}"
    );
}

#[test]
fn kubectl_apply_converges_when_lists_are_reordered() {
    let api = ApiServer::start(PODCTL, &[]);
    let manifest = |first: &str, second: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  \
             template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      \
             - {{name: {first}, image: busybox, env: [{{name: E1, value: '1'}}, {{name: E2, value: '2'}}]}}\n      \
             - {{name: {second}, image: busybox}}\n"
        )
    };
    assert_eq!(api.kubectl_stdin(&["apply", "-f", "-"], &manifest("a", "b")), "deployment.apps/web created\n");
    assert_eq!(api.kubectl_stdin(&["apply", "-f", "-"], &manifest("b", "a")), "deployment.apps/web configured\n");
    assert_eq!(api.kubectl_stdin(&["apply", "-f", "-"], &manifest("b", "a")), "deployment.apps/web unchanged\n");
    let names = api.kubectl(&["get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[*].name}"]);
    assert_eq!(names, "b a");
    let reordered = manifest("b", "a").replace(
        "[{name: E1, value: '1'}, {name: E2, value: '2'}]",
        "[{name: E2, value: '2'}, {name: E1, value: '1'}]",
    );
    assert_eq!(api.kubectl_stdin(&["apply", "-f", "-"], &reordered), "deployment.apps/web configured\n");
    assert_eq!(api.kubectl_stdin(&["apply", "-f", "-"], &reordered), "deployment.apps/web unchanged\n");
}

#[test]
fn answers_in_protobuf_yaml_and_partial_metadata_when_asked() {
    let api = ApiServer::start(PODCTL, &[]);
    post(
        &api,
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "cm", "labels": {"a": "b"}}, "data": {"k": "v"}}),
    );
    let mut connection = api.access().connect();
    let (status, headers, body) =
        connection.send("GET", "/api/v1/namespaces/default/configmaps/cm", &[("Accept", PROTOBUF)], b"");
    let content_type = headers.iter().find(|(n, _)| n == "content-type").map(|(_, v)| v.as_str());
    assert_eq!((status, content_type), (200, Some(PROTOBUF)));
    assert!(body.starts_with(b"k8s\0") && body.windows(2).any(|w| w == b"cm"), "{body:?}");
    let (status, _, body) =
        connection.send("GET", "/api/v1/namespaces/default/configmaps", &[("Accept", PROTOBUF)], b"");
    assert!(status == 200 && body.starts_with(b"k8s\0") && body.windows(9).any(|w| w == b"ConfigMap"));

    let (status, headers, body) =
        connection.send("GET", "/api/v1/namespaces/default/configmaps/cm", &[("Accept", "application/yaml")], b"");
    let content_type = headers.iter().find(|(n, _)| n == "content-type").map(|(_, v)| v.as_str());
    assert_eq!((status, content_type), (200, Some("application/yaml")));
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("kind: ConfigMap") && text.contains("k: v"), "{text}");

    let partial = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    let (_, _, body) = connection.send("GET", "/api/v1/namespaces/default/configmaps", &[("Accept", partial)], b"");
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((&list["kind"], &list["apiVersion"]), (&json!("PartialObjectMetadataList"), &json!("meta.k8s.io/v1")));
    let item = list["items"].as_array().unwrap().iter().find(|i| i["metadata"]["name"] == "cm").unwrap();
    assert_eq!((&item["kind"], item.get("data")), (&json!("PartialObjectMetadata"), None), "{item}");
    assert_eq!(item["metadata"]["labels"], json!({"a": "b"}));
}

#[test]
fn unknown_resources_are_not_found() {
    let api = ApiServer::start(PODCTL, &[]);
    for (method, path) in [
        ("GET", "/api/v1/namespaces/default/widgets"),
        ("POST", "/api/v1/namespaces/default/widgets"),
        ("GET", "/apis/apps/v1/namespaces/default/widgets/w"),
        ("GET", "/api/v1/namespaces/default/configmaps/x/widgets"),
        ("GET", "/apis/nowhere.example.com/v1/widgets"),
    ] {
        let (status, body) = api.http(method, path, &JSON, b"{}");
        assert_eq!((status, &body["reason"]), (404, &json!("NotFound")), "{method} {path}: {body}");
    }
    let described = api.kubectl(&["describe", "namespace", "default"]);
    assert!(described.contains("Status:       Active"), "{described}");
}

#[test]
fn the_scale_subresource_is_autoscaling_v1() {
    let api = ApiServer::start(PODCTL, &[]);
    post(
        &api,
        "/apis/apps/v1/namespaces/default/deployments",
        json!({"metadata": {"name": "web"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
               "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    );
    let (status, scale) = get(&api, "/apis/apps/v1/namespaces/default/deployments/web/scale");
    assert_eq!(status, 200);
    assert_eq!(
        (&scale["apiVersion"], &scale["kind"], &scale["spec"]["replicas"], &scale["status"]["selector"]),
        (&json!("autoscaling/v1"), &json!("Scale"), &json!(2), &json!("app=web")),
        "{scale}"
    );
    let out = api.kubectl(&["scale", "deployment", "web", "--current-replicas=2", "--replicas=3"]);
    assert_eq!(out, "deployment.apps/web scaled\n");
    let err = api.kubectl_fails(&["scale", "deployment", "web", "--current-replicas=2", "--replicas=4"]);
    assert!(err.contains("Expected replicas to be 2, was 3"), "{err}");
    assert_eq!(api.kubectl(&["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]), "3");
}

/// The events of a watch that ends by itself (`timeoutSeconds`), while `act` runs.
fn watch_while(api: &ApiServer, path: &str, act: impl FnOnce()) -> Vec<Value> {
    let mut connection = api.access().connect();
    connection.write_request("GET", path, &[], b"");
    let (status, _) = connection.read_head();
    assert_eq!(status, 200);
    act();
    let mut events = Vec::new();
    loop {
        let mut size = String::new();
        connection.reader.read_line(&mut size).unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let mut chunk = vec![0; size + 2];
        connection.reader.read_exact(&mut chunk).unwrap();
        if size == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&chunk[..size]).into_owned();
        events.extend(text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    events
}

fn summary(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{} {}", e["type"].as_str().unwrap(), e["object"]["metadata"]["name"].as_str().unwrap_or("")))
        .collect()
}

#[test]
fn a_watch_with_a_selector_sees_objects_come_and_go() {
    // No scheduler: it would mark the node-less pod unschedulable (one more MODIFIED).
    let api = ApiServer::start(PODCTL, &["--controllers=*,-scheduler"]);
    let events = watch_while(
        &api,
        "/api/v1/namespaces/default/configmaps?watch=true&labelSelector=app%3Dweb&timeoutSeconds=3",
        || {
            api.kubectl(&["create", "configmap", "a"]);
            api.kubectl(&["label", "configmap", "a", "app=web"]);
            api.kubectl(&["label", "configmap", "a", "tier=front"]);
            api.kubectl(&["label", "configmap", "a", "app=db", "--overwrite"]);
            api.kubectl(&["label", "configmap", "a", "app=web", "--overwrite"]);
            api.kubectl(&["delete", "configmap", "a"]);
        },
    );
    assert_eq!(summary(&events), ["ADDED a", "MODIFIED a", "DELETED a", "ADDED a", "DELETED a"]);
    // DELETED carries the object as it last matched... as kube-apiserver's cacher does:
    // the object as it is now, which no longer matches.
    assert_eq!(events[2]["object"]["metadata"]["labels"]["app"], "db");

    post(
        &api,
        "/api/v1/namespaces/default/pods",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    );
    let events = watch_while(
        &api,
        "/api/v1/namespaces/default/pods?watch=true&fieldSelector=status.phase%3DPending&timeoutSeconds=2",
        || {
            let status = json!({"status": {"phase": "Running"}});
            api.http(
                "PATCH",
                "/api/v1/namespaces/default/pods/p/status",
                &[("Content-Type", "application/merge-patch+json")],
                status.to_string().as_bytes(),
            );
        },
    );
    assert_eq!(summary(&events), ["ADDED p", "DELETED p"]);
}

#[test]
fn a_watch_of_initial_events_ends_them_with_a_bookmark() {
    let api = ApiServer::start(PODCTL, &[]);
    for name in ["a", "b"] {
        post(&api, "/api/v1/namespaces/default/configmaps", json!({"metadata": {"name": name, "labels": {"x": "y"}}}));
    }
    let path = "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan\
                &allowWatchBookmarks=true&labelSelector=x%3Dy&timeoutSeconds=1";
    let events = watch_while(&api, path, || {});
    assert_eq!(summary(&events)[..3], ["ADDED a", "ADDED b", "BOOKMARK "]);
    let bookmark = &events[2]["object"];
    assert_eq!(bookmark["metadata"]["annotations"]["k8s.io/initial-events-end"], "true", "{bookmark}");
    assert!(bookmark["metadata"]["resourceVersion"].as_str().is_some_and(|v| !v.is_empty()));
}

#[test]
fn kubectl_explain_finds_nested_fields() {
    let api = ApiServer::start(PODCTL, &[]);
    let out = api.kubectl(&["explain", "deployment.spec.strategy.rollingUpdate.maxSurge"]);
    assert!(out.contains("FIELD: maxSurge <IntOrString>") && out.contains("maximum number of pods"), "{out}");
    let out = api.kubectl(&["explain", "pods.spec.containers.ports"]);
    assert!(out.contains("containerPort\t<integer> -required-"), "{out}");
    let out = api.kubectl(&["explain", "services", "--recursive"]);
    assert!(out.contains("internalTrafficPolicy"), "{out}");
}

#[test]
fn field_selectors_kube_apiserver_supports() {
    let api = ApiServer::start(PODCTL, &[]);
    post(&api, "/api/v1/nodes", json!({"metadata": {"name": "n1"}}));
    post(&api, "/api/v1/nodes", json!({"metadata": {"name": "n2"}, "spec": {"unschedulable": true}}));
    let container = json!([{"name": "c", "image": "busybox"}]);
    post(
        &api,
        "/api/v1/namespaces/default/pods",
        json!({"metadata": {"name": "bound"}, "spec": {"nodeName": "n1", "containers": container}}),
    );
    post(
        &api,
        "/api/v1/namespaces/default/pods",
        json!({"metadata": {"name": "free"}, "spec": {"containers": container, "restartPolicy": "Never"}}),
    );
    let names = |args: &[&str]| api.kubectl(&[&["get", "-o", "name"], args].concat());
    assert_eq!(names(&["nodes", "--field-selector", "spec.unschedulable=false"]), "node/n1\n");
    assert_eq!(names(&["pods", "--field-selector", "spec.nodeName="]), "pod/free\n");
    assert_eq!(names(&["pods", "--field-selector", "spec.nodeName=n1,status.phase=Pending"]), "pod/bound\n");
    assert_eq!(names(&["pods", "--field-selector", "spec.restartPolicy!=Always"]), "pod/free\n");
    assert_eq!(
        names(&["pods", "-A", "--field-selector", "metadata.namespace=default,spec.schedulerName=default-scheduler"]),
        "pod/bound\npod/free\n"
    );
    assert_eq!(
        names(&["namespaces", "--field-selector", "status.phase=Active,metadata.name=default"]),
        "namespace/default\n"
    );
    let err = api.kubectl_fails(&["get", "pods", "--field-selector", "spec.color=red"]);
    assert!(err.contains("field label not supported: spec.color"), "{err}");
}

/// A tmpfs of its own, unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "podctl-test"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        SmallDisk(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn fill(&self) {
        let mut file = std::fs::File::create(self.path().join("filler")).unwrap();
        let block = vec![0u8; 1 << 16];
        while std::io::Write::write_all(&mut file, &block).is_ok() {}
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// Killed, then restarted on a disk that filled up meanwhile: the server starts from what
/// it stored and serves it, though it cannot rewrite its kubeconfig; writes are refused.
#[test]
fn a_server_killed_then_restarted_on_a_full_disk_serves_reads() {
    let disk = SmallDisk::mount("32m");
    let data = disk.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let (mut server, addr) = testkit::apiserver::start(PODCTL.as_ref(), &data, &[]);
    let mut access = Access::from_kubeconfig(&data.join("kubeconfig"));
    let (status, _) =
        access.connect().request("POST", "/api/v1/namespaces/default/configmaps", br#"{"metadata":{"name":"kept"}}"#);
    assert_eq!(status, 201);
    let _ = server.kill();
    let _ = server.wait();
    disk.fill();
    let port = testkit::free_port();
    let addr = std::net::SocketAddr::new(addr.ip(), port);
    // Its kubeconfig cannot be rewritten: it is ready when it answers.
    let mut server = Command::new(PODCTL)
        .arg("--data-dir")
        .arg(&data)
        .args(["apiserver", "--listen", &addr.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if std::net::TcpStream::connect(addr).is_ok() || server.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    access.addr = addr;
    let (read, body) = access.connect().request("GET", "/api/v1/namespaces/default/configmaps/kept", b"");
    let (write, _) =
        access.connect().request("POST", "/api/v1/namespaces/default/configmaps", br#"{"metadata":{"name":"new"}}"#);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(read, 200, "{}", String::from_utf8_lossy(&body));
    assert!(write >= 500, "a write on a full disk: {write}");
}
