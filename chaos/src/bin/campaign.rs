//! `campaign`: the fault campaign of issue 9. Runs the real poller,
//! dispatchers and reporters as processes against nats-server, the Prefect
//! server and the Kubernetes API emulator, injects seeded faults, checks the
//! invariants and prints the report. Exit code 0: no violation; 1:
//! violations; 2: the campaign itself failed.
#![forbid(unsafe_code)]

use chaos::config::CampaignConfig;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "campaign",
    about = "Fault campaign against the prefect-k8s services"
)]
struct Cli {
    #[command(flatten)]
    config: CampaignConfig,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => fail(anyhow::anyhow!(error).context("starting the runtime")),
    };
    let code = runtime.block_on(campaign(cli.config));
    drop(runtime);
    std::process::exit(code);
}

async fn campaign(config: CampaignConfig) -> i32 {
    tokio::select! {
        outcome = chaos::campaign::run(config) => match outcome {
            Ok((summary, report)) => {
                println!("{report}");
                summary.exit_code()
            }
            Err(error) => {
                eprintln!("campaign failed: {:#}", anyhow::anyhow!(error));
                2
            }
        },
        _ = interrupted() => {
            eprintln!("campaign interrupted; stopping everything");
            2
        }
    }
}

/// SIGINT or SIGTERM. Dropping the campaign then stops every process it started.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn fail(error: anyhow::Error) -> ! {
    eprintln!("campaign failed: {error:#}");
    std::process::exit(2);
}
