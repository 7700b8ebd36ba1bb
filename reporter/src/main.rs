//! `reporter`: reports to Prefect what flow runs cannot report themselves (pending
//! pods, crashes, deleted Jobs), carries out cancellations and cleans up finished
//! Jobs. Thin binary over the `reporter` library (`reporter::cli`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_runtime::serve::serve(reporter::cli::SERVICE, reporter::cli::serve).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        reporter::cli::cli_command().debug_assert();
    }
}
