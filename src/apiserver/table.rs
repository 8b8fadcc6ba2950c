//! `as=Table` responses: a kind's columns (its strategy's, priority 1 ones shown by kubectl
//! only with `-o wide`), one row per object with the object's metadata.

use serde_json::{Value, json};

use super::registry::Strategy;

/// What each row carries besides its cells (the `includeObject` parameter; kubectl asks
/// for whole objects to sort by their fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn of(parameter: Option<&str>) -> IncludeObject {
        match parameter {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// A Table of `objects` of the strategy's kind.
pub fn render(
    strategy: &dyn Strategy,
    objects: &[Value],
    resource_version: &str,
    continue_token: Option<&Value>,
    include: IncludeObject,
) -> Value {
    let definitions = strategy.column_definitions();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells = strategy.cells(o);
            match include {
                IncludeObject::None => json!({"cells": cells}),
                IncludeObject::Metadata => {
                    let metadata = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]});
                    json!({"cells": cells, "object": metadata})
                }
                IncludeObject::Object => json!({"cells": cells, "object": o}),
            }
        })
        .collect();
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(token) = continue_token {
        metadata["continue"] = token.clone();
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": definitions, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::Registry;

    #[test]
    fn service_columns_as_kubectl_prints_them() {
        let services = Registry::builtin().find("", "v1", "services").unwrap();
        let svc = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
                         "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "selector": {"app": "web"},
                                  "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        let table = render(&*services, &[svc.clone()], "7", None, IncludeObject::Metadata);
        // kubectl --sort-by asks for whole objects; without includeObject, metadata only.
        let whole = render(&*services, &[svc.clone()], "7", None, IncludeObject::Object);
        assert_eq!(whole["rows"][0]["object"], svc);
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert!(render(&*services, &[svc.clone()], "7", None, IncludeObject::None)["rows"][0].get("object").is_none());
        let cells = table["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(
            cells[..5],
            [json!("web"), json!("NodePort"), json!("10.96.0.10"), json!("<none>"), json!("80:30080/TCP")]
        );
        assert!(
            cells[5].as_str().unwrap().starts_with("6y") || cells[5].as_str().unwrap().ends_with('y'),
            "{}",
            cells[5]
        );
        assert_eq!(cells[6], "app=web");
        assert_eq!(table["columnDefinitions"][6]["priority"], 1);
        assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "web");
    }
}
