//! Operating a deployed stack: `status` against moto.

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use fakes::emulators::Moto;
use serde_json::Value;

use super::engine::{IMAGE, deployer, json};
use super::{moto_config, stderr};

#[tokio::test]
async fn status_shows_next_runs_across_dst_the_last_runs_the_image_and_alarm_states() {
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    json(
        &endpoint,
        &[
            "up", "--env", "local", "--image", IMAGE, "--yes", "--output", "json",
        ],
    );

    // Two finished runs in the job's log group, as the job writes them.
    let config = moto_config(&endpoint).await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
    let group = "/ecs/qbo-invoice-processor";
    logs.create_log_stream()
        .log_group_name(group)
        .log_stream_name("ecs/invoice-processor/t1")
        .send()
        .await
        .unwrap();
    let now = jiff::Timestamp::now().as_millisecond();
    let lines = [
        (
            now - 7_200_000,
            r#"{"event":"run_finished","job":"create-invoices","success":false,"duration_ms":600000}"#,
        ),
        (
            now - 5_400_000,
            r#"{"event":"run_finished","job":"create-invoices","shard":"1/2","run_group":"create-invoices-g1","success":true,"duration_ms":100000}"#,
        ),
        (
            now - 5_300_000,
            r#"{"event":"run_finished","job":"create-invoices","shard":"2/2","run_group":"create-invoices-g1","success":false,"duration_ms":200000}"#,
        ),
        (
            now - 3_600_000,
            r#"{"event":"progress","done":1,"total":2}"#,
        ),
        (
            now - 60_000,
            r#"{"event":"run_finished","job":"send-invoices","success":true,"duration_ms":90000}"#,
        ),
    ];
    let mut put = logs
        .put_log_events()
        .log_group_name(group)
        .log_stream_name("ecs/invoice-processor/t1");
    for (ts, line) in lines {
        put = put.log_events(
            InputLogEvent::builder()
                .timestamp(ts)
                .message(line)
                .build()
                .unwrap(),
        );
    }
    put.send().await.unwrap();
    let cw = aws_sdk_cloudwatch::Client::new(&config);
    cw.set_alarm_state()
        .alarm_name("qbo-invoice-processor-run-failed")
        .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
        .state_reason("test")
        .send()
        .await
        .unwrap();

    // Just before the March 2027 change: 05:00 stays 05:00 in Los Angeles.
    let at = "2027-03-13T00:00:00Z";
    let status = json(
        &endpoint,
        &["status", "--env", "local", "--at", at, "--output", "json"],
    );
    let daily = status["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "qbo-send-invoices-daily")
        .unwrap();
    assert_eq!(daily["expression"], "cron(0 5 * * ? *)");
    assert_eq!(daily["timezone"], "America/Los_Angeles");
    assert_eq!(
        daily["next_runs"],
        serde_json::json!([
            "2027-03-13 05:00 PST (-08:00)",
            "2027-03-14 05:00 PDT (-07:00)",
            "2027-03-15 05:00 PDT (-07:00)"
        ])
    );
    let monthly = status["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "qbo-create-invoices-monthly")
        .unwrap();
    assert_eq!(monthly["next_runs"][0], "2027-04-04 09:00 PDT (-07:00)");
    assert_eq!(status["image"], IMAGE);

    let runs = status["recent_runs"].as_array().unwrap();
    let summary: Vec<(&str, bool)> = runs
        .iter()
        .map(|r| (r["job"].as_str().unwrap(), r["success"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("send-invoices", true),
            ("create-invoices", false),
            ("create-invoices", false)
        ],
        "{status}"
    );
    assert_eq!(runs[0]["duration_ms"], 90000);
    // The two shards of one run are one run: it failed if one did, took the longest.
    assert_eq!(runs[1]["shards"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(runs[1]["duration_ms"], 200_000);

    let alarm = |name: &str| -> Value {
        status["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(alarm("qbo-invoice-processor-run-failed"), "ALARM");
    assert_ne!(
        alarm("qbo-invoice-processor-send-invoices-success-missing"),
        "ALARM"
    );

    let text = deployer(&endpoint, &["status", "--env", "local", "--at", at]);
    assert!(text.status.success(), "{}", stderr(&text));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("qbo-send-invoices-daily  cron(0 5 * * ? *) America/Los_Angeles\n      next: 2027-03-13 05:00 PST (-08:00)"), "{text}");
    assert!(text.contains("create-invoices  FAILED  10.0 min"), "{text}");
    assert!(
        text.contains("ALARM              qbo-invoice-processor-run-failed"),
        "{text}"
    );
}

#[tokio::test]
async fn rollback_after_two_pushes_runs_the_first_image_and_a_plain_up_keeps_it() {
    use fakes::emulators::Registry;
    let moto = Moto::start().unwrap();
    let registry = Registry::start().unwrap();
    let run = |args: &[&str]| {
        let out = super::deployer_command(Some(&moto.endpoint()))
            .args(args)
            .env("DEPLOYER_REGISTRY", registry.host())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    };
    let binary = super::image::job_binary();
    let dir = tempfile::tempdir().unwrap();
    let second = dir.path().join("qbo-invoice-processor");
    let mut bytes = std::fs::read(&binary).unwrap();
    bytes.extend_from_slice(b"release 2");
    std::fs::write(&second, bytes).unwrap();

    let push = |path: &std::path::Path| -> Value {
        serde_json::from_slice(
            &run(&[
                "push-image",
                "--env",
                "local",
                "--binary",
                path.to_str().unwrap(),
                "--output",
                "json",
            ])
            .stdout,
        )
        .unwrap()
    };
    let first = push(&binary);
    run(&["up", "--env", "local", "--yes"]);
    let later = push(&second);
    run(&["up", "--env", "local", "--yes"]);
    let deployed = || -> Value {
        let out = run(&["status", "--env", "local", "--output", "json"]);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["image"].clone()
    };
    assert_eq!(deployed(), later["image"]);

    let out = run(&["rollback", "--env", "local", "--yes"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("to {}", first["digest"].as_str().unwrap()))
    );
    assert_eq!(deployed(), first["image"], "the first image runs again");

    let again: Value =
        serde_json::from_slice(&run(&["up", "--env", "local", "--yes", "--output", "json"]).stdout)
            .unwrap();
    assert_eq!(
        again["calls"]["writes"], 0,
        "a plain up keeps the rolled-back image: {again}"
    );
    let schedules = aws_sdk_scheduler::Client::new(&moto_config(&moto.endpoint()).await);
    let target = schedules
        .get_schedule()
        .group_name("qbo-invoice-processor")
        .name("qbo-send-invoices-daily")
        .send()
        .await
        .unwrap();
    let td = target
        .target()
        .unwrap()
        .ecs_parameters()
        .unwrap()
        .task_definition_arn()
        .to_owned();
    assert!(
        td.ends_with(":3"),
        "the schedule runs the rollback's revision: {td}"
    );

    // --to takes a digest explicitly; anything else is refused.
    let bad = super::deployer_command(Some(&moto.endpoint()))
        .args(["rollback", "--env", "local", "--to", "latest", "--yes"])
        .env("DEPLOYER_REGISTRY", registry.host())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("--to latest is not an image digest"),
        "{}",
        stderr(&bad)
    );
}

/// Clients for assertions on the tasks moto started.
async fn ecs(
    moto: &Moto,
) -> (
    aws_sdk_ecs::Client,
    aws_sdk_ec2::Client,
    aws_sdk_scheduler::Client,
) {
    let c = moto_config(&moto.endpoint()).await;
    (
        aws_sdk_ecs::Client::new(&c),
        aws_sdk_ec2::Client::new(&c),
        aws_sdk_scheduler::Client::new(&c),
    )
}

const CLUSTER: &str = "qbo-invoice-processor-cluster";

#[tokio::test]
async fn run_task_starts_the_job_with_the_schedules_network_and_command() {
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    json(
        &endpoint,
        &[
            "up", "--env", "local", "--image", IMAGE, "--yes", "--output", "json",
        ],
    );
    let (ecs, ec2, scheduler) = ecs(&moto).await;

    let out = deployer(
        &endpoint,
        &[
            "run-task",
            "create",
            "--env",
            "local",
            "--no-wait",
            "--",
            "--clients",
            "10001-10010",
            "--dry-run",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let arn = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        arn.starts_with("arn:aws:ecs:us-east-1:123456789012:task/"),
        "{arn}"
    );

    let schedule = scheduler
        .get_schedule()
        .group_name("qbo-invoice-processor")
        .name("qbo-create-invoices-monthly")
        .send()
        .await
        .unwrap();
    let target = schedule.target().unwrap();
    let vpc = target
        .ecs_parameters()
        .unwrap()
        .network_configuration()
        .unwrap()
        .awsvpc_configuration()
        .unwrap();
    let task = ecs
        .describe_tasks()
        .cluster(CLUSTER)
        .tasks(&arn)
        .send()
        .await
        .unwrap();
    let task = &task.tasks()[0];
    assert_eq!(
        Some(target.ecs_parameters().unwrap().task_definition_arn()),
        task.task_definition_arn()
    );
    let command = task.overrides().unwrap().container_overrides()[0]
        .command()
        .to_vec();
    // The schedule's command, then the arguments given after `--`; its deadline.
    assert_eq!(
        command,
        ["--create-invoices", "--clients", "10001-10010", "--dry-run"]
    );
    let vars: Vec<(&str, &str)> = task.overrides().unwrap().container_overrides()[0]
        .environment()
        .iter()
        .map(|v| (v.name().unwrap(), v.value().unwrap()))
        .collect();
    assert_eq!(vars, [("JOB_TIMEOUT", "8h")]);
    // And the schedule's own size.
    let overrides = task.overrides().unwrap();
    assert_eq!(overrides.cpu(), Some("512"));
    assert_eq!(overrides.memory(), Some("1024"));
    // With the container's hard limit moved to match (it is the task definition's 512).
    assert_eq!(overrides.container_overrides()[0].memory(), Some(1024));
    // The stand-in holds ECS's rule: a task smaller than a container's limit is refused.
    let refused = ecs
        .run_task()
        .cluster(CLUSTER)
        .task_definition(task.task_definition_arn().unwrap())
        .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
        .network_configuration(task_network(task))
        .overrides(
            aws_sdk_ecs::types::TaskOverride::builder()
                .memory("256")
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_sdk_ecs::error::ProvideErrorMetadata::code(&refused),
        Some("InvalidParameterException"),
        "{refused:?}"
    );
    let details = task.attachments()[0].details();
    let subnet = details
        .iter()
        .find(|d| d.name() == Some("subnetId"))
        .and_then(|d| d.value())
        .unwrap();
    assert!(
        vpc.subnets().contains(&subnet.to_owned()),
        "{subnet} is one of the schedule's subnets"
    );
    let eni = details
        .iter()
        .find(|d| d.name() == Some("networkInterfaceId"))
        .and_then(|d| d.value())
        .unwrap();
    let nics = ec2
        .describe_network_interfaces()
        .network_interface_ids(eni)
        .send()
        .await
        .unwrap();
    let groups: Vec<&str> = nics.network_interfaces()[0]
        .groups()
        .iter()
        .filter_map(|g| g.group_id())
        .collect();
    assert_eq!(
        groups,
        vpc.security_groups(),
        "the schedule's security group"
    );

    // --shards: one task per shard, each told which one it is.
    let out = deployer(
        &endpoint,
        &[
            "run-task",
            "create",
            "--env",
            "local",
            "--no-wait",
            "--shards",
            "3",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let arns: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(arns.len(), 3);
    let tasks = ecs
        .describe_tasks()
        .cluster(CLUSTER)
        .set_tasks(Some(arns))
        .send()
        .await
        .unwrap();
    let mut shards: Vec<String> = tasks
        .tasks()
        .iter()
        .map(|t| {
            t.overrides().unwrap().container_overrides()[0]
                .command()
                .join(" ")
        })
        .collect();
    shards.sort();
    assert_eq!(
        shards,
        [
            "--create-invoices --shard 1/3",
            "--create-invoices --shard 2/3",
            "--create-invoices --shard 3/3"
        ]
    );
    // One run group for the three, in their logs.
    let groups: std::collections::BTreeSet<String> = tasks
        .tasks()
        .iter()
        .map(|t| {
            let env = t.overrides().unwrap().container_overrides()[0].environment();
            let group = env.iter().find(|v| v.name() == Some("RUN_GROUP")).unwrap();
            group.value().unwrap().to_owned()
        })
        .collect();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert!(groups.first().unwrap().starts_with("create-invoices-"));
}

/// Starts `run-task send` (through `endpoint`), writes `lines` to the task's log stream
/// once it exists, and returns the finished command's output.
async fn run_send_and_log(moto: &Moto, endpoint: &str, lines: &[&str]) -> std::process::Output {
    let (ecs, _, _) = ecs(moto).await;
    let before = ecs
        .list_tasks()
        .cluster(CLUSTER)
        .send()
        .await
        .unwrap()
        .task_arns()
        .to_vec();
    let child = super::deployer_command(Some(endpoint))
        .args(["run-task", "send", "--env", "local"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let logs = aws_sdk_cloudwatchlogs::Client::new(&moto_config(&moto.endpoint()).await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let task = loop {
        let listed = ecs.list_tasks().cluster(CLUSTER).send().await.unwrap();
        if let Some(arn) = listed.task_arns().iter().find(|a| !before.contains(a)) {
            break arn.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no task started");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let stream = format!("ecs/invoice-processor/{}", task.rsplit('/').next().unwrap());
    // The stream may exist already (ECS, or moto, makes it when the task starts).
    let _ = logs
        .create_log_stream()
        .log_group_name("/ecs/qbo-invoice-processor")
        .log_stream_name(&stream)
        .send()
        .await;
    let now = jiff::Timestamp::now().as_millisecond();
    let mut put = logs
        .put_log_events()
        .log_group_name("/ecs/qbo-invoice-processor")
        .log_stream_name(&stream);
    for (i, line) in lines.iter().enumerate() {
        put = put.log_events(
            InputLogEvent::builder()
                .timestamp(now + i64::try_from(i).unwrap())
                .message(*line)
                .build()
                .unwrap(),
        );
    }
    put.send().await.unwrap();
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn run_task_waits_streams_the_tasks_log_lines_and_exits_with_its_code() {
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    json(
        &endpoint,
        &[
            "up", "--env", "local", "--image", IMAGE, "--yes", "--output", "json",
        ],
    );

    let out = run_send_and_log(
        &moto,
        &endpoint,
        &[
            r#"{"event":"run_started","job":"send-invoices"}"#,
            r#"{"event":"run_finished","job":"send-invoices","success":true,"sent":2}"#,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("run_started  job=send-invoices"), "{text}");
    assert!(
        text.contains("run_finished  job=send-invoices sent=2 success=true"),
        "{text}"
    );
    assert!(stderr(&out).contains("STOPPED: exit 0"), "{}", stderr(&out));

    // moto's tasks always exit 0: a proxy turns this one's exit code into 3.
    let proxy = fakes::fault_proxy::FaultProxy::rewriting(
        moto.addr(),
        "DescribeTasks",
        r#""exitCode": 0"#,
        r#""exitCode": 3"#,
    )
    .unwrap();
    let out = run_send_and_log(
        &moto,
        &proxy.endpoint(),
        &[r#"{"event":"run_finished","job":"send-invoices","success":false}"#],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "the container's own exit code: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("the job exited with code 3"),
        "{}",
        stderr(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("success=false"));
}

#[test]
fn run_task_local_runs_the_binary_with_the_task_definitions_environment_and_command() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.sh");
    let dump = dir.path().join("env.txt");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"args: $*\" > {0}\nenv >> {0}\nexit 4\n",
            dump.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", script.to_str().unwrap()])
        .status()
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args([
            "run-task",
            "send",
            "--env",
            "local",
            "--local",
            "--binary",
            script.to_str().unwrap(),
            "--",
            "--dry-run",
        ])
        .current_dir(super::root())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "the job's own exit code: {}",
        stderr(&out)
    );
    let seen = std::fs::read_to_string(&dump).unwrap();
    assert!(
        seen.starts_with("args: --send-invoices --dry-run\n"),
        "{seen}"
    );
    for var in [
        "QBO_SECRET_NAME=QBO/10000",
        "DYNAMODB_TABLE_ROBOCORP_CLIENTS=Robocorp_Client_Org_Workspace_IDs",
        "EXCLUDED_CUSTOMERS=10001 - AICPA",
        "QBO_BASE_URL=http://127.0.0.1:8080/qbo",
        "AWS_REGION=us-east-1",
        // The schedule's deadline.
        "JOB_TIMEOUT=1h",
    ] {
        assert!(seen.lines().any(|l| l == var), "{var} missing:\n{seen}");
    }
}

#[test]
fn run_task_local_on_a_terminal_shows_readable_lines_and_piped_the_jobs_own() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.sh");
    std::fs::write(
        &job,
        "#!/bin/sh\necho '{\"timestamp\":\"2026-11-04T17:00:00Z\",\"level\":\"INFO\",\"event\":\"run_finished\",\"job\":\"send-invoices\",\"success\":true}'\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", job.to_str().unwrap()])
        .status()
        .unwrap();
    let command = format!(
        "{} run-task send --env local --local --binary {}",
        env!("CARGO_BIN_EXE_deployer"),
        job.display()
    );
    // On a terminal (util-linux `script` gives the command one): the line as `logs`
    // shows it, in the billing time zone.
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(super::root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(
            "2026-11-04 09:00:00 PST  INFO  run_finished  job=send-invoices success=true"
        ),
        "{text}"
    );
    // Piped: the job's own JSON line.
    let out = std::process::Command::new("sh")
        .args(["-c", &command])
        .current_dir(super::root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("{\"timestamp\":\"2026-11-04T17:00:00Z\""),
        "{text}"
    );
}

#[tokio::test]
async fn logs_prints_the_groups_lines_readably_or_as_written_and_by_task() {
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    json(
        &endpoint,
        &[
            "up", "--env", "local", "--image", IMAGE, "--yes", "--output", "json",
        ],
    );
    let logs = aws_sdk_cloudwatchlogs::Client::new(&moto_config(&endpoint).await);
    let group = "/ecs/qbo-invoice-processor";
    let now = jiff::Timestamp::now().as_millisecond();
    for (task, line, age) in [
        (
            "aaa",
            r#"{"event":"run_started","job":"send-invoices"}"#,
            120_000,
        ),
        ("bbb", "plain line from another task", 60_000),
        (
            "aaa",
            r#"{"event":"run_finished","job":"send-invoices","success":true}"#,
            30_000,
        ),
    ] {
        let stream = format!("ecs/invoice-processor/{task}");
        let _ = logs
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(&stream)
            .send()
            .await;
        logs.put_log_events()
            .log_group_name(group)
            .log_stream_name(&stream)
            .log_events(
                InputLogEvent::builder()
                    .timestamp(now - age)
                    .message(line)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    let text = |args: &[&str]| {
        let out = deployer(&endpoint, args);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let all = text(&["logs", "--env", "local", "--since", "1h"]);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 3, "{all}");
    assert!(
        lines[0].ends_with("  run_started  job=send-invoices"),
        "oldest first: {all}"
    );
    assert!(
        lines[1].ends_with("  plain line from another task"),
        "{all}"
    );
    assert!(
        lines[2].ends_with("  run_finished  job=send-invoices success=true"),
        "{all}"
    );

    let raw = text(&[
        "logs",
        "--env",
        "local",
        "--json",
        "--task",
        "arn:aws:ecs:us-east-1:123456789012:task/c/aaa",
    ]);
    assert_eq!(
        raw.lines().collect::<Vec<_>>(),
        [
            r#"{"event":"run_started","job":"send-invoices"}"#,
            r#"{"event":"run_finished","job":"send-invoices","success":true}"#
        ]
    );
    assert!(
        text(&["logs", "--env", "local", "--since", "1m"])
            .lines()
            .count()
            == 1,
        "only the last minute"
    );

    let out = deployer(
        &endpoint,
        &["logs", "--env", "local", "--since", "yesterday"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--since yesterday is not a duration"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn run_task_local_runs_the_real_job_against_the_fakes_with_the_task_definitions_env() {
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    let month = fakes::generate::month(12, 2026, 10);
    let server = fakes::server::Fakes::start(&month.seed).await.unwrap();
    let config = moto_config(&endpoint).await;
    fakes::aws_seed::seed(&config, &month, fakes::generate::TABLE)
        .await
        .unwrap();
    // `up` would create it.
    fakes::aws_seed::state_table(&config, fakes::generate::STATE_TABLE)
        .await
        .unwrap();
    // The local environment as shipped, with the fakes on this test's port.
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(super::root().join("infra/envs/local.toml")).unwrap();
    let port = server.url().rsplit(':').next().unwrap().to_owned();
    std::fs::write(
        dir.path().join("local.toml"),
        shipped.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args(["--env-dir", dir.path().to_str().unwrap()])
        .args([
            "run-task", "create", "--env", "local", "--local", "--binary",
        ])
        .arg(super::image::job_binary())
        .args(["--", "--period", "2026-10"])
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .unwrap();
    // The generated month has clients that fail on purpose: the job exits 1, and so
    // does the deployer.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = String::from_utf8_lossy(&out.stdout);
    let finished: Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(finished["event"], "run_finished");
    assert_eq!(finished["job"], "create-invoices");
    let billed = month.invoiced().count();
    assert_eq!(finished["done"], billed);
    let invoices = server.qbo.lock().unwrap().invoices().len();
    assert_eq!(invoices, billed, "the invoices are in the fake QBO");
}

/// The network a started task got, to start another like it.
fn task_network(task: &aws_sdk_ecs::types::Task) -> aws_sdk_ecs::types::NetworkConfiguration {
    let subnet = task.attachments()[0]
        .details()
        .iter()
        .find(|d| d.name() == Some("subnetId"))
        .and_then(|d| d.value())
        .unwrap()
        .to_owned();
    aws_sdk_ecs::types::NetworkConfiguration::builder()
        .awsvpc_configuration(
            aws_sdk_ecs::types::AwsVpcConfiguration::builder()
                .subnets(subnet)
                .build()
                .unwrap(),
        )
        .build()
}

/// README step 3 as an administrator runs it, against IAM's quotas (the proxy holds
/// them; moto holds none): every printed policy is created and attached, where the
/// whole document in one policy is refused.
#[tokio::test]
async fn readme_step_three_creates_and_attaches_every_policy_within_iams_quotas() {
    let moto = Moto::start().unwrap();
    let proxy =
        fakes::fault_proxy::FaultProxy::with(moto.addr(), fakes::fault_proxy::Options::default())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = super::deployer_command(None)
        .args([
            "policy",
            "--env",
            "prod",
            "--account",
            "123456789012",
            "--out-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let iam = aws_sdk_iam::Client::new(&moto_config(&proxy.endpoint()).await);
    iam.create_user()
        .user_name("deployer")
        .send()
        .await
        .unwrap();
    let created = super::iam::run_policy_commands(&iam, &text).await;
    assert!(created.len() >= 2, "the policy needs more than one: {text}");
    let attached = iam
        .list_attached_user_policies()
        .user_name("deployer")
        .send()
        .await
        .unwrap();
    assert_eq!(attached.attached_policies().len(), created.len());

    // The same statements as one policy, as README step 3 used to create it: refused.
    let statements: Vec<Value> = created
        .iter()
        .flat_map(|d| d["Statement"].as_array().unwrap().clone())
        .collect();
    let whole = serde_json::json!({"Version": "2012-10-17", "Statement": statements});
    let refused = iam
        .create_policy()
        .policy_name("qbo-invoice-processor-deployer")
        .policy_document(whole.to_string())
        .send()
        .await
        .unwrap_err();
    let refused = aws_smithy_types::error::display::DisplayErrorContext(refused).to_string();
    assert!(
        refused.contains("LimitExceeded") && refused.contains("PolicySize: 6144"),
        "{refused}"
    );

    // A user holds at most ten managed policies.
    for i in created.len()..11 {
        let name = format!("filler-{i}");
        let p = iam
            .create_policy()
            .policy_name(&name)
            .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:GetCallerIdentity","Resource":"*"}]}"#)
            .send()
            .await
            .unwrap();
        let attach = iam
            .attach_user_policy()
            .user_name("deployer")
            .policy_arn(p.policy().unwrap().arn().unwrap())
            .send()
            .await;
        if i < 10 {
            attach.unwrap();
        } else {
            let e = aws_smithy_types::error::display::DisplayErrorContext(attach.unwrap_err())
                .to_string();
            assert!(e.contains("PoliciesPerUser: 10"), "{e}");
        }
    }
}

/// `logs --follow` over several streams: a line that reaches CloudWatch Logs after a
/// newer one, with its older time (another task's batch sent late), is still shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_shows_a_line_that_arrives_late_with_an_older_time() {
    let moto = Moto::start().unwrap();
    let logs = aws_sdk_cloudwatchlogs::Client::new(&moto_config(&moto.endpoint()).await);
    let group = "/ecs/qbo-invoice-processor";
    logs.create_log_group()
        .log_group_name(group)
        .send()
        .await
        .unwrap();
    for stream in ["ecs/invoice-processor/a", "ecs/invoice-processor/b"] {
        logs.create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await
            .unwrap();
    }
    let put = |stream: &'static str, at: i64, message: &'static str| {
        let logs = logs.clone();
        async move {
            logs.put_log_events()
                .log_group_name(group)
                .log_stream_name(stream)
                .log_events(
                    InputLogEvent::builder()
                        .timestamp(at)
                        .message(message)
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
        }
    };
    let now = jiff::Timestamp::now().as_millisecond();
    put(
        "ecs/invoice-processor/a",
        now - 1000,
        r#"{"event":"newer"}"#,
    )
    .await;
    let mut child = super::deployer_command(Some(&moto.endpoint()))
        .args([
            "logs", "--env", "local", "--follow", "--since", "1h", "--output", "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let wait_for = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200))
                && line.contains(want)
            {
                return true;
            }
        }
        false
    };
    assert!(wait_for("newer"), "the first line");
    // Another stream's line, a minute older than the one already shown.
    put(
        "ecs/invoice-processor/b",
        now - 60_000,
        r#"{"event":"late"}"#,
    )
    .await;
    let shown = wait_for("late");
    let _ = child.kill();
    let _ = child.wait();
    assert!(shown, "the late line was skipped");
}
