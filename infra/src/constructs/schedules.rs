//! The scheduled jobs: one call of [`scheduled_job`] per schedule of the file, on
//! EventBridge Scheduler (in a tagged group, in the schedule's time zone) or on classic
//! EventBridge rules (UTC).

use std::collections::BTreeMap;

use super::{Builder, Made};
use crate::cron::Cron;
use crate::env::{ScheduleConfig, ScheduleEngine};
use crate::resources::{
    EcsTarget, EventRule, Ref, Resource, ResourceId, RuleTarget, Schedule, ScheduleGroup, Spec,
};

/// What a schedule starts the task with.
#[derive(Debug)]
pub struct Start<'m> {
    pub role: &'m Made,
    pub task_definition: &'m ResourceId,
    pub cluster: &'m Made,
    pub security_group: &'m ResourceId,
}

/// Where a failure to start the task is counted: an invocation alarm's subject, metric
/// namespace and dimensions, and the resource it watches.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocations {
    pub subject: String,
    pub namespace: String,
    pub dimensions: BTreeMap<String, String>,
    pub watched: ResourceId,
}

/// The metric a start that failed is counted in, per engine.
pub fn failed_starts_metric(engine: ScheduleEngine) -> &'static str {
    match engine {
        ScheduleEngine::Scheduler => "TargetErrorCount",
        ScheduleEngine::Rules => "FailedInvocations",
    }
}

/// Every schedule of the file, and where each engine counts failed starts.
pub fn scheduled_jobs(b: &mut Builder<'_>, start: &Start<'_>) -> Vec<Invocations> {
    let f = b.file();
    match f.schedules.engine {
        ScheduleEngine::Scheduler => {
            let group = &f.schedules.group;
            let group_arn = b.arn("scheduler", &format!("schedule-group/{group}"));
            let group_id = b.add(
                Resource::new(group, Spec::ScheduleGroup(ScheduleGroup {})),
                Some(group_arn.clone()),
                &[],
                true,
            );
            let made = Made {
                id: group_id.clone(),
                arn: group_arn,
            };
            for schedule in &f.schedules.job {
                scheduled_job(b, start, schedule, Some(&made));
            }
            vec![Invocations {
                subject: "schedules".to_owned(),
                namespace: "AWS/Scheduler".into(),
                dimensions: BTreeMap::from([("ScheduleGroup".to_owned(), group.clone())]),
                watched: group_id,
            }]
        }
        ScheduleEngine::Rules => f
            .schedules
            .job
            .iter()
            .map(|schedule| Invocations {
                subject: schedule.name.clone(),
                namespace: "AWS/Events".into(),
                dimensions: BTreeMap::from([("RuleName".to_owned(), schedule.name.clone())]),
                watched: scheduled_job(b, start, schedule, None),
            })
            .collect(),
    }
}

/// One schedule: a Scheduler schedule in `group`, or (with no group) a classic rule.
pub fn scheduled_job(
    b: &mut Builder<'_>,
    start: &Start<'_>,
    schedule: &ScheduleConfig,
    group: Option<&Made>,
) -> ResourceId {
    let description = describe(b.app(), &b.env.name, schedule);
    let target = target(b, start, schedule);
    let start_deps = [
        &start.role.id,
        start.task_definition,
        &start.cluster.id,
        start.security_group,
    ];
    if let Some(group) = group {
        let name = &group.id.name;
        let arn = b.arn("scheduler", &format!("schedule/{name}/{}", schedule.name));
        let deps = [
            &group.id,
            start_deps[0],
            start_deps[1],
            start_deps[2],
            start_deps[3],
        ];
        b.add(
            Resource::new(
                &schedule.name,
                Spec::Schedule(Schedule {
                    group: name.clone(),
                    expression: cron_expression(schedule),
                    timezone: schedule.timezone.clone(),
                    enabled: schedule.enabled,
                    description,
                    target,
                }),
            ),
            Some(arn),
            &deps,
            false,
        )
    } else {
        let arn = b.arn("events", &format!("rule/{}", schedule.name));
        b.add(
            Resource::new(
                &schedule.name,
                Spec::EventRule(EventRule {
                    description,
                    schedule_expression: Some(cron_expression(schedule)),
                    event_pattern: None,
                    enabled: schedule.enabled,
                    target: RuleTarget::Ecs {
                        id: "task".into(),
                        target: Box::new(target),
                    },
                }),
            ),
            Some(arn),
            &start_deps,
            true,
        )
    }
}

