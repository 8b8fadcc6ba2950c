//! Image names, normalised as docker and containerd do: `busybox` is
//! `docker.io/library/busybox:latest`.

use std::fmt;
use std::str::FromStr;

use oci_client::Reference;

use crate::Error;

/// A reference as a user writes it: a name with a tag, a digest, or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageName(Reference);

impl ImageName {
    pub fn reference(&self) -> &Reference {
        &self.0
    }

    /// The normalised `registry/repository:tag` under which the store keeps a tag;
    /// `None` for a digest-only reference.
    pub fn tagged(&self) -> Option<String> {
        self.0.tag().map(|tag| format!("{}/{}:{tag}", self.0.registry(), self.0.repository()))
    }

    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }
}

impl FromStr for ImageName {
    type Err = Error;

    fn from_str(s: &str) -> Result<ImageName, Error> {
        Reference::try_from(s)
            .map(ImageName)
            .map_err(|e| Error::InvalidReference { reference: s.to_string(), reason: e.to_string() })
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let n: ImageName = "busybox".parse().unwrap();
        assert_eq!(n.tagged().unwrap(), "docker.io/library/busybox:latest");
        let n: ImageName = "localhost:5000/team/app:v1".parse().unwrap();
        assert_eq!(n.tagged().unwrap(), "localhost:5000/team/app:v1");
        let d = format!("sha256:{}", "a".repeat(64));
        let n: ImageName = format!("127.0.0.1:5000/app@{d}").parse().unwrap();
        assert_eq!(n.tagged(), None);
        assert_eq!(n.digest(), Some(d.as_str()));
        assert!("Busybox".parse::<ImageName>().is_err());
        assert!("busybox:bad tag".parse::<ImageName>().is_err());
        assert!("".parse::<ImageName>().is_err());
    }
}
