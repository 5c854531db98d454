//! The invoice-processor stack: every resource of the design, built from an environment
//! and its context, with least-privilege policies and the dependencies between them.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use crate::context::{Context, Placeholder};
use crate::cron::Cron;
use crate::env::{Environment, ScheduleConfig, ScheduleEngine};
use crate::graph;
use crate::policy::{PolicyDocument, Statement};
use crate::resources::{
    Alarm, ContainerDefinition, DynamodbTable, EcrRepository, EcsCluster, EcsTarget, EventRule,
    IamRole, Kind, LogGroup, LogResourcePolicy, MetricFilter, MountPoint, Ref, Resource,
    ResourceId, RuleTarget, Schedule, ScheduleGroup, SecurityGroup, SecurityGroupRule,
    SnsSubscription, SnsTopic, Spec, Tags, TaskDefinition,
};

/// The desired state of one environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stack {
    pub app: String,
    pub environment: String,
    pub region: String,
    pub account: String,
    pub placeholders: Vec<Placeholder>,
    pub resources: Vec<Resource>,
}

impl Stack {
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Resource> {
        self.resources.iter().filter(move |r| r.kind == kind)
    }

    /// Resources in waves: each wave depends only on earlier ones, so the resources of
    /// a wave can be created concurrently.
    pub fn waves(&self) -> Vec<Vec<&Resource>> {
        graph::waves(&self.resources).expect("synthesize builds an acyclic graph")
    }
}

/// Names the stack gives its own resources (the rest come from the environment file).
pub mod names {
    pub fn task_failed_rule(app: &str) -> String {
        format!("{app}-task-failed")
    }
    /// The rule writing every stopped task of the cluster to [`task_events_group`].
    pub fn task_events_rule(app: &str) -> String {
        format!("{app}-task-events")
    }
    /// Where stopped tasks are remembered after ECS forgets them (about an hour).
    pub fn task_events_group(app: &str) -> String {
        format!("/aws/events/{app}-tasks")
    }
    pub fn runs_failed_filter(app: &str) -> String {
        format!("{app}-runs-failed")
    }
    pub fn job_succeeded_filter(app: &str, job: &str) -> String {
        format!("{app}-{job}-succeeded")
    }
    pub fn run_failed_alarm(app: &str) -> String {
        format!("{app}-run-failed")
    }
    pub fn heartbeat_alarm(app: &str, job: &str) -> String {
        format!("{app}-{job}-success-missing")
    }
    pub fn invocation_alarm(app: &str, schedule: &str) -> String {
        format!("{app}-{schedule}-invocation-errors")
    }
}

pub const RUNS_FAILED_METRIC: &str = "RunsFailed";
/// The tag `up` moves to the image it deploys, and the one it moves the old one to:
/// the lifecycle rule never expires either, so `rollback` always has its target.
pub const DEPLOYED_TAG: &str = "deployed";
pub const PREVIOUS_TAG: &str = "previous";

/// Hours without a successful daily run before the heartbeat alarm fires.
pub const HEARTBEAT_HOURS: i32 = 26;
/// The value `up` records in a heartbeat metric when it creates the heartbeat alarm:
/// a data point that is not a success.
pub const HEARTBEAT_ARMING: f64 = 0.0;

