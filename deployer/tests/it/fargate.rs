//! Tasks that run for real: the local Fargate (`fakes::fargate`, behind the AWS proxy in
//! front of moto) runs the pushed image under runc with the task definition's rules.
//! README step 8's first run as a task, and an image that cannot be pulled, each read
//! back the way an operator reads them.

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use fakes::emulators::{Moto, Registry};
use fakes::fargate::Fargate;
use fakes::fault_proxy::{FaultProxy, Options};
use fakes::generate::TABLE;
use fakes::server::Fakes;
use serde_json::Value;

use super::{moto_config, stderr, stdout};

/// moto behind a proxy that runs tasks, the registry with the job's image, the fakes,
/// and the stack deployed with that image.
pub(super) struct World {
    pub(super) proxy: FaultProxy,
    pub(super) fargate: Arc<Fargate>,
    registry: Registry,
    moto: Moto,
    pub(super) fakes: Fakes,
    pub(super) dir: tempfile::TempDir,
    /// The IAM user the deployer signs as (`None`: moto's `testing` key, the root).
    pub(super) key: Option<super::iam::Granted>,
}

impl World {
    pub(super) fn deployer(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub(super) fn command(&self, args: &[&str]) -> std::process::Command {
        let mut all = vec!["--env-dir", self.dir.path().to_str().unwrap()];
        all.extend_from_slice(args);
        let mut c = super::deployer_command(Some(&self.proxy.endpoint()));
        c.args(&all).env("DEPLOYER_REGISTRY", self.registry.host());
        if let Some(user) = &self.key {
            c.env("AWS_ACCESS_KEY_ID", &user.id)
                .env("AWS_SECRET_ACCESS_KEY", &user.secret);
        }
        c
    }

    /// `run-task JOB -- --dry-run` as JSON lines, passed: its output.
    fn dry_run(&self, job: &str) -> String {
        let run = self.deployer(&[
            "run-task",
            job,
            "--env",
            "local",
            "--output",
            "json",
            "--",
            "--dry-run",
        ]);
        let out = stdout(&run);
        assert!(
            run.status.success(),
            "exit {:?}\n{out}\n{}",
            run.status.code(),
            stderr(&run)
        );
        out
    }

    /// Pushes an image whose program is perl (to print, allocate and trap signals at
    /// will) and returns its reference.
    pub(super) fn perl_image(&self) -> String {
        let pushed = self.deployer(&[
            "push-image",
            "--env",
            "local",
            "--binary",
            "/usr/bin/perl",
            "--tag",
            "probe",
            "--output",
            "json",
        ]);
        assert!(pushed.status.success(), "{}", stderr(&pushed));
        serde_json::from_slice::<Value>(&pushed.stdout).unwrap()["image"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The alarm notifications delivered so far: each message, parsed.
    fn alarm_messages(&self) -> Vec<Value> {
        self.fargate
            .delivered()
            .into_iter()
            .filter(|(target, _)| target.ends_with(":qbo-invoice-processor-alerts"))
            .filter_map(|(_, got)| serde_json::from_str::<Value>(&got.ok()?).ok())
            .filter(|m| m.get("AlarmName").is_some())
            .collect()
    }
}

async fn world() -> World {
    world_with(|_| {}).await
}

async fn world_with(tune: impl FnOnce(&mut fakes::generate::Month)) -> World {
    world_as(tune, None).await
}

/// The world, its image pushed and its stack deployed by `user` (made here, holding
/// exactly what `deployer policy` prints for the environment) or by the root.
pub(super) async fn world_as(
    tune: impl FnOnce(&mut fakes::generate::Month),
    user: Option<&str>,
) -> World {
    let moto = Moto::start().unwrap();
    let registry = Registry::start().unwrap();
    let mut month = fakes::generate::month(12, 2026, 10);
    month.remove_broken();
    tune(&mut month);
    let fakes = Fakes::start(&month.seed).await.unwrap();
    let config = moto_config(&moto.endpoint()).await;
    fakes::aws_seed::seed(&config, &month, TABLE).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(super::root().join("infra/envs/local.toml")).unwrap();
    let port = fakes.url().rsplit(':').next().unwrap().to_owned();
    std::fs::write(
        dir.path().join("local.toml"),
        shipped
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
            .replace("127.0.0.1:5000", &registry.host())
            // The fakes end a request within seconds (QBO's 120 s is the default): a
            // stopped run's lease then lasts seconds too.
            .replace(
                "ROBOCORP_BASE_URL =",
                "WRITE_SETTLE_SECONDS = \"5\"\nROBOCORP_BASE_URL =",
            ),
    )
    .unwrap();
    let fargate = Fargate::new(&moto.endpoint(), "us-east-1").expect("runc (make tools)");
    let proxy = FaultProxy::with(
        moto.addr(),
        Options {
            fargate: Some(Arc::clone(&fargate)),
            ..Options::default()
        },
    )
    .unwrap();
    let key = match user {
        Some(user) => Some(
            super::iam::grant_printed_policy(
                &proxy.endpoint(),
                &["--env-dir", dir.path().to_str().unwrap(), "--env", "local"],
                user,
            )
            .await,
        ),
        None => None,
    };
    let w = World {
        proxy,
        fargate,
        registry,
        moto,
        fakes,
        dir,
        key,
    };
    let binary = super::image::job_binary();
    let pushed = w.deployer(&[
        "push-image",
        "--env",
        "local",
        "--binary",
        binary.to_str().unwrap(),
    ]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let up = w.deployer(&["up", "--env", "local", "--yes"]);
    assert!(up.status.success(), "{}", stderr(&up));
    w
}

/// The task once ECS shows it in `status`, polled for up to a minute.
async fn wait_for(ecs: &aws_sdk_ecs::Client, arn: &str, status: &str) -> aws_sdk_ecs::types::Task {
    for _ in 0..600 {
        let d = ecs
            .describe_tasks()
            .cluster("qbo-invoice-processor-cluster")
            .tasks(arn)
            .send()
            .await
            .unwrap();
        let t = d.tasks()[0].clone();
        if t.last_status() == Some(status) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the task {arn} was not {status} within a minute");
}

async fn wait_stopped(ecs: &aws_sdk_ecs::Client, arn: &str) -> aws_sdk_ecs::types::Task {
    wait_for(ecs, arn, "STOPPED").await
}

async fn wait_running(ecs: &aws_sdk_ecs::Client, arn: &str) {
    wait_for(ecs, arn, "RUNNING").await;
}

// Multi-threaded: the fakes answer the task while this thread waits on the deployer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_first_dry_run_passes_as_a_task_and_a_missing_image_says_why() {
    let w = world().await;

    // README step 8: the first run is a dry run, as a task, on a read-only root.
    let out = w.dry_run("create");
    let finished: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["event"] == "run_finished")
        .collect();
    assert_eq!(finished.len(), 1, "{out}");
    assert_eq!(finished[0]["dry_run"], true);
    assert_eq!(finished[0]["exit_code"], 0, "{out}");
    // Its report went to /tmp, the task's writable volume.
    assert!(
        out.contains("/tmp/billing_report.html"),
        "the report under /tmp: {out}"
    );

    // The send job's dry run too, once a real month's billing has left invoices to
    // send: its email preview goes to /tmp as well.
    let billed = w.deployer(&[
        "run-task", "create", "--env", "local", "--", "--period", "2026-10",
    ]);
    assert!(billed.status.success(), "{}", stderr(&billed));
    let out = w.dry_run("send");
    assert!(
        out.contains("/tmp/sent_invoices_email.html"),
        "the preview under /tmp: {out}"
    );

    let ecs = aws_sdk_ecs::Client::new(&moto_config(&w.proxy.endpoint()).await);
    let tasks = w.deployer(&["tasks", "--env", "local"]);
    assert!(tasks.status.success(), "{}", stderr(&tasks));
    assert!(
        stdout(&tasks).contains("--create-invoices --dry-run  exit 0"),
        "the stopped task, read back from the local Fargate: {}",
        stdout(&tasks)
    );

    // verify, its check run as a task on the local Fargate and read back from its logs.
    let verified = w.deployer(&["verify", "--env", "local", "--output", "json"]);
    let report: Value = serde_json::from_slice(&verified.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", stderr(&verified)));
    let rows = report["checks"].as_array().unwrap();
    let failed: Vec<&Value> = rows.iter().filter(|r| r["status"] == "fail").collect();
    assert_eq!(failed, Vec::<&Value>::new());
    assert_eq!(verified.status.code(), Some(0));
    for want in ["job:table", "job:qbo:item", "job:graph:sender"] {
        assert!(
            rows.iter()
                .any(|r| r["check"] == want && r["status"] == "ok"),
            "{want} ok in the task: {rows:#?}"
        );
    }

    // An image the registry does not hold: the task never starts, and says why.
    let family = register_variant(&ecs, "qbo-invoice-processor-missing", |container| {
        let image = container.image().unwrap().to_owned();
        container.image = Some(format!(
            "{}@sha256:{}",
            image.split('@').next().unwrap(),
            "0".repeat(64)
        ));
    })
    .await;
    let started = ecs
        .run_task()
        .cluster("qbo-invoice-processor-cluster")
        .task_definition(family)
        .send()
        .await
        .unwrap();
    let arn = started.tasks()[0].task_arn().unwrap().to_owned();
    let stopped = wait_stopped(&ecs, &arn).await;
    assert_eq!(
        stopped.stop_code(),
        Some(&aws_sdk_ecs::types::TaskStopCode::TaskFailedToStart)
    );
    assert!(
        stopped
            .stopped_reason()
            .is_some_and(|r| r.starts_with("CannotPullContainerError")),
        "{:?}",
        stopped.stopped_reason()
    );
}

/// A task definition of `family`: the job's, with its container changed by `change`.
async fn register_variant(
    ecs: &aws_sdk_ecs::Client,
    family: &str,
    change: impl FnOnce(&mut aws_sdk_ecs::types::ContainerDefinition),
) -> String {
    let current = ecs
        .describe_task_definition()
        .task_definition("qbo-invoice-processor")
        .send()
        .await
        .unwrap();
    let def = current.task_definition().unwrap();
    let mut container = def.container_definitions()[0].clone();
    change(&mut container);
    let registered = ecs
        .register_task_definition()
        .family(family)
        .set_requires_compatibilities(Some(def.requires_compatibilities().to_vec()))
        .set_network_mode(def.network_mode().cloned())
        .set_cpu(def.cpu().map(str::to_owned))
        .set_memory(def.memory().map(str::to_owned))
        .container_definitions(container)
        .send()
        .await
        .unwrap();
    registered
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_owned()
}

/// Runs `program` (perl's `-e`) as a task of a probe family whose image is perl in
/// place of the job, with the job's container settings but for `memory` and
/// `stop_timeout`.
async fn probe(
    ecs: &aws_sdk_ecs::Client,
    image: &str,
    memory: i32,
    stop_timeout: i32,
    program: &str,
) -> String {
    let arn = register_variant(ecs, "probe", |container| {
        container.image = Some(image.to_owned());
        container.memory = Some(memory);
        container.stop_timeout = Some(stop_timeout);
    })
    .await;
    let started = ecs
        .run_task()
        .cluster("qbo-invoice-processor-cluster")
        .task_definition(arn)
        .overrides(
            aws_sdk_ecs::types::TaskOverride::builder()
                .container_overrides(
                    aws_sdk_ecs::types::ContainerOverride::builder()
                        .name("invoice-processor")
                        .command("-e")
                        .command(program)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    started.tasks()[0].task_arn().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_memory_is_killed_and_stop_task_sends_sigterm_then_sigkill() {
    let w = world().await;
    let image = w.perl_image();
    let ecs = aws_sdk_ecs::Client::new(&moto_config(&w.proxy.endpoint()).await);

    // 200 MiB in a container whose hard limit is 64: the kernel kills it.
    let arn = probe(
        &ecs,
        &image,
        64,
        30,
        "my $x = 'a' x (200 * 1024 * 1024); print length $x",
    )
    .await;
    let stopped = wait_stopped(&ecs, &arn).await;
    let container = &stopped.containers()[0];
    assert_eq!(container.exit_code(), Some(137));
    assert_eq!(
        container.reason(),
        Some("OutOfMemoryError: Container killed due to memory usage")
    );
    assert_eq!(
        stopped.stopped_reason(),
        Some("Essential container in task exited")
    );
    assert_eq!(
        stopped.stop_code(),
        Some(&aws_sdk_ecs::types::TaskStopCode::EssentialContainerExited)
    );
    // Its STOPPED event reached the stack's rules: the alert (SNS) names the memory
    // kill, and the task history log group has it, so status shows the crash.
    // EventBridge delivers after the fact: wait for it.
    let mut delivered = w.fargate.delivered();
    for _ in 0..100 {
        if delivered
            .iter()
            .filter(|(t, _)| t.contains(":log-group:") || t.contains(":sns:"))
            .count()
            >= 2
            && delivered
                .iter()
                .any(|(_, got)| got.as_ref().is_ok_and(|m| m.contains("OutOfMemory")))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        delivered = w.fargate.delivered();
    }
    let alert = delivered
        .iter()
        .find(|(target, got)| {
            target.ends_with(":qbo-invoice-processor-alerts")
                && got.as_ref().is_ok_and(|m| m.contains(&arn))
        })
        .unwrap_or_else(|| panic!("no alert for {arn}: {delivered:#?}"));
    let message: Value = serde_json::from_str(alert.1.as_ref().unwrap()).unwrap();
    assert_eq!(
        message["container"],
        "OutOfMemoryError: Container killed due to memory usage"
    );
    assert!(
        delivered
            .iter()
            .any(|(target, got)| target.contains(":log-group:/aws/events/") && got.is_ok()),
        "{delivered:#?}"
    );
    let status = w.deployer(&["status", "--env", "local"]);
    assert!(
        stdout(&status).contains("CRASHED") && stdout(&status).contains("OutOfMemoryError"),
        "{}",
        stdout(&status)
    );

    // StopTask: SIGTERM reaches the program, which ends on its own.
    let arn = probe(
        &ecs,
        &image,
        64,
        30,
        "$| = 1; $SIG{TERM} = sub { print qq(got TERM\\n); exit 143 }; print qq(up\\n); sleep 1 while 1",
    )
    .await;
    wait_running(&ecs, &arn).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ecs.stop_task()
        .cluster("qbo-invoice-processor-cluster")
        .task(&arn)
        .reason("stopped by the test")
        .send()
        .await
        .unwrap();
    let stopped = wait_stopped(&ecs, &arn).await;
    assert_eq!(stopped.containers()[0].exit_code(), Some(143));
    assert_eq!(
        stopped.stop_code(),
        Some(&aws_sdk_ecs::types::TaskStopCode::UserInitiated)
    );
    assert_eq!(stopped.stopped_reason(), Some("stopped by the test"));
    assert_eq!(stopped.containers()[0].reason(), None, "no memory kill");

    // One that ignores SIGTERM is killed once its stop timeout (2 s) has passed.
    let arn = probe(
        &ecs,
        &image,
        64,
        2,
        "$SIG{TERM} = 'IGNORE'; sleep 1 while 1",
    )
    .await;
    wait_running(&ecs, &arn).await;
    let asked = std::time::Instant::now();
    ecs.stop_task()
        .cluster("qbo-invoice-processor-cluster")
        .task(&arn)
        .send()
        .await
        .unwrap();
    let stopped = wait_stopped(&ecs, &arn).await;
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(stopped.containers()[0].exit_code(), Some(137));
    assert_eq!(
        stopped.containers()[0].reason(),
        None,
        "killed by StopTask, not for memory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_stop_and_ctrl_c_reach_the_job_as_sigterm_and_a_rerun_bills_nobody_twice() {
    // QBO answers slowly: the month takes long enough to be stopped half-way.
    let w = world_with(|m| {
        m.seed.limits.insert(
            "qbo".into(),
            fakes::control::Limits {
                latency_ms: 2000,
                ..fakes::control::Limits::QBO
            },
        );
    })
    .await;
    let started = w.deployer(&[
        "run-task",
        "create",
        "--env",
        "local",
        "--no-wait",
        "--",
        "--concurrency",
        "1",
        "--period",
        "2026-10",
    ]);
    assert!(started.status.success(), "{}", stderr(&started));
    let arn = stdout(&started).trim().to_owned();
    let id = arn.rsplit('/').next().unwrap().to_owned();
    let ecs = aws_sdk_ecs::Client::new(&moto_config(&w.proxy.endpoint()).await);
    wait_running(&ecs, &arn).await;
    // Once some invoices are made, stop it the way an operator does.
    for _ in 0..600 {
        if !w.fakes.qbo.lock().unwrap().invoices().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stop = w.deployer(&["tasks", "--env", "local", "--stop", &id]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    let stopped = wait_stopped(&ecs, &arn).await;
    // The job got SIGTERM, finished what was under way, and exited 143 within the
    // stop timeout: not killed.
    let logs = w.deployer(&["logs", "--env", "local", "--since", "1h"]);
    assert_eq!(
        stopped.containers()[0].exit_code(),
        Some(143),
        "{}",
        stdout(&logs)
    );
    assert_eq!(
        stopped.stop_code(),
        Some(&aws_sdk_ecs::types::TaskStopCode::UserInitiated)
    );
    let made = w.fakes.qbo.lock().unwrap().invoices().len();
    assert!(made > 0);

    // Ctrl-C in `run-task --on-interrupt stop`: StopTask, so the job gets SIGTERM too.
    // (A stopped run's lease is held for WRITE_SETTLE_SECONDS, 5 s here: wait it out.)
    tokio::time::sleep(Duration::from_secs(6)).await;
    let child = w
        .command(&[
            "run-task",
            "create",
            "--env",
            "local",
            "--on-interrupt",
            "stop",
            "--",
            "--concurrency",
            "1",
            "--period",
            "2026-10",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let second = loop {
        let listed = ecs
            .list_tasks()
            .cluster("qbo-invoice-processor-cluster")
            .send()
            .await
            .unwrap();
        if let Some(a) = listed.task_arns().first() {
            break a.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_running(&ecs, &second).await;
    for _ in 0..600 {
        if w.fakes.qbo.lock().unwrap().invoices().len() > made {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let stopped = wait_stopped(&ecs, &second).await;
    assert_eq!(
        stopped.containers()[0].exit_code(),
        Some(143),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stopped.stop_code(),
        Some(&aws_sdk_ecs::types::TaskStopCode::UserInitiated)
    );
    let made = w.fakes.qbo.lock().unwrap().invoices().len();
    tokio::time::sleep(Duration::from_secs(6)).await;
    // The rerun at QBO's usual speed.
    w.fakes
        .control
        .0
        .lock()
        .unwrap()
        .limits
        .insert("qbo".into(), fakes::control::Limits::QBO);

    let rerun = w.deployer(&[
        "run-task", "create", "--env", "local", "--", "--period", "2026-10",
    ]);
    assert!(
        rerun.status.success(),
        "{}\n{}",
        stdout(&rerun),
        stderr(&rerun)
    );
    let state: Value = reqwest::get(format!("{}/_fakes/state", w.fakes.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut docs: Vec<&str> = state["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["DocNumber"].as_str().unwrap())
        .collect();
    let total = docs.len();
    docs.sort_unstable();
    docs.dedup();
    assert_eq!(docs.len(), total, "no invoice twice");
    assert!(total > made, "the rerun billed the rest");
    let mut entries: Vec<&str> = state["time_entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["description"].as_str().unwrap())
        .collect();
    let count = entries.len();
    entries.sort_unstable();
    entries.dedup();
    assert_eq!(entries.len(), count, "no ClickUp entry twice");
    assert_eq!(count, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_send_fires_at_five_in_los_angeles_across_a_daylight_saving_change() {
    let w = world().await;
    // The test clock: from the Saturday before the change to the Monday after it.
    let fired = advance(&w, "2027-03-13T00:00:00Z", "2027-03-15T23:00:00Z").await;
    let sends: Vec<(String, &Result<String, String>)> = fired
        .iter()
        .filter(|(name, _, _)| name == "qbo-send-invoices-daily")
        .map(|(_, at, task)| (at.to_string(), task))
        .collect();
    assert_eq!(
        sends.iter().map(|(at, _)| at.as_str()).collect::<Vec<_>>(),
        [
            "2027-03-13T13:00:00Z",
            "2027-03-14T12:00:00Z",
            "2027-03-15T12:00:00Z"
        ],
        "05:00 PST, then 05:00 PDT: {fired:?}"
    );
    assert!(
        fired
            .iter()
            .all(|(name, _, _)| name == "qbo-send-invoices-daily"),
        "nothing else is due in those days: {fired:?}"
    );
    // Each firing started the send job with the schedule's overrides, and it ran.
    let ecs = aws_sdk_ecs::Client::new(&moto_config(&w.proxy.endpoint()).await);
    for (_, task) in &sends {
        let arn = task.as_ref().expect("the schedule started its task");
        let stopped = wait_stopped(&ecs, arn).await;
        let command = stopped.overrides().unwrap().container_overrides()[0].command();
        assert_eq!(command, ["--send-invoices"]);
        assert_eq!(
            stopped.containers()[0].exit_code(),
            Some(0),
            "{:?}",
            stopped.stopped_reason()
        );
    }
}

/// The test clock moved from `from` to `to`: every schedule due in between fires. (The
/// local Fargate blocks on its own calls: off the test's runtime.)
async fn advance(w: &World, from: &str, to: &str) -> Vec<fakes::fargate::Firing> {
    let fargate = Arc::clone(&w.fargate);
    let (from, to) = (from.parse().unwrap(), to.parse().unwrap());
    tokio::task::spawn_blocking(move || fargate.advance(from, to))
        .await
        .unwrap()
        .unwrap()
}

/// The changes of state, with their notifications, from evaluating every alarm at `at`.
async fn evaluate_at(w: &World, at: jiff::Timestamp) -> Vec<fakes::cloudwatch::Notified> {
    let fargate = Arc::clone(&w.fargate);
    tokio::task::spawn_blocking(move || fargate.evaluate_alarms(at))
        .await
        .unwrap()
        .unwrap()
}

fn notification<'a>(messages: &'a [Value], alarm: &str, state: &str) -> Vec<&'a Value> {
    messages
        .iter()
        .filter(|m| m["AlarmName"] == alarm && m["NewStateValue"] == state)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_publish_the_stacks_metrics_and_its_alarms_notify_the_alert_topic() {
    let w = world().await;
    let image = w.perl_image();
    let config = moto_config(&w.proxy.endpoint()).await;
    let ecs = aws_sdk_ecs::Client::new(&config);
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&config);
    let started = jiff::Timestamp::now();

    // A dry run's failure, a line that is not JSON, and a real run's failure: the
    // run-failed filter counts the last only, and its alarm tells the alert topic.
    let arn = probe(
        &ecs,
        &image,
        64,
        30,
        r#"$| = 1;
        print qq({"event":"run_finished","job":"create-invoices","success":false,"dry_run":true}\n);
        print qq(run_finished success false\n);
        print qq({"event":"run_finished","job":"create-invoices","success":false,"dry_run":false}\n);"#,
    )
    .await;
    let stopped = wait_stopped(&ecs, &arn).await;
    assert_eq!(stopped.containers()[0].exit_code(), Some(0));
    let failed = "qbo-invoice-processor-run-failed";
    let messages = w.alarm_messages();
    let alarm = notification(&messages, failed, "ALARM");
    assert_eq!(alarm.len(), 1, "{messages:#?}");
    assert_eq!(alarm[0]["OldStateValue"], "INSUFFICIENT_DATA");
    assert_eq!(alarm[0]["Trigger"]["MetricName"], "RunsFailed");
    let points = cloudwatch
        .get_metric_statistics()
        .namespace("QBOInvoiceProcessor")
        .metric_name("RunsFailed")
        .start_time(aws_smithy_types::DateTime::from_secs(
            started.as_second() - 60,
        ))
        .end_time(aws_smithy_types::DateTime::from_secs(
            jiff::Timestamp::now().as_second() + 60,
        ))
        .period(3600)
        .statistics(aws_sdk_cloudwatch::types::Statistic::Sum)
        .send()
        .await
        .unwrap();
    let sum: f64 = points
        .datapoints()
        .iter()
        .filter_map(aws_sdk_cloudwatch::types::Datapoint::sum)
        .sum();
    assert!(
        (sum - 1.0).abs() < f64::EPSILON,
        "one failure counted: {sum}"
    );
    let described = cloudwatch
        .describe_alarms()
        .alarm_names(failed)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.metric_alarms()[0].state_value(),
        Some(&aws_sdk_cloudwatch::types::StateValue::Alarm)
    );

    // A day and more with no successful send: the heartbeat breaches in each of its 26
    // hours (missing data counts as breaching) and alarms. The run-failed alarm goes
    // back to OK with no message (it has no OK action).
    let changes = evaluate_at(&w, started + jiff::SignedDuration::from_hours(27)).await;
    let heartbeat = "qbo-invoice-processor-send-invoices-success-missing";
    let state_of = |name: &str| {
        changes
            .iter()
            .find(|n| n.alarm == name)
            .map(|n| (n.state.clone(), n.sent.len()))
    };
    assert_eq!(
        state_of(heartbeat),
        Some(("ALARM".into(), 1)),
        "{changes:#?}"
    );
    assert_eq!(state_of(failed), Some(("OK".into(), 0)), "{changes:#?}");
    // Evaluated again at the same time, nothing changes and no one is told twice.
    assert!(
        evaluate_at(&w, started + jiff::SignedDuration::from_hours(27))
            .await
            .is_empty()
    );

    // A successful send, now: the heartbeat recovers, and says so.
    let arn = probe(
        &ecs,
        &image,
        64,
        30,
        r#"print qq({"event":"run_finished","job":"send-invoices","success":true,"dry_run":false}\n)"#,
    )
    .await;
    wait_stopped(&ecs, &arn).await;
    let messages = w.alarm_messages();
    let ok = notification(&messages, heartbeat, "OK");
    assert_eq!(ok.len(), 1, "{messages:#?}");
    assert_eq!(ok[0]["OldStateValue"], "ALARM");

    // A schedule whose task ECS refuses (256 CPU cannot have 4 GB): Scheduler counts a
    // target error, and the invocation alarm tells the alert topic.
    let scheduler = aws_sdk_scheduler::Client::new(&config);
    let (name, group) = ("qbo-send-invoices-daily", "qbo-invoice-processor");
    let current = scheduler
        .get_schedule()
        .name(name)
        .group_name(group)
        .send()
        .await
        .unwrap();
    let mut target = current.target().unwrap().clone();
    let mut input: Value = serde_json::from_str(target.input().unwrap_or("{}")).unwrap();
    input["cpu"] = "256".into();
    input["memory"] = "4096".into();
    target.input = Some(input.to_string());
    scheduler
        .update_schedule()
        .name(name)
        .group_name(group)
        .schedule_expression(current.schedule_expression().unwrap())
        .set_schedule_expression_timezone(current.schedule_expression_timezone().map(str::to_owned))
        .set_flexible_time_window(current.flexible_time_window().cloned())
        .set_state(current.state().cloned())
        .target(target)
        .send()
        .await
        .unwrap();
    let fired = advance(&w, "2027-01-04T12:30:00Z", "2027-01-05T12:30:00Z").await;
    let refused: Vec<&String> = fired
        .iter()
        .filter(|(n, _, _)| n == name)
        .filter_map(|(_, _, task)| task.as_ref().err())
        .collect();
    assert_eq!(refused.len(), 1, "{fired:?}");
    assert!(
        refused[0]
            .contains("No Fargate configuration exists for given values: 256 CPU, 4096 memory"),
        "{refused:?}"
    );
    let messages = w.alarm_messages();
    let errors = notification(
        &messages,
        "qbo-invoice-processor-schedules-invocation-errors",
        "ALARM",
    );
    assert_eq!(errors.len(), 1, "{messages:#?}");
    assert_eq!(errors[0]["Trigger"]["MetricName"], "TargetErrorCount");
    assert_eq!(errors[0]["Trigger"]["Namespace"], "AWS/Scheduler");
}

/// A role's inline policy as deployed (IAM answers it URL-encoded; moto may not).
async fn role_policy(iam: &aws_sdk_iam::Client, role: &str, name: &str) -> Value {
    let got = iam
        .get_role_policy()
        .role_name(role)
        .policy_name(name)
        .send()
        .await
        .unwrap();
    let text = got.policy_document();
    serde_json::from_str(text).unwrap_or_else(|_| {
        serde_json::from_str(&percent_encoding::percent_decode_str(text).decode_utf8_lossy())
            .unwrap()
    })
}

/// The job runs as its task role: credentials from the container credentials endpoint,
/// each call authorized against the role's policies. Without one action in the role's
/// policy, the run that needs it is refused, and says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_runs_as_its_task_role_and_an_action_missing_from_it_is_refused() {
    let w = world().await;
    let iam = aws_sdk_iam::Client::new(&moto_config(&w.proxy.endpoint()).await);
    let role = "ecsTaskRole-QBOInvoiceProcessor";
    let name = "secrets-and-client-table";
    let document = role_policy(&iam, role, name).await;
    // The ledger's writes, without PutItem.
    let mut fewer = document.clone();
    for s in fewer["Statement"].as_array_mut().unwrap() {
        if let Some(actions) = s["Action"].as_array_mut() {
            actions.retain(|a| a != "dynamodb:PutItem");
        }
    }
    assert_ne!(fewer, document);
    iam.put_role_policy()
        .role_name(role)
        .policy_name(name)
        .policy_document(fewer.to_string())
        .send()
        .await
        .unwrap();
    // The role's policies are read again after a second, as IAM's changes take a moment.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let run = w.deployer(&[
        "run-task", "create", "--env", "local", "--output", "json", "--", "--period", "2026-10",
    ]);
    let out = stdout(&run);
    assert!(!run.status.success(), "{out}");
    // The job names the table and the fix, and exits 2 (bad setup, not a failed run).
    assert_eq!(run.status.code(), Some(2), "{out}");
    assert!(
        out.contains("the job may not use the job-state table qbo-invoice-processor-job-state")
            && out.contains("PutItem"),
        "{out}"
    );
    assert!(
        w.fakes.qbo.lock().unwrap().invoices().is_empty(),
        "nothing billed without its ledger"
    );

    // The role as deployed: the same run bills the month.
    iam.put_role_policy()
        .role_name(role)
        .policy_name(name)
        .policy_document(document.to_string())
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let run = w.deployer(&[
        "run-task", "create", "--env", "local", "--", "--period", "2026-10",
    ]);
    assert!(run.status.success(), "{}\n{}", stdout(&run), stderr(&run));
    assert!(!w.fakes.qbo.lock().unwrap().invoices().is_empty());
}

/// A schedule starts its task as the schedule role: without `iam:PassRole` of the
/// task's roles, Scheduler's RunTask is refused, counted as a target error, and the
/// invocation alarm tells the alert topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_role_that_cannot_pass_the_task_roles_starts_nothing_and_alarms() {
    let w = world().await;
    let iam = aws_sdk_iam::Client::new(&moto_config(&w.proxy.endpoint()).await);
    let role = "EventBridgeECSRole-QBOInvoiceProcessor";
    let mut document = role_policy(&iam, role, "run-task").await;
    document["Statement"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["Action"] != "iam:PassRole");
    iam.put_role_policy()
        .role_name(role)
        .policy_name("run-task")
        .policy_document(document.to_string())
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fired = advance(&w, "2027-01-04T12:30:00Z", "2027-01-05T12:30:00Z").await;
    // That day's send at 05:00 and the monthly run at 09:00 (the 4th), Los Angeles.
    assert_eq!(fired.len(), 2, "{fired:?}");
    for (_, _, task) in &fired {
        let refused = task.as_ref().expect_err("no task without PassRole");
        assert!(
            refused.contains("is not authorized to perform: iam:PassRole on resource: arn:aws:iam::123456789012:role/"),
            "{refused}"
        );
    }
    let messages = w.alarm_messages();
    assert_eq!(
        notification(
            &messages,
            "qbo-invoice-processor-schedules-invocation-errors",
            "ALARM"
        )
        .len(),
        1,
        "{messages:#?}"
    );
}

/// `run-task` right after `up`: ECS does not see the tasks' new security group yet
/// (eventual consistency). The start is retried and says so, and exactly one task runs.
#[tokio::test(flavor = "multi_thread")]
async fn run_task_right_after_up_waits_for_ecs_to_see_the_new_security_group() {
    let w = world().await;
    let stale = FaultProxy::with(
        w.moto.addr(),
        Options {
            fargate: Some(Arc::clone(&w.fargate)),
            stale: Some(Duration::from_secs(3)),
            ..Options::default()
        },
    )
    .unwrap();
    let groups = aws_sdk_ec2::Client::new(&moto_config(&w.proxy.endpoint()).await)
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values("qbo-invoice-processor-tasks")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let group = groups.security_groups()[0].group_id().unwrap().to_owned();
    let stopped = |fargate: &Arc<Fargate>| {
        let (_, listed) = fargate
            .handle(
                "ListTasks",
                br#"{"desiredStatus":"STOPPED","cluster":"qbo-invoice-processor-cluster"}"#,
            )
            .unwrap();
        listed["taskArns"].as_array().map_or(0, Vec::len)
    };
    let before = stopped(&w.fargate);
    stale.just_created("ec2", &group);
    let out = super::deployer_command(Some(&stale.endpoint()))
        .args([
            "--env-dir",
            w.dir.path().to_str().unwrap(),
            "run-task",
            "create",
            "--env",
            "local",
            "--",
            "--dry-run",
        ])
        .env("DEPLOYER_REGISTRY", w.registry.host())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("waiting: ECS does not see the tasks' security group yet"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stopped(&w.fargate),
        before + 1,
        "one task, not one per attempt"
    );
}
