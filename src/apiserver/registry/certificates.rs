//! certificatesigningrequests (certificates.k8s.io/v1): a PEM certificate request for a
//! signer, with the usages and lifetime asked for, recorded with who asked. Its spec never
//! changes; the `approval` subresource adds the Approved or Denied condition (one, for
//! good), and the `status` subresource the certificate (once) and other conditions.

use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};

use super::columns::{self, AGE, NAME};
use super::{Cause, Column, Rules};
use crate::validation;

pub struct CertificateSigningRequests;

/// The usages a request may ask for (certificates.KeyUsage).
const USAGES: [&str; 23] = [
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

const APPROVAL: [&str; 2] = ["Approved", "Denied"];

fn conditions(request: &CertificateSigningRequest) -> Vec<CertificateSigningRequestCondition> {
    request.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default()
}

/// Conditions whose approval ones are `approval`'s and the others `others`', approval
/// first.
fn with_conditions(
    approval: &[CertificateSigningRequestCondition],
    others: &[CertificateSigningRequestCondition],
) -> Vec<CertificateSigningRequestCondition> {
    let is_approval = |c: &&CertificateSigningRequestCondition| APPROVAL.contains(&c.type_.as_str());
    approval.iter().filter(is_approval).chain(others.iter().filter(|c| !is_approval(c))).cloned().collect()
}

fn validate_conditions(request: &CertificateSigningRequest, old: &CertificateSigningRequest) -> Vec<Cause> {
    let mut causes = Vec::new();
    let now = conditions(request);
    for (i, condition) in now.iter().enumerate() {
        let path = format!("status.conditions[{i}]");
        if condition.type_.is_empty() {
            causes.push((format!("{path}.type"), "Required value".into()));
        }
        if APPROVAL.contains(&condition.type_.as_str()) && condition.status != "True" {
            causes.push((
                format!("{path}.status"),
                format!("Unsupported value: \"{}\": supported values: \"True\"", condition.status),
            ));
        }
        if now[..i].iter().any(|c| c.type_ == condition.type_) {
            causes.push((format!("{path}.type"), format!("Duplicate value: \"{}\"", condition.type_)));
        }
    }
    if now.iter().any(|c| c.type_ == "Approved") && now.iter().any(|c| c.type_ == "Denied") {
        let at = now.iter().position(|c| c.type_ == "Denied").unwrap_or(0);
        causes.push((
            format!("status.conditions[{at}].type"),
            "Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive".into(),
        ));
    }
    for kind in APPROVAL {
        if conditions(old).iter().any(|c| c.type_ == kind) && !now.iter().any(|c| c.type_ == kind) {
            causes.push((
                "status.conditions".into(),
                format!("Forbidden: updates may not remove a condition of type \"{kind}\""),
            ));
        }
    }
    causes
}

impl Rules for CertificateSigningRequests {
    type Object = CertificateSigningRequest;
    const SHORT_NAMES: &'static [&'static str] = &["csr"];
    const SUBRESOURCES: &'static [&'static str] = &["status", "approval"];

    fn prepare_for_create(request: &mut CertificateSigningRequest) {
        request.status = None;
    }

    fn validate(request: &CertificateSigningRequest) -> Vec<Cause> {
        let spec = &request.spec;
        let mut causes = Vec::new();
        if spec.request.0.is_empty() {
            causes.push(("spec.request".into(), "Required value".into()));
        } else if let Err(e) = crate::pki::read_request(&spec.request.0) {
            causes.push(("spec.request".into(), format!("Invalid value: []byte{{...}}: {e:#}")));
        }
        match spec.signer_name.as_str() {
            "" => causes.push(("spec.signerName".into(), "Required value".into())),
            signer => {
                let (domain, path) = signer.split_once('/').unwrap_or((signer, ""));
                if path.is_empty() || !validation::dns_subdomain(domain).is_empty() {
                    causes.push((
                        "spec.signerName".into(),
                        format!("Invalid value: \"{signer}\": must be a fully qualified domain and path of the form 'example.com/signer-name'"),
                    ));
                }
            }
        }
        let usages = spec.usages.clone().unwrap_or_default();
        if usages.is_empty() {
            causes.push(("spec.usages".into(), "Required value".into()));
        }
        for (i, usage) in usages.iter().enumerate() {
            if !USAGES.contains(&usage.as_str()) {
                let supported: Vec<String> = USAGES.iter().map(|u| format!("\"{u}\"")).collect();
                causes.push((
                    format!("spec.usages[{i}]"),
                    format!("Unsupported value: \"{usage}\": supported values: {}", supported.join(", ")),
                ));
            } else if usages[..i].contains(usage) {
                causes.push((format!("spec.usages[{i}]"), format!("Duplicate value: \"{usage}\"")));
            }
        }
        if let Some(seconds) = spec.expiration_seconds.filter(|s| *s < 600) {
            causes.push((
                "spec.expirationSeconds".into(),
                format!("Invalid value: {seconds}: may not specify a duration less than 600 seconds (10 minutes)"),
            ));
        }
        causes
    }

    /// The spec, and who asked, never change.
    fn prepare_for_update(new: &mut CertificateSigningRequest, old: &CertificateSigningRequest) {
        new.spec = old.spec.clone();
    }

    /// Through `status`: the certificate and the conditions other than approval.
    fn prepare_for_status_update(new: &mut CertificateSigningRequest, old: &CertificateSigningRequest) {
        let kept = with_conditions(&conditions(old), &conditions(new));
        new.status.get_or_insert_with(Default::default).conditions = Some(kept);
    }

    fn validate_status_update(new: &CertificateSigningRequest, old: &CertificateSigningRequest) -> Vec<Cause> {
        let mut causes = validate_conditions(new, old);
        let certificate = |r: &CertificateSigningRequest| r.status.as_ref().and_then(|s| s.certificate.clone());
        match (certificate(old), certificate(new)) {
            (Some(before), now) if Some(&before) != now.as_ref() && !before.0.is_empty() => causes.push((
                "status.certificate".into(),
                "Forbidden: updates may not modify existing certificate content".into(),
            )),
            (_, Some(now)) if !now.0.is_empty() && !conditions(new).iter().any(|c| c.type_ == "Approved") => {
                causes.push((
                    "status.certificate".into(),
                    "Forbidden: certificate may only be set for approved requests".into(),
                ));
            }
            _ => {}
        }
        causes
    }

    /// Through `approval`: the Approved or Denied condition, nothing else.
    fn prepare_for_subresource_update(
        subresource: &str,
        new: &mut CertificateSigningRequest,
        old: &CertificateSigningRequest,
    ) {
        if subresource == "approval" {
            let kept = with_conditions(&conditions(new), &conditions(old));
            let mut status = old.status.clone().unwrap_or_default();
            status.conditions = Some(kept);
            new.status = Some(status);
        }
    }

    fn validate_subresource_update(
        subresource: &str,
        new: &CertificateSigningRequest,
        old: &CertificateSigningRequest,
    ) -> Vec<Cause> {
        if subresource == "approval" { validate_conditions(new, old) } else { vec![] }
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            AGE,
            columns::string("SignerName", 0, |o| columns::text(&o["spec"]["signerName"])),
            columns::string("Requestor", 0, |o| columns::text(&o["spec"]["username"])),
            columns::string("RequestedDuration", 0, |o| match o["spec"]["expirationSeconds"].as_i64() {
                Some(seconds) => columns::human_duration(seconds).into(),
                None => "<none>".into(),
            }),
            columns::string("Condition", 0, |o| {
                let mut shown: Vec<&str> = o["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|c| c["status"] == "True")
                    .filter_map(|c| c["type"].as_str())
                    .collect();
                if o["status"]["certificate"].as_str().is_some_and(|c| !c.is_empty()) {
                    shown.push("Issued");
                }
                if shown.is_empty() { "Pending".into() } else { shown.join(",").into() }
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::Registry;

    #[test]
    fn approval_writes_only_the_approval_conditions() {
        let registry = Registry::builtin();
        let requests = registry.find("certificates.k8s.io", "v1", "certificatesigningrequests").unwrap();
        let old = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": "a"},
            "spec": {"request": "", "signerName": "example.com/x", "usages": ["client auth"]},
            "status": {"conditions": [{"type": "Failed", "status": "True"}]}});
        let mut new = old.clone();
        new["status"]["conditions"] = json!([{"type": "Approved", "status": "True", "reason": "R"}]);
        let causes = requests.prepare_subresource_update("approval", &mut new, &old);
        assert!(causes.is_empty(), "{causes:?}");
        let types: Vec<&str> =
            new["status"]["conditions"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["Approved", "Failed"]);
    }
}
