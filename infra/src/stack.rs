//! The invoice-processor stack: every resource of the design, built from an environment
//! and its context by the constructs (`constructs/`), with least-privilege policies and
//! the dependencies between them.

use serde::Serialize;

use crate::constructs::schedules::{Start, failed_starts_metric, scheduled_jobs};
use crate::constructs::task::TaskInputs;
use crate::constructs::{Builder, alerts, history, logs, network, repository, roles, state, task};
use crate::context::{Context, Placeholder};
use crate::env::Environment;
use crate::graph;
use crate::resources::{Kind, Resource};

pub use crate::constructs::alerts::{
    HEARTBEAT_ARMING, HEARTBEAT_HOURS, RUNS_FAILED_METRIC, VERIFY_STARTED_BY, job_of,
    succeeded_metric,
};
pub use crate::constructs::history::TASK_EVENTS_RETENTION_DAYS;
pub use crate::constructs::repository::{DEPLOYED_TAG, LATEST_TAG, PREVIOUS_TAG};
pub use crate::constructs::task::container_environment;
pub use crate::names;

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

/// The stack: the image repository and the job's logs; its roles and ledger; where its
/// tasks run and what they run; who hears of a failure; the task history; the schedules;
/// and the alarms on its metrics.
pub fn synthesize(env: &Environment, ctx: &Context) -> Stack {
    let mut b = Builder::new(env, ctx);
    let repository = repository::image_repository(&mut b);
    let logs = logs::job_logs(&mut b);
    let execution = roles::execution_role(&mut b, &repository, &logs);
    let ledger = state::job_state_table(&mut b);
    let task_role = roles::task_role(&mut b, &ledger);
    let cluster = network::cluster(&mut b);
    let security_group = network::tasks_security_group(&mut b);
    let task_definition = task::task_definition(
        &mut b,
        &TaskInputs {
            execution: &execution,
            task_role: &task_role,
            logs: &logs,
            repository: &repository,
            ledger: &ledger,
        },
    );
    let schedule_role = roles::schedule_role(&mut b, &execution, &task_role, &cluster);
    let topic = alerts::alert_topic(&mut b);
    alerts::task_failed_rule(&mut b, &topic, &cluster);
    history::task_history(&mut b, &cluster);
    let invocations = scheduled_jobs(
        &mut b,
        &Start {
            role: &schedule_role,
            task_definition: &task_definition,
            cluster: &cluster,
            security_group: &security_group,
        },
    );
    alerts::run_failed(&mut b, &logs, &topic);
    alerts::heartbeat(&mut b, &logs, &topic);
    let metric = failed_starts_metric(env.file.schedules.engine);
    for watched in invocations {
        let spec = alerts::usual_alarm(
            &topic,
            format!(
                "{} ({}): {} could not start the task",
                env.file.app, env.name, watched.subject
            ),
            &watched.namespace,
            metric,
            watched.dimensions,
            "notBreaching",
        );
        let name = names::invocation_alarm(&env.file.app, &watched.subject);
        alerts::alarm(&mut b, &name, spec, &watched.watched, &topic);
    }
    Stack {
        app: env.file.app.clone(),
        environment: env.name.clone(),
        region: ctx.region.clone(),
        account: ctx.account.clone(),
        placeholders: ctx.placeholders.clone(),
        resources: b.into_resources(),
    }
}
