//! `podctl proxy` and `podctl routes`: the service proxy and the routes to other nodes,
//! driven by hand (the node agent drives them from the API server).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use net::Ipv4Net;
use net::proxy::{Proxier, ProxyConfig, render, service_ports};

use super::manifest::{read_objects, typed};
use super::{NodeOptions, require_root};

#[derive(Args)]
pub struct ProxyArgs {
    /// Services, Endpoints and EndpointSlices (YAML or JSON; several documents or a List)
    #[arg(short = 'f', long = "file", value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// Print the rules (an nft script, or iptables-restore input) instead of applying them
    #[arg(long)]
    print: bool,
    /// Masquerade traffic to cluster IPs that comes from outside this CIDR (default: the
    /// node's pod CIDR)
    #[arg(long, value_name = "CIDR")]
    cluster_cidr: Option<Ipv4Net>,
    /// This node's name: endpoints whose nodeName it is serve the Local traffic policies
    /// (default: the host name, as `podctl node`'s)
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
}

impl ProxyArgs {
    pub fn run(self, opts: &NodeOptions) -> Result<ExitCode> {
        let (mut services, mut endpoints, mut slices) = (Vec::<Service>::new(), Vec::new(), Vec::new());
        for path in &self.files {
            for object in read_objects(path)? {
                match object["kind"].as_str() {
                    Some("Service") => services.push(typed(object, "v1", "Service", path)?),
                    Some("Endpoints") => endpoints.push(typed::<Endpoints>(object, "v1", "Endpoints", path)?),
                    Some("EndpointSlice") => {
                        slices.push(typed::<EndpointSlice>(object, "discovery.k8s.io/v1", "EndpointSlice", path)?)
                    }
                    other => bail!(
                        "{}: a Service, Endpoints or EndpointSlice expected, found kind {other:?}",
                        path.display()
                    ),
                }
            }
        }
        let node_name = match self.node_name {
            Some(name) => name,
            None => nix::unistd::gethostname()?.to_string_lossy().to_lowercase(),
        };
        let ports = service_ports(&services, &endpoints, &slices, Some(&node_name))?;
        let firewall = net::Firewall::new(opts.proxy_mode)?;
        let config = ProxyConfig { cluster_cidr: Some(self.cluster_cidr.unwrap_or(opts.pod_cidr)), random_fully: true };
        if self.print {
            let (text, rules) = render(&firewall, &ports, &config);
            print!("{text}");
            eprintln!("{rules} rules for {} service ports", ports.len());
            return Ok(ExitCode::SUCCESS);
        }
        require_root("podctl proxy")?;
        net::proxy::remove_other_backend(&firewall)?;
        let mut proxier = Proxier::new(&firewall, config, Duration::ZERO);
        let report = proxier.sync(&ports)?;
        if let Err(e) = proxier.forget_stale_flows(&ports) {
            eprintln!("warning: delete stale UDP flows: {e}");
        }
        let with = match &firewall {
            net::Firewall::Nftables => "nft".to_string(),
            net::Firewall::Iptables(iptables) => format!("{}-restore", iptables.name()),
        };
        println!("{} rules for {} service ports applied with {with}", report.rules, ports.len());
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Args)]
pub struct RoutesArgs {
    /// Another node's pod CIDR and the node's IP; routes of ours to nodes not listed are
    /// removed
    #[arg(value_name = "NODE_IP=POD_CIDR", value_parser = parse_node_route)]
    nodes: Vec<(Ipv4Addr, Ipv4Net)>,
}

impl RoutesArgs {
    pub fn run(self, opts: &NodeOptions) -> Result<ExitCode> {
        require_root("podctl routes")?;
        opts.network().sync_node_routes(&self.nodes)?;
        Ok(ExitCode::SUCCESS)
    }
}

fn parse_node_route(arg: &str) -> Result<(Ipv4Addr, Ipv4Net)> {
    let (ip, cidr) = arg.split_once('=').context("NODE_IP=POD_CIDR expected")?;
    let ip = ip.parse().with_context(|| format!("bad node IP {ip:?}"))?;
    let cidr = cidr.parse().with_context(|| format!("bad pod CIDR {cidr:?}"))?;
    Ok((ip, cidr))
}