/// The task a schedule starts: the family's revision, in the cluster and the tasks'
/// group, with the schedule's command, environment and (when it sets one) size.
fn target(b: &Builder<'_>, start: &Start<'_>, schedule: &ScheduleConfig) -> EcsTarget {
    let f = b.file();
    EcsTarget {
        cluster_arn: start.cluster.arn.clone(),
        role_arn: start.role.arn.clone(),
        task_definition: Ref::arn(start.task_definition.clone()).into(),
        launch_type: "FARGATE".into(),
        platform_version: "LATEST".into(),
        subnets: b.ctx.subnets.clone(),
        security_groups: vec![Ref::id(start.security_group.clone()).into()],
        assign_public_ip: f.network.assign_public_ip,
        container: f.task.container.clone(),
        command: schedule.command.clone(),
        environment: schedule.environment(),
        // Both, when either is set: the pair is what the Fargate table was checked for.
        cpu: sized(schedule).then(|| schedule.size(&f.task).0.to_string()),
        memory: sized(schedule).then(|| schedule.size(&f.task).1.to_string()),
        propagate_tags: true,
        retry_attempts: 2,
        max_event_age_seconds: 3600,
    }
}

/// Whether the schedule runs at its own size.
fn sized(schedule: &ScheduleConfig) -> bool {
    schedule.cpu.is_some() || schedule.memory.is_some()
}

fn cron_expression(schedule: &ScheduleConfig) -> String {
    Cron::parse(&schedule.cron).map_or_else(|_| schedule.cron.clone(), |c| c.expression())
}

fn describe(app: &str, env: &str, schedule: &ScheduleConfig) -> String {
    format!(
        "{app} ({env}): {} at {} {}",
        schedule.command.join(" "),
        cron_expression(schedule),
        schedule.timezone
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constructs::testing::{made, prod};
    use crate::resources::Kind;

    #[test]
    fn a_new_schedule_is_one_call_in_the_group_with_what_starts_the_task() {
        let (env, ctx) = prod();
        let mut b = Builder::new(&env, &ctx);
        let (role, cluster, group) = (
            made(Kind::IamRole, "r"),
            made(Kind::EcsCluster, "c"),
            made(Kind::ScheduleGroup, "g"),
        );
        let (td, sg) = (
            made(Kind::TaskDefinition, "t").id,
            made(Kind::SecurityGroup, "s").id,
        );
        let start = Start {
            role: &role,
            task_definition: &td,
            cluster: &cluster,
            security_group: &sg,
        };
        let mut quarterly = env.file.schedules.job[0].clone();
        quarterly.name = "qbo-check-billed-quarterly".into();
        quarterly.cron = "0 7 1 1,4,7,10 *".into();
        let id = scheduled_job(&mut b, &start, &quarterly, Some(&group));
        let made = b.resources().iter().find(|r| r.id() == id).unwrap();
        assert_eq!(made.depends_on.len(), 5);
        assert!(made.depends_on.contains(&group.id) && made.depends_on.contains(&td));
        assert!(
            made.arn
                .as_deref()
                .unwrap()
                .ends_with(":schedule/g/qbo-check-billed-quarterly")
        );
        let Spec::Schedule(s) = &made.properties else {
            panic!("a schedule");
        };
        assert_eq!(
            (s.group.as_str(), s.target.role_arn.as_str()),
            ("g", "arn:r")
        );
    }
}
