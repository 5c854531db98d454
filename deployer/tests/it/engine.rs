//! `diff`, `up` and `destroy` against a real moto server: a fresh deployment, a no-op
//! second run, out-of-band deletions and changes, an interrupted run, ownership, and bad
//! prerequisites. Assertions read moto through the AWS SDK.

use std::process::{Command, Output};

use aws_sdk_ecs::types::TaskDefinitionStatus;
use fakes::emulators::Moto;
use fakes::fault_proxy::FaultProxy;
use serde_json::Value;

use super::{moto_config, root, stderr, stdout};

pub const IMAGE: &str = "127.0.0.1:5000/qbo-invoice-processor@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const GROUP: &str = "qbo-invoice-processor";
const FAMILY: &str = "qbo-invoice-processor";
const TASK_ROLE: &str = "ecsTaskRole-QBOInvoiceProcessor";
const LOG_GROUP: &str = "/ecs/qbo-invoice-processor";

/// Runs the deployer against `endpoint` with moto's dummy credentials and no terminal.
pub fn deployer(endpoint: &str, args: &[&str]) -> Output {
    super::deployer_command(Some(endpoint))
        .args(args)
        .output()
        .expect("deployer runs")
}

/// `up --yes --output json` (or `diff`), parsed; panics with stderr on failure.
pub fn json(endpoint: &str, args: &[&str]) -> Value {
    let out = deployer(endpoint, args);
    assert!(out.status.success(), "{args:?} failed:\n{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

fn up(endpoint: &str) -> Value {
    json(
        endpoint,
        &[
            "up", "--env", "local", "--image", IMAGE, "--yes", "--output", "json",
        ],
    )
}

fn plan(endpoint: &str) -> Vec<(String, String, Vec<String>)> {
    let v = json(
        endpoint,
        &[
            "diff", "--env", "local", "--image", IMAGE, "--output", "json",
        ],
    );
    v["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] != "no-change")
        .map(|s| {
            let paths = s["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["path"].as_str().unwrap().to_owned())
                .collect();
            (
                s["action"].as_str().unwrap().to_owned(),
                s["id"].as_str().unwrap().to_owned(),
                paths,
            )
        })
        .collect()
}

/// Clients on moto for assertions and out-of-band changes.
struct Live {
    iam: aws_sdk_iam::Client,
    ecs: aws_sdk_ecs::Client,
    ecr: aws_sdk_ecr::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    cw: aws_sdk_cloudwatch::Client,
    scheduler: aws_sdk_scheduler::Client,
    events: aws_sdk_eventbridge::Client,
    sns: aws_sdk_sns::Client,
    ec2: aws_sdk_ec2::Client,
    dynamodb: aws_sdk_dynamodb::Client,
}

async fn live(endpoint: &str) -> Live {
    let c = moto_config(endpoint).await;
    Live {
        iam: aws_sdk_iam::Client::new(&c),
        ecs: aws_sdk_ecs::Client::new(&c),
        ecr: aws_sdk_ecr::Client::new(&c),
        logs: aws_sdk_cloudwatchlogs::Client::new(&c),
        cw: aws_sdk_cloudwatch::Client::new(&c),
        scheduler: aws_sdk_scheduler::Client::new(&c),
        events: aws_sdk_eventbridge::Client::new(&c),
        sns: aws_sdk_sns::Client::new(&c),
        ec2: aws_sdk_ec2::Client::new(&c),
        dynamodb: aws_sdk_dynamodb::Client::new(&c),
    }
}

impl Live {
    async fn active_revisions(&self) -> Vec<String> {
        self.ecs
            .list_task_definitions()
            .family_prefix(FAMILY)
            .status(TaskDefinitionStatus::Active)
            .send()
            .await
            .unwrap()
            .task_definition_arns()
            .to_vec()
    }

    async fn schedule_task_definition(&self, name: &str) -> String {
        let s = self
            .scheduler
            .get_schedule()
            .group_name(GROUP)
            .name(name)
            .send()
            .await
            .unwrap();
        s.target()
            .unwrap()
            .ecs_parameters()
            .unwrap()
            .task_definition_arn()
            .to_owned()
    }

    /// The job-state table's key and tags, if it exists.
    async fn state_table(&self) -> Option<(String, Vec<(String, String)>)> {
        let t = self
            .dynamodb
            .describe_table()
            .table_name("qbo-invoice-processor-job-state")
            .send()
            .await
            .ok()?;
        let t = t.table()?;
        let tags = self
            .dynamodb
            .list_tags_of_resource()
            .resource_arn(t.table_arn()?)
            .send()
            .await
            .unwrap();
        Some((
            t.key_schema()[0].attribute_name().to_owned(),
            tags.tags()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect(),
        ))
    }

    async fn role_exists(&self, name: &str) -> bool {
        self.iam.get_role().role_name(name).send().await.is_ok()
    }

    async fn filter_count(&self) -> usize {
        self.logs
            .describe_metric_filters()
            .log_group_name(LOG_GROUP)
            .send()
            .await
            .map_or(0, |o| o.metric_filters().len())
    }

    async fn security_group_id(&self) -> Option<String> {
        let out = self
            .ec2
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
        out.security_groups()
            .first()
            .and_then(|g| g.group_id())
            .map(str::to_owned)
    }
}

#[tokio::test]
async fn fresh_up_creates_the_stack_second_up_makes_no_write_and_destroy_leaves_nothing() {
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    let aws = live(&endpoint).await;

    // One secret exists: it is granted by its exact ARN, the others by `name-??????`.
    let secrets = aws_sdk_secretsmanager::Client::new(&moto_config(&endpoint).await);
    let qbo = secrets
        .create_secret()
        .name("QBO/10000")
        .secret_string("{}")
        .send()
        .await
        .unwrap();
    let qbo_arn = qbo.arn().unwrap().to_owned();

    let first = up(&endpoint);
    assert_eq!(first["summary"]["created"], 24, "{first}");
    // The monthly schedule runs at its own size, with its deadline in the command.
    let monthly = aws
        .scheduler
        .get_schedule()
        .group_name(GROUP)
        .name("qbo-create-invoices-monthly")
        .send()
        .await
        .unwrap();
    let input: Value = serde_json::from_str(monthly.target().unwrap().input().unwrap()).unwrap();
    assert_eq!(input["cpu"], "512", "{input}");
    assert_eq!(input["memory"], "1024", "{input}");
    assert_eq!(
        input["containerOverrides"][0]["command"],
        serde_json::json!(["--create-invoices"])
    );
    assert_eq!(
        input["containerOverrides"][0]["environment"],
        serde_json::json!([{"name": "JOB_TIMEOUT", "value": "8h"}])
    );
    let policy = aws
        .iam
        .get_role_policy()
        .role_name(TASK_ROLE)
        .policy_name("secrets-and-client-table")
        .send()
        .await
        .unwrap();
    let policy = percent_encoding::percent_decode_str(policy.policy_document())
        .decode_utf8()
        .unwrap()
        .into_owned();
    let policy: Value = serde_json::from_str(&policy).unwrap();
    let write = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"] == "secretsmanager:PutSecretValue")
        .unwrap();
    assert_eq!(write["Resource"], qbo_arn.as_str());
    let read = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"] == "secretsmanager:GetSecretValue")
        .unwrap();
    assert!(read["Resource"].as_array().unwrap().contains(&Value::from(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:ClickUp/10000-??????"
    )));
    assert!(first["calls"]["writes"].as_u64().unwrap() > 19);

    // What the design asks for is really there, wired together.
    assert!(aws.role_exists(TASK_ROLE).await);
    let revisions = aws.active_revisions().await;
    assert_eq!(revisions.len(), 1);
    for schedule in ["qbo-send-invoices-daily", "qbo-create-invoices-monthly"] {
        assert_eq!(aws.schedule_task_definition(schedule).await, revisions[0]);
    }
    let td = aws
        .ecs
        .describe_task_definition()
        .task_definition(FAMILY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        td.task_definition().unwrap().container_definitions()[0].image(),
        Some(IMAGE)
    );
    assert_eq!(aws.filter_count().await, 2);
    let (key, tags) = aws.state_table().await.expect("the job-state table");
    assert_eq!(key, "pk");
    assert!(
        tags.contains(&("managed-by".into(), "deployer".into())),
        "{tags:?}"
    );
    let env = td.task_definition().unwrap().container_definitions()[0].environment();
    assert!(env.iter().any(|v| v.name() == Some("JOB_STATE_TABLE")
        && v.value() == Some("qbo-invoice-processor-job-state")));

    // The heartbeat alarm counts data points; creating it recorded one that is not a
    // success, so its 26 hours start at the deploy.
    let points = || async {
        let now = std::time::SystemTime::now();
        let stats = aws
            .cw
            .get_metric_statistics()
            .namespace("QBOInvoiceProcessor")
            .metric_name("SendInvoicesSucceeded")
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from(
                now - std::time::Duration::from_hours(1),
            ))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from(
                now + std::time::Duration::from_mins(1),
            ))
            .period(3600)
            .statistics(aws_sdk_cloudwatch::types::Statistic::SampleCount)
            .statistics(aws_sdk_cloudwatch::types::Statistic::Sum)
            .send()
            .await
            .unwrap();
        let count: f64 = stats
            .datapoints()
            .iter()
            .filter_map(aws_sdk_cloudwatch::types::Datapoint::sample_count)
            .sum();
        let sum: f64 = stats
            .datapoints()
            .iter()
            .filter_map(aws_sdk_cloudwatch::types::Datapoint::sum)
            .sum();
        (count, sum)
    };
    assert_eq!(points().await, (1.0, 0.0));

    let second = up(&endpoint);
    assert_eq!(
        second["calls"]["writes"], 0,
        "a second up makes no mutating call: {second}"
    );
    assert_eq!(second["summary"]["created"], 0);
    assert!(plan(&endpoint).is_empty());
    assert_eq!(points().await, (1.0, 0.0), "armed once");

    // Destroy asks first; with no terminal it refuses and deletes nothing.
    let out = deployer(&endpoint, &["destroy", "--env", "local"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(aws.role_exists(TASK_ROLE).await);

    // The repository holds an image: it is kept unless --include-images.
    aws.ecr
        .put_image()
        .repository_name("qbo-invoice-processor")
        .image_tag("v1")
        .image_manifest(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":2},"layers":[]}"#)
        .send()
        .await
        .unwrap();
    let out = deployer(&endpoint, &["destroy", "--env", "local", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("20 deleted, 1 kept"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("ecr-repository/qbo-invoice-processor kept: it holds images; --include-images deletes them too"), "{}", stderr(&out));
    assert!(
        aws.ecr
            .describe_repositories()
            .repository_names("qbo-invoice-processor")
            .send()
            .await
            .is_ok()
    );
    let out = deployer(
        &endpoint,
        &["destroy", "--env", "local", "--yes", "--include-images"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        aws.ecr
            .describe_repositories()
            .repository_names("qbo-invoice-processor")
            .send()
            .await
            .is_err()
    );
    assert!(!aws.role_exists(TASK_ROLE).await);
    assert!(aws.state_table().await.is_none());
    assert!(aws.active_revisions().await.is_empty());
    assert!(aws.security_group_id().await.is_none());
    assert!(
        aws.scheduler
            .get_schedule_group()
            .name(GROUP)
            .send()
            .await
            .is_err()
    );
    let alarms = aws
        .cw
        .describe_alarms()
        .alarm_name_prefix("qbo-invoice-processor")
        .send()
        .await
        .unwrap();
    assert!(alarms.metric_alarms().is_empty());
    let topics = aws.sns.list_topics().send().await.unwrap();
    assert!(topics.topics().is_empty());
    // After destroy, the whole stack is to be created again.
    assert_eq!(
        plan(&endpoint)
            .iter()
            .filter(|(a, _, _)| a == "create")
            .count(),
        24
    );
}

#[tokio::test]
async fn a_resource_deleted_out_of_band_is_the_only_one_up_creates_again() {
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    let aws = live(&endpoint).await;
    up(&endpoint);

    // (what to delete, the step `diff` must then plan)
    let cases: Vec<(&str, &str)> = vec![
        ("alarm", "alarm/qbo-invoice-processor-run-failed"),
        (
            "metric-filter",
            "metric-filter/qbo-invoice-processor-runs-failed",
        ),
        ("schedule", "schedule/qbo-create-invoices-monthly"),
        ("event-rule", "event-rule/qbo-invoice-processor-task-failed"),
        (
            "subscription",
            "sns-subscription/qbo-invoice-processor-alerts/email/bookkeeper@example.com",
        ),
        ("log-group", "log-group//ecs/qbo-invoice-processor"),
        (
            "log-policy",
            "log-resource-policy/qbo-invoice-processor-task-events",
        ),
        ("ecr", "ecr-repository/qbo-invoice-processor"),
        ("cluster", "ecs-cluster/qbo-invoice-processor-cluster"),
        ("task-definition", "task-definition/qbo-invoice-processor"),
        ("role", "iam-role/EventBridgeECSRole-QBOInvoiceProcessor"),
        ("topic", "sns-topic/qbo-invoice-processor-alerts"),
        ("schedule-group", "schedule-group/qbo-invoice-processor"),
        (
            "security-group",
            "security-group/qbo-invoice-processor-tasks",
        ),
    ];
    for (what, id) in cases {
        match what {
            "alarm" => {
                aws.cw
                    .delete_alarms()
                    .alarm_names("qbo-invoice-processor-run-failed")
                    .send()
                    .await
                    .unwrap();
            }
            "metric-filter" => {
                aws.logs
                    .delete_metric_filter()
                    .log_group_name(LOG_GROUP)
                    .filter_name("qbo-invoice-processor-runs-failed")
                    .send()
                    .await
                    .unwrap();
            }
            "schedule" => {
                aws.scheduler
                    .delete_schedule()
                    .group_name(GROUP)
                    .name("qbo-create-invoices-monthly")
                    .send()
                    .await
                    .unwrap();
            }
            "event-rule" => {
                aws.events
                    .remove_targets()
                    .rule("qbo-invoice-processor-task-failed")
                    .ids("alerts")
                    .send()
                    .await
                    .unwrap();
                aws.events
                    .delete_rule()
                    .name("qbo-invoice-processor-task-failed")
                    .send()
                    .await
                    .unwrap();
            }
            "subscription" => {
                let topic = "arn:aws:sns:us-east-1:123456789012:qbo-invoice-processor-alerts";
                let subs = aws
                    .sns
                    .list_subscriptions_by_topic()
                    .topic_arn(topic)
                    .send()
                    .await
                    .unwrap();
                let arn = subs.subscriptions()[0]
                    .subscription_arn()
                    .unwrap()
                    .to_owned();
                aws.sns
                    .unsubscribe()
                    .subscription_arn(arn)
                    .send()
                    .await
                    .unwrap();
            }
            "log-group" => {
                aws.logs
                    .delete_log_group()
                    .log_group_name(LOG_GROUP)
                    .send()
                    .await
                    .unwrap();
            }
            "log-policy" => {
                aws.logs
                    .delete_resource_policy()
                    .policy_name("qbo-invoice-processor-task-events")
                    .send()
                    .await
                    .unwrap();
            }
            "ecr" => {
                aws.ecr
                    .delete_repository()
                    .repository_name("qbo-invoice-processor")
                    .send()
                    .await
                    .unwrap();
            }
            "cluster" => {
                aws.ecs
                    .delete_cluster()
                    .cluster("qbo-invoice-processor-cluster")
                    .send()
                    .await
                    .unwrap();
            }
            "task-definition" => {
                for arn in aws.active_revisions().await {
                    aws.ecs
                        .deregister_task_definition()
                        .task_definition(arn)
                        .send()
                        .await
                        .unwrap();
                }
            }
            "role" => {
                let name = "EventBridgeECSRole-QBOInvoiceProcessor";
                aws.iam
                    .delete_role_policy()
                    .role_name(name)
                    .policy_name("run-task")
                    .send()
                    .await
                    .unwrap();
                aws.iam.delete_role().role_name(name).send().await.unwrap();
            }
            "topic" => {
                aws.sns
                    .delete_topic()
                    .topic_arn("arn:aws:sns:us-east-1:123456789012:qbo-invoice-processor-alerts")
                    .send()
                    .await
                    .unwrap();
            }
            "schedule-group" => {
                aws.scheduler
                    .delete_schedule_group()
                    .name(GROUP)
                    .send()
                    .await
                    .unwrap();
            }
            "security-group" => {
                let id = aws.security_group_id().await.unwrap();
                aws.ec2
                    .delete_security_group()
                    .group_id(id)
                    .send()
                    .await
                    .unwrap();
            }
            other => unreachable!("{other}"),
        }
        let steps = plan(&endpoint);
        let created: Vec<&str> = steps
            .iter()
            .filter(|(a, _, _)| a == "create")
            .map(|(_, id, _)| id.as_str())
            .collect();
        match what {
            // The group takes its schedules with it; the topic its subscription.
            "schedule-group" => assert_eq!(
                created,
                [
                    id,
                    "schedule/qbo-send-invoices-daily",
                    "schedule/qbo-create-invoices-monthly",
                    "schedule/qbo-create-invoices-monthly-check"
                ],
                "{steps:?}"
            ),
            "topic" => assert_eq!(
                created,
                [
                    id,
                    "sns-subscription/qbo-invoice-processor-alerts/email/bookkeeper@example.com"
                ],
                "{steps:?}"
            ),
            _ => assert_eq!(created, [id], "{steps:?}"),
        }
        // Anything else in the plan only follows a new id or revision.
        for (action, other, paths) in &steps {
            if action != "create" {
                assert_eq!(action, "update", "{what}: {steps:?}");
                assert!(
                    paths.iter().all(|p| p.contains("target.task_definition")
                        || p.contains("target.security_groups")),
                    "{what}: {other} changes {paths:?}"
                );
            }
        }
        let fixed = up(&endpoint);
        assert_eq!(
            usize::try_from(fixed["summary"]["created"].as_u64().unwrap()).unwrap(),
            created.len(),
            "{what}: {fixed}"
        );
        assert!(plan(&endpoint).is_empty(), "{what}: up converged");
    }
    assert_eq!(aws.active_revisions().await.len(), 1);
    assert_eq!(aws.filter_count().await, 2);
}

#[tokio::test]
async fn a_property_changed_out_of_band_shows_as_exactly_that_change_and_up_restores_it() {
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    let aws = live(&endpoint).await;
    up(&endpoint);

    // Alarm threshold.
    let alarm = aws
        .cw
        .describe_alarms()
        .alarm_names("qbo-invoice-processor-run-failed")
        .send()
        .await
        .unwrap();
    let a = &alarm.metric_alarms()[0];
    aws.cw
        .put_metric_alarm()
        .alarm_name("qbo-invoice-processor-run-failed")
        .alarm_description(a.alarm_description().unwrap())
        .namespace(a.namespace().unwrap())
        .metric_name(a.metric_name().unwrap())
        .statistic(a.statistic().unwrap().clone())
        .period(a.period().unwrap())
        .evaluation_periods(a.evaluation_periods().unwrap())
        .datapoints_to_alarm(a.datapoints_to_alarm().unwrap())
        .threshold(5.0)
        .comparison_operator(a.comparison_operator().unwrap().clone())
        .treat_missing_data(a.treat_missing_data().unwrap())
        .set_alarm_actions(Some(a.alarm_actions().to_vec()))
        .send()
        .await
        .unwrap();
    assert_drift(
        &endpoint,
        "alarm/qbo-invoice-processor-run-failed",
        "properties.threshold",
    );

    // Schedule time.
    let s = aws
        .scheduler
        .get_schedule()
        .group_name(GROUP)
        .name("qbo-send-invoices-daily")
        .send()
        .await
        .unwrap();
    aws.scheduler
        .update_schedule()
        .group_name(GROUP)
        .name("qbo-send-invoices-daily")
        .schedule_expression("cron(0 6 * * ? *)")
        .schedule_expression_timezone(s.schedule_expression_timezone().unwrap())
        .set_description(s.description().map(str::to_owned))
        .set_state(s.state().cloned())
        .set_flexible_time_window(s.flexible_time_window().cloned())
        .set_target(s.target().cloned())
        .send()
        .await
        .unwrap();
    assert_drift(
        &endpoint,
        "schedule/qbo-send-invoices-daily",
        "properties.expression",
    );

    // A policy statement.
    aws.iam
        .put_role_policy()
        .role_name(TASK_ROLE)
        .policy_name("secrets-and-client-table")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    assert_drift(
        &endpoint,
        "iam-role/ecsTaskRole-QBOInvoiceProcessor",
        "properties.inline_policies.secrets-and-client-table.Statement",
    );

    // Log retention.
    aws.logs
        .put_retention_policy()
        .log_group_name(LOG_GROUP)
        .retention_in_days(1)
        .send()
        .await
        .unwrap();
    assert_drift(
        &endpoint,
        "log-group//ecs/qbo-invoice-processor",
        "properties.retention_days",
    );

    // ECR lifecycle policy (moto answers PutImageTagMutability with a 500, and the SDK
    // leaves out a false scanOnPush, so the policy is the property changed here).
    aws.ecr
        .put_lifecycle_policy()
        .repository_name("qbo-invoice-processor")
        .lifecycle_policy_text(r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#)
        .send()
        .await
        .unwrap();
    assert_drift(
        &endpoint,
        "ecr-repository/qbo-invoice-processor",
        "properties.lifecycle_policy.rules",
    );

    // A security-group rule opened to the world.
    let sg = aws.security_group_id().await.unwrap();
    aws.ec2
        .authorize_security_group_ingress()
        .group_id(&sg)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("0.0.0.0/0")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_drift(
        &endpoint,
        "security-group/qbo-invoice-processor-tasks",
        "properties.ingress",
    );

    // The failed-task rule disabled.
    aws.events
        .disable_rule()
        .name("qbo-invoice-processor-task-failed")
        .send()
        .await
        .unwrap();
    assert_drift(
        &endpoint,
        "event-rule/qbo-invoice-processor-task-failed",
        "properties.enabled",
    );

    // The topic's display name.
    aws.sns
        .set_topic_attributes()
        .topic_arn("arn:aws:sns:us-east-1:123456789012:qbo-invoice-processor-alerts")
        .attribute_name("DisplayName")
        .attribute_value("renamed")
        .send()
        .await
        .unwrap();
    assert_drift(
        &endpoint,
        "sns-topic/qbo-invoice-processor-alerts",
        "properties.display_name",
    );

    // A task-definition revision registered by hand with another image: replaced by
    // a new revision, and the schedules follow it.
    let current = aws
        .ecs
        .describe_task_definition()
        .task_definition(FAMILY)
        .send()
        .await
        .unwrap();
    let td = current.task_definition().unwrap();
    let mut container = td.container_definitions()[0].clone();
    container.image = Some("127.0.0.1:5000/qbo-invoice-processor@sha256:9999999999999999999999999999999999999999999999999999999999999999".into());
    aws.ecs
        .register_task_definition()
        .family(FAMILY)
        .set_cpu(td.cpu().map(str::to_owned))
        .set_memory(td.memory().map(str::to_owned))
        .set_network_mode(td.network_mode().cloned())
        .set_requires_compatibilities(Some(td.requires_compatibilities().to_vec()))
        .set_runtime_platform(td.runtime_platform().cloned())
        .set_execution_role_arn(td.execution_role_arn().map(str::to_owned))
        .set_task_role_arn(td.task_role_arn().map(str::to_owned))
        .set_volumes(Some(td.volumes().to_vec()))
        .container_definitions(container)
        .send()
        .await
        .unwrap();
    let steps = plan(&endpoint);
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert_eq!(
        (steps[0].0.as_str(), steps[0].1.as_str()),
        ("replace", "task-definition/qbo-invoice-processor")
    );
    assert_eq!(steps[0].2, ["properties.container.image"]);
    for (action, id, paths) in &steps[1..] {
        assert!(
            action == "update" && id.starts_with("schedule/"),
            "{steps:?}"
        );
        assert_eq!(paths, &["properties.target.task_definition"]);
    }
    up(&endpoint);
    assert!(plan(&endpoint).is_empty());
    let newest = aws
        .ecs
        .describe_task_definition()
        .task_definition(FAMILY)
        .send()
        .await
        .unwrap();
    let newest = newest.task_definition().unwrap();
    assert_eq!(newest.container_definitions()[0].image(), Some(IMAGE));
    assert_eq!(
        aws.schedule_task_definition("qbo-send-invoices-daily")
            .await,
        newest.task_definition_arn().unwrap()
    );

    // (The cluster's one property, container insights, is left out: moto answers
    // UpdateClusterSettings with a 500.)

    // A tag removed: ownership is restored too.
    aws.iam
        .untag_role()
        .role_name(TASK_ROLE)
        .tag_keys("env")
        .send()
        .await
        .unwrap();
    let steps = plan(&endpoint);
    assert!(
        steps
            .iter()
            .any(|(a, id, _)| a == "unowned" && id == "iam-role/ecsTaskRole-QBOInvoiceProcessor"),
        "{steps:?}"
    );
    let adopted = json(
        &endpoint,
        &[
            "up", "--env", "local", "--image", IMAGE, "--yes", "--adopt", "--output", "json",
        ],
    );
    assert_eq!(adopted["summary"]["updated"], 1, "{adopted}");
    assert!(plan(&endpoint).is_empty());
}

/// `diff` lists exactly one step, an update of `id` at `path`; `up` restores it.
fn assert_drift(endpoint: &str, id: &str, path: &str) {
    let steps = plan(endpoint);
    assert_eq!(steps.len(), 1, "{id}: {steps:?}");
    assert_eq!(
        (steps[0].0.as_str(), steps[0].1.as_str()),
        ("update", id),
        "{steps:?}"
    );
    assert_eq!(steps[0].2, [path], "{steps:?}");
    let out = deployer(
        endpoint,
        &["diff", "--env", "local", "--image", IMAGE, "--exit-code"],
    );
    assert_eq!(out.status.code(), Some(3), "--exit-code with changes");
    let fixed = up(endpoint);
    assert_eq!(fixed["summary"]["updated"], 1, "{fixed}");
    assert!(plan(endpoint).is_empty(), "{id} restored");
}

#[tokio::test]
async fn an_up_interrupted_by_a_failed_write_converges_on_the_next_run_without_duplicates() {
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    let aws = live(&endpoint).await;
    // Fail a write early (wave 1), mid-way (roles/task definition) and late (schedules).
    for nth in [3, 14, 24] {
        let proxy = FaultProxy::start(moto.addr(), nth).unwrap();
        let out = deployer(
            &proxy.endpoint(),
            &["up", "--env", "local", "--image", IMAGE, "--yes"],
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "write {nth} fails the run: {}",
            stderr(&out)
        );
        assert!(!proxy.failed().is_empty(), "write {nth} was failed");
        assert!(
            stderr(&out).contains("run the same command again to finish"),
            "{}",
            stderr(&out)
        );
        drop(proxy);

        up(&endpoint);
        assert!(
            plan(&endpoint).is_empty(),
            "converged after failing write {nth}"
        );
        let revisions = aws.active_revisions().await;
        assert_eq!(
            revisions.len(),
            1,
            "one task-definition revision: {revisions:?}"
        );
        for schedule in ["qbo-send-invoices-daily", "qbo-create-invoices-monthly"] {
            assert_eq!(aws.schedule_task_definition(schedule).await, revisions[0]);
        }
        let targets = aws
            .events
            .list_targets_by_rule()
            .rule("qbo-invoice-processor-task-failed")
            .send()
            .await
            .unwrap();
        assert_eq!(targets.targets().len(), 1);
        assert_eq!(aws.filter_count().await, 2, "no duplicate metric filter");
        let topic = "arn:aws:sns:us-east-1:123456789012:qbo-invoice-processor-alerts";
        let subs = aws
            .sns
            .list_subscriptions_by_topic()
            .topic_arn(topic)
            .send()
            .await
            .unwrap();
        assert_eq!(subs.subscriptions().len(), 1);

        let out = deployer(&endpoint, &["destroy", "--env", "local", "--yes"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

#[tokio::test]
async fn a_same_named_resource_without_our_tags_is_left_alone_unless_adopted() {
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    let aws = live(&endpoint).await;
    aws.ecs
        .create_cluster()
        .cluster_name("qbo-invoice-processor-cluster")
        .send()
        .await
        .unwrap();

    let out = deployer(
        &endpoint,
        &["up", "--env", "local", "--image", IMAGE, "--yes"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("!   ecs-cluster/qbo-invoice-processor-cluster: exists without this environment's tags; left alone (--adopt takes it over)"), "{}", stdout(&out));
    let tags = aws
        .ecs
        .list_tags_for_resource()
        .resource_arn("arn:aws:ecs:us-east-1:123456789012:cluster/qbo-invoice-processor-cluster")
        .send()
        .await
        .unwrap();
    assert!(tags.tags().is_empty(), "not tagged without --adopt");

    json(
        &endpoint,
        &[
            "up", "--env", "local", "--image", IMAGE, "--yes", "--adopt", "--output", "json",
        ],
    );
    let tags = aws
        .ecs
        .list_tags_for_resource()
        .resource_arn("arn:aws:ecs:us-east-1:123456789012:cluster/qbo-invoice-processor-cluster")
        .send()
        .await
        .unwrap();
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.key() == Some("managed-by") && t.value() == Some("deployer"))
    );
    assert!(plan(&endpoint).is_empty());
}

#[tokio::test]
async fn missing_prerequisites_and_unconfirmed_widening_stop_before_any_write() {
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    let aws = live(&endpoint).await;

    // No terminal and no --yes: the IAM roles are new, so it refuses.
    let out = deployer(&endpoint, &["up", "--env", "local", "--image", IMAGE]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("widens IAM or network access and there is no terminal"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("pass --yes"), "{}", stderr(&out));
    assert!(!aws.role_exists(TASK_ROLE).await, "nothing was created");

    // An image reference not pinned by digest.
    let out = deployer(
        &endpoint,
        &["up", "--env", "local", "--image", "repo:latest", "--yes"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is not pinned by digest"),
        "{}",
        stderr(&out)
    );

    // No credentials at all: said plainly, not as an SDK error chain.
    let out = Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args(["diff", "--env", "local", "--image", IMAGE])
        .current_dir(root())
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: no AWS credentials were found\nhelp: set AWS_PROFILE"),
        "{}",
        stderr(&out)
    );

    // A bad environment file is refused before AWS is asked anything.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "region = \"us-east-1\"\n[job]\nbookkeeper_email = \"nope\"\n",
    )
    .unwrap();
    let out = deployer(
        &endpoint,
        &[
            "up",
            "--env",
            bad.to_str().unwrap(),
            "--image",
            IMAGE,
            "--yes",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("missing field `sender_email`"),
        "{}",
        stderr(&out)
    );

    // Credentials for another account than the file names.
    let other = dir.path().join("other.toml");
    let text = std::fs::read_to_string(root().join("infra/envs/local.toml")).unwrap();
    std::fs::write(
        &other,
        text.replace("account = \"123456789012\"", "account = \"111122223333\""),
    )
    .unwrap();
    let out = deployer(
        &endpoint,
        &[
            "up",
            "--env",
            other.to_str().unwrap(),
            "--image",
            IMAGE,
            "--yes",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("the credentials are for account 123456789012, but"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("is for account 111122223333"),
        "{}",
        stderr(&out)
    );
    assert!(!aws.role_exists(TASK_ROLE).await, "nothing was created");
}

#[tokio::test]
async fn classic_utc_rules_engine_deploys_ecs_targets_and_a_second_up_changes_nothing() {
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    let text = std::fs::read_to_string(root().join("infra/envs/local.toml")).unwrap();
    // local.toml without its schedules: this test gives its own.
    let text = &text[..text.find("[[schedules.job]]").unwrap_or(text.len())];
    std::fs::write(
        &rules,
        format!(
            "{text}\n[schedules]\nengine = \"rules\"\n\n[[schedules.job]]\nname = \"qbo-send-invoices-daily\"\ncron = \"0 13 * * ? *\"\ntimezone = \"UTC\"\ncommand = [\"--send-invoices\"]\n"
        ),
    )
    .unwrap();
    let env = rules.to_str().unwrap();
    let first = json(
        &endpoint,
        &[
            "up", "--env", env, "--image", IMAGE, "--yes", "--output", "json",
        ],
    );
    assert!(
        first["summary"]["created"].as_u64().unwrap() > 10,
        "{first}"
    );
    let aws = live(&endpoint).await;
    let targets = aws
        .events
        .list_targets_by_rule()
        .rule("qbo-send-invoices-daily")
        .send()
        .await
        .unwrap();
    let target = &targets.targets()[0];
    assert_eq!(
        target.ecs_parameters().unwrap().task_definition_arn(),
        aws.active_revisions().await[0]
    );
    assert!(target.input().unwrap().contains("--send-invoices"));
    let second = json(
        &endpoint,
        &[
            "up", "--env", env, "--image", IMAGE, "--yes", "--output", "json",
        ],
    );
    assert_eq!(second["calls"]["writes"], 0, "{second}");
}

/// What holds a security group while a task's network interface still uses it.
async fn interface(aws: &Live, subnet: &str, group: &str) -> String {
    aws.ec2
        .create_network_interface()
        .subnet_id(subnet)
        .groups(group)
        .description("arn:aws:ecs:us-east-1:123456789012:attachment/test")
        .send()
        .await
        .unwrap()
        .network_interface()
        .and_then(|n| n.network_interface_id())
        .unwrap()
        .to_owned()
}

/// Every security group tagged as this environment's, as `(id, vpc)`.
async fn our_groups(aws: &Live) -> Vec<(String, String)> {
    use aws_sdk_ec2::types::Filter;
    let out = aws
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("tag:env").values("local").build())
        .filters(
            Filter::builder()
                .name("tag:managed-by")
                .values("deployer")
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.security_groups()
        .iter()
        .map(|g| {
            (
                g.group_id().unwrap().to_owned(),
                g.vpc_id().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The tasks move to another VPC: the old group (found by its tags) is deleted once the
/// new one is in place and the schedules use it, after the interface of a stopped task
/// lets go of it; `destroy` then waits within its bound, says what holds the group, and
/// leaves no group of ours anywhere. Runs through the proxy, because moto deletes a group
/// that an interface still uses and EC2 does not.
#[tokio::test]
async fn moving_the_tasks_to_another_vpc_replaces_the_group_and_deletes_the_old_one() {
    let moto = Moto::start().unwrap();
    let proxy = FaultProxy::start(moto.addr(), 0).unwrap();
    let endpoint = proxy.endpoint();
    let aws = live(&endpoint).await;
    up(&endpoint);
    let [(old, default_vpc)] = our_groups(&aws).await.try_into().unwrap();

    let vpc = aws
        .ec2
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .and_then(|v| v.vpc_id())
        .unwrap()
        .to_owned();
    let subnet = aws
        .ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.9.1.0/24")
        .send()
        .await
        .unwrap()
        .subnet()
        .and_then(|s| s.subnet_id())
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    // The same environment (named by its file) with its tasks in the new VPC.
    let moved = dir.path().join("local.toml");
    let text = std::fs::read_to_string(root().join("infra/envs/local.toml")).unwrap();
    std::fs::write(
        &moved,
        format!("{text}\n[network]\nsubnets = [\"{subnet}\"]\n"),
    )
    .unwrap();
    let env = moved.to_str().unwrap().to_owned();

    let diff = json(
        &endpoint,
        &["diff", "--env", &env, "--image", IMAGE, "--output", "json"],
    );
    let steps: Vec<(String, String, String)> = diff["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] != "no-change")
        .map(|s| {
            (
                s["action"].as_str().unwrap().to_owned(),
                s["id"].as_str().unwrap().to_owned(),
                s["note"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let group_id = "security-group/qbo-invoice-processor-tasks";
    assert_eq!(steps[0].0, "replace", "{steps:?}");
    assert_eq!(steps[0].1, group_id);
    let last = steps.last().unwrap();
    assert_eq!((last.0.as_str(), last.1.as_str()), ("delete", group_id));
    assert!(last.2.contains(&old) && last.2.contains(&vpc), "{last:?}");
    let updates: Vec<&str> = steps
        .iter()
        .filter(|s| s.0 == "update")
        .map(|s| s.1.as_str())
        .collect();
    assert_eq!(
        updates,
        [
            "schedule/qbo-send-invoices-daily",
            "schedule/qbo-create-invoices-monthly",
            "schedule/qbo-create-invoices-monthly-check"
        ]
    );

    // A task that stopped a moment ago still holds the old group through its interface.
    let default_subnet = aws
        .ec2
        .describe_subnets()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&default_vpc)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .subnets()[0]
        .subnet_id()
        .unwrap()
        .to_owned();
    let eni = interface(&aws, &default_subnet, &old).await;
    let ec2 = aws.ec2.clone();
    let released = eni.clone();
    // Released once `up` (two plans, then the apply) has met it: with margin for a
    // loaded machine, so the refusal names the interface.
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(8)).await;
        ec2.delete_network_interface()
            .network_interface_id(released)
            .send()
            .await
            .unwrap();
    });
    let (e, u) = (endpoint.clone(), env.clone());
    let out = tokio::task::spawn_blocking(move || {
        deployer(&e, &["up", "--env", &u, "--image", IMAGE, "--yes"])
    })
    .await
    .unwrap();
    release.await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("waiting for security group {old}"))
            && stderr(&out).contains(&eni),
        "says what it waits for: {}",
        stderr(&out)
    );
    let [(new, in_vpc)] = our_groups(&aws).await.try_into().unwrap();
    assert_eq!(in_vpc, vpc);
    assert_ne!(new, old);
    for schedule in ["qbo-send-invoices-daily", "qbo-create-invoices-monthly"] {
        let s = aws
            .scheduler
            .get_schedule()
            .group_name(GROUP)
            .name(schedule)
            .send()
            .await
            .unwrap();
        let network = s
            .target()
            .and_then(|t| t.ecs_parameters())
            .and_then(|p| p.network_configuration())
            .and_then(|n| n.awsvpc_configuration())
            .unwrap();
        assert_eq!(network.security_groups(), std::slice::from_ref(&new));
        assert_eq!(network.subnets(), std::slice::from_ref(&subnet));
    }

    let again = json(
        &endpoint,
        &[
            "up", "--env", &env, "--image", IMAGE, "--yes", "--output", "json",
        ],
    );
    assert_eq!(again["calls"]["writes"], 0, "{again}");

    // An interface that does not go: destroy waits its bound, names it, and fails.
    let held = interface(&aws, &subnet, &new).await;
    let out = super::deployer_command(Some(&endpoint))
        .env("DEPLOYER_WAIT_LIMIT", "3")
        .args(["destroy", "--env", &env, "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&held) && stderr(&out).contains("still in use after waiting"),
        "{}",
        stderr(&out)
    );
    assert_eq!(our_groups(&aws).await.len(), 1, "the held group stays");
    aws.ec2
        .delete_network_interface()
        .network_interface_id(&held)
        .send()
        .await
        .unwrap();
    let out = deployer(&endpoint, &["destroy", "--env", &env, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(our_groups(&aws).await.is_empty());
}

#[tokio::test]
async fn an_ecr_deploy_keeps_its_image_from_the_lifecycle_rule_and_refuses_one_the_repository_lost()
{
    let moto = Moto::start().unwrap();
    let endpoint = moto.endpoint();
    let aws = live(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let ecr_env = dir.path().join("local.toml");
    let text = std::fs::read_to_string(root().join("infra/envs/local.toml")).unwrap();
    let text = text.replace(
        "kind = \"local\"\nurl = \"127.0.0.1:5000\"",
        "kind = \"ecr\"",
    );
    assert!(text.contains("kind = \"ecr\""));
    std::fs::write(&ecr_env, text).unwrap();
    let env = ecr_env.to_str().unwrap().to_owned();

    // Two images in the repository (made here, as a first push-image would).
    aws.ecr
        .create_repository()
        .repository_name("qbo-invoice-processor")
        .send()
        .await
        .unwrap();
    let mut digests = Vec::new();
    for n in 1..=2 {
        digests.push(super::put_ecr_image(&aws.ecr, n).await);
    }
    let image =
        |d: &str| format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/qbo-invoice-processor@{d}");
    let tagged = |tag: &'static str| {
        let ecr = aws.ecr.clone();
        async move {
            ecr.batch_get_image()
                .repository_name("qbo-invoice-processor")
                .image_ids(
                    aws_sdk_ecr::types::ImageIdentifier::builder()
                        .image_tag(tag)
                        .build(),
                )
                .send()
                .await
                .unwrap()
                .images()
                .first()
                .and_then(|i| i.image_id())
                .and_then(|i| i.image_digest())
                .map(str::to_owned)
        }
    };

    let first = image(&digests[0]);
    let out = deployer(
        &endpoint,
        &["up", "--env", &env, "--image", &first, "--yes", "--adopt"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("tagged deployed"), "{}", stderr(&out));
    assert_eq!(
        tagged("deployed").await.as_deref(),
        Some(digests[0].as_str())
    );
    let repo = aws
        .ecr
        .describe_repositories()
        .repository_names("qbo-invoice-processor")
        .send()
        .await
        .unwrap();
    let repo = &repo.repositories()[0];
    assert_eq!(
        repo.image_tag_mutability()
            .map(aws_sdk_ecr::types::ImageTagMutability::as_str),
        Some("IMMUTABLE_WITH_EXCLUSION")
    );
    let mutable: Vec<&str> = repo
        .image_tag_mutability_exclusion_filters()
        .iter()
        .map(aws_sdk_ecr::types::ImageTagMutabilityExclusionFilter::filter)
        .collect();
    assert_eq!(mutable, ["deployed", "previous"]);
    let policy: Value = serde_json::from_str(
        aws.ecr
            .get_lifecycle_policy()
            .repository_name("qbo-invoice-processor")
            .send()
            .await
            .unwrap()
            .lifecycle_policy_text()
            .unwrap(),
    )
    .unwrap();
    let protected: Vec<&str> = policy["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["selection"]["tagPatternList"][0].as_str())
        .collect();
    assert_eq!(protected, ["deployed", "previous"], "{policy}");

    // The next image moves `deployed`; the old one becomes `previous`.
    let second = image(&digests[1]);
    let out = deployer(
        &endpoint,
        &["up", "--env", &env, "--image", &second, "--yes"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        tagged("deployed").await.as_deref(),
        Some(digests[1].as_str())
    );
    assert_eq!(
        tagged("previous").await.as_deref(),
        Some(digests[0].as_str())
    );

    // An image the repository no longer holds is refused, before any change.
    let gone = image(&format!("sha256:{}", "9".repeat(64)));
    let out = deployer(&endpoint, &["up", "--env", &env, "--image", &gone, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is no longer in repository qbo-invoice-processor"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("deployer push-image --env"),
        "{}",
        stderr(&out)
    );

    // The deployed image deleted from the repository: `verify` names it and the fix.
    aws.ecr
        .batch_delete_image()
        .repository_name("qbo-invoice-processor")
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_digest(&digests[1])
                .build(),
        )
        .send()
        .await
        .unwrap();
    let job = super::image::job_binary();
    let out = deployer(
        &endpoint,
        &[
            "verify",
            "--env",
            &env,
            "--local",
            "--binary",
            job.to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let image = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "image")
        .unwrap();
    assert_eq!(image["status"], "fail", "{report}");
    assert!(
        image["detail"].as_str().unwrap().contains(&digests[1])
            && image["detail"]
                .as_str()
                .unwrap()
                .contains("no longer in repository"),
        "{image}"
    );
    assert!(
        image["fix"]
            .as_str()
            .unwrap()
            .contains("deployer push-image"),
        "{image}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ups_at_once_take_turns_and_a_crashed_holders_lease_lapses() {
    let moto = Moto::start().unwrap();
    // The stack as it is, then two people deploying the same new image at once.
    let first = up(&moto.endpoint());
    assert_eq!(
        first["calls"]["writes"].as_u64().map(|w| w > 10),
        Some(true)
    );
    let again = up(&moto.endpoint());
    assert_eq!(
        again["calls"]["writes"], 0,
        "a no-change up takes no lease: {again}"
    );
    // 20 ms a call, and the new revision's registration held for 4 s: whichever takes
    // the lease first is still applying when the other asks for it, however the two
    // processes' starts fall on a loaded machine.
    let proxy = FaultProxy::with(
        moto.addr(),
        fakes::fault_proxy::Options {
            latency: std::time::Duration::from_millis(20),
            delay: Some((
                "RegisterTaskDefinition".to_owned(),
                std::time::Duration::from_secs(4),
            )),
            ..fakes::fault_proxy::Options::default()
        },
    )
    .unwrap();
    let endpoint = proxy.endpoint();
    let newer = IMAGE.replace('1', "2");
    let start = || {
        super::deployer_command(Some(&endpoint))
            .args([
                "up", "--env", "local", "--image", &newer, "--yes", "--output", "json",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start(), start());
    let (a, b) = tokio::join!(
        tokio::task::spawn_blocking(move || a.wait_with_output().unwrap()),
        tokio::task::spawn_blocking(move || b.wait_with_output().unwrap()),
    );
    let outs = [a.unwrap(), b.unwrap()];
    for o in &outs {
        assert!(o.status.success(), "{}", stderr(o));
    }
    // One deployed it; the other waited for it, saying who held the lease, then planned
    // again and found nothing left to do.
    let waited: Vec<&Output> = outs
        .iter()
        .filter(|o| stderr(o).contains("waiting: local is held by `up` by "))
        .collect();
    assert_eq!(
        waited.len(),
        1,
        "{}\n---\n{}",
        stderr(&outs[0]),
        stderr(&outs[1])
    );
    let replaced: Vec<u64> = outs
        .iter()
        .map(|o| {
            serde_json::from_slice::<Value>(&o.stdout).unwrap()["summary"]["replaced"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    assert!(
        replaced.contains(&0) && replaced.contains(&1),
        "{replaced:?}"
    );
    let config = moto_config(&moto.endpoint()).await;
    let ecs = aws_sdk_ecs::Client::new(&config);
    let revisions = ecs
        .list_task_definitions()
        .family_prefix(FAMILY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        revisions.task_definition_arns().len(),
        2,
        "the first and the new one, not one more each"
    );
    // Let go of at the end.
    let db = aws_sdk_dynamodb::Client::new(&config);
    let table = "qbo-invoice-processor-job-state";
    let key = aws_sdk_dynamodb::types::AttributeValue::S("lock/deployer".into());
    let lease = db
        .get_item()
        .table_name(table)
        .key("pk", key.clone())
        .send()
        .await
        .unwrap();
    assert!(lease.item().is_none(), "{lease:?}");

    // A holder that crashed: the next `up` names it and waits; once the lease's time has
    // run out (its `until` moved to the past, as the clock would), it takes it and goes
    // on, though no one let go of it.
    let put = |until: i64| {
        db.put_item()
            .table_name(table)
            .item("pk", key.clone())
            .item(
                "holder",
                aws_sdk_dynamodb::types::AttributeValue::S(
                    "`up` by arn:aws:iam::123456789012:user/alice on laptop (pid 7)".into(),
                ),
            )
            .item(
                "since",
                aws_sdk_dynamodb::types::AttributeValue::S("2026-12-03T09:00:00Z".into()),
            )
            .item(
                "until",
                aws_sdk_dynamodb::types::AttributeValue::N(until.to_string()),
            )
            .send()
    };
    put(jiff::Timestamp::now().as_second() + 120).await.unwrap();
    let third = IMAGE.replace('1', "3");
    let child = super::deployer_command(Some(&moto.endpoint()))
        .args(["up", "--env", "local", "--image", &third, "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (waited, out, said) = super::when_said(
        child,
        "held by `up` by arn:aws:iam::123456789012:user/alice on laptop (pid 7) since 2026-12-03T09:00:00Z",
        Box::pin(async {
            put(jiff::Timestamp::now().as_second() - 1).await.unwrap();
        }),
    )
    .await;
    assert!(waited && out.status.success(), "{said}");
}

/// CloudWatch Logs holds 10 resource policies per Region (the proxy holds that quota;
/// moto does not): with all ten taken by others, `up` names them and the fix.
#[tokio::test]
async fn a_region_whose_ten_log_resource_policies_are_taken_is_named_with_the_fix() {
    let moto = Moto::start().unwrap();
    let logs = aws_sdk_cloudwatchlogs::Client::new(&moto_config(&moto.endpoint()).await);
    for i in 0..10 {
        logs.put_resource_policy()
            .policy_name(format!("other-{i}"))
            .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"route53.amazonaws.com"},"Action":"logs:PutLogEvents","Resource":"*"}]}"#)
            .send()
            .await
            .unwrap();
    }
    let proxy = FaultProxy::with(moto.addr(), fakes::fault_proxy::Options::default()).unwrap();
    let out = deployer(
        &proxy.endpoint(),
        &["up", "--env", "local", "--image", IMAGE, "--yes"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("at most 10 resource policies per Region")
            && err.contains("other-0")
            && err.contains("other-9")
            && err.contains("aws logs delete-resource-policy"),
        "{err}"
    );
    // With one freed, the same `up` finishes.
    logs.delete_resource_policy()
        .policy_name("other-3")
        .send()
        .await
        .unwrap();
    let out = deployer(
        &proxy.endpoint(),
        &["up", "--env", "local", "--image", IMAGE, "--yes"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The lease's write lands and its answer is lost: the SDK's retry finds the lease taken,
/// by this very `up`, which goes on at once instead of waiting its own lease out.
#[tokio::test(flavor = "multi_thread")]
async fn an_up_whose_lease_answer_was_lost_does_not_wait_for_itself() {
    let moto = Moto::start().unwrap();
    up(&moto.endpoint());
    let proxy = FaultProxy::with(
        moto.addr(),
        fakes::fault_proxy::Options {
            lose_answer: Some(("PutItem".to_owned(), 1)),
            ..fakes::fault_proxy::Options::default()
        },
    )
    .unwrap();
    let newer = IMAGE.replace('1', "2");
    let out = deployer(
        &proxy.endpoint(),
        &["up", "--env", "local", "--image", &newer, "--yes"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        proxy.failed(),
        vec!["PutItem".to_owned()],
        "the answer was lost"
    );
    assert!(!stderr(&out).contains("waiting"), "{}", stderr(&out));
}

/// `up` applies along the dependency graph, not in waves: with the cluster's creation
/// held for 3 s, the execution role (which depends on the repository and the log group,
/// not on the cluster) is made meanwhile, where a wave would have waited for the cluster.
#[tokio::test(flavor = "multi_thread")]
async fn each_change_starts_once_its_own_dependencies_are_done() {
    let moto = Moto::start().unwrap();
    let proxy = FaultProxy::with(
        moto.addr(),
        fakes::fault_proxy::Options {
            delay: Some((
                "CreateCluster".to_owned(),
                std::time::Duration::from_secs(3),
            )),
            ..fakes::fault_proxy::Options::default()
        },
    )
    .unwrap();
    let out = deployer(
        &proxy.endpoint(),
        &["up", "--env", "local", "--image", IMAGE, "--yes"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stderr(&out);
    let at = |what: &str| {
        said.find(what)
            .unwrap_or_else(|| panic!("{what} not in:\n{said}"))
    };
    let role = at("iam-role/ecsTaskExecutionRole-QBOInvoiceProcessor created");
    let cluster = at("ecs-cluster/qbo-invoice-processor-cluster created");
    // The role came after the first wave (it depends on two of its resources) and still
    // finished before the cluster.
    assert!(role < cluster, "{said}");
    // What needs the cluster waited for it.
    assert!(
        at("iam-role/EventBridgeECSRole-QBOInvoiceProcessor created") > cluster,
        "{said}"
    );
}
