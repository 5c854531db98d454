//! `prod` and `local` synthesized offline: names, least privilege, graph, snapshots.

use std::collections::BTreeMap;

use infra::policy::{PolicyDocument, Statement};
use infra::resources::{Kind, Resource, Spec};
use infra::{Context, Stack, synthesize};

use super::load;

fn prod() -> Stack {
    let env = load("prod");
    synthesize(&env, &Context::offline(&env))
}

fn named<'a>(stack: &'a Stack, kind: Kind, name: &str) -> &'a Resource {
    stack
        .of_kind(kind)
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("{kind} {name} missing from the stack"))
}

fn role_policy<'a>(stack: &'a Stack, name: &str) -> &'a PolicyDocument {
    match &named(stack, Kind::IamRole, name).properties {
        Spec::IamRole(role) => {
            assert_eq!(
                role.inline_policies.len(),
                1,
                "{name} has one inline policy"
            );
            assert!(
                role.managed_policy_arns.is_empty(),
                "{name} uses no managed policy"
            );
            role.inline_policies.values().next().unwrap()
        }
        other => panic!("not a role: {other:?}"),
    }
}

fn statements_with<'a>(doc: &'a PolicyDocument, action: &str) -> Vec<&'a Statement> {
    doc.statement
        .iter()
        .filter(|s| s.actions().iter().any(|a| a == action))
        .collect()
}

#[test]
fn prod_lists_every_resource_of_the_design_with_the_original_names() {
    let stack = prod();
    for (kind, name) in [
        (Kind::EcrRepository, "qbo-invoice-processor"),
        (Kind::LogGroup, "/ecs/qbo-invoice-processor"),
        (Kind::IamRole, "ecsTaskExecutionRole-QBOInvoiceProcessor"),
        (Kind::IamRole, "ecsTaskRole-QBOInvoiceProcessor"),
        (Kind::IamRole, "EventBridgeECSRole-QBOInvoiceProcessor"),
        (Kind::EcsCluster, "qbo-invoice-processor-cluster"),
        (Kind::SecurityGroup, "qbo-invoice-processor-tasks"),
        (Kind::TaskDefinition, "qbo-invoice-processor"),
        (Kind::Schedule, "qbo-send-invoices-daily"),
        (Kind::Schedule, "qbo-create-invoices-monthly"),
        (Kind::SnsTopic, "qbo-invoice-processor-alerts"),
        (Kind::EventRule, "qbo-invoice-processor-task-failed"),
    ] {
        named(&stack, kind, name);
    }
    assert_eq!(stack.of_kind(Kind::MetricFilter).count(), 2);
    assert_eq!(stack.of_kind(Kind::Alarm).count(), 3);
    assert_eq!(stack.of_kind(Kind::SnsSubscription).count(), 1);
    assert_eq!(stack.region, "us-west-2");
}

#[test]
fn every_taggable_resource_carries_app_env_and_managed_by() {
    let stack = prod();
    let expected = BTreeMap::from([
        ("app".to_owned(), "qbo-invoice-processor".to_owned()),
        ("env".to_owned(), "prod".to_owned()),
        ("managed-by".to_owned(), "deployer".to_owned()),
    ]);
    for r in &stack.resources {
        let untaggable = matches!(
            r.kind,
            Kind::MetricFilter | Kind::SnsSubscription | Kind::Schedule | Kind::LogResourcePolicy
        );
        if untaggable {
            assert!(r.tags.is_empty(), "{} cannot carry tags", r.id());
        } else {
            assert_eq!(r.tags, expected, "{}", r.id());
        }
    }
}

