//! One module per resource kind, each with the same small surface: `read` the live
//! resource into the stack's own typed shape (normalised), `create`, `update` in place,
//! `delete`, and `extras` (live resources of this environment the stack no longer has).
//! This file only dispatches on the kind.

use std::collections::BTreeMap;
use std::fmt::Display;

use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::resources::{Kind, Resource, Spec, Tags};
use infra::{Environment, Stack};

use crate::aws::Aws;
use crate::engine::Change;
use crate::error::{Error, Result};

mod cloudwatch;
mod dynamodb;
mod ec2;
mod ecr;
mod ecs;
mod ecs_target;
mod events;
mod iam;
mod logs;
mod scheduler;
mod sns;

/// A resource as it is in the account.
#[derive(Debug, Clone)]
pub struct Live {
    /// The same typed shape the stack uses, normalised for comparison.
    pub spec: Spec,
    /// `None` for kinds AWS cannot tag (owned through their tagged parent).
    pub tags: Option<Tags>,
    pub outputs: Outputs,
}

/// What dependents may need from a resource once it exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs {
    pub id: Option<String>,
    pub arn: Option<String>,
}

/// Options that change what a mutation does.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `destroy`: delete the ECR repository even when it holds images.
    pub include_images: bool,
}

pub async fn read(aws: &Aws, r: &Resource) -> Result<Option<Live>> {
    match &r.properties {
        Spec::EcrRepository(_) => ecr::read(aws, r).await,
        Spec::LogGroup(_) => logs::read_group(aws, r).await,
        Spec::MetricFilter(d) => logs::read_filter(aws, &r.name, &d.log_group).await,
        Spec::IamRole(_) => iam::read(aws, r).await,
        Spec::EcsCluster(_) => ecs::read_cluster(aws, r).await,
        Spec::TaskDefinition(d) => ecs::read_task_definition(aws, &d.family).await,
        Spec::SecurityGroup(d) => ec2::read(aws, &r.name, &d.vpc_id).await,
        Spec::ScheduleGroup(_) => scheduler::read_group(aws, r).await,
        Spec::Schedule(d) => scheduler::read_schedule(aws, &r.name, &d.group).await,
        Spec::EventRule(_) => events::read(aws, r).await,
        Spec::SnsTopic(_) => sns::read_topic(aws, r).await,
        Spec::SnsSubscription(d) => {
            sns::read_subscription(aws, &d.topic_arn, &d.protocol, &d.endpoint).await
        }
        Spec::Alarm(_) => cloudwatch::read(aws, r).await,
        Spec::DynamodbTable(_) => dynamodb::read(aws, r).await,
    }
}

pub async fn create(aws: &Aws, r: &Resource) -> Result<Outputs> {
    match &r.properties {
        Spec::EcrRepository(d) => ecr::create(aws, r, d).await,
        Spec::LogGroup(d) => logs::create_group(aws, r, d).await,
        Spec::MetricFilter(d) => logs::put_filter(aws, &r.name, d).await,
        Spec::IamRole(d) => iam::create(aws, r, d).await,
        Spec::EcsCluster(d) => ecs::create_cluster(aws, r, d).await,
        Spec::TaskDefinition(d) => ecs::register_task_definition(aws, r, d).await,
        Spec::SecurityGroup(d) => ec2::create(aws, r, d).await,
        Spec::ScheduleGroup(_) => scheduler::create_group(aws, r).await,
        Spec::Schedule(d) => scheduler::put_schedule(aws, &r.name, d, true).await,
        Spec::EventRule(d) => events::put(aws, r, d, None).await,
        Spec::SnsTopic(d) => sns::create_topic(aws, r, d).await,
        Spec::SnsSubscription(d) => sns::subscribe(aws, d).await,
        Spec::Alarm(d) => cloudwatch::put(aws, r, d, true).await,
        Spec::DynamodbTable(d) => dynamodb::create(aws, r, d).await,
    }
}

