//! `prefect-k8s`: the operator CLI of the Prefect Kubernetes agent.
//!
//! - `prefect-k8s up`: runs the whole stack locally (nats-server, the Prefect
//!   server and its UI, the Kubernetes API emulator, the poller, two
//!   dispatchers and the reporter), deploys a demo flow, runs it and follows
//!   it to its end under a live status line; a part that dies is reported at
//!   once with the end of its log.

mod children;
mod install;
mod status;
mod up;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "prefect-k8s",
    version,
    about = "Run Prefect flows as Kubernetes Jobs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole stack locally with a demo flow.
    Up(up::UpArgs),
    /// Print the Kubernetes manifests of the agent (for `| kubectl apply -f -`).
    Install(install::InstallArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_runtime::telemetry::init();
    match Cli::parse().command {
        // `up` has reported its failure and stopped its children already.
        Command::Up(args) => match up::run(args).await {
            Ok(()) => Ok(()),
            Err(_) => std::process::exit(1),
        },
        Command::Install(args) => install::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
