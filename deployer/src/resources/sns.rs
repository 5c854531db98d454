//! SNS: the alerts topic (display name, policy, tags) and its email subscription.

use aws_sdk_sns::types::Tag;
use infra::policy::PolicyDocument;
use infra::resources::{Kind, Resource, SnsSubscription, SnsTopic, Spec, Tags};
use infra::{Environment, Stack};

use super::Change;
use super::{
    Deleted, Extra, Live, Managed, Options, Outputs, arn_of, aws_error, built, code, tag_map,
};
use crate::aws::Aws;
use crate::error::{Error, Result};

async fn read_topic(aws: &Aws, r: &Resource) -> Result<Option<Live>> {
    let arn = r.arn.clone().unwrap_or_default();
    let (attrs, tags) = tokio::join!(
        aws.sns.get_topic_attributes().topic_arn(&arn).send(),
        aws.sns.list_tags_for_resource().resource_arn(&arn).send()
    );
    let attrs = match attrs {
        Ok(out) => out.attributes.unwrap_or_default(),
        Err(e) if code(&e) == Some("NotFound") => return Ok(None),
        Err(e) => return Err(aws_error("read", r.id())(e)),
    };
    let policy: PolicyDocument = attrs
        .get("Policy")
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_else(|| PolicyDocument::new(Vec::new()));
    let tags = tags.map_err(aws_error("read tags of", r.id()))?;
    Ok(Some(Live {
        spec: Spec::SnsTopic(SnsTopic {
            display_name: attrs.get("DisplayName").cloned().unwrap_or_default(),
            policy,
        }),
        tags: Some(tag_map(tags.tags().iter().map(|t| (t.key(), t.value())))),
        outputs: Outputs {
            id: Some(r.name.clone()),
            arn: Some(arn),
        },
    }))
}

fn policy_json(d: &SnsTopic) -> String {
    serde_json::to_string(&d.policy).expect("policy documents serialize")
}

async fn create_topic(aws: &Aws, r: &Resource, d: &SnsTopic) -> Result<Outputs> {
    let out = aws
        .sns
        .create_topic()
        .name(&r.name)
        .attributes("DisplayName", &d.display_name)
        .attributes("Policy", policy_json(d))
        .set_tags(Some(tags(&r.tags)?))
        .send()
        .await
        .map_err(aws_error("create", r.id()))?;
    Ok(Outputs {
        id: Some(r.name.clone()),
        arn: out.topic_arn,
    })
}

async fn update_topic(aws: &Aws, d: &SnsTopic, outputs: &Outputs) -> Result<Outputs> {
    let arn = outputs.arn.as_deref().unwrap_or_default();
    for (name, value) in [
        ("DisplayName", d.display_name.clone()),
        ("Policy", policy_json(d)),
    ] {
        aws.sns
            .set_topic_attributes()
            .topic_arn(arn)
            .attribute_name(name)
            .attribute_value(value)
            .send()
            .await
            .map_err(aws_error("set an attribute of topic", arn))?;
    }
    Ok(outputs.clone())
}

async fn tag(aws: &Aws, arn: &str, t: &Tags) -> Result<()> {
    aws.sns
        .tag_resource()
        .resource_arn(arn)
        .set_tags(Some(tags(t)?))
        .send()
        .await
        .map_err(aws_error("tag", arn))?;
    Ok(())
}

async fn delete_topic(aws: &Aws, outputs: &Outputs) -> Result<()> {
    let Some(arn) = outputs.arn.as_deref() else {
        return Ok(());
    };
    aws.sns
        .delete_topic()
        .topic_arn(arn)
        .send()
        .await
        .map_err(aws_error("delete topic", arn))?;
    Ok(())
}

/// Every subscription of the topic as `(protocol, endpoint, subscription ARN)`; a
/// pending one's ARN is the literal `PendingConfirmation` (ListSubscriptionsByTopic).
pub async fn subscriptions(aws: &Aws, topic: &str) -> Result<Vec<(String, String, String)>> {
    let mut found = Vec::new();
    let mut pages = aws
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(topic)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(page) => found.extend(page.subscriptions().iter().map(|s| {
                (
                    s.protocol().unwrap_or_default().to_owned(),
                    s.endpoint().unwrap_or_default().to_owned(),
                    s.subscription_arn().unwrap_or_default().to_owned(),
                )
            })),
            Err(e) if code(&e) == Some("NotFound") => break,
            Err(e) => return Err(aws_error("list subscriptions of", topic)(e)),
        }
    }
    Ok(found)
}

fn subscription_live(topic: &str, protocol: String, endpoint: String, arn: String) -> Live {
    Live {
        spec: Spec::SnsSubscription(SnsSubscription {
            topic_arn: topic.to_owned(),
            protocol,
            endpoint,
        }),
        tags: None,
        outputs: Outputs {
            id: None,
            arn: Some(arn),
        },
    }
}

async fn read_subscription(
    aws: &Aws,
    topic: &str,
    protocol: &str,
    endpoint: &str,
) -> Result<Option<Live>> {
    Ok(subscriptions(aws, topic)
        .await?
        .into_iter()
        .find(|(p, e, _)| p == protocol && e.eq_ignore_ascii_case(endpoint))
        .map(|(p, e, arn)| subscription_live(topic, p, e, arn)))
}

async fn subscribe(aws: &Aws, d: &SnsSubscription) -> Result<Outputs> {
    let out = aws
        .sns
        .subscribe()
        .topic_arn(&d.topic_arn)
        .protocol(&d.protocol)
        .endpoint(&d.endpoint)
        .send()
        .await
        .map_err(aws_error("subscribe", &d.endpoint))?;
    Ok(Outputs {
        id: None,
        arn: out.subscription_arn,
    })
}

