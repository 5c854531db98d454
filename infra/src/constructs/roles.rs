//! The job's three roles, each allowed only what it needs: ECS pulling the image and
//! writing logs (execution), the job itself (task), and the schedules starting the task.

use std::collections::BTreeMap;

use super::{Builder, Made};
use crate::env::ScheduleEngine;
use crate::policy::{PolicyDocument, Statement};
use crate::resources::{IamRole, Resource, Spec};

/// A role the given service assumes, with one inline policy.
fn role(
    b: &mut Builder<'_>,
    name: &str,
    purpose: &str,
    principal: &str,
    policy: (&str, Vec<Statement>),
    depends_on: &[&crate::resources::ResourceId],
) -> Made {
    let arn = b.role_arn(name);
    let description = format!("{} ({}): {purpose}", b.app(), b.env.name);
    let trust_policy = PolicyDocument::trust(principal, &b.ctx.account);
    b.made(
        Resource::new(
            name,
            Spec::IamRole(IamRole {
                description,
                trust_policy,
                inline_policies: BTreeMap::from([(
                    policy.0.to_owned(),
                    PolicyDocument::new(policy.1),
                )]),
                managed_policy_arns: Vec::new(),
            }),
        ),
        arn,
        depends_on,
        true,
    )
}

/// ECS pulls this repository's image and writes this log group.
pub fn execution_role(b: &mut Builder<'_>, repository: &Made, logs: &Made) -> Made {
    let statements = vec![
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
            Some([repository.arn.as_str()]),
        ),
        Statement::allow(
            Some("WriteThisLogGroup"),
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            Some([format!("{}:log-stream:*", logs.arn)]),
        ),
    ];
    let name = b.file().roles.execution.clone();
    role(
        b,
        &name,
        "ECS pulls the image and writes logs",
        "ecs-tasks.amazonaws.com",
        ("pull-image-write-logs", statements),
        &[&repository.id, &logs.id],
    )
}

/// What the job itself may do: read its secrets and the client table, write back the
/// rotated QBO refresh token, keep its ledger.
pub fn task_role(b: &mut Builder<'_>, ledger: &Made) -> Made {
    let f = b.file();
    let read_secrets: Vec<String> = f
        .secrets
        .entries()
        .iter()
        .map(|(_, name)| b.ctx.secret_arn(name))
        .collect();
    let client_table = b.arn("dynamodb", &format!("table/{}", f.client_table.name));
    let statements = vec![
        Statement::allow(
            Some("ReadTheFourSecrets"),
            ["secretsmanager:GetSecretValue"],
            Some(read_secrets),
        ),
        Statement::allow(
            Some("WriteBackTheRotatedQboRefreshToken"),
            ["secretsmanager:PutSecretValue"],
            Some([b.ctx.secret_arn(&f.secrets.qbo)]),
        ),
        Statement::allow(
            Some("ReadTheClientTable"),
            ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan"],
            Some([client_table]),
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
            Some([ledger.arn.as_str()]),
        ),
    ];
    role(
        b,
        &f.roles.task,
        "the job reads its secrets and client table, keeps its ledger",
        "ecs-tasks.amazonaws.com",
        ("secrets-and-client-table", statements),
        &[],
    )
}

/// The role schedules assume to start the task: this family, this cluster, these two
/// roles, nothing else.
pub fn schedule_role(
    b: &mut Builder<'_>,
    execution: &Made,
    task_role: &Made,
    cluster: &Made,
) -> Made {
    let f = b.file();
    let principal = match f.schedules.engine {
        ScheduleEngine::Scheduler => "scheduler.amazonaws.com",
        ScheduleEngine::Rules => "events.amazonaws.com",
    };
    let statements = vec![
        Statement::allow(
            Some("RunThisFamilyInThisCluster"),
            ["ecs:RunTask"],
            Some([b.arn("ecs", &format!("task-definition/{}:*", f.task.family))]),
        )
        .when("ArnEquals", "ecs:cluster", [cluster.arn.as_str()]),
        Statement::allow(
            Some("PassOnlyTheTaskRoles"),
            ["iam:PassRole"],
            Some([execution.arn.as_str(), task_role.arn.as_str()]),
        )
        .when(
            "StringEquals",
            "iam:PassedToService",
            ["ecs-tasks.amazonaws.com"],
        ),
        Statement::allow(
            Some("TagTheTasksItStarts"),
            ["ecs:TagResource"],
            Some([b.arn("ecs", &format!("task/{}/*", f.cluster.name))]),
        )
        .when("StringEquals", "ecs:CreateAction", ["RunTask"]),
    ];
    role(
        b,
        &f.roles.schedule,
        "schedules start the task",
        principal,
        ("run-task", statements),
        &[&execution.id, &task_role.id, &cluster.id],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constructs::testing::prod;
    use crate::resources::Kind;

    fn made(name: &str) -> Made {
        crate::constructs::testing::made(Kind::IamRole, name)
    }

    #[test]
    fn the_schedule_role_passes_only_the_two_task_roles_and_runs_only_in_the_cluster() {
        let (env, ctx) = prod();
        let mut b = Builder::new(&env, &ctx);
        let role = schedule_role(&mut b, &made("exec"), &made("task"), &made("cluster"));
        assert!(
            role.arn
                .ends_with(&format!("role/{}", env.file.roles.schedule))
        );
        let Spec::IamRole(r) = &b.resources()[0].properties else {
            panic!("a role");
        };
        let text = serde_json::to_string(&r.inline_policies["run-task"]).unwrap();
        assert!(text.contains("\"arn:exec\"") && text.contains("\"arn:task\""));
        assert!(text.contains("\"ecs:cluster\":\"arn:cluster\""), "{text}");
        assert_eq!(b.resources()[0].depends_on.len(), 3);
    }
}
