//! Pod network and service proxy. Knows nothing of containers: only network
//! namespaces by path.

pub mod hostports;
mod ipam;
mod iptables;
mod link;
mod pod;
pub mod proxy;

use std::io;

pub use ipam::Ipam;
pub use ipnet::Ipv4Net;
pub use iptables::Iptables;
pub use pod::{NetworkConfig, PodAddress, PodNetwork, node_rules};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
    #[error("{context}: {message}")]
    Netlink { context: String, message: String },
    #[error("no free address left in pod CIDR {0}")]
    CidrExhausted(Ipv4Net),
    #[error("{0}")]
    Iptables(String),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |error| Error::Io { context, error }
    }
}
