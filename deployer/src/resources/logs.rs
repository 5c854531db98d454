//! CloudWatch Logs: the log groups (retention, tags), the metric filters on the job's,
//! and the resource policy that lets EventBridge write the stopped-task history.

use aws_sdk_cloudwatchlogs::types::MetricTransformation;
use infra::resources::{Kind, LogGroup, LogResourcePolicy, MetricFilter, Resource, Spec, Tags};
use infra::{Environment, Stack};

use super::Change;
use super::{Deleted, Extra, Live, Managed, Options, Outputs, arn_of, aws_error, code, tag_map};
use crate::aws::Aws;
use crate::error::{Error, Result};

async fn read_group(aws: &Aws, r: &Resource) -> Result<Option<Live>> {
    let out = aws
        .logs
        .describe_log_groups()
        .log_group_name_prefix(&r.name)
        .send()
        .await
        .map_err(aws_error("read", r.id()))?;
    let Some(group) = out
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(&r.name))
    else {
        return Ok(None);
    };
    // The tagging API wants the ARN without the trailing `:*` that `arn` carries.
    let arn = group
        .log_group_arn()
        .or_else(|| group.arn().map(|a| a.trim_end_matches(":*")))
        .unwrap_or_default()
        .to_owned();
    let tags = aws
        .logs
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .map_err(aws_error("read tags of", r.id()))?;
    Ok(Some(Live {
        spec: Spec::LogGroup(LogGroup {
            retention_days: group
                .retention_in_days()
                .and_then(|d| u32::try_from(d).ok())
                .unwrap_or(0),
        }),
        tags: Some(tag_map(tags.tags().into_iter().flatten())),
        outputs: Outputs {
            id: Some(r.name.clone()),
            arn: Some(arn),
        },
    }))
}

async fn create_group(aws: &Aws, r: &Resource, d: &LogGroup) -> Result<Outputs> {
    aws.logs
        .create_log_group()
        .log_group_name(&r.name)
        .set_tags(Some(r.tags.clone().into_iter().collect()))
        .send()
        .await
        .map_err(aws_error("create", r.id()))?;
    put_retention(aws, r, d).await?;
    Ok(Outputs {
        id: Some(r.name.clone()),
        arn: r.arn.clone(),
    })
}

/// What a log group just made may answer for a while to the next call naming it:
/// CloudWatch Logs documents no consistency model, and first deployments report
/// "The specified log group does not exist" on the call after CreateLogGroup (unverified
/// as a consistency delay); retried as a new role or group is (`wait::until_visible`).
const GROUP_NOT_YET: &[&str] = &["ResourceNotFoundException"];

async fn put_retention(aws: &Aws, r: &Resource, d: &LogGroup) -> Result<()> {
    crate::wait::until_visible(GROUP_NOT_YET, || async {
        aws.logs
            .put_retention_policy()
            .log_group_name(&r.name)
            .retention_in_days(i32::try_from(d.retention_days).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(aws_error("set retention of", r.id()))
    })
    .await?;
    Ok(())
}

async fn tag(aws: &Aws, arn: &str, t: &Tags) -> Result<()> {
    aws.logs
        .tag_resource()
        .resource_arn(arn)
        .set_tags(Some(t.clone().into_iter().collect()))
        .send()
        .await
        .map_err(aws_error("tag", arn))?;
    Ok(())
}

async fn delete_group(aws: &Aws, name: &str) -> Result<()> {
    match aws
        .logs
        .delete_log_group()
        .log_group_name(name)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(()),
        Err(e) => Err(aws_error("delete", name)(e)),
    }
}

/// Every filter on `group` whose name starts with `prefix`.
async fn filters(aws: &Aws, group: &str, prefix: &str) -> Result<Vec<(String, MetricFilter)>> {
    let mut found = Vec::new();
    let mut pages = aws
        .logs
        .describe_metric_filters()
        .log_group_name(group)
        .filter_name_prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(page) => {
                for f in page.metric_filters() {
                    let Some(t) = f.metric_transformations().first() else {
                        continue;
                    };
                    found.push((
                        f.filter_name().unwrap_or_default().to_owned(),
                        MetricFilter {
                            log_group: group.to_owned(),
                            filter_pattern: f.filter_pattern().unwrap_or_default().to_owned(),
                            metric_namespace: t.metric_namespace().to_owned(),
                            metric_name: t.metric_name().to_owned(),
                            metric_value: t.metric_value().to_owned(),
                        },
                    ));
                }
            }
            Err(e) if code(&e) == Some("ResourceNotFoundException") => break,
            Err(e) => return Err(aws_error("read metric filters of", group)(e)),
        }
    }
    Ok(found)
}

