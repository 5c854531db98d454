//! `deployer run-task create|send`: start the job by hand with the network and command
//! the schedule uses, then (by default) wait for it while streaming its log lines and
//! exit with the container's own exit code. `--local` runs the binary here instead,
//! with the task definition's environment.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use serde::Serialize;

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerOverride, KeyValuePair, LaunchType,
    NetworkConfiguration, PropagateTags, TaskOverride,
};
use infra::resources::{Kind, Spec};
use infra::stack::container_environment;

use super::logs::{Tail, readable, stream_name};
use crate::cli::{Cli, Format, Job, OnInterrupt, RunTaskArgs};
use crate::error::{Error, Result};
use crate::resources::{self, aws_error};

/// How long `run-task` waits for a task to stop (the monthly job runs for hours).
const MAX_WAIT: Duration = Duration::from_hours(12);
const POLL: Duration = Duration::from_secs(2);

pub async fn run(cli: &Cli, args: &RunTaskArgs) -> Result<()> {
    let env = super::shared::load_environment(cli, &args.env)?;
    let launch = command(&env, args.job, &args.extra);
    // From here Ctrl-C is ours: it no longer kills the deployer half-way (a task started
    // and not reported, or the local job's output cut off).
    let (interrupt, mut interrupts) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if interrupt.send(()).is_err() {
                break;
            }
        }
    });
    if args.local {
        // The job, in the same process group, gets the terminal's SIGINT itself and stops
        // as it does on ECS; its exit code (130) is ours.
        return local(cli, &env, args, &launch);
    }
    let aws = super::shared::connect(cli, &env).await;
    if args.shards > 1 && args.job != Job::Create {
        return Err(Error::Prerequisite(
            "--shards splits create-invoices only".into(),
            "leave out --shards for send-invoices".into(),
        ));
    }
    // Starting is a few RunTask calls: a Ctrl-C meanwhile is answered once they are made
    // and every started task is known.
    let (cluster, tasks) = start(&aws, &env, args.job, &launch, args.shards, "deployer").await?;
    if interrupts.try_recv().is_ok() && !args.no_wait {
        return interrupted(
            &aws,
            &env,
            &cluster,
            &tasks,
            args.on_interrupt,
            &mut interrupts,
        )
        .await;
    }
    if args.no_wait {
        if args.output == Format::Json {
            crate::output::json(&serde_json::json!({ "tasks": tasks }))?;
        } else {
            for arn in &tasks {
                println!("{arn}");
            }
        }
        return Ok(());
    }
    let printer = Printer {
        json: args.output == Format::Json,
        tz: super::shared::zone(cli, &env)?,
        labels: tasks.len() > 1,
    };
    let watching = watch(&aws, &env, &cluster, &tasks, &printer);
    tokio::select! {
        result = watching => result,
        _ = interrupts.recv() => {
            interrupted(&aws, &env, &cluster, &tasks, args.on_interrupt, &mut interrupts).await
        }
    }
}

/// Starts the job's task(s) as its schedule would: the deployed task definition, the
/// schedule's network, `command` and size; `shards` tasks of create-invoices, task K
/// running `--shard K/N`. Returns the cluster and the task ARNs.
pub async fn start(
    aws: &crate::aws::Aws,
    env: &infra::Environment,
    job: Job,
    launch: &Launch,
    shards: u32,
    started_by: &str,
) -> Result<(String, Vec<String>)> {
    let (command, size) = (&launch.command, launch.size);
    let (ctx, _) = crate::resolve::context(aws, env, None, false, None).await?;
    let stack = infra::synthesize(env, &ctx);
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
    let td = resources::read(aws, deployed(Kind::TaskDefinition)?)
        .await?
        .and_then(|l| l.outputs.arn)
        .ok_or_else(not_deployed)?;
    let sg = resources::read(aws, deployed(Kind::SecurityGroup)?)
        .await?
        .and_then(|l| l.outputs.id)
        .ok_or_else(not_deployed)?;
    let cluster = deployed(Kind::EcsCluster)?.arn.clone().unwrap_or_default();
    let container = &env.file.task.container;

    let shards = shards.max(1);
    // One name for the shards of this run, in their logs (`status` shows them as one).
    let group = (shards > 1).then(|| {
        format!(
            "{}-{}",
            job.name(),
            jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
        )
    });
    let mut tasks = Vec::new();
    for k in 1..=shards {
        let mut cmd = command.clone();
        if shards > 1 {
            cmd.extend(["--shard".to_owned(), format!("{k}/{shards}")]);
        }
        let request = aws
            .ecs
            .run_task()
            .cluster(&cluster)
            .task_definition(&td)
            .launch_type(LaunchType::Fargate)
            .count(1)
            .started_by(started_by)
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
                    // The schedule's own size, as its input gives it.
                    .set_cpu(size.map(|(cpu, _)| cpu.to_string()))
                    .set_memory(size.map(|(_, memory)| memory.to_string()))
                    .container_overrides(
                        ContainerOverride::builder()
                            .name(container)
                            // The container's limit follows the task's size (see
                            // `EcsTarget::input`).
                            .set_memory(size.and_then(|(_, m)| i32::try_from(m).ok()))
                            .set_command(Some(cmd))
                            .set_environment(Some(
                                launch
                                    .environment
                                    .iter()
                                    .map(|(k, v)| (k.as_str(), v.as_str()))
                                    .chain(group.as_deref().map(|g| ("RUN_GROUP", g)))
                                    .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
                                    .collect(),
                            ))
                            .build(),
                    )
                    .build(),
            );
        let out = start_once_visible(request, &cluster).await?;
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
    Ok((cluster, tasks))
}

