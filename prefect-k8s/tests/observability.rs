//! Issue 11, black-box on the agent as deployed (binaries, RBAC emulator, real
//! Prefect server and nats-server):
//!
//! - every series `docs/metrics.md` documents is served by the services, and
//!   every `prefect_k8s_*` series they serve is documented;
//! - a real Prometheus (Debian's `prometheus`) scrapes them while flow runs go
//!   through, and its query API returns the submissions, the due-to-Job
//!   latency histogram, the consumer's backlog and the reporter's leadership
//!   with the values the runs imply, and every query of the Grafana
//!   dashboard (`deploy/grafana-dashboard.json`) is valid and has data;
//! - health means something: a poller whose loop is stuck goes not-live, and
//!   a dispatcher whose NATS is gone goes not-ready, then ready again.

mod agent_stack;
mod manifest_tools;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use agent_stack::{eventually, Stack};
use serde_json::{json, Value};
use test_stack::http_proxy::{Fault, FaultKind, FaultProxy};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

async fn scrape(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .unwrap()
}

/// The series names in docs/metrics.md's table.
fn documented() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .expect("docs/metrics.md");
    let series = doc
        .split("## Series")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Series section");
    series
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_string)
        .collect()
}

/// The series a scrape serves, by the name a query uses (counters with `_total`).
fn served(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let (name, kind) = rest.split_once(' ')?;
            Some(if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            })
        })
        .collect()
}

async fn agent_with_a_submitted_run() -> Stack {
    let mut stack = Stack::start().await;
    stack.spawn_agent(&[]);
    stack.wait_for_pool().await;
    let pool = stack.pool.clone();
    let deployment = stack.deployment_in(&pool, json!({})).await;
    for _ in 0..3 {
        let run = stack.run_of(&deployment).await;
        eventually("the run gets its Job", || async {
            stack.jobs_of(run.id).await.pop()
        })
        .await;
    }
    stack
}

fn metrics_port(stack: &Stack, service: &str) -> u16 {
    stack.ports[service].1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_series_is_served_and_every_served_one_documented() {
    let stack = agent_with_a_submitted_run().await;
    let mut all = BTreeSet::new();
    for service in ["poller", "dispatcher", "reporter"] {
        let port = metrics_port(&stack, service);
        let text = eventually(&format!("the {service}'s metrics"), || async {
            let text = scrape(port).await;
            text.contains("prefect_k8s_build_info").then_some(text)
        })
        .await;
        all.extend(served(&text));
    }
    let documented = documented();
    assert!(documented.len() > 20, "the table was read: {documented:?}");
    let missing: Vec<_> = documented.difference(&all).collect();
    assert!(missing.is_empty(), "documented but not served: {missing:?}");
    let undocumented: Vec<_> = all
        .iter()
        .filter(|name| name.starts_with("prefect_k8s_") || name.starts_with("process_"))
        .filter(|name| !documented.contains(*name))
        .collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
}

/// A Prometheus server of the test's own, scraping `targets` every second.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[u16]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "prefect-k8s", "static_configs": [{"targets": targets}]}]
        });
        // JSON is YAML.
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, config.to_string()).unwrap();
        let port = test_stack::ports::free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start prometheus (Debian package `prometheus`, installed by scripts/install-deps.sh)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// The answer to an instant query: `Err` with Prometheus's error when
    /// it refuses the query, `Ok(None)` when it cannot be asked yet.
    async fn answer(&self, query: &str) -> Result<Option<Vec<Value>>, String> {
        let mut url = reqwest::Url::parse(&format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .expect("URL");
        url.query_pairs_mut().append_pair("query", query);
        let Ok(response) = reqwest::get(url).await else {
            return Ok(None);
        };
        let Ok(answer) = response.json::<Value>().await else {
            return Ok(None);
        };
        if answer["status"] != "success" {
            return Err(answer["error"].to_string());
        }
        Ok(answer["data"]["result"].as_array().cloned())
    }

    /// The value of an instant query's first sample, once it has one.
    async fn query(&self, query: &str) -> Option<f64> {
        let result = self.answer(query).await.ok()??;
        result.first()?["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_sees_submissions_latency_backlog_and_leadership() {
    let stack = agent_with_a_submitted_run().await;
    let targets: Vec<u16> = ["poller", "dispatcher", "reporter"]
        .iter()
        .map(|service| metrics_port(&stack, service))
        .collect();
    let prometheus = Prometheus::start(&targets);
    let expect = |query: &'static str, check: fn(f64) -> bool| {
        let prometheus = &prometheus;
        async move {
            eventually(&format!("Prometheus answers {query}"), || async {
                prometheus.query(query).await.filter(|value| check(*value))
            })
            .await
        }
    };
    let submitted = expect(
        "sum(prefect_k8s_dispatcher_submissions_total{outcome=\"submitted\"})",
        |v| v >= 3.0,
    )
    .await;
    assert!(submitted >= 3.0);
    let jobs_timed = expect(
        "sum(prefect_k8s_dispatcher_due_to_job_seconds_count)",
        |v| v >= 3.0,
    )
    .await;
    assert!(jobs_timed >= 3.0, "one due-to-Job observation per Job");
    let p99 = expect(
        "histogram_quantile(0.99, sum by (le) (prefect_k8s_dispatcher_due_to_job_seconds_bucket))",
        |v| v.is_finite(),
    )
    .await;
    assert!(p99 < 120.0, "the runs were due now: {p99} s");
    let pending = expect("max(prefect_k8s_dispatcher_consumer_pending)", |v| v >= 0.0).await;
    assert_eq!(pending, 0.0, "every message was taken");
    let leaders = expect("sum(prefect_k8s_reporter_leader)", |v| v == 1.0).await;
    assert_eq!(leaders, 1.0, "one reporter leads");
    let polls = expect("sum(prefect_k8s_poller_polls_total{outcome=\"ok\"})", |v| {
        v > 0.0
    })
    .await;
    assert!(polls > 0.0);

    // Every query of the Grafana dashboard is valid PromQL and has data.
    for expr in dashboard_queries() {
        let query = expr.replace("$__rate_interval", "1m");
        let series = eventually(&format!("dashboard query {query} has data"), || async {
            match prometheus.answer(&query).await {
                Err(error) => panic!("Prometheus refuses the dashboard's {query}: {error}"),
                Ok(result) => result.filter(|series| !series.is_empty()),
            }
        })
        .await;
        assert!(!series.is_empty());
    }
}

/// The PromQL of every panel of deploy/grafana-dashboard.json.
fn dashboard_queries() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).unwrap();
    let queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().expect("a PromQL target").to_owned())
        .collect();
    let documented = documented();
    for query in &queries {
        let names = query
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("prefect_k8s_") || word.starts_with("process_"));
        for name in names {
            let series = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            assert!(
                documented.contains(series),
                "the dashboard queries {name}, not in docs/metrics.md"
            );
        }
    }
    assert!(queries.len() >= 20, "a panel per documented series");
    queries
}