#[test]
fn task_role_reads_exactly_four_secrets_writes_only_qbo_reads_the_table_and_keeps_its_ledger() {
    let stack = prod();
    let doc = role_policy(&stack, "ecsTaskRole-QBOInvoiceProcessor");
    let read = statements_with(doc, "secretsmanager:GetSecretValue");
    assert_eq!(read.len(), 1);
    let mut resources = read[0].resources().to_vec();
    resources.sort();
    assert_eq!(
        resources,
        [
            "arn:aws:secretsmanager:us-west-2:${account}:secret:ClickUp/10000-??????",
            "arn:aws:secretsmanager:us-west-2:${account}:secret:MsGraph/10000-??????",
            "arn:aws:secretsmanager:us-west-2:${account}:secret:QBO/10000-??????",
            "arn:aws:secretsmanager:us-west-2:${account}:secret:RoboCorp/10000/ClientAPIKeys-??????",
        ]
    );
    assert_eq!(read[0].actions(), ["secretsmanager:GetSecretValue"]);

    let write = statements_with(doc, "secretsmanager:PutSecretValue");
    assert_eq!(write.len(), 1);
    assert_eq!(write[0].actions(), ["secretsmanager:PutSecretValue"]);
    assert_eq!(
        write[0].resources(),
        ["arn:aws:secretsmanager:us-west-2:${account}:secret:QBO/10000-??????"]
    );

    let table = statements_with(doc, "dynamodb:Scan");
    assert_eq!(table.len(), 1);
    assert_eq!(
        table[0].actions(),
        ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan"]
    );
    assert_eq!(
        table[0].resources(),
        ["arn:aws:dynamodb:us-west-2:${account}:table/Robocorp_Client_Org_Workspace_IDs"]
    );
    let ledger = statements_with(doc, "dynamodb:PutItem");
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        ledger[0].actions(),
        [
            "dynamodb:DeleteItem",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem"
        ]
    );
    assert_eq!(
        ledger[0].resources(),
        ["arn:aws:dynamodb:us-west-2:${account}:table/qbo-invoice-processor-job-state"]
    );
    // Nothing else: no wildcard action or resource anywhere in the task role.
    assert_eq!(doc.statement.len(), 4);
    for s in &doc.statement {
        assert!(s.actions().iter().all(|a| !a.contains('*')));
        assert!(s.resources().iter().all(|r| !r.ends_with('*')));
    }
}

#[test]
fn resolved_secret_arns_are_granted_exactly_and_unresolved_ones_fall_back_to_the_suffix_pattern() {
    let env = load("prod");
    let mut ctx = Context::offline(&env);
    ctx.account = "111122223333".into();
    let qbo = "arn:aws:secretsmanager:us-west-2:111122223333:secret:QBO/10000-AbCdEf";
    ctx.secret_arns.insert("QBO/10000".into(), qbo.into());
    let stack = synthesize(&env, &ctx);
    let doc = role_policy(&stack, "ecsTaskRole-QBOInvoiceProcessor");
    assert_eq!(
        statements_with(doc, "secretsmanager:PutSecretValue")[0].resources(),
        [qbo]
    );
    let read = statements_with(doc, "secretsmanager:GetSecretValue")[0].resources();
    assert!(read.contains(&qbo.to_owned()));
    assert!(read.contains(
        &"arn:aws:secretsmanager:us-west-2:111122223333:secret:ClickUp/10000-??????".to_owned()
    ));
}

#[test]
fn schedule_role_runs_only_the_family_in_the_cluster_and_passes_exactly_two_roles() {
    let stack = prod();
    let doc = role_policy(&stack, "EventBridgeECSRole-QBOInvoiceProcessor");
    let run = statements_with(doc, "ecs:RunTask");
    assert_eq!(run.len(), 1);
    assert_eq!(
        run[0].resources(),
        ["arn:aws:ecs:us-west-2:${account}:task-definition/qbo-invoice-processor:*"]
    );
    let cluster = &run[0].condition["ArnEquals"]["ecs:cluster"];
    assert_eq!(
        cluster.0,
        ["arn:aws:ecs:us-west-2:${account}:cluster/qbo-invoice-processor-cluster"]
    );

    let pass = statements_with(doc, "iam:PassRole");
    assert_eq!(pass.len(), 1);
    assert_eq!(
        pass[0].resources(),
        [
            "arn:aws:iam::${account}:role/ecsTaskExecutionRole-QBOInvoiceProcessor",
            "arn:aws:iam::${account}:role/ecsTaskRole-QBOInvoiceProcessor",
        ]
    );
    let trust = match &named(
        &stack,
        Kind::IamRole,
        "EventBridgeECSRole-QBOInvoiceProcessor",
    )
    .properties
    {
        Spec::IamRole(r) => serde_json::to_value(&r.trust_policy).unwrap(),
        _ => unreachable!(),
    };
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "scheduler.amazonaws.com"
    );
}

