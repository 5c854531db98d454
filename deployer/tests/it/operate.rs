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
        [("send-invoices", true), ("create-invoices", false)],
        "{status}"
    );
    assert_eq!(runs[0]["duration_ms"], 90000);

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
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_deployer"))
            .args(args)
            .current_dir(super::root())
            .env("AWS_ENDPOINT_URL", moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
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
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args(["rollback", "--env", "local", "--to", "latest", "--yes"])
        .current_dir(super::root())
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
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
