//! The reconciliation pipeline behind `diff`, `up` and `destroy`: read the live state of
//! every resource, compare it with the stack (a plan), then apply the plan in dependency
//! order, independent resources concurrently, and re-read what changed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use infra::Stack;
use infra::resources::{Attribute, Kind, Ref, Resource, ResourceId, Tags};
use serde::Serialize;

use crate::aws::Aws;
pub use crate::error::Summary;
use crate::error::{Error, Result};
use crate::resources::{self, Deleted, Live, Options, Outputs};
pub use crate::resources::{Change, diff};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    /// Cannot change in place: a new one is made (a task-definition revision).
    Replace,
    Delete,
    NoChange,
    /// Exists without this environment's tags: reported and left alone (`--adopt`).
    Unowned,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Create => "+",
            Self::Update => "~",
            Self::Replace => "-/+",
            Self::Delete => "-",
            Self::NoChange => " ",
            Self::Unowned => "!",
        }
    }

    pub fn mutates(self) -> bool {
        matches!(
            self,
            Self::Create | Self::Update | Self::Replace | Self::Delete
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub id: ResourceId,
    pub action: Action,
    pub changes: Vec<Change>,
    /// Why a resource is left alone, for `Unowned`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip)]
    pub resource: Resource,
    #[serde(skip)]
    pub live: Option<Live>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub environment: String,
    pub account: String,
    pub region: String,
    /// In dependency order; deletions come last, in reverse dependency order.
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn changes(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| s.action.mutates())
    }

    pub fn has_changes(&self) -> bool {
        self.changes().next().is_some()
    }

    pub fn count(&self, action: Action) -> usize {
        self.steps.iter().filter(|s| s.action == action).count()
    }
}

/// Reads in flight at once per AWS service: below the request rates the services allow
/// for reads (the SDK retries a throttled call), and enough for a plan of this size to
/// take a few round trips.
const PER_SERVICE: usize = 8;

/// Reads the live state of every resource of the stack (and of resources this
/// environment still has that the stack dropped) and decides what to do with each.
pub async fn plan(aws: &Aws, env: &infra::Environment, stack: &Stack, adopt: bool) -> Result<Plan> {
    plan_after(aws, env, stack, adopt, None).await
}

/// [`plan`], reading again only what `before` planned to change: what it found
/// unchanged (or left alone) is taken as it was, since only a change can make it differ.
async fn plan_after(
    aws: &Aws,
    env: &infra::Environment,
    stack: &Stack,
    adopt: bool,
    before: Option<&Plan>,
) -> Result<Plan> {
    let ours = env.tags();
    let mut outputs: BTreeMap<ResourceId, Outputs> = BTreeMap::new();
    let mut steps = Vec::new();
    // Every read at once (a read needs no other resource's outputs), at most
    // `PER_SERVICE` in flight per service, and the extras alongside; on a real network
    // the plan then takes a few round trips instead of one per resource.
    let waves = stack.waves();
    let limits: BTreeMap<&str, tokio::sync::Semaphore> = waves
        .iter()
        .flatten()
        .map(|r| {
            (
                resources::service(r.kind),
                tokio::sync::Semaphore::new(PER_SERVICE),
            )
        })
        .collect();
    let reads = join_all(waves.iter().flatten().map(|r| {
        let limit = &limits[resources::service(r.kind)];
        let unchanged = before.and_then(|p| {
            p.steps
                .iter()
                .find(|s| s.id == r.id() && !s.action.mutates())
                .map(|s| s.live.clone())
        });
        async move {
            if let Some(live) = unchanged {
                return Ok(live);
            }
            let _permit = limit.acquire().await;
            resources::read(aws, r).await
        }
    }));
    let (lives, extras) = tokio::join!(reads, resources::extras(aws, env, stack));
    let mut lives = lives.into_iter();
    for wave in waves {
        let resolved: Vec<Resource> = wave.iter().map(|r| resolve(r, &outputs)).collect();
        for resource in resolved {
            let live = lives.next().expect("one read per resource")?;
            let step = decide(resource, live, &ours, adopt);
            if matches!(
                step.action,
                Action::NoChange | Action::Update | Action::Unowned
            ) && let Some(live) = &step.live
            {
                outputs.insert(step.id.clone(), live.outputs.clone());
            }
            steps.push(step);
        }
    }
    let mut extras = extras?;
    extras.reverse();
    steps.extend(extras.into_iter().map(|extra| Step {
        id: extra.resource.id(),
        action: Action::Delete,
        changes: Vec::new(),
        note: Some(extra.note),
        resource: extra.resource,
        live: Some(extra.live),
    }));
    Ok(Plan {
        environment: stack.environment.clone(),
        account: stack.account.clone(),
        region: stack.region.clone(),
        steps,
    })
}

