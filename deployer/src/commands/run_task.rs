//! `deployer run-task create|send`: start the job by hand with the network and command
//! the schedule uses, then (by default) wait for it while streaming its log lines and
//! exit with the container's own exit code. `--local` runs the binary here instead,
//! with the task definition's environment.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerOverride, KeyValuePair, LaunchType,
    NetworkConfiguration, PropagateTags, TaskOverride,
};
use infra::resources::{Kind, Spec};
use infra::stack::container_environment;

use super::logs::{Tail, readable, stream_name};
use crate::cli::{Cli, Job, RunTaskArgs};
use crate::error::{Error, Result};
use crate::resources::{self, aws_error};

/// How long `run-task` waits for a task to stop (the monthly job runs for hours).
const MAX_WAIT: Duration = Duration::from_hours(12);
const POLL: Duration = Duration::from_secs(2);

pub async fn run(cli: &Cli, args: &RunTaskArgs) -> Result<()> {
    let env = super::load_environment(cli, &args.env)?;
    let command = command(&env, args.job, &args.extra);
    if args.local {
        return local(&env, args, &command);
    }
    let aws = super::connect(cli, &env).await;
    let (ctx, _) = crate::resolve::context(&aws, &env, None, false, None).await?;
    let stack = infra::synthesize(&env, &ctx);
    let deployed = |kind: Kind| {
        stack
            .of_kind(kind)
            .next()
            .ok_or_else(|| Error::Internal(format!("the stack has no {kind}")))
    };
    let not_deployed = || {
        Error::Prerequisite(
            format!("{} is not deployed", env.name),
            format!("run `deployer up --env {}` first", env.name),
        )
    };
    let td = resources::read(&aws, deployed(Kind::TaskDefinition)?)
        .await?
        .and_then(|l| l.outputs.arn)
        .ok_or_else(not_deployed)?;
    let sg = resources::read(&aws, deployed(Kind::SecurityGroup)?)
        .await?
        .and_then(|l| l.outputs.id)
        .ok_or_else(not_deployed)?;
    let cluster = deployed(Kind::EcsCluster)?.arn.clone().unwrap_or_default();
    let container = &env.file.task.container;

    let shards = args.shards.max(1);
    if shards > 1 && args.job != Job::Create {
        return Err(Error::Prerequisite(
            "--shards splits create-invoices only".into(),
            "leave out --shards for send-invoices".into(),
        ));
    }
    // One name for the shards of this run, in their logs (`status` shows them as one).
    let group = (shards > 1).then(|| {
        format!(
            "{}-{}",
            args.job.name(),
            jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
        )
    });
    let mut tasks = Vec::new();
    for k in 1..=shards {
        let mut cmd = command.clone();
        if shards > 1 {
            cmd.extend(["--shard".to_owned(), format!("{k}/{shards}")]);
        }
        let out = aws
            .ecs
            .run_task()
            .cluster(&cluster)
            .task_definition(&td)
            .launch_type(LaunchType::Fargate)
            .count(1)
            .started_by("deployer")
            .propagate_tags(PropagateTags::TaskDefinition)
            .enable_ecs_managed_tags(true)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(resources::built(
                        AwsVpcConfiguration::builder()
                            .set_subnets(Some(ctx.subnets.clone()))
                            .security_groups(&sg)
                            .assign_public_ip(if env.file.network.assign_public_ip {
                                AssignPublicIp::Enabled
                            } else {
                                AssignPublicIp::Disabled
                            })
                            .build(),
                    )?)
                    .build(),
            )
            .overrides(
                TaskOverride::builder()
                    .container_overrides(
                        ContainerOverride::builder()
                            .name(container)
                            .set_command(Some(cmd))
                            .set_environment(group.as_ref().map(|g| {
                                vec![KeyValuePair::builder().name("RUN_GROUP").value(g).build()]
                            }))
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .map_err(aws_error("start a task in", &cluster))?;
        if let Some(f) = out.failures().first() {
            return Err(Error::TaskExit {
                code: 1,
                message: format!(
                    "the task did not start: {} {}",
                    f.reason().unwrap_or_default(),
                    f.detail().unwrap_or_default()
                ),
            });
        }
        tasks.extend(
            out.tasks()
                .iter()
                .filter_map(|t| t.task_arn().map(str::to_owned)),
        );
    }
    if args.no_wait {
        for arn in &tasks {
            println!("{arn}");
        }
        return Ok(());
    }
    wait(&aws, &env, &cluster, &tasks).await
}

/// The schedule's command for this job (so a hand run is the scheduled run), plus the
/// arguments given after `--`.
fn command(env: &infra::Environment, job: Job, extra: &[String]) -> Vec<String> {
    let flag = match job {
        Job::Create => "--create-invoices",
        Job::Send => "--send-invoices",
    };
    let mut cmd = env
        .file
        .schedules
        .job
        .iter()
        .find(|s| s.command.iter().any(|a| a == flag))
        .map_or_else(|| vec![flag.to_owned()], |s| s.command.clone());
    cmd.extend(extra.iter().cloned());
    cmd
}

/// Polls until every task stops, printing their log lines as they come, then turns
/// the first non-zero exit (or a task that never ran) into the command's result.
async fn wait(
    aws: &crate::aws::Aws,
    env: &infra::Environment,
    cluster: &str,
    tasks: &[String],
) -> Result<()> {
    let started = Instant::now();
    let container = &env.file.task.container;
    let from = jiff::Timestamp::now().as_millisecond() - 60_000;
    let mut tails: Vec<Tail> = tasks
        .iter()
        .map(|t| Tail::new(&env.file.logs.group, Some(stream_name(container, t)), from))
        .collect();
    let label = |i: usize| {
        if tasks.len() > 1 {
            format!("[{}/{}] ", i + 1, tasks.len())
        } else {
            String::new()
        }
    };
    loop {
        for (i, tail) in tails.iter_mut().enumerate() {
            for (ts, _, line) in tail.next_batch(aws).await? {
                println!("{}{}", label(i), readable(ts, &line));
            }
        }
        let out = aws
            .ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(tasks.to_vec()))
            .send()
            .await
            .map_err(aws_error("read tasks in", cluster))?;
        let stopped = out
            .tasks()
            .iter()
            .all(|t| t.last_status() == Some("STOPPED"));
        if stopped && out.tasks().len() == tasks.len() {
            // The last lines may land after the task stops being reported.
            for (i, tail) in tails.iter_mut().enumerate() {
                for (ts, _, line) in tail.next_batch(aws).await? {
                    println!("{}{}", label(i), readable(ts, &line));
                }
            }
            let mut results = BTreeMap::new();
            for t in out.tasks() {
                let arn = t.task_arn().unwrap_or_default().to_owned();
                let exit = t
                    .containers()
                    .iter()
                    .find(|c| c.name() == Some(container))
                    .and_then(aws_sdk_ecs::types::Container::exit_code);
                results.insert(
                    arn,
                    (exit, t.stopped_reason().unwrap_or_default().to_owned()),
                );
            }
            for (arn, (exit, reason)) in &results {
                eprintln!(
                    "task {arn} stopped: exit {}{}",
                    exit.map_or("none".into(), |c| c.to_string()),
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({reason})")
                    }
                );
            }
            return match results.values().find(|(exit, _)| *exit != Some(0)) {
                None => Ok(()),
                Some((Some(code), reason)) => Err(Error::TaskExit {
                    code: u8::try_from(*code).unwrap_or(1).max(1),
                    message: format!(
                        "the job exited with code {code}{}",
                        if reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {reason}")
                        }
                    ),
                }),
                Some((None, reason)) => Err(Error::TaskExit {
                    code: 1,
                    message: format!("the task stopped before the job ran: {reason}"),
                }),
            };
        }
        if started.elapsed() > MAX_WAIT {
            return Err(Error::TaskExit {
                code: 1,
                message: format!(
                    "still running after {} hours; see `deployer status` or `deployer logs --follow`",
                    MAX_WAIT.as_secs() / 3600
                ),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `--local`: the job binary on this machine, with exactly the task definition's
/// environment and command; AWS credentials come from this machine's chain.
fn local(env: &infra::Environment, args: &RunTaskArgs, command: &[String]) -> Result<()> {
    // The job built next to this deployer (same profile, same checkout), else a
    // release build of the checkout.
    let sibling = std::env::current_exe()
        .ok()
        .map(|d| d.with_file_name("qbo-invoice-processor"))
        .filter(|p| p.is_file());
    let binary = match (&args.binary, sibling) {
        (Some(b), _) => b.clone(),
        (None, Some(s)) => s,
        (None, None) => super::push_image::build_release_in_checkout()?,
    };
    let ctx = infra::Context::offline(env);
    let stack = infra::synthesize(env, &ctx);
    let environment = stack
        .of_kind(Kind::TaskDefinition)
        .find_map(|r| match &r.properties {
            Spec::TaskDefinition(td) => Some(td.container.environment.clone()),
            _ => None,
        })
        .unwrap_or_else(|| container_environment(env));
    let status = std::process::Command::new(&binary)
        .args(command)
        .envs(&environment)
        .status()
        .map_err(|e| {
            Error::Prerequisite(
                format!("cannot run {}: {e}", binary.display()),
                "pass --binary PATH to a built qbo-invoice-processor".into(),
            )
        })?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(Error::TaskExit {
            code: u8::try_from(code).unwrap_or(1),
            message: format!("the job exited with code {code}"),
        }),
        None => Err(Error::TaskExit {
            code: 1,
            message: "the job was killed by a signal".into(),
        }),
    }
}