/// Changes a live resource in place to match `r`; `changes` names what differs.
pub async fn update(aws: &Aws, r: &Resource, live: &Live, changes: &[Change]) -> Result<Outputs> {
    let tags_changed = changes.iter().any(|c| c.path.starts_with("tags"));
    let props_changed = changes.iter().any(|c| !c.path.starts_with("tags"));
    let outputs = match (&r.properties, &live.spec) {
        (Spec::EcrRepository(d), Spec::EcrRepository(l)) => {
            ecr::update(aws, r, d, l, &live.outputs).await?
        }
        (Spec::LogGroup(d), _) => logs::update_group(aws, r, d, props_changed).await?,
        (Spec::MetricFilter(d), _) => logs::replace_filter(aws, &r.name, d).await?,
        (Spec::IamRole(d), Spec::IamRole(l)) => iam::update(aws, r, d, l).await?,
        (Spec::EcsCluster(d), _) => ecs::update_cluster(aws, r, d, props_changed).await?,
        (Spec::SecurityGroup(d), Spec::SecurityGroup(l)) => {
            ec2::update(aws, d, l, &live.outputs).await?
        }
        (Spec::Schedule(d), _) => scheduler::put_schedule(aws, &r.name, d, false).await?,
        (Spec::EventRule(d), Spec::EventRule(l)) => events::put(aws, r, d, Some(l)).await?,
        (Spec::SnsTopic(d), _) => sns::update_topic(aws, d, &live.outputs).await?,
        // Only their tags can differ in place (a task definition change is a replace).
        (Spec::TaskDefinition(_) | Spec::ScheduleGroup(_) | Spec::SnsSubscription(_), _) => {
            live.outputs.clone()
        }
        (Spec::Alarm(d), _) => cloudwatch::put(aws, r, d, false).await?,
        (Spec::DynamodbTable(d), Spec::DynamodbTable(l)) => dynamodb::update(aws, r, d, l).await?,
        (desired, live) => {
            return Err(Error::Internal(format!(
                "{} compared with a live {}",
                desired.kind(),
                live.kind()
            )));
        }
    };
    if tags_changed {
        tag(aws, r, &outputs.merged(&live.outputs)).await?;
    }
    Ok(outputs.merged(&live.outputs))
}

/// Adds the stack's tags (ownership); existing other tags are left as they are.
async fn tag(aws: &Aws, r: &Resource, outputs: &Outputs) -> Result<()> {
    if r.tags.is_empty() {
        return Ok(());
    }
    let arn = || {
        outputs
            .arn
            .clone()
            .ok_or_else(|| Error::Internal(format!("no ARN to tag {}", r.id())))
    };
    match r.kind {
        Kind::EcrRepository => ecr::tag(aws, &arn()?, &r.tags).await,
        Kind::LogGroup => logs::tag(aws, &arn()?, &r.tags).await,
        Kind::IamRole => iam::tag(aws, &r.name, &r.tags).await,
        Kind::EcsCluster | Kind::TaskDefinition => ecs::tag(aws, &arn()?, &r.tags).await,
        Kind::SecurityGroup => {
            let id = outputs
                .id
                .clone()
                .ok_or_else(|| Error::Internal("no group id".into()))?;
            ec2::tag(aws, &id, &r.tags).await
        }
        Kind::ScheduleGroup => scheduler::tag(aws, &arn()?, &r.tags).await,
        Kind::EventRule => events::tag(aws, &arn()?, &r.tags).await,
        Kind::SnsTopic => sns::tag(aws, &arn()?, &r.tags).await,
        Kind::Alarm => cloudwatch::tag(aws, &arn()?, &r.tags).await,
        Kind::DynamodbTable => dynamodb::tag(aws, &arn()?, &r.tags).await,
        Kind::MetricFilter | Kind::Schedule | Kind::SnsSubscription => Ok(()),
    }
}

pub async fn delete(aws: &Aws, r: &Resource, live: &Live, options: Options) -> Result<Deleted> {
    match &r.properties {
        Spec::EcrRepository(_) => return ecr::delete(aws, &r.name, options.include_images).await,
        Spec::LogGroup(_) => logs::delete_group(aws, &r.name).await?,
        Spec::MetricFilter(d) => logs::delete_filter(aws, &r.name, &d.log_group).await?,
        Spec::IamRole(_) => iam::delete(aws, &r.name).await?,
        Spec::EcsCluster(_) => ecs::delete_cluster(aws, &r.name).await?,
        Spec::TaskDefinition(d) => ecs::deregister_family(aws, &d.family).await?,
        Spec::SecurityGroup(_) => ec2::delete(aws, &live.outputs).await?,
        Spec::ScheduleGroup(_) => scheduler::delete_group(aws, &r.name).await?,
        Spec::Schedule(d) => scheduler::delete_schedule(aws, &r.name, &d.group).await?,
        Spec::EventRule(_) => events::delete(aws, &r.name).await?,
        Spec::SnsTopic(_) => sns::delete_topic(aws, &live.outputs).await?,
        Spec::SnsSubscription(_) => return sns::unsubscribe(aws, &live.outputs).await,
        Spec::Alarm(_) => cloudwatch::delete(aws, &r.name).await?,
        Spec::DynamodbTable(_) => dynamodb::delete(aws, &r.name).await?,
    }
    Ok(Deleted::Yes)
}

