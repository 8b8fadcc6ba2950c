//! The client of the API server every part of podctl that calls it uses (node agent,
//! controllers): kube-rs, from a kubeconfig (`--server`
//! overriding its address), and the certificate authority that kubeconfig trusts, which
//! is also the one of the API server's client certificate towards this node; and the
//! watches (reflectors) the agent keeps of the objects it reads.

use std::path::Path;

use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine;
use futures_util::StreamExt;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::Notify;

/// A reflector of every object of a kind, kept by a task of its own; `changed`, when
/// given, is woken at each change.
pub fn reflect<K>(client: kube::Client, changed: Option<Arc<Notify>>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(Api::<K>::all(client), watcher::Config::default()).default_backoff().reflect(writer);
    tokio::spawn(stream.for_each(move |_| {
        if let Some(changed) = &changed {
            changed.notify_one();
        }
        async {}
    }));
    reader
}

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
    Ok((client_as(&config, "kubelet")?, authority))
}

/// The configuration of clients from a kubeconfig already read.
pub async fn config_of(kubeconfig: Kubeconfig) -> Result<kube::Config> {
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("a kubeconfig kube-rs can use")
}

/// A client that names itself `component` (the User-Agent, which the API server records
/// as the manager of the fields it writes, as kube-apiserver does).
pub fn client_as(config: &kube::Config, component: &str) -> Result<kube::Client> {
    let mut config = config.clone();
    let agent = format!("{component}/{}", env!("CARGO_PKG_VERSION"));
    config
        .headers
        .push((axum::http::header::USER_AGENT, axum::http::HeaderValue::from_str(&agent).context("a user agent")?));
    kube::Client::try_from(config).context("a client of the API server")
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

/// Now, as the API's times are written (metav1.Time: seconds, UTC).
pub fn now() -> String {
    let nano = runtime::logs::rfc3339_nano(std::time::SystemTime::now());
    format!("{}Z", &nano[..19])
}

/// What the error says, or why the API could not be asked.
pub fn message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{}: {}", status.code, status.message),
        other => other.to_string(),
    }
}

/// The JSON merge patch (RFC 7386) that turns `from` into `to`.
pub fn merge_patch(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in b {
                match a.get(key) {
                    Some(old) if old == value => {}
                    Some(old) if old.is_object() && value.is_object() => {
                        patch.insert(key.clone(), merge_patch(old, value));
                    }
                    _ => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in a.keys().filter(|k| !b.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => to.clone(),
    }
}

/// Delete options for an object that must still be the one seen (its uid).
pub fn delete_params(uid: String, propagation: Option<kube::api::PropagationPolicy>) -> kube::api::DeleteParams {
    kube::api::DeleteParams {
        propagation_policy: propagation,
        preconditions: Some(kube::api::Preconditions { uid: Some(uid), resource_version: None }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patches_remove_what_is_gone() {
        let from = json!({"phase": "Pending", "state": {"waiting": {"reason": "x"}}, "podIP": "1"});
        let to = json!({"phase": "Running", "state": {"running": {"startedAt": "t"}}, "podIP": "1"});
        assert_eq!(
            merge_patch(&from, &to),
            json!({"phase": "Running", "state": {"running": {"startedAt": "t"}, "waiting": null}})
        );
    }
}
