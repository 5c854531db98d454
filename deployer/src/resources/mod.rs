//! One module per resource kind, each with the same small surface: `read` the live
//! resource into the stack's own typed shape (normalised), `create`, `update` in place,
//! `delete`, and `extras` (live resources of this environment the stack no longer has).
//! This file only dispatches on the kind.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Display;

use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::resources::{
    Alarm, DynamodbTable, EcrRepository, EcsCluster, EventRule, IamRole, Kind, LogGroup,
    LogResourcePolicy, MetricFilter, Resource, Schedule, ScheduleGroup, SecurityGroup,
    SnsSubscription, SnsTopic, Spec, Tags, TaskDefinition,
};
use infra::{Environment, Stack};

use crate::aws::Aws;
use crate::error::{Error, Result};

/// One property that differs: `path` into the resource (`properties.x.y` or `tags.k`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Change {
    pub path: String,
    pub live: Option<Value>,
    pub desired: Option<Value>,
}

/// What differs between the stack's resource and the live one, both normalised; tags
/// are compared only for the keys the stack sets.
pub fn diff(desired: &Resource, live: &Live) -> Vec<Change> {
    let mut want = desired.properties.clone();
    let mut have = live.spec.clone();
    normalize(&mut want);
    normalize(&mut have);
    let mut changes = Vec::new();
    json_diff(
        "properties",
        &serde_json::to_value(&have).unwrap_or_default(),
        &serde_json::to_value(&want).unwrap_or_default(),
        &mut changes,
    );
    if let Some(tags) = &live.tags {
        for (k, v) in &desired.tags {
            if tags.get(k) != Some(v) {
                changes.push(Change {
                    path: format!("tags.{k}"),
                    live: tags.get(k).map(|t| Value::String(t.clone())),
                    desired: Some(Value::String(v.clone())),
                });
            }
        }
    }
    changes
}

/// Objects are compared key by key; anything else as a whole.
fn json_diff(path: &str, live: &Value, desired: &Value, out: &mut Vec<Change>) {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => {
            let keys: std::collections::BTreeSet<&String> = l.keys().chain(d.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (l.get(k), d.get(k)) {
                    (Some(a), Some(b)) => json_diff(&p, a, b, out),
                    (a, b) => out.push(Change {
                        path: p,
                        live: a.cloned(),
                        desired: b.cloned(),
                    }),
                }
            }
        }
        _ if live == desired => {}
        _ => out.push(Change {
            path: path.to_owned(),
            live: Some(live.clone()),
            desired: Some(desired.clone()),
        }),
    }
}

mod cloudwatch;
mod dynamodb;
mod ec2;
mod ecr;
pub mod ecs;
mod ecs_target;
mod events;
mod iam;
mod logs;
mod scheduler;
pub mod sns;

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

/// The whole lifecycle of one kind, implemented on its spec (`infra`'s typed shape) in
/// its own module: what most kinds do not need has a default here.
pub(crate) trait Managed: Sized {
    /// The AWS service it lives in (the SDK's signing name), for bounding the calls in
    /// flight per service.
    const SERVICE: &'static str;

    /// The live resource in the stack's shape, or `None` when there is none.
    async fn read(&self, aws: &Aws, r: &Resource) -> Result<Option<Live>>;

    async fn create(&self, aws: &Aws, r: &Resource) -> Result<Outputs>;

    /// Changes the live resource in place to match `self`; `changes` names what differs.
    /// By default only tags can differ in place (they are set after this).
    async fn update(
        &self,
        _aws: &Aws,
        _r: &Resource,
        _live: &Self,
        outputs: &Outputs,
        _changes: &[Change],
    ) -> Result<Outputs> {
        Ok(outputs.clone())
    }

    /// Adds the stack's tags; kinds AWS cannot tag are owned through their parent.
    async fn tag(&self, _aws: &Aws, _r: &Resource, _outputs: &Outputs) -> Result<()> {
        Ok(())
    }

    async fn delete(&self, aws: &Aws, r: &Resource, live: &Live, o: Options) -> Result<Deleted>;

    /// The kind's `ForceNew`: whether this change (a path as `engine::diff` names it,
    /// `properties.x.y`) cannot be made in place.
    fn replaces(_change: &Change) -> bool {
        false
    }

    /// Makes the replacement of `live`; by default a new one beside it (the old one is
    /// kept, or found by `extras` and deleted once nothing uses it).
    async fn replace(&self, aws: &Aws, r: &Resource, _live: &Live) -> Result<Outputs> {
        self.create(aws, r).await
    }

    /// Puts in a fixed order what AWS keeps in none, so only real differences remain.
    fn normalize(&mut self) {}

    /// Live resources of this kind that this environment owns and the stack no longer
    /// describes, to be deleted after everything else has moved off them.
    async fn extras(_aws: &Aws, _env: &Environment, _stack: &Stack) -> Result<Vec<Extra>> {
        Ok(Vec::new())
    }
}

