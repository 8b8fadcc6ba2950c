//! Service account tokens, as kube-apiserver issues and checks them: JWTs (ES256) signed by
//! the server's key, with kube-apiserver's claims (issuer, audiences, expiry, and the
//! service account and bound object under `kubernetes.io`). `serviceaccounts/token`
//! (TokenRequest) issues them; authentication accepts them while the service account (and
//! the pod or secret they are bound to) still exists with the same uid.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::authentication::{AUTHENTICATED, User};
use super::errors::ApiError;

/// kube-apiserver's `--service-account-issuer` as kubeadm sets it, and the default
/// audience of the tokens it issues.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// kube-apiserver's bounds and default for a TokenRequest's expirationSeconds.
const MIN_SECONDS: i64 = 600;
const MAX_SECONDS: i64 = 1 << 32;
const DEFAULT_SECONDS: i64 = 3600;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Private,
}

#[derive(Debug, Serialize, Deserialize)]
struct Private {
    namespace: String,
    serviceaccount: Reference,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pod: Option<Reference>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    secret: Option<Reference>,
}

#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct Reference {
    pub name: String,
    pub uid: String,
}

/// Who a verified token says it is, for authentication to check against the store.
pub struct Bearer {
    pub namespace: String,
    pub account: Reference,
    pub pod: Option<Reference>,
    pub secret: Option<Reference>,
}

impl Bearer {
    pub fn user(&self) -> User {
        let namespace = &self.namespace;
        User {
            name: format!("system:serviceaccount:{namespace}:{}", self.account.name),
            uid: self.account.uid.clone(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED.into(),
            ],
        }
    }
}

pub struct Issuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Issuer {
    pub fn new(private_pem: &str, public_pem: &str) -> anyhow::Result<Issuer> {
        Ok(Issuer {
            encoding: EncodingKey::from_ec_pem(private_pem.as_bytes())?,
            decoding: DecodingKey::from_ec_pem(public_pem.as_bytes())?,
        })
    }

    /// A TokenRequest's status: a token for `account` in `namespace` (bound to `bound`,
    /// a pod or secret, when given), from the request's spec.
    pub fn request(
        &self,
        namespace: &str,
        account: Reference,
        bound: Option<(&str, Reference)>,
        spec: &Value,
    ) -> Result<Value, ApiError> {
        let seconds = spec["expirationSeconds"].as_i64().unwrap_or(DEFAULT_SECONDS);
        if seconds < MIN_SECONDS {
            return Err(ApiError::invalid(
                "TokenRequest",
                &account.name,
                vec![(
                    "spec.expirationSeconds".into(),
                    format!("Invalid value: {seconds}: may not specify a duration less than 10 minutes"),
                )],
            ));
        }
        if seconds > MAX_SECONDS {
            return Err(ApiError::invalid(
                "TokenRequest",
                &account.name,
                vec![(
                    "spec.expirationSeconds".into(),
                    format!("Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds"),
                )],
            ));
        }
        let audiences: Vec<String> =
            spec["audiences"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect();
        let audiences = if audiences.is_empty() { vec![ISSUER.to_string()] } else { audiences };
        let issued = now();
        let (mut pod, mut secret) = (None, None);
        match bound {
            Some(("Pod", reference)) => pod = Some(reference),
            Some((_, reference)) => secret = Some(reference),
            None => {}
        }
        let claims = Claims {
            iss: ISSUER.into(),
            sub: format!("system:serviceaccount:{namespace}:{}", account.name),
            aud: audiences.clone(),
            exp: issued + seconds,
            iat: issued,
            nbf: issued,
            jti: super::objects::new_uid(),
            kubernetes: Private { namespace: namespace.into(), serviceaccount: account, pod, secret },
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("signing a token: {e}")))?;
        let expires = time::OffsetDateTime::from_unix_timestamp(issued + seconds)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
        Ok(json!({"token": token, "expirationTimestamp": expires}))
    }

    /// What a token says, if this server signed it, it has not expired and it is meant
    /// for this server (its audiences include the issuer).
    pub fn verify(&self, token: &str) -> Option<Bearer> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[ISSUER]);
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).ok()?.claims;
        Some(Bearer {
            namespace: claims.kubernetes.namespace,
            account: claims.kubernetes.serviceaccount,
            pod: claims.kubernetes.pod,
            secret: claims.kubernetes.secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_as_issued() {
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = Issuer::new(&key.serialize_pem(), &key.public_key_pem()).unwrap();
        let account = Reference { name: "robot".into(), uid: "u1".into() };
        let status = issuer.request("team", account, None, &json!({})).unwrap();
        let bearer = issuer.verify(status["token"].as_str().unwrap()).unwrap();
        assert_eq!(bearer.user().name, "system:serviceaccount:team:robot");
        assert_eq!(bearer.user().groups, ["system:serviceaccounts", "system:serviceaccounts:team", AUTHENTICATED]);
        let elsewhere = issuer.request("team", bearer.account.clone(), None, &json!({"audiences": ["vault"]})).unwrap();
        assert!(issuer.verify(elsewhere["token"].as_str().unwrap()).is_none(), "a token for another audience");
        let other = rcgen::KeyPair::generate().unwrap();
        let forger = Issuer::new(&other.serialize_pem(), &other.public_key_pem()).unwrap();
        let forged = forger.request("team", bearer.account.clone(), None, &json!({})).unwrap();
        assert!(issuer.verify(forged["token"].as_str().unwrap()).is_none());
        let short = issuer.request("team", bearer.account, None, &json!({"expirationSeconds": 60})).unwrap_err();
        assert!(short.message.contains("may not specify a duration less than 10 minutes"), "{}", short.message);
    }
}
