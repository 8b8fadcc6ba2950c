//! The built-in API beyond pods and deployments, as kubectl 1.27 and 1.33 use it: every
//! resource type created, applied again unchanged, listed, described and deleted; and the
//! admission plugins that act on them (quotas, limit ranges, priority classes, default
//! storage classes).

use serde_json::{Value, json};
use testkit::apiserver::{ApiServer, KUBECTL_DIR};

const PODCTL: &str = env!("CARGO_BIN_EXE_podctl");

/// One object of each kind, in namespace NS (cluster-scoped ones named after NS).
const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: NS}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-NS}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  hostPath: {path: /tmp/pv-NS}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: NS}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: quota, namespace: NS}
spec: {hard: {pods: "20", configmaps: "10"}}
---
apiVersion: v1
kind: LimitRange
metadata: {name: limits, namespace: NS}
spec:
  limits: [{type: Container, default: {cpu: 500m}, max: {cpu: "2"}}]
---
apiVersion: v1
kind: PodTemplate
metadata: {name: template, namespace: NS}
template:
  metadata: {labels: {app: t}}
  spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: rc, namespace: NS}
spec:
  replicas: 0
  template:
    metadata: {labels: {app: rc}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ds, namespace: NS}
spec:
  selector: {matchLabels: {app: ds}}
  template:
    metadata: {labels: {app: ds}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: sts, namespace: NS}
spec:
  serviceName: sts
  replicas: 0
  selector: {matchLabels: {app: sts}}
  template:
    metadata: {labels: {app: sts}}
    spec: {containers: [{name: c, image: busybox}]}
  volumeClaimTemplates:
  - metadata: {name: www}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: apps/v1
kind: ControllerRevision
metadata: {name: sts-1, namespace: NS}
data: {spec: {template: {}}}
revision: 1
---
apiVersion: batch/v1
kind: Job
metadata: {name: job, namespace: NS}
spec:
  suspend: true
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox, command: ["true"]}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: cron, namespace: NS}
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: c, image: busybox}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: hpa, namespace: NS}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: StatefulSet, name: sts}
  maxReplicas: 3
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: pdb, namespace: NS}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: sts}}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: class-NS}
spec: {controller: example.com/ingress}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: NS}
spec:
  ingressClassName: class-NS
  rules:
  - host: web.example.com
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: NS}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 80}]}]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: sc-NS}
provisioner: example.com/disk
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: pc-NS}
value: 1000
"#;

/// `kind/name` as kubectl prints it for each object of MANIFEST, in order.
const PRINTED: [&str; 19] = [
    "namespace/NS",
    "persistentvolume/pv-NS",
    "persistentvolumeclaim/data",
    "resourcequota/quota",
    "limitrange/limits",
    "podtemplate/template",
    "replicationcontroller/rc",
    "daemonset.apps/ds",
    "statefulset.apps/sts",
    "controllerrevision.apps/sts-1",
    "job.batch/job",
    "cronjob.batch/cron",
    "horizontalpodautoscaler.autoscaling/hpa",
    "poddisruptionbudget.policy/pdb",
    "ingressclass.networking.k8s.io/class-NS",
    "ingress.networking.k8s.io/web",
    "networkpolicy.networking.k8s.io/deny",
    "storageclass.storage.k8s.io/sc-NS",
    "priorityclass.scheduling.k8s.io/pc-NS",
];

