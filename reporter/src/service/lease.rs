//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several reporter
//! replicas exactly one evaluates runs, forwards events, cancels and sweeps.
//!
//! - No Lease: create it holding it (409 AlreadyExists: another replica was faster).
//! - We hold it: renew every third of the lease duration with a `replace` carrying the
//!   `resourceVersion` we read (409 Conflict: someone else wrote it; we lost it).
//! - Someone else holds it: take it over (and count a transition) once the record has
//!   not changed for a whole lease duration, or at once when it holds no one.
//! - Shutdown: a leader stops acting, then clears `holderIdentity` so a standby takes
//!   over at its next look (at most 2 s later) instead of waiting for expiry.
//!
//! Expiry is judged, as client-go does, by when *this* replica last saw the record
//! change (its own monotonic clock), not by comparing the holder's `renewTime` with
//! its own wall clock: two nodes' clocks may differ by more than a lease duration.
//! A leader whose renewals fail, or hang, stops acting two thirds of the duration after
//! its last renewal (its [`Leadership`] lapses then, checked at every look), before any
//! standby may take over, so two leaders never act at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::Api;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Whether this replica leads, as every worker task sees it. Leading is valid only
/// until the renew deadline of the last successful renewal, checked against the
/// monotonic clock at each look: a replica whose process was stopped (SIGSTOP, a long
/// GC-like pause) or whose renewals hang stops acting at that instant, whether or not
/// its election loop has run since.
#[derive(Clone)]
pub struct Leadership {
    state: watch::Receiver<bool>,
    until: Arc<Mutex<Option<Instant>>>,
}

impl Leadership {
    /// A replica that never leads (tests).
    pub fn never() -> Leadership {
        LeadershipSender::new().subscribe()
    }

    /// Leading, and the last renewal's deadline has not passed.
    pub fn is_leading(&self) -> bool {
        *self.state.borrow()
            && self
                .until
                .lock()
                .is_some_and(|until| Instant::now() < until)
    }

    /// Waits until leadership is gained or lost (not on every renewal).
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.state.changed().await
    }
}

/// The election's side of [`Leadership`].
pub struct LeadershipSender {
    state: watch::Sender<bool>,
    until: Arc<Mutex<Option<Instant>>>,
}

impl Default for LeadershipSender {
    fn default() -> Self {
        Self::new()
    }
}

impl LeadershipSender {
    pub fn new() -> Self {
        LeadershipSender {
            state: watch::channel(false).0,
            until: Arc::default(),
        }
    }

    pub fn subscribe(&self) -> Leadership {
        Leadership {
            state: self.state.subscribe(),
            until: self.until.clone(),
        }
    }

    /// Leading until `until` (`None`: not leading).
    fn set(&self, until: Option<Instant>) {
        *self.until.lock() = until;
        self.state.send_if_modified(|current| {
            let changed = *current != until.is_some();
            *current = until.is_some();
            changed
        });
    }

    fn is_set(&self) -> bool {
        *self.state.borrow()
    }
}

/// What the elector does with the Lease it just read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeasePlan {
    /// No Lease yet: create it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    Acquire,
    /// Someone else holds it and it is not expired.
    Follow { holder: String },
}

/// The last Lease record a replica saw, and when it first saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    record: (Option<String>, Option<String>),
    seen_at: Instant,
}

/// Decides what to do with the Lease read at `now`. `observation` is updated with the
/// record when it changed.
pub fn plan(
    lease: Option<&Lease>,
    identity: &str,
    default_duration: Duration,
    observation: &mut Option<Observation>,
    now: Instant,
) -> LeasePlan {
    let Some(lease) = lease else {
        return LeasePlan::Create;
    };
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|spec| spec.holder_identity.clone())
        .filter(|holder| !holder.is_empty());
    let Some(holder) = holder else {
        return LeasePlan::Acquire;
    };
    if holder == identity {
        return LeasePlan::Renew;
    }
    let record = (
        Some(holder.clone()),
        lease.metadata.resource_version.clone(),
    );
    let seen_at = match observation {
        Some(seen) if seen.record == record => seen.seen_at,
        _ => {
            *observation = Some(Observation {
                record,
                seen_at: now,
            });
            now
        }
    };
    let duration = spec
        .and_then(|spec| spec.lease_duration_seconds)
        .and_then(|seconds| u64::try_from(seconds).ok())
        .filter(|seconds| *seconds > 0)
        .map_or(default_duration, Duration::from_secs);
    if now.duration_since(seen_at) >= duration {
        LeasePlan::Acquire
    } else {
        LeasePlan::Follow { holder }
    }
}

