//! `deployer verify`: will the next run work? The deploy side (the image still in the
//! repository, roles and policies as synthesized, schedules enabled and on the current
//! revision, the rest of the stack as the file says, alerts confirmed, no alarm firing),
//! then the job's own read-only `--check` run as a real task with the task role (so
//! IAM is exercised for real) or, with `--local`, here. One table; exit 0 only when
//! nothing failed.

use std::io::BufRead as _;
use std::time::{Duration, Instant};

use infra::resources::{Kind, Spec};
use serde::Serialize;
use serde_json::Value;

use super::logs::{Tail, stream_name};
use super::run_task::{self, TaskState};
use crate::cli::{Cli, Format, Job, VerifyArgs};
use crate::engine::{self, Action};
use crate::error::{Error, Result};
use crate::resources::{self, aws_error};

/// How long the check task may take to start and finish: a Fargate start is about a
/// minute, and the check reads ClickUp once per task, at most 100 a minute on the
/// lowest plan (so a table of 3,000 clients takes about half an hour).
const TASK_LIMIT: Duration = Duration::from_mins(45);

/// How long the check's last lines may take to reach CloudWatch Logs after it stopped.
const LOG_WAIT: Duration = Duration::from_mins(1);

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub check: String,
    /// ok, warn (passes, worth knowing) or fail.
    pub status: String,
    pub detail: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

#[derive(Debug, Serialize)]
struct Report {
    environment: String,
    passed: bool,
    failed: usize,
    checks: Vec<Row>,
}