async fn status(port: u16, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    let answer = client.check(request).await.ok()?.into_inner();
    ServingStatus::try_from(answer.status).ok()
}

async fn wait_for_status(port: u16, service: &str, wanted: ServingStatus) {
    eventually(&format!("{service:?} becomes {wanted:?}"), || async {
        (status(port, service).await == Some(wanted)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_whose_loop_is_stuck_goes_not_live() {
    let mut stack = Stack::start().await;
    let proxy = FaultProxy::start(&stack.prefect_server.api_url()).await;
    let url = proxy.url();
    stack.spawn(
        "poller",
        &[
            ("PREFECT_API_URL", url.as_str()),
            ("PREFECT_WORKER_QUERY_SECONDS", "0.5"),
            ("PREFECT_K8S_LIVENESS_TIMEOUT_SECONDS", "3"),
            ("PREFECT_API_REQUEST_TIMEOUT", "120"),
        ],
    );
    let health = stack.ports["poller"].0;
    wait_for_status(health, "startup", ServingStatus::Serving).await;
    wait_for_status(health, "liveness", ServingStatus::Serving).await;
    wait_for_status(health, "", ServingStatus::Serving).await;
    // Polls now hang: Prefect accepts and never answers.
    proxy.add(Fault::new(FaultKind::Blackhole).path("get_scheduled_flow_runs"));
    wait_for_status(health, "liveness", ServingStatus::NotServing).await;
    proxy.clear();
    // The stuck request ends only with its own timeout; a restarted poller
    // (what Kubernetes does on a failed liveness probe) would be live again.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_without_nats_goes_not_ready_and_back() {
    let mut stack = Stack::start().await;
    stack.spawn(
        "dispatcher",
        &[
            ("PREFECT_K8S_API_KEY_SECRET", "prefect-api-key"),
            (
                "PREFECT_K8S_API_AUTH_STRING_SECRET",
                "prefect-auth:auth-string",
            ),
            ("PREFECT_K8S_LIVENESS_TIMEOUT_SECONDS", "4"),
        ],
    );
    let health = stack.ports["dispatcher"].0;
    wait_for_status(health, "", ServingStatus::Serving).await;
    wait_for_status(health, "dispatcher", ServingStatus::Serving).await;
    stack.nats.kill();
    wait_for_status(health, "", ServingStatus::NotServing).await;
    // Longer than the liveness timeout without NATS.
    tokio::time::sleep(std::time::Duration::from_secs(9)).await;
    assert_eq!(
        status(health, "liveness").await,
        Some(ServingStatus::Serving),
        "not ready is not dead: Kubernetes must not restart it for NATS being away"
    );
    stack.nats.restart();
    wait_for_status(health, "", ServingStatus::Serving).await;
}
