//! Certificate signing requests as kubectl and a node's bootstrap use them: a request is
//! recorded with who asked, approved (`kubectl certificate approve`) and signed by the
//! cluster's authority for the built-in signers, or failed when it asks for what its
//! signer does not give; and a signed client certificate then authenticates its user.

use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};
use testkit::apiserver::ApiServer;

const PODCTL: &str = env!("CARGO_BIN_EXE_podctl");

/// A key and a PEM certificate request for `subject` (`/CN=jane/O=devs`), with
/// `names` as subjectAltNames (`DNS:a,IP:1.2.3.4`), made by openssl.
fn request(dir: &std::path::Path, file: &str, subject: &str, names: Option<&str>) -> (std::path::PathBuf, String) {
    let key = dir.join(format!("{file}.key"));
    let csr = dir.join(format!("{file}.csr"));
    let mut openssl = Command::new("openssl");
    openssl.args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        subject,
    ]);
    openssl.arg("-keyout").arg(&key).arg("-out").arg(&csr);
    if let Some(names) = names {
        openssl.args(["-addext", &format!("subjectAltName={names}")]);
    }
    let out = openssl.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (key, std::fs::read_to_string(csr).unwrap())
}

fn signing_request(name: &str, pem: &str, signer: &str, usages: &[&str]) -> String {
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": name},
           "spec": {"request": base64::engine::general_purpose::STANDARD.encode(pem), "signerName": signer,
                    "usages": usages, "expirationSeconds": 3600}})
    .to_string()
}

fn condition(api: &ApiServer, name: &str) -> String {
    let out = api.kubectl(&["get", "csr", name]);
    out.lines().nth(1).unwrap_or_default().split_whitespace().last().unwrap_or_default().to_string()
}

#[test]
fn approved_requests_are_signed_and_their_certificates_authenticate() {
    let api = ApiServer::start(PODCTL, &[]);
    let dir = tempfile::tempdir().unwrap();
    // Two organizations: two groups, as the Kubernetes documentation has users ask.
    let (key, pem) = request(dir.path(), "jane", "/CN=jane/O=devs/O=qa", None);
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        &signing_request("jane", &pem, "kubernetes.io/kube-apiserver-client", &["client auth"]),
    );
    let listed = api.kubectl(&["get", "csr", "jane"]);
    assert!(listed.contains("kubernetes.io/kube-apiserver-client") && listed.contains("60m"), "{listed}");
    assert_eq!(condition(&api, "jane"), "Pending");
    let made: Value = serde_json::from_str(&api.kubectl(&["get", "csr", "jane", "-o", "json"])).unwrap();
    assert_eq!(made["spec"]["username"], "admin", "who asked is recorded: {}", made["spec"]);

    api.kubectl(&["certificate", "approve", "jane"]);
    assert_eq!(condition(&api, "jane"), "Approved,Issued");
    let signed: Value = serde_json::from_str(&api.kubectl(&["get", "csr", "jane", "-o", "json"])).unwrap();
    let certificate =
        base64::engine::general_purpose::STANDARD.decode(signed["status"]["certificate"].as_str().unwrap()).unwrap();
    // The spec does not change.
    api.kubectl(&["patch", "csr", "jane", "--type=merge", "-p", r#"{"spec":{"usages":["server auth"]}}"#]);
    let after: Value = serde_json::from_str(&api.kubectl(&["get", "csr", "jane", "-o", "json"])).unwrap();
    assert_eq!(after["spec"]["usages"], json!(["client auth"]));

    // The certificate is jane's way in: no token, only the certificate and its key.
    let mut config: Value = serde_json::from_slice(&std::fs::read(api.kubeconfig()).unwrap()).unwrap();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    config["users"][0]["user"] =
        json!({"client-certificate-data": b64(&certificate), "client-key-data": b64(&std::fs::read(&key).unwrap())});
    let kubeconfig = dir.path().join("jane.kubeconfig");
    std::fs::write(&kubeconfig, config.to_string()).unwrap();
    let kubectl = testkit::apiserver::KUBECTL;
    let out = Command::new(kubectl)
        .args(["auth", "whoami", "-o", "json"])
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let whoami: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(whoami["status"]["userInfo"]["username"], "jane");
    assert_eq!(whoami["status"]["userInfo"]["groups"], json!(["devs", "qa", "system:authenticated"]));
    let out = Command::new(kubectl)
        .args(["get", "pods"])
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("User \"jane\" cannot list resource \"pods\""),
        "RBAC decides what jane may do"
    );
}

