use std::io;
use std::path::PathBuf;

use crate::Digest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The I/O error is part of the message, not a separate source, so it is printed once.
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },

    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: String },

    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: Digest, actual: Digest },

    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },

    #[error("{what}: blob {digest} is missing")]
    MissingBlob { what: String, digest: Digest },

    #[error("{what}: {reason}")]
    Malformed { what: String, reason: String },

    #[error("image {image}: layer {layer}{}: {reason}", entry.as_ref().map(|e| format!(": entry {e:?}")).unwrap_or_default())]
    Layer { image: String, layer: Digest, entry: Option<String>, reason: String },

    #[error("{path}: not an image archive or layout: {reason}")]
    UnknownFormat { path: PathBuf, reason: String },

    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("no such image: {0}")]
    NotFound(String),

    #[error("image reference {reference:?} is ambiguous: it matches {matches} images")]
    Ambiguous { reference: String, matches: usize },

    #[error("image {image}: no entry for platform {platform}")]
    NoPlatform { image: String, platform: String },

    #[error("registry: {reference}: {reason}")]
    Registry { reference: String, reason: String },

    #[error("credentials file {path}: {reason}")]
    Credentials { path: PathBuf, reason: String },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |error| Error::Io { context, error }
    }

    pub(crate) fn malformed(what: impl Into<String>, reason: impl ToString) -> Error {
        Error::Malformed { what: what.into(), reason: reason.to_string() }
    }
}
