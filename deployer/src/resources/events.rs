//! EventBridge rules: the task-failed alert (pattern -> SNS), the stopped-task history
//! (pattern -> a log group) and, with the "rules" engine, the UTC schedules (cron -> ECS
//! task). One target per rule.

use std::collections::BTreeMap;

use aws_sdk_eventbridge::types::{InputTransformer, RuleState, Tag, Target};
use infra::resources::{EventRule, Resource, RuleTarget, Spec, Tags};

use super::Change;
use super::{
    Deleted, Live, Managed, Options, Outputs, arn_of, aws_error, built, code, ecs_target, tag_map,
};
use crate::aws::Aws;
use crate::error::Result;

async fn read(aws: &Aws, r: &Resource) -> Result<Option<Live>> {
    // One round trip where the stack knows the rule's ARN: the rule, its targets and its
    // tags at once.
    let tags_of = |arn: String| async move {
        aws.events
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
    };
    let known = r.arn.clone();
    let (rule, targets, early_tags) = tokio::join!(
        aws.events.describe_rule().name(&r.name).send(),
        aws.events.list_targets_by_rule().rule(&r.name).send(),
        async {
            match &known {
                Some(arn) => Some(tags_of(arn.clone()).await),
                None => None,
            }
        },
    );
    let rule = match rule {
        Ok(out) => out,
        Err(e) if code(&e) == Some("ResourceNotFoundException") => return Ok(None),
        Err(e) => return Err(aws_error("read", r.id())(e)),
    };
    let arn = rule.arn().unwrap_or_default().to_owned();
    let tags = match early_tags {
        Some(tags) if known.as_deref() == Some(arn.as_str()) => tags,
        _ => tags_of(arn.clone()).await,
    };
    let targets = targets.map_err(aws_error("read targets of", r.id()))?;
    let tags = tags.map_err(aws_error("read tags of", r.id()))?;
    let target = targets.targets().first().map_or(
        RuleTarget::Sns {
            id: String::new(),
            topic_arn: String::new(),
            input_paths: BTreeMap::new(),
            input_template: String::new(),
        },
        rule_target,
    );
    Ok(Some(Live {
        spec: Spec::EventRule(EventRule {
            description: rule.description().unwrap_or_default().to_owned(),
            schedule_expression: rule.schedule_expression().map(str::to_owned),
            event_pattern: rule
                .event_pattern()
                .and_then(|p| serde_json::from_str(p).ok()),
            enabled: rule.state() != Some(&RuleState::Disabled),
            target,
        }),
        tags: Some(tag_map(tags.tags().iter().map(|t| (t.key(), t.value())))),
        outputs: Outputs {
            id: Some(r.name.clone()),
            arn: Some(arn),
        },
    }))
}

fn rule_target(t: &Target) -> RuleTarget {
    if t.arn().split(':').nth(2) == Some("logs") {
        return RuleTarget::Logs {
            id: t.id().to_owned(),
            // A log group's ARN, with or without the `:*` some tools add.
            log_group_arn: t.arn().trim_end_matches(":*").to_owned(),
        };
    }
    let Some(ecs) = t.ecs_parameters() else {
        let transformer = t.input_transformer();
        return RuleTarget::Sns {
            id: t.id().to_owned(),
            topic_arn: t.arn().to_owned(),
            input_paths: transformer
                .and_then(InputTransformer::input_paths_map)
                .map(|m| m.clone().into_iter().collect())
                .unwrap_or_default(),
            input_template: transformer
                .map(InputTransformer::input_template)
                .unwrap_or_default()
                .to_owned(),
        };
    };
    RuleTarget::Ecs {
        id: t.id().to_owned(),
        target: Box::new(ecs_target::events::from_live(
            t.arn(),
            t.role_arn().unwrap_or_default(),
            t.input(),
            Some(ecs),
            t.retry_policy(),
        )),
    }
}

fn target(t: &RuleTarget) -> Result<Target> {
    match t {
        RuleTarget::Sns {
            id,
            topic_arn,
            input_paths,
            input_template,
        } => built(
            Target::builder()
                .id(id)
                .arn(topic_arn)
                .input_transformer(built(
                    InputTransformer::builder()
                        .set_input_paths_map(Some(input_paths.clone().into_iter().collect()))
                        .input_template(input_template)
                        .build(),
                )?)
                .build(),
        ),
        RuleTarget::Logs { id, log_group_arn } => {
            built(Target::builder().id(id).arn(log_group_arn).build())
        }
        RuleTarget::Ecs { id, target: t } => {
            let (ecs, retry) = ecs_target::events::to_sdk(t)?;
            built(
                Target::builder()
                    .id(id)
                    .arn(&t.cluster_arn)
                    .role_arn(&t.role_arn)
                    .input(t.input().to_string())
                    .ecs_parameters(ecs)
                    .retry_policy(retry)
                    .build(),
            )
        }
    }
}

fn target_id(t: &RuleTarget) -> &str {
    match t {
        RuleTarget::Sns { id, .. } | RuleTarget::Ecs { id, .. } | RuleTarget::Logs { id, .. } => id,
    }
}

