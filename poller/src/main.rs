//! `poller`: publishes the flow runs due in a Prefect work pool to NATS
//! JetStream. Thin binary over the `poller` library (`poller::cli`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_runtime::serve::serve(poller::cli::SERVICE, poller::cli::serve).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        poller::cli::cli_command().debug_assert();
    }
}
