//! `deployer policy`: the least-privilege IAM policy the deploying identity needs for
//! this environment's stack (`push-image`, `diff`, `up`, `destroy`, `rollback`,
//! `run-task`, `tasks`, `verify`, `logs`, `status`), every resource named from the stack,
//! offline.
//!
//! Each AWS call the deployer makes (`aws.SERVICE.operation(` in `src/`) maps to one
//! action here; a unit test reads the sources and fails on a call with no action, and
//! an integration test runs the `parliament` policy linter over the result.

use std::fmt::Write as _;

use infra::resources::{Kind, Spec};
use infra::{Context, Environment, synthesize};
use serde_json::{Value, json};

use crate::cli::{Cli, Format, PolicyArgs};
use crate::error::Result;
use crate::output;

pub fn run(cli: &Cli, args: &PolicyArgs) -> Result<()> {
    let env = super::shared::load_environment(cli, &args.env)?;
    let account = args
        .account
        .clone()
        .or_else(|| env.file.account.clone())
        .unwrap_or_else(|| "*".into());
    if account == "*" && args.output == Format::Text {
        eprintln!(
            "note: no account in {} (or --account): the ARNs match any account",
            env.path.display()
        );
    }
    let policies = documents(&env, &account);
    let internal = |e: serde_json::Error| crate::error::Error::Internal(e.to_string());
    if let Some(too_big) = policies
        .iter()
        .find(|p| p.characters > MANAGED_POLICY_CHARS)
    {
        return Err(crate::error::Error::Internal(format!(
            "{} alone holds {} characters, over IAM's {MANAGED_POLICY_CHARS}",
            too_big.name, too_big.characters
        )));
    }
    let Some(dir) = &args.out_dir else {
        return output::text(&format!(
            "{}\n",
            serde_json::to_string_pretty(&json!({"policies": policies})).map_err(internal)?
        ));
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        crate::error::Error::Prerequisite(
            format!("cannot make {}: {e}", dir.display()),
            "name a directory you can write (--out-dir)".into(),
        )
    })?;
    let shown_account = if account == "*" {
        "ACCOUNT_ID"
    } else {
        account.as_str()
    };
    let partition = infra::context::partition(&env.file.region);
    let mut text = String::new();
    let mut commands = String::new();
    for p in &policies {
        let path = dir.join(format!("{}.json", p.name));
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&p.document).map_err(internal)? + "\n",
        )
        .map_err(|e| {
            crate::error::Error::Prerequisite(
                format!("cannot write {}: {e}", path.display()),
                "name a directory you can write (--out-dir)".into(),
            )
        })?;
        let _ = writeln!(
            text,
            "wrote {}  ({} of IAM's {MANAGED_POLICY_CHARS} characters)",
            path.display(),
            p.characters
        );
        let _ = write!(
            commands,
            "aws iam create-policy --policy-name {0} --policy-document file://{1}\naws iam attach-user-policy --user-name {2} --policy-arn arn:{partition}:iam::{shown_account}:policy/{0}\n",
            p.name,
            path.display(),
            args.user,
        );
    }
    let _ = write!(
        text,
        "\nIAM holds at most {MANAGED_POLICY_CHARS} characters in one managed policy, so the deployer's permissions come as {} managed policies: attach all of them to the one user or role (it may have {ATTACHED_PER_IDENTITY} attached). An administrator runs:\n\n{commands}\nFor a role, use `aws iam attach-role-policy --role-name NAME`. After a change of the environment file, write them again and create a new version of each (`aws iam create-policy-version --set-as-default`).\n",
        policies.len(),
    );
    if args.output == Format::Json {
        let paths: Vec<Value> = policies
            .iter()
            .map(|p| json!({"name": p.name, "characters": p.characters, "file": dir.join(format!("{}.json", p.name))}))
            .collect();
        return output::text(&format!(
            "{}\n",
            serde_json::to_string_pretty(&json!({"policies": paths})).map_err(internal)?
        ));
    }
    output::text(&text)
}