/// Where the Lease is and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

impl LeaseSettings {
    /// How often the leader renews.
    fn retry_period(&self) -> Duration {
        self.duration / 3
    }

    /// How often a standby looks: as often as the leader renews, but at least every
    /// 2 s, so a takeover follows expiry closely.
    fn standby_period(&self) -> Duration {
        self.retry_period().min(Duration::from_secs(2))
    }

    /// A leader that has not renewed for this long stops acting.
    fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

fn micro_now() -> MicroTime {
    let now = chrono::Utc::now();
    MicroTime(
        k8s_openapi::jiff::Timestamp::from_microsecond(now.timestamp_micros())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

fn duration_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// Runs the election until `shutdown`, publishing leadership on `leadership`.
/// Releases the Lease on shutdown when holding it.
pub async fn run_election(
    client: kube::Client,
    settings: LeaseSettings,
    leadership: LeadershipSender,
    shutdown: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let mut observation = None;
    let mut last_renewed: Option<Instant> = None;
    loop {
        // A round that hangs (an API server that accepts and never answers) is cut at
        // the renew deadline; the leadership it would have renewed has lapsed by then
        // anyway (`Leadership::is_leading` checks the deadline at every look), so a
        // slow round that still succeeds in time keeps it.
        let held = tokio::time::timeout(
            settings.renew_deadline(),
            try_hold(&api, &settings, &mut observation),
        )
        .await;
        let now = Instant::now();
        match held {
            Ok(Ok(true)) => last_renewed = Some(now),
            Ok(Ok(false)) => last_renewed = None,
            Ok(Err(error)) => {
                tracing::warn!(%error, lease = %settings.name, "leader election call failed")
            }
            Err(_) => {
                tracing::warn!(lease = %settings.name, "leader election call got no answer in time")
            }
        }
        let leading = last_renewed
            .is_some_and(|renewed| now.duration_since(renewed) < settings.renew_deadline());
        if !leading {
            last_renewed = None;
        }
        if leading != leadership.is_set() {
            if leading {
                tracing::info!(identity = %settings.identity, lease = %settings.name, "became the leader");
            } else {
                tracing::info!(identity = %settings.identity, lease = %settings.name, "not the leader (standby)");
            }
        }
        leadership.set(last_renewed.map(|renewed| renewed + settings.renew_deadline()));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(if leading { settings.retry_period() } else { settings.standby_period() }) => {}
        }
    }
    let was_leading = leadership.is_set();
    leadership.set(None);
    if was_leading {
        match tokio::time::timeout(settings.retry_period(), release(&api, &settings)).await {
            Ok(Ok(())) => tracing::info!(lease = %settings.name, "released the lease"),
            Ok(Err(error)) => {
                tracing::warn!(%error, lease = %settings.name, "releasing the lease failed")
            }
            Err(_) => {
                tracing::warn!(lease = %settings.name, "releasing the lease got no answer in time")
            }
        }
    }
}

/// One round: read the Lease and act on it. `Ok(true)` when we hold it afterwards.
async fn try_hold(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    observation: &mut Option<Observation>,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(&settings.name).await?;
    let step = plan(
        current.as_ref(),
        &settings.identity,
        settings.duration,
        observation,
        Instant::now(),
    );
    match step {
        LeasePlan::Follow { .. } => Ok(false),
        LeasePlan::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(settings.name.clone()),
                    namespace: Some(settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(settings.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds(settings.duration)),
                    acquire_time: Some(micro_now()),
                    renew_time: Some(micro_now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status))
                    if status.is_already_exists() || status.is_conflict() =>
                {
                    Ok(false)
                }
                Err(error) => Err(error),
            }
        }
        LeasePlan::Renew | LeasePlan::Acquire => {
            let mut lease = current.unwrap_or_default();
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if step == LeasePlan::Acquire {
                spec.holder_identity = Some(settings.identity.clone());
                spec.acquire_time = Some(micro_now());
                spec.lease_transitions =
                    Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            }
            spec.lease_duration_seconds = Some(duration_seconds(settings.duration));
            spec.renew_time = Some(micro_now());
            match api
                .replace(&settings.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.is_conflict() => Ok(false),
                Err(error) => Err(error),
            }
        }
    }
}