/// `--send-invoices` -> `send-invoices`: the `job` field of the job's `run_finished` log.
pub fn job_of(schedule: &ScheduleConfig) -> &str {
    schedule
        .command
        .iter()
        .find_map(|a| {
            crate::validate::JOB_FLAGS
                .contains(&a.as_str())
                .then(|| &a[2..])
        })
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

pub fn synthesize(env: &Environment, ctx: &Context) -> Stack {
    let f = &env.file;
    let app = f.app.as_str();
    let mut s = Builder {
        resources: Vec::new(),
        tags: env.tags(),
    };
    let arn = |service: &str, resource: &str| ctx.arn(service, true, resource);
    let role_arn = |name: &str| ctx.arn("iam", false, &format!("role/{name}"));

    let repo_arn = arn("ecr", &format!("repository/{}", f.repository.name));
    let protect = |priority: u32, tag: &str| {
        json!({
            "rulePriority": priority,
            "description": format!("never expire the {tag} image"),
            "selection": {
                "tagStatus": "tagged",
                "tagPatternList": [tag],
                "countType": "imageCountMoreThan",
                "countNumber": 1,
            },
            "action": {"type": "expire"},
        })
    };
    let repo = s.add(
        Resource::new(
            &f.repository.name,
            Spec::EcrRepository(EcrRepository {
                scan_on_push: f.repository.scan_on_push,
                // Immutable tags but the two `up` moves (ECR's IMMUTABLE_WITH_EXCLUSION,
                // July 2025; "ImageTagMutabilityExclusionFilter", ECR API reference).
                tag_mutability: if f.repository.immutable_tags {
                    "IMMUTABLE_WITH_EXCLUSION"
                } else {
                    "MUTABLE"
                }
                .into(),
                mutable_tags: if f.repository.immutable_tags {
                    vec![DEPLOYED_TAG.to_owned(), PREVIOUS_TAG.to_owned()]
                } else {
                    Vec::new()
                },
                // "An image that matches the tagging requirements of a higher priority
                // rule cannot be expired by a rule with a lower priority" (ECR user
                // guide, "Lifecycle policy evaluation rules"): the deployed and previous
                // images match rules 1 and 2, which never expire (one image holds a
                // tag), so rule 3 cannot expire them.
                lifecycle_policy: json!({"rules": [
                    protect(1, DEPLOYED_TAG),
                    protect(2, PREVIOUS_TAG),
                    {
                        "rulePriority": 3,
                        "description": format!("keep the last {} images", f.repository.keep_last_images),
                        "selection": {
                            "tagStatus": "any",
                            "countType": "imageCountMoreThan",
                            "countNumber": f.repository.keep_last_images,
                        },
                        "action": {"type": "expire"},
                    },
                ]}),
            }),
        ),
        Some(repo_arn.clone()),
        &[],
        true,
    );

    let log_group_arn = arn("logs", &format!("log-group:{}", f.logs.group));
    let logs = s.add(
        Resource::new(
            &f.logs.group,
            Spec::LogGroup(LogGroup {
                retention_days: f.logs.retention_days,
            }),
        ),
        Some(log_group_arn.clone()),
        &[],
        true,
    );

    // Execution role: ECS pulls this repository's image and writes this log group.
    let execution_role_arn = role_arn(&f.roles.execution);
    let execution = s.add(
        Resource::new(
            &f.roles.execution,
            Spec::IamRole(IamRole {
                description: format!("{app} ({}): ECS pulls the image and writes logs", env.name),
                trust_policy: PolicyDocument::trust("ecs-tasks.amazonaws.com", &ctx.account),
                inline_policies: BTreeMap::from([(
                    "pull-image-write-logs".to_owned(),
                    PolicyDocument::new(vec![
                        Statement::allow(
                            Some("EcrAuthorizationTakesNoResource"),
                            ["ecr:GetAuthorizationToken"],
                            Some(["*"]),
                        ),
                        Statement::allow(
                            Some("PullThisRepository"),
                            [
                                "ecr:BatchCheckLayerAvailability",
                                "ecr:BatchGetImage",
                                "ecr:GetDownloadUrlForLayer",
                            ],
                            Some([repo_arn.as_str()]),
                        ),
                        Statement::allow(
                            Some("WriteThisLogGroup"),
                            ["logs:CreateLogStream", "logs:PutLogEvents"],
                            Some([format!("{log_group_arn}:log-stream:*")]),
                        ),
                    ]),
                )]),
                managed_policy_arns: Vec::new(),
            }),
        ),
        Some(execution_role_arn.clone()),
        &[&repo, &logs],
        true,
    );

    // Task role: what the job itself may do.
    let secrets = &f.secrets;
    let read_secrets: Vec<String> = secrets
        .entries()
        .iter()
        .map(|(_, name)| ctx.secret_arn(name))
        .collect();
    let table_arn = arn("dynamodb", &format!("table/{}", f.client_table.name));
    // The job's own ledger: what the daily summary has reported.
    let state_table_arn = arn("dynamodb", &format!("table/{}", f.job_state.table));
    let state_table = s.add(
        Resource::new(
            &f.job_state.table,
            Spec::DynamodbTable(DynamodbTable {
                partition_key: "pk".into(),
                billing_mode: "PAY_PER_REQUEST".into(),
            }),
        ),
        Some(state_table_arn.clone()),
        &[],
        true,
    );
    let task_role_arn = role_arn(&f.roles.task);
    let task_role = s.add(
        Resource::new(
            &f.roles.task,
            Spec::IamRole(IamRole {
                description: format!(
                    "{app} ({}): the job reads its secrets and client table, keeps its ledger",
                    env.name
                ),
                trust_policy: PolicyDocument::trust("ecs-tasks.amazonaws.com", &ctx.account),
                inline_policies: BTreeMap::from([(
                    "secrets-and-client-table".to_owned(),
                    PolicyDocument::new(vec![
                        Statement::allow(
                            Some("ReadTheFourSecrets"),
                            ["secretsmanager:GetSecretValue"],
                            Some(read_secrets),
                        ),
                        Statement::allow(
                            Some("WriteBackTheRotatedQboRefreshToken"),
                            ["secretsmanager:PutSecretValue"],
                            Some([ctx.secret_arn(&secrets.qbo)]),
                        ),
                        Statement::allow(
                            Some("ReadTheClientTable"),
                            ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan"],
                            Some([table_arn]),
                        ),
                        Statement::allow(
                            Some("KeepTheJobLedger"),
                            // DeleteItem: a run releases its lease when it ends.
                            [
                                "dynamodb:DeleteItem",
                                "dynamodb:GetItem",
                                "dynamodb:PutItem",
                                "dynamodb:UpdateItem",
                            ],
                            Some([state_table_arn]),
                        ),
                    ]),
                )]),
                managed_policy_arns: Vec::new(),
            }),
        ),
        Some(task_role_arn.clone()),
        &[],
        true,
    );

    let cluster_arn = arn("ecs", &format!("cluster/{}", f.cluster.name));
    let cluster = s.add(
        Resource::new(
            &f.cluster.name,
            Spec::EcsCluster(EcsCluster {
                container_insights: f.cluster.container_insights,
            }),
        ),
        Some(cluster_arn.clone()),
        &[],
        true,
    );

    let security_group = s.add(
        Resource::new(
            &f.network.security_group,
            Spec::SecurityGroup(SecurityGroup {
                description: format!("{app} ({}): outbound HTTPS only", env.name),
                vpc_id: ctx.vpc_id.clone(),
                ingress: Vec::new(),
                egress: vec![SecurityGroupRule {
                    protocol: "tcp".into(),
                    from_port: 443,
                    to_port: 443,
                    cidr: "0.0.0.0/0".into(),
                    description: "HTTPS to AWS and the SaaS APIs".into(),
                }],
            }),
        ),
        None,
        &[],
        true,
    );

    let task = &f.task;
    let image = ctx.image.clone().unwrap_or_else(|| {
        format!(
            "{}/{}@{}",
            ctx.registry_host, f.repository.name, ctx.image_digest
        )
    });
    let task_definition = s.add(
        Resource::new(
            &task.family,
            Spec::TaskDefinition(TaskDefinition {
                family: task.family.clone(),
                cpu: task.cpu.to_string(),
                memory: task.memory.to_string(),
                network_mode: "awsvpc".into(),
                requires_compatibilities: vec!["FARGATE".into()],
                cpu_architecture: task.architecture.as_str().into(),
                operating_system_family: "LINUX".into(),
                execution_role_arn: execution_role_arn.clone(),
                task_role_arn: task_role_arn.clone(),
                volumes: vec!["tmp".into()],
                container: ContainerDefinition {
                    name: task.container.clone(),
                    image,
                    essential: true,
                    // AWS accepts a container without `memory`, but moto's RunTask fails
                    // with HTTP 500 unless it is set; the task's own size is a correct limit.
                    memory: task.memory,
                    readonly_root_filesystem: true,
                    environment: container_environment(env),
                    mount_points: vec![MountPoint {
                        source_volume: "tmp".into(),
                        container_path: "/tmp".into(),
                        read_only: false,
                    }],
                    log_driver: "awslogs".into(),
                    log_options: BTreeMap::from([
                        ("awslogs-group".to_owned(), f.logs.group.clone()),
                        ("awslogs-region".to_owned(), ctx.region.clone()),
                        ("awslogs-stream-prefix".to_owned(), "ecs".to_owned()),
                        // Since June 2025 awslogs defaults to non-blocking, which drops
                        // lines when its buffer fills; the alarms read the last line, so
                        // the job waits for CloudWatch instead ("Amazon ECS task
                        // definition parameters", logConfiguration, awslogs `mode`).
                        ("mode".to_owned(), "blocking".to_owned()),
                    ]),
                },
            }),
        ),
        None, // the revision is AWS's to choose: targets take it through a Ref
        &[&execution, &task_role, &logs, &repo, &state_table],
        true,
    );

    // The role schedules assume to start the task: this family, this cluster, these
    // two roles, nothing else.
    let schedule_principal = match f.schedules.engine {
        ScheduleEngine::Scheduler => "scheduler.amazonaws.com",
        ScheduleEngine::Rules => "events.amazonaws.com",
    };
    let schedule_role_arn = role_arn(&f.roles.schedule);
    let schedule_role = s.add(
        Resource::new(
            &f.roles.schedule,
            Spec::IamRole(IamRole {
                description: format!("{app} ({}): schedules start the task", env.name),
                trust_policy: PolicyDocument::trust(schedule_principal, &ctx.account),
                inline_policies: BTreeMap::from([(
                    "run-task".to_owned(),
                    PolicyDocument::new(vec![
                        Statement::allow(
                            Some("RunThisFamilyInThisCluster"),
                            ["ecs:RunTask"],
                            Some([arn("ecs", &format!("task-definition/{}:*", task.family))]),
                        )
                        .when(
                            "ArnEquals",
                            "ecs:cluster",
                            [cluster_arn.as_str()],
                        ),
                        Statement::allow(
                            Some("PassOnlyTheTaskRoles"),
                            ["iam:PassRole"],
                            Some([execution_role_arn.as_str(), task_role_arn.as_str()]),
                        )
                        .when(
                            "StringEquals",
                            "iam:PassedToService",
                            ["ecs-tasks.amazonaws.com"],
                        ),
                        Statement::allow(
                            Some("TagTheTasksItStarts"),
                            ["ecs:TagResource"],
                            Some([arn("ecs", &format!("task/{}/*", f.cluster.name))]),
                        )
                        .when(
                            "StringEquals",
                            "ecs:CreateAction",
                            ["RunTask"],
                        ),
                    ]),
                )]),
                managed_policy_arns: Vec::new(),
            }),
        ),
        Some(schedule_role_arn.clone()),
        &[&execution, &task_role, &cluster],
        true,
    );

    let topic_arn = arn("sns", &f.alerts.topic);
    let rule_name = names::task_failed_rule(app);
    let rule_arn = arn("events", &format!("rule/{rule_name}"));
    let topic = s.add(
        Resource::new(
            &f.alerts.topic,
            Spec::SnsTopic(SnsTopic {
                display_name: format!("{app} {}", env.name),
                policy: PolicyDocument::new(vec![
                    {
                        let mut owner = Statement::allow(
                            Some("AccountManagesTheTopic"),
                            [
                                "sns:GetTopicAttributes",
                                "sns:SetTopicAttributes",
                                "sns:Subscribe",
                                "sns:Publish",
                            ],
                            Some([topic_arn.as_str()]),
                        );
                        owner.principal = Some(BTreeMap::from([(
                            "AWS".to_owned(),
                            crate::policy::OneOrMany(vec![ctx.arn("iam", false, "root")]),
                        )]));
                        owner
                    },
                    {
                        // A topic policy replaces SNS's default one, which is what lets
                        // CloudWatch alarms publish: grant it back, for this app's alarms.
                        let mut alarms = Statement::allow(
                            Some("AlarmsPublish"),
                            ["sns:Publish"],
                            Some([topic_arn.as_str()]),
                        )
                        .when(
                            "ArnLike",
                            "aws:SourceArn",
                            [arn("cloudwatch", &format!("alarm:{app}-*"))],
                        )
                        .when(
                            "StringEquals",
                            "aws:SourceAccount",
                            [ctx.account.as_str()],
                        );
                        alarms.principal = Some(BTreeMap::from([(
                            "Service".to_owned(),
                            crate::policy::OneOrMany(vec!["cloudwatch.amazonaws.com".to_owned()]),
                        )]));
                        alarms
                    },
                    {
                        let mut events = Statement::allow(
                            Some("TaskFailedRulePublishes"),
                            ["sns:Publish"],
                            Some([topic_arn.as_str()]),
                        )
                        .when(
                            "ArnEquals",
                            "aws:SourceArn",
                            [rule_arn.as_str()],
                        );
                        events.principal = Some(BTreeMap::from([(
                            "Service".to_owned(),
                            crate::policy::OneOrMany(vec!["events.amazonaws.com".to_owned()]),
                        )]));
                        events
                    },
                ]),
            }),
        ),
        Some(topic_arn.clone()),
        &[],
        true,
    );
    let alert_email = env.alert_email();
    s.add(
        Resource::new(
            format!("{}/email/{alert_email}", f.alerts.topic),
            Spec::SnsSubscription(SnsSubscription {
                topic_arn: topic_arn.clone(),
                protocol: "email".into(),
                endpoint: alert_email.to_owned(),
            }),
        ),
        None,
        &[&topic],
        false,
    );

    // A task that stopped with a non-zero exit, or never started, in this cluster.
    s.add(
        Resource::new(
            &rule_name,
            Spec::EventRule(EventRule {
                description: format!("{app} ({}): a task failed", env.name),
                schedule_expression: None,
                event_pattern: Some(json!({
                    "source": ["aws.ecs"],
                    "detail-type": ["ECS Task State Change"],
                    "detail": {
                        "clusterArn": [cluster_arn],
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
                    topic_arn: topic_arn.clone(),
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
                        "{{\"alert\": \"{app} ({}): a task stopped with a failure\", \"task\": <task>, \"group\": <group>, \"reason\": <reason>, \"container\": <container>, \"next\": \"deployer logs --env {}\"}}",
                        env.name, env.name
                    ),
                },
            }),
        ),
        Some(rule_arn),
        &[&topic, &cluster],
        true,
    );

    // Every stopped task of the cluster, written to a log group: ECS forgets stopped
    // tasks after about an hour (ListTasks), so `status` reads crashed and never-started
    // runs (no `run_finished` line of their own) from here.
    let events_group_name = names::task_events_group(app);
    let events_group_arn = arn("logs", &format!("log-group:{events_group_name}"));
    let events_group = s.add(
        Resource::new(
            &events_group_name,
            Spec::LogGroup(LogGroup {
                retention_days: TASK_EVENTS_RETENTION_DAYS,
            }),
        ),
        Some(events_group_arn.clone()),
        &[],
        true,
    );
    // EventBridge writes to a log group only where a resource policy lets it
    // ("Add a CloudWatch log group as a target to an EventBridge rule", AWS knowledge
    // center; the console makes this policy itself, the API does not).
    let events_policy = s.add(
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
                        "Resource": format!("{events_group_arn}:*"),
                    }],
                }),
            }),
        ),
        None,
        &[&events_group],
        false,
    );
    let events_rule_name = names::task_events_rule(app);
    s.add(
        Resource::new(
            &events_rule_name,
            Spec::EventRule(EventRule {
                description: format!(
                    "{app} ({}): every stopped task, for deployer status",
                    env.name
                ),
                schedule_expression: None,
                event_pattern: Some(json!({
                    "source": ["aws.ecs"],
                    "detail-type": ["ECS Task State Change"],
                    "detail": {
                        "clusterArn": [cluster_arn],
                        "lastStatus": ["STOPPED"],
                    },
                })),
                enabled: true,
                target: RuleTarget::Logs {
                    id: "history".into(),
                    log_group_arn: events_group_arn,
                },
            }),
        ),
        Some(arn("events", &format!("rule/{events_rule_name}"))),
        &[&events_group, &events_policy, &cluster],
        true,
    );

    // Schedules: EventBridge Scheduler (in a tagged group) or classic rules (UTC).
    let target = |schedule: &ScheduleConfig| EcsTarget {
        cluster_arn: cluster_arn.clone(),
        role_arn: schedule_role_arn.clone(),
        task_definition: Ref::arn(task_definition.clone()).into(),
        launch_type: "FARGATE".into(),
        platform_version: "LATEST".into(),
        subnets: ctx.subnets.clone(),
        security_groups: vec![Ref::id(security_group.clone()).into()],
        assign_public_ip: f.network.assign_public_ip,
        container: task.container.clone(),
        command: schedule.command.clone(),
        environment: schedule.environment(),
        // Both, when either is set: the pair is what the Fargate table was checked for.
        cpu: sized(schedule).then(|| schedule.size(&f.task).0.to_string()),
        memory: sized(schedule).then(|| schedule.size(&f.task).1.to_string()),
        propagate_tags: true,
        retry_attempts: 2,
        max_event_age_seconds: 3600,
    };
    let start_deps = [&schedule_role, &task_definition, &cluster, &security_group];
    let mut invocation_alarms: Vec<(String, String, BTreeMap<String, String>, ResourceId)> =
        Vec::new();
    match f.schedules.engine {
        ScheduleEngine::Scheduler => {
            let group = &f.schedules.group;
            let group_id = s.add(
                Resource::new(group, Spec::ScheduleGroup(ScheduleGroup {})),
                Some(arn("scheduler", &format!("schedule-group/{group}"))),
                &[],
                true,
            );
            for schedule in &f.schedules.job {
                let deps = [
                    &group_id,
                    start_deps[0],
                    start_deps[1],
                    start_deps[2],
                    start_deps[3],
                ];
                s.add(
                    Resource::new(
                        &schedule.name,
                        Spec::Schedule(Schedule {
                            group: group.clone(),
                            expression: cron_expression(schedule),
                            timezone: schedule.timezone.clone(),
                            enabled: schedule.enabled,
                            description: describe(app, &env.name, schedule),
                            target: target(schedule),
                        }),
                    ),
                    Some(arn(
                        "scheduler",
                        &format!("schedule/{group}/{}", schedule.name),
                    )),
                    &deps,
                    false,
                );
            }
            invocation_alarms.push((
                "schedules".to_owned(),
                "AWS/Scheduler".into(),
                BTreeMap::from([("ScheduleGroup".to_owned(), group.clone())]),
                group_id,
            ));
        }
        ScheduleEngine::Rules => {
            for schedule in &f.schedules.job {
                let id = s.add(
                    Resource::new(
                        &schedule.name,
                        Spec::EventRule(EventRule {
                            description: describe(app, &env.name, schedule),
                            schedule_expression: Some(cron_expression(schedule)),
                            event_pattern: None,
                            enabled: schedule.enabled,
                            target: RuleTarget::Ecs {
                                id: "task".into(),
                                target: Box::new(target(schedule)),
                            },
                        }),
                    ),
                    Some(arn("events", &format!("rule/{}", schedule.name))),
                    &start_deps,
                    true,
                );
                invocation_alarms.push((
                    schedule.name.clone(),
                    "AWS/Events".into(),
                    BTreeMap::from([("RuleName".to_owned(), schedule.name.clone())]),
                    id,
                ));
            }
        }
    }

    // Metric filters on the job's `run_finished` line, and the alarms.
    let namespace = &f.alerts.metric_namespace;
    let failed_filter = s.add(
        Resource::new(
            names::runs_failed_filter(app),
            Spec::MetricFilter(MetricFilter {
                log_group: f.logs.group.clone(),
                // Dry runs write nothing and alert no one.
                filter_pattern:
                    r#"{ $.event = "run_finished" && $.success IS FALSE && $.dry_run IS FALSE }"#
                        .into(),
                metric_namespace: namespace.clone(),
                metric_name: RUNS_FAILED_METRIC.into(),
                metric_value: "1".into(),
            }),
        ),
        None,
        &[&logs],
        false,
    );
    let alarm = |description: String, namespace: &str, metric: &str, dims, missing: &str| Alarm {
        description,
        namespace: namespace.to_owned(),
        metric_name: metric.to_owned(),
        dimensions: dims,
        statistic: "Sum".into(),
        period_seconds: 300,
        evaluation_periods: 1,
        datapoints_to_alarm: 1,
        threshold: 1.0,
        comparison: "GreaterThanOrEqualToThreshold".into(),
        treat_missing_data: missing.to_owned(),
        alarm_actions: vec![topic_arn.clone()],
        ok_actions: Vec::new(),
    };
    let alarm_arn = |name: &str| arn("cloudwatch", &format!("alarm:{name}"));
    let name = names::run_failed_alarm(app);
    s.add(
        Resource::new(
            &name,
            Spec::Alarm(alarm(
                format!("{app} ({}): a run finished with failures", env.name),
                namespace,
                RUNS_FAILED_METRIC,
                BTreeMap::new(),
                "notBreaching",
            )),
        ),
        Some(alarm_arn(&name)),
        &[&failed_filter, &topic],
        true,
    );
    if let Some(heartbeat) = f
        .alerts
        .heartbeat_schedule
        .as_ref()
        .and_then(|n| f.schedules.job.iter().find(|s| &s.name == n))
    {
        let job = job_of(heartbeat);
        let metric = succeeded_metric(job);
        let filter = s.add(
            Resource::new(
                names::job_succeeded_filter(app, job),
                Spec::MetricFilter(MetricFilter {
                    log_group: f.logs.group.clone(),
                    filter_pattern: format!(
                        r#"{{ $.event = "run_finished" && $.job = "{job}" && $.success IS TRUE && $.dry_run IS FALSE }}"#
                    ),
                    metric_namespace: namespace.clone(),
                    metric_name: metric.clone(),
                    metric_value: "1".into(),
                }),
            ),
            None,
            &[&logs],
            false,
        );
        let name = names::heartbeat_alarm(app, job);
        let mut heartbeat_alarm = alarm(
            format!(
                "{app} ({}): no successful {job} run in {HEARTBEAT_HOURS} hours (schedule {})",
                env.name, heartbeat.name
            ),
            namespace,
            &metric,
            BTreeMap::new(),
            "breaching",
        );
        // 26 hourly periods with no success: a day plus slack for the DST change (two
        // 05:00 runs 25 h apart) and for a run finishing later than the day before.
        heartbeat_alarm.period_seconds = 3600;
        heartbeat_alarm.evaluation_periods = HEARTBEAT_HOURS;
        heartbeat_alarm.datapoints_to_alarm = HEARTBEAT_HOURS;
        heartbeat_alarm.comparison = "LessThanThreshold".into();
        // Data points, not their sum: `up` records one of value 0 when it creates the
        // alarm (see HEARTBEAT_ARMING), so the 26 hours count from the deploy and the
        // alarm does not fire before the first run could have succeeded, while the
        // metric's sum still counts only real successes.
        heartbeat_alarm.statistic = "SampleCount".into();
        heartbeat_alarm.ok_actions = vec![topic_arn.clone()];
        s.add(
            Resource::new(&name, Spec::Alarm(heartbeat_alarm)),
            Some(alarm_arn(&name)),
            &[&filter, &topic],
            true,
        );
    }
    let metric = match f.schedules.engine {
        ScheduleEngine::Scheduler => "TargetErrorCount",
        ScheduleEngine::Rules => "FailedInvocations",
    };
    for (subject, namespace, dims, dep) in invocation_alarms {
        let name = names::invocation_alarm(app, &subject);
        s.add(
            Resource::new(
                &name,
                Spec::Alarm(alarm(
                    format!("{app} ({}): {subject} could not start the task", env.name),
                    &namespace,
                    metric,
                    dims,
                    "notBreaching",
                )),
            ),
            Some(alarm_arn(&name)),
            &[&dep, &topic],
            true,
        );
    }

    Stack {
        app: app.to_owned(),
        environment: env.name.clone(),
        region: ctx.region.clone(),
        account: ctx.account.clone(),
        placeholders: ctx.placeholders.clone(),
        resources: s.resources,
    }
}

