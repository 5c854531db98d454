//! `deployer status`: each schedule with its next runs in its own time zone, the last
//! runs and their results (from the job's `run_finished` log lines), the image
//! deployed, and the alarms' states. Reads only.

use std::fmt::Write as _;

use aws_sdk_cloudwatch::types::AlarmType;
use infra::cron::Cron;
use infra::resources::{Kind, Spec};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::Value;

use crate::cli::{Cli, Format, StatusArgs};
use crate::error::Result;
use crate::output;
use crate::resources::{self, aws_error};

/// How far back `status` looks for finished runs: a monthly job's last run.
const HISTORY_DAYS: i64 = 35;

#[derive(Debug, Serialize)]
struct Status {
    environment: String,
    image: Option<String>,
    schedules: Vec<ScheduleStatus>,
    recent_runs: Vec<Run>,
    alarms: Vec<AlarmState>,
    /// The alert topic's subscriptions.
    alerts: Vec<Subscription>,
}

#[derive(Debug, Serialize)]
struct Subscription {
    endpoint: String,
    confirmed: bool,
}

#[derive(Debug, Serialize)]
struct ScheduleStatus {
    name: String,
    expression: String,
    timezone: String,
    enabled: bool,
    /// Local times, with their offset.
    next_runs: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Run {
    finished: String,
    job: String,
    success: bool,
    duration_ms: Option<u64>,
    summary: Value,
    /// The `run_finished` lines of the other shards of the same run (`run_group`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shards: Vec<Value>,
}

#[derive(Debug, Serialize)]
struct AlarmState {
    name: String,
    state: String,
}

pub async fn run(cli: &Cli, args: &StatusArgs) -> Result<()> {
    let env = super::load_environment(cli, &args.env)?;
    let aws = super::connect(cli, &env).await;
    let (ctx, _) = crate::resolve::context(&aws, &env, None, false, None).await?;
    let stack = infra::synthesize(&env, &ctx);
    let now = args.at.unwrap_or_else(Timestamp::now);

    let mut schedules = Vec::new();
    for r in stack
        .of_kind(Kind::Schedule)
        .chain(stack.of_kind(Kind::EventRule))
    {
        let Some(live) = resources::read(&aws, r).await? else {
            continue;
        };
        let (expression, timezone, enabled) = match live.spec {
            Spec::Schedule(s) => (s.expression, s.timezone, s.enabled),
            Spec::EventRule(rule) => match rule.schedule_expression {
                Some(e) => (e, "UTC".to_owned(), rule.enabled),
                None => continue,
            },
            _ => continue,
        };
        let next_runs = match (Cron::parse(&expression), TimeZone::get(&timezone)) {
            (Ok(cron), Ok(tz)) if enabled => cron
                .next_runs(&tz, now, 3)
                .iter()
                .map(|z| z.strftime("%Y-%m-%d %H:%M %Z (%:z)").to_string())
                .collect(),
            _ => Vec::new(),
        };
        schedules.push(ScheduleStatus {
            name: r.name.clone(),
            expression,
            timezone,
            enabled,
            next_runs,
        });
    }

    let status = Status {
        environment: env.name.clone(),
        image: resources::deployed_image(&aws, &env.file.task.family).await?,
        schedules,
        recent_runs: recent_runs(&aws, &env.file.logs.group, Timestamp::now()).await?,
        alarms: alarms(&aws, &env.file.app).await?,
        alerts: alert_subscriptions(&aws, &env).await?,
    };
    match args.output {
        Format::Json => output::json(&status)?,
        Format::Text => output::text(&text(&status))?,
    }
    super::report_calls(cli, &aws);
    Ok(())
}

/// The job's `run_finished` lines of the last weeks, newest first.
async fn recent_runs(aws: &crate::aws::Aws, group: &str, now: Timestamp) -> Result<Vec<Run>> {
    let since = now.as_millisecond() - HISTORY_DAYS * 86_400_000;
    let mut pages = aws
        .logs
        .filter_log_events()
        .log_group_name(group)
        .start_time(since)
        .filter_pattern(r#"{ $.event = "run_finished" }"#)
        .into_paginator()
        .send();
    let mut runs: Vec<Run> = Vec::new();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(e) if resources::code(&e) == Some("ResourceNotFoundException") => break,
            Err(e) => return Err(aws_error("read the runs in", group)(e)),
        };
        for event in page.events() {
            let Some(line) = event
                .message()
                .and_then(|m| serde_json::from_str::<Value>(m).ok())
            else {
                continue;
            };
            if line["event"] != "run_finished" {
                continue;
            }
            let finished = event
                .timestamp()
                .and_then(|ms| Timestamp::from_millisecond(ms).ok())
                .map(|t| t.to_string())
                .unwrap_or_default();
            // The shards of one run are one run: the last to finish stands for it.
            if let Some(group) = line["run_group"].as_str()
                && let Some(run) = runs
                    .iter_mut()
                    .find(|r| r.summary["run_group"].as_str() == Some(group))
            {
                run.success &= line["success"].as_bool().unwrap_or(false);
                run.duration_ms = run.duration_ms.max(line["duration_ms"].as_u64());
                if finished > run.finished {
                    run.finished = finished;
                }
                run.shards.push(line);
                continue;
            }
            runs.push(Run {
                finished,
                job: line["job"].as_str().unwrap_or("?").to_owned(),
                success: line["success"].as_bool().unwrap_or(false),
                duration_ms: line["duration_ms"].as_u64(),
                summary: line,
                shards: Vec::new(),
            });
        }
    }
    runs.sort_by(|a, b| b.finished.cmp(&a.finished));
    runs.truncate(10);
    Ok(runs)
}

