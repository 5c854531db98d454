//! The ECS target of a schedule and of a classic rule: the same shape in the Scheduler
//! and EventBridge SDKs, on different types. The conversions are written once here and
//! stamped out for each SDK.

macro_rules! ecs_target_shapes {
    ($sdk:ident) => {
        use infra::resources::{EcsTarget, Input};
        use $sdk::types::{
            AssignPublicIp, AwsVpcConfiguration, EcsParameters, LaunchType, NetworkConfiguration,
            PropagateTags, RetryPolicy,
        };

        use crate::error::Result;
        use crate::resources::{built, overrides};

        /// The stack's shape of a live target.
        pub fn from_live(
            cluster_arn: &str,
            role_arn: &str,
            input: Option<&str>,
            ecs: Option<&EcsParameters>,
            retry: Option<&RetryPolicy>,
        ) -> EcsTarget {
            let vpc = ecs
                .and_then(EcsParameters::network_configuration)
                .and_then(NetworkConfiguration::awsvpc_configuration);
            let o = overrides(input);
            EcsTarget {
                cluster_arn: cluster_arn.to_owned(),
                role_arn: role_arn.to_owned(),
                task_definition: Input::Known(
                    ecs.map(EcsParameters::task_definition_arn)
                        .unwrap_or_default()
                        .to_owned(),
                ),
                launch_type: ecs
                    .and_then(EcsParameters::launch_type)
                    .map_or("", LaunchType::as_str)
                    .to_owned(),
                platform_version: ecs
                    .and_then(EcsParameters::platform_version)
                    .unwrap_or_default()
                    .to_owned(),
                subnets: vpc.map(|v| v.subnets().to_vec()).unwrap_or_default(),
                security_groups: vpc
                    .map(|v| {
                        v.security_groups()
                            .iter()
                            .cloned()
                            .map(Input::Known)
                            .collect()
                    })
                    .unwrap_or_default(),
                assign_public_ip: vpc.and_then(AwsVpcConfiguration::assign_public_ip)
                    == Some(&AssignPublicIp::Enabled),
                container: o.container,
                command: o.command,
                environment: o.environment,
                cpu: o.cpu,
                memory: o.memory,
                propagate_tags: ecs.and_then(EcsParameters::propagate_tags).is_some(),
                // Absent retry settings are AWS's defaults (185 attempts, 24 hours).
                retry_attempts: retry
                    .and_then(RetryPolicy::maximum_retry_attempts)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(185),
                max_event_age_seconds: retry
                    .and_then(RetryPolicy::maximum_event_age_in_seconds)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(86_400),
            }
        }

        /// The SDK's ECS parameters and retry policy for a target.
        pub fn to_sdk(t: &EcsTarget) -> Result<(EcsParameters, RetryPolicy)> {
            let vpc = built(
                AwsVpcConfiguration::builder()
                    .set_subnets(Some(t.subnets.clone()))
                    .set_security_groups(Some(
                        t.security_groups.iter().map(ToString::to_string).collect(),
                    ))
                    .assign_public_ip(if t.assign_public_ip {
                        AssignPublicIp::Enabled
                    } else {
                        AssignPublicIp::Disabled
                    })
                    .build(),
            )?;
            let mut ecs = EcsParameters::builder()
                .task_definition_arn(t.task_definition.to_string())
                .task_count(1)
                .launch_type(LaunchType::from(t.launch_type.as_str()))
                .platform_version(&t.platform_version)
                .network_configuration(
                    NetworkConfiguration::builder()
                        .awsvpc_configuration(vpc)
                        .build(),
                );
            if t.propagate_tags {
                ecs = ecs
                    .propagate_tags(PropagateTags::TaskDefinition)
                    .enable_ecs_managed_tags(true);
            }
            let retry = RetryPolicy::builder()
                .maximum_retry_attempts(i32::try_from(t.retry_attempts).unwrap_or(0))
                .maximum_event_age_in_seconds(i32::try_from(t.max_event_age_seconds).unwrap_or(60))
                .build();
            Ok((built(ecs.build())?, retry))
        }
    };
}

/// EventBridge Scheduler's types.
pub mod scheduler {
    ecs_target_shapes!(aws_sdk_scheduler);
}

/// Classic EventBridge rules' types.
pub mod events {
    ecs_target_shapes!(aws_sdk_eventbridge);
}
