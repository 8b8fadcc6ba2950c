//! The built-in signers, as kube-controller-manager's csrsigning controller runs them with
//! the cluster's authority: a certificate signing request approved for one of them gets
//! its certificate in its status, or the Failed condition when it asks for what that
//! signer does not give (kube-controller-manager's signer validation).

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use super::errors::ApiError;
use super::http::{Query, Shared};
use super::managed::Writer;
use super::objects::{self, Validation};
use super::rest::{self, Target};
use crate::pki;

const MANAGER: &str = "certificatesigningrequest-signing-controller";
/// The longest a signed certificate lives (kube-controller-manager's
/// `--cluster-signing-duration`).
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

const CLIENT_USAGES: [&str; 3] = ["digital signature", "key encipherment", "client auth"];
const SERVING_USAGES: [&str; 3] = ["digital signature", "key encipherment", "server auth"];

/// Why `request` may not be signed by `signer`, if it may not; None for a signer that is
/// not ours.
fn refusal(signer: &str, requested: &pki::Requested, usages: &[String]) -> Option<Result<(), String>> {
    let only = |allowed: &[&str], needed: &str, what: &str| -> Result<(), String> {
        if let Some(bad) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
            return Err(format!("invalid usage for {what} certificate: {bad}"));
        }
        if !usages.iter().any(|u| u == needed) {
            return Err(format!("missing required usage for {what} certificate: {needed}"));
        }
        Ok(())
    };
    let node = || -> Result<(), String> {
        if !requested.common_name.starts_with("system:node:") || requested.common_name.len() == "system:node:".len() {
            return Err("subject common name does not begin with system:node:".into());
        }
        if requested.organizations != ["system:nodes"] {
            return Err("subject organization is not system:nodes".into());
        }
        Ok(())
    };
    let ours = matches!(
        signer,
        "kubernetes.io/kube-apiserver-client"
            | "kubernetes.io/kube-apiserver-client-kubelet"
            | "kubernetes.io/kubelet-serving"
    );
    if !ours {
        return None;
    }
    // The API server's own name towards nodes is what lets a client into any node's
    // endpoint (exec, logs): no request gets it.
    if requested.common_name == pki::KUBELET_CLIENT {
        return Some(Err(format!("the common name {} is the API server's own", pki::KUBELET_CLIENT)));
    }
    Some(match signer {
        "kubernetes.io/kube-apiserver-client" => only(&CLIENT_USAGES, "client auth", "client"),
        "kubernetes.io/kube-apiserver-client-kubelet" => node()
            .and_then(|()| {
                if requested.names.is_empty() {
                    Ok(())
                } else {
                    Err("DNS or IP subjectAltNames are not allowed".into())
                }
            })
            .and_then(|()| only(&CLIENT_USAGES, "client auth", "client")),
        "kubernetes.io/kubelet-serving" => node()
            .and_then(|()| {
                if requested.names.is_empty() { Err("DNS or IP subjectAltName is required".into()) } else { Ok(()) }
            })
            .and_then(|()| only(&SERVING_USAGES, "server auth", "serving")),
        _ => unreachable!("one of ours"),
    })
}

/// Signs request `name` if it is approved for one of the built-in signers and has no
/// certificate yet.
pub async fn sign_if_approved(server: &Shared, name: &str) -> Result<(), ApiError> {
    let strategy = server
        .registry
        .find("certificates.k8s.io", "v1", "certificatesigningrequests")
        .expect("certificates are served");
    let mut target = Target::collection(strategy, None);
    target.subresource = Some("status".into());
    target.writer = Writer { manager: MANAGER.into(), applies: false };
    let request = rest::get(server, &target, name)?;
    let has = |kind: &str| {
        request["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == kind && c["status"] == "True")
    };
    let issued = request["status"]["certificate"].as_str().is_some_and(|c| !c.is_empty());
    if !has("Approved") || has("Denied") || has("Failed") || issued {
        return Ok(());
    }
    let spec = &request["spec"];
    let pem =
        base64::engine::general_purpose::STANDARD.decode(spec["request"].as_str().unwrap_or("")).unwrap_or_default();
    let usages: Vec<String> = serde_json::from_value(spec["usages"].clone()).unwrap_or_default();
    let Ok(requested) = pki::read_request(&pem) else { return Ok(()) };
    let Some(allowed) = refusal(spec["signerName"].as_str().unwrap_or(""), &requested, &usages) else { return Ok(()) };
    let outcome = match allowed {
        Ok(()) => {
            let asked = spec["expirationSeconds"].as_u64().map_or(LONGEST, Duration::from_secs);
            let pem = String::from_utf8_lossy(&pem).into_owned();
            server.authority.sign_request(&pem, &usages, asked.min(LONGEST)).map_err(|e| format!("{e:#}"))
        }
        Err(why) => Err(why),
    };
    let finish = move |current: &Value| {
        let mut next = current.clone();
        match &outcome {
            Ok(certificate) => {
                next["status"]["certificate"] = base64::engine::general_purpose::STANDARD.encode(certificate).into();
            }
            Err(why) => {
                let failed = json!({"type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                                    "message": why, "lastUpdateTime": objects::now(), "lastTransitionTime": objects::now()});
                let mut conditions = current["status"]["conditions"].as_array().cloned().unwrap_or_default();
                conditions.push(failed);
                next["status"]["conditions"] = conditions.into();
            }
        }
        Ok(next)
    };
    rest::update(server, &target, name, Some("status"), finish, &Query::default(), &mut Validation::from_query(None))
        .await?;
    Ok(())
}
