//! EC2 security group: egress-only HTTPS, found by name in the VPC. A new group comes
//! with an allow-all egress rule, which is removed.

use aws_sdk_ec2::types::{Filter, IpPermission, IpRange, ResourceType, Tag, TagSpecification};
use infra::resources::{Resource, SecurityGroup, SecurityGroupRule, Spec, Tags};

use super::{Live, Outputs, aws_error, code, tag_map};
use crate::aws::Aws;
use crate::error::{Error, Result};

pub async fn read(aws: &Aws, name: &str, vpc: &str) -> Result<Option<Live>> {
    let out = aws
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("group-name").values(name).build())
        .filters(Filter::builder().name("vpc-id").values(vpc).build())
        .send()
        .await
        .map_err(aws_error("read security group", name))?;
    let Some(group) = out.security_groups().first() else {
        return Ok(None);
    };
    Ok(Some(Live {
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
    }))
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

pub async fn create(aws: &Aws, r: &Resource, d: &SecurityGroup) -> Result<Outputs> {
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
pub async fn update(
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
    if !revoke_out.is_empty() {
        aws.ec2
            .revoke_security_group_egress()
            .group_id(id)
            .set_ip_permissions(Some(revoke_out))
            .send()
            .await
            .map_err(aws_error("revoke egress rules of", id))?;
    }
    if !add_out.is_empty() {
        aws.ec2
            .authorize_security_group_egress()
            .group_id(id)
            .set_ip_permissions(Some(add_out))
            .send()
            .await
            .map_err(aws_error("authorize egress rules of", id))?;
    }
    if !revoke_in.is_empty() {
        aws.ec2
            .revoke_security_group_ingress()
            .group_id(id)
            .set_ip_permissions(Some(revoke_in))
            .send()
            .await
            .map_err(aws_error("revoke ingress rules of", id))?;
    }
    if !add_in.is_empty() {
        aws.ec2
            .authorize_security_group_ingress()
            .group_id(id)
            .set_ip_permissions(Some(add_in))
            .send()
            .await
            .map_err(aws_error("authorize ingress rules of", id))?;
    }
    Ok(outputs.clone())
}

pub async fn tag(aws: &Aws, id: &str, t: &Tags) -> Result<()> {
    aws.ec2
        .create_tags()
        .resources(id)
        .set_tags(Some(tags(t)))
        .send()
        .await
        .map_err(aws_error("tag", id))?;
    Ok(())
}

pub async fn delete(aws: &Aws, outputs: &Outputs) -> Result<()> {
    let Some(id) = outputs.id.as_deref() else {
        return Ok(());
    };
    match aws.ec2.delete_security_group().group_id(id).send().await {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("InvalidGroup.NotFound") => Ok(()),
        Err(e) => Err(aws_error("delete security group", id)(e)),
    }
}

fn tags(t: &Tags) -> Vec<Tag> {
    t.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}
