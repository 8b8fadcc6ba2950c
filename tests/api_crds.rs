//! CustomResourceDefinitions as operators and Helm charts use them, through kubectl 1.27
//! and 1.33: a definition makes its resource served at once (discovery, `kubectl get`
//! with its printer columns, `kubectl explain`), its schema refuses, prunes and defaults,
//! its status and scale subresources work, its versions share the objects, and deleting
//! it deletes them.

use serde_json::Value;
use testkit::apiserver::{ApiServer, KUBECTL_DIR};

const PODCTL: &str = env!("CARGO_BIN_EXE_podctl");

const DEFINITION: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: crontabs.stable.example.com}
spec:
  group: stable.example.com
  scope: Namespaced
  names: {plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct], categories: [all]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [cronSpec]
            properties:
              cronSpec: {type: string, pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$', description: When the job runs.}
              image: {type: string}
              replicas: {type: integer, minimum: 0, maximum: 10, default: 1}
          status:
            type: object
            properties:
              replicas: {type: integer}
              selector: {type: string}
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas, labelSelectorPath: .status.selector}
    additionalPrinterColumns:
    - {name: Spec, type: string, jsonPath: .spec.cronSpec}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Image, type: string, jsonPath: .spec.image, priority: 1}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

fn kubectl_of(api: &ApiServer, release: &str, args: &[&str], stdin: &str) -> (bool, String) {
    let out = api.kubectl_output_of(&format!("{KUBECTL_DIR}/kubectl.{release}"), args, Some(stdin));
    let text = if out.status.success() { out.stdout } else { out.stderr };
    (out.status.success(), String::from_utf8_lossy(&text).into_owned())
}

