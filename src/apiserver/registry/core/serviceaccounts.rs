//! serviceaccounts (core/v1), and their `token` subresource (TokenRequest, answered by
//! `serviceaccounts` beside `rest`).

use k8s_openapi::api::core::v1::ServiceAccount;

use super::super::columns::{self, AGE, NAME};
use super::super::{Column, Rules};

pub struct ServiceAccounts;

impl Rules for ServiceAccounts {
    type Object = ServiceAccount;
    const SHORT_NAMES: &'static [&'static str] = &["sa"];
    const SUBRESOURCES: &'static [&'static str] = &["token"];

    fn columns() -> Vec<Column> {
        vec![NAME, columns::integer("Secrets", 0, |o| o["secrets"].as_array().map_or(0, Vec::len).into()), AGE]
    }
}
