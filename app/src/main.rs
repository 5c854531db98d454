//! `qbo-invoice-processor`: the monthly create-invoices and daily send-invoices jobs.
//! This file parses the command line, reads the configuration and runs one job; the
//! work lives in `jobs/`, the API clients in `api/`.

mod api;
mod clients;
mod config;
mod error;
mod jobs;
mod money;
mod report;
mod secrets;
mod state;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{ArgGroup, Parser};
use jiff::civil::Date;

use crate::clients::{Selection, Shard};
use crate::config::Config;
use crate::error::Error;
use crate::jobs::{Context, Stop, StopReason, Summary};
use tokio_util::task::TaskTracker;

/// Bills the practice's clients for robot minutes through QuickBooks Online.
///
/// Configuration comes from environment variables (QBO_SECRET_NAME, CLICKUP_SECRET_NAME,
/// ROBOCORP_API_SECRET_NAME, MSGRAPH_SECRET_NAME, DYNAMODB_TABLE_ROBOCORP_CLIENTS,
/// BOOKKEEPER_EMAIL, SENDER_EMAIL, EXCLUDED_CUSTOMERS, BILLING_TIMEZONE, ...; see the
/// README). Logs are JSON lines on stdout; the last is `run_finished`.
///
/// Exit codes: 0 all done, 1 some clients or invoices failed (the rest completed),
/// 2 bad configuration or usage, 3 fatal (auth, AWS or an API unreachable), 124 stopped
/// at --timeout, 130 or 143 stopped by SIGINT or SIGTERM (no new work started; work
/// under way had 25 s to finish; a rerun finishes the rest). --check exits 0 or 1, or 2
/// for usage (a flag it does not take, no AWS region).
// One flag per job (clap's group makes them exclusive) and --dry-run: plain switches.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Parser)]
#[command(name = "qbo-invoice-processor", version, max_term_width = 100)]
#[command(group(ArgGroup::new("job").required(true).args(["create_invoices", "send_invoices", "check_billed", "check"])))]
struct Cli {
    /// Monthly: robot minutes -> ClickUp time entry -> QBO invoice per client
    #[arg(long)]
    create_invoices: bool,
    /// Daily: send QBO invoices waiting to be sent, then email the bookkeeper a summary
    #[arg(long)]
    send_invoices: bool,
    /// Monthly, after the billing run: exit 1 (and so alert) when last month's (or
    /// --period's) --create-invoices has not finished, every shard. Reads only
    #[arg(long)]
    check_billed: bool,
    /// Check, without billing or sending, everything a run needs: the configuration,
    /// the four secrets and their keys, the client table and each item, a working API
    /// key per workspace, the QBO item and each client's customer and email, the
    /// ClickUp team and each task, a Graph token and the sender's mailbox. One `check`
    /// line each (ok, warn or fail, with the fix), then `run_finished`; exit 0 when
    /// nothing failed, else 1. Writes nothing, except that a QBO refresh token rotated
    /// on sign-in is saved to the QBO secret (or it would be lost)
    #[arg(long)]
    check: bool,
    /// Stop starting new work after this long (e.g. 2h, 90m); work under way gets 25 s
    /// to finish, `run_finished` says `timed_out: true`, and the exit code is 124. A
    /// rerun finishes the rest. Or JOB_TIMEOUT, through which a schedule's `timeout`
    /// sets it
    #[arg(long, env = "JOB_TIMEOUT", hide_env = true, value_name = "DURATION", value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// Show what would be created or sent; write nothing (a rotated QBO refresh token
    /// is still saved, or it would be lost)
    #[arg(long)]
    dry_run: bool,
    /// Only these client ids, e.g. 10001-10050 or 10007 (overrides LOWER_CLIENT_ID and
    /// UPPER_CLIENT_ID)
    #[arg(long, value_name = "FROM-TO", value_parser = parse_range)]
    clients: Option<(u64, u64)>,
    /// Bill this month instead of last month, e.g. 2026-10 (a finished month only; the
    /// current one with --dry-run)
    #[arg(long, value_name = "YYYY-MM", value_parser = parse_period)]
    period: Option<Date>,
    /// Take only shard K of N (clients whose id mod N is K-1), e.g. 2/4
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
    /// Clients billed (or invoices sent) at once; each service's own limits hold regardless
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// Where --send-invoices --dry-run writes the summary email it would send [default:
    /// sent_invoices_email.html in the temporary directory, $TMPDIR or /tmp: a task's root
    /// filesystem is read-only]
    #[arg(long, value_name = "FILE")]
    email_out: Option<std::path::PathBuf>,
    /// Where --create-invoices --dry-run writes the billing report it would send, its CSV
    /// beside it as .csv [default: billing_report.html in the temporary directory]
    #[arg(long, value_name = "FILE")]
    report_out: Option<std::path::PathBuf>,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("{s:?} is not a client range; write FROM-TO (e.g. 10001-10050) or one id");
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let (lo, hi) = (
        lo.trim().parse::<u64>().map_err(|_| bad())?,
        hi.trim().parse::<u64>().map_err(|_| bad())?,
    );
    if lo > hi {
        return Err(format!("{s:?} runs backwards; write the lower id first"));
    }
    Ok((lo, hi))
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration; write e.g. 90m, 2h or 1h30m");
    let d: jiff::SignedDuration = s.trim().parse().map_err(|_| bad())?;
    Duration::try_from(d)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(bad)
}

