//! EventBridge Scheduler: the schedule group (it carries the tags) and the schedules
//! in it, each starting the task with the job's command override.

use aws_sdk_scheduler::types::{
    FlexibleTimeWindow, FlexibleTimeWindowMode, ScheduleGroupState, ScheduleState, Tag, Target,
};
use futures_util::FutureExt;
use infra::resources::{EcsTarget, Kind, Resource, Schedule, ScheduleGroup, Spec, Tags};
use infra::{Environment, Stack};

use super::Change;
use super::{
    Deleted, Extra, Live, Managed, Options, Outputs, arn_of, aws_error, built, code, ecs_target,
    tag_map,
};
use crate::aws::Aws;
use crate::error::Result;
use crate::wait;

async fn read_group(aws: &Aws, r: &Resource) -> Result<Option<Live>> {
    let group = match aws
        .scheduler
        .get_schedule_group()
        .name(&r.name)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if code(&e) == Some("ResourceNotFoundException") => return Ok(None),
        Err(e) => return Err(aws_error("read", r.id())(e)),
    };
    // A group being deleted is gone for the plan; making it again waits (`create_group`).
    if group.state() == Some(&ScheduleGroupState::Deleting) {
        return Ok(None);
    }
    let arn = group.arn().unwrap_or_default().to_owned();
    let tags = aws
        .scheduler
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .map_err(aws_error("read tags of", r.id()))?;
    Ok(Some(Live {
        spec: Spec::ScheduleGroup(ScheduleGroup {}),
        tags: Some(tag_map(tags.tags().iter().map(|t| (t.key(), t.value())))),
        outputs: Outputs {
            id: Some(r.name.clone()),
            arn: Some(arn),
        },
    }))
}

/// A group of the same name still being deleted (it stays `DELETING` for a while after
/// `destroy`) refuses the create with `ConflictException`: that is waited out.
async fn create_group(aws: &Aws, r: &Resource) -> Result<Outputs> {
    let tags = tags(&r.tags)?;
    let out = wait::while_refused(
        &format!("schedule group {}", r.name),
        wait::limit(wait::VISIBLE),
        || {
            aws.scheduler
                .create_schedule_group()
                .name(&r.name)
                .set_tags(Some(tags.clone()))
                .send()
                .map(|out| out.map_err(aws_error("create", r.id())))
        },
        |e| e.aws_code() == Some("ConflictException"),
        || async { "a group of that name is still being deleted".to_owned() },
        "run the same command again in a few minutes, once the old group is gone",
    )
    .await?;
    Ok(Outputs {
        id: Some(r.name.clone()),
        arn: Some(out.schedule_group_arn().to_owned()),
    })
}

async fn tag(aws: &Aws, arn: &str, t: &Tags) -> Result<()> {
    aws.scheduler
        .tag_resource()
        .resource_arn(arn)
        .set_tags(Some(tags(t)?))
        .send()
        .await
        .map_err(aws_error("tag", arn))?;
    Ok(())
}

/// Deleting the group deletes the schedules in it.
async fn delete_group(aws: &Aws, name: &str) -> Result<()> {
    match aws
        .scheduler
        .delete_schedule_group()
        .name(name)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(()),
        Err(e) => Err(aws_error("delete schedule group", name)(e)),
    }
}

pub async fn read_schedule(aws: &Aws, name: &str, group: &str) -> Result<Option<Live>> {
    let s = match aws
        .scheduler
        .get_schedule()
        .group_name(group)
        .name(name)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if code(&e) == Some("ResourceNotFoundException") => return Ok(None),
        Err(e) => return Err(aws_error("read schedule", name)(e)),
    };
    let Some(target) = s.target() else {
        return Ok(None);
    };
    let spec = Schedule {
        group: s.group_name().unwrap_or(group).to_owned(),
        expression: s.schedule_expression().unwrap_or_default().to_owned(),
        timezone: s.schedule_expression_timezone().unwrap_or("UTC").to_owned(),
        enabled: s.state() != Some(&ScheduleState::Disabled),
        description: s.description().unwrap_or_default().to_owned(),
        target: ecs_target::scheduler::from_live(
            target.arn(),
            target.role_arn(),
            target.input(),
            target.ecs_parameters(),
            target.retry_policy(),
        ),
    };
    Ok(Some(Live {
        spec: Spec::Schedule(spec),
        tags: None,
        outputs: Outputs {
            id: Some(name.to_owned()),
            arn: s.arn().map(str::to_owned),
        },
    }))
}

fn target(t: &EcsTarget) -> Result<Target> {
    let (ecs, retry) = ecs_target::scheduler::to_sdk(t)?;
    built(
        Target::builder()
            .arn(&t.cluster_arn)
            .role_arn(&t.role_arn)
            .input(t.input().to_string())
            .ecs_parameters(ecs)
            .retry_policy(retry)
            .build(),
    )
}

/// CreateSchedule or UpdateSchedule: both take the whole schedule.
async fn put_schedule(aws: &Aws, name: &str, d: &Schedule, create: bool) -> Result<Outputs> {
    let window = built(
        FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build(),
    )?;
    let state = if d.enabled {
        ScheduleState::Enabled
    } else {
        ScheduleState::Disabled
    };
    // CreateSchedule and UpdateSchedule take the same fields, on two builder types.
    macro_rules! whole_schedule {
        ($call:expr, $action:literal) => {
            $call
                .name(name)
                .group_name(&d.group)
                .schedule_expression(&d.expression)
                .schedule_expression_timezone(&d.timezone)
                .description(&d.description)
                .state(state)
                .flexible_time_window(window)
                .target(target(&d.target)?)
                .send()
                .await
                .map_err(aws_error($action, name))?
                .schedule_arn
        };
    }
    let arn = if create {
        whole_schedule!(aws.scheduler.create_schedule(), "create schedule")
    } else {
        whole_schedule!(aws.scheduler.update_schedule(), "update schedule")
    };
    Ok(Outputs {
        id: Some(name.to_owned()),
        arn: Some(arn),
    })
}

