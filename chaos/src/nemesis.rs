//! The nemesis: a seeded schedule of fault episodes and its execution. Three
//! lanes run side by side (processes, Prefect, Kubernetes), so faults of
//! different layers overlap; within a lane one episode at a time. Each
//! episode has a start, a duration and a heal; the first round of every
//! lane goes through each of its kinds once, so a short campaign has them
//! all.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::config::CampaignConfig;
use crate::prefect_proxy::PrefectFault;
use crate::stack::{Role, Service, Stack};
use crate::tcp_proxy::TcpFault;

/// Every fault the nemesis injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    KillPoller,
    KillDispatcher,
    KillReporter,
    StopService,
    KillNats,
    PrefectLatency,
    Prefect500,
    Prefect503,
    PrefectReset,
    PrefectDropAfterCommit,
    PrefectBlackhole,
    KubeCreateLatency,
    Kube429,
    Kube500,
    Kube503,
    KubeWatchCut,
    KubeCompact,
    KubeBlackhole,
    KubeReset,
}

/// Faults of one lane never overlap each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Processes,
    Prefect,
    Kubernetes,
}

impl FaultKind {
    pub const ALL: [FaultKind; 19] = [
        FaultKind::KillPoller,
        FaultKind::KillDispatcher,
        FaultKind::KillReporter,
        FaultKind::StopService,
        FaultKind::KillNats,
        FaultKind::PrefectLatency,
        FaultKind::Prefect500,
        FaultKind::Prefect503,
        FaultKind::PrefectReset,
        FaultKind::PrefectDropAfterCommit,
        FaultKind::PrefectBlackhole,
        FaultKind::KubeCreateLatency,
        FaultKind::Kube429,
        FaultKind::Kube500,
        FaultKind::Kube503,
        FaultKind::KubeWatchCut,
        FaultKind::KubeCompact,
        FaultKind::KubeBlackhole,
        FaultKind::KubeReset,
    ];

    /// Whether the fault can hold up a submission (claim, record, create,
    /// release): everything but killing the poller or the reporter and the
    /// instant watch faults.
    pub fn impairs_submission(self) -> bool {
        !matches!(
            self,
            FaultKind::KillPoller
                | FaultKind::KillReporter
                | FaultKind::KubeWatchCut
                | FaultKind::KubeCompact
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillPoller => "sigkill-poller",
            FaultKind::KillDispatcher => "sigkill-dispatcher",
            FaultKind::KillReporter => "sigkill-reporter",
            FaultKind::StopService => "sigstop-service",
            FaultKind::KillNats => "sigkill-nats",
            FaultKind::PrefectLatency => "prefect-latency",
            FaultKind::Prefect500 => "prefect-500",
            FaultKind::Prefect503 => "prefect-503",
            FaultKind::PrefectReset => "prefect-reset",
            FaultKind::PrefectDropAfterCommit => "prefect-drop-after-commit",
            FaultKind::PrefectBlackhole => "prefect-blackhole",
            FaultKind::KubeCreateLatency => "kube-job-create-latency",
            FaultKind::Kube429 => "kube-429",
            FaultKind::Kube500 => "kube-500",
            FaultKind::Kube503 => "kube-503",
            FaultKind::KubeWatchCut => "kube-watch-cut",
            FaultKind::KubeCompact => "kube-compaction-410",
            FaultKind::KubeBlackhole => "kube-blackhole",
            FaultKind::KubeReset => "kube-connection-reset",
        }
    }

    pub fn lane(self) -> Lane {
        use FaultKind::*;
        match self {
            KillPoller | KillDispatcher | KillReporter | StopService | KillNats => Lane::Processes,
            PrefectLatency
            | Prefect500
            | Prefect503
            | PrefectReset
            | PrefectDropAfterCommit
            | PrefectBlackhole => Lane::Prefect,
            _ => Lane::Kubernetes,
        }
    }
}

/// One planned fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    pub kind: FaultKind,
    /// From the start of the campaign.
    pub start: Duration,
    /// Until the heal (zero for one-shot faults: watch cut, compaction).
    pub duration: Duration,
    /// Picks the replica a process fault hits.
    pub target: usize,
    /// Error/reset/drop probability per request.
    pub rate: f64,
    /// Added latency.
    pub latency: Duration,
    /// Kubernetes verb an error fault is limited to (none: every verb).
    pub verb: Option<&'static str>,
}