/// PutRule creates or updates; PutTargets replaces the target with the same id; a
/// target with another id is removed, so the rule always has exactly one.
async fn put(aws: &Aws, r: &Resource, d: &EventRule, live: Option<&EventRule>) -> Result<Outputs> {
    let rule_changed = live.is_none_or(|l| {
        l.description != d.description
            || l.schedule_expression != d.schedule_expression
            || l.event_pattern != d.event_pattern
            || l.enabled != d.enabled
    });
    let mut arn = None;
    if rule_changed {
        let mut put = aws
            .events
            .put_rule()
            .name(&r.name)
            .description(&d.description)
            .set_schedule_expression(d.schedule_expression.clone())
            .set_event_pattern(d.event_pattern.as_ref().map(ToString::to_string))
            .state(if d.enabled {
                RuleState::Enabled
            } else {
                RuleState::Disabled
            });
        if live.is_none() {
            put = put.set_tags(Some(tags(&r.tags)?));
        }
        arn = put.send().await.map_err(aws_error("put", r.id()))?.rule_arn;
    }
    if live.is_none_or(|l| l.target != d.target) {
        if let Some(old) = live
            .map(|l| target_id(&l.target))
            .filter(|id| !id.is_empty() && *id != target_id(&d.target))
        {
            aws.events
                .remove_targets()
                .rule(&r.name)
                .ids(old)
                .send()
                .await
                .map_err(aws_error("remove the old target of", r.id()))?;
        }
        let out = aws
            .events
            .put_targets()
            .rule(&r.name)
            .targets(target(&d.target)?)
            .send()
            .await
            .map_err(aws_error("set the target of", r.id()))?;
        if out.failed_entry_count() > 0 {
            let why = out
                .failed_entries()
                .iter()
                .filter_map(|e| e.error_message())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(crate::error::Error::Aws {
                action: "set the target of",
                resource: r.id().to_string(),
                code: out
                    .failed_entries()
                    .first()
                    .and_then(|e| e.error_code())
                    .map(str::to_owned),
                message: why,
            });
        }
    }
    Ok(Outputs {
        id: Some(r.name.clone()),
        arn,
    })
}

async fn tag(aws: &Aws, arn: &str, t: &Tags) -> Result<()> {
    aws.events
        .tag_resource()
        .resource_arn(arn)
        .set_tags(Some(tags(t)?))
        .send()
        .await
        .map_err(aws_error("tag", arn))?;
    Ok(())
}

async fn delete(aws: &Aws, name: &str) -> Result<()> {
    let targets = match aws.events.list_targets_by_rule().rule(name).send().await {
        Ok(out) => out,
        Err(e) if code(&e) == Some("ResourceNotFoundException") => return Ok(()),
        Err(e) => return Err(aws_error("read targets of rule", name)(e)),
    };
    let ids: Vec<String> = targets
        .targets()
        .iter()
        .map(|t| t.id().to_owned())
        .collect();
    if !ids.is_empty() {
        aws.events
            .remove_targets()
            .rule(name)
            .set_ids(Some(ids))
            .send()
            .await
            .map_err(aws_error("remove targets of rule", name))?;
    }
    aws.events
        .delete_rule()
        .name(name)
        .send()
        .await
        .map_err(aws_error("delete rule", name))?;
    Ok(())
}

fn tags(t: &Tags) -> Result<Vec<Tag>> {
    t.iter()
        .map(|(k, v)| built(Tag::builder().key(k).value(v).build()))
        .collect()
}

impl Managed for EventRule {
    const SERVICE: &'static str = "events";

    async fn read(&self, aws: &Aws, r: &Resource) -> Result<Option<Live>> {
        read(aws, r).await
    }

    async fn create(&self, aws: &Aws, r: &Resource) -> Result<Outputs> {
        put(aws, r, self, None).await
    }

    async fn update(
        &self,
        aws: &Aws,
        r: &Resource,
        live: &Self,
        _outputs: &Outputs,
        _changes: &[Change],
    ) -> Result<Outputs> {
        put(aws, r, self, Some(live)).await
    }

    async fn tag(&self, aws: &Aws, r: &Resource, outputs: &Outputs) -> Result<()> {
        tag(aws, arn_of(r, outputs)?, &r.tags).await
    }

    async fn delete(&self, aws: &Aws, r: &Resource, _live: &Live, _o: Options) -> Result<Deleted> {
        delete(aws, &r.name).await?;
        Ok(Deleted::Yes)
    }

    fn normalize(&mut self) {
        if let RuleTarget::Ecs { target, .. } = &mut self.target {
            target.subnets.sort();
            target.security_groups.sort();
        }
    }
}

#[cfg(test)]
mod tests {
    use infra::resources::{Kind, RuleTarget, Spec};

    use crate::resources::fixture::{judge, resource};

    #[test]
    fn a_rule_changes_in_place() {
        let r = resource(Kind::EventRule);
        let (paths, replaced) = judge(&r, |s| {
            let Spec::EventRule(rule) = s else { panic!() };
            rule.enabled = !rule.enabled;
        });
        assert_eq!(paths, ["properties.enabled"]);
        assert!(!replaced);
    }

    #[test]
    fn shuffled_ecs_target_subnets_are_no_change() {
        let mut r = resource(Kind::EventRule);
        let Spec::EventRule(rule) = &mut r.properties else {
            panic!()
        };
        let mut target = match resource(Kind::Schedule).properties {
            Spec::Schedule(s) => s.target,
            _ => panic!(),
        };
        target.subnets = vec!["subnet-a".into(), "subnet-b".into()];
        rule.target = RuleTarget::Ecs {
            id: "run".into(),
            target: Box::new(target),
        };
        let (paths, _) = judge(&r, |s| {
            let Spec::EventRule(rule) = s else { panic!() };
            if let RuleTarget::Ecs { target, .. } = &mut rule.target {
                target.subnets.reverse();
            }
        });
        assert!(paths.is_empty(), "{paths:?}");
    }
}