#[test]
fn execution_role_pulls_only_this_repository_and_writes_only_this_log_group() {
    let stack = prod();
    let doc = role_policy(&stack, "ecsTaskExecutionRole-QBOInvoiceProcessor");
    let pull = statements_with(doc, "ecr:BatchGetImage");
    assert_eq!(
        pull[0].resources(),
        ["arn:aws:ecr:us-west-2:${account}:repository/qbo-invoice-processor"]
    );
    let logs = statements_with(doc, "logs:PutLogEvents");
    assert_eq!(
        logs[0].resources(),
        ["arn:aws:logs:us-west-2:${account}:log-group:/ecs/qbo-invoice-processor:log-stream:*"]
    );
    // GetAuthorizationToken cannot be scoped; it is the only `*`.
    let star: Vec<&str> = doc
        .statement
        .iter()
        .filter(|s| s.resources() == ["*"])
        .flat_map(|s| s.actions().iter().map(String::as_str))
        .collect();
    assert_eq!(star, ["ecr:GetAuthorizationToken"]);
}

#[test]
fn task_definition_has_the_original_size_env_and_a_digest_pinned_image() {
    let stack = prod();
    let Spec::TaskDefinition(td) =
        &named(&stack, Kind::TaskDefinition, "qbo-invoice-processor").properties
    else {
        unreachable!()
    };
    assert_eq!((td.cpu.as_str(), td.memory.as_str()), ("2048", "4096"));
    assert_eq!(td.container.name, "invoice-processor");
    assert!(
        td.container
            .image
            .ends_with("/qbo-invoice-processor@${image-digest}")
    );
    let env = &td.container.environment;
    for var in [
        "QBO_SECRET_NAME",
        "MSGRAPH_SECRET_NAME",
        "CLICKUP_SECRET_NAME",
        "ROBOCORP_API_SECRET_NAME",
        "DYNAMODB_TABLE_ROBOCORP_CLIENTS",
        "BOOKKEEPER_EMAIL",
        "SENDER_EMAIL",
        "EXCLUDED_CUSTOMERS",
        "MS_GRAPH_HOSTNAME",
    ] {
        assert!(env.contains_key(var), "{var} missing");
    }
    assert_eq!(env["QBO_SECRET_NAME"], "QBO/10000");
    assert_eq!(
        env["ROBOCORP_API_SECRET_NAME"],
        "RoboCorp/10000/ClientAPIKeys"
    );
    assert_eq!(env["EXCLUDED_CUSTOMERS"], "10001 - AICPA");
    assert_eq!(env["AWS_REGION"], "us-west-2");
    assert_eq!(
        td.container.log_options["awslogs-group"],
        "/ecs/qbo-invoice-processor"
    );
}

#[test]
fn schedules_run_in_los_angeles_time_with_the_job_flags_as_command_override() {
    let stack = prod();
    // The daily send runs at its own, smaller size; each has its own deadline.
    let send_input = serde_json::json!({
        "containerOverrides": [{"name": "invoice-processor", "command": ["--send-invoices"], "environment": [{"name": "JOB_TIMEOUT", "value": "1h"}], "memory": 1024}],
        "cpu": "512",
        "memory": "1024"
    });
    let create_input = serde_json::json!({
        "containerOverrides": [{"name": "invoice-processor", "command": ["--create-invoices"], "environment": [{"name": "JOB_TIMEOUT", "value": "8h"}]}]
    });
    let expect = [
        ("qbo-send-invoices-daily", "cron(0 5 * * ? *)", send_input),
        (
            "qbo-create-invoices-monthly",
            "cron(0 9 4 * ? *)",
            create_input,
        ),
    ];
    for (name, cron, input) in expect {
        let Spec::Schedule(s) = &named(&stack, Kind::Schedule, name).properties else {
            unreachable!()
        };
        assert_eq!(s.expression, cron);
        assert_eq!(s.timezone, "America/Los_Angeles");
        assert_eq!(s.target.input(), input);
        assert_eq!(
            s.target.task_definition.to_string(),
            "${task-definition/qbo-invoice-processor.arn}"
        );
    }
    let Spec::LogGroup(logs) =
        &named(&stack, Kind::LogGroup, "/ecs/qbo-invoice-processor").properties
    else {
        unreachable!()
    };
    assert_eq!(logs.retention_days, 30);
}

