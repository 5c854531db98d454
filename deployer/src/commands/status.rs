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
pub struct Subscription {
    pub endpoint: String,
    pub confirmed: bool,
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
    /// A task that stopped without a `run_finished` line: why ECS says it stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    crashed: Option<String>,
    /// A task whose lines the log group no longer keeps: how it stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    lines_expired: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AlarmState {
    pub name: String,
    pub state: String,
}

pub async fn run(cli: &Cli, args: &StatusArgs) -> Result<()> {
    let env = super::shared::load_environment(cli, &args.env)?;
    let aws = super::shared::connect(cli, &env).await;
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
        image: resources::ecs::deployed_image(&aws, &env.file.task.family).await?,
        schedules,
        recent_runs: recent_runs(&aws, &env, Timestamp::now()).await?,
        alarms: alarms(&aws, &env.file.app).await?,
        alerts: alert_subscriptions(&aws, &env).await?,
    };
    match args.output {
        Format::Json => output::json(&status)?,
        Format::Text => output::text(&text(&status, &super::shared::zone(cli, &env)?))?,
    }
    super::shared::report_calls(cli, &aws);
    Ok(())
}

/// Every run of the last weeks, newest first: the job's `run_finished` lines, and the
/// tasks that stopped without writing one (killed, out of memory, never started), from
/// the stopped-task history the task-events rule writes.
async fn recent_runs(
    aws: &crate::aws::Aws,
    env: &infra::Environment,
    now: Timestamp,
) -> Result<Vec<Run>> {
    let since = now.as_millisecond() - HISTORY_DAYS * 86_400_000;
    let group = &env.file.logs.group;
    let finished = filter(aws, group, since, r#"{ $.event = "run_finished" }"#).await?;
    let events = infra::stack::names::task_events_group(&env.file.app);
    let stopped = filter(aws, &events, since, "").await?;
    Ok(runs_from(finished, stopped, env, now))
}

/// The runs from the job's `run_finished` lines and the stopped-task events, at `now`.
/// A task that stopped before the job's log group's retention began has lost its lines
/// (the task history keeps 400 days, the job's lines `logs.retention_days`): it is
/// shown as ended, with its exit code, not as crashed.
fn runs_from(
    finished: Vec<(i64, String, String)>,
    stopped_events: Vec<(i64, String, String)>,
    env: &infra::Environment,
    now: Timestamp,
) -> Vec<Run> {
    let horizon = now.as_millisecond() - i64::from(env.file.logs.retention_days) * 86_400_000;
    let mut runs: Vec<Run> = Vec::new();
    // The tasks that wrote a `run_finished` line (their log stream ends in the task id).
    let mut reported = std::collections::BTreeSet::new();
    for (ms, stream, message) in finished {
        let Ok(line) = serde_json::from_str::<Value>(&message) else {
            continue;
        };
        if line["event"] != "run_finished" {
            continue;
        }
        if let Some(id) = stream.rsplit('/').next() {
            reported.insert(id.to_owned());
        }
        let finished = Timestamp::from_millisecond(ms)
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
            crashed: None,
            lines_expired: None,
        });
    }
    for (ms, _, message) in stopped_events {
        let Ok(event) = serde_json::from_str::<Value>(&message) else {
            continue;
        };
        let d = &event["detail"];
        let Some(task) = d["taskArn"].as_str() else {
            continue;
        };
        let id = task.rsplit('/').next().unwrap_or(task);
        // ECS may send more than one STOPPED event for a task: one entry each.
        if !reported.insert(id.to_owned()) {
            continue;
        }
        let container = &env.file.task.container;
        let command: Vec<&str> = d["overrides"]["containerOverrides"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == container.as_str()))
            .and_then(|c| c["command"].as_array())
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let job = if command.contains(&"--create-invoices") {
            "create-invoices"
        } else if command.contains(&"--send-invoices") {
            "send-invoices"
        } else if command.contains(&"--check-billed") {
            "check-billed"
        } else if command.contains(&"--check") {
            "check"
        } else {
            "?"
        };
        let ours = d["containers"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == container.as_str()));
        let exit = ours.and_then(|c| c["exitCode"].as_i64());
        // The container's own reason too: an out-of-memory kill is told only there.
        let mut reason = [
            d["stopCode"].as_str(),
            d["stoppedReason"].as_str(),
            ours.and_then(|c| c["reason"].as_str()),
        ]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
        if let Some(code) = exit {
            reason = format!("exit {code}; {reason}");
        }
        let stopped_at = d["stoppedAt"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .or_else(|| Timestamp::from_millisecond(ms).ok());
        let stopped = stopped_at.map(|t| t.to_string()).unwrap_or_default();
        // Its lines were written before it stopped: past the retention, they are gone.
        let expired = stopped_at.is_some_and(|t| t.as_millisecond() < horizon);
        runs.push(Run {
            finished: stopped,
            job: job.to_owned(),
            // A task that exited 0 without a `run_finished` line still did not report;
            // one whose lines expired is known only by its exit code.
            success: expired && exit == Some(0),
            duration_ms: None,
            summary: serde_json::json!({"task": id, "command": command}),
            shards: Vec::new(),
            crashed: (!expired).then(|| {
                if reason.is_empty() {
                    "stopped without a run_finished line".to_owned()
                } else {
                    reason.clone()
                }
            }),
            lines_expired: expired.then(|| {
                format!(
                    "{reason}; its log lines are past the {}-day retention of {}",
                    env.file.logs.retention_days, env.file.logs.group
                )
            }),
        });
    }
    runs.sort_by(|a, b| b.finished.cmp(&a.finished));
    runs
}