fn succeeds(api: &ApiServer, binary: &str, args: &[&str], stdin: &str) -> String {
    let out = api.kubectl_output_of(binary, args, Some(stdin));
    assert!(out.status.success(), "{binary} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn kubectl_1_27_and_1_33_drive_every_resource_type() {
    let api = ApiServer::start(PODCTL, &[]);
    for (binary, namespace) in
        [(format!("{KUBECTL_DIR}/kubectl.1.33"), "new"), (format!("{KUBECTL_DIR}/kubectl.1.27"), "old")]
    {
        let manifest = MANIFEST.replace("NS", namespace);
        let printed: Vec<String> = PRINTED.iter().map(|p| p.replace("NS", namespace)).collect();
        let expect = |output: &str, verb: &str| {
            let lines: Vec<&str> = output.lines().collect();
            let wanted: Vec<String> = printed.iter().map(|p| format!("{p} {verb}")).collect();
            assert_eq!(lines, wanted, "{binary}");
        };
        expect(&succeeds(&api, &binary, &["apply", "-f", "-"], &manifest), "created");
        // Applied again, nothing changes. kubectl still sends (and says `configured`) for
        // four of them, as it does to kube-apiserver: lists its schema replaces whole
        // that the server defaulted into (limits, volumeClaimTemplates, ingress rules),
        // and a map it always sends whole (a PDB's selector). The server writes nothing.
        let versions = || {
            let args =
                ["get", "-A", "-o", "jsonpath={.items[*].metadata.resourceVersion}", "limitrange,sts,pdb,netpol"];
            let mut versions: Vec<String> =
                succeeds(&api, &binary, &args, "").split_whitespace().map(String::from).collect();
            versions.sort();
            versions
        };
        let before = versions();
        let again = succeeds(&api, &binary, &["apply", "-f", "-"], &manifest);
        let resent =
            ["limitrange/", "statefulset.apps/", "poddisruptionbudget.policy/", "networkpolicy.networking.k8s.io/"];
        for line in again.lines() {
            let verb = if resent.iter().any(|kind| line.starts_with(kind)) { " configured" } else { " unchanged" };
            assert!(line.ends_with(verb), "{binary}: {again}");
        }
        assert_eq!(again.lines().count(), printed.len());
        assert_eq!(versions(), before, "{binary}: a patch that changes nothing writes nothing");
        for object in &printed[1..] {
            let (kind, name) = object.split_once('/').unwrap();
            let row = succeeds(&api, &binary, &["get", kind, name, "-n", namespace], "");
            assert!(row.lines().nth(1).is_some_and(|l| l.starts_with(name)), "{binary} get {object}: {row}");
            let described = succeeds(&api, &binary, &["describe", kind, name, "-n", namespace], "");
            assert!(described.contains(name), "{binary} describe {object}: {described}");
        }
        let listed = succeeds(&api, &binary, &["get", "all", "-n", namespace, "-o", "name"], "");
        for kind in ["replicationcontroller/rc", "daemonset.apps/ds", "job.batch/job", "cronjob.batch/cron"] {
            assert!(listed.contains(kind), "{binary} get all: {listed}");
        }
        // The namespace last: what is in it would go with it.
        let (namespace_document, rest) = manifest.trim_start_matches("\n---\n").split_once("\n---\n").unwrap();
        let deleted = succeeds(&api, &binary, &["delete", "-f", "-", "--wait=false"], rest);
        assert_eq!(deleted.lines().count(), printed.len() - 1, "{binary}: {deleted}");
        succeeds(&api, &binary, &["delete", "-f", "-"], namespace_document);
    }
}

#[test]
fn defaults_of_the_workload_kinds() {
    let api = ApiServer::start(PODCTL, &[]);
    let manifest = MANIFEST.replace("NS", "d");
    succeeds(&api, &format!("{KUBECTL_DIR}/kubectl.1.33"), &["apply", "-f", "-"], &manifest);
    let get = |what: &[&str]| -> Value {
        serde_json::from_str(&api.kubectl(&[&["get", "-n", "d", "-o", "json"], what].concat())).unwrap()
    };
    let ds = get(&["daemonset", "ds"]);
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(ds["metadata"]["annotations"]["deprecated.daemonset.template.generation"], "1");
    let sts = get(&["statefulset", "sts"]);
    assert_eq!(
        (&sts["spec"]["podManagementPolicy"], &sts["spec"]["updateStrategy"]),
        (&json!("OrderedReady"), &json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}))
    );
    assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"], "Filesystem");
    let job = get(&["job", "job"]);
    let uid = job["metadata"]["uid"].as_str().unwrap();
    assert_eq!(job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], uid);
    assert_eq!(job["spec"]["template"]["metadata"]["labels"]["job-name"], "job");
    assert_eq!((&job["spec"]["backoffLimit"], &job["spec"]["completions"]), (&json!(6), &json!(1)));
    let cron = get(&["cronjob", "cron"]);
    assert_eq!(
        (&cron["spec"]["concurrencyPolicy"], &cron["spec"]["successfulJobsHistoryLimit"]),
        (&json!("Allow"), &json!(3))
    );
    let hpa = get(&["hpa", "hpa"]);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
    let rc = get(&["rc", "rc"]);
    assert_eq!(rc["spec"]["selector"], json!({"app": "rc"}));
    let pv: Value = serde_json::from_str(&api.kubectl(&["get", "pv", "pv-d", "-o", "json"])).unwrap();
    assert_eq!(
        (&pv["spec"]["persistentVolumeReclaimPolicy"], &pv["status"]["phase"]),
        (&json!("Retain"), &json!("Pending"))
    );
    let sc: Value = serde_json::from_str(&api.kubectl(&["get", "sc", "sc-d", "-o", "json"])).unwrap();
    assert_eq!((&sc["reclaimPolicy"], &sc["volumeBindingMode"]), (&json!("Delete"), &json!("Immediate")));

    // Validation of the new kinds, a few of each.
    for (manifest, why) in [
        (
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {template: {spec: {containers: [{name: c, image: busybox}]}}}",
            "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
        ),
        (
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec: {schedule: 'every day', jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}}",
            "spec.schedule: Invalid value: \"every day\": expected exactly 5 fields, found 2: [every day]",
        ),
        (
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: p}\nspec: {minAvailable: 1, maxUnavailable: 1}",
            "minAvailable and maxUnavailable cannot be both set",
        ),
        (
            "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: huge}\nvalue: 2000000000",
            "maximum allowed value of a user defined priority is 1000000000",
        ),
        (
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c}\nspec: {resources: {requests: {storage: 1Gi}}}",
            "spec.accessModes: Required value: at least 1 access mode is required",
        ),
    ] {
        let err = api.kubectl_stdin_fails(&["apply", "-f", "-"], manifest);
        assert!(err.contains(why), "{manifest}: {err}");
    }
}