/// How a hand run starts, as the job's schedule starts it.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The schedule's command, plus the arguments given after `--`.
    pub command: Vec<String>,
    /// The schedule's own task size.
    pub size: Option<(u32, u32)>,
    /// The variables the schedule adds (its `JOB_TIMEOUT`; a `--timeout` after `--`
    /// wins over it, as a flag wins over its variable).
    pub environment: BTreeMap<String, String>,
}

/// The schedule's launch for this job, so a hand run is the scheduled run.
pub fn command(env: &infra::Environment, job: Job, extra: &[String]) -> Launch {
    let flag = job.flag();
    let schedule = env
        .file
        .schedules
        .job
        .iter()
        .find(|s| s.command.iter().any(|a| a == flag));
    let mut command = schedule.map_or_else(|| vec![flag.to_owned()], |s| s.command.clone());
    command.extend(extra.iter().cloned());
    Launch {
        command,
        size: schedule
            .filter(|s| s.cpu.is_some() || s.memory.is_some())
            .map(|s| s.size(&env.file.task)),
        environment: schedule
            .map(infra::env::ScheduleConfig::environment)
            .unwrap_or_default(),
    }
}

/// What `run-task` prints while it waits: the job's lines, and each task's state changes.
struct Printer {
    json: bool,
    tz: jiff::tz::TimeZone,
    labels: bool,
}

impl Printer {
    fn line(&self, i: usize, n: usize, ts: i64, line: &str) {
        if self.json {
            println!("{}", line.trim_end());
        } else if self.labels {
            println!("[{}/{n}] {}", i + 1, readable(ts, line, &self.tz));
        } else {
            println!("{}", readable(ts, line, &self.tz));
        }
    }

    /// A state change, on stderr as text (stdout keeps the job's lines), or as a JSON
    /// line among them.
    fn state(&self, task: &TaskState) {
        let now = jiff::Timestamp::now().as_millisecond();
        if self.json {
            let mut v = serde_json::to_value(task).unwrap_or_default();
            v["event"] = serde_json::Value::from("task_state");
            println!("{v}");
            return;
        }
        let mut text = format!(
            "{}  task {}  {}",
            super::shared::local_time(now, &self.tz),
            task.id,
            task.status
        );
        if task.status == "STOPPED" {
            let _ = write!(
                text,
                ": exit {}",
                task.exit_code.map_or("none".into(), |c| c.to_string())
            );
            if let Some(code) = &task.stop_code {
                let _ = write!(text, ", {code}");
            }
            if let Some(reason) = &task.stopped_reason {
                let _ = write!(text, " ({reason})");
            }
            if let Some(reason) = &task.container_reason {
                let _ = write!(text, "; container: {reason}");
            }
        }
        eprintln!("{text}");
    }
}

/// One task as `run-task` and `tasks` show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TaskState {
    pub id: String,
    pub arn: String,
    pub status: String,
    pub desired: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    /// The job container's own reason: ECS tells an out-of-memory kill only here
    /// ("OutOfMemoryError: Container killed due to memory usage"; the task says only
    /// "Essential container in task exited").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_reason: Option<String>,
    /// The job flags the task runs with (its command override).
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
}

impl TaskState {
    pub fn of(t: &aws_sdk_ecs::types::Task, container: &str) -> Self {
        let arn = t.task_arn().unwrap_or_default().to_owned();
        let id = arn.rsplit('/').next().unwrap_or_default().to_owned();
        let time = |d: Option<&aws_sdk_ecs::primitives::DateTime>| {
            d.and_then(|d| jiff::Timestamp::from_second(d.secs()).ok())
                .map(|t| t.to_string())
        };
        Self {
            id,
            arn,
            status: t.last_status().unwrap_or("UNKNOWN").to_owned(),
            desired: t.desired_status().unwrap_or_default().to_owned(),
            exit_code: t
                .containers()
                .iter()
                .find(|c| c.name() == Some(container))
                .and_then(aws_sdk_ecs::types::Container::exit_code),
            container_reason: t
                .containers()
                .iter()
                .find(|c| c.name() == Some(container))
                .and_then(aws_sdk_ecs::types::Container::reason)
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
            stop_code: t.stop_code().map(|c| c.as_str().to_owned()),
            stopped_reason: t
                .stopped_reason()
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
            command: t
                .overrides()
                .and_then(|o| {
                    o.container_overrides()
                        .iter()
                        .find(|c| c.name() == Some(container))
                })
                .map(|c| c.command().to_vec())
                .unwrap_or_default(),
            started_at: time(t.started_at()),
            stopped_at: time(t.stopped_at()),
            started_by: t.started_by().map(str::to_owned),
        }
    }
}

