//! One HTTP/1.1 request on a connection of its own, over TCP or TLS, with upgrades kept
//! possible: the API server's proxy to nodes' endpoints.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::body::Body;
use axum::http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the response head may take (its body may stream for as long as it lasts).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `request` (its URI absolute: `http://` or, with `tls`, `https://`) and returns the
/// response head with its body still streaming; a `101 Switching Protocols` response can
/// be taken over with `hyper::upgrade::on`.
pub async fn send(request: Request<Body>, tls: Option<&TlsConnector>) -> Result<Response<Incoming>> {
    let uri = request.uri().clone();
    let (host, port) = host_port(&uri)?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
        .with_context(|| format!("connect to {host}:{port}: timed out"))?
        .with_context(|| format!("connect to {host}:{port}"))?;
    stream.set_nodelay(true)?;
    let mut request = request;
    *request.uri_mut() = uri.path_and_query().map_or("/", |p| p.as_str()).parse()?;
    let authority = uri.authority().with_context(|| format!("{uri}: no host"))?;
    request.headers_mut().insert(axum::http::header::HOST, authority.as_str().parse()?);
    match (uri.scheme_str(), tls) {
        (Some("https"), Some(tls)) => {
            let name = ServerName::try_from(host.clone()).with_context(|| format!("server name {host}"))?;
            let stream = tls.connect(name, stream).await.with_context(|| format!("TLS handshake with {host}"))?;
            exchange(TokioIo::new(stream), request).await
        }
        (Some("https"), None) => bail!("{uri}: https needs a certificate authority"),
        _ => exchange(TokioIo::new(stream), request).await,
    }
}

async fn exchange<T>(io: T, request: Request<Body>) -> Result<Response<Incoming>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    match tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(request)).await {
        Ok(response) => Ok(response?),
        Err(_) => bail!("no answer in {} s", RESPONSE_TIMEOUT.as_secs()),
    }
}

fn host_port(uri: &Uri) -> Result<(String, u16)> {
    let host = uri.host().with_context(|| format!("{uri}: no host"))?;
    let default = if uri.scheme_str() == Some("https") { 443 } else { 80 };
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), uri.port_u16().unwrap_or(default)))
}