const KUBE_VERBS: [Option<&str>; 7] = [
    None,
    Some("create"),
    Some("patch"),
    Some("get"),
    Some("list"),
    Some("delete"),
    Some("watch"),
];

/// The seeded schedule of every lane, by start time.
pub fn schedule(config: &CampaignConfig) -> Vec<Episode> {
    let lanes = [Lane::Processes, Lane::Prefect, Lane::Kubernetes];
    let mut episodes: Vec<Episode> = lanes
        .iter()
        .enumerate()
        .flat_map(|(number, lane)| lane_schedule(config, *lane, number as u64))
        .collect();
    episodes.sort_by_key(|episode| episode.start);
    episodes
}

fn lane_schedule(config: &CampaignConfig, lane: Lane, number: u64) -> Vec<Episode> {
    let mut rng = StdRng::seed_from_u64(config.seed.wrapping_mul(31).wrapping_add(number));
    let kinds: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .filter(|k| k.lane() == lane)
        .collect();
    let mut first_round = kinds.clone();
    first_round.shuffle(&mut rng);
    let mut episodes = Vec::new();
    let mut at = Duration::from_secs_f64(rng.random_range(2.0..6.0));
    loop {
        let kind = match first_round.pop() {
            Some(kind) => kind,
            None if at < config.duration() => *kinds.choose(&mut rng).expect("lanes have kinds"),
            None => return episodes,
        };
        let episode = episode(&mut rng, config, kind, at);
        let gap = -rng.random_range(f64::EPSILON..1.0).ln() * config.fault_gap_seconds;
        at = episode.start + episode.duration + Duration::from_secs_f64(gap.max(1.0));
        episodes.push(episode);
    }
}

fn episode(rng: &mut StdRng, config: &CampaignConfig, kind: FaultKind, start: Duration) -> Episode {
    let seconds = |rng: &mut StdRng, low: f64, high: f64| {
        Duration::from_secs_f64(rng.random_range(low..high.max(low + 0.1)))
    };
    let blackhole = config.max_blackhole_seconds as f64;
    let ack_wait = config.ack_wait_seconds as f64;
    use FaultKind::*;
    let duration = match kind {
        KillPoller | KillDispatcher | KillReporter | KillNats => seconds(rng, 1.0, 5.0),
        StopService => seconds(rng, 3.0, config.max_stop_seconds as f64),
        PrefectLatency | PrefectDropAfterCommit => seconds(rng, 5.0, 15.0),
        Prefect500 | Prefect503 | PrefectReset | Kube429 | Kube500 | Kube503 => {
            seconds(rng, 3.0, 10.0)
        }
        PrefectBlackhole | KubeBlackhole => seconds(rng, 5.0, blackhole),
        KubeCreateLatency => seconds(rng, 10.0, 25.0),
        KubeReset => seconds(rng, 1.0, 4.0),
        KubeWatchCut | KubeCompact => Duration::ZERO,
    };
    let latency = match kind {
        PrefectLatency => seconds(rng, 0.5, 3.0),
        KubeCreateLatency => seconds(rng, ack_wait + 2.0, ack_wait + 15.0),
        _ => Duration::ZERO,
    };
    Episode {
        kind,
        start,
        duration,
        target: rng.random_range(0..1000),
        rate: rng.random_range(0.3..1.0),
        latency,
        verb: *KUBE_VERBS.choose(rng).expect("verbs"),
    }
}

