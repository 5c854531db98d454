//! `deployer synth` and the command line: outputs, exit codes, messages, help.

use std::process::Command;

use super::{deployer, deployer_in, root, stderr, stdout};

#[test]
fn synth_prod_json_lists_the_stack_and_exits_zero() {
    let out = deployer(&["synth", "--env", "prod", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stack: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(stack["environment"], "prod");
    assert_eq!(stack["account"], "${account}");
    let resources = stack["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 24);
    let role = resources
        .iter()
        .find(|r| r["name"] == "ecsTaskRole-QBOInvoiceProcessor")
        .unwrap();
    assert_eq!(role["kind"], "iam-role");
    let policy = &role["properties"]["inline_policies"]["secrets-and-client-table"];
    assert_eq!(
        policy["Statement"][1]["Action"],
        "secretsmanager:PutSecretValue"
    );
}

#[test]
fn synth_text_shows_placeholders_waves_and_policies() {
    let out = deployer(&["synth", "--env", "prod"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("qbo-invoice-processor · env prod · us-west-2 · account ${account}\n24 resources in 4 dependency waves"), "{text}");
    let placeholder = text
        .lines()
        .find(|l| l.trim_start().starts_with("${image-digest}"))
        .unwrap();
    assert!(
        placeholder.ends_with("the newest image pushed with `deployer push-image`, or --image"),
        "{text}"
    );
    assert!(
        text.contains("  iam-role EventBridgeECSRole-QBOInvoiceProcessor\n"),
        "{text}"
    );
    assert!(text.contains("\"Sid\": \"PassOnlyTheTaskRoles\""), "{text}");
}

#[test]
fn synth_finds_the_environment_directory_from_a_subdirectory() {
    let out = deployer_in(
        &root().join("deployer/src"),
        &["synth", "--env", "local", "--output", "json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"environment\": \"local\""));
}

#[test]
fn invalid_environment_file_exits_2_naming_file_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "region = \"us-west-2\"\n[job]\nbookkeeper_email = \"x\"\nsender_email = \"s@example.com\"\nms_graph_hostname = \"h.example.com\"\n[task]\ncpu = 1024\nmemory = 1024\n",
    )
    .unwrap();
    let out = deployer(&["synth", "--env", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: {} is not a valid environment file:",
            path.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("job.bookkeeper_email: `x` is not an email address"),
        "{err}"
    );
    assert!(
        err.contains("task.cpu/task.memory: cpu 1024 takes memory 2048-8192"),
        "{err}"
    );
    assert_eq!(err.matches("fix: ").count(), 2, "{err}");
    assert!(stdout(&out).is_empty(), "nothing half-written on stdout");
}

#[test]
fn unknown_environment_exits_2_and_lists_the_available_ones() {
    let out = deployer(&["synth", "--env", "staging"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("error: no environment named `staging` in infra/envs; available: local, prod"),
        "{err}"
    );
    assert!(err.contains("help: pass one of the names listed"), "{err}");
}

#[test]
fn no_environment_directory_exits_2_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let out = deployer_in(dir.path(), &["synth", "--env", "prod"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("infra/envs was not found"), "{err}");
    assert!(err.contains("--env-dir"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let out = deployer(&["synth"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--env <NAME>"));
    let out = deployer(&["synth", "--env", "prod", "--output", "yaml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_snapshots() {
    let version = stdout(&deployer(&["--version"]));
    assert!(
        version.starts_with("deployer 0.1.0 (commit "),
        "--version names the commit: {version}"
    );
    insta::assert_snapshot!("help", stdout(&deployer(&["--help"])));
    for command in [
        "synth",
        "diff",
        "up",
        "destroy",
        "push-image",
        "status",
        "rollback",
        "logs",
        "run-task",
        "tasks",
        "verify",
        "cost",
        "policy",
        "completions",
    ] {
        insta::assert_snapshot!(
            format!("{command}_help"),
            stdout(&deployer(&[command, "--help"]))
        );
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _deployer"),
        ("zsh", "#compdef deployer"),
        ("fish", "complete -c deployer"),
    ] {
        let out = deployer(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = stdout(&out);
        assert!(
            text.contains(marker),
            "{shell}: {}",
            &text[..text.len().min(200)]
        );
        assert!(
            text.contains("run-task") && text.contains("rollback"),
            "{shell} completes the subcommands"
        );
    }
    // A closed pipe (`| head -1`) is not an error: the reading end is closed before
    // the deployer writes.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args(["completions", "fish"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn cost_prints_the_monthly_estimate_for_the_environment() {
    let out = deployer(&["cost", "--env", "prod", "--send-minutes", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Monthly cost of prod (us-west-2)"), "{text}");
    assert!(
        text.contains("qbo-send-invoices-daily: 30.4 runs a month of 10 min each, 0.5 vCPU / 1 GB"),
        "{text}"
    );
    // Each schedule at its size: 30.4 x 10 min at 0.5 vCPU, 30 min at 2 vCPU, the
    // 1-min billing check at 0.25 vCPU = 3.5 vCPU-h, $0.14; 7.1 GB-h ($0.03), 4 secrets
    // ($1.60), 3 alarms ($0.30), 2 metrics ($0.60), logs and images ($0.06).
    assert!(text.contains("3.5 vCPU-h"), "{text}");
    assert!(text.contains("7.1 GB-h"), "{text}");
    let total = text.lines().find(|l| l.starts_with("total")).unwrap();
    assert!(total.trim_end().ends_with("$2.73"), "{total}");
    // The same estimate for scripts.
    let out = deployer(&[
        "cost",
        "--env",
        "prod",
        "--send-minutes",
        "10",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!((v["total"].as_f64().unwrap() - 2.73).abs() < 0.005, "{v}");
    assert_eq!(v["lines"][0]["item"], "Fargate vCPU");
}

#[test]
fn policy_is_scoped_to_the_stack_and_passes_the_policy_linter() {
    let out = deployer(&["policy", "--env", "prod", "--account", "123456789012"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let policies = printed["policies"].as_array().unwrap();
    // Each fits one managed policy (6,144 characters, white space not counted), and
    // all of them fit the 10 a user may have attached.
    assert!((1..=10).contains(&policies.len()), "{}", policies.len());
    for p in policies {
        let counted = p["document"]
            .to_string()
            .chars()
            .filter(|c| !c.is_whitespace())
            .count();
        assert_eq!(p["characters"], counted);
        assert!(counted <= 6144, "{} holds {counted}", p["name"]);
    }
    let statements: Vec<serde_json::Value> = policies
        .iter()
        .flat_map(|p| p["document"]["Statement"].as_array().unwrap().clone())
        .collect();
    // Plans and status read alarms by prefix, which IAM authorizes on `alarm:*`; the
    // ECS service-linked role may be made, only for ECS.
    let reads = statements
        .iter()
        .find(|s| s["Sid"] == "AlarmReads")
        .unwrap();
    assert_eq!(
        reads["Resource"],
        serde_json::json!(["arn:aws:cloudwatch:us-west-2:123456789012:alarm:*"])
    );
    let linked = statements
        .iter()
        .find(|s| s["Sid"] == "EcsServiceLinkedRole")
        .unwrap();
    assert_eq!(
        linked["Condition"]["StringLike"]["iam:AWSServiceName"],
        "ecs.amazonaws.com"
    );
    // Every resource is this account's, named from the stack, but for the actions AWS
    // offers no resource for.
    for s in &statements {
        for r in s["Resource"].as_array().unwrap() {
            let r = r.as_str().unwrap();
            assert!(
                r == "*"
                    || r.contains(":123456789012:")
                    || r.starts_with("arn:aws:iam::123456789012:"),
                "{s}"
            );
        }
    }
    let roles = statements.iter().find(|s| s["Sid"] == "Roles").unwrap();
    assert_eq!(
        roles["Resource"].as_array().unwrap().len(),
        3,
        "exactly the stack's three roles: {roles}"
    );

    // parliament (duo-labs' IAM linter, in .venv-policy/ from `make tools`) finds
    // nothing: no `*` where the action takes a resource, no resource an action cannot
    // use, no unknown action.
    let linter = root().join(".venv-policy/bin/parliament");
    assert!(
        linter.is_file(),
        "run `make tools` first: {} is missing",
        linter.display()
    );
    let list = statements
        .iter()
        .find(|s| s["Sid"] == "ListTheJobsTasks")
        .unwrap();
    assert_eq!(list["Resource"], serde_json::json!(["*"]));
    assert_eq!(
        list["Condition"]["ArnEquals"]["ecs:cluster"],
        serde_json::json!([
            "arn:aws:ecs:us-west-2:123456789012:cluster/qbo-invoice-processor-cluster"
        ])
    );
    for p in policies {
        let mut child = Command::new(&linter)
            .arg("--json")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            child.stdin.as_mut().unwrap(),
            p["document"].to_string().as_bytes(),
        )
        .unwrap();
        let lint = child.wait_with_output().unwrap();
        // Every finding but one: ListTasks on `*` (see `ListTheJobsTasks` in policy.rs).
        let findings: Vec<serde_json::Value> = stdout(&lint)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .filter(|f: &serde_json::Value| {
                !(f["issue"] == "RESOURCE_STAR"
                    && f["detail"] == serde_json::json!(["ecs:ListTasks"]))
            })
            .collect();
        assert!(findings.is_empty(), "{findings:#?}\n{}", stderr(&lint));
    }
}

/// docs/reference/deployer.md is `deployer --markdown-help`, and every subcommand and
/// long flag `--help` shows is in it.
#[test]
fn the_command_reference_is_generated_from_the_cli_and_current() {
    let reference = root().join("docs/reference/deployer.md");
    fakes::cli_reference::check(
        std::path::Path::new(env!("CARGO_BIN_EXE_deployer")),
        &reference,
    )
    .unwrap_or_else(|e| panic!("{e}"));
}