fn row(
    check: impl Into<String>,
    status: &str,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Row {
    Row {
        check: check.into(),
        status: status.to_owned(),
        detail: detail.into(),
        fix: fix.into(),
    }
}

pub async fn run(cli: &Cli, args: &VerifyArgs) -> Result<()> {
    let env = super::shared::load_environment(cli, &args.env)?;
    let aws = super::shared::connect(cli, &env).await;
    let mut rows = Vec::new();
    let up = format!("deployer up --env {}", env.name);

    // The image the task definition runs, still in the repository.
    let deployed = resources::ecs::deployed_image(&aws, &env.file.task.family).await?;
    match &deployed {
        None => rows.push(row(
            "image",
            "fail",
            "no task definition is deployed",
            up.clone(),
        )),
        Some(image) => rows.push(image_row(cli, &aws, &env, image).await?),
    }

    // The stack as synthesized, with the deployed image: roles and policies, schedules,
    // then everything else.
    let (ctx, _) = crate::resolve::context(&aws, &env, deployed.as_deref(), false, None).await?;
    let stack = infra::synthesize(&env, &ctx);
    let plan = engine::plan(&aws, &env, &stack, false).await?;
    let mut other = Vec::new();
    for step in &plan.steps {
        let what = step.id.to_string();
        let paths = || {
            step.changes
                .iter()
                .map(|c| c.path.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let schedule = matches!(step.id.kind, Kind::Schedule)
            || matches!(&step.resource.properties, Spec::EventRule(r) if r.schedule_expression.is_some());
        if step.id.kind == Kind::IamRole {
            rows.push(match step.action {
                Action::NoChange => row(what, "ok", "role and its policies as synthesized", ""),
                Action::Create => row(what, "fail", "the role does not exist", up.clone()),
                Action::Unowned => row(
                    what,
                    "fail",
                    "a role of that name exists without this environment's tags",
                    format!("{up} --adopt, after checking it"),
                ),
                _ => row(
                    what,
                    "fail",
                    format!("differs from the environment file: {}", paths()),
                    format!(
                        "`deployer diff --env {}` shows it; {up} restores it",
                        env.name
                    ),
                ),
            });
        } else if schedule {
            let live_enabled = match step.live.as_ref().map(|l| &l.spec) {
                Some(Spec::Schedule(s)) => Some(s.enabled),
                Some(Spec::EventRule(r)) => Some(r.enabled),
                _ => None,
            };
            let wanted = match &step.resource.properties {
                Spec::Schedule(s) => s.enabled,
                Spec::EventRule(r) => r.enabled,
                _ => true,
            };
            rows.push(match (step.action, live_enabled) {
                (Action::Create, _) | (_, None) => {
                    row(what, "fail", "the schedule does not exist", up.clone())
                }
                (Action::NoChange, Some(true)) => row(
                    what,
                    "ok",
                    "enabled, starting the current task-definition revision",
                    "",
                ),
                (Action::NoChange, Some(false)) => {
                    row(what, "warn", "disabled, as the environment file says", "")
                }
                (_, Some(enabled)) if wanted && !enabled => row(
                    what,
                    "fail",
                    "disabled in the account: it will not run",
                    up.clone(),
                ),
                _ if step
                    .changes
                    .iter()
                    .any(|c| c.path.contains("task_definition")) =>
                {
                    row(
                        what,
                        "fail",
                        "starts another task-definition revision than the current one",
                        up.clone(),
                    )
                }
                _ => row(
                    what,
                    "fail",
                    format!("differs from the environment file: {}", paths()),
                    up.clone(),
                ),
            });
        } else if step.action != Action::NoChange {
            other.push(format!("{what} ({})", step.action.symbol().trim()));
        }
    }
    rows.push(if other.is_empty() {
        row(
            "stack",
            "ok",
            format!(
                "{} resources as the environment file says",
                plan.steps.len()
            ),
            "",
        )
    } else {
        row(
            "stack",
            "fail",
            format!("differs from the environment file: {}", other.join(", ")),
            format!("`deployer diff --env {}` shows how; {up}", env.name),
        )
    });

    // Alerts reach someone, and nothing is firing now.
    let subscriptions = super::status::alert_subscriptions(&aws, &env).await?;
    if subscriptions.is_empty() {
        rows.push(row(
            "alerts",
            "fail",
            "the alert topic has no subscription: nobody hears of a failed run",
            up.clone(),
        ));
    }
    for s in &subscriptions {
        rows.push(if s.confirmed {
            row(format!("alerts:{}", s.endpoint), "ok", "subscription confirmed", "")
        } else {
            row(
                format!("alerts:{}", s.endpoint),
                "fail",
                "subscription pending: alerts are not delivered until it is confirmed",
                format!("open the email AWS sent to {} and confirm (it lapses after 48 hours; {up} sends a new one)", s.endpoint),
            )
        });
    }
    let alarms = super::status::alarms(&aws, &env.file.app).await?;
    let firing: Vec<&str> = alarms
        .iter()
        .filter(|a| a.state == "ALARM")
        .map(|a| a.name.as_str())
        .collect();
    rows.push(if firing.is_empty() {
        row("alarms", "ok", format!("none of {} in ALARM", alarms.len()), "")
    } else {
        row("alarms", "fail", format!("in ALARM: {}", firing.join(", ")), format!("see `deployer status --env {0}` and `deployer logs --env {0} --since 2d`; an alarm clears after a successful run", env.name))
    });

    // The job's own checks, with its real permissions (or this machine's, --local).
    let job = if args.local {
        local_check(&env, args.binary.as_deref())?
    } else {
        Box::pin(task_check(&aws, &env)).await?
    };
    rows.extend(job);

    let failed = rows.iter().filter(|r| r.status == "fail").count();
    let report = Report {
        environment: env.name.clone(),
        passed: failed == 0,
        failed,
        checks: rows,
    };
    match args.output {
        Format::Json => crate::output::json(&report)?,
        Format::Text => crate::output::text(&table(&report))?,
    }
    super::shared::report_calls(cli, &aws);
    if failed > 0 {
        return Err(Error::ChecksFailed(failed));
    }
    Ok(())
}

async fn image_row(
    cli: &Cli,
    aws: &crate::aws::Aws,
    env: &infra::Environment,
    image: &str,
) -> Result<Row> {
    let Some((_, digest)) = image.rsplit_once('@') else {
        return Ok(row(
            "image",
            "warn",
            format!("{image} is not pinned by digest"),
            "deploy with `deployer up` (it pins the digest)",
        ));
    };
    let held = match crate::deployed::holding(cli, aws, env, digest).await? {
        crate::deployed::Holding::Held => true,
        crate::deployed::Holding::Missing => false,
        crate::deployed::Holding::Unknown(why) => {
            return Ok(row(
                "image",
                "warn",
                format!("cannot reach the local registry to look for {digest}: {why}"),
                "start the registry, or pass --registry HOST:PORT",
            ));
        }
    };
    Ok(if held {
        row(
            "image",
            "ok",
            format!("{digest} is in repository {}", env.file.repository.name),
            "",
        )
    } else {
        row(
            "image",
            "fail",
            format!(
                "{digest}, which the task definition runs, is no longer in repository {}: tasks cannot pull it",
                env.file.repository.name
            ),
            format!(
                "push it again (`deployer push-image --env {0}`) and `deployer up --env {0}`",
                env.name
            ),
        )
    })
}

/// The job's `check` lines as rows, and a row for a run that did not finish its checks.
fn job_rows(lines: impl Iterator<Item = String>, how: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut finished = None;
    for line in lines {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        match v["event"].as_str() {
            Some("check") => rows.push(row(
                format!("job:{}", v["check"].as_str().unwrap_or("?")),
                v["status"].as_str().unwrap_or("fail"),
                v["detail"].as_str().unwrap_or_default(),
                v["fix"].as_str().unwrap_or_default(),
            )),
            Some("run_finished") => finished = Some(v),
            _ => {}
        }
    }
    match finished {
        Some(v) if v["job"] == "check" && v["exit_code"].as_u64().is_some_and(|c| c <= 1) => {}
        Some(v) => rows.push(row(
            "job",
            "fail",
            format!(
                "the job's check did not run: exit {} ({})",
                v["exit_code"],
                v.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("see its log lines")
            ),
            "an image older than --check cannot run it: push the current build and `deployer up`",
        )),
        None => rows.push(row(
            "job",
            "fail",
            format!("the job's check did not finish {how}"),
            "see the job's log lines (`deployer logs`)",
        )),
    }
    rows
}

fn local_check(env: &infra::Environment, binary: Option<&std::path::Path>) -> Result<Vec<Row>> {
    let (mut job, binary) = run_task::local_command(env, binary, &["--check".to_owned()])?;
    let out = job
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| run_task::cannot_run(&binary, &e))?;
    Ok(job_rows(
        out.stdout.lines().map_while(std::result::Result::ok),
        "on this machine",
    ))
}

/// The check's own deadline, inside [`TASK_LIMIT`] (it ends with its findings so far).
const CHECK_TIMEOUT: &str = "40m";

/// Runs `--check` as a task, as a schedule would start one, waits for it to stop and
/// reads its lines.
async fn task_check(aws: &crate::aws::Aws, env: &infra::Environment) -> Result<Vec<Row>> {
    let mut launch = run_task::command(env, Job::Check, &[]);
    launch
        .environment
        .insert("JOB_TIMEOUT".into(), CHECK_TIMEOUT.into());
    let (cluster, tasks) = match run_task::start(
        aws,
        env,
        Job::Check,
        &launch,
        1,
        infra::stack::VERIFY_STARTED_BY,
    )
    .await
    {
        Ok(started) => started,
        Err(e) => {
            return Ok(vec![row(
                "job",
                "fail",
                format!("the check task could not be started: {e}"),
                e.help().unwrap_or_else(|| {
                    "see the message; `deployer run-task` starts tasks the same way".into()
                }),
            )]);
        }
    };
    let Some(task) = tasks.first().cloned() else {
        return Ok(vec![row(
            "job",
            "fail",
            "ECS started no task",
            "see `deployer tasks`",
        )]);
    };
    eprintln!("started the check as task {task}; waiting for it to stop...");
    let began = Instant::now();
    let from = jiff::Timestamp::now().as_millisecond() - 60_000;
    let state = loop {
        let out = aws
            .ecs
            .describe_tasks()
            .cluster(&cluster)
            .tasks(&task)
            .send()
            .await
            .map_err(aws_error("read tasks in", &cluster))?;
        let state = out
            .tasks()
            .first()
            .map(|t| TaskState::of(t, &env.file.task.container));
        if let Some(s) = state.filter(|s| s.status == "STOPPED") {
            break s;
        }
        if began.elapsed() > TASK_LIMIT {
            // Not left running unwatched.
            let stopped = run_task::stop_task(
                aws,
                &cluster,
                &task,
                "deployer verify: the check took too long",
            )
            .await;
            return Ok(vec![row(
                "job",
                "fail",
                format!(
                    "the check task {task} had not stopped after {} minutes{}",
                    TASK_LIMIT.as_secs() / 60,
                    if stopped.is_ok() {
                        "; it was stopped"
                    } else {
                        "; stopping it failed"
                    }
                ),
                format!(
                    "see `deployer tasks --env {0}` and `deployer logs --env {0} --task ID`",
                    env.name
                ),
            )]);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    // The last lines may reach CloudWatch Logs after the task is reported stopped: read
    // until `run_finished` is among them, for up to a minute.
    let mut tail = Tail::new(
        &env.file.logs.group,
        Some(stream_name(&env.file.task.container, &task)),
        from,
    );
    let mut lines: Vec<String> = Vec::new();
    let read_since = Instant::now();
    loop {
        lines.extend(tail.next_batch(aws).await?.into_iter().map(|(_, _, l)| l));
        let finished = lines.iter().any(|l| l.contains("\"run_finished\""));
        if finished || state.exit_code.is_none() || read_since.elapsed() > LOG_WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut rows = job_rows(lines.into_iter(), &format!("in task {}", state.id));
    if state.exit_code.is_none() {
        rows.push(row(
            "job",
            "fail",
            format!(
                "the check task stopped before the job ran: {}",
                [state.stop_code.clone(), state.stopped_reason.clone(), state.container_reason.clone()].into_iter().flatten().collect::<Vec<_>>().join(": ")
            ),
            "a task that cannot start (image pull, secrets, network) fails the same way on schedule: see `deployer tasks`",
        ));
    }
    Ok(rows)
}

fn table(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let width = r
        .checks
        .iter()
        .map(|c| c.check.len())
        .max()
        .unwrap_or(5)
        .min(48);
    let _ = writeln!(s, "Verify {}:\n", r.environment);
    let _ = writeln!(s, "  {:<width$}  {:<6}  DETAIL", "CHECK", "RESULT");
    for c in &r.checks {
        let result = match c.status.as_str() {
            "ok" => "ok",
            "warn" => "warn",
            _ => "FAIL",
        };
        let _ = writeln!(s, "  {:<width$}  {result:<6}  {}", c.check, c.detail);
        if !c.fix.is_empty() && c.status != "ok" {
            let _ = writeln!(s, "  {:<width$}  {:<6}  fix: {}", "", "", c.fix);
        }
    }
    let _ = writeln!(
        s,
        "\n{}",
        if r.passed {
            format!("All {} checks passed.", r.checks.len())
        } else {
            format!("{} of {} checks failed.", r.failed, r.checks.len())
        }
    );
    s
}
