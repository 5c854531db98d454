//! The two jobs and what they share: the AWS clients and configuration of a run, the
//! stop a signal asks for (no new work, a grace period for the work under way), the
//! tasks that must finish even then (saving a rotated token), and the summary that
//! becomes the `run_finished` line and the exit code.

pub mod batch;
pub mod billing_report;
pub mod check;
pub mod create;
pub mod send;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::ApiError;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::secrets::Secrets;

/// How long work under way may go on after a stop is asked for. ECS sends SIGTERM, then
/// SIGKILL 30 s later (the container's default stopTimeout); 25 s leaves time to log the
/// end of the run and finish a token save.
pub const GRACE: Duration = Duration::from_secs(25);

/// Why a run was asked to stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGINT (2) or SIGTERM (15).
    Signal(i32),
    /// `--timeout` ran out.
    Timeout,
}

/// The exit code of a run stopped at its `--timeout`, as coreutils' `timeout` gives.
pub const TIMED_OUT: u8 = 124;

/// A stop, shared by every task of the run: once asked for, no new client or invoice
/// starts, and those under way have until [`Stop::deadline`].
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<StopInner>);

#[derive(Debug, Default)]
struct StopInner {
    token: CancellationToken,
    asked: OnceLock<(StopReason, Instant)>,
}

impl Stop {
    /// Asks the run to stop; the first reason wins.
    pub fn ask(&self, reason: StopReason) {
        if self.0.asked.set((reason, Instant::now())).is_ok() {
            tracing::warn!(
                event = "stop_requested",
                reason = ?reason,
                grace_s = GRACE.as_secs(),
                "no new work starts; work under way has until the grace period ends"
            );
        }
        self.0.token.cancel();
    }

    pub fn reason(&self) -> Option<StopReason> {
        self.0.asked.get().map(|(r, _)| *r)
    }

    /// When work under way is abandoned, once a stop was asked for.
    pub fn deadline(&self) -> Option<Instant> {
        self.0.asked.get().map(|(_, at)| *at + GRACE)
    }

    pub async fn asked(&self) {
        self.0.token.cancelled().await;
    }
}

/// Items a stopped run did not finish.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unfinished {
    /// Never started: the stop came first.
    pub not_started: usize,
    /// Started, and still running when the grace period ended.
    pub abandoned: usize,
}

