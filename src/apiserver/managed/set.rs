//! Sets of field paths, as structured-merge-diff keeps them (fieldpath.Set) and
//! managedFields write them (`FieldsV1`): a trie of path elements (`f:name`,
//! `k:{"name":"c"}`, `v:"value"`, `i:0`) whose nodes may themselves be members (`.`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Set {
    /// Whether the path to this node is in the set.
    member: bool,
    children: BTreeMap<String, Set>,
}

impl Set {
    /// A set from its FieldsV1 form.
    pub fn from_fields_v1(fields: &Value) -> Set {
        let mut set = Set::default();
        for (element, child) in fields.as_object().into_iter().flatten() {
            if element == "." {
                set.member = true;
                continue;
            }
            let mut child_set = Set::from_fields_v1(child);
            if child.as_object().is_none_or(Map::is_empty) {
                child_set.member = true;
            }
            set.children.insert(element.clone(), child_set);
        }
        set
    }

    /// The FieldsV1 form: a member with children is marked `.`.
    pub fn to_fields_v1(&self) -> Value {
        let mut out = Map::new();
        if self.member && !self.children.is_empty() {
            out.insert(".".into(), Value::Object(Map::new()));
        }
        for (element, child) in &self.children {
            if !child.is_empty() {
                out.insert(element.clone(), child.to_fields_v1());
            }
        }
        Value::Object(out)
    }

    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(Set::is_empty)
    }

    pub fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    pub fn contains(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => self.member,
            Some((first, rest)) => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    /// The node at `element`, if any.
    pub fn child(&self, element: &str) -> Option<&Set> {
        self.children.get(element)
    }

    pub fn child_mut(&mut self, element: &str) -> Option<&mut Set> {
        self.children.get_mut(element)
    }

    /// Puts `set` at `element`, in place of what was there.
    pub fn put(&mut self, element: &str, set: Set) {
        self.children.insert(element.to_string(), set);
    }

    /// Removes `element` and everything below it.
    pub fn remove(&mut self, element: &str) {
        self.children.remove(element);
    }

    pub fn set_member(&mut self, member: bool) {
        self.member = member;
    }

    pub fn children(&self) -> impl Iterator<Item = (&String, &Set)> {
        self.children.iter()
    }

    pub fn is_member(&self) -> bool {
        self.member
    }

    pub fn union(&self, other: &Set) -> Set {
        let mut out = self.clone();
        out.member |= other.member;
        for (element, child) in &other.children {
            let merged = match out.children.get(element) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            out.children.insert(element.clone(), merged);
        }
        out
    }

    /// The members of `self` not in `other` (their descendants are not removed).
    pub fn difference(&self, other: &Set) -> Set {
        let mut out = Set { member: self.member && !other.member, children: BTreeMap::new() };
        for (element, child) in &self.children {
            let rest = match other.children.get(element) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(element.clone(), rest);
            }
        }
        out
    }

    pub fn intersection(&self, other: &Set) -> Set {
        let mut out = Set { member: self.member && other.member, children: BTreeMap::new() };
        for (element, child) in &self.children {
            if let Some(theirs) = other.children.get(element) {
                let both = child.intersection(theirs);
                if !both.is_empty() {
                    out.children.insert(element.clone(), both);
                }
            }
        }
        out
    }

    /// The members, each as its path of elements, in order.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }
}

/// A path as structured-merge-diff prints it: `.spec.containers[name="c"].image`,
/// `.metadata.finalizers[="x"]`, `.spec.args[0]`.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(name) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(key) = element.strip_prefix("k:") {
            let fields: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        } else if let Some(index) = element.strip_prefix("i:") {
            out.push_str(&format!("[{index}]"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn path(elements: &[&str]) -> Vec<String> {
        elements.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn fields_v1_round_trips_with_members_marked() {
        let fields = json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}}}, "f:replicas": {}}});
        let set = Set::from_fields_v1(&fields);
        assert!(set.contains(&path(&["f:metadata", "f:labels"])));
        assert!(!set.contains(&path(&["f:metadata"])));
        assert!(set.contains(&path(&["f:spec", "f:replicas"])));
        assert_eq!(set.to_fields_v1(), fields);
        assert_eq!(set.paths().len(), 5);
    }

    #[test]
    fn set_algebra_is_by_member() {
        let mut a = Set::default();
        a.insert(&path(&["f:spec", "f:replicas"]));
        a.insert(&path(&["f:spec", "f:paused"]));
        let mut b = Set::default();
        b.insert(&path(&["f:spec", "f:replicas"]));
        b.insert(&path(&["f:spec"]));
        assert_eq!(a.intersection(&b).paths(), [path(&["f:spec", "f:replicas"])]);
        assert_eq!(a.difference(&b).paths(), [path(&["f:spec", "f:paused"])]);
        assert_eq!(a.union(&b).paths().len(), 3);
        assert!(a.difference(&a).is_empty());
    }

    #[test]
    fn paths_print_as_structured_merge_diff_does() {
        assert_eq!(
            display(&path(&["f:spec", "f:containers", "k:{\"name\":\"c\"}", "f:image"])),
            ".spec.containers[name=\"c\"].image"
        );
        assert_eq!(display(&path(&["f:metadata", "f:finalizers", "v:\"x\""])), ".metadata.finalizers[=\"x\"]");
        assert_eq!(
            display(&path(&["f:spec", "f:ports", "k:{\"port\":80,\"protocol\":\"TCP\"}"])),
            ".spec.ports[port=80,protocol=\"TCP\"]"
        );
    }
}