#[test]
fn a_definition_serves_its_resource_as_kube_apiserver_does() {
    let api = ApiServer::start(PODCTL, &[]);
    api.kubectl_stdin(&["apply", "-f", "-"], DEFINITION);
    let crd: Value =
        serde_json::from_str(&api.kubectl(&["get", "crd", "crontabs.stable.example.com", "-o", "json"])).unwrap();
    let conditions = crd["status"]["conditions"].as_array().unwrap();
    assert!(conditions.iter().any(|c| c["type"] == "Established" && c["status"] == "True"), "{conditions:?}");
    assert_eq!(crd["status"]["storedVersions"], serde_json::json!(["v1"]));
    assert_eq!(crd["spec"]["names"]["listKind"], "CronTabList", "defaulted");
    api.kubectl(&["wait", "--for=condition=Established", "crd/crontabs.stable.example.com", "--timeout=10s"]);
    let resources = api.kubectl(&["api-resources", "--api-group=stable.example.com"]);
    assert!(resources.contains("crontabs") && resources.contains("ct") && resources.contains("CronTab"), "{resources}");

    for release in ["1.33", "1.27"] {
        let name = format!("tab-{}", release.replace('.', "-"));
        let manifest = format!(
            "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {{name: {name}}}\nspec: {{cronSpec: '*/5 * * * *', image: busybox}}\n"
        );
        let (ok, out) = kubectl_of(&api, release, &["apply", "-f", "-"], &manifest);
        assert!(ok && out.contains("created"), "{release}: {out}");
        let (ok, out) = kubectl_of(&api, release, &["apply", "-f", "-"], &manifest);
        assert!(ok && out.contains("unchanged"), "{release}: a second apply changes nothing: {out}");
        let (ok, out) = kubectl_of(&api, release, &["get", "ct", &name], "");
        let header: Vec<&str> = out.lines().next().unwrap_or("").split_whitespace().collect();
        assert!(ok && header == ["NAME", "SPEC", "REPLICAS", "AGE"], "{release}: {out}");
        assert!(
            out.contains("*/5 * * * *") && out.lines().nth(1).unwrap().split_whitespace().nth(6) == Some("1"),
            "{out}"
        );
        let (ok, out) = kubectl_of(&api, release, &["get", "crontabs", "-o", "wide"], "");
        assert!(ok && out.contains("IMAGE") && out.contains("busybox"), "{release}: {out}");
        let (ok, out) = kubectl_of(&api, release, &["describe", "crontab", &name], "");
        assert!(ok && out.contains("Cron Spec:"), "{release}: {out}");
    }
    let tab: Value = serde_json::from_str(&api.kubectl(&["get", "ct", "tab-1-33", "-o", "json"])).unwrap();
    assert_eq!(tab["spec"]["replicas"], 1, "defaulted");
    assert_eq!(tab["metadata"]["generation"], 1);

    // Refused by the schema, with kube-apiserver's messages.
    let bad = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: bad}\nspec: {cronSpec: 'every minute', replicas: 11}\n";
    let err = api.kubectl_stdin_fails(&["apply", "-f", "-"], bad);
    assert!(err.contains("The CronTab \"bad\" is invalid"), "{err}");
    assert!(
        err.contains("spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"),
        "{err}"
    );
    assert!(err.contains("spec.cronSpec in body should match"), "{err}");
    let missing = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: bad}\nspec: {image: x}\n";
    let err = api.kubectl_stdin_fails(&["apply", "-f", "-"], missing);
    assert!(err.contains("spec.cronSpec: Required value"), "{err}");
    let strict = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: strict}\nspec: {cronSpec: '* * * * *', bogus: 1}\nstatus: {replicas: 9}\n";
    let err = api.kubectl_stdin_fails(&["create", "--validate=strict", "-f", "-"], strict);
    assert!(err.contains("unknown field \"spec.bogus\""), "{err}");
    let out = api.kubectl_output(&["create", "--validate=warn", "-f", "-"], Some(strict));
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field \"spec.bogus\""), "{out:?}");
    let pruned: Value = serde_json::from_str(&api.kubectl(&["get", "ct", "strict", "-o", "json"])).unwrap();
    assert!(pruned["spec"].get("bogus").is_none(), "unknown fields are pruned: {pruned}");
    assert!(pruned.get("status").is_none(), "the status is a subresource: {pruned}");

    // Status and scale.
    api.kubectl(&[
        "patch",
        "ct",
        "tab-1-33",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":1,"selector":"app=tab"}}"#,
    ]);
    api.kubectl(&["scale", "ct", "tab-1-33", "--replicas=3", "--current-replicas=1"]);
    let tab: Value = serde_json::from_str(&api.kubectl(&["get", "ct", "tab-1-33", "-o", "json"])).unwrap();
    assert_eq!((tab["spec"]["replicas"].clone(), tab["status"]["replicas"].clone()), (3.into(), 1.into()));
    assert_eq!(tab["metadata"]["generation"], 2, "the scale changed the spec; the status did not count");
    let err = api.kubectl_fails(&["scale", "ct", "tab-1-33", "--replicas=20"]);
    assert!(err.contains("less than or equal to 10"), "{err}");

    // Server-side apply of a custom resource: its schema's types decide ownership.
    let ssa = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: ssa}\nspec: {cronSpec: '* * * * *', image: a}\n";
    api.kubectl_stdin(&["apply", "--server-side", "-f", "-"], ssa);
    api.kubectl(&["patch", "ct", "ssa", "--type=merge", "-p", r#"{"spec":{"image":"b"}}"#]);
    let err = api.kubectl_stdin_fails(&["apply", "--server-side", "-f", "-"], ssa);
    assert!(err.contains("conflict with \"kubectl-patch\" using stable.example.com/v1: .spec.image"), "{err}");
    api.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: ssa}\nspec: {cronSpec: '* * * * *'}\n",
    );
    let applied: Value = serde_json::from_str(&api.kubectl(&["get", "ct", "ssa", "-o", "json"])).unwrap();
    assert_eq!(applied["spec"]["image"], "b", "kubectl-patch still owns it");

    // Another version of the same objects.
    let old: Value =
        serde_json::from_str(&api.kubectl(&["get", "crontabs.v1beta1.stable.example.com", "tab-1-33", "-o", "json"]))
            .unwrap();
    assert_eq!(old["apiVersion"], "stable.example.com/v1beta1");
    assert_eq!(old["spec"]["replicas"], 3);
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: stable.example.com/v1beta1\nkind: CronTab\nmetadata: {name: beta}\nspec: {cronSpec: '* * * * *'}\n",
    );
    let beta: Value =
        serde_json::from_str(&api.kubectl(&["get", "crontabs.v1.stable.example.com", "beta", "-o", "json"])).unwrap();
    assert_eq!(beta["apiVersion"], "stable.example.com/v1");
    let all = api.kubectl(&["get", "all"]);
    assert!(all.contains("crontab.stable.example.com/beta"), "the `all` category: {all}");

    // kubectl explain reads the published schema.
    let explained = api.kubectl(&["explain", "crontab.spec.cronSpec"]);
    assert!(explained.contains("When the job runs."), "{explained}");

    // A bad definition is refused, naming what is wrong.
    let err = api.kubectl_stdin_fails(
        &["apply", "-f", "-"],
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: widgets, kind: Widget}\n  versions:\n  - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, properties: {spec: {properties: {size: {type: string}}}}}}}\n",
    );
    assert!(err.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value"), "{err}");
    let err = api.kubectl_stdin_fails(
        &["apply", "-f", "-"],
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: pods.k8s.io}\nspec:\n  group: k8s.io\n  scope: Cluster\n  names: {plural: pods, kind: Pod}\n  versions:\n  - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}\n",
    );
    assert!(err.contains("protected groups must have approval annotation"), "{err}");

    // Deleting the definition deletes its objects and stops serving them.
    api.kubectl(&["delete", "crd", "crontabs.stable.example.com"]);
    let err = api.kubectl_fails(&["get", "crontabs.stable.example.com"]);
    assert!(err.contains("the server doesn't have a resource type") || err.contains("NotFound"), "{err}");
    api.kubectl_stdin(&["apply", "-f", "-"], DEFINITION);
    let listed = api.kubectl(&["get", "ct", "-o", "name"]);
    assert_eq!(listed.trim(), "", "objects of the deleted definition are gone: {listed}");
}