async fn read_filter(aws: &Aws, name: &str, group: &str) -> Result<Option<Live>> {
    Ok(filters(aws, group, name)
        .await?
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, f)| filter_live(name, f)))
}

fn filter_live(name: &str, f: MetricFilter) -> Live {
    Live {
        spec: Spec::MetricFilter(f),
        tags: None,
        outputs: Outputs {
            id: Some(name.to_owned()),
            arn: None,
        },
    }
}

async fn put_filter(aws: &Aws, name: &str, d: &MetricFilter) -> Result<Outputs> {
    let transformation = MetricTransformation::builder()
        .metric_namespace(&d.metric_namespace)
        .metric_name(&d.metric_name)
        .metric_value(&d.metric_value)
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    crate::wait::until_visible(GROUP_NOT_YET, || async {
        aws.logs
            .put_metric_filter()
            .log_group_name(&d.log_group)
            .filter_name(name)
            .filter_pattern(&d.filter_pattern)
            .metric_transformations(transformation.clone())
            .send()
            .await
            .map_err(aws_error("create metric filter", name))
    })
    .await?;
    Ok(Outputs {
        id: Some(name.to_owned()),
        arn: None,
    })
}

/// AWS replaces a filter put under the same name, but moto keeps both: deleting first
/// is correct on both.
async fn replace_filter(aws: &Aws, name: &str, d: &MetricFilter) -> Result<Outputs> {
    delete_filter(aws, name, &d.log_group).await?;
    put_filter(aws, name, d).await
}

async fn delete_filter(aws: &Aws, name: &str, group: &str) -> Result<()> {
    match aws
        .logs
        .delete_metric_filter()
        .log_group_name(group)
        .filter_name(name)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(()),
        Err(e) => Err(aws_error("delete metric filter", name)(e)),
    }
}

/// Filters named like the stack's (`{app}-...`) on its log group that it no longer has.
async fn extras(aws: &Aws, env: &Environment, stack: &Stack) -> Result<Vec<Extra>> {
    let group = &env.file.logs.group;
    let prefix = format!("{}-", env.file.app);
    let wanted: Vec<&str> = stack
        .of_kind(Kind::MetricFilter)
        .map(|r| r.name.as_str())
        .collect();
    Ok(filters(aws, group, &prefix)
        .await?
        .into_iter()
        .filter(|(name, _)| !wanted.contains(&name.as_str()))
        .map(|(name, f)| {
            let resource = Resource::new(&name, Spec::MetricFilter(f.clone()));
            Extra::dropped(resource, filter_live(&name, f))
        })
        .collect())
}

impl Managed for LogGroup {
    const SERVICE: &'static str = "logs";

    async fn read(&self, aws: &Aws, r: &Resource) -> Result<Option<Live>> {
        read_group(aws, r).await
    }

    async fn create(&self, aws: &Aws, r: &Resource) -> Result<Outputs> {
        create_group(aws, r, self).await
    }

    async fn update(
        &self,
        aws: &Aws,
        r: &Resource,
        _live: &Self,
        _outputs: &Outputs,
        _changes: &[Change],
    ) -> Result<Outputs> {
        put_retention(aws, r, self).await?;
        Ok(Outputs::default())
    }

    async fn tag(&self, aws: &Aws, r: &Resource, outputs: &Outputs) -> Result<()> {
        tag(aws, arn_of(r, outputs)?, &r.tags).await
    }

    async fn delete(&self, aws: &Aws, r: &Resource, _live: &Live, _o: Options) -> Result<Deleted> {
        delete_group(aws, &r.name).await?;
        Ok(Deleted::Yes)
    }
}

impl Managed for MetricFilter {
    const SERVICE: &'static str = "logs";

    async fn read(&self, aws: &Aws, r: &Resource) -> Result<Option<Live>> {
        read_filter(aws, &r.name, &self.log_group).await
    }

    async fn create(&self, aws: &Aws, r: &Resource) -> Result<Outputs> {
        put_filter(aws, &r.name, self).await
    }

    async fn update(
        &self,
        aws: &Aws,
        r: &Resource,
        _live: &Self,
        _outputs: &Outputs,
        _changes: &[Change],
    ) -> Result<Outputs> {
        replace_filter(aws, &r.name, self).await
    }