/// The container's environment: the nine variables of the original deployment, the
/// region, the job-state table, and the file's extras.
pub fn container_environment(env: &Environment) -> BTreeMap<String, String> {
    let f = &env.file;
    let j = &f.job;
    let mut vars = BTreeMap::from([
        ("AWS_REGION", f.region.clone()),
        ("QBO_SECRET_NAME", f.secrets.qbo.clone()),
        ("MSGRAPH_SECRET_NAME", f.secrets.msgraph.clone()),
        ("CLICKUP_SECRET_NAME", f.secrets.clickup.clone()),
        ("ROBOCORP_API_SECRET_NAME", f.secrets.robocorp.clone()),
        (
            "DYNAMODB_TABLE_ROBOCORP_CLIENTS",
            f.client_table.name.clone(),
        ),
        ("BOOKKEEPER_EMAIL", j.bookkeeper_email.clone()),
        ("SENDER_EMAIL", j.sender_email.clone()),
        ("EXCLUDED_CUSTOMERS", j.excluded_customers.join(",")),
        ("MS_GRAPH_HOSTNAME", j.ms_graph_hostname.clone()),
        ("JOB_STATE_TABLE", f.job_state.table.clone()),
    ]);
    if let Some(tz) = &j.billing_timezone {
        vars.insert("BILLING_TIMEZONE", tz.clone());
    }
    vars.into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(j.environment.clone())
        .collect()
}

/// ECS `startedBy` of the task `deployer verify` starts to run the job's `--check`: the
/// task-failed alert leaves it out (its exit 1 means "a check found a problem", which the
/// operator running it sees in its table).
pub const VERIFY_STARTED_BY: &str = "deployer-verify";

/// How long the stopped-task history is kept: beyond `status`'s 35 days, for a year's
/// look back at a bad month.
pub const TASK_EVENTS_RETENTION_DAYS: u32 = 400;

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

struct Builder {
    resources: Vec<Resource>,
    tags: Tags,
}

impl Builder {
    fn add(
        &mut self,
        mut resource: Resource,
        arn: Option<String>,
        depends_on: &[&ResourceId],
        tagged: bool,
    ) -> ResourceId {
        resource.arn = arn;
        resource.depends_on = depends_on.iter().map(|d| (*d).clone()).collect();
        if tagged {
            resource.tags = self.tags.clone();
        }
        let id = resource.id();
        self.resources.push(resource);
        id
    }
}
