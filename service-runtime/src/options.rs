//! Options more than one service has, declared once and flattened into each
//! service's config: the same flag, variable and default everywhere.

/// Which work pool a service serves and the worker name it shows Prefect.
#[derive(Debug, Clone, clap::Args)]
pub struct PoolOptions {
    /// The Prefect work pool this service serves (the poller creates it, type
    /// `kubernetes`, if missing).
    #[arg(
        long = "work-pool",
        short = 'p',
        env = "PREFECT_K8S_WORK_POOL",
        default_value = "kubernetes"
    )]
    pub work_pool: String,
    /// The worker name Prefect shows: in the Prefect client's headers, and
    /// (the dispatcher's) on flow runs and in the Jobs' labels.
    #[arg(
        long = "name",
        env = "PREFECT_K8S_WORKER_NAME",
        default_value = "prefect-k8s"
    )]
    pub worker_name: String,
}

/// How the services that create the JetStream streams create them.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct StreamOptions {
    /// Servers each JetStream stream is stored on when this service creates
    /// it: 1 for a single NATS server, 3 for a three-node cluster.
    #[arg(long = "stream-replicas", env = "NATS_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,
}

impl StreamOptions {
    /// The replicas as `ensure_streams` takes them.
    pub fn replicas(&self) -> usize {
        self.stream_replicas.into()
    }
}

/// Splits `KEY=VALUE` pairs (at the first `=`; the key may not be empty),
/// naming the flag in the error: the dispatcher's `--env` and `--job-label`,
/// `prefect-k8s install --env`.
pub fn parse_pairs(flag: &str, pairs: &[String]) -> Result<Vec<(String, String)>, String> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("{flag} expects KEY=VALUE, got {pair:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_split_on_the_first_equals_sign() {
        let pairs = parse_pairs("--env", &["A=1".into(), "B=x=y".into(), "C=".into()]).unwrap();
        assert_eq!(
            pairs,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x=y".into()),
                ("C".into(), String::new())
            ]
        );
    }

    #[test]
    fn a_pair_without_key_is_an_error_naming_the_flag() {
        let error = parse_pairs("--env", &["=1".into()]).unwrap_err();
        assert_eq!(error, "--env expects KEY=VALUE, got \"=1\"");
        assert!(parse_pairs("--job-label", &["novalue".into()]).is_err());
    }
}
