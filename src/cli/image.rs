//! `podctl image`: import, pull, ls, inspect, rm.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{Context, Result};
use clap::Subcommand;
use images::{Digest, Image, Platform, PullOptions, PullProgress, RegistryCredentials, Store};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::{NodeOptions, require_root};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Import an OCI layout directory, an oci-archive or a docker-archive (format detected)
    Import {
        /// The layout directory or archive
        path: PathBuf,
        /// Name the imported image NAME[:TAG] (the source must hold exactly one image)
        #[arg(long)]
        name: Option<String>,
    },
    /// Pull an image from a registry (Distribution API v2)
    Pull {
        /// Image reference, e.g. localhost:5000/app:v1 or busybox
        reference: String,
        /// Use plain HTTP (for a registry on loopback without TLS)
        #[arg(long)]
        insecure: bool,
        /// Credentials file in docker config.json format (default: the usual locations)
        #[arg(long, value_name = "FILE")]
        authfile: Option<PathBuf>,
        /// Only fetch; unpack each layer when a container first needs it
        #[arg(long)]
        no_unpack: bool,
    },
    /// List images
    #[command(alias = "list")]
    Ls {
        /// Print image IDs only
        #[arg(short, long)]
        quiet: bool,
        /// Do not shorten image IDs
        #[arg(long)]
        no_trunc: bool,
    },
    /// Show an image's manifest, config and layers as JSON
    Inspect {
        /// A name (busybox, localhost:5000/app:v1) or an ID (or the start of one)
        reference: String,
    },
    /// Remove names or images, and the blobs and snapshots no other image uses
    #[command(alias = "remove")]
    Rm {
        /// Names (the name only goes) or IDs (the image with all its names goes)
        #[arg(required = true)]
        references: Vec<String>,
    },
}