/// A live resource of this environment that the stack no longer has.
#[derive(Debug, Clone)]
pub struct Extra {
    pub resource: Resource,
    pub live: Live,
    /// Why it goes, for the plan.
    pub note: String,
}

impl Extra {
    /// One dropped from the environment file.
    pub fn dropped(resource: Resource, live: Live) -> Self {
        Self {
            resource,
            live,
            note: "no longer in the environment file".into(),
        }
    }
}

/// Generates the dispatch from `Spec` (and `Kind`) to each kind's `Managed`; a kind
/// left out of the list is a compile error (non-exhaustive `match`).
/// The not-found answers of the services the stack uses (each API reference's errors).
const GONE: &[&str] = &[
    "ResourceNotFoundException",
    "ResourceNotFound",
    "RepositoryNotFoundException",
    "NoSuchEntity",
    "NotFound",
    "NotFoundException",
    "InvalidGroup.NotFound",
    "ClusterNotFoundException",
];

// Each kind's future is boxed: a dispatch then costs one pointer, not the size of
// the largest kind's state (clippy::large_futures).
macro_rules! kinds {
    ($($kind:ident),+ $(,)?) => {
        /// The live resource, or `None`. A read is several calls (the resource, then
        /// its tags, targets, policies...); AWS is eventually consistent, so a resource
        /// the first call still showed may be gone for the next: a not-found answer to
        /// any of them means it is gone, as a delete moments ago makes it.
        pub async fn read(aws: &Aws, r: &Resource) -> Result<Option<Live>> {
            let read = match &r.properties {
                $(Spec::$kind(d) => Box::pin(d.read(aws, r)).await,)+
            };
            match read {
                Err(e) if e.aws_code().is_some_and(|c| GONE.contains(&c)) => Ok(None),
                other => other,
            }
        }

        pub async fn create(aws: &Aws, r: &Resource) -> Result<Outputs> {
            match &r.properties {
                $(Spec::$kind(d) => Box::pin(d.create(aws, r)).await,)+
            }
        }

        pub async fn replace(aws: &Aws, r: &Resource, live: &Live) -> Result<Outputs> {
            match &r.properties {
                $(Spec::$kind(d) => Box::pin(d.replace(aws, r, live)).await,)+
            }
        }

        async fn update_properties(
            aws: &Aws,
            r: &Resource,
            live: &Live,
            changes: &[Change],
        ) -> Result<Outputs> {
            match (&r.properties, &live.spec) {
                $((Spec::$kind(d), Spec::$kind(l)) => {
                    Box::pin(d.update(aws, r, l, &live.outputs, changes)).await
                })+
                (desired, live) => Err(Error::Internal(format!(
                    "{} compared with a live {}",
                    desired.kind(),
                    live.kind()
                ))),
            }
        }

        async fn tag(aws: &Aws, r: &Resource, outputs: &Outputs) -> Result<()> {
            match &r.properties {
                $(Spec::$kind(d) => Box::pin(d.tag(aws, r, outputs)).await,)+
            }
        }

        pub async fn delete(aws: &Aws, r: &Resource, live: &Live, options: Options) -> Result<Deleted> {
            match &r.properties {
                $(Spec::$kind(d) => Box::pin(d.delete(aws, r, live, options)).await,)+
            }
        }

        pub fn service(kind: Kind) -> &'static str {
            match kind {
                $(Kind::$kind => <$kind as Managed>::SERVICE,)+
            }
        }

        /// Whether a change cannot be made in place.
        pub fn needs_replace(kind: Kind, changes: &[Change]) -> bool {
            let mut props = changes.iter().filter(|c| !c.path.starts_with("tags"));
            match kind {
                $(Kind::$kind => props.any(<$kind as Managed>::replaces),)+
            }
        }

        pub fn normalize(spec: &mut Spec) {
            match spec {
                $(Spec::$kind(d) => d.normalize(),)+
            }
        }

        /// Live resources of this environment that the stack no longer describes.
        pub async fn extras(aws: &Aws, env: &Environment, stack: &Stack) -> Result<Vec<Extra>> {
            // Every kind's look at once (each is a list or two), found in kind order.
            type Looking<'a> =
                std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Extra>>> + Send + 'a>>;
            let looks: Vec<Looking<'_>> =
                vec![$(Box::pin(<$kind as Managed>::extras(aws, env, stack))),+];
            let found = futures_util::future::try_join_all(looks).await?;
            Ok(found.into_iter().flatten().collect())
        }
    };
}

