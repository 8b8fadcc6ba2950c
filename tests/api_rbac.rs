//! Authorization as kube-apiserver's Node and RBAC authorizers decide it, driven by real
//! kubectl with the tokens of several users: the default roles, role bindings, `kubectl
//! auth can-i` and `auth whoami`, escalation prevention, and what a node may touch.

use serde_json::json;
use testkit::apiserver::ApiServer;

const PODCTL: &str = env!("CARGO_BIN_EXE_podctl");

const TOKENS: &str = "admin-token,admin,1,\"system:masters\"\n\
                      jane-token,jane,2\n\
                      dev-token,dave,3,\"devs\"\n\
                      node-token,system:node:n1,4,\"system:nodes\"\n";

fn server() -> (ApiServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, TOKENS).unwrap();
    (ApiServer::start(PODCTL, &["--token-file", tokens.to_str().unwrap()]), dir)
}

/// kubectl as the user of `token`: its output, and whether it succeeded.
fn as_user(api: &ApiServer, token: &str, args: &[&str], stdin: &str) -> (bool, String) {
    let out = api.kubectl_output(&[&["--token", token], args].concat(), Some(stdin));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn users_get_what_their_roles_allow() {
    let (api, _dir) = server();
    let roles = api.kubectl(&["get", "clusterroles", "-o", "name"]);
    for role in ["cluster-admin", "admin", "edit", "view", "system:discovery", "system:basic-user"] {
        assert!(roles.contains(&format!("clusterrole.rbac.authorization.k8s.io/{role}\n")), "{role}: {roles}");
    }
    api.kubectl(&["create", "namespace", "team"]);
    api.kubectl(&["create", "rolebinding", "jane-views", "--clusterrole=view", "--user=jane", "-n", "team"]);

    let (ok, out) = as_user(&api, "jane-token", &["get", "pods", "-n", "team"], "");
    assert!(ok, "{out}");
    let (ok, out) = as_user(&api, "jane-token", &["create", "deployment", "web", "--image=nginx", "-n", "team"], "");
    assert!(!ok && out.contains(
        "deployments.apps is forbidden: User \"jane\" cannot create resource \"deployments\" in API group \"apps\" in the namespace \"team\""
    ), "{out}");
    let (ok, out) = as_user(&api, "jane-token", &["get", "pods", "-n", "default"], "");
    assert!(
        !ok && out.contains("cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{out}"
    );
    let (ok, out) = as_user(&api, "jane-token", &["get", "secrets", "-n", "team"], "");
    assert!(!ok && out.contains("Forbidden"), "view reads no secrets: {out}");

    assert_eq!(
        as_user(&api, "jane-token", &["auth", "can-i", "create", "deployments", "-n", "team"], ""),
        (false, "no\n".into())
    );
    assert_eq!(
        as_user(&api, "jane-token", &["auth", "can-i", "list", "pods", "-n", "team"], ""),
        (true, "yes\n".into())
    );
    assert_eq!(api.kubectl(&["auth", "can-i", "create", "nodes"]), "yes\n");
    let (ok, rules) = as_user(&api, "jane-token", &["auth", "can-i", "--list", "-n", "team"], "");
    assert!(
        ok && rules.contains("deployments.apps") && rules.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{rules}"
    );
    let (ok, whoami) = as_user(&api, "dev-token", &["auth", "whoami", "-o", "json"], "");
    assert!(ok, "{whoami}");
    let whoami: serde_json::Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(
        whoami["status"]["userInfo"],
        json!({"username": "dave", "uid": "3", "groups": ["devs", "system:authenticated"]})
    );

    // A group's binding counts for its members; a wrong token is no one at all.
    api.kubectl(&["create", "clusterrolebinding", "devs-edit", "--clusterrole=edit", "--group=devs"]);
    let (ok, out) = as_user(&api, "dev-token", &["create", "configmap", "c", "-n", "team"], "");
    assert!(ok, "{out}");
    let (ok, out) = as_user(&api, "wrong-token", &["get", "pods"], "");
    assert!(!ok && out.contains("Unauthorized"), "{out}");
}

#[test]
fn no_one_grants_what_they_do_not_hold() {
    let (api, _dir) = server();
    api.kubectl(&["create", "namespace", "team"]);
    api.kubectl(&["create", "rolebinding", "jane-admin", "--clusterrole=admin", "--user=jane", "-n", "team"]);
    let role = |name: &str, resource: &str| {
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: {name}, namespace: team}}\n\
             rules: [{{apiGroups: [''], resources: [{resource}], verbs: [get]}}]\n"
        )
    };
    let (ok, out) = as_user(&api, "jane-token", &["apply", "-f", "-"], &role("pod-reader", "pods"));
    assert!(ok, "{out}");
    let (ok, out) = as_user(&api, "jane-token", &["apply", "-f", "-"], &role("node-reader", "nodes"));
    assert!(!ok && out.contains("is attempting to grant RBAC permissions not currently held"), "{out}");
    assert!(out.contains("{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\"]}"), "{out}");
    let (ok, out) = as_user(
        &api,
        "jane-token",
        &["create", "rolebinding", "take-all", "--clusterrole=cluster-admin", "--user=jane", "-n", "team"],
        "",
    );
    assert!(!ok && out.contains("not currently held"), "{out}");
    let (ok, out) = as_user(
        &api,
        "jane-token",
        &["create", "rolebinding", "share", "--role=pod-reader", "--user=dave", "-n", "team"],
        "",
    );
    assert!(ok, "{out}");
    let err =
        api.kubectl_fails(&["patch", "rolebinding", "share", "-n", "team", "-p", r#"{"roleRef":{"name":"other"}}"#]);
    assert!(err.contains("cannot change roleRef"), "{err}");
}

#[test]
fn service_accounts_get_tokens_that_authenticate_them() {
    let (api, _dir) = server();
    api.kubectl(&["create", "namespace", "team"]);
    let root_ca =
        api.kubectl(&["get", "configmap", "kube-root-ca.crt", "-n", "team", "-o", "jsonpath={.data.ca\\.crt}"]);
    assert!(root_ca.starts_with("-----BEGIN CERTIFICATE-----"), "{root_ca}");
    api.kubectl(&["create", "serviceaccount", "robot", "-n", "team"]);
    let token = api.kubectl(&["create", "token", "robot", "-n", "team"]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let (ok, whoami) = as_user(&api, token, &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], "");
    assert_eq!((ok, whoami.as_str()), (true, "system:serviceaccount:team:robot"));
    let (ok, out) = as_user(&api, token, &["get", "pods", "-n", "team"], "");
    assert!(!ok && out.contains("User \"system:serviceaccount:team:robot\" cannot list resource \"pods\""), "{out}");
    api.kubectl(&[
        "create",
        "rolebinding",
        "robot-view",
        "--clusterrole=view",
        "--serviceaccount=team:robot",
        "-n",
        "team",
    ]);
    assert!(as_user(&api, token, &["get", "pods", "-n", "team"], "").0);
    let err = api.kubectl_fails(&["create", "token", "robot", "-n", "team", "--duration=1m"]);
    assert!(err.contains("may not specify a duration less than 10 minutes"), "{err}");
    // Gone with its service account (a new one of the same name is another).
    api.kubectl(&["delete", "serviceaccount", "robot", "-n", "team"]);
    api.kubectl(&["create", "serviceaccount", "robot", "-n", "team"]);
    let (ok, out) = as_user(&api, token, &["get", "pods", "-n", "team"], "");
    assert!(!ok && out.contains("Unauthorized"), "{out}");

    // Pods get their service account's token, the cluster's CA and their namespace.
    api.kubectl_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: team}\nspec: {containers: [{name: c, image: busybox}]}\n");
    let pod: serde_json::Value =
        serde_json::from_str(&api.kubectl(&["get", "pod", "p", "-n", "team", "-o", "json"])).unwrap();
    let volume = &pod["spec"]["volumes"][0];
    assert!(volume["name"].as_str().unwrap().starts_with("kube-api-access-"), "{pod}");
    assert_eq!(volume["projected"]["sources"][0]["serviceAccountToken"]["path"], "token");
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"][0],
        json!({"name": volume["name"], "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true})
    );
}

#[test]
fn a_node_touches_only_its_own() {
    let (api, _dir) = server();
    let node = |name: &str| format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n");
    let (ok, out) = as_user(&api, "node-token", &["apply", "-f", "-"], &node("n1"));
    assert!(ok, "{out}");
    let (ok, out) = as_user(&api, "node-token", &["apply", "-f", "-"], &node("n2"));
    assert!(!ok && out.contains("node \"n1\" is not allowed to modify node \"n2\""), "{out}");
    for (name, host) in [("mine", "n1"), ("theirs", "n2")] {
        api.kubectl_stdin(
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{nodeName: {host}, containers: [{{name: c, image: busybox}}]}}\n"),
        );
    }
    let (ok, out) = as_user(&api, "node-token", &["get", "pods", "-A"], "");
    assert!(ok && out.contains("theirs"), "{out}");
    let (ok, out) = as_user(&api, "node-token", &["delete", "pod", "theirs", "--grace-period=0", "--wait=false"], "");
    assert!(!ok && out.contains("can only delete pods with spec.nodeName set to itself"), "{out}");
    let (ok, out) = as_user(&api, "node-token", &["delete", "pod", "mine", "--grace-period=0", "--wait=false"], "");
    assert!(ok, "{out}");
    let (ok, out) = as_user(&api, "node-token", &["create", "namespace", "mine"], "");
    assert!(!ok && out.contains("Forbidden"), "{out}");
}

