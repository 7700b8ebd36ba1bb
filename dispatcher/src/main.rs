//! `dispatcher`: claims due flow runs from NATS JetStream and creates their
//! Kubernetes Jobs. Thin binary over the `dispatcher` library (`dispatcher::cli`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_runtime::serve::serve(dispatcher::cli::SERVICE, dispatcher::cli::serve).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        dispatcher::cli::cli_command().debug_assert();
    }
}
