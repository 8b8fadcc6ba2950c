//! Content digests (`sha256:<hex>`), the names of everything in the store.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::Error;

/// A validated `sha256:<64 lowercase hex>` digest. Only sha256 is accepted: it is what
/// every registry and tool writes, and a single algorithm keeps blob paths unambiguous.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hash(Sha256::digest(bytes).as_slice())
    }

    fn from_hash(hash: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(hash)))
    }

    /// The 64 hex characters, as used in blob and snapshot paths.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The 12-character form `podctl image ls` shows, as docker does.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest, Error> {
        let invalid = |reason: &str| Error::InvalidDigest { digest: s.to_string(), reason: reason.to_string() };
        let (algorithm, hex) = s.split_once(':').ok_or_else(|| invalid("expected ALGORITHM:HEX"))?;
        if algorithm != "sha256" {
            return Err(invalid("only sha256 is supported"));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(invalid("expected 64 lowercase hex characters"));
        }
        Ok(Digest(s.to_string()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Hashes and counts everything written through it.
#[derive(Default)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn finish(self) -> Digest {
        Digest::from_hash(self.sha.finalize().as_slice())
    }
}

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_sha256_hex() {
        let d = Digest::of(b"");
        assert_eq!(d.hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
        assert!("sha512:abc".parse::<Digest>().is_err());
        assert!("sha256:E3B0".parse::<Digest>().is_err());
        assert!("sha256:../../etc/passwd".parse::<Digest>().is_err());
        assert!(format!("sha256:{}", "A".repeat(64)).parse::<Digest>().is_err());
    }

    #[test]
    fn hasher_matches_one_shot() {
        let mut h = Hasher::default();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.len(), 11);
        assert_eq!(h.finish(), Digest::of(b"hello world"));
    }
}
