//! EC2 security group: egress-only HTTPS. The tasks' group is found by name in the
//! configured VPC; this environment's own groups elsewhere (found by its tags) are what
//! a move to another VPC leaves behind: a group cannot change VPC, so it is replaced
//! there and the old one deleted once the schedules use the new one. A new group comes
//! with an allow-all egress rule, which is removed.

use std::time::Duration;

use futures_util::FutureExt;

use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, ResourceType, SecurityGroup as Ec2Group, Tag, TagSpecification,
};
use infra::resources::{Kind, Resource, SecurityGroup, SecurityGroupRule, Spec, Tags};
use infra::{Environment, Stack};

use super::Change;
use super::{Deleted, Extra, Live, Managed, Options, Outputs, aws_error, code, tag_map};
use crate::aws::Aws;
use crate::error::{Error, Result};
use crate::wait;

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// Filters that match only groups carrying every one of `tags`.
fn tagged(tags: &Tags) -> Vec<Filter> {
    tags.iter()
        .map(|(k, v)| filter(&format!("tag:{k}"), v))
        .collect()
}

async fn groups(aws: &Aws, filters: Vec<Filter>, what: &str) -> Result<Vec<Ec2Group>> {
    let mut pages = aws
        .ec2
        .describe_security_groups()
        .set_filters(Some(filters))
        .into_paginator()
        .items()
        .send();
    let mut found = Vec::new();
    while let Some(group) = pages.next().await {
        found.push(group.map_err(aws_error("read security group", what))?);
    }
    // A stable order: the plan must not change between two reads of the same account.
    found.sort_by(|a, b| a.group_id().cmp(&b.group_id()));
    Ok(found)
}

fn live(group: &Ec2Group) -> Live {
    Live {
        spec: Spec::SecurityGroup(SecurityGroup {
            description: group.description().unwrap_or_default().to_owned(),
            vpc_id: group.vpc_id().unwrap_or_default().to_owned(),
            ingress: rules(group.ip_permissions()),
            egress: rules(group.ip_permissions_egress()),
        }),
        tags: Some(tag_map(group.tags().iter().filter_map(|t| {
            Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned()))
        }))),
        outputs: Outputs {
            id: group.group_id().map(str::to_owned),
            arn: group.security_group_arn().map(str::to_owned),
        },
    }
}

