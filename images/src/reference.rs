//! Image names, parsed and normalised as docker and containerd do (the grammar of
//! distribution/reference): `busybox` is `docker.io/library/busybox:latest`.
//!
//! Parsed by hand rather than with oci-spec's `Reference`: its grammar is one large
//! Unicode regular expression whose compilation costs tens of milliseconds in every
//! process that names an image, which is every `podctl run`.

use std::fmt;
use std::str::FromStr;

use oci_client::Reference;

use crate::{Digest, Error};

const DEFAULT_DOMAIN: &str = "docker.io";
const NAME_MAX: usize = 255;

/// A reference as a user writes it: a name with a tag, a digest, or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageName {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageName {
    /// The reference for a registry client.
    pub fn reference(&self) -> Reference {
        let (domain, path) = (self.domain.clone(), self.path.clone());
        match (&self.tag, &self.digest) {
            (Some(tag), Some(d)) => Reference::with_tag_and_digest(domain, path, tag.clone(), d.to_string()),
            (None, Some(d)) => Reference::with_digest(domain, path, d.to_string()),
            (tag, None) => Reference::with_tag(domain, path, tag.clone().unwrap_or_else(|| "latest".into())),
        }
    }

    /// The normalised `registry/repository:tag` under which the store keeps a name;
    /// `None` for a digest-only reference.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|tag| format!("{}/{}:{tag}", self.domain, self.path))
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_ref().map(Digest::as_str)
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }
}

impl FromStr for ImageName {
    type Err = Error;

    fn from_str(s: &str) -> Result<ImageName, Error> {
        let invalid = |reason: &str| Error::InvalidReference { reference: s.to_string(), reason: reason.to_string() };
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.parse::<Digest>().map_err(|e| invalid(&e.to_string()))?)),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; before it, it is a registry port.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
            if !valid {
                return Err(invalid("a tag is up to 128 of [A-Za-z0-9_.-], not starting with . or -"));
            }
        }
        if name.is_empty() {
            return Err(invalid("no repository name"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first.to_string(), rest.to_string())
            }
            Some(_) => (DEFAULT_DOMAIN.to_string(), name.to_string()),
            None => (DEFAULT_DOMAIN.to_string(), format!("library/{name}")),
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') { format!("library/{path}") } else { path };
        if !valid_domain(&domain) {
            return Err(invalid("the registry is not a host name with an optional port"));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(invalid(
                "repository path components are lowercase letters and digits, separated by ., _, __ or -",
            ));
        }
        if domain.len() + 1 + path.len() > NAME_MAX {
            return Err(invalid("name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(ImageName { domain, path, tag, digest })
    }
}

/// `host[:port]`: DNS labels of letters, digits and inner hyphens, or a bracketed IPv6.
fn valid_domain(domain: &str) -> bool {
    let valid_port = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = domain.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return false };
        let v6_ok = !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        return v6_ok && (after.is_empty() || after.strip_prefix(':').is_some_and(valid_port));
    }
    let (host, port) = domain.split_once(':').map_or((domain, None), |(h, p)| (h, Some(p)));
    port.is_none_or(valid_port)
        && !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && matches!(bytes[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = separator == "." || separator == "_" || separator == "__" || separator.bytes().all(|b| b == b'-');
        if separator.is_empty() || !ok {
            return false;
        }
    }
    true
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let n: ImageName = "busybox".parse().unwrap();
        assert_eq!(n.tagged().unwrap(), "docker.io/library/busybox:latest");
        let n: ImageName = "team/app:1.0".parse().unwrap();
        assert_eq!(n.tagged().unwrap(), "docker.io/team/app:1.0");
        let n: ImageName = "localhost:5000/team/app:v1".parse().unwrap();
        assert_eq!(n.tagged().unwrap(), "localhost:5000/team/app:v1");
        let n: ImageName = "localhost/app".parse().unwrap();
        assert_eq!(n.tagged().unwrap(), "localhost/app:latest");
        let n: ImageName = "127.0.0.1:5000/app".parse().unwrap();
        assert_eq!(n.domain(), "127.0.0.1:5000");
        let d = format!("sha256:{}", "a".repeat(64));
        let n: ImageName = format!("127.0.0.1:5000/app@{d}").parse().unwrap();
        assert_eq!(n.tagged(), None);
        assert_eq!(n.digest(), Some(d.as_str()));
        let r = n.reference();
        assert_eq!((r.registry(), r.repository(), r.digest()), ("127.0.0.1:5000", "app", Some(d.as_str())));
        let r = "busybox:1".parse::<ImageName>().unwrap().reference();
        assert_eq!((r.registry(), r.repository(), r.tag()), ("docker.io", "library/busybox", Some("1")));
        assert_eq!(n.to_string(), format!("127.0.0.1:5000/app@{d}"));
    }

    #[test]
    fn refuses_what_docker_refuses() {
        for bad in [
            "",
            "Busybox",
            "busybox:bad tag",
            "busybox:",
            "a//b",
            "a/-b",
            "busybox:.x",
            "app@sha256:abc",
            "reg:port/app",
            "a__-b",
        ] {
            assert!(bad.parse::<ImageName>().is_err(), "{bad:?} accepted");
        }
        for good in ["a.b_c__d-e--f", "my-registry.example.com:443/x/y/z:tag_1.0", "[::1]:5000/app"] {
            assert!(good.parse::<ImageName>().is_ok(), "{good:?} refused");
        }
    }
}
