//! Test fixtures, built at test time so no registry or download is needed: small OCI images
//! from Debian's `busybox-static` written as an OCI layout, an `oci-archive` and a
//! `docker-archive`; hand-made (also hostile) layers; a `docker-registry` on loopback.

pub mod apiserver;
pub mod dnsmasq;
pub mod etcd;
pub mod netns;
pub mod node;
pub mod registry;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

pub const BUSYBOX: &str = "/bin/busybox";

pub use tempfile::TempDir;

/// A TCP port on loopback that nothing listens on (the moment it is asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits up to `seconds` for `check`, saying what it waited for when it gives up.
pub fn eventually(what: &str, seconds: u64, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "{what}: not within {seconds} s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A layer as it is stored: the blob, its media type, and the digest of the uncompressed tar.
#[derive(Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub media_type: &'static str,
    pub diff_id: String,
}

impl Layer {
    pub fn plain(tar: Vec<u8>) -> Layer {
        Layer { diff_id: sha256(&tar), blob: tar, media_type: "application/vnd.oci.image.layer.v1.tar" }
    }

    pub fn gzip(tar: Vec<u8>) -> Layer {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        Layer {
            diff_id: sha256(&tar),
            blob: gz.finish().unwrap(),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
        }
    }

    pub fn zstd(tar: Vec<u8>) -> Layer {
        Layer {
            diff_id: sha256(&tar),
            blob: zstd::encode_all(&tar[..], 3).unwrap(),
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    pub fn digest(&self) -> String {
        sha256(&self.blob)
    }
}

/// A tar built entry by entry, with full control over names and types (hostile ones too).
pub struct TarBuilder {
    out: Vec<u8>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        TarBuilder::new()
    }
}

impl TarBuilder {
    pub fn new() -> TarBuilder {
        TarBuilder { out: Vec::new() }
    }

    /// One entry; `name` goes into the header as given, unchecked. Names longer than the
    /// 100-byte ustar field get a GNU long-name record, as GNU tar writes them.
    pub fn entry(&mut self, name: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>) -> &mut Self {
        if name.len() > 99 {
            let mut long = tar::Header::new_gnu();
            long.set_entry_type(tar::EntryType::GNULongName);
            long.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
            long.set_size(name.len() as u64 + 1);
            long.set_cksum();
            self.out.extend_from_slice(long.as_bytes());
            let mut body = name.as_bytes().to_vec();
            body.push(0);
            self.push_data(&body);
        }
        let mut h = tar::Header::new_gnu();
        let field = &mut h.as_gnu_mut().unwrap().name;
        let n = name.len().min(99);
        field[..n].copy_from_slice(&name.as_bytes()[..n]);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if let Some(link) = link {
            let field = &mut h.as_gnu_mut().unwrap().linkname;
            field[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.push_data(data);
        self
    }

    fn push_data(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0, pad));
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.entry(name, tar::EntryType::Directory, mode, &[], None)
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.entry(name, tar::EntryType::Regular, mode, data, None)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, tar::EntryType::Symlink, 0o777, &[], Some(target))
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, tar::EntryType::Link, 0o644, &[], Some(target))
    }

    /// A PAX extended header applying `records` (key, value) to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (key, value) in records {
            let rest = format!(" {key}=").len() + value.len() + 1;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len = len.to_string().len() + rest;
            }
            body.extend_from_slice(format!("{len} {key}=").as_bytes());
            body.extend_from_slice(value);
            body.push(b'\n');
        }
        self.entry("PaxHeader", tar::EntryType::XHeader, 0o644, &body, None)
    }

    /// The archive with its end-of-archive marker.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.out.clone();
        out.extend(std::iter::repeat_n(0, 1024));
        out
    }
}

/// An image: a config and its layers, written out in any of the three formats.
#[derive(Clone)]
pub struct TestImage {
    pub config: Vec<u8>,
    pub layers: Vec<Layer>,
}

