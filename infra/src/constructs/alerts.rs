//! Who hears of a failure: the alert topic and its email subscription, the rule that
//! publishes a failed task to it, and the alarms on the job's metrics, each one call of
//! [`alarm`].

use std::collections::BTreeMap;

use serde_json::json;

use super::{Builder, Made};
use crate::env::ScheduleConfig;
use crate::names;
use crate::policy::{OneOrMany, PolicyDocument, Statement};
use crate::resources::{
    Alarm, EventRule, MetricFilter, Resource, ResourceId, RuleTarget, SnsSubscription, SnsTopic,
    Spec,
};

pub const RUNS_FAILED_METRIC: &str = "RunsFailed";
/// Hours without a successful daily run before the heartbeat alarm fires.
pub const HEARTBEAT_HOURS: i32 = 26;
/// The value `up` records in a heartbeat metric when it creates the heartbeat alarm:
/// a data point that is not a success.
pub const HEARTBEAT_ARMING: f64 = 0.0;
/// ECS `startedBy` of the task `deployer verify` starts to run the job's `--check`: the
/// task-failed alert leaves it out (its exit 1 means "a check found a problem", which the
/// operator running it sees in its table).
pub const VERIFY_STARTED_BY: &str = "deployer-verify";

/// `--send-invoices` -> `send-invoices`: the `job` field of the job's `run_finished` log.
pub fn job_of(schedule: &ScheduleConfig) -> &str {
    schedule
        .command
        .iter()
        .find_map(|a| crate::env::JOB_FLAGS.contains(&a.as_str()).then(|| &a[2..]))
        .unwrap_or("job")
}

/// `send-invoices` -> `SendInvoicesSucceeded`.
pub fn succeeded_metric(job: &str) -> String {
    let camel: String = job
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    format!("{camel}Succeeded")
}

/// A statement of the topic's policy, for a principal.
fn publisher(statement: Statement, kind: &str, principal: String) -> Statement {
    let mut s = statement;
    s.principal = Some(BTreeMap::from([(
        kind.to_owned(),
        OneOrMany(vec![principal]),
    )]));
    s
}

/// The alert topic, which the account manages, this app's alarms and the task-failed
/// rule publish to, and the alert address is subscribed to.
pub fn alert_topic(b: &mut Builder<'_>) -> Made {
    let f = b.file();
    let app = b.app();
    let topic_arn = b.arn("sns", &f.alerts.topic);
    let rule_arn = b.arn("events", &format!("rule/{}", names::task_failed_rule(app)));
    let owner = Statement::allow(
        Some("AccountManagesTheTopic"),
        [
            "sns:GetTopicAttributes",
            "sns:SetTopicAttributes",
            "sns:Subscribe",
            "sns:Publish",
        ],
        Some([topic_arn.as_str()]),
    );
    // A topic policy replaces SNS's default one, which is what lets CloudWatch alarms
    // publish: grant it back, for this app's alarms.
    let alarms = Statement::allow(
        Some("AlarmsPublish"),
        ["sns:Publish"],
        Some([topic_arn.as_str()]),
    )
    .when(
        "ArnLike",
        "aws:SourceArn",
        [b.arn("cloudwatch", &format!("alarm:{app}-*"))],
    )
    .when(
        "StringEquals",
        "aws:SourceAccount",
        [b.ctx.account.as_str()],
    );
    let events = Statement::allow(
        Some("TaskFailedRulePublishes"),
        ["sns:Publish"],
        Some([topic_arn.as_str()]),
    )
    .when("ArnEquals", "aws:SourceArn", [rule_arn.as_str()]);
    let policy = PolicyDocument::new(vec![
        publisher(owner, "AWS", b.ctx.arn("iam", false, "root")),
        publisher(alarms, "Service", "cloudwatch.amazonaws.com".into()),
        publisher(events, "Service", "events.amazonaws.com".into()),
    ]);
    let topic = b.made(
        Resource::new(
            &f.alerts.topic,
            Spec::SnsTopic(SnsTopic {
                display_name: format!("{app} {}", b.env.name),
                policy,
            }),
        ),
        topic_arn.clone(),
        &[],
        true,
    );
    let alert_email = b.env.alert_email();
    b.add(
        Resource::new(
            format!("{}/email/{alert_email}", f.alerts.topic),
            Spec::SnsSubscription(SnsSubscription {
                topic_arn,
                protocol: "email".into(),
                endpoint: alert_email.to_owned(),
            }),
        ),
        None,
        &[&topic.id],
        false,
    );
    topic
}