/// The proxy mode of a Prefect fault and how the report names it.
fn prefect_fault(episode: &Episode) -> (PrefectFault, String) {
    let rate = episode.rate;
    let percent = (rate * 100.0).round();
    match episode.kind {
        FaultKind::PrefectLatency => (
            PrefectFault::Latency(episode.latency),
            format!("{} ms per request", episode.latency.as_millis()),
        ),
        FaultKind::Prefect500 => (
            PrefectFault::Error { status: 500, rate },
            format!("500 to {percent}% of requests"),
        ),
        FaultKind::Prefect503 => (
            PrefectFault::Error { status: 503, rate },
            format!("503 to {percent}% of requests"),
        ),
        FaultKind::PrefectReset => (
            PrefectFault::Reset { rate },
            format!("reset {percent}% of requests"),
        ),
        FaultKind::PrefectDropAfterCommit => (
            PrefectFault::DropAfterCommit { rate },
            format!("answer dropped after commit for {percent}% of writes"),
        ),
        _ => (
            PrefectFault::Blackhole,
            format!("blackhole {:.1} s", episode.duration.as_secs_f64()),
        ),
    }
}

/// What happened to one episode.
#[derive(Clone, Debug)]
pub struct EpisodeLog {
    pub kind: FaultKind,
    /// What exactly was done ("SIGKILL dispatcher-2", "503 at 64% of requests").
    pub detail: String,
    /// From the start of the campaign.
    pub started: Duration,
    pub healed: Duration,
    /// Applying or healing it failed: a harness error.
    pub error: Option<String>,
}

/// Runs the schedule against the stack.
pub struct Nemesis {
    stack: Arc<Stack>,
    admin: EmulatorAdmin,
    kube: kube::Client,
    campaign_start: Instant,
}

impl Nemesis {
    pub fn new(stack: Arc<Stack>, kube: kube::Client, campaign_start: Instant) -> Nemesis {
        let admin = EmulatorAdmin::new(&stack.emulator_url);
        Nemesis {
            stack,
            admin,
            kube,
            campaign_start,
        }
    }

    /// Runs every lane to the end of its schedule.
    pub async fn run(self: Arc<Self>, episodes: Vec<Episode>) -> Vec<EpisodeLog> {
        let lanes = [Lane::Processes, Lane::Prefect, Lane::Kubernetes];
        let tasks: Vec<_> = lanes
            .into_iter()
            .map(|lane| {
                let mine: Vec<Episode> = episodes
                    .iter()
                    .filter(|e| e.kind.lane() == lane)
                    .cloned()
                    .collect();
                tokio::spawn(self.clone().run_lane(mine))
            })
            .collect();
        let mut logs = Vec::new();
        for task in tasks {
            logs.extend(task.await.unwrap_or_default());
        }
        logs.sort_by_key(|log| log.started);
        logs
    }

    async fn run_lane(self: Arc<Self>, episodes: Vec<Episode>) -> Vec<EpisodeLog> {
        let mut logs = Vec::new();
        for episode in episodes {
            tokio::time::sleep_until(self.campaign_start + episode.start).await;
            logs.push(self.run_episode(&episode).await);
        }
        logs
    }

    async fn run_episode(&self, episode: &Episode) -> EpisodeLog {
        let started = self.campaign_start.elapsed();
        let applied = self.apply(episode).await;
        tokio::time::sleep(episode.duration).await;
        let healed = self.heal(episode, applied.as_ref().ok()).await;
        let (detail, error) = match (applied, healed) {
            (Ok(detail), Ok(())) => (detail, None),
            (Ok(detail), Err(error)) => (detail, Some(format!("heal: {error}"))),
            (Err(error), _) => (String::new(), Some(format!("apply: {error}"))),
        };
        tracing::info!(fault = episode.kind.name(), %detail, "fault healed");
        EpisodeLog {
            kind: episode.kind,
            detail,
            started,
            healed: self.campaign_start.elapsed(),
            error,
        }
    }

    /// Injects the fault; returns what was done.
    async fn apply(&self, episode: &Episode) -> Result<String, String> {
        use FaultKind::*;
        match episode.kind {
            KillPoller | KillDispatcher | KillReporter => self.kill_service(episode).await,
            StopService => self.stop_service(episode).await,
            KillNats => {
                self.stack.kill_nats().await;
                Ok(format!(
                    "SIGKILL nats-server for {:.1} s",
                    episode.duration.as_secs_f64()
                ))
            }
            KubeBlackhole => self.kube_net(TcpFault::Blackhole, "blackhole"),
            KubeReset => self.kube_net(TcpFault::Reset, "reset every connection"),
            kind if kind.lane() == Lane::Prefect => {
                let (fault, detail) = prefect_fault(episode);
                self.stack.prefect_proxy.set(fault);
                Ok(detail)
            }
            _ => self.emulator_fault(episode).await,
        }
    }

