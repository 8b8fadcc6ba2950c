//! The node agent's metrics, in Prometheus' text format on `/metrics`, under kubelet's
//! names where kubelet has one: pod start latency, running pods and containers, probe
//! results, and the pod syncs that failed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// kubelet's buckets for kubelet_pod_start_duration_seconds.
const START_BUCKETS: [f64; 19] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0];

#[derive(Default)]
pub struct Metrics {
    /// Count per bucket (the last one is +Inf), and the sum of the observations.
    start: Mutex<([u64; START_BUCKETS.len() + 1], f64)>,
    sync_errors: AtomicU64,
    /// By (probe type, result).
    probes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Metrics {
    /// A pod went from its creation to all its containers running in `took`.
    pub fn pod_started(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let mut start = self.start.lock().expect("metrics");
        let bucket = START_BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(START_BUCKETS.len());
        start.0[bucket] += 1;
        start.1 += seconds;
    }

    pub fn sync_failed(&self) {
        self.sync_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn probed(&self, kind: &'static str, success: bool) {
        let result = if success { "successful" } else { "failed" };
        *self.probes.lock().expect("metrics").entry((kind, result)).or_default() += 1;
    }

    /// The text exposition of every metric, with the node's running pods and containers.
    pub fn render(&self, running_pods: usize, running_containers: usize) -> String {
        let mut out = String::new();
        let (buckets, sum) = *self.start.lock().expect("metrics");
        out += "# HELP kubelet_pod_start_duration_seconds Duration in seconds from a pod's creation to all its containers running.\n";
        out += "# TYPE kubelet_pod_start_duration_seconds histogram\n";
        let mut cumulative = 0;
        for (i, count) in buckets.iter().enumerate() {
            cumulative += count;
            let bound = START_BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "kubelet_pod_start_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "kubelet_pod_start_duration_seconds_sum {sum}");
        let _ = writeln!(out, "kubelet_pod_start_duration_seconds_count {cumulative}");
        out += "# HELP kubelet_running_pods Number of pods that have a running pod sandbox.\n# TYPE kubelet_running_pods gauge\n";
        let _ = writeln!(out, "kubelet_running_pods {running_pods}");
        out += "# HELP kubelet_running_containers Number of containers currently running.\n# TYPE kubelet_running_containers gauge\n";
        let _ = writeln!(out, "kubelet_running_containers{{container_state=\"running\"}} {running_containers}");
        out += "# HELP podctl_pod_sync_errors_total Pod syncs that failed (and were tried again).\n# TYPE podctl_pod_sync_errors_total counter\n";
        let _ = writeln!(out, "podctl_pod_sync_errors_total {}", self.sync_errors.load(Ordering::Relaxed));
        out += "# HELP prober_probe_total Cumulative number of a liveness, readiness or startup probe for a container by result.\n# TYPE prober_probe_total counter\n";
        for ((kind, result), count) in self.probes.lock().expect("metrics").iter() {
            let _ = writeln!(out, "prober_probe_total{{probe_type=\"{kind}\",result=\"{result}\"}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_cumulatively() {
        let metrics = Metrics::default();
        metrics.pod_started(Duration::from_millis(80));
        metrics.pod_started(Duration::from_millis(700));
        metrics.probed("Readiness", true);
        let text = metrics.render(2, 3);
        assert!(text.contains("kubelet_pod_start_duration_seconds_bucket{le=\"0.1\"} 1\n"), "{text}");
        assert!(text.contains("kubelet_pod_start_duration_seconds_bucket{le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("kubelet_pod_start_duration_seconds_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("kubelet_running_pods 2\n") && text.contains("container_state=\"running\"} 3\n"));
        assert!(text.contains("prober_probe_total{probe_type=\"Readiness\",result=\"successful\"} 1\n"));
    }
}