impl ImageCommand {
    pub fn run(self, opts: &NodeOptions) -> Result<ExitCode> {
        if matches!(self, ImageCommand::Import { .. } | ImageCommand::Pull { .. } | ImageCommand::Rm { .. }) {
            require_root("podctl image import, pull and rm")?;
        }
        let store = open_store(&opts.data_dir)?;
        match self {
            ImageCommand::Import { path, name } => {
                let imported = store.import(&path, name.as_deref())?;
                for image in imported {
                    println!("imported {} {}", image.display_name(), image.id);
                }
            }
            ImageCommand::Pull { reference, insecure, authfile, no_unpack } => {
                let image = pull(&store, &reference, insecure, authfile.as_deref(), !no_unpack)?;
                println!("pulled {} {}", image.display_name(), image.id);
            }
            ImageCommand::Ls { quiet, no_trunc } => list(&store.images()?, quiet, no_trunc),
            ImageCommand::Inspect { reference } => {
                let image = store.resolve(&reference)?;
                println!("{}", serde_json::to_string_pretty(&inspect(&store, &image)?)?);
            }
            ImageCommand::Rm { references } => {
                let mut failed = false;
                for reference in references {
                    if let Some(pod) = in_use(&store, opts, &reference)? {
                        eprintln!("podctl: image {reference} is in use by pod {pod} (podctl rm {pod} first)");
                        failed = true;
                        continue;
                    }
                    match store.remove(&reference) {
                        Ok(removed) => {
                            for name in removed.untagged {
                                println!("untagged {name}");
                            }
                            println!("removed {} blobs, {} snapshots", removed.blobs, removed.snapshots);
                        }
                        Err(e) => {
                            eprintln!("podctl: {e}");
                            failed = true;
                        }
                    }
                }
                if failed {
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Pulls `reference` into the store for this machine's platform, showing its progress
/// on stderr.
pub fn pull(store: &Store, reference: &str, insecure: bool, authfile: Option<&Path>, unpack: bool) -> Result<Image> {
    let options =
        PullOptions { insecure, credentials: RegistryCredentials::load(authfile)?, platform: Platform::host(), unpack };
    let progress = Bars::new();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(store.pull(reference, &options, &progress))?)
}

/// The pod whose containers run on the image that removing `reference` would delete
/// (removing one of several names deletes nothing).
fn in_use(store: &Store, opts: &NodeOptions, reference: &str) -> Result<Option<String>> {
    let Ok(image) = store.resolve(reference) else { return Ok(None) };
    let by_name = reference.parse::<images::ImageName>().ok().and_then(|n| n.tagged());
    if by_name.is_some_and(|name| image.names.contains(&name) && image.names.len() > 1) {
        return Ok(None);
    }
    let lower: Vec<PathBuf> = image.layers()?.iter().rev().map(|(_, diff_id)| store.snapshot_dir(diff_id)).collect();
    let runtime = opts.runtime()?;
    Ok(runtime
        .pods()?
        .into_iter()
        .find(|pod| pod.containers().iter().any(|c| c.lower_dirs == lower))
        .map(|pod| pod.name().to_string()))
}

fn open_store(data_dir: &Path) -> Result<Store> {
    Store::open(data_dir).with_context(|| format!("open image store in {}", data_dir.display()))
}

fn list(images: &[Image], quiet: bool, no_trunc: bool) {
    let id = |d: &Digest| {
        if no_trunc { d.to_string() } else { d.short().to_string() }
    };
    if quiet {
        for image in images {
            println!("{}", id(&image.id));
        }
        return;
    }
    let mut rows = vec![["REPOSITORY".to_string(), "TAG".into(), "IMAGE ID".into(), "CREATED".into(), "SIZE".into()]];
    for image in images {
        let created = image.config.created().clone().unwrap_or_default();
        let size = human_size(image.size());
        let names: Vec<(String, String)> = match image.names.is_empty() {
            true => vec![("<none>".into(), "<none>".into())],
            false => image
                .names
                .iter()
                .map(|n| {
                    n.rsplit_once(':')
                        .map(|(r, t)| (r.to_string(), t.to_string()))
                        .unwrap_or((n.clone(), String::new()))
                })
                .collect(),
        };
        for (repo, tag) in names {
            rows.push([repo, tag, id(&image.id), created.clone(), size.clone()]);
        }
    }
    super::print_table(&rows);
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes}B") } else { format!("{value:.1}{}", UNITS[unit]) }
}

fn inspect(store: &Store, image: &Image) -> Result<serde_json::Value> {
    let layers = image.layers()?;
    let descriptors = image.manifest.layers();
    Ok(serde_json::json!({
        "Id": image.id,
        "RepoTags": image.names,
        "ManifestDigest": image.manifest_digest,
        "Size": image.size(),
        "Created": image.config.created(),
        "Os": image.config.os().to_string(),
        "Architecture": image.config.architecture().to_string(),
        "Config": image.config.config(),
        "RootFS": image.config.rootfs(),
        "Layers": layers.iter().zip(descriptors).map(|((digest, diff_id), desc)| serde_json::json!({
            "Digest": digest,
            "DiffID": diff_id,
            "Size": desc.size(),
            "MediaType": desc.media_type().to_string(),
            "Snapshot": store.root().join("snapshots").join(diff_id.hex()),
        })).collect::<Vec<_>>(),
    }))
}

/// Progress bars on a terminal; one line per finished layer otherwise.
struct Bars {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    fn new() -> Bars {
        let multi = std::io::stderr().is_terminal().then(MultiProgress::new);
        Bars { multi, bars: Mutex::new(HashMap::new()) }
    }
}

impl PullProgress for Bars {
    fn layer_started(&self, digest: &Digest, size: u64) {
        if let Some(multi) = &self.multi {
            let bar = multi.add(ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(digest.short().to_string());
            self.bars.lock().expect("not poisoned").insert(digest.clone(), bar);
        }
    }

    fn layer_advanced(&self, digest: &Digest, bytes: u64) {
        if let Some(bar) = self.bars.lock().expect("not poisoned").get(digest) {
            bar.inc(bytes);
        }
    }

    fn layer_finished(&self, digest: &Digest, cached: bool) {
        match self.bars.lock().expect("not poisoned").remove(digest) {
            Some(bar) => bar.finish(),
            None => eprintln!("layer {} {}", digest.short(), if cached { "already present" } else { "done" }),
        }
    }
}
