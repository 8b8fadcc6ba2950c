//! The cluster's certificates, as k3s makes them at first start: a certificate authority
//! kept on the API server's disk (`DATA_DIR/apiserver/pki/ca.{crt,key}`, the key 0600),
//! and leaf certificates issued from it at every start and kept in memory only (so they
//! always name the server's current addresses, never expire while it runs for a year, and
//! a start on a full disk writes nothing):
//!
//! - the API server's serving certificate (the kubeconfig trusts the authority);
//! - the API server's client certificate for nodes' endpoints, the one client a node's
//!   endpoint lets in (kube-apiserver's `--kubelet-client-certificate`): it names
//!   [`KUBELET_CLIENT`], which no other certificate of the authority does.
//!
//! A node's endpoint serves with a certificate it makes itself, as kubelet's
//! `kubelet.crt`; the API server does not check it (kube-apiserver without
//! `--kubelet-certificate-authority` does not either).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::prelude::FromDer;

/// The name in the API server's client certificate for nodes (kubeadm's CN for it).
pub const KUBELET_CLIENT: &str = "kube-apiserver-kubelet-client";
const CA_NAME: &str = "podctl-ca";
const CA_DAYS: i64 = 10 * 365;
const LEAF_DAYS: i64 = 365;

/// The key that signs service account tokens (kube-apiserver's
/// `--service-account-signing-key-file`): an ECDSA P-256 key in `dir/sa.key`, made there at
/// first start. Its private and public halves, PEM.
pub fn service_account_key(dir: &Path) -> Result<(String, String)> {
    let path = dir.join("sa.key");
    let key = match std::fs::read_to_string(&path) {
        Ok(pem) => KeyPair::from_pem(&pem).with_context(|| format!("{}: not a private key", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate().context("make the service account signing key")?;
            runtime::state::create_private_dir(dir).with_context(|| format!("create {}", dir.display()))?;
            crate::files::write_private(&path, key.serialize_pem().as_bytes())?;
            key
        }
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    Ok((key.serialize_pem(), key.public_key_pem()))
}

/// A certificate and its private key, PEM.
pub struct KeyedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster's certificate authority.
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
    pub cert_pem: String,
}

impl Authority {
    /// The authority in `dir` (`ca.crt`, `ca.key`), made there if it is not yet.
    pub fn open_or_create(dir: &Path) -> Result<Authority> {
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        let params = ca_params()?;
        if key_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).with_context(|| format!("read {}", key_path.display()))?;
            let key =
                KeyPair::from_pem(&key_pem).with_context(|| format!("{}: not a private key", key_path.display()))?;
            let cert_pem =
                std::fs::read_to_string(&cert_path).with_context(|| format!("read {}", cert_path.display()))?;
            return Ok(Authority { params, key, cert_pem });
        }
        let key = KeyPair::generate().context("make the certificate authority's key")?;
        let mut dated = params.clone();
        (dated.not_before, dated.not_after) = validity(CA_DAYS);
        let cert_pem = dated.self_signed(&key).context("sign the certificate authority")?.pem();
        runtime::state::create_private_dir(dir).with_context(|| format!("create {}", dir.display()))?;
        // The key last, by rename: a key without its certificate never stands alone.
        crate::files::write_private(&cert_path, cert_pem.as_bytes())?;
        crate::files::write_private(&key_path, key.serialize_pem().as_bytes())?;
        Ok(Authority { params, key, cert_pem })
    }

    /// A serving certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[String]) -> Result<KeyedCertificate> {
        self.issue(names.first().map_or("podctl", String::as_str), names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// The API server's client certificate for nodes' endpoints.
    pub fn issue_kubelet_client(&self) -> Result<KeyedCertificate> {
        self.issue(KUBELET_CLIENT, &[KUBELET_CLIENT.to_string()], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, common_name: &str, names: &[String], usage: ExtendedKeyUsagePurpose) -> Result<KeyedCertificate> {
        let mut params = leaf_params(common_name, names)?;
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).with_context(|| format!("issue a certificate for {common_name}"))?;
        Ok(KeyedCertificate { cert_pem: format!("{}{}", cert.pem(), self.cert_pem), key_pem: key.serialize_pem() })
    }
}