// In dependency order (what a kind refers to comes before it), the order extras are
// found in: they are deleted in reverse.
kinds![
    EcrRepository,
    LogGroup,
    LogResourcePolicy,
    MetricFilter,
    IamRole,
    EcsCluster,
    SecurityGroup,
    DynamodbTable,
    TaskDefinition,
    ScheduleGroup,
    Schedule,
    EventRule,
    SnsTopic,
    SnsSubscription,
    Alarm,
];

/// Changes a live resource in place to match `r`; `changes` names what differs.
pub async fn update(aws: &Aws, r: &Resource, live: &Live, changes: &[Change]) -> Result<Outputs> {
    let outputs = if changes.iter().any(|c| !c.path.starts_with("tags")) {
        update_properties(aws, r, live, changes).await?
    } else {
        live.outputs.clone()
    };
    let outputs = outputs.merged(&live.outputs);
    if changes.iter().any(|c| c.path.starts_with("tags")) && !r.tags.is_empty() {
        tag(aws, r, &outputs).await?;
    }
    Ok(outputs)
}

/// What `delete` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    Yes,
    /// Left in place, with the reason.
    Kept(String),
}

/// The ARN a kind tags by, from its outputs.
pub fn arn_of<'a>(r: &Resource, outputs: &'a Outputs) -> Result<&'a str> {
    outputs
        .arn
        .as_deref()
        .ok_or_else(|| Error::Internal(format!("no ARN to tag {}", r.id())))
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

/// A builder's `build()` for shapes whose required fields the stack always sets.
pub fn built<T, E: Display>(result: std::result::Result<T, E>) -> Result<T> {
    result.map_err(|e| Error::Internal(e.to_string()))
}

/// The container name and command from a target's `containerOverrides` input.
/// What a target's input overrides: the container, its command and added variables, and
/// the task's cpu and memory.
pub struct Overrides {
    pub container: String,
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

pub fn overrides(input: Option<&str>) -> Overrides {
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
    let text = |k: &str| value[k].as_str().map(str::to_owned);
    // The task's memory comes with the container's limit lowered to it (see
    // `EcsTarget::input`); a live input without that reads as a difference, so `up`
    // puts it right.
    let memory = text("memory").map(|m| match first["memory"].as_u64() {
        Some(c) if c.to_string() == m => m,
        other => format!("{m} (container memory {other:?})"),
    });
    let environment = first["environment"]
        .as_array()
        .map(|vars| {
            vars.iter()
                .filter_map(|v| {
                    Some((
                        v["name"].as_str()?.to_owned(),
                        v["value"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Overrides {
        container: name,
        command,
        environment,
        cpu: text("cpu"),
        memory,
    }
}

/// The stack of `infra/envs/prod.toml` synthesized offline, and what the engine makes of
/// a live resource that differs from it: for each kind's unit tests of its rules.
#[cfg(test)]
pub(crate) mod fixture {
    use infra::resources::{Kind, Resource, Spec};

    use super::{Live, Outputs, diff, needs_replace};

    pub fn resource(kind: Kind) -> Resource {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/envs/prod.toml");
        let env = infra::Environment::load(std::path::Path::new(path)).expect("prod.toml loads");
        let stack = infra::synthesize(&env, &infra::Context::offline(&env));
        stack
            .of_kind(kind)
            .next()
            .cloned()
            .unwrap_or_else(|| panic!("the stack has a {kind}"))
    }

    /// The paths `engine::diff` names between `desired` and a live copy changed by
    /// `change`, and whether the kind's rule calls for a replacement.
    pub fn judge(desired: &Resource, change: impl FnOnce(&mut Spec)) -> (Vec<String>, bool) {
        judge_tagged(desired, &desired.tags, change)
    }

    /// The same, for a live copy that carries `tags`.
    pub fn judge_tagged(
        desired: &Resource,
        tags: &infra::resources::Tags,
        change: impl FnOnce(&mut Spec),
    ) -> (Vec<String>, bool) {
        let mut spec = desired.properties.clone();
        change(&mut spec);
        let live = Live {
            spec,
            tags: Some(tags.clone()),
            outputs: Outputs::default(),
        };
        let changes = diff(desired, &live);
        let paths = changes.iter().map(|c| c.path.clone()).collect();
        (paths, needs_replace(desired.kind, &changes))
    }
}

#[cfg(test)]
mod diff_tests {
    use super::*;

    #[test]
    fn json_diff_names_the_exact_property_paths() {
        let live = serde_json::json!({"a": 1, "b": {"c": [1, 2], "d": "x"}, "gone": true});
        let want = serde_json::json!({"a": 1, "b": {"c": [1, 3], "d": "x"}, "new": 5});
        let mut out = Vec::new();
        json_diff("properties", &live, &want, &mut out);
        let paths: Vec<&str> = out.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            ["properties.b.c", "properties.gone", "properties.new"]
        );
        assert_eq!(out[1].desired, None);
        assert_eq!(out[2].live, None);
    }
}