#[test]
fn admission_applies_quotas_limit_ranges_and_classes() {
    let api = ApiServer::start(PODCTL, &[]);
    api.kubectl(&["create", "namespace", "q"]);
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: q, namespace: q}\nspec: {hard: {pods: '2', requests.cpu: '1'}}\n---\n\
         apiVersion: v1\nkind: LimitRange\nmetadata: {name: l, namespace: q}\nspec: {limits: [{type: Container, defaultRequest: {cpu: 400m}, max: {cpu: '1'}}]}\n",
    );
    let pod = |name: &str, cpu: Option<&str>| {
        let resources = cpu.map_or(json!({}), |c| json!({"requests": {"cpu": c}, "limits": {"cpu": c}}));
        json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}})
    };
    let post = |object: Value| {
        api.http(
            "POST",
            "/api/v1/namespaces/q/pods",
            &[("Content-Type", "application/json")],
            object.to_string().as_bytes(),
        )
    };
    let (status, made) = post(pod("a", None));
    assert_eq!(status, 201, "{made}");
    let container = &made["spec"]["containers"][0]["resources"];
    assert_eq!(container["requests"]["cpu"], "400m", "{made}");
    assert!(
        made["metadata"]["annotations"]["kubernetes.io/limit-ranger"]
            .as_str()
            .unwrap()
            .contains("cpu request for container c")
    );
    let (status, body) = post(pod("big", Some("2")));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("maximum cpu usage per Container is 1, but limit is 2"),
        "{body}"
    );
    let (status, body) = post(pod("b", Some("700m")));
    assert_eq!(status, 403, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(
            "exceeded quota: q, requested: requests.cpu=700m, used: requests.cpu=400m, limited: requests.cpu=1"
        ),
        "{body}"
    );
    assert_eq!(post(pod("b", Some("600m"))).0, 201);
    let (status, body) = post(pod("c", Some("0")));
    assert_eq!(status, 403);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"),
        "{body}"
    );
    let quota: Value = serde_json::from_str(&api.kubectl(&["get", "quota", "q", "-n", "q", "-o", "json"])).unwrap();
    assert_eq!(quota["status"]["used"], json!({"pods": "2", "requests.cpu": "1"}), "{quota}");
    api.kubectl(&["delete", "pod", "a", "-n", "q"]);
    let quota: Value = serde_json::from_str(&api.kubectl(&["get", "quota", "q", "-n", "q", "-o", "json"])).unwrap();
    assert_eq!(quota["status"]["used"], json!({"pods": "1", "requests.cpu": "600m"}), "{quota}");

    // Priority classes: the system ones exist and stay; a pod gets its class's number.
    let classes = api.kubectl(&["get", "priorityclasses", "-o", "name"]);
    assert!(classes.contains("system-node-critical") && classes.contains("system-cluster-critical"), "{classes}");
    let err = api.kubectl_fails(&["delete", "priorityclass", "system-node-critical"]);
    assert!(err.contains("this is a system priority class and cannot be deleted"), "{err}");
    let mut critical = pod("critical", None);
    critical["spec"]["priorityClassName"] = "system-cluster-critical".into();
    let (_, made) = api.http(
        "POST",
        "/api/v1/namespaces/default/pods",
        &[("Content-Type", "application/json")],
        critical.to_string().as_bytes(),
    );
    assert_eq!(made["spec"]["priority"], 2_000_000_000, "{made}");
    let mut unknown = pod("unknown", None);
    unknown["spec"]["priorityClassName"] = "nope".into();
    let (status, body) = api.http(
        "POST",
        "/api/v1/namespaces/default/pods",
        &[("Content-Type", "application/json")],
        unknown.to_string().as_bytes(),
    );
    assert!(
        status == 403 && body["message"].as_str().unwrap().contains("no PriorityClass with name nope was found"),
        "{body}"
    );
    let mut lost = pod("lost", None);
    lost["spec"]["serviceAccountName"] = "ghost".into();
    let (status, body) = api.http(
        "POST",
        "/api/v1/namespaces/default/pods",
        &[("Content-Type", "application/json")],
        lost.to_string().as_bytes(),
    );
    assert!(
        status == 403 && body["message"].as_str().unwrap().contains("serviceaccount \"ghost\" not found"),
        "{body}"
    );

    // A claim with no class gets the default one.
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fast, annotations: {storageclass.kubernetes.io/is-default-class: 'true'}}\nprovisioner: example.com/disk\n",
    );
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    );
    assert_eq!(api.kubectl(&["get", "pvc", "c", "-o", "jsonpath={.spec.storageClassName}"]), "fast");
    let classes = api.kubectl(&["get", "storageclass"]);
    assert!(classes.contains("fast (default)"), "{classes}");
}

