//! podctl: a Kubernetes node built from Linux primitives. See README.md and DESIGN.md.

mod apiserver;
mod cli;
mod client;
mod controllers;
mod cron;
mod dns;
mod events;
mod files;
mod http_client;
mod kubelet;
mod labels;
mod pki;
mod quantity;
mod serve;
mod shutdown;
mod validation;

use std::process::ExitCode;

use clap::Parser;

/// The exit code of podctl's own failures.
const FAILED: u8 = 125;

fn main() -> ExitCode {
    // The pod init helper (see runtime::init): exec'd as `podctl __pod-init STATE_DIR`,
    // dispatched before anything else so that it stays small.
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new("__pod-init")) {
        let state_dir = args.next().map(std::path::PathBuf::from).unwrap_or_default();
        runtime::init::main(&state_dir);
    }
    // A command line tool: `podctl image ls | head` ends quietly when head has had enough.
    // (Not before the pod init dispatch above: the pod init keeps SIGPIPE ignored.)
    // SAFETY: restoring a default signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // glibc's allocator, tuned for a server (mallopt(3)). Threads that contend for the heap
    // get arenas of their own, up to 8 per core, and each keeps what was freed in it: with
    // tokio's workers and blocking threads that held megabytes of the API server's resident
    // memory (M_ARENA_MAX: one per core instead). And a block of 128 KiB or more was mapped
    // afresh each time, and the free top of a heap given back at once: a large list, sent in
    // chunks, spent a fifth of its time faulting in zeroed pages (M_MMAP_THRESHOLD,
    // M_TRIM_THRESHOLD; the memory a large list used is given back when it ends, see
    // apiserver::rest).
    // SAFETY: set before any thread exists.
    #[cfg(target_env = "gnu")]
    unsafe {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        libc::mallopt(libc::M_ARENA_MAX, cores.clamp(2, i32::MAX as usize) as i32);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 << 20);
    }
    let mut args = std::env::args_os().skip(1);
    if let Some(helper) = args.next().and_then(|a| a.into_string().ok()).filter(|a| cli::HELPERS.contains(&a.as_str()))
    {
        return match cli::helper(&helper, args) {
            Ok(code) => code,
            Err(_) => ExitCode::from(FAILED),
        };
    }
    // podctl's own failures exit 125, as docker's and podman's do: 1 (and 126, 127) stay
    // what a container's command exited with.
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(FAILED);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PODCTL_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match cli.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("podctl: {e:#}");
            ExitCode::from(FAILED)
        }
    }
}
