//! networkpolicies (networking.k8s.io/v1): which traffic the selected pods accept and
//! send; Ingress by default, Egress too when egress rules are given.

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::super::checks::one_of;
use super::super::columns::{self, AGE, NAME};
use super::super::{Cause, Column, Rules};

pub struct NetworkPolicies;

fn validate_port(port: &NetworkPolicyPort, path: &str) -> Vec<Cause> {
    let mut causes: Vec<Cause> =
        one_of(&format!("{path}.protocol"), port.protocol.as_deref(), &["TCP", "UDP", "SCTP"]).into_iter().collect();
    match (&port.port, port.end_port) {
        (Some(IntOrString::Int(p)), _) if !(1..=65535).contains(p) => {
            causes
                .push((format!("{path}.port"), format!("Invalid value: {p}: must be between 1 and 65535, inclusive")));
        }
        (Some(IntOrString::Int(p)), Some(end)) if end < *p => {
            causes.push((
                format!("{path}.endPort"),
                format!("Invalid value: {end}: must be greater than or equal to `port`"),
            ));
        }
        (Some(IntOrString::String(_)), Some(end)) => {
            causes.push((
                format!("{path}.endPort"),
                format!("Invalid value: {end}: may not be specified when `port` is non-numeric"),
            ));
        }
        (None, Some(end)) => {
            causes.push((
                format!("{path}.endPort"),
                format!("Invalid value: {end}: may not be specified when `port` is not specified"),
            ));
        }
        _ => {}
    }
    causes
}

fn validate_peer(peer: &NetworkPolicyPeer, path: &str) -> Vec<Cause> {
    let selectors = usize::from(peer.pod_selector.is_some()) + usize::from(peer.namespace_selector.is_some());
    match (&peer.ip_block, selectors) {
        (None, 0) => vec![(path.to_string(), "Required value: must specify a peer".into())],
        (Some(_), n) if n > 0 => {
            vec![(path.to_string(), "Forbidden: may not specify both ipBlock and another peer".into())]
        }
        (Some(block), _) => {
            let Ok(cidr) = block.cidr.parse::<net::Ipv4Net>() else {
                return vec![(
                    format!("{path}.ipBlock.cidr"),
                    format!("Invalid value: \"{}\": must be a valid CIDR", block.cidr),
                )];
            };
            block
                .except
                .iter()
                .flatten()
                .enumerate()
                .filter(|(_, e)| {
                    e.parse::<net::Ipv4Net>()
                        .is_ok_and(|e| !(cidr.contains(&e.network()) && e.prefix_len() > cidr.prefix_len()))
                })
                .map(|(i, e)| {
                    (
                        format!("{path}.ipBlock.except[{i}]"),
                        format!("Invalid value: \"{e}\": must be a strict subset of `cidr`"),
                    )
                })
                .collect()
        }
        (None, _) => vec![],
    }
}

impl Rules for NetworkPolicies {
    type Object = NetworkPolicy;
    const SHORT_NAMES: &'static [&'static str] = &["netpol"];
    const GENERATION: bool = true;

    fn default(policy: &mut NetworkPolicy) {
        let Some(spec) = policy.spec.as_mut() else { return };
        let ingress_ports = spec.ingress.iter_mut().flatten().flat_map(|r| r.ports.iter_mut().flatten());
        let egress_ports = spec.egress.iter_mut().flatten().flat_map(|r| r.ports.iter_mut().flatten());
        for port in ingress_ports.chain(egress_ports) {
            port.protocol.get_or_insert_with(|| "TCP".into());
        }
        if spec.policy_types.as_ref().is_none_or(Vec::is_empty) {
            let mut types = vec!["Ingress".to_string()];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                types.push("Egress".into());
            }
            spec.policy_types = Some(types);
        }
    }

    fn validate(policy: &NetworkPolicy) -> Vec<Cause> {
        let Some(spec) = policy.spec.as_ref() else { return vec![] };
        let mut causes = Vec::new();
        for (i, rule) in spec.ingress.iter().flatten().enumerate() {
            for (j, port) in rule.ports.iter().flatten().enumerate() {
                causes.extend(validate_port(port, &format!("spec.ingress[{i}].ports[{j}]")));
            }
            for (j, peer) in rule.from.iter().flatten().enumerate() {
                causes.extend(validate_peer(peer, &format!("spec.ingress[{i}].from[{j}]")));
            }
        }
        for (i, rule) in spec.egress.iter().flatten().enumerate() {
            for (j, port) in rule.ports.iter().flatten().enumerate() {
                causes.extend(validate_port(port, &format!("spec.egress[{i}].ports[{j}]")));
            }
            for (j, peer) in rule.to.iter().flatten().enumerate() {
                causes.extend(validate_peer(peer, &format!("spec.egress[{i}].to[{j}]")));
            }
        }
        let types = spec.policy_types.clone().unwrap_or_default();
        for (i, kind) in types.iter().enumerate() {
            causes.extend(one_of(&format!("spec.policyTypes[{i}]"), Some(kind), &["Ingress", "Egress"]));
        }
        if types.len() > 2 {
            causes.push(("spec.policyTypes".into(), "Invalid value: may not specify more than two policyTypes".into()));
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![NAME, columns::string("Pod-Selector", 0, |o| columns::selector(&o["spec"]["podSelector"])), AGE]
    }
}