fn parse_period(s: &str) -> Result<Date, String> {
    Date::strptime("%Y-%m-%d", format!("{}-01", s.trim()))
        .ok()
        .filter(|d| (2000..=2100).contains(&d.year()))
        .ok_or_else(|| format!("{s:?} is not a month; write YYYY-MM, e.g. 2026-10"))
}

#[tokio::main]
async fn main() -> ExitCode {
    // The command reference, docs/reference/qbo-invoice-processor.md, is generated from these
    // definitions by this hidden flag; a test fails when the checked-in copy is stale.
    if std::env::args().nth(1).as_deref() == Some("--markdown-help") {
        let options = clap_markdown::MarkdownOptions::new()
            .title("`qbo-invoice-processor` command reference".to_owned())
            .show_footer(false);
        print!("{}", clap_markdown::help_markdown_custom::<Cli>(&options));
        return ExitCode::SUCCESS;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            report::init();
            let job = job_named_in(std::env::args());
            let _ = e.print();
            // The alarms read `run_finished`: a schedule with a wrong flag must show.
            tracing::error!(event = "run_failed", job, error = %e.kind(), "the command line is not valid");
            tracing::info!(
                event = "run_finished",
                job,
                success = false,
                // The alarms' filters count runs that are not dry runs: this one must show.
                dry_run = false,
                exit_code = 2,
                duration_ms = 0
            );
            return ExitCode::from(2);
        }
    };
    report::init();
    let job = if cli.create_invoices {
        "create-invoices"
    } else if cli.check_billed {
        "check-billed"
    } else if cli.check {
        "check"
    } else {
        "send-invoices"
    };
    let started = Instant::now();
    let stop = Stop::default();
    tokio::spawn(stop_on_signals(stop.clone()));
    if let Some(after) = cli.timeout {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            stop.ask(StopReason::Timeout);
        });
    }
    let critical = TaskTracker::new();
    // Boxed: the jobs' futures are large, and main's stack need not hold them.
    let result = Box::pin(run(&cli, &stop, &critical)).await;
    // A token refresh and its save may still be under way (the run failed or was
    // stopped while it ran): they finish before the process ends.
    critical.close();
    // With no signal nothing kills the process first: a save that is retrying gets its
    // time. After SIGTERM, ECS kills the container 30 s on.
    let bound = stop.deadline().map_or(Duration::from_mins(3), |d| {
        (d + Duration::from_secs(4)).saturating_duration_since(Instant::now())
    });
    if tokio::time::timeout(bound, critical.wait()).await.is_err() {
        tracing::error!(
            event = "critical_task_unfinished",
            "a QBO token refresh or its save did not finish in time; if QBO rejects the next run's token (invalid_grant), reconnect the app"
        );
    }
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(summary) => {
            summary.log_finished(ms);
            ExitCode::from(summary.exit_code())
        }
        Err(e) => {
            tracing::error!(event = "run_failed", job, error = %e);
            tracing::info!(
                event = "run_finished",
                job,
                shard = cli.shard.map(|s| format!("{}/{}", s.k, s.n)),
                run_group = std::env::var("RUN_GROUP").ok(),
                success = false,
                // A check writes nothing: like a dry run, no alarm counts it.
                dry_run = cli.dry_run || cli.check,
                interrupted = stop.reason().is_some(),
                timed_out = stop.reason() == Some(StopReason::Timeout),
                exit_code = e.exit_code(),
                duration_ms = ms
            );
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The job the arguments name, for the log line of a command line that did not parse.
fn job_named_in(args: impl Iterator<Item = String>) -> &'static str {
    let args: Vec<String> = args.collect();
    match (
        args.iter().any(|a| a == "--create-invoices"),
        args.iter().any(|a| a == "--send-invoices"),
        args.iter().any(|a| a == "--check-billed"),
        args.iter().any(|a| a == "--check"),
    ) {
        (true, false, false, false) => "create-invoices",
        (false, true, false, false) => "send-invoices",
        (false, false, true, false) => "check-billed",
        (false, false, false, true) => "check",
        _ => "unknown",
    }
}