/// A self-signed serving certificate for `names` (a node's endpoint).
pub fn self_signed_server(names: &[String]) -> Result<KeyedCertificate> {
    let mut params = leaf_params(names.first().map_or("podctl", String::as_str), names)?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key).context("make a serving certificate")?;
    Ok(KeyedCertificate { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// What the authority signs with: its name, usages and key identifier, the same each time
/// they are made again from its files (its validity is only in its certificate).
fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// From an hour ago (clocks differ a little) to `days` from now.
fn validity(days: i64) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (now - time::Duration::hours(1), now + time::Duration::days(days))
}

fn leaf_params(common_name: &str, names: &[String]) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.subject_alt_names = names
        .iter()
        .map(|name| match name.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(name.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    (params.not_before, params.not_after) = validity(LEAF_DAYS);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn chain_and_key(certificate: &KeyedCertificate) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = CertificateDer::pem_slice_iter(certificate.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("not a PEM certificate")?;
    let key = PrivateKeyDer::from_pem_slice(certificate.key_pem.as_bytes()).context("not a PEM private key")?;
    Ok((chain, key))
}

/// Serving with `certificate`, letting any client connect.
pub fn acceptor(certificate: &KeyedCertificate) -> Result<TlsAcceptor> {
    let (chain, key) = chain_and_key(certificate)?;
    let config =
        ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key).context("serving certificate")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The API server's serving: its certificate, and client certificates of the authority
/// `client_ca_pem` taken as who the client is (kube-apiserver's `--client-ca-file`);
/// clients without one authenticate otherwise.
pub fn acceptor_for_clients(certificate: &KeyedCertificate, client_ca_pem: &[u8]) -> Result<TlsAcceptor> {
    let (chain, key) = chain_and_key(certificate)?;
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots(client_ca_pem)?))
        .allow_unauthenticated()
        .build()
        .context("client certificate authority")?;
    let config = ServerConfig::builder().with_client_cert_verifier(verifier).with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn roots(ca_pem: &[u8]) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.context("the certificate authority is not PEM")?).context("certificate authority")?;
    }
    Ok(roots)
}

/// Who a client certificate names: its common name (the user) and organizations (the
/// groups), as kube-apiserver's x509 authenticator reads them.
pub fn client_identity(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(String::from)).collect();
    Some((name, groups))
}

/// What a certificate signing request asks to be named: its common name and
/// organizations, with the DNS names and IP addresses it asks for.
pub struct Requested {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub names: Vec<String>,
}

/// What `read` takes from the PEM certificate signing request `pem`.
fn parse_request<T>(
    pem: &[u8],
    read: impl FnOnce(&x509_parser::certification_request::X509CertificationRequest) -> Result<T>,
) -> Result<T> {
    let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem)
        .map_err(|_| anyhow::anyhow!("PEM block type must be CERTIFICATE REQUEST"))?;
    let (_, request) = x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| anyhow::anyhow!("not a certificate request: {e}"))?;
    read(&request)
}

/// Reads a PEM certificate signing request and checks its signature.
pub fn read_request(pem: &[u8]) -> Result<Requested> {
    parse_request(pem, read_parsed_request)
}

fn read_parsed_request(request: &x509_parser::certification_request::X509CertificationRequest) -> Result<Requested> {
    request.verify_signature().map_err(|_| anyhow::anyhow!("the request's signature does not verify"))?;
    let subject = &request.certification_request_info.subject;
    let text_of = |v: &x509_parser::x509::AttributeTypeAndValue| v.as_str().ok().map(String::from);
    let mut names = Vec::new();
    for extension in request.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = extension {
            for name in &san.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => names.push(dns.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                        4 => {
                            names.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).expect("4 bytes")).to_string())
                        }
                        16 => names
                            .push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).expect("16 bytes")).to_string()),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
    }
    Ok(Requested {
        common_name: subject.iter_common_name().next().and_then(text_of).unwrap_or_default(),
        organizations: subject.iter_organization().filter_map(text_of).collect(),
        names,
    })
}

