//! The node agent's client of the API server: where it is and how to prove who we are,
//! from a kubeconfig (`--server` overriding its address), and JSON requests to it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use axum::body::Body;
use axum::http::{Method, Request, header};
use base64::Engine;
use serde_json::Value;
use tokio_rustls::TlsConnector;

pub struct ApiClient {
    server: String,
    token: Option<String>,
    tls: Option<TlsConnector>,
    /// The certificate authority the kubeconfig trusts (PEM).
    ca: Option<Vec<u8>>,
}

impl ApiClient {
    /// The current context's cluster and user of the kubeconfig at `path` (YAML or JSON).
    pub fn from_kubeconfig(path: &Path, server: Option<&str>) -> Result<ApiClient> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let config: Value =
            serde_saphyr::from_str(&text).with_context(|| format!("{}: not a kubeconfig", path.display()))?;
        let named = |list: &str, name: &str| -> Result<Value> {
            config[list]
                .as_array()
                .and_then(|items| items.iter().find(|i| i["name"] == name))
                .map(|i| i[list.trim_end_matches('s')].clone())
                .with_context(|| format!("{}: no {list} entry named {name:?}", path.display()))
        };
        let context_name = config["current-context"].as_str().context("the kubeconfig has no current-context")?;
        let context = named("contexts", context_name)?;
        let cluster = named("clusters", context["cluster"].as_str().unwrap_or_default())?;
        let user = named("users", context["user"].as_str().unwrap_or_default()).unwrap_or_default();
        let ca = match (cluster["certificate-authority-data"].as_str(), cluster["certificate-authority"].as_str()) {
            (Some(data), _) => {
                Some(base64::engine::general_purpose::STANDARD.decode(data).context("certificate-authority-data")?)
            }
            (None, Some(file)) => Some(std::fs::read(file).with_context(|| format!("read {file}"))?),
            (None, None) => None,
        };
        let token = match (user["token"].as_str(), user["tokenFile"].as_str()) {
            (Some(token), _) => Some(token.to_string()),
            (None, Some(file)) => {
                Some(std::fs::read_to_string(file).with_context(|| format!("read {file}"))?.trim().into())
            }
            (None, None) => None,
        };
        let server = match server {
            Some(server) => server.to_string(),
            None => cluster["server"].as_str().context("the kubeconfig's cluster has no server")?.to_string(),
        };
        if !server.starts_with("http://") && !server.starts_with("https://") {
            bail!("server {server:?}: http:// or https:// expected");
        }
        let tls = ca.as_deref().map(crate::http_client::tls_connector).transpose()?;
        Ok(ApiClient { server: server.trim_end_matches('/').to_string(), token, tls, ca })
    }

    /// The certificate authority the kubeconfig trusts for the API server (PEM).
    pub fn certificate_authority(&self) -> Option<&[u8]> {
        self.ca.as_deref()
    }

    /// Sends a JSON body (or none) and returns the status and the JSON answer.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.server))
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, content_type);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let response = crate::http_client::send(request.body(body)?, self.tls.as_ref())
            .await
            .with_context(|| format!("{method} {}{path}", self.server))?;
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(Body::new(response.into_body()), 16 << 20);
        let bytes = tokio::time::timeout(std::time::Duration::from_secs(30), body)
            .await
            .with_context(|| format!("{method} {}{path}: the answer did not end", self.server))??;
        let value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Ok((status, value))
    }
}
