//! `podctl image`: import of the three formats, pull from a loopback registry, unpacking,
//! hostile layers, removal and crash safety. Runs as root: unpacking creates device nodes,
//! sets ownership and trusted.* xattrs.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::registry::Registry;
use testkit::{Layer, TarBuilder, TestImage, busybox_image, sha256, temp_dir};

/// A scratch node (testkit) with the store checks these tests need.
struct Node(testkit::node::Node);

impl std::ops::Deref for Node {
    type Target = testkit::node::Node;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Node {
    /// Image commands only; on the host's network to reach the test registries.
    fn new() -> Node {
        Node(testkit::node::Node::new(env!("CARGO_BIN_EXE_podctl")).on_host_network())
    }

    fn inspect(&self, reference: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["image", "inspect", reference])).unwrap()
    }

    fn store(&self) -> PathBuf {
        self.data_dir().join("images")
    }

    /// Names in a store directory.
    fn list(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.store().join(sub))
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The store holds nothing: no tag, blob, snapshot or leftover.
    fn assert_empty_store(&self) {
        assert_eq!(self.ok(&["image", "ls", "-q"]), "");
        assert_eq!(self.list("blobs/sha256"), Vec::<String>::new(), "blobs left");
        assert_eq!(self.list("snapshots"), Vec::<String>::new(), "snapshots left");
        assert_eq!(self.list("ingest"), Vec::<String>::new(), "ingest left");
    }

    fn write_layout(&self, image: &TestImage, name: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        image.write_oci_layout(&dir, None);
        dir
    }
}

/// An overlay of an image's lower dirs, unmounted on drop.
struct Overlay {
    target: PathBuf,
}

impl Overlay {
    fn mount(lower: &[PathBuf], target: &Path) -> Overlay {
        fs::create_dir_all(target).unwrap();
        let lowerdir: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &format!("lowerdir={}", lowerdir.join(":"))])
            .arg(target)
            .status()
            .unwrap();
        assert!(status.success(), "mount overlay");
        Overlay { target: target.to_path_buf() }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.target).status();
    }
}

fn lower_dirs(inspect: &serde_json::Value) -> Vec<PathBuf> {
    let layers = inspect["Layers"].as_array().unwrap();
    layers.iter().rev().map(|l| PathBuf::from(l["Snapshot"].as_str().unwrap())).collect()
}

