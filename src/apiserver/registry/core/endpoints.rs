//! endpoints (core/v1): port protocols default to TCP.

use k8s_openapi::api::core::v1::Endpoints as EndpointsObject;
use serde_json::Value;

use super::super::columns::{self, AGE, NAME};
use super::super::pod_template::default_string;
use super::super::{Column, Rules};

pub struct Endpoints;

impl Rules for Endpoints {
    type Object = EndpointsObject;
    const SHORT_NAMES: &'static [&'static str] = &["ep"];

    fn default(endpoints: &mut EndpointsObject) {
        for subset in endpoints.subsets.iter_mut().flatten() {
            for port in subset.ports.iter_mut().flatten() {
                default_string(&mut port.protocol, "TCP");
            }
        }
    }

    fn columns() -> Vec<Column> {
        vec![NAME, columns::string("Endpoints", 0, endpoint_list), AGE]
    }
}

/// `ip:port` of each address (at most 3, then `+ N more...`), or `<none>`.
fn endpoint_list(o: &Value) -> Value {
    let mut all = Vec::new();
    for subset in o["subsets"].as_array().into_iter().flatten() {
        let ports: Vec<i64> =
            subset["ports"].as_array().into_iter().flatten().filter_map(|p| p["port"].as_i64()).collect();
        for address in subset["addresses"].as_array().into_iter().flatten() {
            let ip = address["ip"].as_str().unwrap_or("");
            if ports.is_empty() {
                all.push(ip.to_string());
            }
            all.extend(ports.iter().map(|port| format!("{ip}:{port}")));
        }
    }
    match all.len() {
        0 => "<none>".into(),
        n if n > 3 => format!("{} + {} more...", all[..3].join(","), n - 3).into(),
        _ => all.join(",").into(),
    }
}
