//! Server-side apply and managedFields as kubectl 1.27 and 1.33 use them: `kubectl apply
//! --server-side` owns what it applies, conflicts with other managers' values until
//! forced, removes what it stops applying, and every write records its manager.

use serde_json::Value;
use testkit::apiserver::{ApiServer, KUBECTL_DIR};

const PODCTL: &str = env!("CARGO_BIN_EXE_podctl");

fn manifest(replicas: u32, containers: &[&str], labels: &str) -> String {
    let containers: Vec<String> = containers.iter().map(|c| format!("{{name: {c}, image: busybox}}")).collect();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, labels: {{{labels}}}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{}]}}\n",
        containers.join(", ")
    )
}

fn kubectl(api: &ApiServer, release: &str, args: &[&str], stdin: &str) -> (bool, String) {
    let out = api.kubectl_output_of(&format!("{KUBECTL_DIR}/kubectl.{release}"), args, Some(stdin));
    let text = if out.status.success() { out.stdout } else { out.stderr };
    (out.status.success(), String::from_utf8_lossy(&text).into_owned())
}

/// The managers of the Deployment's fields that are kubectl (the deployment controller
/// writes its status and revision too).
fn managers(api: &ApiServer) -> Vec<(String, String)> {
    let object: Value =
        serde_json::from_str(&api.kubectl(&["get", "deployment", "web", "-o", "json", "--show-managed-fields"]))
            .unwrap();
    object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["manager"].as_str().unwrap().to_string(), e["operation"].as_str().unwrap().to_string()))
        .filter(|(manager, _)| manager.starts_with("kubectl"))
        .collect()
}

#[test]
fn server_side_apply_owns_conflicts_forces_and_prunes() {
    for release in ["1.33", "1.27"] {
        let api = ApiServer::start(PODCTL, &[]);
        let (ok, out) =
            kubectl(&api, release, &["apply", "--server-side", "-f", "-"], &manifest(2, &["a", "b"], "app: web"));
        assert!(ok && out.contains("serverside-applied"), "{release}: {out}");
        assert_eq!(managers(&api), [("kubectl".to_string(), "Apply".to_string())], "{release}");

        // Another manager changes a field the applier owns.
        api.kubectl(&["patch", "deployment", "web", "--type=merge", "-p", r#"{"spec":{"replicas":5}}"#]);
        assert!(managers(&api).contains(&("kubectl-patch".to_string(), "Update".to_string())), "{release}");
        let (ok, out) =
            kubectl(&api, release, &["apply", "--server-side", "-f", "-"], &manifest(3, &["a", "b"], "app: web"));
        assert!(!ok, "{release}: a conflict: {out}");
        assert!(
            out.contains("Apply failed with 1 conflict: conflict with \"kubectl-patch\" using apps/v1: .spec.replicas"),
            "{release}: {out}"
        );
        // The same value is no conflict: both own it.
        let (ok, out) =
            kubectl(&api, release, &["apply", "--server-side", "-f", "-"], &manifest(5, &["a", "b"], "app: web"));
        assert!(ok, "{release}: {out}");
        let (ok, out) = kubectl(
            &api,
            release,
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            &manifest(3, &["a"], "app: web, tier: front"),
        );
        assert!(ok, "{release}: {out}");
        let live: Value = serde_json::from_str(&api.kubectl(&["get", "deployment", "web", "-o", "json"])).unwrap();
        assert_eq!(live["spec"]["replicas"], 3, "{release}");
        let containers = live["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{release}: the container no longer applied is gone: {containers:?}");
        assert_eq!(live["metadata"]["labels"]["tier"], "front");
        assert_eq!(live["spec"]["strategy"]["type"], "RollingUpdate", "{release}: defaults still apply");
        assert!(live["metadata"].get("managedFields").is_none(), "kubectl hides them unless asked");

        // A second applier of other fields: both keep theirs.
        let (ok, out) = kubectl(
            &api,
            release,
            &["apply", "--server-side", "--field-manager=labeller", "-f", "-"],
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, labels: {owner: ops}}\n",
        );
        assert!(ok, "{release}: {out}");
        let (ok, out) =
            kubectl(&api, release, &["apply", "--server-side", "-f", "-"], &manifest(3, &["a"], "app: web"));
        assert!(ok, "{release}: {out}");
        let live: Value = serde_json::from_str(&api.kubectl(&["get", "deployment", "web", "-o", "json"])).unwrap();
        let labels = &live["metadata"]["labels"];
        assert_eq!((labels["owner"].as_str(), labels.get("tier")), (Some("ops"), None), "{release}: {labels}");
    }
}

#[test]
fn every_write_records_its_manager() {
    let api = ApiServer::start(PODCTL, &[]);
    api.kubectl(&["create", "configmap", "c", "--from-literal=a=1"]);
    api.kubectl(&["label", "configmap", "c", "x=y"]);
    let object: Value =
        serde_json::from_str(&api.kubectl(&["get", "configmap", "c", "-o", "json", "--show-managed-fields"])).unwrap();
    let entries = object["metadata"]["managedFields"].as_array().unwrap();
    let create = entries.iter().find(|e| e["manager"] == "kubectl-create").unwrap();
    assert_eq!(create["operation"], "Update");
    assert_eq!(create["fieldsV1"], serde_json::json!({"f:data": {".": {}, "f:a": {}}}));
    let label = entries.iter().find(|e| e["manager"] == "kubectl-label").unwrap();
    assert_eq!(label["fieldsV1"], serde_json::json!({"f:metadata": {"f:labels": {".": {}, "f:x": {}}}}));
    assert!(create["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    // An apply needs a field manager; `force` is for applies only.
    let (status, body) = api.http(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/c",
        &[("Content-Type", "application/apply-patch+yaml")],
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    );
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("fieldManager: Required value: is required for apply patch"))
    );
    let (status, _) = api.http(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/c?force=true",
        &[("Content-Type", "application/merge-patch+json")],
        b"{}",
    );
    assert_eq!(status, 400);
    // An apply of an object that does not exist creates it.
    let (status, body) = api.http(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/new?fieldManager=tool",
        &[("Content-Type", "application/apply-patch+yaml")],
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: new}\ndata: {k: v}\n",
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["metadata"]["managedFields"][0]["operation"], "Apply");
}

#[test]
fn kubectl_moves_from_client_side_to_server_side_apply() {
    let api = ApiServer::start(PODCTL, &[]);
    api.kubectl_stdin(&["apply", "-f", "-"], &manifest(2, &["a"], "app: web"));
    // What client-side apply set, and the object still has, is kubectl's to change now.
    let (ok, out) = kubectl(&api, "1.33", &["apply", "--server-side", "-f", "-"], &manifest(3, &["a"], "app: web"));
    assert!(ok, "{out}");
    let live: Value = serde_json::from_str(&api.kubectl(&["get", "deployment", "web", "-o", "json"])).unwrap();
    assert_eq!(live["spec"]["replicas"], 3);
    // Client-side apply's record follows, so going back to it changes nothing by itself.
    let recorded: Value = serde_json::from_str(
        live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(recorded["spec"]["replicas"], 3);
    // A field another manager changed since is still a conflict.
    api.kubectl(&["patch", "deployment", "web", "--type=merge", "-p", r#"{"spec":{"replicas":5}}"#]);
    let (ok, out) = kubectl(&api, "1.33", &["apply", "--server-side", "-f", "-"], &manifest(4, &["a"], "app: web"));
    assert!(!ok && out.contains("conflict with \"kubectl-patch\""), "{out}");
}