#[test]
fn three_formats_give_one_image_id() {
    let node = Node::new();
    let image = busybox_image();
    let layout = node.dir.path().join("layout");
    image.write_oci_layout(&layout, Some("localhost/busybox:oci"));
    let oci_archive = node.dir.path().join("busybox-oci.tar");
    image.write_oci_archive(&oci_archive, Some("localhost/busybox:oci-archive"));
    let docker_archive = node.dir.path().join("busybox-docker.tar");
    image.write_docker_archive(&docker_archive, Some("busybox:docker"));

    for (path, name) in [
        (&layout, "localhost/busybox:oci"),
        (&oci_archive, "localhost/busybox:oci-archive"),
        (&docker_archive, "docker.io/library/busybox:docker"),
    ] {
        let out = node.ok(&["image", "import", path.to_str().unwrap()]);
        assert_eq!(out.trim(), format!("imported {name} {}", image.id()));
        assert_eq!(node.inspect(name)["Id"], image.id());
    }
    // `docker save | gzip` imports too.
    let gzipped = node.dir.path().join("busybox-docker.tar.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", docker_archive.display(), gzipped.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let out = node.ok(&["image", "import", "--name", "busybox:gz", gzipped.to_str().unwrap()]);
    assert!(out.contains(&image.id()), "{out}");
    assert_eq!(node.list("ingest"), Vec::<String>::new(), "the inflated copy is removed");
    assert_eq!(node.ok(&["image", "ls", "-q", "--no-trunc"]).lines().collect::<Vec<_>>().len(), 2);
    assert_eq!(node.inspect("busybox:docker")["Id"], image.id());
    assert_eq!(node.inspect(&image.id()[7..19])["Id"], image.id());
    let listing = node.ok(&["image", "ls"]);
    assert!(listing.contains("docker.io/library/busybox") && listing.contains(&image.id()[7..19]), "{listing}");
    // One snapshot per layer, shared by every import.
    assert_eq!(node.list("snapshots").len(), 2);
}

#[test]
fn global_flags_go_before_or_after_the_subcommand() {
    let node = Node::new();
    let data = node.data_dir();
    let out =
        Command::new(env!("CARGO_BIN_EXE_podctl")).args(["image", "ls", "--data-dir"]).arg(&data).output().unwrap();
    assert!(out.status.success());
    assert!(data.join("images/index.json").exists());
    for args in [&["--help"][..], &["image", "--help"], &["image", "import", "--help"], &["image", "pull", "--help"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_podctl")).args(args).output().unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_podctl")).args(["completion", shell]).output().unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && script.contains("podctl") && script.contains("pod-cidr"), "{shell}");
        assert!(!script.contains("__cleanup"), "{shell}: the internal cleanup is no command to offer");
    }
    // A manual page per command, as man finds them.
    let pages = node.dir.path().join("man1");
    std::fs::create_dir(&pages).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_podctl")).arg("manpage").arg(&pages).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(pages.join("podctl.1")).unwrap();
    assert!(page.contains(".TH podctl 1") && page.contains("podctl\\-run(1)") && !page.contains("cleanup"), "{page}");
    let run = std::fs::read_to_string(pages.join("podctl-run.1")).unwrap();
    assert!(run.contains("\\-\\-pull"), "{run}");
    let bad = Command::new(env!("CARGO_BIN_EXE_podctl")).args(["manpage", "/nonexistent/dir"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("write the manual pages into /nonexistent/dir"));
    // Each command's help shows its own flags first, then the node's under their heading,
    // and says what each argument is.
    for (command, own, argument) in
        [("apiserver", "--listen", None), ("stop", "--time", Some("<PODS>...  Pods, by name"))]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_podctl")).args([command, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        let (before, after) =
            help.split_once("Node options (for every command):").expect("a heading for the node's options");
        assert!(before.contains(own) && !before.contains("--bridge") && after.contains("--bridge"), "{help}");
        if let Some(argument) = argument {
            assert!(before.contains(argument), "{help}");
        }
    }
}