#[test]
fn requests_a_signer_may_not_grant_fail_and_bad_ones_are_refused() {
    let api = ApiServer::start(PODCTL, &[]);
    let dir = tempfile::tempdir().unwrap();
    let err = api.kubectl_stdin_fails(
        &["apply", "-f", "-"],
        &signing_request("junk", "not a request", "example.com/x", &["client auth"]),
    );
    assert!(err.contains("spec.request: Invalid value") && err.contains("CERTIFICATE REQUEST"), "{err}");
    let (_, pem) = request(dir.path(), "x", "/CN=x", None);
    let err = api.kubectl_stdin_fails(
        &["apply", "-f", "-"],
        &signing_request("bad", &pem, "nodomain", &["client auth", "flying"]),
    );
    assert!(err.contains("spec.signerName: Invalid value: \"nodomain\""), "{err}");
    assert!(err.contains("spec.usages[1]: Unsupported value: \"flying\""), "{err}");

    // The API server's own name towards nodes is never given out.
    let (_, pem) = request(dir.path(), "impostor", "/CN=kube-apiserver-kubelet-client", None);
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        &signing_request("impostor", &pem, "kubernetes.io/kube-apiserver-client", &["client auth"]),
    );
    api.kubectl(&["certificate", "approve", "impostor"]);
    assert_eq!(condition(&api, "impostor"), "Approved,Failed");
    // A node's serving certificate names the node and its addresses.
    let (_, pem) = request(dir.path(), "serving", "/CN=system:node:n1/O=system:nodes", None);
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        &signing_request("serving", &pem, "kubernetes.io/kubelet-serving", &["server auth"]),
    );
    api.kubectl(&["certificate", "approve", "serving"]);
    let failed: Value = serde_json::from_str(&api.kubectl(&["get", "csr", "serving", "-o", "json"])).unwrap();
    let failure =
        failed["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Failed").unwrap().clone();
    assert_eq!(failure["message"], "DNS or IP subjectAltName is required");
    let (_, pem) = request(dir.path(), "served", "/CN=system:node:n1/O=system:nodes", Some("DNS:n1,IP:10.0.0.1"));
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        &signing_request("served", &pem, "kubernetes.io/kubelet-serving", &["server auth", "digital signature"]),
    );
    api.kubectl(&["certificate", "approve", "served"]);
    assert_eq!(condition(&api, "served"), "Approved,Issued");
    // Another signer's requests are left to it; a denial stays.
    let (_, pem) = request(dir.path(), "other", "/CN=y", None);
    api.kubectl_stdin(&["apply", "-f", "-"], &signing_request("other", &pem, "example.com/signer", &["client auth"]));
    api.kubectl(&["certificate", "approve", "other"]);
    assert_eq!(condition(&api, "other"), "Approved");
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        &signing_request("denied", &pem, "kubernetes.io/kube-apiserver-client", &["client auth"]),
    );
    api.kubectl(&["certificate", "deny", "denied"]);
    assert_eq!(condition(&api, "denied"), "Denied");
    let mut both: Value = serde_json::from_str(&api.kubectl(&["get", "csr", "denied", "-o", "json"])).unwrap();
    both["status"]["conditions"].as_array_mut().unwrap().push(json!({"type": "Approved", "status": "True"}));
    let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests/denied/approval";
    let (status, body) = api.http("PUT", path, &[("Content-Type", "application/json")], both.to_string().as_bytes());
    assert_eq!(status, 422);
    assert!(
        body["message"].as_str().unwrap().contains("Approved and Denied conditions are mutually exclusive"),
        "{body}"
    );
}
