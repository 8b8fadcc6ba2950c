//! The node's OCI image store.
//!
//! Everything lives under `DATA_DIR/images`:
//!
//! ```text
//! oci-layout, index.json   the store is itself an OCI image layout; index.json holds the tags
//! blobs/sha256/<hex>       manifests, configs and layers, verified (digest and size) before they appear
//! ingest/                  blobs being written; never read
//! snapshots/<diff-id hex>  each layer unpacked once, whiteouts in overlayfs form; shared by all containers
//! gc.lock, index.lock      flock(2) files: writers share gc.lock, garbage collection takes it alone
//! ```
//!
//! Images come in by [`Store::import`] (OCI layout directory, `oci-archive`, `docker-archive`)
//! or [`Store::pull`] (Distribution API v2). An image's ID is its config digest, so the same
//! image has the same ID whichever way it came in.

mod archive;
mod auth;
mod digest;
mod error;
mod import;
mod platform;
mod pull;
mod reference;
mod store;
mod sys;
mod unpack;

pub use auth::RegistryCredentials;
pub use digest::Digest;
pub use error::Error;
pub use platform::Platform;
pub use pull::{PullOptions, PullProgress};
pub use reference::ImageName;
pub use store::{Image, Removed, Store};

pub type Result<T, E = Error> = std::result::Result<T, E>;