/// Runs `work` on every item, `concurrency` at a time, handing each result to `each`.
/// Once `stop` is asked for, or `each` returns `false` (a fatal error), no new item
/// starts, and those under way have until the grace period ends: a write under way is
/// not cut off because another client failed.
pub async fn run_all<I, T, F, Fut>(
    items: Vec<I>,
    concurrency: usize,
    stop: &Stop,
    work: F,
    mut each: impl FnMut(T) -> bool,
) -> Unfinished
where
    F: Fn(I) -> Fut,
    Fut: Future<Output = T>,
{
    let total = items.len();
    let started = AtomicUsize::new(0);
    let halted = std::sync::atomic::AtomicBool::new(false);
    let mut halted_at: Option<Instant> = None;
    let mut results = Box::pin(
        futures_util::stream::iter(items)
            .take_while(|_| {
                std::future::ready(stop.reason().is_none() && !halted.load(Ordering::Relaxed))
            })
            .map(|item| {
                started.fetch_add(1, Ordering::Relaxed);
                work(item)
            })
            .buffer_unordered(concurrency.max(1)),
    );
    let mut finished = 0;
    loop {
        let deadline = match (stop.deadline(), halted_at.map(|at| at + GRACE)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Biased: a result already there is taken before the deadline is looked at.
        let next = match deadline {
            None => tokio::select! {
                biased;
                next = results.next() => next,
                () = stop.asked() => continue,
            },
            Some(deadline) => tokio::select! {
                biased;
                next = results.next() => next,
                () = tokio::time::sleep_until(deadline.into()) => break,
            },
        };
        let Some(result) = next else { break };
        finished += 1;
        if !each(result) && halted_at.is_none() {
            halted.store(true, Ordering::Relaxed);
            halted_at = Some(Instant::now());
        }
    }
    drop(results);
    let started = started.load(Ordering::Relaxed);
    Unfinished {
        not_started: total - started,
        abandoned: started - finished,
    }
}

/// Runs `job` holding `slot` of the lease `key` (see `state.rs`): one run at a time,
/// or shards that split the work alike side by side. A dry run
/// writes nothing and needs none. When another run holds it, nothing runs and the
/// summary says so. A run that failed or was stopped keeps the lease for the settle
/// time, for the requests it may have left at a service to end.
pub async fn exclusive<F>(
    ctx: &Context,
    name: &'static str,
    key: String,
    slot: crate::state::Slot,
    dry_run: bool,
    job: F,
) -> Result<Summary>
where
    F: Future<Output = Result<Summary>>,
{
    if dry_run {
        return job.await;
    }
    let ledger = crate::state::Ledger::new(ctx.db.clone(), &ctx.config.state_table);
    let lease = match ledger.lease(&key, slot, ctx.config.settle * 2).await? {
        crate::state::Leased::Held(lease) => lease,
        crate::state::Leased::Busy { until } => {
            tracing::warn!(
                event = "run_skipped",
                lease = %key,
                until = %until,
                "another run of this job is under way (its lease is kept alive): this one does nothing"
            );
            let mut summary = Summary::new(name, false);
            summary.busy = Some(until);
            return Ok(summary);
        }
    };
    let result = job.await;
    // A run that failed anything may have left a request unanswered at a service (a
    // batch whose fate is unknown fails its clients): its lease stays for the settle
    // time, so a rerun does not start while such a request may still land.
    let unfinished = match &result {
        Ok(s) => s.stopped.is_some() || !s.failures.is_empty(),
        Err(_) => true,
    };
    let released = lease.release(unfinished.then_some(ctx.config.settle)).await;
    match (result, released) {
        (Ok(summary), Err(e)) => {
            tracing::warn!(event = "lease_release_failed", error = %e, "the next run waits for the lease to run out");
            Ok(summary)
        }
        (result, _) => result,
    }
}

/// What every job starts from.
#[derive(Debug)]
pub struct Context {
    pub config: Config,
    pub secrets: Secrets,
    pub db: aws_sdk_dynamodb::Client,
    pub stop: Stop,
    /// Tasks that must run to their end even when the run fails or is stopped: the QBO
    /// token refresh and its write-back. `main` waits for them before exiting.
    pub critical: TaskTracker,
}

impl Context {
    /// AWS from the standard chain (profile, SSO, env, the ECS task role);
    /// `AWS_ENDPOINT_URL` points it at an emulator.
    pub async fn load(config: Config, stop: Stop, critical: TaskTracker) -> Result<Self> {
        let sdk = aws_setup::load(&aws_setup::AwsOptions::default()).await;
        if sdk.region().is_none() {
            return Err(Error::Usage(
                "no AWS region is configured".into(),
                "set AWS_REGION (the task definition sets it), or a region in the AWS profile"
                    .into(),
            ));
        }
        Ok(Self {
            config,
            secrets: Secrets::new(aws_sdk_secretsmanager::Client::new(&sdk)),
            db: aws_sdk_dynamodb::Client::new(&sdk),
            stop,
            critical,
        })
    }
}

impl Context {
    /// The QBO client, from the QBO secret.
    pub async fn qbo(&self) -> Result<crate::api::qbo::Qbo> {
        let (secret, whole) = self.secrets.qbo(&self.config.secrets.qbo).await?;
        Ok(crate::api::qbo::Qbo::new(
            &secret,
            whole,
            self.secrets.clone(),
            self.critical.clone(),
            &self.config,
        ))
    }
}

/// An error that stops the whole run, with the fix for its service.
#[allow(clippy::needless_pass_by_value)] // Reads best as `.map_err(fatal)`.
pub fn fatal(e: ApiError) -> Error {
    let fix = match (e.service, e.code.as_deref()) {
        ("qbo-oauth", Some("invalid_grant")) => {
            "reconnect the QBO app (authorization code flow) and put the new refresh_token in the QBO secret"
        }
        ("qbo-oauth", _) => "check client_id and client_secret in the QBO secret",
        ("clickup", _) => "check api_token and team_id in the ClickUp secret",
        ("graph", _) => {
            "check tenant_id, client_id and client_secret in the MsGraph secret, and that the app has Mail.Send (and Sites.ReadWrite.All to archive)"
        }
        ("secretsmanager", _) => {
            "let the task role call secretsmanager:PutSecretValue on the QBO secret"
        }
        _ => "check the service's status and the credentials in its secret, then run the job again",
    };
    Error::Fatal(e.to_string(), fix.into())
}

/// Counts of a run, and each failure with its reason.
#[derive(Debug, Default)]
pub struct Summary {
    pub job: &'static str,
    pub dry_run: bool,
    pub total: u64,
    /// Invoices created, or sent.
    pub done: u64,
    /// Would have been created or sent (dry run).
    pub would: u64,
    /// Done by an earlier run.
    pub already_done: u64,
    pub no_minutes: u64,
    pub skipped: u64,
    /// `(id, why)` of each client or invoice left alone on purpose (inactive,
    /// excluded, no minutes), for the billing report.
    pub skips: Vec<(String, String)>,
    pub failures: Vec<(String, String)>,
    /// The send job's summary email went out.
    pub emailed: bool,
    /// Why the run stopped early, and what it left undone.
    pub stopped: Option<(StopReason, Unfinished)>,
    /// Invoices created with EmailStatus NotSet: their customer has no email address.
    pub not_emailed: u64,
    /// Runs still in progress at billing time (not billed, reported by id).
    pub runs_in_progress: u64,
    /// Finished runs Control Room gave neither a duration nor an end (not billed).
    pub runs_unmeasured: u64,
    /// Another run held the job's lease until then: this one did nothing.
    pub busy: Option<jiff::Timestamp>,
    /// `K/N` of a sharded run, and the group of runs started together.
    pub shard: Option<String>,
    pub run_group: Option<String>,
}

impl Summary {
    pub fn new(job: &'static str, dry_run: bool) -> Self {
        Self {
            job,
            dry_run,
            ..Self::default()
        }
    }

    pub fn fail(&mut self, id: &str, why: String) {
        tracing::error!(event = "client_failed", job = self.job, id, error = %why);
        self.failures.push((id.to_owned(), why));
    }

    pub fn skip(&mut self, id: &str, why: &str) {
        tracing::info!(event = "skipped", job = self.job, id, reason = why);
        self.skipped += 1;
        self.skips.push((id.to_owned(), why.to_owned()));
    }

    pub fn already(&mut self, id: &str, key: &str) {
        tracing::info!(event = "already_done", job = self.job, id, key);
        self.already_done += 1;
    }

    pub fn no_minutes(&mut self, id: &str) {
        tracing::info!(
            event = "no_minutes",
            job = self.job,
            id,
            "no billable minutes this month; nothing written"
        );
        self.no_minutes += 1;
        self.skips
            .push((id.to_owned(), "no robot minutes in the period".to_owned()));
    }

    /// 0 when everything went through, 1 when some items failed; a run a signal
    /// stopped exits 128 + the signal (130 for SIGINT, 143 for SIGTERM), as a shell
    /// would show it, and one stopped at its `--timeout` 124.
    pub fn exit_code(&self) -> u8 {
        match self.stopped {
            Some((StopReason::Signal(n), _)) => u8::try_from(128 + n).unwrap_or(255),
            Some((StopReason::Timeout, _)) => TIMED_OUT,
            None => u8::from(!self.failures.is_empty()),
        }
    }

    pub fn log_finished(&self, duration_ms: u64) {
        let mut ids: Vec<&str> = self.failures.iter().map(|(id, _)| id.as_str()).collect();
        ids.sort_unstable();
        let (not_started, abandoned) = self
            .stopped
            .map_or((0, 0), |(_, u)| (u.not_started, u.abandoned));
        tracing::info!(
            event = "run_finished",
            job = self.job,
            shard = self.shard,
            run_group = self.run_group,
            success = self.failures.is_empty() && self.stopped.is_none(),
            dry_run = self.dry_run,
            interrupted = self.stopped.is_some(),
            timed_out = matches!(self.stopped, Some((StopReason::Timeout, _))),
            not_started,
            abandoned,
            exit_code = self.exit_code(),
            total = self.total,
            done = self.done,
            would = self.would,
            already_done = self.already_done,
            no_minutes = self.no_minutes,
            skipped = self.skipped,
            failed = self.failures.len(),
            failed_ids = %ids.join(","),
            emailed = self.emailed,
            not_emailed = self.not_emailed,
            runs_in_progress = self.runs_in_progress,
            runs_unmeasured = self.runs_unmeasured,
            skipped_run = self.busy.is_some(),
            duration_ms
        );
    }
}