async fn delete_schedule(aws: &Aws, name: &str, group: &str) -> Result<()> {
    match aws
        .scheduler
        .delete_schedule()
        .group_name(group)
        .name(name)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(()),
        Err(e) => Err(aws_error("delete schedule", name)(e)),
    }
}

/// Schedules in the environment's group that the file no longer lists.
async fn extras(aws: &Aws, env: &Environment, stack: &Stack) -> Result<Vec<Extra>> {
    let Some(group) = stack.of_kind(Kind::ScheduleGroup).next() else {
        return Ok(Vec::new());
    };
    let wanted: Vec<&str> = stack
        .of_kind(Kind::Schedule)
        .map(|r| r.name.as_str())
        .collect();
    let mut names = Vec::new();
    let mut pages = aws
        .scheduler
        .list_schedules()
        .group_name(&group.name)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(page) => names.extend(
                page.schedules()
                    .iter()
                    .filter_map(|s| s.name().map(str::to_owned)),
            ),
            Err(e) if code(&e) == Some("ResourceNotFoundException") => break,
            Err(e) => return Err(aws_error("list schedules of", group.id())(e)),
        }
    }
    let _ = env;
    let mut found = Vec::new();
    for name in names.into_iter().filter(|n| !wanted.contains(&n.as_str())) {
        if let Some(live) = read_schedule(aws, &name, &group.name).await? {
            found.push(Extra::dropped(
                Resource::new(&name, live.spec.clone()),
                live,
            ));
        }
    }
    Ok(found)
}

fn tags(t: &Tags) -> Result<Vec<Tag>> {
    t.iter()
        .map(|(k, v)| built(Tag::builder().key(k).value(v).build()))
        .collect()
}

impl Managed for ScheduleGroup {
    const SERVICE: &'static str = "scheduler";

    async fn read(&self, aws: &Aws, r: &Resource) -> Result<Option<Live>> {
        read_group(aws, r).await
    }

    async fn create(&self, aws: &Aws, r: &Resource) -> Result<Outputs> {
        create_group(aws, r).await
    }

    async fn tag(&self, aws: &Aws, r: &Resource, outputs: &Outputs) -> Result<()> {
        tag(aws, arn_of(r, outputs)?, &r.tags).await
    }

    async fn delete(&self, aws: &Aws, r: &Resource, _live: &Live, _o: Options) -> Result<Deleted> {
        delete_group(aws, &r.name).await?;
        Ok(Deleted::Yes)
    }
}

impl Managed for Schedule {
    const SERVICE: &'static str = "scheduler";

    async fn read(&self, aws: &Aws, r: &Resource) -> Result<Option<Live>> {
        read_schedule(aws, &r.name, &self.group).await
    }

    async fn create(&self, aws: &Aws, r: &Resource) -> Result<Outputs> {
        put_schedule(aws, &r.name, self, true).await
    }

    async fn update(
        &self,
        aws: &Aws,
        r: &Resource,
        _live: &Self,
        _outputs: &Outputs,
        _changes: &[Change],
    ) -> Result<Outputs> {
        put_schedule(aws, &r.name, self, false).await
    }

    async fn delete(&self, aws: &Aws, r: &Resource, _live: &Live, _o: Options) -> Result<Deleted> {
        delete_schedule(aws, &r.name, &self.group).await?;
        Ok(Deleted::Yes)
    }

    fn normalize(&mut self) {
        self.target.subnets.sort();
        self.target.security_groups.sort();
    }

    async fn extras(aws: &Aws, env: &Environment, stack: &Stack) -> Result<Vec<Extra>> {
        extras(aws, env, stack).await
    }
}

#[cfg(test)]
mod tests {
    use infra::resources::{Kind, Spec};

    use crate::resources::fixture::{judge, judge_tagged, resource};

    fn schedule(spec: &mut Spec) -> &mut infra::resources::Schedule {
        let Spec::Schedule(s) = spec else {
            panic!("a schedule")
        };
        s
    }

    #[test]
    fn shuffled_subnets_are_no_change_and_a_new_time_is_in_place() {
        let mut r = resource(Kind::Schedule);
        schedule(&mut r.properties).target.subnets = vec!["subnet-a".into(), "subnet-b".into()];
        let (paths, _) = judge(&r, |s| schedule(s).target.subnets.reverse());
        assert!(paths.is_empty(), "{paths:?}");
        let (paths, replaced) = judge(&r, |s| schedule(s).expression = "cron(0 6 * * ? *)".into());
        assert_eq!(paths, ["properties.expression"]);
        assert!(!replaced);
    }

    #[test]
    fn a_schedule_group_changes_only_its_tags() {
        let r = resource(Kind::ScheduleGroup);
        let mut tagged = r.clone();
        tagged.tags.insert("owner".into(), "billing".into());
        let (paths, replaced) = judge_tagged(&tagged, &r.tags, |_| {});
        assert_eq!(paths, ["tags.owner"]);
        assert!(!replaced);
    }
}