#[test]
fn snapshots_are_overlay_lower_dirs_with_whiteouts() {
    let node = Node::new();
    let image = busybox_image();
    node.ok(&["image", "import", "--name", "busybox:test", node.write_layout(&image, "layout").to_str().unwrap()]);
    let inspect = node.inspect("busybox:test");
    let lower = lower_dirs(&inspect);
    let (top, base) = (&lower[0], &lower[1]);

    let busybox = fs::metadata(base.join("bin/busybox")).unwrap();
    assert_eq!(busybox.mode() & 0o7777, 0o755);
    assert_eq!(busybox.mtime(), 1_700_000_000);
    assert_eq!(fs::read_link(base.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert_eq!(fs::metadata(base.join("tmp")).unwrap().mode() & 0o7777, 0o1777);
    let whiteout = fs::symlink_metadata(top.join("etc/motd")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    assert_eq!(xattr(&top.join("opt/old"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    let (one, two) = (fs::metadata(top.join("usr/one")).unwrap(), fs::metadata(top.join("usr/two")).unwrap());
    assert_eq!((one.ino(), one.nlink()), (two.ino(), 2));

    let root = Overlay::mount(&lower, &node.dir.path().join("rootfs"));
    let rootfs = &root.target;
    assert!(!rootfs.join("etc/motd").exists(), "whiteout hides etc/motd");
    assert!(!rootfs.join("opt/old/hidden").exists(), "opaque dir hides the lower opt/old");
    assert_eq!(fs::read_to_string(rootfs.join("opt/old/visible")).unwrap(), "from layer 2\n");
    let out = Command::new("chroot")
        .arg(rootfs)
        .args(["/bin/sh", "-c", "cat /etc/podctl-release; ls /opt/old"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "podctl test image\nvisible\n");
}

#[test]
fn gzip_zstd_and_uncompressed_layers_unpack() {
    let node = Node::new();
    let layer = |name: &str| TarBuilder::new().file(name, 0o644, name.as_bytes()).finish();
    let image = TestImage::new(
        vec![Layer::plain(layer("plain")), Layer::gzip(layer("gzip")), Layer::zstd(layer("zstd"))],
        &["sh"],
    );
    node.ok(&["image", "import", "--name", "mixed:1", node.write_layout(&image, "layout").to_str().unwrap()]);
    let inspect = node.inspect("mixed:1");
    let media: Vec<&str> =
        inspect["Layers"].as_array().unwrap().iter().map(|l| l["MediaType"].as_str().unwrap()).collect();
    assert_eq!(
        media,
        [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd"
        ]
    );
    for (dir, name) in lower_dirs(&inspect).iter().rev().zip(["plain", "gzip", "zstd"]) {
        assert_eq!(fs::read_to_string(dir.join(name)).unwrap(), name);
    }
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let c_name = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and buffer.
    let n = unsafe { libc::lgetxattr(c_path.as_ptr(), c_name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn special_files_owners_xattrs_and_times_are_kept() {
    let node = Node::new();
    let mut tar = TarBuilder::new();
    tar.entry("dev-null", tar::EntryType::Char, 0o666, &[], None)
        .entry("fifo", tar::EntryType::Fifo, 0o600, &[], None)
        .pax(&[("SCHILY.xattr.user.note", b"kept"), ("uid", b"1000"), ("gid", b"2000"), ("mtime", b"1600000000.5")])
        .file("owned", 0o4755, b"setuid\n")
        .dir("./", 0o755);
    let mut layer = tar.finish();
    // Give the char device its numbers (1, 3), as /dev/null.
    set_device(&mut layer, 0, 1, 3);
    let image = TestImage::new(vec![Layer::plain(layer)], &["sh"]);
    node.ok(&["image", "import", "--name", "special:1", node.write_layout(&image, "layout").to_str().unwrap()]);
    let dir = &lower_dirs(&node.inspect("special:1"))[0];
    let null = fs::symlink_metadata(dir.join("dev-null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
    assert!(fs::symlink_metadata(dir.join("fifo")).unwrap().file_type().is_fifo());
    let owned = fs::metadata(dir.join("owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid(), owned.mode() & 0o7777), (1000, 2000, 0o4755));
    assert_eq!((owned.mtime(), owned.mtime_nsec()), (1_600_000_000, 500_000_000));
    assert_eq!(xattr(&dir.join("owned"), "user.note").as_deref(), Some(&b"kept"[..]));
}

/// Sets major/minor of the tar header at `offset` and fixes its checksum.
fn set_device(tar_bytes: &mut [u8], offset: usize, major: u32, minor: u32) {
    let header = unsafe { &mut *(tar_bytes[offset..offset + 512].as_mut_ptr() as *mut tar::Header) };
    header.set_device_major(major).unwrap();
    header.set_device_minor(minor).unwrap();
    header.set_cksum();
}

#[test]
fn pull_from_a_loopback_registry_matches_skopeo() {
    let node = Node::new();
    let image = busybox_image();
    let registry = Registry::start();
    registry.push(&node.write_layout(&image, "layout"), "team/busybox:1.0");
    let reference = format!("{}/team/busybox:1.0", registry.addr);

    let out = node.ok(&["image", "pull", "--insecure", &reference]);
    assert!(out.contains(&image.id()), "{out}");
    assert_eq!(node.list("snapshots").len(), 2, "unpacked while downloading");
    let inspect = node.inspect(&reference);
    assert_eq!(inspect["Id"], image.id());
    let skopeo = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(skopeo.status.success());
    assert_eq!(inspect["ManifestDigest"], sha256(&skopeo.stdout), "manifest digest as the registry serves it");

    // Same image by import: same ID, and the pull finds every blob present.
    node.ok(&["image", "import", "--name", "local:1", node.write_layout(&image, "layout2").to_str().unwrap()]);
    let again = node.podctl(&["image", "pull", "--insecure", &reference]);
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stderr).matches("already present").count(), 2);

    let missing = node.fails(&["image", "pull", "--insecure", &format!("{}/team/nothing:1", registry.addr)]);
    assert!(missing.contains("team/nothing"), "{missing}");
    // No registry there: the cause is named, not only "error sending request".
    let port = testkit::free_port();
    let refused = node.fails(&["image", "pull", "--insecure", &format!("127.0.0.1:{port}/team/app:1")]);
    assert!(refused.to_lowercase().contains("connection refused"), "{refused}");
}

#[test]
fn pull_without_unpack_unpacks_on_first_use() {
    let node = Node::new();
    let image = busybox_image();
    let registry = Registry::start();
    registry.push(&node.write_layout(&image, "layout"), "lazy:1");
    let reference = format!("{}/lazy:1", registry.addr);
    node.ok(&["image", "pull", "--insecure", "--no-unpack", &reference]);
    assert_eq!(node.list("snapshots"), Vec::<String>::new());
    assert_eq!(node.list("blobs/sha256").len(), 4);

    let store = images::Store::open(&node.data_dir()).unwrap();
    let lower = store.lower_dirs(&store.resolve(&reference).unwrap()).unwrap();
    assert_eq!(lower, lower_dirs(&node.inspect(&reference)));
    assert!(lower[1].join("bin/busybox").is_file() && lower[0].join("etc/podctl-release").is_file());
}

#[test]
fn pull_refuses_a_hostile_layer_and_keeps_nothing() {
    let node = Node::new();
    let target = outside_target("pull");
    let name = format!("../../../../../../../..{}", target.display());
    let layer = Layer::gzip(TarBuilder::new().file("fine", 0o644, b"ok").file(&name, 0o644, b"pwned").finish());
    let image = TestImage::new(vec![layer.clone()], &["sh"]);
    let registry = Registry::start();
    registry.push(&node.write_layout(&image, "layout"), "hostile:1");
    let err = node.fails(&["image", "pull", "--insecure", &format!("{}/hostile:1", registry.addr)]);
    assert!(
        err.contains(&layer.digest()) && err.contains(&format!("entry {name:?}")) && err.contains("path contains .."),
        "{err}"
    );
    node.assert_empty_store();
    assert!(!target.exists());
}

#[test]
fn pull_chooses_this_platform_from_an_index() {
    let node = Node::new();
    let image = busybox_image();
    let other = TestImage::new(image.layers[..1].to_vec(), &["other"]);
    // An OCI layout whose index.json points at an image index with two platforms.
    let layout = node.dir.path().join("multi");
    image.write_oci_layout(&layout, None);
    other.write_oci_layout(&layout.join("other"), None);
    for entry in fs::read_dir(layout.join("other/blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), layout.join("blobs/sha256").join(entry.file_name())).unwrap();
    }
    let foreign = if testkit::host_arch() == "arm64" { "amd64" } else { "arm64" };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&other.manifest()),
             "size": other.manifest().len(), "platform": {"os": "linux", "architecture": foreign}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&image.manifest()),
             "size": image.manifest().len(), "platform": {"os": "linux", "architecture": testkit::host_arch()}},
        ]
    }))
    .unwrap();
    fs::write(layout.join("blobs/sha256").join(&sha256(&index)[7..]), &index).unwrap();
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha256(&index), "size": index.len()}]});
    fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();

    let registry = Registry::start();
    let status = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", layout.display()))
        .arg(format!("docker://{}/multi:1", registry.addr))
        .status()
        .unwrap();
    assert!(status.success());
    let reference = format!("{}/multi:1", registry.addr);
    node.ok(&["image", "pull", "--insecure", &reference]);
    assert_eq!(node.inspect(&reference)["Id"], image.id());
    // The same layout imported directly chooses the same entry.
    node.ok(&["image", "import", "--name", "multi:local", layout.to_str().unwrap()]);
    assert_eq!(node.inspect("multi:local")["Id"], image.id());
}

#[test]
fn pull_with_basic_auth_from_docker_config() {
    let node = Node::new();
    let image = busybox_image();
    let registry = Registry::start_with_basic_auth("tester", "s3cret");
    registry.push(&node.write_layout(&image, "layout"), "private:1");
    let reference = format!("{}/private:1", registry.addr);

    let denied = node.fails(&["image", "pull", "--insecure", &reference]);
    assert!(denied.to_lowercase().contains("authorized"), "{denied}");
    node.assert_empty_store();

    let config = node.dir.path().join("config.json");
    let auth = base64_encode(b"tester:s3cret");
    fs::write(&config, format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.addr)).unwrap();
    node.ok(&["image", "pull", "--insecure", "--authfile", config.to_str().unwrap(), &reference]);
    assert_eq!(node.inspect(&reference)["Id"], image.id());

    // The default location, ~/.docker/config.json, is read too.
    fs::create_dir_all(node.dir.path().join(".docker")).unwrap();
    fs::rename(&config, node.dir.path().join(".docker/config.json")).unwrap();
    node.ok(&["image", "rm", &reference]);
    node.ok(&["image", "pull", "--insecure", &reference]);
}

#[test]
fn pull_with_bearer_token_auth() {
    let node = Node::new();
    let image = busybox_image();
    let registry = Registry::start_with_token_auth("tester", "t0ken");
    registry.push(&node.write_layout(&image, "layout"), "tokens:1");
    let reference = format!("{}/tokens:1", registry.addr);

    // Anonymous: the registry's Bearer challenge leads to the token server, which refuses.
    let denied = node.fails(&["image", "pull", "--insecure", &reference]);
    assert!(denied.to_lowercase().contains("auth"), "{denied}");
    node.assert_empty_store();

    let config = node.dir.path().join("auth.json");
    fs::write(&config, format!(r#"{{"auths":{{"{}":{{"username":"tester","password":"t0ken"}}}}}}"#, registry.addr))
        .unwrap();
    node.ok(&["image", "pull", "--insecure", "--authfile", config.to_str().unwrap(), &reference]);
    assert_eq!(node.inspect(&reference)["Id"], image.id());
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn rm_frees_only_what_no_other_image_uses() {
    let node = Node::new();
    let image = busybox_image();
    let sibling = TestImage::new(
        vec![image.layers[0].clone(), Layer::gzip(TarBuilder::new().file("sibling", 0o644, b"s\n").finish())],
        &["sh"],
    );
    node.ok(&["image", "import", "--name", "busybox:a", node.write_layout(&image, "a").to_str().unwrap()]);
    node.ok(&["image", "import", "--name", "busybox:b", node.write_layout(&sibling, "b").to_str().unwrap()]);
    node.ok(&["image", "import", "--name", "busybox:alias", node.write_layout(&image, "c").to_str().unwrap()]);
    assert_eq!(node.list("snapshots").len(), 3);

    // Removing one of two names only untags.
    let out = node.ok(&["image", "rm", "busybox:alias"]);
    assert!(out.contains("untagged docker.io/library/busybox:alias") && out.contains("removed 0 blobs"), "{out}");
    // By ID: the image with all its names; the shared base layer stays for busybox:b.
    let out = node.ok(&["image", "rm", &image.id()]);
    assert!(out.contains("removed 3 blobs, 1 snapshots"), "manifest, config, top layer: {out}");
    let mut kept = vec![image.layers[0].diff_id[7..].to_string(), sibling.layers[1].diff_id[7..].to_string()];
    kept.sort();
    assert_eq!(node.list("snapshots"), kept);
    assert!(node.fails(&["image", "inspect", "busybox:a"]).contains("no such image: busybox:a"));
    node.ok(&["image", "rm", "busybox:b"]);
    node.assert_empty_store();
    assert!(node.fails(&["image", "rm", "busybox:b"]).contains("no such image"));
}

/// Imports an image made of `layer` and expects an error naming `entry` and saying `reason`;
/// afterwards nothing of it is left, and `outside` (if given) was not created.
fn assert_hostile(layer: Layer, entry: Option<&str>, reason: &str, outside: Option<&Path>) {
    let node = Node::new();
    let image = TestImage::new(vec![layer.clone()], &["sh"]);
    let err =
        node.fails(&["image", "import", "--name", "hostile:1", node.write_layout(&image, "layout").to_str().unwrap()]);
    assert!(err.contains("image docker.io/library/hostile:1"), "names the image: {err}");
    assert!(err.contains(&layer.digest()), "names the layer: {err}");
    if let Some(entry) = entry {
        assert!(err.contains(&format!("entry {entry:?}")), "names the entry {entry:?}: {err}");
    }
    assert!(err.contains(reason), "says {reason:?}: {err}");
    node.assert_empty_store();
    if let Some(outside) = outside {
        assert!(fs::symlink_metadata(outside).is_err(), "{} was written", outside.display());
    }
}

/// A path outside the data dir that a hostile layer tries to write, unique per test.
fn outside_target(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("podctl-escape-{tag}-{}", std::process::id()))
}

#[test]
fn hostile_dotdot_entry() {
    let target = outside_target("dotdot");
    let name = format!("../../../../../../../..{}", target.display());
    let layer = TarBuilder::new().file(&name, 0o644, b"pwned").finish();
    assert_hostile(Layer::gzip(layer), Some(&name), "path contains ..", Some(&target));
}

#[test]
fn hostile_absolute_entry() {
    let target = outside_target("absolute");
    let name = target.display().to_string();
    let layer = TarBuilder::new().file(&name, 0o644, b"pwned").finish();
    assert_hostile(Layer::gzip(layer), Some(&name), "absolute path", Some(&target));
}

#[test]
fn hostile_symlink_then_write_through_it() {
    let dir = temp_dir();
    let layer = TarBuilder::new()
        .symlink("escape", &dir.path().display().to_string())
        .file("escape/pwned", 0o644, b"x")
        .finish();
    assert_hostile(
        Layer::gzip(layer),
        Some("escape/pwned"),
        "leads outside the layer",
        Some(&dir.path().join("pwned")),
    );
    let layer =
        TarBuilder::new().symlink("up", "../../../../../../../../tmp").file("up/pwned-rel", 0o644, b"x").finish();
    assert_hostile(
        Layer::gzip(layer),
        Some("up/pwned-rel"),
        "leads outside the layer",
        Some(Path::new("/tmp/pwned-rel")),
    );
}

#[test]
fn hostile_hardlink_out_of_the_layer() {
    let layer = TarBuilder::new().hardlink("shadow", "../../../../../../etc/shadow").finish();
    assert_hostile(Layer::gzip(layer), Some("shadow"), "path contains ..", None);
    let layer = TarBuilder::new().hardlink("passwd", "/etc/passwd").finish();
    assert_hostile(Layer::gzip(layer), Some("passwd"), "absolute path", None);
    let layer = TarBuilder::new().symlink("etc", "/etc").hardlink("passwd", "etc/passwd").finish();
    assert_hostile(Layer::gzip(layer), Some("passwd"), "leads outside the layer", None);
}

#[test]
fn hostile_duplicate_entry() {
    let layer = TarBuilder::new().file("twice", 0o644, b"one").file("twice", 0o644, b"two").finish();
    assert_hostile(Layer::gzip(layer), Some("twice"), "duplicate entry", None);
    let layer = TarBuilder::new().file("a", 0o644, b"file").symlink("a", "/etc").finish();
    assert_hostile(Layer::gzip(layer), Some("a"), "duplicate entry", None);
}

#[test]
fn hostile_malformed_entry() {
    let mut layer = TarBuilder::new().file("first", 0o644, b"ok").file("second", 0o644, b"bad").finish();
    layer[1024 + 148] ^= 0x01; // the second header's checksum
    assert_hostile(Layer::plain(layer), None, "malformed tar header (after entry \"first\")", None);
    let layer = TarBuilder::new().entry("weird", tar::EntryType::new(b'Z'), 0o644, &[], None).finish();
    assert_hostile(Layer::plain(layer), Some("weird"), "unsupported tar entry type", None);
    let layer =
        TarBuilder::new().pax(&[("SCHILY.xattr.trusted.overlay.redirect", b"/etc")]).file("f", 0o644, b"").finish();
    assert_hostile(Layer::plain(layer), Some("f"), "reserved for overlayfs", None);
}

#[test]
fn hostile_truncated_or_corrupt_streams() {
    let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let tar = TarBuilder::new().file("data", 0o644, &big).finish();
    let mut gz = Layer::gzip(tar.clone());
    gz.blob.truncate(gz.blob.len() / 2);
    assert_hostile(gz, Some("data"), "corrupt or truncated layer", None);
    let mut zst = Layer::zstd(tar.clone());
    zst.blob.truncate(zst.blob.len() - 100);
    assert_hostile(zst, Some("data"), "corrupt or truncated layer", None);
    let mut flipped = Layer::gzip(tar);
    let middle = flipped.blob.len() / 2;
    flipped.blob[middle..middle + 64].iter_mut().for_each(|b| *b ^= 0xa5);
    assert_hostile(flipped, None, "corrupt or truncated layer", None);
}

#[test]
fn diff_id_mismatch_is_refused() {
    let mut layer = Layer::gzip(TarBuilder::new().file("f", 0o644, b"x").finish());
    layer.diff_id = sha256(b"something else");
    assert_hostile(layer, None, "does not match diff ID", None);
}

#[test]
fn blob_digest_size_and_presence_are_checked() {
    let node = Node::new();
    let image = busybox_image();
    let layout = node.write_layout(&image, "layout");
    let top = layout.join("blobs/sha256").join(&image.layers[1].digest()[7..]);
    let mut bytes = fs::read(&top).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&top, &bytes).unwrap();
    let err = node.fails(&["image", "import", layout.to_str().unwrap()]);
    assert!(err.contains("digest mismatch") && err.contains(&image.layers[1].digest()), "{err}");
    node.assert_empty_store();

    bytes.push(0);
    fs::write(&top, &bytes).unwrap();
    let err = node.fails(&["image", "import", layout.to_str().unwrap()]);
    assert!(err.contains("size mismatch"), "{err}");
    node.assert_empty_store();

    fs::remove_file(&top).unwrap();
    let err = node.fails(&["image", "import", layout.to_str().unwrap()]);
    assert!(err.contains(&format!("blob {} is missing", image.layers[1].digest())), "{err}");
    node.assert_empty_store();

    let err = node.fails(&["image", "import", node.dir.path().to_str().unwrap()]);
    assert!(err.contains("not an image archive or layout"), "{err}");
}

#[test]
fn killed_import_leaves_no_visible_half_state() {
    let node = Node::new();
    // Big enough that the import is still running when it is killed.
    let noise: Vec<u8> = (0..12_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let image = TestImage::new(
        vec![
            Layer::gzip(TarBuilder::new().file("a", 0o644, &noise).finish()),
            Layer::gzip(TarBuilder::new().file("b", 0o644, &noise[..6_000_000]).finish()),
        ],
        &["sh"],
    );
    let archive = node.dir.path().join("big.tar");
    image.write_docker_archive(&archive, Some("big:1"));
    for delay_ms in [5u64, 20, 60, 150] {
        let mut child = node.command().args(["image", "import"]).arg(&archive).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let finished = child.wait().unwrap().success();
        // Whatever the moment: every visible blob is complete, and a tag means a whole image.
        for name in node.list("blobs/sha256") {
            let blob = fs::read(node.store().join("blobs/sha256").join(&name)).unwrap();
            assert_eq!(sha256(&blob), format!("sha256:{name}"), "blob {name} is whole");
        }
        let listed = node.ok(&["image", "ls", "-q", "--no-trunc"]);
        if finished || !listed.is_empty() {
            assert_eq!(listed.trim(), image.id());
            assert!(node.list("snapshots").iter().filter(|s| !s.starts_with('.')).count() == 2);
            node.ok(&["image", "rm", "big:1"]);
        }
    }
    // A later import completes, and removing it leaves nothing, leftovers included.
    node.ok(&["image", "import", archive.to_str().unwrap()]);
    node.ok(&["image", "rm", "big:1"]);
    node.assert_empty_store();
}

#[test]
fn run_pulls_an_image_it_does_not_have_as_its_policy_says() {
    let node = Node::new();
    let image = busybox_image();
    let registry = Registry::start();
    registry.push(&node.write_layout(&image, "layout"), "team/busybox:1.0");
    let reference = format!("{}/team/busybox:1.0", registry.addr);
    let err = node.fails(&["run", "--rm", "--net", "none", "--pull", "never", &reference, "echo", "hi"]);
    assert!(err.contains("is not in the store and --pull never"), "{err}");
    // Missing (the default): pulled, then run.
    let out = node.podctl(&["run", "--rm", "--net", "none", "--insecure", &reference, "echo", "hi"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(node.inspect(&reference)["Id"], image.id());
    // Present: not pulled again, even with no registry there any more.
    drop(registry);
    assert_eq!(node.ok(&["run", "--rm", "--net", "none", &reference, "echo", "again"]), "again\n");
    let err = node.fails(&["run", "--rm", "--net", "none", "--pull", "always", "--insecure", &reference, "true"]);
    assert!(err.to_lowercase().contains("connection refused"), "always pulls: {err}");
}