/// A copy of `r` with every reference whose value is known filled in.
fn resolve(r: &Resource, outputs: &BTreeMap<ResourceId, Outputs>) -> Resource {
    let mut r = r.clone();
    let lookup = |reference: &Ref| {
        let o = outputs.get(&reference.target)?;
        match reference.attribute {
            Attribute::Id => o.id.clone(),
            Attribute::Arn => o.arn.clone(),
        }
    };
    r.properties.resolve(&lookup);
    r
}

fn owned(live: &Live, ours: &Tags) -> bool {
    live.tags
        .as_ref()
        .is_none_or(|t| ours.iter().all(|(k, v)| t.get(k) == Some(v)))
}

fn decide(resource: Resource, live: Option<Live>, ours: &Tags, adopt: bool) -> Step {
    let id = resource.id();
    let Some(live) = live else {
        return Step {
            id,
            action: Action::Create,
            changes: Vec::new(),
            note: None,
            resource,
            live: None,
        };
    };
    let mut changes = diff(&resource, &live);
    // A task definition is never changed in place, only followed by a new revision, so
    // a revision registered by hand (untagged) is replaced, not left alone.
    let replaces_only = resource.kind == Kind::TaskDefinition;
    let (action, note) = if !owned(&live, ours) && !adopt && !replaces_only {
        let whose = live
            .tags
            .as_ref()
            .and_then(|t| t.get("env").map(|e| format!(" (tagged env={e})")))
            .unwrap_or_default();
        (
            Action::Unowned,
            Some(format!(
                "exists without this environment's tags{whose}; left alone (--adopt takes it over)"
            )),
        )
    } else if changes.is_empty() {
        (Action::NoChange, None)
    } else if resources::needs_replace(resource.kind, &changes) {
        // The new one is made with the stack's tags; the old one's do not matter.
        changes.retain(|c| !c.path.starts_with("tags."));
        (Action::Replace, None)
    } else {
        (Action::Update, None)
    };
    Step {
        id,
        action,
        changes,
        note,
        resource,
        live: Some(live),
    }
}

/// Something `apply` did, for progress output.
#[derive(Debug, Clone)]
pub struct Progress {
    pub id: ResourceId,
    pub action: Action,
    pub outcome: std::result::Result<Option<String>, String>,
    pub elapsed: Duration,
}

