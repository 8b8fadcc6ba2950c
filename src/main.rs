//! podctl: a Kubernetes node built from Linux primitives. See README.md and DESIGN.md.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PODCTL_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match cli.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("podctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