/// What `delete` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    Yes,
    /// Left in place, with the reason.
    Kept(String),
}

/// Live resources of this environment that the stack no longer describes (a schedule,
/// alarm, filter or subscription removed from the file), as resources to delete.
pub async fn extras(aws: &Aws, env: &Environment, stack: &Stack) -> Result<Vec<(Resource, Live)>> {
    let mut found = Vec::new();
    found.extend(scheduler::extras(aws, env, stack).await?);
    found.extend(cloudwatch::extras(aws, env, stack).await?);
    found.extend(logs::extras(aws, env, stack).await?);
    found.extend(sns::extras(aws, env, stack).await?);
    Ok(found)
}

/// Whether a change cannot be made in place.
pub fn needs_replace(kind: Kind, changes: &[Change]) -> bool {
    let props = changes.iter().filter(|c| !c.path.starts_with("tags"));
    match kind {
        // Every change is a new revision.
        Kind::TaskDefinition => props.count() > 0,
        Kind::SecurityGroup => props
            .into_iter()
            .any(|c| c.path == "description" || c.path == "vpc_id"),
        Kind::DynamodbTable => props.into_iter().any(|c| c.path.ends_with("partition_key")),
        _ => false,
    }
}

impl Outputs {
    /// These outputs, with gaps filled from `other`.
    #[must_use]
    pub fn merged(&self, other: &Self) -> Self {
        Self {
            id: self.id.clone().or_else(|| other.id.clone()),
            arn: self.arn.clone().or_else(|| other.arn.clone()),
        }
    }
}

/// The error code AWS returned, if it was a service error.
pub fn code<E: ProvideErrorMetadata>(err: &E) -> Option<&str> {
    err.code()
}

/// Turns an SDK error into the deployer's, naming what was being done to what.
pub fn aws_error<E>(action: &'static str, what: impl Display) -> impl FnOnce(E) -> Error
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    move |err| {
        let full = DisplayErrorContext(&err).to_string();
        if full.contains("loading credentials") || full.contains("no credentials") {
            return Error::Prerequisite(
                "no AWS credentials were found".into(),
                "set AWS_PROFILE (or pass --profile), run `aws sso login`, or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
            );
        }
        let message = match (err.code(), err.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            _ => full,
        };
        Error::Aws {
            action,
            resource: what.to_string(),
            code: err.code().map(str::to_owned),
            message,
        }
    }
}

/// AWS tag lists as a map.
pub fn tag_map<I, K, V>(tags: I) -> Tags
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    tags.into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect::<BTreeMap<_, _>>()
}

/// The image the family's latest active revision runs, if any.
pub async fn deployed_image(aws: &Aws, family: &str) -> Result<Option<String>> {
    Ok(ecs::read_task_definition(aws, family)
        .await?
        .and_then(|live| match live.spec {
            Spec::TaskDefinition(td) => Some(td.container.image),
            _ => None,
        }))
}

/// The digest of that image.
pub async fn deployed_digest(aws: &Aws, family: &str) -> Result<Option<String>> {
    Ok(deployed_image(aws, family)
        .await?
        .and_then(|image| image.rsplit_once('@').map(|(_, digest)| digest.to_owned())))
}

/// A builder's `build()` for shapes whose required fields the stack always sets.
pub fn built<T, E: Display>(result: std::result::Result<T, E>) -> Result<T> {
    result.map_err(|e| Error::Internal(e.to_string()))
}

/// The container name and command from a target's `containerOverrides` input.
pub fn overrides(input: Option<&str>) -> (String, Vec<String>) {
    let value: serde_json::Value = input
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or_default();
    let first = &value["containerOverrides"][0];
    let name = first["name"].as_str().unwrap_or_default().to_owned();
    let command = first["command"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (name, command)
}
