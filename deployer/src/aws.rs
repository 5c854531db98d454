//! The AWS clients the deployer uses, all built from the one shared `SdkConfig` with
//! the call counter attached.

use aws_setup::{AwsOptions, CallCounter, SdkConfig, client};

/// One client per service; cheap to clone (clients share their connection pool).
#[derive(Debug, Clone)]
pub struct Aws {
    pub calls: CallCounter,
    pub sts: aws_sdk_sts::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub iam: aws_sdk_iam::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub scheduler: aws_sdk_scheduler::Client,
    pub sns: aws_sdk_sns::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

impl Aws {
    pub async fn connect(options: &AwsOptions) -> Self {
        // Boxed: loading the configuration is a large future (clippy::large_futures).
        Self::from_config(&Box::pin(aws_setup::load(options)).await)
    }

    pub fn from_config(config: &SdkConfig) -> Self {
        let calls = CallCounter::new();
        Self {
            sts: client!(aws_sdk_sts, config, &calls),
            ecr: client!(aws_sdk_ecr, config, &calls),
            ecs: client!(aws_sdk_ecs, config, &calls),
            iam: client!(aws_sdk_iam, config, &calls),
            ec2: client!(aws_sdk_ec2, config, &calls),
            logs: client!(aws_sdk_cloudwatchlogs, config, &calls),
            cloudwatch: client!(aws_sdk_cloudwatch, config, &calls),
            events: client!(aws_sdk_eventbridge, config, &calls),
            scheduler: client!(aws_sdk_scheduler, config, &calls),
            sns: client!(aws_sdk_sns, config, &calls),
            secrets: client!(aws_sdk_secretsmanager, config, &calls),
            dynamodb: client!(aws_sdk_dynamodb, config, &calls),
            calls,
        }
    }
}

/// Clients for the environment's region, from the standard credential chain.
pub async fn connect(cli: &crate::cli::Cli, env: &infra::Environment) -> Aws {
    Aws::connect(&AwsOptions {
        profile: cli.profile.clone(),
        region: Some(env.file.region.clone()),
        endpoint_url: None,
    })
    .await
}