#[test]
fn definitions_are_served_again_after_a_restart() {
    let mut api = ApiServer::start(PODCTL, &[]);
    api.kubectl_stdin(&["apply", "-f", "-"], DEFINITION);
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: kept}\nspec: {cronSpec: '* * * * *'}\n",
    );
    let addr = api.addr;
    api.restart_on(addr, &[]);
    let kept: Value = serde_json::from_str(&api.kubectl(&["get", "ct", "kept", "-o", "json"])).unwrap();
    assert_eq!(kept["spec"]["replicas"], 1);
    // A watch from the start sees the object, as informers of operators do.
    let (status, body) =
        api.http("GET", "/apis/stable.example.com/v1/namespaces/default/crontabs?watch=1&timeoutSeconds=1", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(
        (body["type"].as_str(), body["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("kept")),
        "{body}"
    );
}

#[test]
fn cel_rules_of_a_schema_are_enforced() {
    let api = ApiServer::start(PODCTL, &[]);
    let definition = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: scalers.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: scalers, kind: Scaler}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - {rule: "self.minReplicas <= self.maxReplicas", message: "minReplicas must not exceed maxReplicas"}
            - {rule: "self.target == oldSelf.target", message: "target is immutable", fieldPath: ".target"}
            - {rule: "self.minReplicas <= 5", messageExpression: "'minReplicas is ' + string(self.minReplicas) + ', more than 5'"}
            properties:
              minReplicas: {type: integer}
              maxReplicas: {type: integer}
              target:
                type: string
                x-kubernetes-validations:
                - {rule: "self.matches('^[a-z]+$')"}
                - {rule: "self.size() < 3 || self.substring(0, 3) != 'bad'", messageExpression: "'may not start with ' + self.substring(0, 3).upperAscii()"}
"#;
    api.kubectl_stdin(&["apply", "-f", "-"], definition);
    let scaler = |min: i64, target: &str| {
        format!(
            "apiVersion: example.com/v1\nkind: Scaler\nmetadata: {{name: s}}\nspec: {{minReplicas: {min}, maxReplicas: 3, target: {target}}}\n"
        )
    };
    let err = api.kubectl_stdin_fails(&["apply", "-f", "-"], &scaler(5, "Web"));
    assert!(err.contains("spec: Invalid value: \"object\": minReplicas must not exceed maxReplicas"), "{err}");
    assert!(err.contains("spec.target: Invalid value: \"string\": failed rule: self.matches('^[a-z]+$')"), "{err}");
    // messageExpression says why, with the Kubernetes CEL libraries at hand.
    let err = api.kubectl_stdin_fails(&["apply", "-f", "-"], &scaler(7, "badger"));
    assert!(err.contains("spec: Invalid value: \"object\": minReplicas is 7, more than 5"), "{err}");
    assert!(err.contains("spec.target: Invalid value: \"string\": may not start with BAD"), "{err}");
    api.kubectl_stdin(&["apply", "-f", "-"], &scaler(1, "web"));
    api.kubectl_stdin(&["apply", "-f", "-"], &scaler(2, "web"));
    let err = api.kubectl_stdin_fails(&["apply", "-f", "-"], &scaler(2, "api"));
    assert!(err.contains("spec.target: Invalid value: \"object\": target is immutable"), "a transition rule: {err}");
    // A rule or message expression that does not compile makes the definition invalid.
    for (from, to, field) in [
        ("self.minReplicas <= self.maxReplicas", "self.minReplicas <=", "x-kubernetes-validations[0].rule"),
        ("', more than 5'", "', more than 5", "x-kubernetes-validations[2].messageExpression"),
    ] {
        let broken = definition
            .replace("scalers.example.com", "brokens.example.com")
            .replace("plural: scalers, kind: Scaler", "plural: brokens, kind: Broken")
            .replace(from, to);
        let err = api.kubectl_stdin_fails(&["apply", "-f", "-"], &broken);
        assert!(err.contains(&format!("{field}: Invalid value")) && err.contains("compilation failed"), "{err}");
    }
    // A rule whose worst case is too dear is refused before any object can run it; with
    // the list bounded, the same rule is taken.
    let costly = definition
        .replace("scalers.example.com", "costlies.example.com")
        .replace("plural: scalers, kind: Scaler", "plural: costlies, kind: Costly")
        .replace(
            "              minReplicas: {type: integer}",
            "              tags:\n                type: array\n                items: {type: string}\n                \
             x-kubernetes-validations: [{rule: \"self.all(a, self.exists_one(b, a == b))\"}]\n              minReplicas: {type: integer}",
        );
    let err = api.kubectl_stdin_fails(&["apply", "-f", "-"], &costly);
    assert!(
        err.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[tags].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x"),
        "{err}"
    );
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        &costly.replace("items: {type: string}", "items: {type: string}\n                maxItems: 64"),
    );
}

