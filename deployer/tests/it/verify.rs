//! Operating without surprises: `verify` on the demo's world and on each way it can
//! break, `tasks` and `--stop`, run-task's state lines and Ctrl-C, and `status` with a
//! month of runs and a crashed task.

use std::process::Output;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use fakes::emulators::Moto;
use fakes::generate::{Month, SECRET_NAMES, TABLE};
use fakes::server::Fakes;
use serde_json::{Value, json};

use super::engine::{IMAGE, deployer, json};
use super::{moto_config, stderr};

/// moto with the stack deployed (`local`, pointed at the fakes) and the month seeded.
struct World {
    moto: Moto,
    fakes: Fakes,
    month: Month,
    dir: tempfile::TempDir,
    config: aws_setup::SdkConfig,
}

async fn world(moto: Moto) -> World {
    let endpoint = moto.endpoint();
    let mut month = fakes::generate::month(12, 2026, 10);
    month.remove_broken();
    let fakes = Fakes::start(&month.seed).await.unwrap();
    let config = moto_config(&endpoint).await;
    fakes::aws_seed::seed(&config, &month, TABLE).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(super::root().join("infra/envs/local.toml")).unwrap();
    let port = fakes.url().rsplit(':').next().unwrap().to_owned();
    std::fs::write(
        dir.path().join("local.toml"),
        shipped.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let w = World {
        moto,
        fakes,
        month,
        dir,
        config,
    };
    let up = w.deployer(&["up", "--env", "local", "--image", IMAGE, "--yes"]);
    assert!(up.status.success(), "{}", stderr(&up));
    w
}

impl World {
    fn deployer(&self, args: &[&str]) -> Output {
        let mut all = vec!["--env-dir", self.dir.path().to_str().unwrap()];
        all.extend_from_slice(args);
        deployer(&self.moto.endpoint(), &all)
    }

    /// `verify --local --output json`: the exit code and the rows by check name.
    fn verify(&self) -> (i32, Vec<Value>) {
        let job = super::image::job_binary();
        let out = self.deployer(&[
            "verify",
            "--env",
            "local",
            "--local",
            "--binary",
            job.to_str().unwrap(),
            "--output",
            "json",
        ]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                stderr(&out)
            )
        });
        (
            out.status.code().unwrap_or(-1),
            report["checks"].as_array().unwrap().clone(),
        )
    }

    async fn put_secret(&self, name: &str, value: &Value) {
        aws_sdk_secretsmanager::Client::new(&self.config)
            .put_secret_value()
            .secret_id(name)
            .secret_string(value.to_string())
            .send()
            .await
            .unwrap();
    }
}

fn failed(rows: &[Value]) -> Vec<&Value> {
    rows.iter().filter(|r| r["status"] == "fail").collect()
}

/// The one failed row, which must be `check`, say `detail` and name `fix`.
fn fails_only(rows: &[Value], check: &str, detail: &str, fix: &str) {
    let failed = failed(rows);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let r = failed[0];
    assert_eq!(r["check"], check, "{r}");
    assert!(r["detail"].as_str().unwrap().contains(detail), "{r}");
    assert!(r["fix"].as_str().unwrap().contains(fix), "{r}");
}