/// A task of the cluster that stopped with a non-zero exit, or never started, published
/// to the topic with what the alert needs (the container's own reason included).
pub fn task_failed_rule(b: &mut Builder<'_>, topic: &Made, cluster: &Made) -> ResourceId {
    let app = b.app();
    let env = &b.env.name;
    let rule_name = names::task_failed_rule(app);
    let rule_arn = b.arn("events", &format!("rule/{rule_name}"));
    b.add(
        Resource::new(
            &rule_name,
            Spec::EventRule(EventRule {
                description: format!("{app} ({env}): a task failed"),
                schedule_expression: None,
                event_pattern: Some(json!({
                    "source": ["aws.ecs"],
                    "detail-type": ["ECS Task State Change"],
                    "detail": {
                        "clusterArn": [cluster.arn],
                        "lastStatus": ["STOPPED"],
                        // (a non-zero exit, or no start) and not verify's check task; a
                        // field that is absent matches no `anything-but`, hence `exists`.
                        "$or": [
                            {"containers": {"exitCode": [{"anything-but": 0}]}, "startedBy": [{"anything-but": VERIFY_STARTED_BY}]},
                            {"containers": {"exitCode": [{"anything-but": 0}]}, "startedBy": [{"exists": false}]},
                            {"stopCode": ["TaskFailedToStart"], "startedBy": [{"anything-but": VERIFY_STARTED_BY}]},
                            {"stopCode": ["TaskFailedToStart"], "startedBy": [{"exists": false}]},
                        ],
                    },
                })),
                enabled: true,
                target: RuleTarget::Sns {
                    id: "alerts".into(),
                    topic_arn: topic.arn.clone(),
                    input_paths: BTreeMap::from([
                        ("group".to_owned(), "$.detail.group".to_owned()),
                        ("reason".to_owned(), "$.detail.stoppedReason".to_owned()),
                        // The container's own reason: an out-of-memory kill is told
                        // only there ("OutOfMemoryError: Container killed due to memory
                        // usage"; ECS "Stopped tasks errors").
                        (
                            "container".to_owned(),
                            "$.detail.containers[0].reason".to_owned(),
                        ),
                        ("task".to_owned(), "$.detail.taskArn".to_owned()),
                    ]),
                    // A JSON object with the placeholders unquoted: EventBridge quotes
                    // string values itself, and does not escape values placed inside
                    // quotes, so a stop reason holding a quote would break a quoted
                    // template ("Transforming target input", EventBridge user guide).
                    input_template: format!(
                        "{{\"alert\": \"{app} ({env}): a task stopped with a failure\", \"task\": <task>, \"group\": <group>, \"reason\": <reason>, \"container\": <container>, \"next\": \"deployer logs --env {env}\"}}"
                    ),
                },
            }),
        ),
        Some(rule_arn),
        &[&topic.id, &cluster.id],
        true,
    )
}

/// An alarm's usual shape: the sum over five minutes, at least one, notifying `topic`.
pub fn usual_alarm(
    topic: &Made,
    description: String,
    namespace: &str,
    metric: &str,
    dimensions: BTreeMap<String, String>,
    missing: &str,
) -> Alarm {
    Alarm {
        description,
        namespace: namespace.to_owned(),
        metric_name: metric.to_owned(),
        dimensions,
        statistic: "Sum".into(),
        period_seconds: 300,
        evaluation_periods: 1,
        datapoints_to_alarm: 1,
        threshold: 1.0,
        comparison: "GreaterThanOrEqualToThreshold".into(),
        treat_missing_data: missing.to_owned(),
        alarm_actions: vec![topic.arn.clone()],
        ok_actions: Vec::new(),
    }
}

/// One alarm named `name`, after what it watches (`watched`) and the topic it notifies.
pub fn alarm(
    b: &mut Builder<'_>,
    name: &str,
    spec: Alarm,
    watched: &ResourceId,
    topic: &Made,
) -> ResourceId {
    let arn = b.arn("cloudwatch", &format!("alarm:{name}"));
    b.add(
        Resource::new(name, Spec::Alarm(spec)),
        Some(arn),
        &[watched, &topic.id],
        true,
    )
}

/// A metric filter on the job's log group, counting 1 per matching line.
fn metric_filter(
    b: &mut Builder<'_>,
    name: String,
    logs: &Made,
    pattern: String,
    metric: &str,
) -> ResourceId {
    let f = b.file();
    b.add(
        Resource::new(
            name,
            Spec::MetricFilter(MetricFilter {
                log_group: f.logs.group.clone(),
                filter_pattern: pattern,
                metric_namespace: f.alerts.metric_namespace.clone(),
                metric_name: metric.into(),
                metric_value: "1".into(),
            }),
        ),
        None,
        &[&logs.id],
        false,
    )
}

