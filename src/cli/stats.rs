//! `podctl stats`: what each pod uses, as `docker stats` shows it — CPU (of one core, per
//! cent), memory against its limit (the node's memory when it has none), network bytes
//! received and sent, processes — from the pod's cgroup and its network namespace.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use runtime::{Pod, Runtime, Usage};

use super::NodeOptions;
use super::pods::{display_name, find_pod};

/// How long apart the two looks of a one-shot are (CPU is a rate), and the refresh period.
const SAMPLE: Duration = Duration::from_millis(500);
const REFRESH: Duration = Duration::from_secs(1);

#[derive(Args)]
pub struct StatsArgs {
    /// Print one table and exit (otherwise it is printed again every second)
    #[arg(long)]
    no_stream: bool,
    /// Pods, by name or the start of their ID (default: every running pod)
    pods: Vec<String>,
}

/// One look at a pod.
struct Sample {
    at: Instant,
    usage: Usage,
    /// Bytes received and sent on the pod's interfaces (loopback aside).
    network: Option<(u64, u64)>,
}

pub fn stats(args: StatsArgs, opts: &NodeOptions) -> Result<ExitCode> {
    let runtime = opts.runtime()?;
    let memory_total = crate::kubelet::registration::meminfo_kib("MemTotal:").unwrap_or(0) * 1024;
    let clear = !args.no_stream && std::io::stdout().is_terminal();
    let mut previous: HashMap<String, Sample> = HashMap::new();
    let mut first = true;
    loop {
        let pods = chosen(&runtime, &args.pods)?;
        if first {
            // CPU use is a rate: a first look to measure from.
            for pod in &pods {
                previous.insert(pod.uid().to_string(), sample(&runtime, pod));
            }
            std::thread::sleep(SAMPLE);
            first = false;
        }
        let mut rows = vec![[
            "POD ID".to_string(),
            "NAME".into(),
            "CPU %".into(),
            "MEM USAGE / LIMIT".into(),
            "MEM %".into(),
            "NET I/O".into(),
            "PIDS".into(),
        ]];
        for pod in &pods {
            let now = sample(&runtime, pod);
            let cpu = previous.get(pod.uid()).and_then(|before| {
                let used = now.usage.cpu_ns?.checked_sub(before.usage.cpu_ns?)?;
                let elapsed = now.at.duration_since(before.at).as_nanos().max(1) as f64;
                Some(used as f64 / elapsed * 100.0)
            });
            let limit = now.usage.memory_limit.unwrap_or(memory_total);
            let memory = now.usage.memory_bytes;
            rows.push([
                pod.uid()[..12.min(pod.uid().len())].to_string(),
                display_name(pod),
                cpu.map_or("--".into(), |c| format!("{c:.2}%")),
                format!("{} / {}", memory.map_or("--".into(), binary), binary(limit)),
                memory
                    .filter(|_| limit > 0)
                    .map_or("--".into(), |m| format!("{:.2}%", m as f64 / limit as f64 * 100.0)),
                now.network.map_or("--".into(), |(rx, tx)| format!("{} / {}", decimal(rx), decimal(tx))),
                now.usage.pids.map_or("--".into(), |p| p.to_string()),
            ]);
            previous.insert(pod.uid().to_string(), now);
        }
        if clear {
            print!("\x1b[2J\x1b[H");
        }
        super::print_table(&rows);
        std::io::stdout().flush()?;
        if args.no_stream {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(REFRESH);
    }
}

/// The pods named, else every running one.
fn chosen(runtime: &Runtime, names: &[String]) -> Result<Vec<Pod>> {
    if names.is_empty() {
        return Ok(runtime.pods()?.into_iter().filter(Pod::is_running).collect());
    }
    names.iter().map(|name| find_pod(runtime, name)).collect()
}

fn sample(runtime: &Runtime, pod: &Pod) -> Sample {
    let mut usage = runtime.cgroups.complete(&pod.record.cgroup).usage();
    // Limits are set on the containers' cgroups: the pod's is their sum, when each has one.
    if usage.memory_limit.is_none() {
        let running = pod.running_containers();
        let limits: Option<Vec<u64>> = pod
            .containers()
            .iter()
            .filter(|c| running.contains(&c.name))
            .map(|c| c.resources.memory_limit_bytes)
            .collect();
        usage.memory_limit = limits.filter(|l| !l.is_empty()).map(|l| l.iter().sum());
    }
    let network = pod.init.filter(|init| init.is_alive()).and_then(|init| interface_bytes(init.pid));
    Sample { at: Instant::now(), usage, network }
}

/// Bytes received and sent on every interface but loopback of the network namespace the
/// process is in (`/proc/PID/net/dev`).
fn interface_bytes(pid: i32) -> Option<(u64, u64)> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    Some(parse_net_dev(&table))
}

fn parse_net_dev(table: &str) -> (u64, u64) {
    table
        .lines()
        .skip(2)
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.trim() != "lo")
        .map(|(_, counters)| {
            let fields: Vec<u64> = counters.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            (fields.first().copied().unwrap_or(0), fields.get(8).copied().unwrap_or(0))
        })
        .fold((0, 0), |(rx, tx), (r, t)| (rx + r, tx + t))
}

/// `1.5MiB`, as docker shows memory.
fn binary(bytes: u64) -> String {
    scaled(bytes, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB"])
}

/// `1.2kB`, as docker shows network traffic.
fn decimal(bytes: u64) -> String {
    scaled(bytes, 1000.0, &["B", "kB", "MB", "GB", "TB"])
}

fn scaled(bytes: u64, base: f64, units: &[&str]) -> String {
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= base && unit + 1 < units.len() {
        value /= base;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}{}", units[0])
    } else {
        format!("{value:.3}").trim_end_matches('0').trim_end_matches('.').to_string() + units[unit]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_interfaces_read_as_docker_shows_them() {
        assert_eq!(binary(512), "512B");
        assert_eq!(binary(1536 * 1024), "1.5MiB");
        assert_eq!(decimal(1234), "1.234kB");
        assert_eq!(decimal(2_000_000), "2MB");
        let table = "Inter-|   Receive                                                |  Transmit\n \
                     face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                     lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
                     eth0:    5000      10    0    0    0     0          0         0      700       7    0    0    0     0       0          0\n";
        assert_eq!(parse_net_dev(table), (5000, 700));
    }
}
