//! The platform a node runs images for, and choosing it from an image index.

use std::fmt;

use oci_spec::image::ImageIndex;

/// An OS/architecture pair in OCI (Go) spelling: `linux/amd64`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this machine.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "riscv64" => "riscv64",
            "s390x" => "s390x",
            other => other,
        };
        let variant = (architecture == "arm64").then(|| "v8".to_string());
        Platform { os: "linux".into(), architecture: architecture.into(), variant }
    }

    /// The index entry for this platform: exact OS and architecture; a variant, when the
    /// entry names one, must match too (arm64 entries without a variant mean v8).
    pub fn choose(&self, index: &ImageIndex) -> Option<usize> {
        index.manifests().iter().position(|m| {
            let Some(p) = m.platform() else { return false };
            let os = p.os().to_string();
            let arch = p.architecture().to_string();
            let variant_ok = match (p.variant(), &self.variant) {
                (None, _) => true,
                (Some(v), Some(want)) => v == want,
                (Some(_), None) => false,
            };
            os == self.os && arch == self.architecture && variant_ok
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_matching_entry() {
        let index: ImageIndex = serde_json::from_str(&format!(
            r#"{{"schemaVersion":2,"manifests":[
                {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{a}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
                {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{b}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
                {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{c}","size":1,"platform":{{"os":"windows","architecture":"amd64"}}}}]}}"#,
            a = "a".repeat(64),
            b = "b".repeat(64),
            c = "c".repeat(64)
        ))
        .unwrap();
        let amd64 = Platform { os: "linux".into(), architecture: "amd64".into(), variant: None };
        assert_eq!(amd64.choose(&index), Some(1));
        let arm64 = Platform { os: "linux".into(), architecture: "arm64".into(), variant: Some("v8".into()) };
        assert_eq!(arm64.choose(&index), Some(0));
        let s390 = Platform { os: "linux".into(), architecture: "s390x".into(), variant: None };
        assert_eq!(s390.choose(&index), None);
    }
}
