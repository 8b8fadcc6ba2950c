//! Registry credentials from a docker `config.json` (or podman's `auth.json`, same format).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use crate::{Error, Result};

/// Username and password per registry host.
#[derive(Clone, Debug, Default)]
pub struct RegistryCredentials {
    by_registry: HashMap<String, (String, String)>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl RegistryCredentials {
    /// Reads `path`, or else the first that exists of `$REGISTRY_AUTH_FILE`,
    /// `$XDG_RUNTIME_DIR/containers/auth.json`, `$DOCKER_CONFIG/config.json`,
    /// `~/.docker/config.json`. No file means anonymous access.
    pub fn load(path: Option<&Path>) -> Result<RegistryCredentials> {
        if let Some(path) = path {
            return RegistryCredentials::read(path);
        }
        let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
        let candidates = [
            env("REGISTRY_AUTH_FILE"),
            env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")),
            env("DOCKER_CONFIG").map(|d| d.join("config.json")),
            env("HOME").map(|d| d.join(".docker/config.json")),
        ];
        match candidates.into_iter().flatten().find(|p| p.exists()) {
            Some(path) => RegistryCredentials::read(&path),
            None => Ok(RegistryCredentials::default()),
        }
    }

    fn read(path: &Path) -> Result<RegistryCredentials> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::Credentials { path: path.to_path_buf(), reason: e.to_string() })?;
        RegistryCredentials::parse(&bytes, path)
    }

    /// A docker config (`{"auths": …}`, a `kubernetes.io/dockerconfigjson` Secret's
    /// `.dockerconfigjson`); `source` names it in errors.
    pub fn parse(bytes: &[u8], source: &Path) -> Result<RegistryCredentials> {
        let bad = |reason: String| Error::Credentials { path: source.to_path_buf(), reason };
        let file: ConfigFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let mut by_registry = HashMap::new();
        for (key, entry) in file.auths {
            let pair = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .ok()
                        .and_then(|d| String::from_utf8(d).ok())
                        .ok_or_else(|| bad(format!("auths.{key}.auth is not base64 of USER:PASSWORD")))?;
                    let (user, password) = decoded
                        .split_once(':')
                        .ok_or_else(|| bad(format!("auths.{key}.auth is not base64 of USER:PASSWORD")))?;
                    (user.to_string(), password.to_string())
                }
                (_, Some(user), Some(password)) => (user, password),
                _ => continue,
            };
            by_registry.insert(registry_host(&key), pair);
        }
        Ok(RegistryCredentials { by_registry })
    }

    /// Adds `other`'s registries (the first credentials for a registry win, as kubelet
    /// takes a pod's imagePullSecrets in order).
    pub fn merge(&mut self, other: RegistryCredentials) {
        for (registry, pair) in other.by_registry {
            self.by_registry.entry(registry).or_insert(pair);
        }
    }

    /// The credentials for `registry` (as in a reference: `docker.io`, `localhost:5000`).
    pub fn for_registry(&self, registry: &str) -> Option<&(String, String)> {
        let host = registry_host(registry);
        self.by_registry.get(&host)
    }
}

/// `https://index.docker.io/v1/` and `docker.io` are one registry; keys may be URLs.
fn registry_host(key: &str) -> String {
    let host = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
                         "localhost:5000":{"username":"u","password":"p"},
                         "empty.example":{}}}"#,
        )
        .unwrap();
        let creds = RegistryCredentials::load(Some(&path)).unwrap();
        assert_eq!(creds.for_registry("docker.io"), Some(&("user".into(), "pa:ss".into())));
        assert_eq!(creds.for_registry("localhost:5000"), Some(&("u".into(), "p".into())));
        assert_eq!(creds.for_registry("empty.example"), None);
        std::fs::write(&path, r#"{"auths":{"x":{"auth":"!!"}}}"#).unwrap();
        let err = RegistryCredentials::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("auths.x.auth"), "{err}");
    }
}