/// Applies the plan: creations, updates and replacements each as soon as what it
/// depends on is done (independent ones concurrently), then deletions in reverse order.
/// After a failure what is in flight finishes and nothing later starts; the next `up`
/// picks up from there.
pub async fn apply(
    aws: &Aws,
    plan: &Plan,
    options: Options,
    on_progress: &(dyn Fn(&Progress) + Sync),
) -> Result<Summary> {
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut outputs: BTreeMap<ResourceId, Outputs> = plan
        .steps
        .iter()
        // An extra can share its id with the stack's resource it was replaced by.
        .filter(|s| s.action != Action::Delete)
        .filter_map(|s| Some((s.id.clone(), s.live.as_ref()?.outputs.clone())))
        .collect();
    let (forward, deletions): (Vec<&Step>, Vec<&Step>) =
        plan.steps.iter().partition(|s| s.action != Action::Delete);
    let mut failure = None;
    // Each change starts as soon as the changes it depends on are done (not a whole
    // wave before it), at most `PER_SERVICE` in flight per service. After a failure
    // nothing more starts, and what is in flight finishes.
    let mut pending: Vec<&Step> = forward.into_iter().filter(|s| s.action.mutates()).collect();
    let changing: std::collections::BTreeSet<&ResourceId> = pending.iter().map(|s| &s.id).collect();
    let limits: BTreeMap<&str, tokio::sync::Semaphore> = pending
        .iter()
        .map(|s| {
            (
                resources::service(s.resource.kind),
                tokio::sync::Semaphore::new(PER_SERVICE),
            )
        })
        .collect();
    let mut done: std::collections::BTreeSet<ResourceId> = std::collections::BTreeSet::new();
    let mut running = futures_util::stream::FuturesUnordered::new();
    loop {
        if failure.is_none() {
            let (ready, waiting): (Vec<&Step>, Vec<&Step>) = pending.into_iter().partition(|s| {
                s.resource
                    .depends_on
                    .iter()
                    .all(|d| !changing.contains(d) || done.contains(d))
            });
            pending = waiting;
            for step in ready {
                let resource = resolve(&step.resource, &outputs);
                let limit = &limits[resources::service(step.resource.kind)];
                running.push(async move {
                    let _permit = limit.acquire().await;
                    let t = Instant::now();
                    let result = with_iam_retry(|| apply_step(aws, step, &resource)).await;
                    on_progress(&Progress {
                        id: step.id.clone(),
                        action: step.action,
                        outcome: result.as_ref().map(|_| None).map_err(ToString::to_string),
                        elapsed: t.elapsed(),
                    });
                    (step, result)
                });
            }
        }
        let Some((step, result)) = futures_util::StreamExt::next(&mut running).await else {
            break;
        };
        match result {
            Ok(out) => {
                match step.action {
                    Action::Create => summary.created += 1,
                    Action::Update => summary.updated += 1,
                    Action::Replace => summary.replaced += 1,
                    _ => {}
                }
                let merged = match outputs.get(&step.id) {
                    Some(old) => out.merged(old),
                    None => out,
                };
                outputs.insert(step.id.clone(), merged);
                done.insert(step.id.clone());
            }
            Err(e) => {
                summary.failed += 1;
                failure.get_or_insert(e);
            }
        }
    }
    if failure.is_none() && !pending.is_empty() {
        failure = Some(Error::Internal(format!(
            "{} changes wait on one another: {}",
            pending.len(),
            pending
                .iter()
                .map(|s| s.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if failure.is_none() {
        for step in deletions {
            let t = Instant::now();
            let live = step.live.as_ref().expect("a deletion has a live resource");
            let result = resources::delete(aws, &step.resource, live, options).await;
            let outcome = match &result {
                Ok(Deleted::Yes) => {
                    summary.deleted += 1;
                    Ok(None)
                }
                Ok(Deleted::Kept(why)) => {
                    summary.kept += 1;
                    Ok(Some(why.clone()))
                }
                Err(e) => Err(e.to_string()),
            };
            on_progress(&Progress {
                id: step.id.clone(),
                action: Action::Delete,
                outcome,
                elapsed: t.elapsed(),
            });
            if let Err(e) = result {
                summary.failed += 1;
                failure = Some(e);
                break;
            }
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    match failure {
        Some(e) => Err(Error::Apply {
            summary: Box::new(summary),
            cause: Box::new(e),
        }),
        None => Ok(summary),
    }
}

async fn apply_step(aws: &Aws, step: &Step, resource: &Resource) -> Result<Outputs> {
    match (step.action, &step.live) {
        (Action::Create, _) => resources::create(aws, resource).await,
        (Action::Replace, Some(live)) => resources::replace(aws, resource, live).await,
        (Action::Update, Some(live)) => {
            let changes = diff(resource, live);
            resources::update(aws, resource, live, &changes).await
        }
        _ => Err(Error::Internal(format!(
            "cannot {:?} {}",
            step.action, step.id
        ))),
    }
}

/// How long a newly made role may take to be usable by ECS and the schedulers.
const IAM_PROPAGATION: Duration = Duration::from_mins(2);

/// Retries only the errors AWS gives while a new role propagates, with backoff, for a
/// bounded time; every other error is returned at once.
async fn with_iam_retry<F, Fut, T>(mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + IAM_PROPAGATION;
    let mut wait = Duration::from_secs(2);
    loop {
        match call().await {
            Err(e) if e.is_iam_propagation() && Instant::now() + wait < deadline => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(15));
            }
            other => return other,
        }
    }
}

/// How long `up` and `destroy` wait for AWS to show what they did everywhere: EC2, IAM
/// and ECS answer reads from eventually consistent copies, so a read right after a
/// write may still show the state before it.
pub const SETTLE: Duration = Duration::from_mins(2);

/// Re-reads what `applied` changed until the account matches the stack, backing off, for
/// up to `SETTLE`, and returns what still differs then (`- id` style lines): only
/// differences that persist. What `applied` found unchanged is not read again.
pub async fn verify(
    aws: &Aws,
    env: &infra::Environment,
    stack: &Stack,
    applied: &Plan,
    adopt: bool,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Vec<String>> {
    let bound = crate::wait::limit(SETTLE);
    settle(bound, say, || async {
        let after = plan_after(aws, env, stack, adopt, Some(applied)).await?;
        Ok(after
            .changes()
            .map(|s| format!("{} {}", s.action.symbol(), s.id))
            .collect())
    })
    .await
}

/// Re-reads until none of `deleted` shows any more, for up to `SETTLE`; returns the
/// ones that still do.
pub async fn verify_gone(
    aws: &Aws,
    env: &infra::Environment,
    stack: &Stack,
    deleted: &[ResourceId],
    say: &(dyn Fn(&str) + Sync),
) -> Result<Vec<String>> {
    let bound = crate::wait::limit(SETTLE);
    settle(bound, say, || async {
        let after = plan(aws, env, stack, false).await?;
        Ok(after
            .steps
            .iter()
            .filter(|s| s.live.is_some() && deleted.contains(&s.id))
            .map(|s| s.id.to_string())
            .collect())
    })
    .await
}

/// Calls `left` until it returns nothing or `bound` has passed, saying once what it
/// waits for.
async fn settle<F, Fut>(
    bound: Duration,
    say: &(dyn Fn(&str) + Sync),
    mut left: F,
) -> Result<Vec<String>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<String>>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(500);
    let mut said = false;
    loop {
        let differ = left().await?;
        if differ.is_empty() || started.elapsed() + pause > bound {
            return Ok(differ);
        }
        if !said {
            say(&format!(
                "waiting for AWS to show every change (up to {} s; reads may lag writes): {}",
                bound.as_secs(),
                differ.join(", ")
            ));
            said = true;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// Deletes every resource of the stack this environment owns, in reverse dependency
/// order, plus the ones it dropped.
pub fn destroy_plan(plan: &Plan) -> Plan {
    let mut steps: Vec<Step> = plan
        .steps
        .iter()
        .filter(|s| s.action != Action::Delete)
        .filter(|s| s.live.is_some() && s.action != Action::Unowned)
        .cloned()
        .map(|mut s| {
            s.action = Action::Delete;
            s.changes.clear();
            s
        })
        .collect();
    // Schedules go with their group, so they need no step of their own.
    let has_group = steps.iter().any(|s| s.id.kind == Kind::ScheduleGroup);
    steps.retain(|s| !(has_group && s.id.kind == Kind::Schedule));
    steps.reverse();
    let extras = plan
        .steps
        .iter()
        .filter(|s| s.action == Action::Delete)
        .cloned();
    let mut all: Vec<Step> = extras.collect();
    all.extend(steps);
    Plan {
        environment: plan.environment.clone(),
        account: plan.account.clone(),
        region: plan.region.clone(),
        steps: all,
    }
}