impl TestImage {
    /// An image of `layers` running `cmd`; the config is canonical JSON, so equal inputs give
    /// equal image IDs.
    pub fn new(layers: Vec<Layer>, cmd: &[&str]) -> TestImage {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let config = serde_json::json!({
            "architecture": host_arch(),
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": cmd,
            },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        TestImage { config: serde_json::to_vec(&config).unwrap(), layers }
    }

    /// The image ID: the config digest.
    pub fn id(&self) -> String {
        sha256(&self.config)
    }

    pub fn manifest(&self) -> Vec<u8> {
        let layers: Vec<_> = self
            .layers
            .iter()
            .map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest(), "size": l.blob.len()}))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": self.id(), "size": self.config.len()},
            "layers": layers,
        }))
        .unwrap()
    }

    /// An OCI image layout directory; `ref_name` goes into `org.opencontainers.image.ref.name`.
    pub fn write_oci_layout(&self, dir: &Path, ref_name: Option<&str>) {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let manifest = self.manifest();
        for blob in [&self.config, &manifest].into_iter().chain(self.layers.iter().map(|l| &l.blob)) {
            fs::write(blobs.join(&sha256(blob)[7..]), blob).unwrap();
        }
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let mut desc = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest),
            "size": manifest.len(),
        });
        if let Some(name) = ref_name {
            desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": name});
        }
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [desc]});
        fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// An `oci-archive`: the OCI layout as a tarball.
    pub fn write_oci_archive(&self, path: &Path, ref_name: Option<&str>) {
        let dir = tempfile::tempdir().unwrap();
        self.write_oci_layout(dir.path(), ref_name);
        let mut builder = tar::Builder::new(fs::File::create(path).unwrap());
        builder.append_dir_all(".", dir.path()).unwrap();
        builder.finish().unwrap();
    }

    /// A `docker save` archive: `manifest.json`, `<id>.json`, and each layer uncompressed at
    /// `<n>/layer.tar`, as docker writes them.
    pub fn write_docker_archive(&self, path: &Path, repo_tag: Option<&str>) {
        let mut builder = tar::Builder::new(fs::File::create(path).unwrap());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut h, name, data).unwrap();
        };
        let config_name = format!("{}.json", &self.id()[7..]);
        add(&config_name, &self.config);
        let mut layer_names = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let name = format!("{i}/layer.tar");
            add(&name, &uncompress(layer));
            layer_names.push(name);
        }
        let manifest = serde_json::json!([{
            "Config": config_name,
            "RepoTags": repo_tag.map(|t| vec![t]).unwrap_or_default(),
            "Layers": layer_names,
        }]);
        add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
        builder.into_inner().unwrap();
    }
}

fn uncompress(layer: &Layer) -> Vec<u8> {
    let mut out = Vec::new();
    match layer.media_type {
        m if m.ends_with("gzip") => {
            std::io::copy(&mut flate2::read::GzDecoder::new(&layer.blob[..]), &mut out).unwrap();
        }
        m if m.ends_with("zstd") => out = zstd::decode_all(&layer.blob[..]).unwrap(),
        _ => out = layer.blob.clone(),
    }
    out
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The busybox image every test uses. Layer 1: `/bin/busybox` from Debian's
/// `busybox-static` with a symlink per applet, `/etc/passwd`, `/etc/group`, `/tmp`, and two
/// files that layer 2 deletes. Layer 2: a whiteout of `/etc/motd`, an opaque `/opt/old`
/// with a new file, a hardlink pair and `/etc/podctl-release`.
pub fn busybox_image() -> TestImage {
    let busybox = fs::read(BUSYBOX).expect("busybox-static is installed (apt-get install busybox-static)");
    let applets = Command::new(BUSYBOX).arg("--list").output().expect("run busybox --list");
    let mut base = TarBuilder::new();
    base.dir("bin/", 0o755)
        .file("bin/busybox", 0o755, &busybox)
        .dir("etc/", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")
        .file("etc/motd", 0o644, b"deleted by layer 2\n")
        .dir("opt/", 0o755)
        .dir("opt/old/", 0o755)
        .file("opt/old/hidden", 0o644, b"hidden by layer 2\n")
        .dir("root/", 0o700)
        .dir("tmp/", 0o1777);
    for applet in String::from_utf8(applets.stdout).unwrap().lines() {
        if applet != "busybox" {
            base.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    let mut top = TarBuilder::new();
    top.dir("etc/", 0o755)
        .file("etc/.wh.motd", 0o644, b"")
        .file("etc/podctl-release", 0o644, b"podctl test image\n")
        .dir("opt/old/", 0o755)
        .file("opt/old/.wh..wh..opq", 0o644, b"")
        .file("opt/old/visible", 0o644, b"from layer 2\n")
        .dir("usr/", 0o755)
        .file("usr/one", 0o644, b"linked\n")
        .hardlink("usr/two", "usr/one");
    TestImage::new(vec![Layer::gzip(base.finish()), Layer::gzip(top.finish())], &["sh"])
}

/// A directory removed on drop, made under `/tmp` (or `$PODCTL_TEST_TMP`).
pub fn temp_dir() -> tempfile::TempDir {
    let base = std::env::var_os("PODCTL_TEST_TMP").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new().prefix("podctl-test-").tempdir_in(base).unwrap()
}

/// Integration tests build real pods, mounts and images: they run as root (in CI's
/// privileged container), and say so rather than pass without testing anything.
pub fn assert_root() {
    // SAFETY: geteuid cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "integration tests must run as root");
}