impl Authority {
    /// Signs a PEM certificate signing request for `usages` (Kubernetes' key usage names)
    /// and `duration`: the certificate, PEM. What the request names is kept — its subject
    /// byte for byte, every attribute (two organizations are two groups) —; what the
    /// certificate may be used for is what was approved, not what the request says.
    pub fn sign_request(&self, pem: &str, usages: &[String], duration: std::time::Duration) -> Result<String> {
        let subject = parse_request(pem.as_bytes(), |r| Ok(r.certification_request_info.subject.as_raw().to_vec()))?;
        let mut request = rcgen::CertificateSigningRequestParams::from_pem(pem).context("read the request")?;
        let params = &mut request.params;
        let now = time::OffsetDateTime::now_utc();
        // As kube-controller-manager's signer: valid from five minutes ago, for clock skew.
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + duration;
        params.is_ca = IsCa::NoCa;
        params.key_usages = Vec::new();
        params.extended_key_usages = Vec::new();
        for usage in usages {
            match usage.as_str() {
                "digital signature" => params.key_usages.push(KeyUsagePurpose::DigitalSignature),
                "key encipherment" => params.key_usages.push(KeyUsagePurpose::KeyEncipherment),
                "client auth" => params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth),
                "server auth" => params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth),
                _ => {}
            }
        }
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let signed = request.signed_by(&issuer).context("sign the request")?;
        // rcgen keeps one value per attribute type: the subject is the request's own.
        let certificate = with_subject(signed.der(), &subject, &self.key)?;
        Ok(pem_certificate(&certificate))
    }
}

/// `certificate` (DER) with its subject replaced by `subject` (a DER Name), signed again
/// by `key`, which signed it. RFC 5280 §4.1: Certificate ::= SEQUENCE { tbsCertificate,
/// signatureAlgorithm, signatureValue BIT STRING }.
fn with_subject(certificate: &[u8], subject: &[u8], key: &KeyPair) -> Result<Vec<u8>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).context("read the certificate made")?;
    let tbs: &[u8] = parsed.tbs_certificate.as_ref();
    let old = parsed.subject().as_raw();
    let at = old.as_ptr() as usize - tbs.as_ptr() as usize;
    let mut content = tbs[der_header_len(tbs)..at].to_vec();
    content.extend_from_slice(subject);
    content.extend_from_slice(&tbs[at + old.len()..]);
    let tbs_certificate = der_element(0x30, &content);

    let algorithm_at = der_header_len(certificate) + tbs.len();
    let rest = &certificate[algorithm_at..];
    let algorithm = &rest[..der_header_len(rest) + der_content_len(rest)];
    let mut signature = vec![0]; // no unused bits
    signature.extend(rcgen::SigningKey::sign(key, &tbs_certificate).context("sign the certificate")?);
    let mut content = tbs_certificate;
    content.extend_from_slice(algorithm);
    content.extend(der_element(0x03, &signature));
    Ok(der_element(0x30, &content))
}

/// The length of a DER element's tag and length octets (the short or long form).
fn der_header_len(der: &[u8]) -> usize {
    match der.get(1) {
        Some(&len) if len >= 0x80 => 2 + usize::from(len & 0x7f),
        _ => 2,
    }
}

fn der_content_len(der: &[u8]) -> usize {
    match der.get(1) {
        Some(&len) if len >= 0x80 => {
            der[2..der_header_len(der)].iter().fold(0, |total, byte| (total << 8) | usize::from(*byte))
        }
        Some(&len) => usize::from(len),
        None => 0,
    }
}

fn der_element(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut element = vec![tag];
    match content.len() {
        len @ 0..0x80 => element.push(len as u8),
        len => {
            let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
            element.push(0x80 | bytes.len() as u8);
            element.extend(bytes);
        }
    }
    element.extend_from_slice(content);
    element
}

fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = text.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).expect("base64")).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

/// A PEM certificate (chain) and key from files (`--tls-cert-file`).
pub fn read_files(cert_file: &Path, key_file: &Path) -> Result<KeyedCertificate> {
    let read = |path: &Path| std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()));
    Ok(KeyedCertificate { cert_pem: read(cert_file)?, key_pem: read(key_file)? })
}