// The fakes serve on this runtime while the deployer runs as a blocking child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_the_demo_world_and_names_the_fix_for_each_break() {
    let w = world(Moto::start().unwrap()).await;
    let (code, rows) = w.verify();
    assert_eq!(failed(&rows), Vec::<&Value>::new());
    assert_eq!(code, 0);
    let names: Vec<&str> = rows.iter().map(|r| r["check"].as_str().unwrap()).collect();
    for want in [
        "image",
        "iam-role/ecsTaskRole-QBOInvoiceProcessor",
        "schedule/qbo-send-invoices-daily",
        "stack",
        "alerts:bookkeeper@example.com",
        "alarms",
        "job:table",
        "job:qbo:item",
        "job:graph:sender",
    ] {
        assert!(names.contains(&want), "no {want} in {names:?}");
    }

    // A secret missing a key.
    let clickup = w.month.secrets[SECRET_NAMES[2]].clone();
    let mut broken = clickup.clone();
    broken.as_object_mut().unwrap().remove("team_id");
    w.put_secret(SECRET_NAMES[2], &broken).await;
    let (code, rows) = w.verify();
    assert_eq!(code, 1);
    fails_only(
        &rows,
        &format!("job:secret:{}", SECRET_NAMES[2]),
        "team_id",
        "README",
    );
    w.put_secret(SECRET_NAMES[2], &clickup).await;

    // A workspace without a key.
    let keys = w.month.secrets[SECRET_NAMES[3]].clone();
    let mut fewer = keys.clone();
    // The workspace of a client the month bills.
    let billed = w.month.invoiced().next().unwrap().0.client_id.clone();
    let ws = w
        .month
        .items
        .iter()
        .find(|i| matches!(i.get("client_id"), Some(fakes::generate::Attr::S(id)) if *id == billed))
        .and_then(|i| match i.get("robocorp_workspace_id") {
            Some(fakes::generate::Attr::S(ws)) => Some(ws.clone()),
            _ => None,
        })
        .unwrap();
    fewer.as_object_mut().unwrap().remove(&ws);
    w.put_secret(SECRET_NAMES[3], &fewer).await;
    let (code, rows) = w.verify();
    assert_eq!(code, 1);
    fails_only(
        &rows,
        &format!("job:robocorp:{ws}"),
        "no API key",
        SECRET_NAMES[3],
    );
    w.put_secret(SECRET_NAMES[3], &keys).await;

    // The QBO item gone.
    w.fakes.qbo.lock().unwrap().clear_items();
    let (code, rows) = w.verify();
    assert_eq!(code, 1);
    fails_only(&rows, "job:qbo:item", "no active item", "QBO_ITEM_NAME");

    // The table says so too.
    let text = w.deployer(&[
        "verify",
        "--env",
        "local",
        "--local",
        "--binary",
        super::image::job_binary().to_str().unwrap(),
    ]);
    assert_eq!(text.status.code(), Some(1));
    let table = String::from_utf8_lossy(&text.stdout);
    assert!(
        table.contains("job:qbo:item") && table.contains("FAIL"),
        "{table}"
    );
    assert!(
        table.contains("fix: create that service item in QBO"),
        "{table}"
    );
    assert!(
        table.contains("1 of ") && table.contains("checks failed."),
        "{table}"
    );
}

// The fakes serve on this runtime while the deployer runs as a blocking child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_fails_while_the_alert_subscription_is_pending() {
    let w = world(Moto::start_with_pending_email_subscriptions().unwrap()).await;
    let (code, rows) = w.verify();
    assert_eq!(code, 1);
    fails_only(&rows, "alerts:bookkeeper@example.com", "pending", "confirm");
}