    async fn heal(&self, episode: &Episode, applied: Option<&String>) -> Result<(), String> {
        use FaultKind::*;
        match episode.kind {
            KillPoller | KillDispatcher | KillReporter => match applied {
                Some(detail) => self.restart_service(detail).await,
                None => Ok(()),
            },
            StopService => match applied {
                Some(detail) => self.continue_service(detail).await,
                None => Ok(()),
            },
            KillNats => self.stack.restart_nats().await.map_err(|e| e.to_string()),
            PrefectLatency
            | Prefect500
            | Prefect503
            | PrefectReset
            | PrefectDropAfterCommit
            | PrefectBlackhole => {
                self.stack.prefect_proxy.set(PrefectFault::Pass);
                Ok(())
            }
            KubeBlackhole | KubeReset => {
                self.stack.kube_proxy.set(TcpFault::Pass);
                Ok(())
            }
            KubeWatchCut | KubeCompact => Ok(()),
            _ => self.admin.clear_faults().await,
        }
    }

    fn kube_net(&self, fault: TcpFault, detail: &str) -> Result<String, String> {
        self.stack.kube_proxy.set(fault);
        Ok(detail.to_owned())
    }

    async fn emulator_fault(&self, episode: &Episode) -> Result<String, String> {
        use FaultKind::*;
        let percent = (episode.rate * 100.0).round();
        let verb = episode.verb.unwrap_or("every verb");
        match episode.kind {
            KubeWatchCut => self
                .admin
                .post("cut-watches")
                .await
                .map(|_| "watches cut".into()),
            KubeCompact => self
                .admin
                .post("compact")
                .await
                .map(|_| "compacted: resuming watchers get 410".into()),
            KubeCreateLatency => {
                let settings = json!({"latencyMs": episode.latency.as_millis() as u64, "verb": "create", "resource": "jobs"});
                self.admin.set_faults(settings).await?;
                Ok(format!("{} ms on Job create", episode.latency.as_millis()))
            }
            _ => {
                let code = match episode.kind {
                    Kube429 => 429,
                    Kube500 => 500,
                    _ => 503,
                };
                let settings = json!({"errorRate": episode.rate, "errorCode": code, "retryAfterSeconds": 1, "verb": episode.verb});
                self.admin.set_faults(settings).await?;
                Ok(format!("{code} to {percent}% of {verb} requests"))
            }
        }
    }

    /// Picks the replica: mostly the reporter that leads, when the Lease
    /// names one (its identity is `<host>-<pid>`).
    async fn target(&self, role: Option<Role>, index: usize) -> Option<Service> {
        let candidates: Vec<Service> = self
            .stack
            .services
            .iter()
            .filter(|service| role.is_none_or(|role| service.role == role))
            .cloned()
            .collect();
        if role == Some(Role::Reporter) && !index.is_multiple_of(4) {
            if let Some(leader) = self.reporter_leader(&candidates).await {
                return Some(leader);
            }
        }
        candidates.get(index % candidates.len().max(1)).cloned()
    }

    async fn reporter_leader(&self, reporters: &[Service]) -> Option<Service> {
        let leases: kube::Api<Lease> = kube::Api::namespaced(self.kube.clone(), "default");
        let name = format!("prefect-k8s-reporter-{}", self.stack.pool);
        let holder = leases.get(&name).await.ok()?.spec?.holder_identity?;
        let pid: i32 = holder.rsplit('-').next()?.parse().ok()?;
        for reporter in reporters {
            if reporter.proc.lock().await.pid() == Some(pid) {
                return Some(reporter.clone());
            }
        }
        None
    }

    async fn kill_service(&self, episode: &Episode) -> Result<String, String> {
        let role = match episode.kind {
            FaultKind::KillPoller => Role::Poller,
            FaultKind::KillDispatcher => Role::Dispatcher,
            _ => Role::Reporter,
        };
        let service = self
            .target(Some(role), episode.target)
            .await
            .ok_or("no such service")?;
        service.proc.lock().await.sigkill().await;
        Ok(format!(
            "SIGKILL {} for {:.1} s",
            service.name,
            episode.duration.as_secs_f64()
        ))
    }

