//! `fake-flow`: the process a campaign's flow-run pods run (through the
//! emulator's process runtime). Reads `PREFECT_API_URL` and
//! `PREFECT__FLOW_RUN_ID` as `prefect flow-run execute` does; see
//! `chaos::fake_flow` for the protocol.
#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::Context;
use chaos::fake_flow::{self, Behaviour};
use clap::Parser;
use prefect_client::{ClientConfig, PrefectClient};

#[derive(Debug, Parser)]
#[command(
    name = "fake-flow",
    about = "A cheap Prefect flow run for fault campaigns"
)]
struct Cli {
    /// What the flow does once Running is accepted.
    #[arg(long, value_enum, default_value = "complete")]
    behaviour: Behaviour,
    /// The flow's work, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    sleep_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(run(cli))?;
    std::process::exit(code);
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let run_id = fake_flow::run_id_from_env()?;
    let client = PrefectClient::new(ClientConfig::from_env()?.with_worker_name("fake-flow"))
        .context("configuring the Prefect client")?;
    let work = Duration::from_millis(cli.sleep_ms);
    let exit = fake_flow::execute(&client, run_id, cli.behaviour, work)
        .await
        .with_context(|| format!("flow run {run_id}"))?;
    println!("fake-flow: {run_id} ends {exit:?}");
    Ok(exit.code())
}
