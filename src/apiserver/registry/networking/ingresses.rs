//! ingresses (networking.k8s.io/v1): HTTP routes by host and path to services, a default
//! backend, TLS by host; the class given by the default IngressClass when none is named
//! (DefaultIngressClass admission, in `rest`).

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::super::checks::one_of;
use super::super::columns::{self, AGE, NAME};
use super::super::{Cause, Column, Rules};
use crate::validation;

pub struct Ingresses;

pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

fn validate_backend(backend: &IngressBackend, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    match (&backend.service, &backend.resource) {
        (Some(_), Some(_)) => {
            causes.push((path.to_string(), "Invalid value: cannot set both resource and service backends".into()))
        }
        (None, None) => {
            causes.push((path.to_string(), "Invalid value: resource or service backend is required".into()))
        }
        (Some(service), None) => {
            causes.extend(validation::check(&format!("{path}.service.name"), &service.name, validation::dns_label));
            match service
                .port
                .as_ref()
                .map(|p| (p.name.as_deref().filter(|n| !n.is_empty()), p.number.filter(|n| *n != 0)))
            {
                Some((Some(_), Some(_))) => causes.push((
                    format!("{path}.service.port"),
                    "Invalid value: cannot set both port name & port number".into(),
                )),
                None | Some((None, None)) => {
                    causes.push((
                        format!("{path}.service.port"),
                        "Invalid value: port name or number is required".into(),
                    ));
                }
                _ => {}
            }
        }
        (None, Some(resource)) => {
            if resource.kind.is_empty() || resource.name.is_empty() {
                causes.push((format!("{path}.resource"), "Required value: kind and name are required".into()));
            }
        }
    }
    causes
}

/// An Exact or Prefix path: absolute, and no `//`, `/./`, `/../` or encoded slash in it.
fn path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("must be an absolute path");
    }
    for bad in ["//", "/./", "/../", "%2f", "%2F"] {
        if path.contains(bad) {
            return Some("must not contain '//', '/./', '/../', or encoded slashes");
        }
    }
    (path.ends_with("/..") || path.ends_with("/.")).then_some("must not end with '/..' or '/.'")
}

impl Rules for Ingresses {
    type Object = Ingress;
    const SHORT_NAMES: &'static [&'static str] = &["ing"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];
    const GENERATION: bool = true;

    fn prepare_for_create(ingress: &mut Ingress) {
        ingress.status = Some(Default::default());
    }

    fn validate(ingress: &Ingress) -> Vec<Cause> {
        let Some(spec) = ingress.spec.as_ref() else { return vec![("spec".into(), "Required value".into())] };
        let mut causes = Vec::new();
        let rules = spec.rules.clone().unwrap_or_default();
        if spec.default_backend.is_none() && rules.is_empty() {
            causes.push(("spec".into(), "Invalid value: either `defaultBackend` or `rules` must be specified".into()));
        }
        if let Some(backend) = spec.default_backend.as_ref() {
            causes.extend(validate_backend(backend, "spec.defaultBackend"));
        }
        for (i, rule) in rules.iter().enumerate() {
            let base = format!("spec.rules[{i}]");
            if let Some(host) = rule.host.as_deref().filter(|h| !h.is_empty()) {
                if host.parse::<std::net::IpAddr>().is_ok() {
                    causes.push((
                        format!("{base}.host"),
                        format!("Invalid value: \"{host}\": must be a DNS name, not an IP address"),
                    ));
                } else {
                    let name = host.strip_prefix("*.").unwrap_or(host);
                    causes.extend(validation::check(&format!("{base}.host"), name, validation::dns_subdomain));
                }
            }
            let Some(http) = rule.http.as_ref() else { continue };
            if http.paths.is_empty() {
                causes.push((format!("{base}.http.paths"), "Required value".into()));
            }
            for (j, route) in http.paths.iter().enumerate() {
                let at = format!("{base}.http.paths[{j}]");
                match route.path_type.as_str() {
                    "" => causes.push((format!("{at}.pathType"), "Required value: pathType must be specified".into())),
                    kind => {
                        causes.extend(one_of(
                            &format!("{at}.pathType"),
                            Some(kind),
                            &["Exact", "Prefix", "ImplementationSpecific"],
                        ));
                        let path = route.path.as_deref().unwrap_or("");
                        if kind != "ImplementationSpecific"
                            && let Some(problem) = path_problem(path)
                        {
                            causes.push((format!("{at}.path"), format!("Invalid value: \"{path}\": {problem}")));
                        }
                    }
                }
                causes.extend(validate_backend(&route.backend, &format!("{at}.backend")));
            }
        }
        for (i, tls) in spec.tls.iter().flatten().enumerate() {
            for (j, host) in tls.hosts.iter().flatten().enumerate() {
                let name = host.strip_prefix("*.").unwrap_or(host);
                causes.extend(validation::check(&format!("spec.tls[{i}].hosts[{j}]"), name, validation::dns_subdomain));
            }
        }
        if let Some(class) = spec.ingress_class_name.as_deref() {
            causes.extend(validation::check("spec.ingressClassName", class, validation::dns_subdomain));
            let annotation = ingress.metadata.annotations.as_ref().and_then(|a| a.get(CLASS_ANNOTATION));
            if annotation.is_some_and(|a| a != class) {
                causes.push((
                    format!("annotations.{CLASS_ANNOTATION}"),
                    "Invalid value: must match `ingressClassName` when both are specified".into(),
                ));
            }
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            columns::string("Class", 0, |o| o["spec"]["ingressClassName"].as_str().unwrap_or("<none>").into()),
            columns::string("Hosts", 0, |o| {
                let rules = o["spec"]["rules"].as_array().cloned().unwrap_or_default();
                let hosts: Vec<&str> =
                    rules.iter().filter_map(|r| r["host"].as_str()).filter(|h| !h.is_empty()).collect();
                match hosts.len() {
                    0 => "*".into(),
                    n if n <= 3 => hosts.join(",").into(),
                    _ => format!("{} + {} more...", hosts[..3].join(","), rules.len() - 3).into(),
                }
            }),
            columns::string("Address", 0, |o| {
                let ingress = o["status"]["loadBalancer"]["ingress"].as_array().cloned().unwrap_or_default();
                let mut addresses: Vec<String> = ingress
                    .iter()
                    .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()).map(String::from))
                    .collect();
                addresses.sort();
                addresses.dedup();
                addresses.join(",").into()
            }),
            columns::string("Ports", 0, |o| {
                if o["spec"]["tls"].as_array().is_some_and(|t| !t.is_empty()) { "80, 443" } else { "80" }.into()
            }),
            AGE,
        ]
    }
}
