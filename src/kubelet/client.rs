//! The node agent's client of the API server: kube-rs, from a kubeconfig (`--server`
//! overriding its address), and the certificate authority that kubeconfig trusts, which
//! is also the one of the API server's client certificate towards this node.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A client from the kubeconfig at `path`, and its cluster's certificate authority (PEM),
/// if it names one.
pub async fn connect(path: &Path, server: Option<&str>) -> Result<(kube::Client, Option<Vec<u8>>)> {
    let kubeconfig = Kubeconfig::read_from(path).with_context(|| format!("{}: not a kubeconfig", path.display()))?;
    let authority = certificate_authority(&kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("{}: not a kubeconfig kube-rs can use", path.display()))?;
    if let Some(server) = server {
        anyhow::ensure!(
            server.starts_with("http://") || server.starts_with("https://"),
            "server {server:?}: http:// or https:// expected"
        );
        config.cluster_url = server.parse().with_context(|| format!("server {server:?}"))?;
    }
    let client = kube::Client::try_from(config).context("a client of the API server")?;
    Ok((client, authority))
}

/// The current context's cluster's certificate authority, PEM.
fn certificate_authority(kubeconfig: &Kubeconfig) -> Result<Option<Vec<u8>>> {
    let context_name = kubeconfig.current_context.as_deref().context("the kubeconfig has no current-context")?;
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .with_context(|| format!("the kubeconfig has no context {context_name:?}"))?;
    let Some(cluster) = kubeconfig.clusters.iter().find(|c| c.name == context.cluster).and_then(|c| c.cluster.as_ref())
    else {
        return Ok(None);
    };
    Ok(match (&cluster.certificate_authority_data, &cluster.certificate_authority) {
        (Some(data), _) => {
            Some(base64::engine::general_purpose::STANDARD.decode(data).context("certificate-authority-data")?)
        }
        (None, Some(file)) => Some(std::fs::read(file).with_context(|| format!("read {file}"))?),
        (None, None) => None,
    })
}
