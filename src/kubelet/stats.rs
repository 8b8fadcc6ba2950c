//! The node's resource use, as kubelet's summary API gives it (`/stats/summary`, the
//! statsapi Summary): CPU and memory of the node, each pod and each container, sampled
//! every 10 s from the cgroups (and /proc for the node), CPU as a rate between the last
//! two samples. metrics.k8s.io (`kubectl top`) and the HPA read it through the API server.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How often use is sampled (cAdvisor's housekeeping interval).
pub const INTERVAL: Duration = Duration::from_secs(10);

/// CPU time seen at a moment: what a rate is taken from.
#[derive(Clone, Copy)]
struct CpuSample {
    at: Instant,
    nanoseconds: u64,
}

/// CPU and memory of one thing, as the statsapi reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Use {
    pub usage_nano_cores: Option<u64>,
    pub usage_core_nano_seconds: Option<u64>,
    pub working_set_bytes: Option<u64>,
}

impl Use {
    fn cpu(&self, time: &str) -> Value {
        json!({"time": time, "usageNanoCores": self.usage_nano_cores, "usageCoreNanoSeconds": self.usage_core_nano_seconds})
    }

    fn memory(&self, time: &str) -> Value {
        json!({"time": time, "workingSetBytes": self.working_set_bytes, "usageBytes": self.working_set_bytes})
    }
}

/// The last summary, and the CPU samples the next one's rates come from.
#[derive(Default)]
pub struct Stats {
    summary: Mutex<Value>,
    previous: Mutex<HashMap<String, CpuSample>>,
}

impl Stats {
    /// The last summary (`{}` before the first sample).
    pub fn summary(&self) -> Value {
        self.summary.lock().expect("summary").clone()
    }

    /// The use of `key` now, given its CPU time and working set: the rate is over the time
    /// since its last sample.
    fn measure(
        &self,
        previous: &mut HashMap<String, CpuSample>,
        key: String,
        cpu_ns: Option<u64>,
        memory: Option<u64>,
    ) -> Use {
        let now = Instant::now();
        let rate = cpu_ns.and_then(|ns| {
            let before = previous.insert(key, CpuSample { at: now, nanoseconds: ns })?;
            let elapsed = now.duration_since(before.at).as_nanos().max(1);
            Some((ns.saturating_sub(before.nanoseconds) as u128 * 1_000_000_000 / elapsed) as u64)
        });
        Use { usage_nano_cores: rate, usage_core_nano_seconds: cpu_ns, working_set_bytes: memory }
    }

    /// Takes a sample of the node and its running pods.
    pub fn sample(&self, node_name: &str, runtime: &runtime::Runtime) {
        let time = crate::client::now();
        let mut previous = self.previous.lock().expect("samples");
        let mut seen = HashMap::new();
        let node = self.measure(&mut previous, "node".into(), node_cpu_ns(), node_working_set());
        let mut pods = Vec::new();
        for pod in runtime.pods().unwrap_or_default().into_iter().filter(|p| p.is_running()) {
            let uid = pod.uid().to_string();
            let cgroup = runtime.cgroups.complete(&pod.record.cgroup);
            let usage = cgroup.usage();
            let pod_use = self.measure(&mut previous, uid.clone(), usage.cpu_ns, usage.memory_bytes);
            let containers: Vec<Value> = pod
                .running_containers()
                .into_iter()
                .map(|name| {
                    let usage = cgroup.child(&name).usage();
                    let used = self.measure(&mut previous, format!("{uid}/{name}"), usage.cpu_ns, usage.memory_bytes);
                    seen.insert(format!("{uid}/{name}"), ());
                    json!({"name": name, "startTime": pod.record.created_at, "cpu": used.cpu(&time), "memory": used.memory(&time)})
                })
                .collect();
            seen.insert(uid.clone(), ());
            let spec = &pod.record.spec;
            pods.push(json!({
                "podRef": {"name": spec.name, "namespace": spec.namespace, "uid": uid},
                "startTime": pod.record.created_at,
                "containers": containers,
                "cpu": pod_use.cpu(&time),
                "memory": pod_use.memory(&time),
            }));
        }
        previous.retain(|key, _| key == "node" || seen.contains_key(key));
        *self.summary.lock().expect("summary") = json!({
            "node": {"nodeName": node_name, "cpu": node.cpu(&time), "memory": node.memory(&time)},
            "pods": pods,
        });
    }
}

/// The node's CPU time, from /proc/stat's first line (all but idle and iowait).
fn node_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| fields.get(*i)).sum();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(busy * (1_000_000_000 / ticks))
}

/// The node's working set: what is in use and cannot be reclaimed (MemTotal less
/// MemAvailable).
fn node_working_set() -> Option<u64> {
    let total = super::registration::meminfo_kib("MemTotal:")?;
    let available = super::registration::meminfo_kib("MemAvailable:")?;
    Some(total.saturating_sub(available) * 1024)
}

/// Samples every INTERVAL until the process ends.
pub async fn run(stats: std::sync::Arc<Stats>, node_name: String, runtime: runtime::Runtime) {
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tick.tick().await;
        let (stats, node_name, runtime) = (stats.clone(), node_name.clone(), runtime.clone());
        let _ = tokio::task::spawn_blocking(move || stats.sample(&node_name, &runtime)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_a_rate_between_samples() {
        let stats = Stats::default();
        let mut previous = HashMap::new();
        let first = stats.measure(&mut previous, "c".into(), Some(1_000_000_000), Some(5));
        assert_eq!((first.usage_nano_cores, first.usage_core_nano_seconds), (None, Some(1_000_000_000)));
        previous.get_mut("c").unwrap().at -= Duration::from_secs(2);
        let second = stats.measure(&mut previous, "c".into(), Some(2_000_000_000), Some(7));
        // One second of CPU over two: half a core, give or take the test's own time.
        let rate = second.usage_nano_cores.unwrap();
        assert!((490_000_000..=500_000_000).contains(&rate), "{rate}");
        assert_eq!(second.working_set_bytes, Some(7));
        assert!(node_cpu_ns().is_some() && node_working_set().is_some());
    }
}