/// Serving a node's endpoint: only the API server's client certificate (signed by the
/// authority `ca_pem`, naming [`KUBELET_CLIENT`]) gets in.
pub fn acceptor_for_api_server(certificate: &KeyedCertificate, ca_pem: &[u8]) -> Result<TlsAcceptor> {
    let (chain, key) = chain_and_key(certificate)?;
    let webpki =
        WebPkiClientVerifier::builder(Arc::new(roots(ca_pem)?)).build().context("client certificate authority")?;
    let verifier = Arc::new(ApiServerClient { webpki });
    let config = ServerConfig::builder().with_client_cert_verifier(verifier).with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The API server's connections to nodes' endpoints: its client certificate, and no check
/// of theirs (see the module's note).
pub fn connector_to_nodes(client: &KeyedCertificate) -> Result<TlsConnector> {
    let (chain, key) = chain_and_key(client)?;
    let config = ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_auth_cert(chain, key)
        .context("client certificate")?;
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A client certificate of the authority that names [`KUBELET_CLIENT`].
#[derive(Debug)]
struct ApiServerClient {
    webpki: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for ApiServerClient {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.webpki.verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::General("unreadable client certificate".into()))?;
        let name = ServerName::try_from(KUBELET_CLIENT).expect("a valid name");
        cert.verify_is_valid_for_subject_name(&name)
            .map_err(|_| rustls::Error::General(format!("the client certificate is not {KUBELET_CLIENT}'s")))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A client that takes any server's certificate (kubelet's HTTPS probes: the pod's is not
/// checked).
pub fn any_server() -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder().dangerous().with_custom_certificate_verifier(Arc::new(AnyServer)).with_no_client_auth(),
    )
}

/// Any server's certificate (its signatures still checked): nodes' (see the module's
/// note) and pods' (HTTPS probes).
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_is_kept_and_signs_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::open_or_create(&dir.path().join("pki")).unwrap();
        let again = Authority::open_or_create(&dir.path().join("pki")).unwrap();
        assert_eq!(ca.cert_pem, again.cert_pem);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("pki/ca.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // What the second one issues chains to the first one's certificate.
        let server = again.issue_server(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let (chain, _) = chain_and_key(&server).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots)).build().unwrap();
        for name in ["localhost", "127.0.0.1"] {
            let name = ServerName::try_from(name).unwrap();
            verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now()).unwrap();
        }
        let other = ServerName::try_from("example.com").unwrap();
        assert!(verifier.verify_server_cert(&chain[0], &chain[1..], &other, &[], UnixTime::now()).is_err());
    }

    #[test]
    fn a_signed_request_keeps_its_whole_subject_and_chains_to_the_authority() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::open_or_create(dir.path()).unwrap();
        // Two organizations (two groups): the second under the same OID, as rcgen allows it.
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "jane");
        params.distinguished_name.push(DnType::OrganizationName, "devs");
        params.distinguished_name.push(DnType::CustomDnType(vec![2, 5, 4, 10]), "qa");
        let key = KeyPair::generate().unwrap();
        let request = params.serialize_request(&key).unwrap().pem().unwrap();
        let usages = ["client auth".to_string()];
        let pem = ca.sign_request(&request, &usages, std::time::Duration::from_secs(3600)).unwrap();

        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(client_identity(&der), Some(("jane".into(), vec!["devs".into(), "qa".into()])));
        let request_der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(request.as_bytes()).unwrap();
        let (_, parsed_request) =
            x509_parser::certification_request::X509CertificationRequest::from_der(request_der.as_ref()).unwrap();
        let (_, certificate) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(certificate.subject().as_raw(), parsed_request.certification_request_info.subject.as_raw());
        // The authority's signature holds over the new subject, and rustls accepts it.
        let ca_der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap();
        let (_, ca_certificate) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        certificate.verify_signature(Some(ca_certificate.public_key())).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca.cert_pem.as_bytes()).unwrap()), provider())
                .build()
                .unwrap();
        verifier.verify_client_cert(&der, &[], UnixTime::now()).unwrap();
    }

    #[test]
    fn a_node_lets_in_the_api_servers_client_certificate_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::open_or_create(dir.path()).unwrap();
        let roots = {
            let mut roots = RootCertStore::empty();
            roots.add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap()).unwrap();
            Arc::new(roots)
        };
        let verifier = ApiServerClient { webpki: WebPkiClientVerifier::builder(roots).build().unwrap() };
        let verify = |certificate: &KeyedCertificate| {
            let (chain, _) = chain_and_key(certificate).unwrap();
            verifier.verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        };
        assert!(verify(&ca.issue_kubelet_client().unwrap()).is_ok());
        // The authority's serving certificate is no client; another authority's client
        // certificate is no one's.
        assert!(verify(&ca.issue_server(&["localhost".into()]).unwrap()).is_err());
        let stranger = Authority::open_or_create(&dir.path().join("other")).unwrap();
        assert!(verify(&stranger.issue_kubelet_client().unwrap()).is_err());
    }
}