/// A running, ready pod `name` bound to node n1, labelled app=web.
fn running_pod(api: &ApiServer, name: &str) {
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}}}\nspec: {{nodeName: n1, containers: [{{name: c, image: busybox}}]}}\n"),
    );
    let status = r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#;
    api.kubectl(&["patch", "pod", name, "--subresource=status", "--type=merge", "-p", status]);
}

fn evict(api: &ApiServer, name: &str, dry_run: bool) -> (u16, Value) {
    let mut eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}});
    if dry_run {
        eviction["deleteOptions"] = json!({"dryRun": ["All"]});
    }
    let path = format!("/api/v1/namespaces/default/pods/{name}/eviction");
    api.http("POST", &path, &[("Content-Type", "application/json")], eviction.to_string().as_bytes())
}

#[test]
fn evictions_honour_disruption_budgets() {
    let api = ApiServer::start(PODCTL, &[]);
    // A pending pod has not started: it goes at once, whatever its budget.
    api.kubectl_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Pod\nmetadata: {name: pending, labels: {app: web}}\nspec: {containers: [{name: c, image: busybox}]}\n");
    api.kubectl_stdin(&["apply", "-f", "-"], "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec: {minAvailable: 1, selector: {matchLabels: {app: web}}}\n");
    let (status, body) = evict(&api, "pending", false);
    assert_eq!((status, body["status"].as_str()), (201, Some("Success")), "{body}");
    assert!(api.kubectl_fails(&["get", "pod", "pending"]).contains("NotFound"));

    running_pod(&api, "web-1");
    // A budget its controller has not counted yet allows nothing.
    let (status, body) = evict(&api, "web-1", false);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["message"], "Cannot evict pod as it would violate the pod's disruption budget.");
    assert_eq!(
        body["details"]["causes"][0]["message"],
        "The disruption budget web is still being processed by the server."
    );
    let counted = |allowed: i64| {
        let status = json!({"status": {"observedGeneration": 1, "disruptionsAllowed": allowed, "currentHealthy": 1,
                                       "desiredHealthy": 1, "expectedPods": 1}});
        api.kubectl(&["patch", "pdb", "web", "--subresource=status", "--type=merge", "-p", &status.to_string()]);
    };
    counted(0);
    let (status, body) = evict(&api, "web-1", false);
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        body["details"]["causes"][0]["message"],
        "The disruption budget web needs 1 healthy pods and has 1 currently"
    );
    counted(1);
    let (status, _) = evict(&api, "web-1", true);
    assert_eq!(status, 201);
    let budget: Value = serde_json::from_str(&api.kubectl(&["get", "pdb", "web", "-o", "json"])).unwrap();
    assert_eq!(budget["status"]["disruptionsAllowed"], 1, "a dry run takes nothing");
    let (status, body) = evict(&api, "web-1", false);
    assert_eq!(status, 201, "{body}");
    let budget: Value = serde_json::from_str(&api.kubectl(&["get", "pdb", "web", "-o", "json"])).unwrap();
    assert_eq!(budget["status"]["disruptionsAllowed"], 0);
    assert!(budget["status"]["disruptedPods"].get("web-1").is_some(), "{}", budget["status"]);
    let pod: Value = serde_json::from_str(&api.kubectl(&["get", "pod", "web-1", "-o", "json"])).unwrap();
    assert!(pod["metadata"].get("deletionTimestamp").is_some(), "a bound pod is deleted gracefully: {pod}");
    let conditions = pod["status"]["conditions"].as_array().unwrap();
    assert!(conditions.iter().any(|c| c["type"] == "DisruptionTarget" && c["reason"] == "EvictionByEvictionAPI"));

    // Two budgets for one pod: the eviction subresource does not choose.
    running_pod(&api, "web-2");
    api.kubectl_stdin(&["apply", "-f", "-"], "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web-too}\nspec: {maxUnavailable: 1, selector: {matchLabels: {app: web}}}\n");
    let (status, body) = evict(&api, "web-2", false);
    assert_eq!(status, 500, "{body}");
    assert!(body["message"].as_str().unwrap().contains("more than one PodDisruptionBudget"));
}

