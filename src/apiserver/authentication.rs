//! Who a request comes from. Bearer tokens are kept in kube-apiserver's token file format
//! (`token,user,uid[,"group1,group2"]` per line); every authenticated user is also in
//! `system:authenticated`, as kube-apiserver adds it. Without a token file the server does
//! not authenticate at all (`--allow-unauthenticated`): every request is anonymous and
//! allowed.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use axum::http::{HeaderMap, header};

/// An authenticated user, as authorization sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

pub const MASTERS: &str = "system:masters";
pub const AUTHENTICATED: &str = "system:authenticated";
pub const UNAUTHENTICATED: &str = "system:unauthenticated";

impl User {
    /// The user a verified client certificate names.
    pub fn certified(name: String, mut groups: Vec<String>) -> User {
        groups.push(AUTHENTICATED.to_string());
        User { name, uid: String::new(), groups }
    }

    /// Who a request with no credentials is.
    pub fn anonymous() -> User {
        User { name: "system:anonymous".into(), uid: String::new(), groups: vec![UNAUTHENTICATED.into()] }
    }

    /// The server itself, for the objects it makes (`system:apiserver`).
    pub fn server() -> User {
        User { name: "system:apiserver".into(), uid: String::new(), groups: vec![MASTERS.into(), AUTHENTICATED.into()] }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// The users of a token file, by token.
pub struct Tokens {
    users: HashMap<String, User>,
    /// The first line's token: the one the admin kubeconfig carries.
    first: String,
}

/// One line of a token file: the token, and the user it stands for.
fn parse_line(line: &str) -> Option<(String, User)> {
    let mut fields = line.splitn(4, ',');
    let token = fields.next()?.trim().to_string();
    let name = fields.next()?.trim().to_string();
    let uid = fields.next()?.trim().to_string();
    let groups = fields.next().unwrap_or("").trim().trim_matches('"');
    let mut groups: Vec<String> =
        groups.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect();
    if token.is_empty() || name.is_empty() {
        return None;
    }
    groups.push(AUTHENTICATED.into());
    Some((token, User { name, uid, groups }))
}

impl Tokens {
    pub fn read(path: &Path) -> Result<Tokens> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let mut users = HashMap::new();
        let mut first = None;
        for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (token, user) = parse_line(line)
                .with_context(|| format!("{}:{number}: not `token,user,uid[,\"groups\"]`", path.display()))?;
            first.get_or_insert_with(|| token.clone());
            users.insert(token, user);
        }
        let Some(first) = first else { bail!("{}: no tokens (one `token,user,uid` per line)", path.display()) };
        Ok(Tokens { users, first })
    }

    /// Lets in the control plane's own clients (the controllers, over loopback) with a
    /// token made for this run, known to no file; returns it.
    pub fn add_internal(&mut self, name: &str) -> String {
        let token: String = crate::files::random_bytes::<32>().iter().map(|b| format!("{b:02x}")).collect();
        let user = User { name: name.into(), uid: String::new(), groups: vec![MASTERS.into(), AUTHENTICATED.into()] };
        self.users.insert(token.clone(), user);
        token
    }

    pub fn first(&self) -> &str {
        &self.first
    }

    /// The user a request's bearer token names: None for no token, Some(Err(token)) for
    /// a token not in the file (a service account's, or no one's).
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Result<User, String>> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let token = value.strip_prefix("Bearer ")?.trim();
        Some(self.user(token).ok_or_else(|| token.to_string()))
    }

    /// The user a token stands for (TokenReview).
    pub fn user(&self, token: &str) -> Option<User> {
        self.users.get(token).cloned()
    }
}

/// The token file at `path`, made at first start with one admin token (a member of
/// `system:masters`), readable by root only.
pub fn ensure_admin_file(path: &Path) -> Result<std::path::PathBuf> {
    if !path.exists() {
        let token: String = crate::files::random_bytes::<32>().iter().map(|b| format!("{b:02x}")).collect();
        crate::files::write_private(path, format!("{token},admin,admin,\"{MASTERS}\"\n").as_bytes())?;
    }
    crate::files::make_private(path)?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines() {
        let (token, user) = parse_line(r#"abc,jane,u1,"dev,ops""#).unwrap();
        assert_eq!(token, "abc");
        assert_eq!(
            user,
            User {
                name: "jane".into(),
                uid: "u1".into(),
                groups: vec!["dev".into(), "ops".into(), AUTHENTICATED.into()]
            }
        );
        assert_eq!(parse_line("abc,bob,u2").unwrap().1.groups, [AUTHENTICATED]);
        assert!(parse_line("abc").is_none());
    }
}
