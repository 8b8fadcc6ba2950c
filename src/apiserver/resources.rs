//! The resources the server serves: where each lives in the URL space and in the store,
//! and the kind its objects have.

#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// The plural, lowercase name in URLs (`pods`).
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Subresources served (`status`, `log`, …).
    pub subresources: &'static [&'static str],
}

const fn core(
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    subresources: &'static [&'static str],
) -> Resource {
    Resource { group: "", version: "v1", plural, kind, namespaced, short_names, subresources }
}

pub static RESOURCES: &[Resource] = &[
    core("namespaces", "Namespace", false, &["ns"], &["status"]),
    core("pods", "Pod", true, &["po"], &["status", "binding"]),
    core("nodes", "Node", false, &["no"], &["status"]),
    core("services", "Service", true, &["svc"], &["status"]),
    core("endpoints", "Endpoints", true, &["ep"], &[]),
    core("configmaps", "ConfigMap", true, &["cm"], &[]),
    core("secrets", "Secret", true, &[], &[]),
    core("events", "Event", true, &["ev"], &[]),
    core("serviceaccounts", "ServiceAccount", true, &["sa"], &[]),
    Resource {
        group: "apps",
        version: "v1",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        subresources: &["status", "scale"],
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        subresources: &["status", "scale"],
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        subresources: &[],
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        subresources: &[],
    },
];

impl Resource {
    pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// `v1` or `apps/v1`, as objects name it.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// Where objects of this resource live in the store: the prefix for one namespace (or
    /// all of them with `None`), or for a cluster-scoped resource.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        let group = if self.group.is_empty() { "core" } else { self.group };
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("/registry/{group}/{}/{ns}/", self.plural),
            _ => format!("/registry/{group}/{}/", self.plural),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.prefix(namespace))
    }

    /// The group versions served, in discovery order.
    pub fn group_versions() -> Vec<(&'static str, &'static str)> {
        let mut seen = Vec::new();
        for r in RESOURCES {
            if !seen.contains(&(r.group, r.version)) {
                seen.push((r.group, r.version));
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_groups_namespaces_and_scopes() {
        let pods = Resource::find("", "v1", "pods").unwrap();
        assert_eq!(pods.key(Some("default"), "web"), "/registry/core/pods/default/web");
        assert_eq!(pods.prefix(None), "/registry/core/pods/");
        let nodes = Resource::find("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(None, "n1"), "/registry/core/nodes/n1");
        let deployments = Resource::find("apps", "v1", "deployments").unwrap();
        assert_eq!(deployments.api_version(), "apps/v1");
        assert_eq!(deployments.key(Some("a"), "b"), "/registry/apps/deployments/a/b");
        assert_eq!(
            Resource::group_versions(),
            [("", "v1"), ("apps", "v1"), ("discovery.k8s.io", "v1"), ("coordination.k8s.io", "v1")]
        );
    }
}