#[test]
fn roles_labelled_to_extend_edit_and_view_are_aggregated_into_them() {
    let (api, _dir) = server();
    api.kubectl(&["create", "namespace", "team"]);
    api.kubectl(&["create", "rolebinding", "dave-edits", "--clusterrole=edit", "--group=devs", "-n", "team"]);
    let can = |verb: &str| {
        let out = as_user(&api, "dev-token", &["auth", "can-i", verb, "limitranges", "-n", "team"], "").1;
        out.lines().next().unwrap_or_default().to_string()
    };
    assert_eq!(can("create").trim(), "no");
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: limitrange-editor\n  labels: {rbac.authorization.k8s.io/aggregate-to-edit: \"true\"}\nrules: [{apiGroups: [\"\"], resources: [limitranges], verbs: [create]}]\n",
    );
    // The controller runs after the change: wait for it, boundedly.
    let aggregated = |want: &str| {
        (0..100).any(|_| {
            let answer = can("create");
            std::thread::sleep(std::time::Duration::from_millis(if answer.trim() == want { 0 } else { 50 }));
            answer.trim() == want
        })
    };
    assert!(aggregated("yes"), "edit gathers the labelled role's rules");
    let admin = api.kubectl(&["get", "clusterrole", "admin", "-o", "jsonpath={.rules[*].resources}"]);
    let creates = api.kubectl(&["get", "clusterrole", "admin", "-o", "json"]);
    let creates: serde_json::Value = serde_json::from_str(&creates).unwrap();
    let held = creates["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["resources"] == json!(["limitranges"]) && r["verbs"] == json!(["create"]));
    assert!(held, "admin aggregates edit, which now holds it: {admin}");
    api.kubectl(&["label", "clusterrole", "limitrange-editor", "rbac.authorization.k8s.io/aggregate-to-edit-"]);
    assert!(aggregated("no"), "and lets them go when the label goes");
}