    async fn restart_service(&self, detail: &str) -> Result<(), String> {
        let service = self.named(detail)?;
        let mut proc = service.proc.lock().await;
        proc.spawn().map_err(|e| e.to_string())
    }

    async fn stop_service(&self, episode: &Episode) -> Result<String, String> {
        let service = self
            .target(None, episode.target)
            .await
            .ok_or("no service")?;
        if !service.proc.lock().await.signal(Signal::SIGSTOP) {
            return Err(format!("{} is not running", service.name));
        }
        Ok(format!(
            "SIGSTOP {} for {:.1} s",
            service.name,
            episode.duration.as_secs_f64()
        ))
    }

    async fn continue_service(&self, detail: &str) -> Result<(), String> {
        let service = self.named(detail)?;
        service.proc.lock().await.signal(Signal::SIGCONT);
        Ok(())
    }

    /// The service a detail line names ("SIGKILL dispatcher-2 for …").
    fn named(&self, detail: &str) -> Result<&Service, String> {
        let name = detail.split_whitespace().nth(1).unwrap_or_default();
        self.stack
            .services
            .iter()
            .find(|service| service.name == name)
            .ok_or_else(|| format!("no service named {name}"))
    }

    /// Makes sure nothing is left injected: proxies pass, emulator faults
    /// cleared, every service continued.
    pub async fn heal_everything(&self) -> Result<(), String> {
        self.stack.prefect_proxy.set(PrefectFault::Pass);
        self.stack.kube_proxy.set(TcpFault::Pass);
        for service in &self.stack.services {
            service.proc.lock().await.signal(Signal::SIGCONT);
        }
        self.admin.clear_faults().await
    }
}

/// The emulator's `/admin` endpoints.
#[derive(Clone)]
pub struct EmulatorAdmin {
    http: reqwest::Client,
    base: String,
}

impl EmulatorAdmin {
    pub fn new(emulator_url: &str) -> EmulatorAdmin {
        crate::prefect_api::install_crypto_provider();
        EmulatorAdmin {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a plain HTTP client builds"),
            base: format!("{}/admin", emulator_url.trim_end_matches('/')),
        }
    }

    async fn post(&self, action: &str) -> Result<(), String> {
        self.send(self.http.post(format!("{}/{action}", self.base)))
            .await
    }

    async fn set_faults(&self, settings: Value) -> Result<(), String> {
        self.send(
            self.http
                .put(format!("{}/faults", self.base))
                .json(&settings),
        )
        .await
    }

    pub async fn clear_faults(&self) -> Result<(), String> {
        self.send(self.http.delete(format!("{}/faults", self.base)))
            .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(), String> {
        let response = request
            .send()
            .await
            .map_err(|e| format!("emulator admin: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("emulator admin: HTTP {}", response.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: CampaignConfig,
    }

    fn config(args: &[&str]) -> CampaignConfig {
        Cli::parse_from(std::iter::once("campaign").chain(args.iter().copied())).config
    }

    #[test]
    fn every_kind_is_scheduled_and_lanes_never_overlap() {
        let config = config(&["--seed", "5", "--duration-seconds", "100"]);
        let episodes = schedule(&config);
        for kind in FaultKind::ALL {
            assert!(episodes.iter().any(|e| e.kind == kind), "{kind:?}");
        }
        for lane in [Lane::Processes, Lane::Prefect, Lane::Kubernetes] {
            let mine: Vec<_> = episodes.iter().filter(|e| e.kind.lane() == lane).collect();
            for pair in mine.windows(2) {
                assert!(pair[0].start + pair[0].duration < pair[1].start, "{pair:?}");
            }
        }
        assert_eq!(episodes, schedule(&config), "seeded");
    }

    #[test]
    fn a_long_campaign_has_hundreds_of_faults() {
        let config = config(&[
            "--duration-seconds",
            "1200",
            "--max-blackhole-seconds",
            "120",
        ]);
        assert!(
            schedule(&config).len() >= 200,
            "{}",
            schedule(&config).len()
        );
    }
}
