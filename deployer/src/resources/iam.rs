//! IAM role: trust policy, description, inline policies, managed policies, tags.

use std::collections::BTreeMap;

use aws_sdk_iam::types::Tag;
use futures_util::FutureExt;
use futures_util::future::{join_all, try_join_all};
use infra::policy::PolicyDocument;
use infra::resources::{IamRole, Resource, Spec, Tags};

use super::Change;
use super::{Deleted, Live, Managed, Options, Outputs, aws_error, code, tag_map};
use crate::aws::Aws;
use crate::error::{Error, Result};
use crate::wait;

async fn read(aws: &Aws, r: &Resource) -> Result<Option<Live>> {
    // One round trip: the role (with its tags), its policy lists, and the inline
    // policies the stack gives it, all at once; only a policy the stack does not know
    // (added by hand) takes a second. A role deleted meanwhile answers NoSuchEntity,
    // which `resources::read` takes as gone; a policy listed, then not found, was
    // deleted meanwhile: it is not there.
    let expected: Vec<String> = match &r.properties {
        Spec::IamRole(role) => role.inline_policies.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let policy = |name: String| async move {
        match aws
            .iam
            .get_role_policy()
            .role_name(&r.name)
            .policy_name(&name)
            .send()
            .await
        {
            Ok(policy) => Ok(Some((name, document(policy.policy_document(), &r.name)?))),
            Err(e) if code(&e) == Some("NoSuchEntity") => Ok(None),
            Err(e) => Err(aws_error("read inline policy of", r.id())(e)),
        }
    };
    let (role, names, attached, guessed) = tokio::join!(
        aws.iam.get_role().role_name(&r.name).send(),
        aws.iam.list_role_policies().role_name(&r.name).send(),
        aws.iam
            .list_attached_role_policies()
            .role_name(&r.name)
            .send(),
        join_all(expected.iter().cloned().map(policy)),
    );
    let role = match role {
        Ok(out) => match out.role {
            Some(role) => role,
            None => return Ok(None),
        },
        Err(e) if code(&e) == Some("NoSuchEntity") => return Ok(None),
        Err(e) => return Err(aws_error("read", r.id())(e)),
    };
    let trust = document(role.assume_role_policy_document().unwrap_or("{}"), &r.name)?;
    let names = names.map_err(aws_error("list inline policies of", r.id()))?;
    let attached = attached.map_err(aws_error("list managed policies of", r.id()))?;
    let mut known: BTreeMap<String, PolicyDocument> = BTreeMap::new();
    for doc in guessed {
        if let Some((name, doc)) = doc? {
            known.insert(name, doc);
        }
    }
    let unknown = names
        .policy_names()
        .iter()
        .filter(|n| !expected.contains(n))
        .cloned();
    for doc in join_all(unknown.map(policy)).await {
        if let Some((name, doc)) = doc? {
            known.insert(name, doc);
        }
    }
    // Only what the list names: a policy read before it was deleted is not there.
    known.retain(|name, _| names.policy_names().contains(name));
    let inline = known;
    Ok(Some(Live {
        spec: Spec::IamRole(IamRole {
            description: role.description().unwrap_or_default().to_owned(),
            trust_policy: trust,
            inline_policies: inline,
            managed_policy_arns: attached
                .attached_policies()
                .iter()
                .filter_map(|p| p.policy_arn().map(str::to_owned))
                .collect(),
        }),
        tags: Some(tag_map(role.tags().iter().map(|t| (t.key(), t.value())))),
        outputs: Outputs {
            id: Some(role.role_id().to_owned()),
            arn: Some(role.arn().to_owned()),
        },
    }))
}

/// IAM returns policy documents URL-encoded.
fn document(text: &str, role: &str) -> Result<PolicyDocument> {
    let decoded = percent_encoding::percent_decode_str(text).decode_utf8_lossy();
    serde_json::from_str(&decoded).map_err(|e| {
        Error::Internal(format!(
            "role {role} has a policy document that does not parse: {e}"
        ))
    })
}

fn json(doc: &PolicyDocument) -> String {
    serde_json::to_string(doc).expect("policy documents serialize")
}

async fn create(aws: &Aws, r: &Resource, d: &IamRole) -> Result<Outputs> {
    let out = aws
        .iam
        .create_role()
        .role_name(&r.name)
        .assume_role_policy_document(json(&d.trust_policy))
        .description(&d.description)
        .set_tags(Some(tags(&r.tags)?))
        .send()
        .await
        .map_err(aws_error("create", r.id()))?;
    let puts = d
        .inline_policies
        .iter()
        .map(|(name, doc)| put_policy(aws, &r.name, name, doc).boxed());
    let attaches = d
        .managed_policy_arns
        .iter()
        .map(|arn| attach(aws, &r.name, arn).boxed());
    try_join_all(puts.chain(attaches)).await?;
    let role = out.role();
    Ok(Outputs {
        id: role.map(|r| r.role_id().to_owned()),
        arn: role.map(|r| r.arn().to_owned()),
    })
}

async fn update(aws: &Aws, r: &Resource, d: &IamRole, live: &IamRole) -> Result<Outputs> {
    let name = &r.name;
    if d.trust_policy.normalized() != live.trust_policy.normalized() {
        aws.iam
            .update_assume_role_policy()
            .role_name(name)
            .policy_document(json(&d.trust_policy))
            .send()
            .await
            .map_err(aws_error("update the trust policy of", r.id()))?;
    }
    if d.description != live.description {
        aws.iam
            .update_role()
            .role_name(name)
            .description(&d.description)
            .send()
            .await
            .map_err(aws_error("update the description of", r.id()))?;
    }
    for (policy, doc) in &d.inline_policies {
        let same = live
            .inline_policies
            .get(policy)
            .is_some_and(|l| l.normalized() == doc.normalized());
        if !same {
            put_policy(aws, name, policy, doc).await?;
        }
    }
    for policy in live.inline_policies.keys() {
        if !d.inline_policies.contains_key(policy) {
            aws.iam
                .delete_role_policy()
                .role_name(name)
                .policy_name(policy)
                .send()
                .await
                .map_err(aws_error("delete an inline policy of", r.id()))?;
        }
    }
    for arn in &d.managed_policy_arns {
        if !live.managed_policy_arns.contains(arn) {
            attach(aws, name, arn).await?;
        }
    }
    for arn in &live.managed_policy_arns {
        if !d.managed_policy_arns.contains(arn) {
            detach(aws, name, arn).await?;
        }
    }
    Ok(Outputs::default())
}

/// A role made a moment ago may not be found yet by the calls after it: those are
/// tried again for a while (`wait::until_visible`).
const NOT_YET: &[&str] = &["NoSuchEntity"];

async fn put_policy(aws: &Aws, role: &str, name: &str, doc: &PolicyDocument) -> Result<()> {
    wait::until_visible(NOT_YET, || async {
        aws.iam
            .put_role_policy()
            .role_name(role)
            .policy_name(name)
            .policy_document(json(doc))
            .send()
            .await
            .map_err(aws_error("put an inline policy on role", role))
    })
    .await?;
    Ok(())
}

async fn attach(aws: &Aws, role: &str, arn: &str) -> Result<()> {
    wait::until_visible(NOT_YET, || async {
        aws.iam
            .attach_role_policy()
            .role_name(role)
            .policy_arn(arn)
            .send()
            .await
            .map_err(aws_error("attach a managed policy to role", role))
    })
    .await?;
    Ok(())
}

async fn detach(aws: &Aws, role: &str, arn: &str) -> Result<()> {
    aws.iam
        .detach_role_policy()
        .role_name(role)
        .policy_arn(arn)
        .send()
        .await
        .map_err(aws_error("detach a managed policy from role", role))?;
    Ok(())
}

async fn tag(aws: &Aws, role: &str, t: &Tags) -> Result<()> {
    aws.iam
        .tag_role()
        .role_name(role)
        .set_tags(Some(tags(t)?))
        .send()
        .await
        .map_err(aws_error("tag role", role))?;
    Ok(())
}

/// A role goes only once its policies are gone.
async fn delete(aws: &Aws, role: &str) -> Result<()> {
    let names = match aws.iam.list_role_policies().role_name(role).send().await {
        Ok(out) => out.policy_names,
        Err(e) if code(&e) == Some("NoSuchEntity") => return Ok(()),
        Err(e) => return Err(aws_error("list inline policies of role", role)(e)),
    };
    for name in names {
        aws.iam
            .delete_role_policy()
            .role_name(role)
            .policy_name(name)
            .send()
            .await
            .map_err(aws_error("delete an inline policy of role", role))?;
    }
    let attached = aws
        .iam
        .list_attached_role_policies()
        .role_name(role)
        .send()
        .await
        .map_err(aws_error("list managed policies of role", role))?;
    for policy in attached.attached_policies() {
        if let Some(arn) = policy.policy_arn() {
            detach(aws, role, arn).await?;
        }
    }
    aws.iam
        .delete_role()
        .role_name(role)
        .send()
        .await
        .map_err(aws_error("delete role", role))?;
    Ok(())
}

fn tags(t: &Tags) -> Result<Vec<Tag>> {
    t.iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| Error::Internal(e.to_string()))
        })
        .collect()
}

