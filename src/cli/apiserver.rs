//! `podctl apiserver`: flags to the server's configuration.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::NodeOptions;
use crate::apiserver;

#[derive(Args)]
pub struct ApiserverArgs {
    /// Address and port to serve on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Keep objects in etcd (comma-separated client URLs) instead of the embedded store
    #[arg(long, value_name = "URL,...", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Bearer tokens, one `token,user,uid[,"group,..."]` per line: every request must carry
    /// one of them (default: DATA_DIR/apiserver/tokens.csv, made at first start with an
    /// admin token, which the kubeconfig carries)
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// No authentication (anyone who reaches the port is admin), and plain HTTP unless
    /// --tls-cert-file is given
    #[arg(long)]
    allow_unauthenticated: bool,
    /// Serve HTTPS with this PEM certificate (chain) instead of one from the cluster's
    /// certificate authority (DATA_DIR/apiserver/pki, made at first start)
    #[arg(long, value_name = "FILE", requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// Where Services' cluster IPs come from
    #[arg(long, value_name = "CIDR", default_value = "10.96.0.0/12")]
    service_cluster_ip_range: net::Ipv4Net,
    /// Where NodePorts come from
    #[arg(long, value_name = "LOW-HIGH", default_value = "30000-32767", value_parser = parse_port_range)]
    service_node_port_range: RangeInclusive<u16>,
    /// Seconds between compactions of the store's history (kube-apiserver's etcd default)
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    compaction_interval: u64,
    /// The controllers to run in this process: `*` all, `NAME` one more, `-NAME` one
    /// fewer (scheduler, replicaset, deployment, endpoint, endpointslice,
    /// endpointslicemirroring, garbagecollector, namespace, job, cronjob, daemonset,
    /// statefulset, local-path-provisioner, persistentvolumeclaim-protection,
    /// persistentvolume-protection, horizontalpodautoscaling, nodeipam, nodelifecycle)
    #[arg(long, value_name = "NAME,...", value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    /// Where nodes' pod CIDRs come from: a /24 each, for nodes that have none
    #[arg(long, value_name = "CIDR", default_value = "10.244.0.0/16")]
    cluster_cidr: net::Ipv4Net,
    /// Seconds a node may go without renewing its Lease before it is marked Ready=Unknown
    /// and tainted unreachable
    #[arg(long, value_name = "SECONDS", default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..))]
    node_monitor_grace_period: u64,
    /// Seconds an autoscaler keeps its highest recommendation before it scales down (for
    /// autoscalers whose behavior sets no window)
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    horizontal_pod_autoscaler_downscale_stabilization: u64,
    /// Seconds pods tolerate a not-ready node before they are evicted, unless they say
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// Seconds pods tolerate an unreachable node before they are evicted, unless they say
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
}

impl ApiserverArgs {
    pub fn run(self, opts: &NodeOptions) -> Result<ExitCode> {
        apiserver::run(self.config(opts)?)?;
        Ok(ExitCode::SUCCESS)
    }

    pub fn config(self, opts: &NodeOptions) -> Result<apiserver::Config> {
        Ok(apiserver::Config {
            listen: self.listen,
            data_dir: opts.data_dir.clone(),
            etcd_endpoints: self.etcd_endpoints,
            token_file: self.token_file,
            allow_unauthenticated: self.allow_unauthenticated,
            tls: self.tls_cert_file.zip(self.tls_private_key_file),
            service_cidr: self.service_cluster_ip_range,
            node_ports: self.service_node_port_range,
            compaction_interval: std::time::Duration::from_secs(self.compaction_interval),
            controllers: crate::controllers::Config {
                enabled: crate::controllers::parse_enabled(&self.controllers)?,
                cluster_cidr: self.cluster_cidr,
                node_monitor_grace_period: std::time::Duration::from_secs(self.node_monitor_grace_period),
                downscale_stabilization: std::time::Duration::from_secs(
                    self.horizontal_pod_autoscaler_downscale_stabilization,
                ),
            },
            default_toleration_seconds: (
                self.default_not_ready_toleration_seconds,
                self.default_unreachable_toleration_seconds,
            ),
        })
    }

    /// Whether the server lets anyone in.
    pub fn unauthenticated(&self) -> bool {
        self.allow_unauthenticated
    }

    /// The tenth address of the Services' range: the cluster DNS's, by kubeadm's and k3s's
    /// convention.
    pub fn cluster_dns_ip(&self) -> std::net::Ipv4Addr {
        let network = u32::from(self.service_cluster_ip_range.network());
        std::net::Ipv4Addr::from(network + 10)
    }
}

fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>> {
    let (low, high) = s.split_once('-').context("LOW-HIGH expected")?;
    let (low, high): (u16, u16) = (low.parse().context("bad low port")?, high.parse().context("bad high port")?);
    anyhow::ensure!(low <= high, "the range {low}-{high} is empty");
    Ok(low..=high)
}