#[test]
fn alerts_go_to_the_bookkeeper_and_failed_tasks_in_this_cluster_reach_the_topic() {
    let stack = prod();
    let Spec::SnsSubscription(sub) = &stack
        .of_kind(Kind::SnsSubscription)
        .next()
        .unwrap()
        .properties
    else {
        unreachable!()
    };
    assert_eq!(
        (sub.protocol.as_str(), sub.endpoint.as_str()),
        ("email", "whartman@automatapracdev.com")
    );
    let Spec::EventRule(rule) =
        &named(&stack, Kind::EventRule, "qbo-invoice-processor-task-failed").properties
    else {
        unreachable!()
    };
    let pattern = rule.event_pattern.as_ref().unwrap();
    assert_eq!(pattern["detail"]["lastStatus"][0], "STOPPED");
    // EventBridge puts each string value in quotes, JSON-escaped, where an unquoted
    // placeholder stands: the message stays JSON whatever the stop reason holds.
    let infra::resources::RuleTarget::Sns { input_template, .. } = &rule.target else {
        unreachable!()
    };
    let reason = r#"Essential container exited: "oom" \ {"#;
    let delivered = input_template
        .replace("<reason>", &serde_json::to_string(reason).unwrap())
        .replace("<task>", "\"arn:aws:ecs:us-west-2:1:task/c/abc\"")
        .replace("<group>", "\"family:qbo-invoice-processor\"")
        .replace(
            "<container>",
            "\"OutOfMemoryError: Container killed due to memory usage\"",
        );
    let message: serde_json::Value = serde_json::from_str(&delivered).unwrap();
    assert_eq!(message["reason"], reason);
    // The container's own reason is in the alert: an out-of-memory kill says so.
    assert_eq!(
        message["container"],
        "OutOfMemoryError: Container killed due to memory usage"
    );
    assert!(
        !input_template.contains("\"<"),
        "no placeholder inside quotes"
    );
    assert_eq!(
        pattern["detail"]["clusterArn"][0],
        "arn:aws:ecs:us-west-2:${account}:cluster/qbo-invoice-processor-cluster"
    );
    // A failure of any task but `deployer verify`'s check: every branch either excludes
    // its startedBy or matches tasks with none (an absent field matches no anything-but).
    let branches = pattern["detail"]["$or"].as_array().unwrap();
    assert_eq!(branches.len(), 4, "{pattern}");
    for b in branches {
        let by = &b["startedBy"][0];
        assert!(
            by == &serde_json::json!({"anything-but": "deployer-verify"})
                || by == &serde_json::json!({"exists": false}),
            "{b}"
        );
    }
    // The topic lets EventBridge publish, but only for this rule.
    let Spec::SnsTopic(topic) =
        &named(&stack, Kind::SnsTopic, "qbo-invoice-processor-alerts").properties
    else {
        unreachable!()
    };
    let published_by = |service: &str| {
        statements_with(&topic.policy, "sns:Publish")
            .into_iter()
            .find(|s| {
                s.principal
                    .as_ref()
                    .and_then(|p| p.get("Service"))
                    .is_some_and(|p| p.0 == [service])
            })
            .unwrap_or_else(|| panic!("{service} may not publish"))
    };
    let events = published_by("events.amazonaws.com");
    assert_eq!(
        events.condition["ArnEquals"]["aws:SourceArn"].0,
        ["arn:aws:events:us-west-2:${account}:rule/qbo-invoice-processor-task-failed"]
    );
    // A topic policy replaces SNS's default: CloudWatch must be let back in for alarms.
    let alarms = published_by("cloudwatch.amazonaws.com");
    assert_eq!(
        alarms.condition["ArnLike"]["aws:SourceArn"].0,
        ["arn:aws:cloudwatch:us-west-2:${account}:alarm:qbo-invoice-processor-*"]
    );
    for alarm in stack.of_kind(Kind::Alarm) {
        assert!(
            alarm.name.starts_with("qbo-invoice-processor-"),
            "{}",
            alarm.name
        );
        let Spec::Alarm(a) = &alarm.properties else {
            unreachable!()
        };
        assert_eq!(
            a.alarm_actions,
            ["arn:aws:sns:us-west-2:${account}:qbo-invoice-processor-alerts"]
        );
    }
    let Spec::Alarm(heartbeat) = &named(
        &stack,
        Kind::Alarm,
        "qbo-invoice-processor-send-invoices-success-missing",
    )
    .properties
    else {
        unreachable!()
    };
    assert_eq!(
        (
            heartbeat.period_seconds,
            heartbeat.evaluation_periods,
            heartbeat.datapoints_to_alarm
        ),
        (3600, 26, 26),
        "26 hours without a success: slack for the DST change"
    );
    assert_eq!(heartbeat.treat_missing_data, "breaching");
    assert_eq!(heartbeat.comparison, "LessThanThreshold");
}