/// Sets how moto moves ECS tasks through their states: `manual` with `times: N` moves a
/// task one state further after N DescribeTasks (RUNNING, DEACTIVATING, STOPPING,
/// DEPROVISIONING, STOPPED; moto's task life cycle, 1 by default).
async fn tasks_advance_after_reads(endpoint: &str, reads: u64) {
    let r = reqwest::Client::new()
        .post(format!("{endpoint}/moto-api/state-manager/set-transition"))
        .json(&json!({"model_name": "ecs::task", "transition": {"progression": "manual", "times": reads}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

#[tokio::test]
async fn tasks_lists_and_stops_the_jobs_tasks_and_run_task_shows_state_changes_and_ctrl_c() {
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    json(
        &endpoint,
        &[
            "up", "--env", "local", "--image", IMAGE, "--yes", "--output", "json",
        ],
    );
    // moto moves a task one state on at each read by default: held still here.
    tasks_advance_after_reads(&endpoint, 1_000_000).await;
    let started = json(
        &endpoint,
        &[
            "run-task",
            "send",
            "--env",
            "local",
            "--no-wait",
            "--output",
            "json",
        ],
    );
    let arn = started["tasks"][0].as_str().unwrap().to_owned();
    let id = arn.rsplit('/').next().unwrap().to_owned();
    let listed = json(&endpoint, &["tasks", "--env", "local", "--output", "json"]);
    let task = &listed["tasks"][0];
    assert_eq!(task["id"], id.as_str(), "{listed}");
    assert_eq!(task["status"], "RUNNING");
    assert_eq!(task["command"], json!(["--send-invoices"]));

    // Only a task of this job can be stopped.
    let out = deployer(
        &endpoint,
        &["tasks", "--env", "local", "--stop", "not-a-task"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no task not-a-task"),
        "{}",
        stderr(&out)
    );
    let stopped = json(
        &endpoint,
        &["tasks", "--env", "local", "--stop", &id, "--output", "json"],
    );
    assert_eq!(stopped["stopping"], id.as_str());
    let task = &stopped["tasks"][0];
    assert_eq!(task["status"], "STOPPED", "{stopped}");
    assert_eq!(task["desired"], "STOPPED");
    assert_eq!(task["stopped_reason"], "stopped with deployer tasks --stop");
    let text = deployer(&endpoint, &["tasks", "--env", "local", "--tz", "UTC"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&id) && text.contains("STOPPED"), "{text}");
    assert!(
        text.contains("stopped with deployer tasks --stop"),
        "{text}"
    );

    // Ctrl-C while waiting, with no terminal to ask: the task is left running (and how
    // to stop it is said), or stopped with --on-interrupt stop; 130 either way.
    for (how, stops) in [("ask", false), ("stop", true)] {
        let child = super::deployer_command(Some(&endpoint))
            .args(["run-task", "send", "--env", "local", "--on-interrupt", how])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Until the task shows in the list.
        let mut running = None;
        for _ in 0..100 {
            let l = json(&endpoint, &["tasks", "--env", "local", "--output", "json"]);
            running = l["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["status"] == "RUNNING")
                .map(|t| t["id"].as_str().unwrap().to_owned());
            if running.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let running = running.expect("the task started");
        std::thread::sleep(std::time::Duration::from_millis(500));
        let pid = child.id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{how}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("task {running}  RUNNING")),
            "{}",
            stderr(&out)
        );
        let l = json(&endpoint, &["tasks", "--env", "local", "--output", "json"]);
        let t = l["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == running.as_str())
            .unwrap();
        if stops {
            assert_eq!(t["desired"], "STOPPED", "{l}");
            assert_eq!(t["stopped_reason"], "interrupted in deployer run-task");
        } else {
            assert_eq!(t["status"], "RUNNING", "{l}");
            assert!(
                stderr(&out).contains(&format!("left running: {running}")),
                "{}",
                stderr(&out)
            );
            assert!(stderr(&out).contains("deployer tasks --env local --stop ID"));
            // Stop it, so the next round finds its own task running.
            json(
                &endpoint,
                &[
                    "tasks", "--env", "local", "--stop", &running, "--output", "json",
                ],
            );
        }
    }

    // moto moves the next task through its states, one per read (its container then
    // says exit 0): each change is one line, in the zone asked for, and the command
    // ends with the task.
    tasks_advance_after_reads(&endpoint, 1).await;
    let out = deployer(
        &endpoint,
        &["run-task", "send", "--env", "local", "--tz", "UTC"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let states: Vec<&str> = err.lines().filter_map(|l| l.split("  ").nth(2)).collect();
    assert_eq!(
        states,
        [
            "DEACTIVATING",
            "STOPPING",
            "DEPROVISIONING",
            "STOPPED: exit 0"
        ],
        "{err}"
    );
    assert!(err.lines().next().unwrap().contains(" UTC  task "), "{err}");

    // Without --local, verify runs the job's --check as a task and reads its lines; this
    // task stops having written none (moto runs no container): the row says so.
    let out = deployer(&endpoint, &["verify", "--env", "local", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "job")
        .unwrap();
    assert_eq!(job["status"], "fail");
    assert!(
        job["detail"]
            .as_str()
            .unwrap()
            .contains("did not finish in task"),
        "{job}"
    );
    assert!(
        stderr(&out).contains("started the check as task"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn status_lists_every_run_of_the_window_and_a_task_that_crashed() {
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    json(
        &endpoint,
        &[
            "up", "--env", "local", "--image", IMAGE, "--yes", "--output", "json",
        ],
    );
    let config = moto_config(&endpoint).await;
    // The task history: the rule writes every stopped task to its log group.
    let events = aws_sdk_eventbridge::Client::new(&config);
    let targets = events
        .list_targets_by_rule()
        .rule("qbo-invoice-processor-task-events")
        .send()
        .await
        .unwrap();
    assert_eq!(
        targets.targets()[0].arn(),
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/events/qbo-invoice-processor-tasks"
    );
    let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
    let policies = logs.describe_resource_policies().send().await.unwrap();
    assert!(
        policies
            .resource_policies()
            .iter()
            .any(|p| p.policy_name() == Some("qbo-invoice-processor-task-events")),
        "{policies:?}"
    );

    // Twelve runs, each in its task's stream: eleven daily sends and, older than all of
    // them, the monthly billing run (CloudWatch takes no event older than 14 days, so
    // the month is compressed into two weeks; the window `status` reads is 35 days).
    let now = jiff::Timestamp::now().as_millisecond();
    let day = 86_400_000;
    let group = "/ecs/qbo-invoice-processor";
    let put = |stream: String, ts: i64, line: String| {
        let logs = logs.clone();
        async move {
            logs.create_log_stream()
                .log_group_name(group)
                .log_stream_name(&stream)
                .send()
                .await
                .unwrap();
            logs.put_log_events()
                .log_group_name(group)
                .log_stream_name(&stream)
                .log_events(
                    InputLogEvent::builder()
                        .timestamp(ts)
                        .message(line)
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
        }
    };
    for n in 0..11 {
        put(
            format!("ecs/invoice-processor/send{n}"),
            now - (n + 1) * day,
            r#"{"event":"run_finished","job":"send-invoices","success":true,"dry_run":false,"duration_ms":60000}"#.into(),
        )
        .await;
    }
    put(
        "ecs/invoice-processor/monthly".into(),
        now - 12 * day,
        r#"{"event":"run_finished","job":"create-invoices","success":true,"dry_run":false,"duration_ms":1800000}"#.into(),
    )
    .await;
    // Two stopped tasks in the history: one that finished (already counted by its
    // line), one killed for its memory that never wrote one.
    let history = "/aws/events/qbo-invoice-processor-tasks";
    // As ECS reports a memory kill: the task says only that its container exited, the
    // container says why (ECS "Stopped tasks errors").
    let event = |task: &str, exit: i64, code: &str, container_reason: &str, command: &str| {
        json!({
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "detail": {
                "taskArn": format!("arn:aws:ecs:us-east-1:123456789012:task/qbo-invoice-processor-cluster/{task}"),
                "lastStatus": "STOPPED",
                "stopCode": code,
                "stoppedReason": "Essential container in task exited",
                "stoppedAt": jiff::Timestamp::from_millisecond(now - 2 * day).unwrap().to_string(),
                "containers": [{"name": "invoice-processor", "exitCode": exit, "reason": container_reason}],
                "overrides": {"containerOverrides": [{"name": "invoice-processor", "command": [command]}]},
            }
        })
        .to_string()
    };
    logs.create_log_stream()
        .log_group_name(history)
        .log_stream_name("events")
        .send()
        .await
        .unwrap();
    // The finished task, then the crashed one, reported twice (ECS may report a stop
    // more than once: still one entry).
    let history_events = [
        (
            now - 4 * day,
            event(
                "send1",
                0,
                "EssentialContainerExited",
                "",
                "--send-invoices",
            ),
        ),
        (
            now - 2 * day,
            event(
                "crashed",
                137,
                "EssentialContainerExited",
                "OutOfMemoryError: Container killed due to memory usage",
                "--create-invoices",
            ),
        ),
    ];
    let history_events = [
        history_events[0].clone(),
        history_events[1].clone(),
        (now - 2 * day + 1000, history_events[1].1.clone()),
    ];
    logs.put_log_events()
        .log_group_name(history)
        .log_stream_name("events")
        .set_log_events(Some(
            history_events
                .into_iter()
                .map(|(ts, message)| {
                    InputLogEvent::builder()
                        .timestamp(ts)
                        .message(message)
                        .build()
                        .unwrap()
                })
                .collect(),
        ))
        .send()
        .await
        .unwrap();

    let status = json(&endpoint, &["status", "--env", "local", "--output", "json"]);
    let runs = status["recent_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 13, "{status:#}");
    let crashed: Vec<&Value> = runs.iter().filter(|r| r.get("crashed").is_some()).collect();
    assert_eq!(crashed.len(), 1, "{status:#}");
    assert_eq!(crashed[0]["job"], "create-invoices");
    assert_eq!(crashed[0]["success"], false);
    let why = crashed[0]["crashed"].as_str().unwrap();
    assert!(
        why.contains("exit 137") && why.contains("OutOfMemoryError"),
        "{why}"
    );
    assert!(
        runs.iter()
            .any(|r| r["job"] == "create-invoices" && r["success"] == true),
        "the monthly run, older than the ten newest, is in the list"
    );
    let text = deployer(&endpoint, &["status", "--env", "local"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Runs of the last 35 days (13)"), "{text}");
    assert!(
        text.contains("CRASHED  task crashed stopped without finishing: exit 137"),
        "{text}"
    );
    // Times in the billing time zone, with the zone.
    assert!(
        text.contains(" PST  send-invoices") || text.contains(" PDT  send-invoices"),
        "{text}"
    );
}
