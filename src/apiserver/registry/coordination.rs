//! The coordination.k8s.io group: leases.

use k8s_openapi::api::coordination::v1::Lease;

use super::columns::{self, AGE, NAME};
use super::{Column, Rules};

pub struct Leases;

impl Rules for Leases {
    type Object = Lease;

    fn columns() -> Vec<Column> {
        vec![NAME, columns::string("Holder", 0, |o| o["spec"]["holderIdentity"].as_str().unwrap_or("").into()), AGE]
    }
}
