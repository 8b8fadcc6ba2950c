//! `bench/run images`: layer unpacking beside tar, registry pulls beside skopeo.

use std::fs;
use std::path::Path;
use std::process::Command;

use images::Store;
use testkit::registry::Registry;
use testkit::{Layer, TarBuilder, TestImage};

use crate::{alternate, report, run};

/// A small deterministic generator, so every run unpacks the same bytes.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `len` bytes: text-like (compressible) or random (not).
    fn bytes(&mut self, len: usize, text: bool) -> Vec<u8> {
        const WORDS: [&[u8]; 8] =
            [b"pod ", b"node ", b"image ", b"layer ", b"kernel ", b"cgroup\n", b"mount ", b"netns "];
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            let r = self.next();
            if text {
                out.extend_from_slice(WORDS[(r % 8) as usize]);
            } else {
                out.extend_from_slice(&r.to_le_bytes());
            }
        }
        out.truncate(len);
        out
    }
}

/// About `total` bytes of files as a real image has them: many small text files in nested
/// directories, some binaries, a few large files, symlinks and hardlinks.
fn mixed_tar(total: usize, seed: u64) -> Vec<u8> {
    let mut noise = Noise(seed);
    let mut tar = TarBuilder::new();
    let mut written = 0;
    let mut n = 0;
    while written < total {
        let dir = format!("usr/lib/pkg{}/sub{}/", n / 200, (n / 20) % 10);
        if n % 20 == 0 {
            tar.dir(&dir, 0o755);
        }
        let (len, text) = match n % 100 {
            0 => (4_000_000 + (noise.next() % 4_000_000) as usize, false),
            1..=9 => (100_000 + (noise.next() % 400_000) as usize, false),
            _ => (500 + (noise.next() % 12_000) as usize, true),
        };
        let name = format!("{dir}file{n}");
        tar.file(&name, 0o644, &noise.bytes(len, text));
        if n % 50 == 0 {
            tar.symlink(&format!("{dir}link{n}"), &format!("file{n}"));
            tar.hardlink(&format!("{dir}hard{n}"), &name);
        }
        written += len;
        n += 1;
    }
    tar.finish()
}

/// `unpack_vs_tar`: one ~200 MB gzip layer unpacked into a snapshot by the store (through
/// `Store::lower_dirs`, the path a container start takes) beside `tar -xzf` of the same file.
pub fn unpack_vs_tar() {
    let work = testkit::temp_dir();
    let layer = Layer::gzip(mixed_tar(200_000_000, 0x9e37_79b9_7f4a_7c15));
    let gz = work.path().join("layer.tar.gz");
    fs::write(&gz, &layer.blob).unwrap();
    let image = TestImage::new(vec![layer], &["sh"]);
    let layout = work.path().join("layout");
    image.write_oci_layout(&layout, None);
    let store = Store::open(&work.path().join("data")).unwrap();
    let imported = store.import(&layout, Some("bench/unpack:1")).unwrap().remove(0);
    let snapshot = store.lower_dirs(&imported).unwrap().remove(0);
    let tar_out = work.path().join("tar-out");

    let medians = alternate(
        &mut || {
            let _ = fs::remove_dir_all(&snapshot);
            let _ = fs::remove_dir_all(&tar_out);
            fs::create_dir(&tar_out).unwrap();
        },
        &mut [
            &mut || {
                store.lower_dirs(&imported).unwrap();
            },
            &mut || run(Command::new("tar").arg("-xzf").arg(&gz).arg("-C").arg(&tar_out)),
        ],
    );
    let (ours, peer) = (medians[0], medians[1]);
    report("unpack_podctl", ours, "s");
    report("unpack_tar", peer, "s");
    report("unpack_vs_tar", ours / peer, "ratio");
}

/// `pull_vs_skopeo`: `podctl image pull --no-unpack` of a 4-layer image from a loopback
/// registry into an empty store (fetch, verify, store: what skopeo does) beside `skopeo copy`
/// of it to an OCI directory. `pull_unpack_vs_skopeo`: the default pull, which also unpacks
/// every layer into its snapshot while downloading.
pub fn pull_vs_skopeo(podctl: &Path) {
    let work = testkit::temp_dir();
    let layers = (0..4).map(|i| Layer::gzip(mixed_tar(40_000_000, 0x1234_5678 + i))).collect();
    let image = TestImage::new(layers, &["sh"]);
    let layout = work.path().join("layout");
    image.write_oci_layout(&layout, None);
    let registry = Registry::start();
    registry.push(&layout, "bench/pull:1");
    let reference = format!("{}/bench/pull:1", registry.addr);
    let (data, oci) = (work.path().join("data"), work.path().join("skopeo-out"));
    let pull = |extra: &[&str]| {
        run(Command::new(podctl)
            .arg("--data-dir")
            .arg(&data)
            .args(["image", "pull", "--insecure", &reference])
            .args(extra))
    };

    let medians = alternate(
        &mut || {
            let _ = fs::remove_dir_all(&data);
            let _ = fs::remove_dir_all(&oci);
        },
        &mut [&mut || pull(&["--no-unpack"]), &mut || pull(&[]), &mut || {
            run(Command::new("skopeo")
                .args(["--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{reference}"))
                .arg(format!("oci:{}", oci.display())))
        }],
    );
    let (fetch, unpack, skopeo) = (medians[0], medians[1], medians[2]);
    report("pull_podctl", fetch, "s");
    report("pull_unpack_podctl", unpack, "s");
    report("pull_skopeo", skopeo, "s");
    report("pull_vs_skopeo", fetch / skopeo, "ratio");
    report("pull_unpack_vs_skopeo", unpack / skopeo, "ratio");
}