/// Clears the holder (if still us) so a standby takes over without waiting for expiry.
async fn release(api: &Api<Lease>, settings: &LeaseSettings) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = Some(micro_now());
    api.replace(&settings.name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DURATION: Duration = Duration::from_secs(15);

    fn lease(holder: Option<&str>, resource_version: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("prefect-k8s-reporter-k8s".into()),
                resource_version: Some(resource_version.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn no_lease_is_created_and_our_own_is_renewed() {
        let mut seen = None;
        let now = Instant::now();
        assert_eq!(
            plan(None, "me", DURATION, &mut seen, now),
            LeasePlan::Create
        );
        let ours = lease(Some("me"), "1");
        assert_eq!(
            plan(Some(&ours), "me", DURATION, &mut seen, now),
            LeasePlan::Renew
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut seen = None;
        let free = lease(None, "9");
        assert_eq!(
            plan(Some(&free), "me", DURATION, &mut seen, Instant::now()),
            LeasePlan::Acquire
        );
        let empty = lease(Some(""), "9");
        assert_eq!(
            plan(Some(&empty), "me", DURATION, &mut seen, Instant::now()),
            LeasePlan::Acquire
        );
    }

    #[test]
    fn a_renewed_lease_is_followed_and_a_stale_one_is_taken_over() {
        let start = Instant::now();
        let mut seen = None;
        let theirs = lease(Some("other"), "1");
        let follow = LeasePlan::Follow {
            holder: "other".into(),
        };
        assert_eq!(
            plan(Some(&theirs), "me", DURATION, &mut seen, start),
            follow
        );
        // Renewed (new resourceVersion) after 10 s: the clock restarts.
        let renewed = lease(Some("other"), "2");
        let later = start + Duration::from_secs(10);
        assert_eq!(
            plan(Some(&renewed), "me", DURATION, &mut seen, later),
            follow
        );
        assert_eq!(
            plan(
                Some(&renewed),
                "me",
                DURATION,
                &mut seen,
                later + Duration::from_secs(14)
            ),
            follow
        );
        // Unchanged for a whole lease duration: expired.
        assert_eq!(
            plan(Some(&renewed), "me", DURATION, &mut seen, later + DURATION),
            LeasePlan::Acquire
        );
    }

    #[test]
    fn a_standby_that_just_started_waits_a_whole_duration_whatever_the_clocks_say() {
        let start = Instant::now();
        let mut seen = None;
        let theirs = lease(Some("other"), "5");
        assert!(matches!(
            plan(Some(&theirs), "me", DURATION, &mut seen, start),
            LeasePlan::Follow { .. }
        ));
        assert_eq!(
            plan(Some(&theirs), "me", DURATION, &mut seen, start + DURATION),
            LeasePlan::Acquire
        );
    }

    #[test]
    fn leadership_lapses_at_its_deadline_without_the_election_loop() {
        let sender = LeadershipSender::new();
        let leadership = sender.subscribe();
        assert!(!leadership.is_leading());
        sender.set(Some(Instant::now() + Duration::from_millis(50)));
        assert!(leadership.is_leading());
        // A stopped process resumes: no renewal happened, the deadline passed.
        std::thread::sleep(Duration::from_millis(60));
        assert!(!leadership.is_leading(), "acting past the renew deadline");
        sender.set(None);
        assert!(!leadership.is_leading());
    }

    #[test]
    fn the_leader_stops_acting_before_a_standby_may_take_over() {
        let settings = LeaseSettings {
            namespace: "default".into(),
            name: "x".into(),
            identity: "me".into(),
            duration: DURATION,
        };
        assert!(settings.renew_deadline() < settings.duration);
        assert!(settings.retry_period() * 2 <= settings.renew_deadline());
        assert!(settings.standby_period() <= settings.retry_period());
    }
}
