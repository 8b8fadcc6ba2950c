//! namespaces (core/v1, cluster-scoped): the `kubernetes.io/metadata.name` label, the
//! `kubernetes` finalizer, phase Active (Terminating once deleted).

use k8s_openapi::api::core::v1::{Namespace, NamespaceSpec, NamespaceStatus};

use super::super::columns::{self, AGE, NAME};
use super::super::{Column, FieldLabel, Rules};

pub struct Namespaces;

pub const FINALIZER: &str = "kubernetes";

impl Rules for Namespaces {
    type Object = Namespace;
    const SHORT_NAMES: &'static [&'static str] = &["ns"];
    const SUBRESOURCES: &'static [&'static str] = &["status", "finalize"];

    fn name_rule() -> fn(&str) -> Vec<String> {
        crate::validation::dns_label
    }

    fn default(namespace: &mut Namespace) {
        if let Some(name) = namespace.metadata.name.clone().filter(|n| !n.is_empty()) {
            namespace
                .metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert("kubernetes.io/metadata.name".into(), name);
        }
    }

    fn prepare_for_create(namespace: &mut Namespace) {
        namespace.status = Some(NamespaceStatus { phase: Some("Active".into()), ..Default::default() });
        let finalizers =
            namespace.spec.get_or_insert_with(NamespaceSpec::default).finalizers.get_or_insert_with(Vec::new);
        if !finalizers.iter().any(|f| f == FINALIZER) {
            finalizers.push(FINALIZER.into());
        }
    }

    fn prepare_for_update(new: &mut Namespace, old: &Namespace) {
        // Finalizers change only through /finalize.
        new.spec = old.spec.clone();
        Self::default(new);
    }

    fn awaits_finalization(namespace: &Namespace) -> bool {
        namespace.spec.as_ref().and_then(|s| s.finalizers.as_ref()).is_some_and(|f| !f.is_empty())
    }

    fn columns() -> Vec<Column> {
        vec![NAME, columns::string("Status", 0, |o| columns::text(&o["status"]["phase"])), AGE]
    }

    fn field_labels() -> Vec<FieldLabel> {
        vec![FieldLabel { name: "status.phase", value: |o| o["status"]["phase"].as_str().unwrap_or_default().into() }]
    }
}
