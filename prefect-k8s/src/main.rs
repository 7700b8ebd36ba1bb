//! `prefect-k8s`: the operator CLI of the Prefect Kubernetes agent.
//!
//! - `prefect-k8s up`: runs the whole stack locally (nats-server, the Prefect
//!   server and its UI, the Kubernetes API emulator, the poller, two
//!   dispatchers and the reporter), deploys a demo flow, runs it and follows
//!   it to its end under a live status line; a part that dies is reported at
//!   once with the end of its log.
//! - `prefect-k8s install`: prints the agent's Kubernetes manifests.
//! - `prefect-k8s nats-auth`: prints the nats-server `authorization` block
//!   (the services' users and permissions) for a work pool.

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
    /// Print the nats-server `authorization` block of the agent's users (the
    /// bundled NATS's `auth.conf`; for a NATS of your own, or a kustomize
    /// overlay serving another work pool).
    NatsAuth(NatsAuthArgs),
}

#[derive(Debug, clap::Args)]
struct NatsAuthArgs {
    /// The Prefect work pool the poller and the dispatchers serve.
    #[arg(long = "work-pool", short = 'p', default_value = "kubernetes")]
    work_pool: String,
    /// Write the block to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<std::path::PathBuf>,
}

/// `prefect-k8s nats-auth`: the block on stdout or in `--output`.
fn nats_auth(args: NatsAuthArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let users = service_runtime::nats_auth::agent_users(&args.work_pool);
    let block = service_runtime::nats_auth::authorization(&users);
    match args.output {
        Some(path) => {
            std::fs::write(&path, block).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            print!("{block}");
            Ok(())
        }
    }
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
        Command::NatsAuth(args) => nats_auth(args),
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