/// A version's selectableFields are field selectors of its resource (`kubectl get
/// --field-selector`, watches too); paths that cannot be one are refused.
#[test]
fn selectable_fields_select() {
    let api = ApiServer::start(PODCTL, &[]);
    let definition = |name: &str, fields: &str| {
        format!(
            r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {name}s.example.com}}
spec:
  group: example.com
  scope: Namespaced
  names: {{plural: {name}s, kind: {kind}}}
  versions:
  - name: v1
    served: true
    storage: true
    selectableFields: {fields}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              color: {{type: string}}
              size: {{type: integer}}
              shiny: {{type: boolean}}
              parts: {{type: array, items: {{type: string}}}}
"#,
            kind = name[..1].to_uppercase() + &name[1..]
        )
    };
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        &definition("widget", "[{jsonPath: .spec.color}, {jsonPath: .spec.size}, {jsonPath: .spec.shiny}]"),
    );
    api.kubectl(&["wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=10s"]);
    for (name, spec) in [("a", "{color: red, size: 1, shiny: true}"), ("b", "{color: blue, size: 2}"), ("c", "{}")] {
        let widget = format!("apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: {name}}}\nspec: {spec}\n");
        api.kubectl_stdin(&["apply", "-f", "-"], &widget);
    }
    let names = |selector: &str| api.kubectl(&["get", "widgets", "--field-selector", selector, "-o", "name"]);
    assert_eq!(names("spec.color=red"), "widget.example.com/a\n");
    assert_eq!(names("spec.size=2"), "widget.example.com/b\n");
    assert_eq!(names("spec.shiny=true,metadata.name!=b"), "widget.example.com/a\n");
    assert_eq!(names("spec.color!=blue"), "widget.example.com/a\nwidget.example.com/c\n");
    let err = api.kubectl_fails(&["get", "widgets", "--field-selector", "spec.parts=x"]);
    assert!(err.contains("field label not supported: spec.parts"), "{err}");

    for (fields, message) in [
        ("[{jsonPath: .spec.parts}]", "selectable field type must be one of"),
        ("[{jsonPath: .metadata.name}]", "must not point to fields in metadata"),
        ("[{jsonPath: .spec.missing}]", "the field is not in the schema"),
        ("[{jsonPath: '.spec.parts[0]'}]", "must be a simple json path"),
        ("[{jsonPath: .spec.color}, {jsonPath: .spec.color}]", "Duplicate value: \".spec.color\""),
    ] {
        let err = api.kubectl_stdin_fails(&["apply", "-f", "-"], &definition("gadget", fields));
        assert!(err.contains("spec.versions[0].selectableFields[") && err.contains(message), "{fields}: {err}");
    }
}