async fn alarms(aws: &crate::aws::Aws, app: &str) -> Result<Vec<AlarmState>> {
    let out = aws
        .cloudwatch
        .describe_alarms()
        .alarm_name_prefix(format!("{app}-"))
        .alarm_types(AlarmType::MetricAlarm)
        .send()
        .await
        .map_err(aws_error("read the alarms of", app))?;
    Ok(out
        .metric_alarms()
        .iter()
        .map(|a| AlarmState {
            name: a.alarm_name().unwrap_or_default().to_owned(),
            state: a.state_value().map_or("UNKNOWN", |s| s.as_str()).to_owned(),
        })
        .collect())
}

fn text(s: &Status) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "Environment {}", s.environment);
    let _ = writeln!(
        t,
        "Image: {}",
        s.image
            .as_deref()
            .unwrap_or("(no task definition deployed)")
    );
    let _ = writeln!(t, "\nSchedules:");
    if s.schedules.is_empty() {
        let _ = writeln!(t, "  (none deployed)");
    }
    for sc in &s.schedules {
        let state = if sc.enabled { "" } else { "  (disabled)" };
        let _ = writeln!(t, "  {}  {} {}{state}", sc.name, sc.expression, sc.timezone);
        for run in &sc.next_runs {
            let _ = writeln!(t, "      next: {run}");
        }
    }
    let _ = writeln!(t, "\nLast runs ({HISTORY_DAYS} days):");
    if s.recent_runs.is_empty() {
        let _ = writeln!(t, "  (none)");
    }
    for r in &s.recent_runs {
        let result = if r.success { "ok    " } else { "FAILED" };
        let took = r.duration_ms.map_or_else(String::new, |ms| {
            format!(
                "  {:.1} min",
                f64::from(u32::try_from(ms).unwrap_or(u32::MAX)) / 60_000.0
            )
        });
        let shards = if r.shards.is_empty() {
            String::new()
        } else {
            format!("  ({} shards)", r.shards.len() + 1)
        };
        let _ = writeln!(t, "  {}  {:<16} {result}{took}{shards}", r.finished, r.job);
    }
    let _ = writeln!(t, "\nAlarms:");
    if s.alarms.is_empty() {
        let _ = writeln!(t, "  (none deployed)");
    }
    for a in &s.alarms {
        let _ = writeln!(t, "  {:<18} {}", a.state, a.name);
    }
    let _ = writeln!(t, "\nAlerts go to:");
    if s.alerts.is_empty() {
        let _ = writeln!(t, "  (no subscription: nobody hears of a failed run)");
    }
    for a in &s.alerts {
        let state = if a.confirmed {
            "confirmed"
        } else {
            "PENDING: open the confirmation email AWS sent (it lapses after 48 hours)"
        };
        let _ = writeln!(t, "  {}  {state}", a.endpoint);
    }
    t
}

async fn alert_subscriptions(
    aws: &crate::aws::Aws,
    env: &infra::Environment,
) -> Result<Vec<Subscription>> {
    let me = aws
        .sts
        .get_caller_identity()
        .send()
        .await
        .map_err(aws_error("identify the caller of", "STS"))?;
    let topic = format!(
        "arn:aws:sns:{}:{}:{}",
        env.file.region,
        me.account().unwrap_or_default(),
        env.file.alerts.topic
    );
    Ok(crate::resources::sns::subscriptions(aws, &topic)
        .await?
        .into_iter()
        .map(|(_, endpoint, arn)| Subscription {
            confirmed: arn.starts_with("arn:"),
            endpoint,
        })
        .collect())
}
