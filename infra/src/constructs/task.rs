//! The task definition: the job's image on Fargate, read-only root with a writable
//! `/tmp`, its environment, and its lines to the job's log group.

use std::collections::BTreeMap;

use super::{Builder, Made};
use crate::env::Environment;
use crate::resources::{
    ContainerDefinition, MountPoint, Resource, ResourceId, Spec, TaskDefinition,
};

/// What the task definition needs from the other constructs.
#[derive(Debug)]
pub struct TaskInputs<'m> {
    pub execution: &'m Made,
    pub task_role: &'m Made,
    pub logs: &'m Made,
    pub repository: &'m Made,
    pub ledger: &'m Made,
}

pub fn task_definition(b: &mut Builder<'_>, inputs: &TaskInputs<'_>) -> ResourceId {
    let f = b.file();
    let task = &f.task;
    let image = b.ctx.image.clone().unwrap_or_else(|| {
        format!(
            "{}/{}@{}",
            b.ctx.registry_host, f.repository.name, b.ctx.image_digest
        )
    });
    let region = b.ctx.region.clone();
    let environment = container_environment(b.env);
    b.add(
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
                execution_role_arn: inputs.execution.arn.clone(),
                task_role_arn: inputs.task_role.arn.clone(),
                volumes: vec!["tmp".into()],
                container: ContainerDefinition {
                    name: task.container.clone(),
                    image,
                    essential: true,
                    // AWS accepts a container without `memory`, but moto's RunTask fails
                    // with HTTP 500 unless it is set; the task's own size is a correct limit.
                    memory: task.memory,
                    readonly_root_filesystem: true,
                    environment,
                    mount_points: vec![MountPoint {
                        source_volume: "tmp".into(),
                        container_path: "/tmp".into(),
                        read_only: false,
                    }],
                    log_driver: "awslogs".into(),
                    log_options: BTreeMap::from([
                        ("awslogs-group".to_owned(), f.logs.group.clone()),
                        ("awslogs-region".to_owned(), region),
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
        &[
            &inputs.execution.id,
            &inputs.task_role.id,
            &inputs.logs.id,
            &inputs.repository.id,
            &inputs.ledger.id,
        ],
        true,
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constructs::testing::{made, prod};
    use crate::resources::Kind;

    #[test]
    fn the_root_is_read_only_and_tmp_writable() {
        let (env, ctx) = prod();
        let mut b = Builder::new(&env, &ctx);
        let made = |name: &str| made(Kind::IamRole, name);
        let (e, t, l, r, s) = (made("e"), made("t"), made("l"), made("r"), made("s"));
        task_definition(
            &mut b,
            &TaskInputs {
                execution: &e,
                task_role: &t,
                logs: &l,
                repository: &r,
                ledger: &s,
            },
        );
        let Spec::TaskDefinition(td) = &b.resources()[0].properties else {
            panic!("a task definition");
        };
        assert!(td.container.readonly_root_filesystem);
        assert_eq!(td.container.mount_points[0].container_path, "/tmp");
        assert_eq!(
            (td.execution_role_arn.as_str(), td.task_role_arn.as_str()),
            ("arn:e", "arn:t")
        );
        assert_eq!(
            td.container.environment["JOB_STATE_TABLE"],
            env.file.job_state.table
        );
    }
}
