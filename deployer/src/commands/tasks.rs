//! `deployer tasks`: the job's running and recently stopped tasks (ECS keeps a stopped
//! task for about an hour: "stopped tasks appear in the returned results for at least
//! one hour", ListTasks), and `--stop ID` to stop one of them.

use std::fmt::Write as _;

use aws_sdk_ecs::types::DesiredStatus;
use serde::Serialize;

use super::run_task::{TaskState, stop_task};
use crate::cli::{Cli, Format, TasksArgs};
use crate::error::{Error, Result};
use crate::resources::aws_error;

#[derive(Debug, Serialize)]
struct Listing {
    environment: String,
    cluster: String,
    tasks: Vec<TaskState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stopping: Option<String>,
}

pub async fn run(cli: &Cli, args: &TasksArgs) -> Result<()> {
    let env = super::shared::load_environment(cli, &args.env)?;
    let aws = super::shared::connect(cli, &env).await;
    let cluster = env.file.cluster.name.clone();
    let tz = super::shared::zone(cli, &env)?;
    let mut tasks = list(&aws, &env, &cluster).await?;
    let mut stopping = None;
    if let Some(id) = &args.stop {
        // Only a task of this job: an id that names another family's task is refused.
        let Some(task) = tasks.iter().find(|t| t.id == *id || t.arn == *id).cloned() else {
            return Err(Error::Prerequisite(
                format!("no task {id} of {} in {cluster}", env.file.task.family),
                format!("`deployer tasks --env {}` lists them", env.name),
            ));
        };
        if task.status == "STOPPED" {
            return Err(Error::Prerequisite(
                format!("task {} has already stopped", task.id),
                "nothing to do".into(),
            ));
        }
        stop_task(
            &aws,
            &cluster,
            &task.arn,
            "stopped with deployer tasks --stop",
        )
        .await?;
        stopping = Some(task.id.clone());
        tasks = list(&aws, &env, &cluster).await?;
    }
    let out = Listing {
        environment: env.name.clone(),
        cluster,
        tasks,
        stopping,
    };
    match args.output {
        Format::Json => crate::output::json(&out)?,
        Format::Text => crate::output::text(&text(&out, &tz))?,
    }
    super::shared::report_calls(cli, &aws);
    Ok(())
}

/// The family's tasks, running first, then the stopped ones ECS still remembers, each
/// newest first.
pub async fn list(
    aws: &crate::aws::Aws,
    env: &infra::Environment,
    cluster: &str,
) -> Result<Vec<TaskState>> {
    let family = &env.file.task.family;
    let mut arns = Vec::new();
    for desired in [DesiredStatus::Running, DesiredStatus::Stopped] {
        let mut pages = aws
            .ecs
            .list_tasks()
            .cluster(cluster)
            .family(family)
            .desired_status(desired)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => arns.extend(page.task_arns().iter().cloned()),
                Err(e) if crate::resources::code(&e) == Some("ClusterNotFoundException") => {
                    return Ok(Vec::new());
                }
                Err(e) => return Err(aws_error("list the tasks of", cluster)(e)),
            }
        }
    }
    let mut tasks = Vec::new();
    // DescribeTasks takes up to 100 tasks a call (ECS API reference, DescribeTasks).
    for chunk in arns.chunks(100) {
        let out = aws
            .ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(aws_error("read tasks in", cluster))?;
        tasks.extend(
            out.tasks()
                .iter()
                .map(|t| TaskState::of(t, &env.file.task.container)),
        );
    }
    tasks.sort_by(|a, b| {
        (a.status == "STOPPED", &b.started_at).cmp(&(b.status == "STOPPED", &a.started_at))
    });
    tasks.dedup_by(|a, b| a.arn == b.arn);
    Ok(tasks)
}

fn text(t: &Listing, tz: &jiff::tz::TimeZone) -> String {
    let mut s = String::new();
    if let Some(id) = &t.stopping {
        let _ = writeln!(
            s,
            "Asked ECS to stop {id}: the job gets SIGTERM and gives what is under way 25 s (ECS kills it at 30 s).\n"
        );
    }
    let _ = writeln!(
        s,
        "Tasks of {} in {} (stopped ones for about an hour):",
        t.environment, t.cluster
    );
    if t.tasks.is_empty() {
        let _ = writeln!(s, "  (none)");
        return s;
    }
    let time = |v: &Option<String>| {
        v.as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or_else(
                || "-".to_owned(),
                |ts| super::shared::local_time(ts.as_millisecond(), tz),
            )
    };
    let _ = writeln!(
        s,
        "  {:<36}  {:<14}  {:<26}  {:<26}  JOB / RESULT",
        "TASK", "STATUS", "STARTED", "STOPPED"
    );
    for task in &t.tasks {
        let status = if task.desired == "STOPPED" && task.status != "STOPPED" {
            format!("{} (stopping)", task.status)
        } else {
            task.status.clone()
        };
        let mut result = task.command.join(" ");
        if task.status == "STOPPED" {
            let _ = write!(
                result,
                "  exit {}",
                task.exit_code.map_or("none".into(), |c| c.to_string())
            );
            if let Some(code) = &task.stop_code {
                let _ = write!(result, ", {code}");
            }
            if let Some(reason) = &task.stopped_reason {
                let _ = write!(result, ": {reason}");
            }
            if let Some(reason) = &task.container_reason {
                let _ = write!(result, "; container: {reason}");
            }
        }
        let _ = writeln!(
            s,
            "  {:<36}  {:<14}  {:<26}  {:<26}  {}",
            task.id,
            status,
            time(&task.started_at),
            time(&task.stopped_at),
            result.trim()
        );
    }
    s
}