/// `(timestamp, stream, message)` of every event in `group` since `since` matching
/// `pattern` (all with ""); a group that does not exist (yet) has none.
async fn filter(
    aws: &crate::aws::Aws,
    group: &str,
    since: i64,
    pattern: &str,
) -> Result<Vec<(i64, String, String)>> {
    let mut request = aws
        .logs
        .filter_log_events()
        .log_group_name(group)
        .start_time(since);
    if !pattern.is_empty() {
        request = request.filter_pattern(pattern);
    }
    let mut pages = request.into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(e) if resources::code(&e) == Some("ResourceNotFoundException") => break,
            Err(e) => return Err(aws_error("read the runs in", group)(e)),
        };
        for e in page.events() {
            out.push((
                e.timestamp().unwrap_or_default(),
                e.log_stream_name().unwrap_or_default().to_owned(),
                e.message().unwrap_or_default().to_owned(),
            ));
        }
    }
    Ok(out)
}

pub async fn alarms(aws: &crate::aws::Aws, app: &str) -> Result<Vec<AlarmState>> {
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

fn text(s: &Status, tz: &TimeZone) -> String {
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
    let _ = writeln!(
        t,
        "\nRuns of the last {HISTORY_DAYS} days ({}), newest first:",
        s.recent_runs.len()
    );
    if s.recent_runs.is_empty() {
        let _ = writeln!(t, "  (none)");
    }
    for r in &s.recent_runs {
        let when = r.finished.parse::<Timestamp>().map_or_else(
            |_| r.finished.clone(),
            |ts| super::shared::local_time(ts.as_millisecond(), tz),
        );
        // A run known only from its task's STOPPED event: crashed, or ended with its
        // lines gone.
        let stopped = r
            .crashed
            .as_ref()
            .map(|why| ("CRASHED", format!(" stopped without finishing: {why}")))
            .or_else(|| {
                r.lines_expired
                    .as_ref()
                    .map(|how| ("ENDED", format!(": {how}")))
            });
        if let Some((state, what)) = stopped {
            let _ = writeln!(
                t,
                "  {when}  {:<16} {state:<8} task {}{what}",
                r.job,
                r.summary["task"].as_str().unwrap_or("?")
            );
            continue;
        }
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
        let _ = writeln!(t, "  {when}  {:<16} {result}{took}{shards}", r.job);
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

pub async fn alert_subscriptions(
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
        "arn:{}:sns:{}:{}:{}",
        infra::context::partition(&env.file.region),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(
        id: &str,
        at: &str,
        command: &str,
        exit: i64,
        reason: Option<&str>,
    ) -> (i64, String, String) {
        let event = serde_json::json!({"detail": {
            "taskArn": format!("arn:aws:ecs:us-west-2:1:task/c/{id}"),
            "stoppedAt": at,
            "stopCode": "EssentialContainerExited",
            "stoppedReason": "Essential container in task exited",
            "overrides": {"containerOverrides": [{"name": "invoice-processor", "command": [command]}]},
            "containers": [{"name": "invoice-processor", "exitCode": exit, "reason": reason}],
        }});
        let ms = at.parse::<Timestamp>().unwrap().as_millisecond();
        (ms, "events".into(), event.to_string())
    }

    #[test]
    fn a_monthly_run_older_than_the_logs_retention_is_shown_ended_not_crashed() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/envs/prod.toml");
        let env = infra::Environment::load(&root).unwrap();
        assert_eq!(env.file.logs.retention_days, 30);
        let now: Timestamp = "2026-12-03T20:00:00Z".parse().unwrap();
        // Last month's run, 32 days ago: its lines are gone, its STOPPED event is not.
        let monthly = stopped("aaa", "2026-11-01T17:40:00Z", "--create-invoices", 0, None);
        // A crash two days ago, out of memory, and yesterday's send that finished.
        let crash = stopped(
            "bbb",
            "2026-12-01T13:02:00Z",
            "--send-invoices",
            137,
            Some("OutOfMemoryError: Container killed due to memory usage"),
        );
        let sent = stopped("ccc", "2026-12-02T13:01:00Z", "--send-invoices", 0, None);
        let line = serde_json::json!({"event": "run_finished", "job": "send-invoices", "success": true, "duration_ms": 60000});
        let finished = vec![(
            "2026-12-02T13:00:59Z"
                .parse::<Timestamp>()
                .unwrap()
                .as_millisecond(),
            "ecs/invoice-processor/ccc".to_owned(),
            line.to_string(),
        )];
        let runs = runs_from(finished, vec![monthly, crash, sent], &env, now);
        assert_eq!(runs.len(), 3, "{runs:#?}");
        let status = Status {
            environment: "prod".into(),
            image: None,
            schedules: Vec::new(),
            recent_runs: runs,
            alarms: Vec::new(),
            alerts: Vec::new(),
        };
        let tz = TimeZone::get("America/Los_Angeles").unwrap();
        let shown = text(&status, &tz);
        let row = |id: &str| {
            shown
                .lines()
                .find(|l| l.contains(id))
                .unwrap_or_default()
                .to_owned()
        };
        let monthly = row("task aaa");
        assert!(
            monthly.contains(" ENDED    task aaa: ")
                && monthly.contains("exit 0")
                && monthly.contains("past the 30-day retention"),
            "{shown}"
        );
        assert!(!monthly.contains("CRASHED"), "{shown}");
        assert!(
            row("task bbb").contains(" CRASHED  task bbb stopped without finishing: ")
                && row("task bbb").contains("OutOfMemoryError"),
            "{shown}"
        );
        assert_eq!(
            shown.matches("send-invoices").count(),
            2,
            "the finished send once, the crash once: {shown}"
        );
    }
}