#[test]
fn ephemeral_containers_are_only_added_through_their_subresource() {
    let api = ApiServer::start(PODCTL, &[]);
    let err = api.kubectl_stdin_fails(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: busybox}]\n  ephemeralContainers: [{name: d, image: busybox}]\n",
    );
    assert!(err.contains("spec.ephemeralContainers: Forbidden: cannot be set on create"), "{err}");
    api.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: busybox}]}\n",
    );
    api.kubectl(&["debug", "p", "--image=busybox", "--container=debugger", "--target=c"]);
    let pod: Value = serde_json::from_str(&api.kubectl(&["get", "pod", "p", "-o", "json"])).unwrap();
    let ephemeral = &pod["spec"]["ephemeralContainers"][0];
    assert_eq!((ephemeral["name"].as_str(), ephemeral["targetContainerName"].as_str()), (Some("debugger"), Some("c")));

    let path = "/api/v1/namespaces/default/pods/p/ephemeralcontainers";
    let merge = [("Content-Type", "application/strategic-merge-patch+json")];
    let changed = json!({"spec": {"ephemeralContainers": [{"name": "debugger", "image": "other"}]}});
    let (status, body) = api.http("PATCH", path, &merge, changed.to_string().as_bytes());
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("existing ephemeral containers \"debugger\" may not be changed"),
        "{body}"
    );
    let wrong = json!({"spec": {"ephemeralContainers": [{"name": "x", "image": "busybox", "ports": [{"containerPort": 80}], "targetContainerName": "nope"}]}});
    let (status, body) = api.http("PATCH", path, &merge, wrong.to_string().as_bytes());
    assert_eq!(status, 422, "{body}");
    let message = body["message"].as_str().unwrap();
    // (Strategic merge patch puts the new item first.)
    assert!(
        message.contains("spec.ephemeralContainers[0].ports: Forbidden: cannot be set for an Ephemeral Container"),
        "{message}"
    );
    assert!(message.contains("spec.ephemeralContainers[0].targetContainerName: Not found: \"nope\""), "{message}");
    // Through the pod itself they may not change at all.
    let err = api.kubectl_fails(&[
        "patch",
        "pod",
        "p",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/ephemeralContainers"}]"#,
    ]);
    assert!(err.contains("pod updates may not change fields"), "{err}");
}

