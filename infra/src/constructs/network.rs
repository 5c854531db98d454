//! Where the tasks run: the cluster, and the tasks' security group (outbound HTTPS only).

use super::{Builder, Made};
use crate::resources::{EcsCluster, Resource, ResourceId, SecurityGroup, SecurityGroupRule, Spec};

pub fn cluster(b: &mut Builder<'_>) -> Made {
    let c = &b.file().cluster;
    let arn = b.arn("ecs", &format!("cluster/{}", c.name));
    b.made(
        Resource::new(
            &c.name,
            Spec::EcsCluster(EcsCluster {
                container_insights: c.container_insights,
            }),
        ),
        arn,
        &[],
        true,
    )
}

/// The tasks' security group: no ingress, HTTPS out to AWS and the SaaS APIs.
pub fn tasks_security_group(b: &mut Builder<'_>) -> ResourceId {
    let description = format!("{} ({}): outbound HTTPS only", b.app(), b.env.name);
    let vpc_id = b.ctx.vpc_id.clone();
    b.add(
        Resource::new(
            &b.file().network.security_group,
            Spec::SecurityGroup(SecurityGroup {
                description,
                vpc_id,
                ingress: Vec::new(),
                egress: vec![SecurityGroupRule {
                    protocol: "tcp".into(),
                    from_port: 443,
                    to_port: 443,
                    cidr: "0.0.0.0/0".into(),
                    description: "HTTPS to AWS and the SaaS APIs".into(),
                }],
            }),
        ),
        None,
        &[],
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constructs::testing::prod;

    #[test]
    fn the_tasks_group_lets_nothing_in_and_only_https_out() {
        let (env, ctx) = prod();
        let mut b = Builder::new(&env, &ctx);
        tasks_security_group(&mut b);
        let Spec::SecurityGroup(g) = &b.resources()[0].properties else {
            panic!("a group");
        };
        assert!(g.ingress.is_empty());
        assert_eq!(
            g.egress
                .iter()
                .map(|r| (r.from_port, r.to_port))
                .collect::<Vec<_>>(),
            [(443, 443)]
        );
    }
}