/// The policy for `env` in `account` (`*` for any).
pub fn document(env: &Environment, account: &str) -> Value {
    let f = &env.file;
    let stack = synthesize(env, &Context::offline(env));
    let (region, app) = (&f.region, &f.app);
    let partition = infra::context::partition(region);
    let arn =
        |service: &str, rest: &str| format!("arn:{partition}:{service}:{region}:{account}:{rest}");
    let of = |kind: Kind| -> Vec<String> {
        stack
            .of_kind(kind)
            .filter_map(|r| r.arn.clone())
            .map(|a| a.replace("${account}", account))
            .collect()
    };
    let roles = of(Kind::IamRole);
    let secrets: Vec<String> = [
        &f.secrets.qbo,
        &f.secrets.msgraph,
        &f.secrets.clickup,
        &f.secrets.robocorp,
    ]
    .into_iter()
    .flat_map(|name| {
        if name.starts_with("arn:") {
            vec![name.clone()]
        } else {
            // A secret's ARN ends in `-` and six random characters; a secret not
            // created yet has none, and is asked for by its bare name (the deployer
            // then warns that it is missing instead of failing with AccessDenied).
            vec![
                arn("secretsmanager", &format!("secret:{name}-??????")),
                arn("secretsmanager", &format!("secret:{name}")),
            ]
        }
    })
    .collect();
    let schedule_rules: Vec<String> = f
        .schedules
        .job
        .iter()
        .map(|s| arn("events", &format!("rule/{}", s.name)))
        .chain(of(Kind::EventRule))
        .collect();
    let log_group = arn("logs", &format!("log-group:{}", f.logs.group));
    let events_group = arn(
        "logs",
        &format!(
            "log-group:{}",
            infra::stack::names::task_events_group(&f.app)
        ),
    );
    let namespace = stack
        .of_kind(Kind::Alarm)
        .find_map(|r| match &r.properties {
            Spec::Alarm(a) if a.namespace != "AWS/Scheduler" && a.namespace != "AWS/Events" => {
                Some(a.namespace.clone())
            }
            _ => None,
        });
    // Actions only a stack that has the thing needs: attaching managed policies to a
    // role, opening a port in the tasks' group. Detaching and revoking stay, to undo
    // what someone added by hand.
    let attaches = stack.resources.iter().any(
        |r| matches!(&r.properties, Spec::IamRole(role) if !role.managed_policy_arns.is_empty()),
    );
    let opens = stack
        .resources
        .iter()
        .any(|r| matches!(&r.properties, Spec::SecurityGroup(g) if !g.ingress.is_empty()));
    let only = |wanted: bool, action: &'static str| wanted.then_some(action);
    let change_groups: Vec<&str> = [
        Some("ec2:AuthorizeSecurityGroupEgress"),
        only(opens, "ec2:AuthorizeSecurityGroupIngress"),
        Some("ec2:DeleteSecurityGroup"),
        Some("ec2:RevokeSecurityGroupEgress"),
        Some("ec2:RevokeSecurityGroupIngress"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let statement = |sid: &str, actions: &[&str], resources: Vec<String>| json!({"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources});
    let mut statements = vec![
        // No resource-level permissions exist for these (Service Authorization
        // Reference; the linter in the tests flags a `*` that could be narrower).
        statement(
            "AccountReads",
            &["ecr:GetAuthorizationToken"],
            vec!["*".into()],
        ),
        statement(
            "NetworkAndTaskDefinitionReads",
            &[
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSubnets",
                "ecs:DeregisterTaskDefinition",
                "ecs:DescribeTaskDefinition",
                "ecs:ListTaskDefinitions",
                "scheduler:ListSchedules",
                // Unsubscribe takes a subscription ARN, which has no resource type.
                "sns:Unsubscribe",
                "logs:DescribeLogGroups",
                // Resource policies are account-wide, by name: no resource type.
                "logs:DescribeResourcePolicies",
                "logs:PutResourcePolicy",
                "logs:DeleteResourcePolicy",
            ],
            vec!["*".into()],
        ),
        statement(
            "Repository",
            &[
                "ecr:BatchCheckLayerAvailability",
                "ecr:BatchGetImage",
                "ecr:CompleteLayerUpload",
                "ecr:CreateRepository",
                "ecr:DeleteRepository",
                "ecr:DescribeImages",
                "ecr:DescribeRepositories",
                "ecr:GetDownloadUrlForLayer",
                "ecr:GetLifecyclePolicy",
                "ecr:InitiateLayerUpload",
                "ecr:ListImages",
                "ecr:ListTagsForResource",
                "ecr:PutImage",
                "ecr:PutImageScanningConfiguration",
                "ecr:PutImageTagMutability",
                "ecr:PutLifecyclePolicy",
                "ecr:TagResource",
                "ecr:UploadLayerPart",
            ],
            of(Kind::EcrRepository),
        ),
        statement(
            "Logs",
            &[
                "logs:CreateLogGroup",
                "logs:DeleteLogGroup",
                "logs:DeleteMetricFilter",
                "logs:DescribeMetricFilters",
                "logs:FilterLogEvents",
                "logs:ListTagsForResource",
                "logs:PutMetricFilter",
                "logs:PutRetentionPolicy",
                "logs:TagResource",
            ],
            vec![
                log_group.clone(),
                format!("{log_group}:*"),
                events_group.clone(),
                format!("{events_group}:*"),
            ],
        ),
        statement(
            "Roles",
            &[
                only(attaches, "iam:AttachRolePolicy"),
                Some("iam:CreateRole"),
                Some("iam:DeleteRole"),
                Some("iam:DeleteRolePolicy"),
                Some("iam:DetachRolePolicy"),
                Some("iam:GetRole"),
                Some("iam:GetRolePolicy"),
                Some("iam:ListAttachedRolePolicies"),
                Some("iam:ListRolePolicies"),
                Some("iam:PutRolePolicy"),
                Some("iam:TagRole"),
                Some("iam:UpdateAssumeRolePolicy"),
                Some("iam:UpdateRole"),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
            roles.clone(),
        ),
        // The task definition names the task and execution roles; schedules and the
        // rules engine's targets name the schedule role.
        json!({
            "Sid": "PassTheStacksRoles",
            "Effect": "Allow",
            "Action": ["iam:PassRole"],
            "Resource": roles,
            "Condition": {"StringEquals": {"iam:PassedToService": [
                "ecs-tasks.amazonaws.com",
                "events.amazonaws.com",
                "scheduler.amazonaws.com",
            ]}},
        }),
        statement(
            "Cluster",
            &[
                "ecs:CreateCluster",
                "ecs:DeleteCluster",
                "ecs:DescribeClusters",
                "ecs:TagResource",
                "ecs:UpdateClusterSettings",
            ],
            of(Kind::EcsCluster),
        ),
        statement(
            "TaskDefinitions",
            &["ecs:RegisterTaskDefinition"],
            vec![arn("ecs", &format!("task-definition/{}:*", f.task.family))],
        ),
        // Registering a tagged task definition and starting a task with propagated tags
        // need ecs:TagResource on what they create ("Grant permission to tag resources
        // on creation", ECS developer guide); retagging needs it on our own.
        json!({
            "Sid": "TagOnCreate",
            "Effect": "Allow",
            "Action": ["ecs:TagResource"],
            "Resource": [
                arn("ecs", &format!("task-definition/{}:*", f.task.family)),
                arn("ecs", &format!("task/{}/*", f.cluster.name)),
            ],
            "Condition": {"StringEquals": {"ecs:CreateAction": ["RegisterTaskDefinition", "RunTask"]}},
        }),
        json!({
            "Sid": "RetagOurTaskDefinitions",
            "Effect": "Allow",
            "Action": ["ecs:TagResource"],
            "Resource": [arn("ecs", &format!("task-definition/{}:*", f.task.family))],
            "Condition": {"StringEquals": {"aws:ResourceTag/app": app}},
        }),
        // run-task: only this family, only in this cluster.
        json!({
            "Sid": "RunTheJob",
            "Effect": "Allow",
            "Action": ["ecs:RunTask"],
            "Resource": [arn("ecs", &format!("task-definition/{}:*", f.task.family))],
            "Condition": {"ArnEquals": {"ecs:cluster": of(Kind::EcsCluster)}},
        }),
        statement(
            "WatchTheJob",
            &["ecs:DescribeTasks", "ecs:StopTask"],
            vec![arn("ecs", &format!("task/{}/*", f.cluster.name))],
        ),
        // ListTasks by cluster and family is authorized against `*`: the reference's
        // container-instance resource matches only a call naming a container instance
        // (awsdocs amazon-ecs-developer-guide issue 211 and its fix: `*` with the cluster
        // as a condition). parliament calls this an unnecessary `*`; the test accepts
        // that one finding.
        json!({
            "Sid": "ListTheJobsTasks",
            "Effect": "Allow",
            "Action": ["ecs:ListTasks"],
            "Resource": ["*"],
            "Condition": {"ArnEquals": {"ecs:cluster": of(Kind::EcsCluster)}},
        }),
        // A security group's id is not known before it exists: groups and VPCs of this
        // account and region; rules and deletion only on groups tagged as this app's.
        statement(
            "CreateTheTasksGroup",
            &["ec2:CreateSecurityGroup"],
            vec![arn("ec2", "security-group/*"), arn("ec2", "vpc/*")],
        ),
        // Tags go on a group as it is created, or on one already ours: never on
        // another group, which could then pass the condition below.
        json!({
            "Sid": "TagTheGroupAtCreation",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags"],
            "Resource": [arn("ec2", "security-group/*")],
            "Condition": {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}},
        }),
        json!({
            "Sid": "RetagOurGroups",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags"],
            "Resource": [arn("ec2", "security-group/*")],
            "Condition": {"StringEquals": {"aws:ResourceTag/app": app, "aws:RequestTag/app": app}},
        }),
        json!({
            "Sid": "ChangeOnlyOurGroups",
            "Effect": "Allow",
            "Action": change_groups,
            "Resource": [arn("ec2", "security-group/*")],
            "Condition": {"StringEquals": {"aws:ResourceTag/app": app}},
        }),
        statement(
            "JobStateTable",
            &[
                "dynamodb:CreateTable",
                // The deploy lease (`lock/deployer`): one up or destroy at a time.
                "dynamodb:DeleteItem",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:DeleteTable",
                "dynamodb:DescribeTable",
                "dynamodb:ListTagsOfResource",
                "dynamodb:TagResource",
                "dynamodb:UpdateTable",
            ],
            of(Kind::DynamodbTable),
        ),
        statement(
            "Schedules",
            &[
                "scheduler:CreateSchedule",
                "scheduler:CreateScheduleGroup",
                "scheduler:DeleteSchedule",
                "scheduler:DeleteScheduleGroup",
                "scheduler:GetSchedule",
                "scheduler:GetScheduleGroup",
                "scheduler:ListTagsForResource",
                "scheduler:TagResource",
                "scheduler:UpdateSchedule",
            ],
            vec![
                arn(
                    "scheduler",
                    &format!("schedule-group/{}", f.schedules.group),
                ),
                arn("scheduler", &format!("schedule/{}/*", f.schedules.group)),
            ],
        ),
        statement(
            "Rules",
            &[
                "events:DeleteRule",
                "events:DescribeRule",
                "events:ListTagsForResource",
                "events:ListTargetsByRule",
                "events:PutRule",
                "events:PutTargets",
                "events:RemoveTargets",
                "events:TagResource",
            ],
            schedule_rules,
        ),
        statement(
            "AlertTopic",
            &[
                "sns:CreateTopic",
                "sns:DeleteTopic",
                "sns:GetTopicAttributes",
                "sns:ListSubscriptionsByTopic",
                "sns:ListTagsForResource",
                "sns:SetTopicAttributes",
                "sns:Subscribe",
                "sns:TagResource",
            ],
            of(Kind::SnsTopic),
        ),
        // DescribeAlarms with AlarmNamePrefix (every plan and `status`) is authorized
        // on `alarm:*`, whatever the prefix (aws-samples/amazon-cloudwatch-auto-alarms
        // issue 1, mattclay/aws-terminator issue 63); it only reads.
        statement(
            "AlarmReads",
            &["cloudwatch:DescribeAlarms"],
            vec![arn("cloudwatch", "alarm:*")],
        ),
        statement(
            "Alarms",
            &[
                "cloudwatch:DeleteAlarms",
                "cloudwatch:ListTagsForResource",
                "cloudwatch:PutMetricAlarm",
                "cloudwatch:TagResource",
            ],
            vec![arn("cloudwatch", &format!("alarm:{app}-*"))],
        ),
        statement("SecretsExist", &["secretsmanager:DescribeSecret"], secrets),
        // In an account that never used ECS, CreateCluster makes the ECS service-linked
        // role only if the caller may; without it the cluster is made anyway and every
        // task then fails with "Unable to assume the service linked role"
        // (CreateCluster API reference; awslabs/fargatecli issue 35).
        json!({
            "Sid": "EcsServiceLinkedRole",
            "Effect": "Allow",
            "Action": ["iam:CreateServiceLinkedRole"],
            "Resource": [format!(
                "arn:{partition}:iam::{account}:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS*"
            )],
            "Condition": {"StringLike": {"iam:AWSServiceName": "ecs.amazonaws.com"}},
        }),
    ];
    if let Some(namespace) = namespace {
        // `up` starts the heartbeat's clock with one data point in the job's namespace.
        statements.push(json!({
            "Sid": "HeartbeatStart",
            "Effect": "Allow",
            "Action": ["cloudwatch:PutMetricData"],
            "Resource": ["*"],
            "Condition": {"StringEquals": {"cloudwatch:namespace": namespace}},
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// What IAM allows in one managed policy: 6,144 characters, white space not counted
/// ("IAM and AWS STS quotas", IAM user guide).
pub const MANAGED_POLICY_CHARS: usize = 6144;
/// Managed policies one user or role may have attached, by default (same page).
pub const ATTACHED_PER_IDENTITY: usize = 10;

/// One managed policy to create: its name, document and size as IAM counts it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Managed {
    pub name: String,
    pub characters: usize,
    pub document: Value,
}

/// The characters IAM counts in a policy: all but white space.
pub fn size(document: &Value) -> usize {
    document
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .count()
}

/// [`document`] split into managed policies that each fit IAM's quota, statements kept
/// whole and in order: `APP-deployer-1`, `-2`...
pub fn documents(env: &Environment, account: &str) -> Vec<Managed> {
    let whole = document(env, account);
    let wrap = |statements: &[Value]| json!({"Version": "2012-10-17", "Statement": statements});
    let mut parts: Vec<Vec<Value>> = vec![Vec::new()];
    for statement in whole["Statement"].as_array().into_iter().flatten() {
        let current = parts.last_mut().expect("one part at least");
        let mut with = current.clone();
        with.push(statement.clone());
        if current.is_empty() || size(&wrap(&with)) <= MANAGED_POLICY_CHARS {
            *current = with;
        } else {
            parts.push(vec![statement.clone()]);
        }
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, statements)| {
            let document = wrap(statements);
            Managed {
                name: format!("{}-deployer-{}", env.file.app, i + 1),
                characters: size(&document),
                document,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `aws.SERVICE.operation(` -> `prefix:Operation`, for every call in `src/`.
    fn calls() -> std::collections::BTreeSet<String> {
        fn prefix(service: &str) -> &str {
            if service == "secrets" {
                "secretsmanager"
            } else {
                service
            }
        }
        let mut found = std::collections::BTreeSet::new();
        let mut stack = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text: String = std::fs::read_to_string(&path)
                    .unwrap()
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                for piece in text.split("aws.").skip(1) {
                    let mut parts = piece.splitn(3, '.');
                    let (Some(service), Some(rest)) = (parts.next(), parts.next()) else {
                        continue;
                    };
                    let Some(op) = rest.split('(').next().filter(|op| rest.len() > op.len()) else {
                        continue;
                    };
                    if !service
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                        || !op.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        || service == "calls"
                    {
                        continue;
                    }
                    let pascal: String = op
                        .split('_')
                        .map(|w| {
                            let mut c = w.chars();
                            c.next().map_or_else(String::new, |f| {
                                f.to_ascii_uppercase().to_string() + c.as_str()
                            })
                        })
                        .collect();
                    found.insert(format!("{}:{pascal}", prefix(service)));
                }
            }
        }
        found
    }

    #[test]
    fn every_call_the_deployer_makes_has_its_action() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/envs/prod.toml");
        let env = Environment::load(&root).unwrap();
        let policy = document(&env, "123456789012");
        let granted: std::collections::BTreeSet<String> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["Action"].as_array().unwrap().iter())
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        let calls = calls();
        assert!(calls.len() > 80, "the scan found the calls: {calls:?}");
        // STS GetCallerIdentity needs no permission (IAM user guide, "GetCallerIdentity").
        let missing: Vec<&String> = calls
            .iter()
            .filter(|c| !granted.contains(*c) && *c != "sts:GetCallerIdentity")
            // Granted only to a stack that attaches managed policies or opens a port.
            .filter(|c| *c != "iam:AttachRolePolicy" && *c != "ec2:AuthorizeSecurityGroupIngress")
            .collect();
        assert!(missing.is_empty(), "calls without an action: {missing:?}");
        // And nothing the deployer never calls, but for the registry API's (push-image,
        // --base pulls) and iam:PassRole, which AWS checks on other calls.
        let implied = [
            // Only a stack with managed policies or an open port needs these; the
            // shipped ones have neither.
            "iam:AttachRolePolicy",
            "ec2:AuthorizeSecurityGroupIngress",
            "ecr:BatchCheckLayerAvailability",
            "ecr:CompleteLayerUpload",
            "ecr:GetDownloadUrlForLayer",
            "ecr:InitiateLayerUpload",
            "ecr:UploadLayerPart",
            "iam:PassRole",
            // CreateCluster makes ECS's service-linked role with the caller's rights.
            "iam:CreateServiceLinkedRole",
        ];
        let unused: Vec<&String> = granted
            .iter()
            .filter(|a| !calls.contains(*a) && !implied.contains(&a.as_str()))
            .collect();
        assert!(unused.is_empty(), "actions no call needs: {unused:?}");
    }
}
