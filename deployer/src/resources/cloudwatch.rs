//! CloudWatch metric alarms: failed runs, the daily heartbeat, schedule errors.

use aws_sdk_cloudwatch::types::{
    AlarmType, ComparisonOperator, Dimension, MetricAlarm, Statistic, Tag,
};
use infra::resources::{Alarm, Kind, Resource, Spec, Tags};
use infra::{Environment, Stack};

use super::Change;
use super::{Deleted, Extra, Live, Managed, Options, Outputs, arn_of, aws_error, tag_map};
use crate::aws::Aws;
use crate::error::Result;

fn spec(a: &MetricAlarm) -> Alarm {
    Alarm {
        description: a.alarm_description().unwrap_or_default().to_owned(),
        namespace: a.namespace().unwrap_or_default().to_owned(),
        metric_name: a.metric_name().unwrap_or_default().to_owned(),
        dimensions: a
            .dimensions()
            .iter()
            .filter_map(|d| Some((d.name()?.to_owned(), d.value().unwrap_or("").to_owned())))
            .collect(),
        statistic: a.statistic().map_or("", Statistic::as_str).to_owned(),
        period_seconds: a.period().unwrap_or(0),
        evaluation_periods: a.evaluation_periods().unwrap_or(0),
        datapoints_to_alarm: a
            .datapoints_to_alarm()
            .or(a.evaluation_periods())
            .unwrap_or(0),
        threshold: a.threshold().unwrap_or(0.0),
        comparison: a
            .comparison_operator()
            .map_or("", ComparisonOperator::as_str)
            .to_owned(),
        treat_missing_data: a.treat_missing_data().unwrap_or("missing").to_owned(),
        alarm_actions: a.alarm_actions().to_vec(),
        ok_actions: a.ok_actions().to_vec(),
    }
}

async fn describe(aws: &Aws, name: Option<&str>, prefix: Option<&str>) -> Result<Vec<MetricAlarm>> {
    let mut alarms = Vec::new();
    let mut pages = aws
        .cloudwatch
        .describe_alarms()
        .set_alarm_names(name.map(|n| vec![n.to_owned()]))
        .set_alarm_name_prefix(prefix.map(str::to_owned))
        .alarm_types(AlarmType::MetricAlarm)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(aws_error(
            "read alarms",
            name.or(prefix).unwrap_or_default(),
        ))?;
        alarms.extend(page.metric_alarms().iter().cloned());
    }
    Ok(alarms)
}

async fn live(aws: &Aws, alarm: &MetricAlarm) -> Result<Live> {
    let arn = alarm.alarm_arn().unwrap_or_default().to_owned();
    let tags = aws
        .cloudwatch
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .map_err(aws_error("read tags of alarm", &arn))?;
    Ok(Live {
        spec: Spec::Alarm(spec(alarm)),
        tags: Some(tag_map(tags.tags().iter().filter_map(|t| {
            Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned()))
        }))),
        outputs: Outputs {
            id: alarm.alarm_name().map(str::to_owned),
            arn: Some(arn),
        },
    })
}

async fn read(aws: &Aws, r: &Resource) -> Result<Option<Live>> {
    match describe(aws, Some(&r.name), None).await?.first() {
        Some(alarm) => Ok(Some(live(aws, alarm).await?)),
        None => Ok(None),
    }
}

/// A heartbeat alarm (one that counts data points, breaching when there are none)
/// gets one data point that is not a success before it exists, so its hours count from
/// now: it does not fire before the job's first run could have succeeded. Written
/// first, so a run that dies after creating the alarm has already armed it; writing it
/// again is harmless.
async fn arm(aws: &Aws, d: &Alarm) -> Result<()> {
    use aws_sdk_cloudwatch::types::MetricDatum;
    if d.statistic != "SampleCount" {
        return Ok(());
    }
    aws.cloudwatch
        .put_metric_data()
        .namespace(&d.namespace)
        .metric_data(
            MetricDatum::builder()
                .metric_name(&d.metric_name)
                .value(infra::stack::HEARTBEAT_ARMING)
                .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from(
                    std::time::SystemTime::now(),
                ))
                .build(),
        )
        .send()
        .await
        .map_err(aws_error("record the heartbeat's start in", &d.metric_name))?;
    Ok(())
}