#[test]
fn events_k8s_io_events_are_core_events_seen_through_the_newer_type() {
    let api = ApiServer::start(PODCTL, &[]);
    let event = "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: pulled}\neventTime: \"2026-01-01T00:00:00.000000Z\"\nreportingController: example.com/puller\nreportingInstance: node-1\naction: Pull\nreason: Pulled\ntype: Normal\nnote: image pulled\nregarding: {kind: Pod, name: web, namespace: default}\n";
    api.kubectl_stdin(&["apply", "-f", "-"], event);
    let core: Value = serde_json::from_str(&api.kubectl(&["get", "events.v1.", "pulled", "-o", "json"])).unwrap();
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(
        (core["message"].as_str(), core["involvedObject"]["name"].as_str()),
        (Some("image pulled"), Some("web"))
    );
    assert_eq!(core["reportingComponent"], "example.com/puller");
    let newer: Value =
        serde_json::from_str(&api.kubectl(&["get", "events.v1.events.k8s.io", "pulled", "-o", "json"])).unwrap();
    assert_eq!((newer["note"].as_str(), newer["regarding"]["kind"].as_str()), (Some("image pulled"), Some("Pod")));
    let listed = api.kubectl(&["get", "events"]);
    assert!(listed.contains("Pulled") && listed.contains("pod/web") && listed.contains("image pulled"), "{listed}");
    let table = api.kubectl(&["get", "events.events.k8s.io"]);
    assert!(table.contains("pod/web"), "{table}");

    // Their series may grow; what they say may not change.
    api.kubectl(&[
        "patch",
        "events.v1.events.k8s.io",
        "pulled",
        "--type=merge",
        "-p",
        r#"{"series":{"count":2,"lastObservedTime":"2026-01-01T00:01:00.000000Z"}}"#,
    ]);
    let err =
        api.kubectl_fails(&["patch", "events.v1.events.k8s.io", "pulled", "--type=merge", "-p", r#"{"note":"other"}"#]);
    assert!(err.contains("message: Invalid value: \"other\": field is immutable"), "{err}");
    // Created through this group, an event says who reported what, when.
    let err = api.kubectl_stdin_fails(
        &["apply", "-f", "-"],
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: bare}\ntype: Odd\ndeprecatedCount: 2\n",
    );
    for cause in [
        "eventTime: Required value",
        "reportingController: Required value",
        "action: Required value",
        "type: Invalid value: \"\": has invalid value: Odd",
        "count: Invalid value: \"\": needs to be unset",
    ] {
        assert!(err.contains(cause), "{cause}: {err}");
    }
}
