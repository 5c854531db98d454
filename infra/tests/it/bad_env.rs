//! Each way an environment file can be wrong gets a message naming the file, the key
//! and the fix, before anything touches AWS.

use std::path::Path;

use infra::Environment;

/// The smallest valid file: everything else takes the original deployment's defaults.
const BASE: &str = r#"
region = "us-west-2"

[job]
bookkeeper_email = "bookkeeper@example.com"
sender_email = "billing@example.com"
ms_graph_hostname = "example.sharepoint.com"
"#;

/// The error text for a file made of BASE plus `extra` (later tables may repeat none of
/// BASE's keys, so tests that change BASE's values use `replace`).
fn error_for(text: &str) -> String {
    match Environment::parse(Path::new("infra/envs/staging.toml"), text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn with(extra: &str) -> String {
    error_for(&format!("{BASE}\n{extra}"))
}

fn replaced(from: &str, to: &str) -> String {
    assert!(BASE.contains(from));
    error_for(&BASE.replace(from, to))
}

fn schedule(fields: &str) -> String {
    format!("[[schedules.job]]\n{fields}\n")
}

const SEND: &str = "name = \"send\"\ncron = \"0 5 * * ? *\"\ntimezone = \"America/Los_Angeles\"\ncommand = [\"--send-invoices\"]";

/// Every message starts with the file and lists problems with a `fix:` each.
fn assert_message(err: &str, key: &str, says: &str, fix: &str) {
    assert!(
        err.starts_with("infra/envs/staging.toml is not a valid environment file:"),
        "{err}"
    );
    let entry = err
        .split("\n  - ")
        .find(|e| e.contains(key))
        .unwrap_or_else(|| panic!("no problem for `{key}` in:\n{err}"));
    assert!(entry.contains(says), "`{says}` not in:\n{entry}");
    assert!(
        entry.contains(&format!("fix: {fix}")),
        "fix `{fix}` not in:\n{entry}"
    );
}

#[test]
fn base_file_is_valid_and_takes_the_original_names() {
    let env = Environment::parse(Path::new("staging.toml"), BASE).unwrap();
    assert_eq!(env.name, "staging");
    assert_eq!(env.file.roles.task, "ecsTaskRole-QBOInvoiceProcessor");
    assert_eq!(env.alert_email(), "bookkeeper@example.com");
}

#[test]
fn unknown_top_level_key_is_named_with_its_line() {
    let err = error_for(&format!("regoin = \"us-west-2\"\n{BASE}"));
    assert_message(
        &err,
        "unknown field `regoin`",
        "expected one of",
        "remove the key or correct its spelling",
    );
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn unknown_nested_key_is_named_with_its_path() {
    let err = with("[task]\ncpuu = 2048\n");
    assert_message(
        &err,
        "task.cpuu",
        "unknown field `cpuu`",
        "remove the key or correct its spelling",
    );
    assert!(
        err.contains("line 10: task.cpuu"),
        "the key starts line 10:\n{err}"
    );
}

#[test]
fn missing_required_key_is_named() {
    let err = replaced("sender_email = \"billing@example.com\"\n", "");
    assert_message(&err, "job:", "missing field `sender_email`", "add the key");
}

#[test]
fn wrong_value_type_is_named() {
    let err = with("[task]\ncpu = \"2048\"\n");
    assert_message(
        &err,
        "task.cpu",
        "invalid type",
        "give the value the type shown",
    );
}

#[test]
fn invalid_toml_syntax_gives_the_line() {
    let err = error_for(&format!("{BASE}\n[task\ncpu = 1\n"));
    assert!(err.contains("line 9"), "{err}");
    assert!(
        err.contains("fix: fix the TOML syntax at this line"),
        "{err}"
    );
}

#[test]
fn fargate_memory_that_does_not_fit_the_cpu_is_rejected() {
    let err = with("[task]\ncpu = 2048\nmemory = 2048\n");
    assert_message(
        &err,
        "task.cpu/task.memory",
        "cpu 2048 takes memory 4096-16384 MiB in steps of 1024, not 2048",
        "pick a pair from the Fargate table",
    );
}

#[test]
fn a_schedules_own_size_and_timeout_are_checked() {
    let err = with(&schedule(&format!(
        "{SEND}\ncpu = 256\nmemory = 4096\ntimeout = \"soon\""
    )));
    assert_message(
        &err,
        "schedules.job[0].cpu/memory",
        "cpu 256 takes memory 512, 1024 or 2048, not 4096",
        "pick a pair from the Fargate table",
    );
    assert_message(
        &err,
        "schedules.job[0].timeout",
        "`soon` is not a duration",
        "write a duration such as \"3h\" or \"45m\"",
    );
    // Memory alone is checked against the task's cpu (2048 by default).
    let err = with(&schedule(&format!(
        "{SEND}\nmemory = 1024\ntimeout = \"30h\""
    )));
    assert_message(
        &err,
        "schedules.job[0].cpu/memory",
        "cpu 2048 takes memory 4096-16384",
        "pick a pair",
    );
    assert_message(
        &err,
        "schedules.job[0].timeout",
        "not between 1 s and 24 h",
        "write a duration",
    );
    // A valid pair is accepted and lands in the schedule's input.
    let env = Environment::parse(
        Path::new("staging.toml"),
        &format!(
            "{BASE}\n[alerts]\nheartbeat_schedule = \"send\"\n{}",
            schedule(&format!(
                "{SEND}\ncpu = 256\nmemory = 512\ntimeout = \"20m\""
            ))
        ),
    )
    .unwrap();
    let stack = infra::synthesize(&env, &infra::Context::offline(&env));
    let input = stack
        .of_kind(infra::resources::Kind::Schedule)
        .find_map(|r| match &r.properties {
            infra::resources::Spec::Schedule(s) if r.name == "send" => Some(s.target.input()),
            _ => None,
        })
        .unwrap();
    assert_eq!(input["cpu"], "256");
    assert_eq!(input["memory"], "512");
    assert_eq!(
        input["containerOverrides"][0]["command"],
        serde_json::json!(["--send-invoices"])
    );
    // The deadline as a variable (an older image ignores it instead of refusing a flag).
    assert_eq!(
        input["containerOverrides"][0]["environment"],
        serde_json::json!([{"name": "JOB_TIMEOUT", "value": "20m"}])
    );
}

#[test]
fn cpu_that_fargate_does_not_offer_is_rejected() {
    let err = with("[task]\ncpu = 3000\nmemory = 4096\n");
    assert_message(
        &err,
        "task.cpu/task.memory",
        "cpu 3000 is not a Fargate size",
        "pick a pair",
    );
}

#[test]
fn cron_with_five_fields_is_rejected() {
    let err = with(&schedule(&SEND.replace("0 5 * * ? *", "0 5 * * *")));
    assert_message(
        &err,
        "schedules.job[0].cron",
        "has 5 fields; AWS cron takes 6",
        "write six AWS cron fields",
    );
}

#[test]
fn cron_with_both_day_fields_is_rejected() {
    let err = with(&schedule(&SEND.replace("0 5 * * ? *", "0 5 4 * MON *")));
    assert_message(
        &err,
        "schedules.job[0].cron",
        "sets both day-of-month (4) and day-of-week (MON)",
        "write six AWS cron fields",
    );
}

#[test]
fn cron_value_out_of_range_is_rejected() {
    let err = with(&schedule(&SEND.replace("0 5 * * ? *", "0 25 * * ? *")));
    assert_message(
        &err,
        "schedules.job[0].cron",
        "hours `25` is not valid; use 0-23",
        "write six AWS cron fields",
    );
}

#[test]
fn unknown_time_zone_is_rejected() {
    let err = with(&schedule(
        &SEND.replace("America/Los_Angeles", "Pacific Time"),
    ));
    assert_message(
        &err,
        "schedules.job[0].timezone",
        "`Pacific Time` is not an IANA time zone",
        "use a name such as America/Los_Angeles",
    );
}

#[test]
fn rules_engine_refuses_a_local_time_zone() {
    let err = with(&format!(
        "[schedules]\nengine = \"rules\"\n\n{}",
        schedule(SEND)
    ));
    assert_message(
        &err,
        "schedules.job[0].timezone",
        "engine \"rules\" runs cron in UTC only",
        "set timezone = \"UTC\"",
    );
}

#[test]
fn empty_command_is_rejected() {
    let err = with(&schedule(&SEND.replace("[\"--send-invoices\"]", "[]")));
    assert_message(
        &err,
        "schedules.job[0].command",
        "the command is empty",
        "give the job's flags",
    );
}

#[test]
fn command_without_a_job_flag_is_rejected() {
    let err = with(&schedule(
        &SEND.replace("--send-invoices", "--send-invoice"),
    ));
    assert_message(
        &err,
        "schedules.job[0].command",
        "must contain exactly one of --create-invoices or --send-invoices",
        "start the command with the job to run",
    );
}

#[test]
fn duplicate_schedule_names_are_rejected() {
    let err = with(&format!("{}{}", schedule(SEND), schedule(SEND)));
    assert_message(
        &err,
        "schedules.job[1].name",
        "`send` names two schedules",
        "give each schedule its own name",
    );
}

#[test]
fn malformed_bookkeeper_email_is_rejected() {
    let err = replaced("bookkeeper@example.com", "bookkeeper at example.com");
    assert_message(
        &err,
        "job.bookkeeper_email",
        "`bookkeeper at example.com` is not an email address",
        "write one address like name@example.com",
    );
}

#[test]
fn malformed_alert_email_is_rejected() {
    let err = with("[alerts]\nemail = \"alerts@localhost\"\n");
    assert_message(
        &err,
        "alerts.email",
        "is not an email address",
        "write one address",
    );
}

#[test]
fn sharepoint_host_with_a_scheme_is_rejected() {
    let err = replaced(
        "example.sharepoint.com",
        "https://example.sharepoint.com/sites/x",
    );
    assert_message(
        &err,
        "job.ms_graph_hostname",
        "is not a host name",
        "give the SharePoint host only",
    );
}

#[test]
fn secret_name_with_a_space_cannot_be_an_arn() {
    let err = with("[secrets]\nqbo = \"QBO 10000\"\n");
    assert_message(
        &err,
        "secrets.qbo",
        "has ` `, which a secret name (and so its ARN) cannot hold",
        "give the secret's name",
    );
}

#[test]
fn secret_name_ending_like_an_arn_suffix_is_rejected() {
    let err = with("[secrets]\nclickup = \"ClickUp-abc123\"\n");
    assert_message(
        &err,
        "secrets.clickup",
        "ends in a hyphen and six characters",
        "give the secret's name",
    );
}

#[test]
fn secret_arn_in_another_region_is_rejected() {
    let err = with(
        "[secrets]\nmsgraph = \"arn:aws:secretsmanager:eu-west-1:123456789012:secret:MsGraph/10000-AbCdEf\"\n",
    );
    assert_message(
        &err,
        "secrets.msgraph",
        "is in eu-west-1, but this environment is in us-west-2",
        "give the secret's name (e.g. QBO/10000) or its full ARN in this region",
    );
}

#[test]
fn one_secret_used_twice_is_rejected() {
    let err = with("[secrets]\nqbo = \"Shared/1\"\nclickup = \"Shared/1\"\n");
    assert_message(
        &err,
        "secrets.clickup",
        "`Shared/1` is used for two secrets",
        "each of qbo, msgraph, clickup and robocorp needs its own secret",
    );
}

#[test]
fn invalid_role_name_is_rejected() {
    let err = with("[roles]\ntask = \"task role!\"\n");
    assert_message(
        &err,
        "roles.task",
        "`task role!` is not a valid name (` ` is not allowed)",
        "use 1-64 characters",
    );
}

#[test]
fn upper_case_repository_name_is_rejected() {
    let err = with("[repository]\nname = \"QBO-Invoice\"\n");
    assert_message(
        &err,
        "repository.name",
        "not a valid ECR repository name",
        "use 2-256 lowercase letters",
    );
}

#[test]
fn log_retention_cloudwatch_does_not_offer_is_rejected() {
    let err = with("[logs]\nretention_days = 31\n");
    assert_message(
        &err,
        "logs.retention_days",
        "31 is not a retention CloudWatch Logs offers",
        "use one of 1, 3, 5, 7, 14, 30",
    );
}

#[test]
fn job_environment_may_not_redefine_a_derived_variable() {
    let err = with("[job.environment]\nQBO_SECRET_NAME = \"Other\"\n");
    assert!(
        err.contains("job.environment.QBO_SECRET_NAME: this variable is set by the stack itself"),
        "{err}"
    );
    assert!(err.contains("fix: set it through its own key"), "{err}");
}

#[test]
fn invalid_region_and_account_are_rejected() {
    let err = replaced(
        "region = \"us-west-2\"",
        "region = \"oregon\"\naccount = \"12345\"",
    );
    assert_message(
        &err,
        "region",
        "`oregon` is not an AWS region",
        "use a region code such as us-west-2",
    );
    assert_message(
        &err,
        "account",
        "`12345` is not a 12-digit AWS account id",
        "write the id as a string of 12 digits",
    );
}

#[test]
fn subnet_that_is_not_a_subnet_id_is_rejected() {
    let err = with("[network]\nsubnets = [\"vpc-123\"]\n");
    assert_message(
        &err,
        "network.subnets[0]",
        "`vpc-123` is not a subnet id",
        "use ids like subnet-0123456789abcdef0",
    );
}

#[test]
fn heartbeat_naming_an_unknown_schedule_is_rejected() {
    let err = with("[alerts]\nheartbeat_schedule = \"nightly\"\n");
    assert_message(
        &err,
        "alerts.heartbeat_schedule",
        "no schedule is named `nightly`",
        "name an enabled schedule that runs once a day",
    );
}

#[test]
fn unknown_engine_value_is_rejected() {
    let err = with("[schedules]\nengine = \"cron\"\n");
    assert_message(
        &err,
        "schedules.engine",
        "unknown variant `cron`",
        "use one of the values listed",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let err = error_for(
        &BASE
            .replace("us-west-2", "nowhere")
            .replace("billing@example.com", "billing"),
    );
    assert_eq!(err.matches("\n  - ").count(), 2, "{err}");
    assert_eq!(err.matches("fix: ").count(), 2, "{err}");
}

#[test]
fn file_name_must_make_a_valid_environment_name() {
    let err = Environment::parse(Path::new("infra/envs/Prod Copy.toml"), BASE)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the file name gives the environment name `Prod Copy`"),
        "{err}"
    );
    assert!(err.contains("fix: rename the file"), "{err}");
}

#[test]
fn unknown_environment_lists_the_available_ones() {
    let err = Environment::locate("staging", &super::envs_dir()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no environment named `staging`"), "{text}");
    assert!(text.contains("available: local, prod"), "{text}");
    assert!(err.help().unwrap().contains("NAME.toml"));
}

#[test]
fn heartbeat_on_a_schedule_that_is_not_daily_is_rejected() {
    let monthly = SEND.replace("0 5 * * ? *", "0 9 4 * ? *");
    let err = with(&format!(
        "{}[alerts]\nheartbeat_schedule = \"send\"\n",
        schedule(&monthly)
    ));
    assert_message(
        &err,
        "alerts.heartbeat_schedule",
        "`send` is not an enabled daily schedule",
        "name an enabled schedule that runs once a day",
    );
}

#[test]
fn rules_schedule_may_not_take_the_task_failed_rule_name() {
    let taken = SEND
        .replace(
            "name = \"send\"",
            "name = \"qbo-invoice-processor-task-failed\"",
        )
        .replace("America/Los_Angeles", "UTC");
    let err = with(&format!(
        "[schedules]\nengine = \"rules\"\n\n{}",
        schedule(&taken)
    ));
    assert_message(
        &err,
        "schedules.job[0].name",
        "is the name of the stack's own task-failed rule",
        "choose another schedule name",
    );
}

#[test]
fn secret_arn_without_its_random_suffix_is_rejected() {
    let err = with(
        "[secrets]\nqbo = \"arn:aws:secretsmanager:us-west-2:123456789012:secret:QBO/10000\"\n",
    );
    assert_message(
        &err,
        "secrets.qbo",
        "lacks the `-XXXXXX` suffix",
        "give the secret's name",
    );
}

#[test]
fn one_secret_given_by_name_and_by_arn_is_still_one_secret() {
    let err = with(
        "[secrets]\nqbo = \"QBO/10000\"\nclickup = \"arn:aws:secretsmanager:us-west-2:123456789012:secret:QBO/10000-AbCdEf\"\n",
    );
    assert_message(
        &err,
        "secrets.clickup",
        "is used for two secrets",
        "each of qbo, msgraph, clickup and robocorp needs its own secret",
    );
}

#[test]
fn app_name_that_cannot_start_resource_names_is_rejected() {
    let err = error_for(&format!("app = \"qbo invoices\"\n{BASE}"));
    assert_message(
        &err,
        "app",
        "`qbo invoices` is not a valid name (` ` is not allowed)",
        "use 1-32 characters: letters, digits, _ and -",
    );
}
