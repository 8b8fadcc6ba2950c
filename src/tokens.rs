//! Bearer tokens, kept in kube-apiserver's token file format: the API server's clients
//! authenticate with them.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use axum::http::{HeaderMap, header};

/// The tokens of a token file (`token,user,uid[,"groups"]` per line), in its order.
fn in_order(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(',').next().unwrap_or_default().trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty() {
        bail!("{}: no tokens (one `token,user,uid` per line)", path.display());
    }
    Ok(tokens)
}

/// Every token of a token file: the ones a server accepts.
pub fn read(path: &Path) -> Result<HashSet<String>> {
    Ok(in_order(path)?.into_iter().collect())
}

/// The first token of a token file: the one a client presents.
pub fn first(path: &Path) -> Result<String> {
    Ok(in_order(path)?.swap_remove(0))
}

/// The token file at `path`, made at first start with one admin token (a member of
/// `system:masters`), readable by root only.
pub fn ensure_admin_file(path: &Path) -> Result<std::path::PathBuf> {
    if !path.exists() {
        let token: String = crate::files::random_bytes::<32>().iter().map(|b| format!("{b:02x}")).collect();
        crate::files::write_private(path, format!("{token},admin,admin,\"system:masters\"\n").as_bytes())?;
    }
    crate::files::make_private(path)?;
    Ok(path.to_path_buf())
}

/// Whether a request may go on: no tokens means no authentication.
pub fn admits(tokens: Option<&HashSet<String>>, headers: &HeaderMap) -> bool {
    let Some(tokens) = tokens else { return true };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| tokens.contains(t.trim()))
}