/// A run that finished with failures (dry runs write nothing and alert no one).
pub fn run_failed(b: &mut Builder<'_>, logs: &Made, topic: &Made) -> ResourceId {
    let app = b.app();
    let filter = metric_filter(
        b,
        names::runs_failed_filter(app),
        logs,
        r#"{ $.event = "run_finished" && $.success IS FALSE && $.dry_run IS FALSE }"#.into(),
        RUNS_FAILED_METRIC,
    );
    let spec = usual_alarm(
        topic,
        format!("{app} ({}): a run finished with failures", b.env.name),
        &b.file().alerts.metric_namespace,
        RUNS_FAILED_METRIC,
        BTreeMap::new(),
        "notBreaching",
    );
    alarm(b, &names::run_failed_alarm(app), spec, &filter, topic)
}

/// No successful run of the heartbeat schedule's job for [`HEARTBEAT_HOURS`], when the
/// file names one.
pub fn heartbeat(b: &mut Builder<'_>, logs: &Made, topic: &Made) -> Option<ResourceId> {
    let f = b.file();
    let app = b.app();
    let schedule = f
        .alerts
        .heartbeat_schedule
        .as_ref()
        .and_then(|n| f.schedules.job.iter().find(|s| &s.name == n))?;
    let job = job_of(schedule);
    let metric = succeeded_metric(job);
    let filter = metric_filter(
        b,
        names::job_succeeded_filter(app, job),
        logs,
        format!(
            r#"{{ $.event = "run_finished" && $.job = "{job}" && $.success IS TRUE && $.dry_run IS FALSE }}"#
        ),
        &metric,
    );
    let mut spec = usual_alarm(
        topic,
        format!(
            "{app} ({}): no successful {job} run in {HEARTBEAT_HOURS} hours (schedule {})",
            b.env.name, schedule.name
        ),
        &f.alerts.metric_namespace,
        &metric,
        BTreeMap::new(),
        "breaching",
    );
    // 26 hourly periods with no success: a day plus slack for the DST change (two 05:00
    // runs 25 h apart) and for a run finishing later than the day before.
    spec.period_seconds = 3600;
    spec.evaluation_periods = HEARTBEAT_HOURS;
    spec.datapoints_to_alarm = HEARTBEAT_HOURS;
    spec.comparison = "LessThanThreshold".into();
    // Data points, not their sum: `up` records one of value 0 when it creates the alarm
    // (see HEARTBEAT_ARMING), so the 26 hours count from the deploy and the alarm does
    // not fire before the first run could have succeeded, while the metric's sum still
    // counts only real successes.
    spec.statistic = "SampleCount".into();
    spec.ok_actions = vec![topic.arn.clone()];
    Some(alarm(
        b,
        &names::heartbeat_alarm(app, job),
        spec,
        &filter,
        topic,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constructs::testing::prod;
    use crate::resources::Kind;

    #[test]
    fn a_new_alarm_is_one_call_and_notifies_the_topic() {
        let (env, ctx) = prod();
        let mut b = Builder::new(&env, &ctx);
        let topic = alert_topic(&mut b);
        let watched = ResourceId {
            kind: Kind::LogGroup,
            name: "x".into(),
        };
        let spec = usual_alarm(
            &topic,
            "too many retries".into(),
            "QBOInvoiceProcessor",
            "Retries",
            BTreeMap::new(),
            "notBreaching",
        );
        let id = alarm(
            &mut b,
            "qbo-invoice-processor-retries",
            spec,
            &watched,
            &topic,
        );
        let made = b.resources().iter().find(|r| r.id() == id).unwrap();
        assert_eq!(made.depends_on, vec![watched, topic.id.clone()]);
        assert!(
            made.arn
                .as_deref()
                .unwrap()
                .ends_with(":alarm:qbo-invoice-processor-retries")
        );
        let Spec::Alarm(a) = &made.properties else {
            panic!("an alarm");
        };
        assert_eq!(a.alarm_actions, vec![topic.arn.clone()]);
        assert!(!made.tags.is_empty());
    }

    #[test]
    fn the_topic_lets_only_this_apps_alarms_and_the_task_failed_rule_publish() {
        let (env, ctx) = prod();
        let mut b = Builder::new(&env, &ctx);
        alert_topic(&mut b);
        let Spec::SnsTopic(t) = &b.resources()[0].properties else {
            panic!("a topic");
        };
        let text = serde_json::to_string(&t.policy).unwrap();
        assert!(
            text.contains(&format!(":alarm:{}-*", env.file.app)),
            "{text}"
        );
        assert!(
            text.contains(&format!(":rule/{}-task-failed", env.file.app)),
            "{text}"
        );
        assert_eq!(b.resources()[1].id().kind, Kind::SnsSubscription);
    }
}
