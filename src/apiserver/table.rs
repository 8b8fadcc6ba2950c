//! `as=Table` responses: the columns `kubectl get` prints for each kind (priority 1 ones
//! only with `-o wide`), computed here as kube-apiserver's printers do.

use serde_json::{Value, json};

/// Whether the client asked for a Table (`Accept: application/json;as=Table;…`).
pub fn wanted(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
}

struct Column {
    name: &'static str,
    priority: u8,
    cell: fn(&Value) -> Value,
}

const fn col(name: &'static str, priority: u8, cell: fn(&Value) -> Value) -> Column {
    Column { name, priority, cell }
}

fn name(o: &Value) -> Value {
    o["metadata"]["name"].clone()
}

fn age(o: &Value) -> Value {
    o["metadata"]["creationTimestamp"].as_str().map_or("<unknown>".into(), |t| human_age(t).into())
}

fn text(v: &Value) -> Value {
    match v {
        Value::String(s) if !s.is_empty() => v.clone(),
        _ => "<none>".into(),
    }
}

fn columns(kind: &str) -> Vec<Column> {
    match kind {
        "Pod" => vec![
            col("Name", 0, name),
            col("Ready", 0, |o| {
                let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
                let ready = o["status"]["containerStatuses"]
                    .as_array()
                    .map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
                format!("{ready}/{total}").into()
            }),
            col("Status", 0, |o| {
                if o["metadata"].get("deletionTimestamp").is_some() {
                    return "Terminating".into();
                }
                o["status"]["reason"].as_str().or(o["status"]["phase"].as_str()).unwrap_or("Pending").into()
            }),
            col("Restarts", 0, |o| {
                let restarts: i64 = o["status"]["containerStatuses"]
                    .as_array()
                    .map_or(0, |s| s.iter().filter_map(|c| c["restartCount"].as_i64()).sum());
                restarts.into()
            }),
            col("Age", 0, age),
            col("IP", 1, |o| text(&o["status"]["podIP"])),
            col("Node", 1, |o| text(&o["spec"]["nodeName"])),
            col("Nominated Node", 1, |o| text(&o["status"]["nominatedNodeName"])),
            col("Readiness Gates", 1, |_| "<none>".into()),
        ],
        "Node" => vec![
            col("Name", 0, name),
            col("Status", 0, |o| {
                let ready = o["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready");
                let mut status = match ready.map(|c| c["status"].as_str().unwrap_or("")) {
                    Some("True") => "Ready".to_string(),
                    _ => "NotReady".to_string(),
                };
                if o["spec"]["unschedulable"] == true {
                    status += ",SchedulingDisabled";
                }
                status.into()
            }),
            col("Roles", 0, |o| {
                let roles: Vec<&str> = o["metadata"]["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
                    .collect();
                if roles.is_empty() { "<none>".into() } else { roles.join(",").into() }
            }),
            col("Age", 0, age),
            col("Version", 0, |o| text(&o["status"]["nodeInfo"]["kubeletVersion"])),
            col("Internal-IP", 1, |o| address(o, "InternalIP")),
            col("External-IP", 1, |o| address(o, "ExternalIP")),
            col("OS-Image", 1, |o| text(&o["status"]["nodeInfo"]["osImage"])),
            col("Kernel-Version", 1, |o| text(&o["status"]["nodeInfo"]["kernelVersion"])),
            col("Container-Runtime", 1, |o| text(&o["status"]["nodeInfo"]["containerRuntimeVersion"])),
        ],
        "Service" => vec![
            col("Name", 0, name),
            col("Type", 0, |o| o["spec"]["type"].as_str().unwrap_or("ClusterIP").into()),
            col("Cluster-IP", 0, |o| text(&o["spec"]["clusterIP"])),
            col("External-IP", 0, |o| match o["spec"]["type"].as_str() {
                Some("ExternalName") => text(&o["spec"]["externalName"]),
                Some("LoadBalancer") => "<pending>".into(),
                _ => "<none>".into(),
            }),
            col("Port(s)", 0, |o| {
                let ports: Vec<String> = o["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let proto = p["protocol"].as_str().unwrap_or("TCP");
                        match p["nodePort"].as_i64() {
                            Some(node) => format!("{}:{node}/{proto}", p["port"]),
                            None => format!("{}/{proto}", p["port"]),
                        }
                    })
                    .collect();
                if ports.is_empty() { "<none>".into() } else { ports.join(",").into() }
            }),
            col("Age", 0, age),
            col("Selector", 1, |o| selector(&o["spec"]["selector"])),
        ],
        "Deployment" => vec![
            col("Name", 0, name),
            col("Ready", 0, |o| {
                format!(
                    "{}/{}",
                    o["status"]["readyReplicas"].as_i64().unwrap_or(0),
                    o["spec"]["replicas"].as_i64().unwrap_or(1)
                )
                .into()
            }),
            col("Up-to-date", 0, |o| o["status"]["updatedReplicas"].as_i64().unwrap_or(0).into()),
            col("Available", 0, |o| o["status"]["availableReplicas"].as_i64().unwrap_or(0).into()),
            col("Age", 0, age),
            col("Containers", 1, |o| containers(o, "name")),
            col("Images", 1, |o| containers(o, "image")),
            col("Selector", 1, |o| selector(&o["spec"]["selector"]["matchLabels"])),
        ],
        "ReplicaSet" => vec![
            col("Name", 0, name),
            col("Desired", 0, |o| o["spec"]["replicas"].as_i64().unwrap_or(1).into()),
            col("Current", 0, |o| o["status"]["replicas"].as_i64().unwrap_or(0).into()),
            col("Ready", 0, |o| o["status"]["readyReplicas"].as_i64().unwrap_or(0).into()),
            col("Age", 0, age),
            col("Containers", 1, |o| containers(o, "name")),
            col("Images", 1, |o| containers(o, "image")),
            col("Selector", 1, |o| selector(&o["spec"]["selector"]["matchLabels"])),
        ],
        "Event" => vec![
            col("Last Seen", 0, |o| {
                let at = o["lastTimestamp"]
                    .as_str()
                    .or(o["eventTime"].as_str())
                    .or(o["metadata"]["creationTimestamp"].as_str());
                at.map_or("<unknown>".into(), |t| human_age(t).into())
            }),
            col("Type", 0, |o| text(&o["type"])),
            col("Reason", 0, |o| text(&o["reason"])),
            col("Object", 0, |o| {
                let kind = o["involvedObject"]["kind"].as_str().unwrap_or("").to_lowercase();
                format!("{kind}/{}", o["involvedObject"]["name"].as_str().unwrap_or("")).into()
            }),
            col("Message", 0, |o| o["message"].as_str().unwrap_or("").trim().into()),
        ],
        "Namespace" => {
            vec![col("Name", 0, name), col("Status", 0, |o| text(&o["status"]["phase"])), col("Age", 0, age)]
        }
        "ConfigMap" => vec![
            col("Name", 0, name),
            col("Data", 0, |o| {
                let count =
                    o["data"].as_object().map_or(0, |m| m.len()) + o["binaryData"].as_object().map_or(0, |m| m.len());
                count.into()
            }),
            col("Age", 0, age),
        ],
        "Secret" => vec![
            col("Name", 0, name),
            col("Type", 0, |o| o["type"].as_str().unwrap_or("Opaque").into()),
            col("Data", 0, |o| o["data"].as_object().map_or(0, |m| m.len()).into()),
            col("Age", 0, age),
        ],
        _ => vec![col("Name", 0, name), col("Age", 0, age)],
    }
}