/// Polls until every task stops, printing their log lines and state changes as they
/// come, then turns the first non-zero exit (or a task that never ran) into the
/// command's result.
async fn watch(
    aws: &crate::aws::Aws,
    env: &infra::Environment,
    cluster: &str,
    tasks: &[String],
    printer: &Printer,
) -> Result<()> {
    let started = Instant::now();
    let container = &env.file.task.container;
    let from = jiff::Timestamp::now().as_millisecond() - 60_000;
    let mut tails: Vec<Tail> = tasks
        .iter()
        .map(|t| Tail::new(&env.file.logs.group, Some(stream_name(container, t)), from))
        .collect();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    loop {
        for (i, tail) in tails.iter_mut().enumerate() {
            for (ts, _, line) in tail.next_batch(aws).await? {
                printer.line(i, tasks.len(), ts, &line);
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
        let states: Vec<TaskState> = out
            .tasks()
            .iter()
            .map(|t| TaskState::of(t, container))
            .collect();
        for t in &states {
            if seen.get(&t.arn) != Some(&t.status) {
                seen.insert(t.arn.clone(), t.status.clone());
                printer.state(t);
            }
        }
        let stopped = states.iter().all(|t| t.status == "STOPPED");
        if stopped && states.len() == tasks.len() {
            // The last lines may land after the task stops being reported.
            for (i, tail) in tails.iter_mut().enumerate() {
                for (ts, _, line) in tail.next_batch(aws).await? {
                    printer.line(i, tasks.len(), ts, &line);
                }
            }
            return match states.iter().find(|t| t.exit_code != Some(0)) {
                None => Ok(()),
                Some(t) => {
                    let why = [
                        t.stop_code.clone(),
                        t.stopped_reason.clone(),
                        t.container_reason.clone(),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ");
                    let why = if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({why})")
                    };
                    Err(match t.exit_code {
                        Some(code) => Error::TaskExit {
                            code: u8::try_from(code).unwrap_or(1).max(1),
                            message: format!("task {}: the job exited with code {code}{why}", t.id),
                        },
                        None => Error::TaskExit {
                            code: 1,
                            message: format!(
                                "task {}: stopped before the job ran or finished{why}",
                                t.id
                            ),
                        },
                    })
                }
            };
        }
        if started.elapsed() > MAX_WAIT {
            return Err(Error::TaskExit {
                code: 1,
                message: format!(
                    "still running after {} hours; see `deployer tasks` or `deployer logs --follow`",
                    MAX_WAIT.as_secs() / 3600
                ),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ctrl-C during the wait: stop the tasks (asked, or by `--on-interrupt stop`) or leave
/// them, then exit 130 either way.
async fn interrupted(
    aws: &crate::aws::Aws,
    env: &infra::Environment,
    cluster: &str,
    tasks: &[String],
    on_interrupt: OnInterrupt,
    interrupts: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
) -> Result<()> {
    let ids: Vec<&str> = tasks
        .iter()
        .map(|t| t.rsplit('/').next().unwrap_or(t))
        .collect();
    let stop = match on_interrupt {
        OnInterrupt::Stop => true,
        OnInterrupt::Ask if std::io::stdin().is_terminal() => {
            let question = format!(
                "\nStop the task{} ({})? The job gives what is under way 25 s (ECS kills it at 30 s)",
                if ids.len() > 1 { "s" } else { "" },
                ids.join(", ")
            );
            let asked = tokio::task::spawn_blocking(move || super::shared::confirm(&question));
            tokio::select! {
                answer = asked => matches!(answer, Ok(Ok(()))),
                _ = interrupts.recv() => {
                    // A second Ctrl-C while asking leaves the tasks as they are, at once:
                    // the thread reading the answer cannot be stopped, so neither
                    // waited for.
                    eprintln!(
                        "\nleft running: {}; stop with `deployer tasks --env {} --stop ID`",
                        ids.join(", "),
                        env.name
                    );
                    std::process::exit(130);
                }
            }
        }
        // With no terminal to ask on, nothing is stopped unasked.
        OnInterrupt::Ask | OnInterrupt::Leave => false,
    };
    if stop {
        // Every task is asked, whatever the others' answers; each failure is named.
        for (t, id) in tasks.iter().zip(&ids) {
            match stop_task(aws, cluster, t, "interrupted in deployer run-task").await {
                Ok(()) => eprintln!("asked ECS to stop {id}"),
                Err(e) => eprintln!(
                    "could not stop {id}: {e}; stop it with `deployer tasks --env {} --stop {id}`",
                    env.name
                ),
            }
        }
        eprintln!("see `deployer tasks --env {}`", env.name);
    } else {
        eprintln!(
            "left running: {}; stop with `deployer tasks --env {} --stop ID`, follow with `deployer logs --env {} --follow`",
            ids.join(", "),
            env.name,
            env.name
        );
    }
    Err(Error::Interrupted)
}

/// ECS StopTask: the container gets SIGTERM, then SIGKILL 30 s later (its stopTimeout).
pub async fn stop_task(
    aws: &crate::aws::Aws,
    cluster: &str,
    task: &str,
    reason: &str,
) -> Result<()> {
    aws.ecs
        .stop_task()
        .cluster(cluster)
        .task(task)
        .reason(reason)
        .send()
        .await
        .map_err(aws_error("stop task", task))?;
    Ok(())
}

/// The job binary on this machine with exactly the task definition's environment (built
/// offline from the environment file) and `command`: the one given, else the one built
/// next to this deployer (same profile, same checkout), else a release build of the
/// checkout. AWS credentials come from this machine's chain.
pub fn local_command(
    env: &infra::Environment,
    binary: Option<&std::path::Path>,
    command: &[String],
) -> Result<(std::process::Command, std::path::PathBuf)> {
    let sibling = std::env::current_exe()
        .ok()
        .map(|d| d.with_file_name("qbo-invoice-processor"))
        .filter(|p| p.is_file());
    let binary = match (binary, sibling) {
        (Some(b), _) => b.to_path_buf(),
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
    let mut c = std::process::Command::new(&binary);
    c.args(command).envs(&environment);
    Ok((c, binary))
}

pub fn cannot_run(binary: &std::path::Path, e: &std::io::Error) -> Error {
    Error::Prerequisite(
        format!("cannot run {}: {e}", binary.display()),
        "pass --binary PATH to a built qbo-invoice-processor".into(),
    )
}

/// `--local`: the job binary on this machine, with exactly the task definition's
/// environment and command; AWS credentials come from this machine's chain.
fn local(cli: &Cli, env: &infra::Environment, args: &RunTaskArgs, launch: &Launch) -> Result<()> {
    // On a terminal, the job's JSON lines are shown as `logs` shows them; piped or
    // with --output json, as the job wrote them.
    let readable_lines = args.output == Format::Text && std::io::stdout().is_terminal();
    let tz = super::shared::zone(cli, env)?;
    let (mut job, binary) = local_command(env, args.binary.as_deref(), &launch.command)?;
    job.envs(&launch.environment);
    let mut child = job
        .stdout(if readable_lines {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::inherit()
        })
        .spawn()
        .map_err(|e| cannot_run(&binary, &e))?;
    if let Some(out) = child.stdout.take() {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            let ts = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["timestamp"].as_str()?.parse::<jiff::Timestamp>().ok())
                .unwrap_or_else(jiff::Timestamp::now)
                .as_millisecond();
            println!("{}", readable(ts, &line, &tz));
        }
    }
    let status = child.wait()?;
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

/// How long a task's start waits for a security group `up` just made to be visible to
/// ECS (EC2 and ECS are eventually consistent: "Eventual consistency in the Amazon EC2
/// API"; ECS API reference, RunTask).
const GROUP_VISIBLE: Duration = Duration::from_mins(1);

/// Starts the task, retrying (with backoff, for up to `GROUP_VISIBLE`) only while ECS
/// does not see the security group yet; a refused start started nothing, so the retry
/// cannot start a second task (and each attempt carries its own client token, which the
/// SDK's own retries of a lost answer keep).
async fn start_once_visible(
    request: aws_sdk_ecs::operation::run_task::builders::RunTaskFluentBuilder,
    cluster: &str,
) -> Result<aws_sdk_ecs::operation::run_task::RunTaskOutput> {
    let deadline = Instant::now() + GROUP_VISIBLE;
    let mut wait = Duration::from_secs(1);
    let mut told = false;
    loop {
        match request
            .clone()
            .send()
            .await
            .map_err(aws_error("start a task in", cluster))
        {
            Err(e) if e.is_group_not_yet_visible() && Instant::now() + wait < deadline => {
                if !told {
                    eprintln!(
                        "waiting: ECS does not see the tasks' security group yet (AWS shows a new group everywhere within moments); retrying"
                    );
                    told = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(8));
            }
            other => return other,
        }
    }
}
