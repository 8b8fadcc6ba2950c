//! The core group (`/api/v1`).

pub mod configmaps;
pub mod endpoints;
pub mod events;
pub mod namespaces;
pub mod nodes;
pub mod pods;
pub mod secrets;
pub mod serviceaccounts;
pub mod services;