fn address(node: &Value, kind: &str) -> Value {
    let found = node["status"]["addresses"].as_array().into_iter().flatten().find(|a| a["type"] == kind);
    found.map_or("<none>".into(), |a| a["address"].clone())
}

fn selector(labels: &Value) -> Value {
    let pairs: Vec<String> =
        labels.as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
    if pairs.is_empty() { "<none>".into() } else { pairs.join(",").into() }
}

fn containers(o: &Value, field: &str) -> Value {
    let values: Vec<&str> = o["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c[field].as_str())
        .collect();
    values.join(",").into()
}

/// A Table of `objects` of `kind`, each row carrying its object's metadata.
pub fn render(kind: &str, objects: &[Value], resource_version: &str, continue_token: Option<&Value>) -> Value {
    let columns = columns(kind);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            let format = if c.name == "Name" { "name" } else { "" };
            let kind = if matches!(c.name, "Restarts" | "Up-to-date" | "Available" | "Desired" | "Current" | "Data") {
                "integer"
            } else {
                "string"
            };
            json!({"name": c.name, "type": kind, "format": format, "description": "", "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = columns.iter().map(|c| (c.cell)(o)).collect();
            let metadata =
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]});
            json!({"cells": cells, "object": metadata})
        })
        .collect();
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(token) = continue_token {
        metadata["continue"] = token.clone();
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": definitions, "rows": rows})
}

/// How long ago RFC 3339 time `at` was, as kubectl prints it (`45s`, `3m`, `5h`, `2d`).
pub fn human_age(at: &str) -> String {
    let Some(then) = parse_rfc3339(at) else { return "<unknown>".into() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let secs = (now - then).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 8 * 86400 => format!("{}d{}h", s / 86400, s % 86400 / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac]Z`.
fn parse_rfc3339(t: &str) -> Option<i64> {
    let num = |range: std::ops::Range<usize>| t.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_columns_as_kubectl_prints_them() {
        let svc = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
                         "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "selector": {"app": "web"},
                                  "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        let table = render("Service", &[svc], "7", None);
        let cells = table["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(
            cells[..5],
            [json!("web"), json!("NodePort"), json!("10.96.0.10"), json!("<none>"), json!("80:30080/TCP")]
        );
        assert!(cells[5].as_str().unwrap().ends_with('d'));
        assert_eq!(cells[6], "app=web");
        assert_eq!(table["columnDefinitions"][6]["priority"], 1);
        assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "web");
    }

    #[test]
    fn parses_what_now_writes() {
        let now = super::super::objects::now();
        assert!(matches!(human_age(&now).as_str(), "0s" | "1s"), "{}", human_age(&now));
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01Z"), Some(86_401));
        assert!(wanted("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"));
        assert!(!wanted("application/json"));
    }
}