#[test]
fn dependencies_order_roles_before_the_task_definition_and_it_before_schedules() {
    let stack = prod();
    let waves = stack.waves();
    let wave_of = |kind: Kind, name: &str| {
        waves
            .iter()
            .position(|w| w.iter().any(|r| r.kind == kind && r.name == name))
            .unwrap()
    };
    let td = wave_of(Kind::TaskDefinition, "qbo-invoice-processor");
    assert!(wave_of(Kind::IamRole, "ecsTaskRole-QBOInvoiceProcessor") < td);
    assert!(wave_of(Kind::IamRole, "ecsTaskExecutionRole-QBOInvoiceProcessor") < td);
    assert!(td < wave_of(Kind::Schedule, "qbo-send-invoices-daily"));
    assert!(
        wave_of(Kind::IamRole, "EventBridgeECSRole-QBOInvoiceProcessor")
            < wave_of(Kind::Schedule, "qbo-create-invoices-monthly")
    );
    assert_eq!(
        waves.iter().map(Vec::len).sum::<usize>(),
        stack.resources.len()
    );
}

#[test]
fn rules_engine_replaces_the_schedule_group_with_utc_event_rules() {
    let text = std::fs::read_to_string(super::envs_dir().join("prod.toml"))
        .unwrap()
        .replace("engine = \"scheduler\"", "engine = \"rules\"")
        .replace(
            "timezone = \"America/Los_Angeles\"\ncommand",
            "timezone = \"UTC\"\ncommand",
        );
    let env = infra::Environment::parse(std::path::Path::new("rules.toml"), &text).unwrap();
    let stack = synthesize(&env, &Context::offline(&env));
    assert_eq!(stack.of_kind(Kind::Schedule).count(), 0);
    assert_eq!(stack.of_kind(Kind::ScheduleGroup).count(), 0);
    let Spec::EventRule(rule) =
        &named(&stack, Kind::EventRule, "qbo-send-invoices-daily").properties
    else {
        unreachable!()
    };
    assert_eq!(
        rule.schedule_expression.as_deref(),
        Some("cron(0 5 * * ? *)")
    );
    let Spec::IamRole(role) = &named(
        &stack,
        Kind::IamRole,
        "EventBridgeECSRole-QBOInvoiceProcessor",
    )
    .properties
    else {
        unreachable!()
    };
    let trust = serde_json::to_value(&role.trust_policy).unwrap();
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "events.amazonaws.com"
    );
    assert_eq!(
        stack
            .of_kind(Kind::Alarm)
            .filter(|a| a.name.ends_with("-invocation-errors"))
            .count(),
        3,
        "one per rule: daily, monthly and the monthly billing check"
    );
}

#[test]
fn prod_stack_snapshot() {
    insta::assert_json_snapshot!("prod", prod());
}

#[test]
fn local_stack_snapshot() {
    let env = load("local");
    insta::assert_json_snapshot!("local", synthesize(&env, &Context::offline(&env)));
}