/// PutMetricAlarm creates or replaces the whole alarm; tags apply only on creation.
async fn put(aws: &Aws, r: &Resource, d: &Alarm, create: bool) -> Result<Outputs> {
    let mut put = aws
        .cloudwatch
        .put_metric_alarm()
        .alarm_name(&r.name)
        .alarm_description(&d.description)
        .namespace(&d.namespace)
        .metric_name(&d.metric_name)
        .set_dimensions(Some(
            d.dimensions
                .iter()
                .map(|(k, v)| Dimension::builder().name(k).value(v).build())
                .collect(),
        ))
        .statistic(Statistic::from(d.statistic.as_str()))
        .period(d.period_seconds)
        .evaluation_periods(d.evaluation_periods)
        .datapoints_to_alarm(d.datapoints_to_alarm)
        .threshold(d.threshold)
        .comparison_operator(ComparisonOperator::from(d.comparison.as_str()))
        .treat_missing_data(&d.treat_missing_data)
        .set_alarm_actions(Some(d.alarm_actions.clone()))
        .set_ok_actions(Some(d.ok_actions.clone()));
    if create {
        put = put.set_tags(Some(tags(&r.tags)));
    }
    put.send().await.map_err(aws_error("put", r.id()))?;
    Ok(Outputs {
        id: Some(r.name.clone()),
        arn: r.arn.clone(),
    })
}

async fn tag(aws: &Aws, arn: &str, t: &Tags) -> Result<()> {
    aws.cloudwatch
        .tag_resource()
        .resource_arn(arn)
        .set_tags(Some(tags(t)))
        .send()
        .await
        .map_err(aws_error("tag", arn))?;
    Ok(())
}

async fn delete(aws: &Aws, name: &str) -> Result<()> {
    aws.cloudwatch
        .delete_alarms()
        .alarm_names(name)
        .send()
        .await
        .map_err(aws_error("delete alarm", name))?;
    Ok(())
}

/// Alarms tagged with this environment that the stack no longer has.
async fn extras(aws: &Aws, env: &Environment, stack: &Stack) -> Result<Vec<Extra>> {
    let wanted: Vec<&str> = stack
        .of_kind(Kind::Alarm)
        .map(|r| r.name.as_str())
        .collect();
    let ours = env.tags();
    let mut found = Vec::new();
    let others: Vec<MetricAlarm> = describe(aws, None, Some(&format!("{}-", env.file.app)))
        .await?
        .into_iter()
        .filter(|a| !wanted.contains(&a.alarm_name().unwrap_or_default()))
        .collect();
    let lives = futures_util::future::join_all(others.iter().map(|a| live(aws, a))).await;
    for (alarm, live) in others.iter().zip(lives) {
        let name = alarm.alarm_name().unwrap_or_default().to_owned();
        let live = live?;
        let owned = live
            .tags
            .as_ref()
            .is_some_and(|t| ours.iter().all(|(k, v)| t.get(k) == Some(v)));
        if owned {
            let mut resource = Resource::new(&name, live.spec.clone());
            resource.tags = ours.clone();
            found.push(Extra::dropped(resource, live));
        }
    }
    Ok(found)
}

fn tags(t: &Tags) -> Vec<Tag> {
    t.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

impl Managed for Alarm {
    const SERVICE: &'static str = "cloudwatch";

    async fn read(&self, aws: &Aws, r: &Resource) -> Result<Option<Live>> {
        read(aws, r).await
    }

    async fn create(&self, aws: &Aws, r: &Resource) -> Result<Outputs> {
        arm(aws, self).await?;
        put(aws, r, self, true).await
    }

    async fn update(
        &self,
        aws: &Aws,
        r: &Resource,
        live: &Self,
        _outputs: &Outputs,
        _changes: &[Change],
    ) -> Result<Outputs> {
        if live.statistic != self.statistic {
            arm(aws, self).await?;
        }
        put(aws, r, self, false).await
    }

    async fn tag(&self, aws: &Aws, r: &Resource, outputs: &Outputs) -> Result<()> {
        tag(aws, arn_of(r, outputs)?, &r.tags).await
    }

    async fn delete(&self, aws: &Aws, r: &Resource, _live: &Live, _o: Options) -> Result<Deleted> {
        delete(aws, &r.name).await?;
        Ok(Deleted::Yes)
    }

    fn normalize(&mut self) {
        self.alarm_actions.sort();
        self.ok_actions.sort();
    }

    async fn extras(aws: &Aws, env: &Environment, stack: &Stack) -> Result<Vec<Extra>> {
        extras(aws, env, stack).await
    }
}

#[cfg(test)]
mod tests {
    use infra::resources::{Kind, Spec};

    use crate::resources::fixture::{judge, resource};

    fn alarm(spec: &mut Spec) -> &mut infra::resources::Alarm {
        let Spec::Alarm(a) = spec else {
            panic!("an alarm")
        };
        a
    }

    #[test]
    fn shuffled_actions_are_no_change_and_a_new_threshold_is_in_place() {
        let mut r = resource(Kind::Alarm);
        alarm(&mut r.properties).alarm_actions = vec!["arn:a".into(), "arn:b".into()];
        let (paths, _) = judge(&r, |s| alarm(s).alarm_actions.reverse());
        assert!(paths.is_empty(), "{paths:?}");
        let (paths, replaced) = judge(&r, |s| alarm(s).threshold += 1.0);
        assert_eq!(paths, ["properties.threshold"]);
        assert!(!replaced);
    }
}
