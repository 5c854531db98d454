//! The stack's constructs, as CDK composes a stack: each makes the resources of one part
//! of the architecture from the environment and its context, and returns what the others
//! need from it. `synthesize` (in `stack.rs`) is their composition.
//!
//! - [`repository`]: the image repository and its lifecycle rules.
//! - [`logs`]: the job's log group.
//! - [`roles`]: the execution role, the task role, the schedules' role.
//! - [`state`]: the job's ledger table.
//! - [`network`]: the cluster and the tasks' security group.
//! - [`task`]: the task definition.
//! - [`alerts`]: the alert topic, the task-failed rule, metric filters and alarms.
//! - [`history`]: every stopped task, kept in a log group for `status`.
//! - [`schedules`]: one scheduled job per schedule (Scheduler or classic rules).

pub mod alerts;
pub mod history;
pub mod logs;
pub mod network;
pub mod repository;
pub mod roles;
pub mod schedules;
pub mod state;
pub mod task;

use crate::context::Context;
use crate::env::{EnvFile, Environment};
use crate::resources::{Resource, ResourceId, Tags};

/// What constructs add their resources to.
#[derive(Debug)]
pub struct Builder<'a> {
    pub env: &'a Environment,
    pub ctx: &'a Context,
    resources: Vec<Resource>,
    tags: Tags,
}

/// A resource a construct made, and its ARN (for policies and targets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    pub id: ResourceId,
    pub arn: String,
}

impl<'a> Builder<'a> {
    pub fn new(env: &'a Environment, ctx: &'a Context) -> Self {
        Self {
            env,
            ctx,
            resources: Vec::new(),
            tags: env.tags(),
        }
    }

    pub fn file(&self) -> &'a EnvFile {
        &self.env.file
    }

    /// The app's name.
    pub fn app(&self) -> &'a str {
        &self.env.file.app
    }

    /// A regional ARN of this account.
    pub fn arn(&self, service: &str, resource: &str) -> String {
        self.ctx.arn(service, true, resource)
    }

    /// An IAM role's ARN.
    pub fn role_arn(&self, name: &str) -> String {
        self.ctx.arn("iam", false, &format!("role/{name}"))
    }

    /// Adds `resource` with its ARN (when it is known before it exists), the resources
    /// it depends on, and the environment's tags when `tagged`.
    pub fn add(
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

    /// [`Builder::add`] for a resource whose ARN is known: the resource and its ARN.
    pub fn made(
        &mut self,
        resource: Resource,
        arn: String,
        depends_on: &[&ResourceId],
        tagged: bool,
    ) -> Made {
        let id = self.add(resource, Some(arn.clone()), depends_on, tagged);
        Made { id, arn }
    }

    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    pub fn into_resources(self) -> Vec<Resource> {
        self.resources
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::Made;
    use crate::context::Context;
    use crate::env::Environment;
    use crate::resources::{Kind, ResourceId};

    /// What another construct made, as a stand-in: a `kind` named `name`, ARN `arn:NAME`.
    pub fn made(kind: Kind, name: &str) -> Made {
        Made {
            id: ResourceId {
                kind,
                name: name.into(),
            },
            arn: format!("arn:{name}"),
        }
    }

    /// The shipped `prod` environment, and a context for it.
    pub fn prod() -> (Environment, Context) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("envs/prod.toml");
        let env = Environment::load(&path).unwrap();
        let ctx = Context::offline(&env);
        (env, ctx)
    }
}