impl Managed for IamRole {
    const SERVICE: &'static str = "iam";

    async fn read(&self, aws: &Aws, r: &Resource) -> Result<Option<Live>> {
        read(aws, r).await
    }

    async fn create(&self, aws: &Aws, r: &Resource) -> Result<Outputs> {
        create(aws, r, self).await
    }

    async fn update(
        &self,
        aws: &Aws,
        r: &Resource,
        live: &Self,
        _outputs: &Outputs,
        _changes: &[Change],
    ) -> Result<Outputs> {
        update(aws, r, self, live).await
    }

    async fn tag(&self, aws: &Aws, r: &Resource, _outputs: &Outputs) -> Result<()> {
        tag(aws, &r.name, &r.tags).await
    }

    async fn delete(&self, aws: &Aws, r: &Resource, _live: &Live, _o: Options) -> Result<Deleted> {
        delete(aws, &r.name).await?;
        Ok(Deleted::Yes)
    }

    /// IAM keeps no order in policies, statements, actions or attached policies.
    fn normalize(&mut self) {
        self.trust_policy = self.trust_policy.normalized();
        for doc in self.inline_policies.values_mut() {
            *doc = doc.normalized();
        }
        self.managed_policy_arns.sort();
    }
}

#[cfg(test)]
mod tests {
    use infra::resources::{Kind, Spec};

    use crate::resources::fixture::{judge, resource};

    fn role(spec: &mut Spec) -> &mut infra::resources::IamRole {
        let Spec::IamRole(r) = spec else {
            panic!("a role")
        };
        r
    }

    #[test]
    fn shuffled_policies_are_no_change_and_a_new_description_is_in_place() {
        let r = resource(Kind::IamRole);
        let (paths, _) = judge(&r, |s| {
            let role = role(s);
            role.managed_policy_arns.reverse();
            role.trust_policy.statement.reverse();
            for doc in role.inline_policies.values_mut() {
                doc.statement.reverse();
            }
        });
        assert!(paths.is_empty(), "{paths:?}");
        let (paths, replaced) = judge(&r, |s| role(s).description = "old".into());
        assert_eq!(paths, ["properties.description"]);
        assert!(!replaced);
    }
}
