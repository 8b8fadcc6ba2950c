//! The discovery.k8s.io group: endpointslices.

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::columns::{self, AGE, NAME};
use super::{Column, Rules};

pub struct EndpointSlices;

impl Rules for EndpointSlices {
    type Object = EndpointSlice;
    const GENERATION: bool = true;

    fn default(slice: &mut EndpointSlice) {
        for port in slice.ports.iter_mut().flatten() {
            super::pod_template::default_string(&mut port.protocol, "TCP");
            port.name.get_or_insert_with(String::new);
        }
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            columns::string("AddressType", 0, |o| o["addressType"].as_str().unwrap_or("").into()),
            columns::string("Ports", 0, |o| {
                let ports: Vec<String> = o["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["port"].as_i64())
                    .map(|p| p.to_string())
                    .collect();
                if ports.is_empty() { "<unset>".into() } else { ports.join(",").into() }
            }),
            columns::string("Endpoints", 0, |o| {
                let addresses: Vec<String> = o["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                    .filter_map(|a| a.as_str().map(String::from))
                    .collect();
                match addresses.len() {
                    0 => "<unset>".into(),
                    n if n > 3 => format!("{} + {} more...", addresses[..3].join(","), n - 3).into(),
                    _ => addresses.join(",").into(),
                }
            }),
            AGE,
        ]
    }
}
