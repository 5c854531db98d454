//! Every stopped task of the cluster, written to a log group: ECS forgets stopped tasks
//! after about an hour (ListTasks), so `status` reads crashed and never-started runs (no
//! `run_finished` line of their own) from here.

use serde_json::json;

use super::{Builder, Made};
use crate::names;
use crate::resources::{
    EventRule, LogGroup, LogResourcePolicy, Resource, ResourceId, RuleTarget, Spec,
};

/// How long the stopped-task history is kept: beyond `status`'s 35 days, for a year's
/// look back at a bad month.
pub const TASK_EVENTS_RETENTION_DAYS: u32 = 400;

pub fn task_history(b: &mut Builder<'_>, cluster: &Made) -> ResourceId {
    let app = b.app();
    let group_name = names::task_events_group(app);
    let group_arn = b.arn("logs", &format!("log-group:{group_name}"));
    let group = b.add(
        Resource::new(
            &group_name,
            Spec::LogGroup(LogGroup {
                retention_days: TASK_EVENTS_RETENTION_DAYS,
            }),
        ),
        Some(group_arn.clone()),
        &[],
        true,
    );
    // EventBridge writes to a log group only where a resource policy lets it ("Add a
    // CloudWatch log group as a target to an EventBridge rule", AWS knowledge center; the
    // console makes this policy itself, the API does not).
    let policy = b.add(
        Resource::new(
            names::task_events_rule(app),
            Spec::LogResourcePolicy(LogResourcePolicy {
                document: json!({
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Sid": "TaskEventsToLogs",
                        "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"},
                        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                        "Resource": format!("{group_arn}:*"),
                    }],
                }),
            }),
        ),
        None,
        &[&group],
        false,
    );
    let rule_name = names::task_events_rule(app);
    let rule_arn = b.arn("events", &format!("rule/{rule_name}"));
    b.add(
        Resource::new(
            &rule_name,
            Spec::EventRule(EventRule {
                description: format!(
                    "{app} ({}): every stopped task, for deployer status",
                    b.env.name
                ),
                schedule_expression: None,
                event_pattern: Some(json!({
                    "source": ["aws.ecs"],
                    "detail-type": ["ECS Task State Change"],
                    "detail": {
                        "clusterArn": [cluster.arn],
                        "lastStatus": ["STOPPED"],
                    },
                })),
                enabled: true,
                target: RuleTarget::Logs {
                    id: "history".into(),
                    log_group_arn: group_arn,
                },
            }),
        ),
        Some(rule_arn),
        &[&group, &policy, &cluster.id],
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constructs::testing::{made, prod};
    use crate::resources::Kind;

    #[test]
    fn the_rule_writes_only_where_the_policy_lets_events_write() {
        let (env, ctx) = prod();
        let mut b = Builder::new(&env, &ctx);
        let cluster = made(Kind::EcsCluster, "c");
        let rule = task_history(&mut b, &cluster);
        let kinds: Vec<Kind> = b.resources().iter().map(|r| r.id().kind).collect();
        assert_eq!(
            kinds,
            [Kind::LogGroup, Kind::LogResourcePolicy, Kind::EventRule]
        );
        let rule = b.resources().iter().find(|r| r.id() == rule).unwrap();
        assert!(rule.depends_on.contains(&b.resources()[1].id()));
    }
}