    async fn delete(&self, aws: &Aws, r: &Resource, _live: &Live, _o: Options) -> Result<Deleted> {
        delete_filter(aws, &r.name, &self.log_group).await?;
        Ok(Deleted::Yes)
    }

    async fn extras(aws: &Aws, env: &Environment, stack: &Stack) -> Result<Vec<Extra>> {
        extras(aws, env, stack).await
    }
}

/// The account's resource policy named `name`, if any (DescribeResourcePolicies pages
/// with nextToken; an account holds at most 10).
async fn read_policy(aws: &Aws, name: &str) -> Result<Option<Live>> {
    let mut token = None;
    loop {
        let out = aws
            .logs
            .describe_resource_policies()
            .set_next_token(token)
            .send()
            .await
            .map_err(aws_error("read the log resource policies for", name))?;
        if let Some(p) = out
            .resource_policies()
            .iter()
            .find(|p| p.policy_name() == Some(name))
        {
            let document = p
                .policy_document()
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or_default();
            return Ok(Some(Live {
                spec: Spec::LogResourcePolicy(LogResourcePolicy { document }),
                tags: None,
                outputs: Outputs {
                    id: Some(name.to_owned()),
                    arn: None,
                },
            }));
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => return Ok(None),
        }
    }
}

/// PutResourcePolicy creates or replaces the policy of that name.
async fn put_policy(aws: &Aws, r: &Resource, d: &LogResourcePolicy) -> Result<Outputs> {
    let put = aws
        .logs
        .put_resource_policy()
        .policy_name(&r.name)
        .policy_document(d.document.to_string())
        .send()
        .await;
    match put {
        Ok(_) => {}
        // CloudWatch Logs holds 10 resource policies per Region, a quota that cannot be
        // raised ("CloudWatch Logs quotas"): say which ones take the places.
        Err(e) if code(&e) == Some("LimitExceededException") => {
            let names = aws
                .logs
                .describe_resource_policies()
                .send()
                .await
                .map(|o| {
                    o.resource_policies()
                        .iter()
                        .filter_map(|p| p.policy_name().map(str::to_owned))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            return Err(Error::Refused(
                format!(
                    "CloudWatch Logs holds at most 10 resource policies per Region, and this account's are taken ({names}), so {} cannot be added",
                    r.id()
                ),
                "delete one no longer needed (`aws logs delete-resource-policy --policy-name NAME`), then run `deployer up` again; the quota cannot be raised".into(),
            ));
        }
        Err(e) => return Err(aws_error("put", r.id())(e)),
    }
    Ok(Outputs {
        id: Some(r.name.clone()),
        arn: None,
    })
}

impl Managed for LogResourcePolicy {
    const SERVICE: &'static str = "logs";

    async fn read(&self, aws: &Aws, r: &Resource) -> Result<Option<Live>> {
        read_policy(aws, &r.name).await
    }

    async fn create(&self, aws: &Aws, r: &Resource) -> Result<Outputs> {
        put_policy(aws, r, self).await
    }

    async fn update(
        &self,
        aws: &Aws,
        r: &Resource,
        _live: &Self,
        _outputs: &Outputs,
        _changes: &[Change],
    ) -> Result<Outputs> {
        put_policy(aws, r, self).await
    }

    async fn delete(&self, aws: &Aws, r: &Resource, _live: &Live, _o: Options) -> Result<Deleted> {
        match aws
            .logs
            .delete_resource_policy()
            .policy_name(&r.name)
            .send()
            .await
        {
            Ok(_) => Ok(Deleted::Yes),
            Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(Deleted::Yes),
            Err(e) => Err(aws_error("delete", r.id())(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use infra::resources::{Kind, Spec};

    use crate::resources::fixture::{judge, resource};

    #[test]
    fn retention_and_filter_patterns_change_in_place() {
        let (paths, replaced) = judge(&resource(Kind::LogGroup), |s| {
            let Spec::LogGroup(g) = s else { panic!() };
            g.retention_days = 7;
        });
        assert_eq!(paths, ["properties.retention_days"]);
        assert!(!replaced);
        let (paths, replaced) = judge(&resource(Kind::MetricFilter), |s| {
            let Spec::MetricFilter(f) = s else { panic!() };
            f.filter_pattern = "{ $.event = \"x\" }".into();
        });
        assert_eq!(paths, ["properties.filter_pattern"]);
        assert!(!replaced);
    }
}