/// SIGTERM (ECS StopTask, scale-in) or SIGINT (Ctrl-C) asks the run to stop.
async fn stop_on_signals(stop: Stop) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    let reason = tokio::select! {
        _ = term.recv() => StopReason::Signal(15),
        _ = int.recv() => StopReason::Signal(2),
    };
    stop.ask(reason);
}

async fn run(cli: &Cli, stop: &Stop, critical: &TaskTracker) -> Result<Summary, Error> {
    if cli.check {
        if cli.dry_run || cli.shard.is_some() || cli.clients.is_some() || cli.period.is_some() {
            return Err(Error::Usage(
                "--check reads everything a run needs and writes nothing; --dry-run, --shard, --clients and --period do not apply".into(),
                "leave them out of --check".into(),
            ));
        }
        let config = match Config::from_vars(|k| std::env::var(k).ok()) {
            Ok(config) => config,
            Err(problems) => return Ok(jobs::check::config_failed(&problems)),
        };
        let mut checks = jobs::check::Checks::new();
        let ctx = Context::load(config, stop.clone(), critical.clone()).await?;
        Box::pin(jobs::check::run(&ctx, &mut checks)).await;
        return Ok(checks.summary);
    }
    let mut config = Config::from_vars(|k| std::env::var(k).ok()).map_err(Error::Config)?;
    config.share = cli
        .shard
        .map_or(1, |s| u32::try_from(s.n).unwrap_or(u32::MAX));
    if cli.send_invoices {
        if cli.period.is_some() || cli.shard.is_some() || cli.clients.is_some() {
            return Err(Error::Usage(
                "--period, --shard and --clients choose clients to bill; --send-invoices sends every waiting invoice".into(),
                "leave them out of --send-invoices".into(),
            ));
        }
        config.check_send().map_err(Error::Config)?;
    }
    let selection = Selection {
        range: cli
            .clients
            .map_or(config.client_range, |(lo, hi)| (Some(lo), Some(hi))),
        shard: cli.shard,
    };
    if cli.check_billed && (cli.shard.is_some() || cli.clients.is_some() || cli.dry_run) {
        return Err(Error::Usage(
            "--check-billed reads the month's record only; --shard, --clients and --dry-run do not apply".into(),
            "leave them out of --check-billed (--period picks the month)".into(),
        ));
    }
    let ctx = Context::load(config, stop.clone(), critical.clone()).await?;
    if cli.check_billed {
        return Box::pin(jobs::create::check_billed(&ctx, cli.period)).await;
    }
    if cli.create_invoices {
        let opts = jobs::create::Options {
            dry_run: cli.dry_run,
            period: cli.period,
            selection,
            concurrency: usize::from(cli.concurrency),
            whole_month: cli.clients.is_none(),
            report_out: cli
                .report_out
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("billing_report.html")),
        };
        Box::pin(jobs::create::run(&ctx, &opts)).await
    } else {
        Box::pin(jobs::send::run(
            &ctx,
            cli.dry_run,
            &cli.email_out
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("sent_invoices_email.html")),
            usize::from(cli.concurrency),
        ))
        .await
    }
}