/// A subscription still waiting for its confirmation has no ARN and cannot be removed;
/// AWS drops it after 48 hours (SNS developer guide, "Confirming an Amazon SNS
/// subscription").
async fn unsubscribe(aws: &Aws, outputs: &Outputs) -> Result<Deleted> {
    let arn = outputs.arn.as_deref().unwrap_or_default();
    if !arn.starts_with("arn:") {
        return Ok(Deleted::Kept(
            "it is pending confirmation; AWS removes unconfirmed subscriptions after 48 hours"
                .into(),
        ));
    }
    aws.sns
        .unsubscribe()
        .subscription_arn(arn)
        .send()
        .await
        .map_err(aws_error("unsubscribe", arn))?;
    Ok(Deleted::Yes)
}

/// Subscriptions on the stack's topic to an address the file no longer names.
async fn extras(aws: &Aws, _env: &Environment, stack: &Stack) -> Result<Vec<Extra>> {
    let Some(topic) = stack
        .of_kind(Kind::SnsTopic)
        .next()
        .and_then(|t| t.arn.clone())
    else {
        return Ok(Vec::new());
    };
    let wanted: Vec<(String, String)> = stack
        .of_kind(Kind::SnsSubscription)
        .filter_map(|r| match &r.properties {
            Spec::SnsSubscription(s) => Some((s.protocol.clone(), s.endpoint.to_lowercase())),
            _ => None,
        })
        .collect();
    Ok(subscriptions(aws, &topic)
        .await?
        .into_iter()
        .filter(|(p, e, _)| !wanted.contains(&(p.clone(), e.to_lowercase())))
        .map(|(p, e, arn)| {
            let live = subscription_live(&topic, p.clone(), e.clone(), arn);
            let name = format!("{}/{p}/{e}", topic.rsplit(':').next().unwrap_or_default());
            Extra::dropped(Resource::new(name, live.spec.clone()), live)
        })
        .collect())
}

fn tags(t: &Tags) -> Result<Vec<Tag>> {
    t.iter()
        .map(|(k, v)| built(Tag::builder().key(k).value(v).build()))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| Error::Internal(e.to_string()))
}

impl Managed for SnsTopic {
    const SERVICE: &'static str = "sns";

    async fn read(&self, aws: &Aws, r: &Resource) -> Result<Option<Live>> {
        read_topic(aws, r).await
    }

    async fn create(&self, aws: &Aws, r: &Resource) -> Result<Outputs> {
        create_topic(aws, r, self).await
    }

    async fn update(
        &self,
        aws: &Aws,
        _r: &Resource,
        _live: &Self,
        outputs: &Outputs,
        _changes: &[Change],
    ) -> Result<Outputs> {
        update_topic(aws, self, outputs).await
    }

    async fn tag(&self, aws: &Aws, r: &Resource, outputs: &Outputs) -> Result<()> {
        tag(aws, arn_of(r, outputs)?, &r.tags).await
    }

    async fn delete(&self, aws: &Aws, _r: &Resource, live: &Live, _o: Options) -> Result<Deleted> {
        delete_topic(aws, &live.outputs).await?;
        Ok(Deleted::Yes)
    }

    fn normalize(&mut self) {
        self.policy = self.policy.normalized();
    }
}

impl Managed for SnsSubscription {
    const SERVICE: &'static str = "sns";

    /// Found by what it is (protocol and endpoint) on its topic: a subscription to
    /// another address is another subscription, and the old one an extra.
    async fn read(&self, aws: &Aws, _r: &Resource) -> Result<Option<Live>> {
        read_subscription(aws, &self.topic_arn, &self.protocol, &self.endpoint).await
    }

    async fn create(&self, aws: &Aws, _r: &Resource) -> Result<Outputs> {
        subscribe(aws, self).await
    }

    async fn delete(&self, aws: &Aws, _r: &Resource, live: &Live, _o: Options) -> Result<Deleted> {
        unsubscribe(aws, &live.outputs).await
    }

    async fn extras(aws: &Aws, env: &Environment, stack: &Stack) -> Result<Vec<Extra>> {
        extras(aws, env, stack).await
    }
}

#[cfg(test)]
mod tests {
    use infra::resources::{Kind, Spec};

    use crate::resources::fixture::{judge, resource};

    #[test]
    fn a_shuffled_topic_policy_is_no_change_and_a_new_name_is_in_place() {
        let r = resource(Kind::SnsTopic);
        let (paths, _) = judge(&r, |s| {
            let Spec::SnsTopic(t) = s else { panic!() };
            t.policy.statement.reverse();
        });
        assert!(paths.is_empty(), "{paths:?}");
        let (paths, replaced) = judge(&r, |s| {
            let Spec::SnsTopic(t) = s else { panic!() };
            t.display_name = "old".into();
        });
        assert_eq!(paths, ["properties.display_name"]);
        assert!(!replaced);
    }

    /// A subscription is read by its protocol and address, so a new address is a new
    /// subscription (and the old one an extra), never a change to compare.
    #[test]
    fn a_subscription_has_no_replacement_rule() {
        let r = resource(Kind::SnsSubscription);
        let (paths, replaced) = judge(&r, |s| {
            let Spec::SnsSubscription(sub) = s else {
                panic!()
            };
            sub.endpoint = "old@example.com".into();
        });
        assert_eq!(paths, ["properties.endpoint"]);
        assert!(!replaced);
    }
}