/// The group named `r.name` in the configured VPC (owned or not: `decide` tells); else
/// this environment's group of that name in another VPC, which the plan then replaces.
async fn read(aws: &Aws, r: &Resource, d: &SecurityGroup) -> Result<Option<Live>> {
    let here = vec![filter("group-name", &r.name), filter("vpc-id", &d.vpc_id)];
    if let Some(group) = groups(aws, here, &r.name).await?.first() {
        return Ok(Some(live(group)));
    }
    let mut elsewhere = tagged(&r.tags);
    elsewhere.push(filter("group-name", &r.name));
    Ok(groups(aws, elsewhere, &r.name).await?.first().map(live))
}
/// One rule per CIDR, sorted, in the stack's shape.
fn rules(permissions: &[IpPermission]) -> Vec<SecurityGroupRule> {
    let mut out: Vec<SecurityGroupRule> = permissions
        .iter()
        .flat_map(|p| {
            let protocol = p.ip_protocol().unwrap_or("-1").to_owned();
            let (from, to) = (p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1));
            let v4 = p.ip_ranges().iter().map(|r| (r.cidr_ip(), r.description()));
            let v6 = p
                .ipv6_ranges()
                .iter()
                .map(|r| (r.cidr_ipv6(), r.description()));
            v4.chain(v6)
                .map(|(cidr, description)| SecurityGroupRule {
                    protocol: protocol.clone(),
                    from_port: from,
                    to_port: to,
                    cidr: cidr.unwrap_or_default().to_owned(),
                    description: description.unwrap_or_default().to_owned(),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out
}

fn permission(rule: &SecurityGroupRule) -> IpPermission {
    IpPermission::builder()
        .ip_protocol(&rule.protocol)
        .from_port(rule.from_port)
        .to_port(rule.to_port)
        .ip_ranges(
            IpRange::builder()
                .cidr_ip(&rule.cidr)
                .description(&rule.description)
                .build(),
        )
        .build()
}

async fn create(aws: &Aws, r: &Resource, d: &SecurityGroup) -> Result<Outputs> {
    let out = aws
        .ec2
        .create_security_group()
        .group_name(&r.name)
        .description(&d.description)
        .vpc_id(&d.vpc_id)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .set_tags(Some(tags(&r.tags)))
                .build(),
        )
        .send()
        .await
        .map_err(aws_error("create", r.id()))?;
    let id = out
        .group_id()
        .ok_or_else(|| Error::Internal(format!("{} was created without an id", r.id())))?
        .to_owned();
    let outputs = Outputs {
        id: Some(id),
        arn: out.security_group_arn().map(str::to_owned),
    };
    let default_egress = SecurityGroupRule {
        protocol: "-1".into(),
        from_port: -1,
        to_port: -1,
        cidr: "0.0.0.0/0".into(),
        description: String::new(),
    };
    let empty = SecurityGroup {
        egress: vec![default_egress],
        ..d.clone()
    };
    update(aws, d, &empty, &outputs).await
}

/// Revokes rules the stack does not have and authorizes the ones it lacks.
async fn update(
    aws: &Aws,
    d: &SecurityGroup,
    live: &SecurityGroup,
    outputs: &Outputs,
) -> Result<Outputs> {
    let id = outputs.id.as_deref().unwrap_or_default();
    let stale = |want: &[SecurityGroupRule], have: &[SecurityGroupRule]| -> Vec<IpPermission> {
        have.iter()
            .filter(|r| !want.contains(r))
            .map(permission)
            .collect()
    };
    let (revoke_out, add_out) = (
        stale(&d.egress, &live.egress),
        stale(&live.egress, &d.egress),
    );
    let (revoke_in, add_in) = (
        stale(&d.ingress, &live.ingress),
        stale(&live.ingress, &d.ingress),
    );
    // Each call is tried again on its own while EC2 does not know a new id everywhere
    // yet ("Eventual consistency in the Amazon EC2 API"); the four are independent.
    let not_yet = &["InvalidGroup.NotFound"];
    let revoke_out = async {
        if revoke_out.is_empty() {
            return Ok(());
        }
        wait::until_visible(not_yet, || {
            aws.ec2
                .revoke_security_group_egress()
                .group_id(id)
                .set_ip_permissions(Some(revoke_out.clone()))
                .send()
                .map(|r| r.map(drop).map_err(aws_error("revoke egress rules of", id)))
        })
        .await
    };
    let add_out = async {
        if add_out.is_empty() {
            return Ok(());
        }
        wait::until_visible(not_yet, || {
            aws.ec2
                .authorize_security_group_egress()
                .group_id(id)
                .set_ip_permissions(Some(add_out.clone()))
                .send()
                .map(|r| {
                    r.map(drop)
                        .map_err(aws_error("authorize egress rules of", id))
                })
        })
        .await
    };
    let revoke_in = async {
        if revoke_in.is_empty() {
            return Ok(());
        }
        wait::until_visible(not_yet, || {
            aws.ec2
                .revoke_security_group_ingress()
                .group_id(id)
                .set_ip_permissions(Some(revoke_in.clone()))
                .send()
                .map(|r| {
                    r.map(drop)
                        .map_err(aws_error("revoke ingress rules of", id))
                })
        })
        .await
    };
    let add_in = async {
        if add_in.is_empty() {
            return Ok(());
        }
        wait::until_visible(not_yet, || {
            aws.ec2
                .authorize_security_group_ingress()
                .group_id(id)
                .set_ip_permissions(Some(add_in.clone()))
                .send()
                .map(|r| {
                    r.map(drop)
                        .map_err(aws_error("authorize ingress rules of", id))
                })
        })
        .await
    };
    tokio::try_join!(
        Box::pin(revoke_out),
        Box::pin(add_out),
        Box::pin(revoke_in),
        Box::pin(add_in)
    )?;
    Ok(outputs.clone())
}

async fn tag(aws: &Aws, id: &str, t: &Tags) -> Result<()> {
    aws.ec2
        .create_tags()
        .resources(id)
        .set_tags(Some(tags(t)))
        .send()
        .await
        .map_err(aws_error("tag", id))?;
    Ok(())
}

/// How long a group is waited for while network interfaces still hold it: the ENI of a
/// Fargate task outlives the task by minutes (ours; above Terraform's 10-minute
/// default for `aws_security_group` deletes, terraform-provider-aws PR #3599).
const RELEASE_WAIT: Duration = Duration::from_mins(15);

/// Deletes the group, waiting (within `RELEASE_WAIT`) while network interfaces still
/// use it: EC2 refuses with `DependencyViolation` until they are gone (EC2 API
/// reference, DeleteSecurityGroup).
async fn delete(aws: &Aws, outputs: &Outputs) -> Result<()> {
    let Some(id) = outputs.id.as_deref() else {
        return Ok(());
    };
    let attempt = || async move {
        match aws.ec2.delete_security_group().group_id(id).send().await {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("InvalidGroup.NotFound") => Ok(()),
            Err(e) => Err(aws_error("delete security group", id)(e)),
        }
    };
    let holders = || async move { holders(aws, id).await };
    wait::while_refused(
        &format!("security group {id}"),
        wait::limit(RELEASE_WAIT),
        attempt,
        |e| e.aws_code() == Some("DependencyViolation"),
        holders,
        "wait until no task of the environment is running (a stopped task's interface goes within minutes), then run the same command again; `aws ec2 describe-network-interfaces --filters Name=group-id,Values=GROUP` shows what holds it",
    )
    .await
}

/// What still holds the group, for the wait message.
async fn holders(aws: &Aws, id: &str) -> String {
    let Ok(out) = aws
        .ec2
        .describe_network_interfaces()
        .filters(filter("group-id", id))
        .send()
        .await
    else {
        return "something still uses it".into();
    };
    let enis: Vec<String> = out
        .network_interfaces()
        .iter()
        .map(|n| {
            let eni = n.network_interface_id().unwrap_or("?");
            match n.description().filter(|d| !d.is_empty()) {
                Some(d) => format!("{eni} ({d})"),
                None => eni.to_owned(),
            }
        })
        .collect();
    match enis.len() {
        0 => "a dependent object EC2 has not released yet".into(),
        1 => format!(
            "network interface {} still uses it (a task's interface is released minutes after the task stops)",
            enis[0]
        ),
        n => format!(
            "{n} network interfaces still use it: {} (a task's interface is released minutes after the task stops)",
            enis.join(", ")
        ),
    }
}

/// This environment's groups of the tasks' name outside the configured VPC.
async fn extras(aws: &Aws, env: &Environment, stack: &Stack) -> Result<Vec<Extra>> {
    let Some(wanted) = stack.of_kind(Kind::SecurityGroup).next() else {
        return Ok(Vec::new());
    };
    let Spec::SecurityGroup(d) = &wanted.properties else {
        return Ok(Vec::new());
    };
    let mut ours = tagged(&env.tags());
    ours.push(filter("group-name", &wanted.name));
    Ok(groups(aws, ours, &wanted.name)
        .await?
        .iter()
        .filter(|g| g.vpc_id() != Some(d.vpc_id.as_str()))
        .map(|g| {
            let live = live(g);
            let mut resource = Resource::new(&wanted.name, live.spec.clone());
            resource.tags = env.tags();
            Extra {
                resource,
                note: format!(
                    "{} in {}: the tasks now run in {}",
                    g.group_id().unwrap_or("?"),
                    g.vpc_id().unwrap_or("?"),
                    d.vpc_id
                ),
                live,
            }
        })
        .collect())
}

impl Managed for SecurityGroup {
    const SERVICE: &'static str = "ec2";

    async fn read(&self, aws: &Aws, r: &Resource) -> Result<Option<Live>> {
        read(aws, r, self).await
    }

    async fn create(&self, aws: &Aws, r: &Resource) -> Result<Outputs> {
        create(aws, r, self).await
    }

    async fn update(
        &self,
        aws: &Aws,
        _r: &Resource,
        live: &Self,
        outputs: &Outputs,
        _changes: &[Change],
    ) -> Result<Outputs> {
        update(aws, self, live, outputs).await
    }

    async fn tag(&self, aws: &Aws, r: &Resource, outputs: &Outputs) -> Result<()> {
        let id = outputs
            .id
            .as_deref()
            .ok_or_else(|| Error::Internal("no group id".into()))?;
        tag(aws, id, &r.tags).await
    }

    async fn delete(&self, aws: &Aws, _r: &Resource, live: &Live, _o: Options) -> Result<Deleted> {
        delete(aws, &live.outputs).await?;
        Ok(Deleted::Yes)
    }

    /// A group's VPC and description are fixed at creation (EC2 has no call to change
    /// them).
    fn replaces(change: &Change) -> bool {
        change.path == "properties.vpc_id" || change.path == "properties.description"
    }

    /// A new group in the new VPC; the old one is an extra, deleted at the end. In the
    /// same VPC the name is taken, so a new description is left to a person.
    async fn replace(&self, aws: &Aws, r: &Resource, live: &Live) -> Result<Outputs> {
        let same_vpc = matches!(&live.spec, Spec::SecurityGroup(l) if l.vpc_id == self.vpc_id);
        if same_vpc {
            let id = live.outputs.id.as_deref().unwrap_or("?");
            return Err(Error::Refused(
                format!(
                    "security group {id} ({}) has another description, which cannot change in place",
                    r.name
                ),
                format!(
                    "delete it once no task uses it (`aws ec2 delete-security-group --group-id {id}`), then run `deployer up` again"
                ),
            ));
        }
        create(aws, r, self).await
    }

    fn normalize(&mut self) {
        self.ingress.sort();
        self.egress.sort();
    }

    async fn extras(aws: &Aws, env: &Environment, stack: &Stack) -> Result<Vec<Extra>> {
        extras(aws, env, stack).await
    }
}

fn tags(t: &Tags) -> Vec<Tag> {
    t.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

#[cfg(test)]
mod tests {
    use infra::resources::{Kind, SecurityGroupRule, Spec};

    use crate::resources::fixture::{judge, resource};

    fn group(spec: &mut Spec) -> &mut infra::resources::SecurityGroup {
        let Spec::SecurityGroup(g) = spec else {
            panic!("a security group")
        };
        g
    }

    #[test]
    fn another_vpc_or_description_replaces_the_group() {
        let r = resource(Kind::SecurityGroup);
        let (paths, replaced) = judge(&r, |s| group(s).vpc_id = "vpc-0old".into());
        assert_eq!(paths, ["properties.vpc_id"]);
        assert!(replaced);
        let (paths, replaced) = judge(&r, |s| group(s).description = "by hand".into());
        assert_eq!(paths, ["properties.description"]);
        assert!(replaced);
    }

    #[test]
    fn rules_change_in_place_and_their_order_is_no_change() {
        let r = resource(Kind::SecurityGroup);
        let extra = SecurityGroupRule {
            protocol: "-1".into(),
            from_port: -1,
            to_port: -1,
            cidr: "0.0.0.0/0".into(),
            description: String::new(),
        };
        let (paths, replaced) = judge(&r, |s| group(s).egress.insert(0, extra.clone()));
        assert_eq!(paths, ["properties.egress"]);
        assert!(!replaced);
        let mut two = r.clone();
        group(&mut two.properties).egress.push(extra);
        let (paths, _) = judge(&two, |s| group(s).egress.reverse());
        assert!(paths.is_empty(), "{paths:?}");
    }
}
