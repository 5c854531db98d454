//! `deployer rollback`: run the previous image again (or the one given), through the
//! same plan and apply as `up`, so the task definition and the schedules move together.

use aws_sdk_ecs::types::{SortOrder, TaskDefinitionStatus};
use infra::env::Registry;

use crate::cli::{Cli, PlanArgs, RollbackArgs, UpArgs};
use crate::error::{Error, Result};
use crate::resources::{self, aws_error};

pub async fn run(cli: &Cli, args: &RollbackArgs) -> Result<()> {
    let env = super::shared::load_environment(cli, &args.env)?;
    let aws = super::shared::connect(cli, &env).await;
    let family = &env.file.task.family;
    let current = resources::ecs::deployed_image(&aws, family)
        .await?
        .ok_or_else(|| {
            Error::Prerequisite(
                format!(
                    "{} has no task definition deployed, so there is nothing to roll back",
                    env.name
                ),
                format!("deploy first: deployer up --env {}", env.name),
            )
        })?;
    let (repository, current_digest) = current.rsplit_once('@').ok_or_else(|| {
        Error::Internal(format!(
            "the deployed image {current} is not pinned by digest"
        ))
    })?;
    let digest = match &args.to {
        Some(to) => to.rsplit_once('@').map_or(to.as_str(), |(_, d)| d).to_owned(),
        None => previous_digest(&aws, family, current_digest).await?.ok_or_else(|| {
            Error::Prerequisite(
                format!("every revision of {family} runs {current_digest}: there is no earlier image"),
                "name one with --to sha256:...".into(),
            )
        })?,
    };
    if !digest.starts_with("sha256:") {
        return Err(Error::Prerequisite(
            format!("--to {digest} is not an image digest"),
            "pass sha256:... (as printed by push-image or status)".into(),
        ));
    }
    let image = format!("{repository}@{digest}");
    eprintln!(
        "Rolling {} back from {current_digest} to {digest}",
        env.name
    );
    // A local registry's `deployer-latest` follows, so the next plain `up` keeps this image.
    if matches!(env.file.registry, Registry::Local { .. }) {
        let target = crate::deployed::target(cli, &env).await?;
        target.retag(&digest, infra::stack::LATEST_TAG).await?;
    }
    let up = UpArgs {
        plan: PlanArgs {
            env: crate::cli::EnvArg {
                env: args.env.env.clone(),
            },
            image: Some(image),
            adopt: false,
            output: args.output,
        },
        yes: args.yes,
    };
    Box::pin(super::up::run(cli, &up)).await
}

/// The newest active revision of the family that runs another image than `current`.
async fn previous_digest(
    aws: &crate::aws::Aws,
    family: &str,
    current: &str,
) -> Result<Option<String>> {
    let revisions = aws
        .ecs
        .list_task_definitions()
        .family_prefix(family)
        .status(TaskDefinitionStatus::Active)
        .sort(SortOrder::Desc)
        .send()
        .await
        .map_err(aws_error("list revisions of task definition", family))?;
    for arn in revisions.task_definition_arns() {
        let td = aws
            .ecs
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await
            .map_err(aws_error("read", arn))?;
        let digest = td
            .task_definition()
            .and_then(|t| t.container_definitions().first())
            .and_then(|c| c.image())
            .and_then(|i| i.rsplit_once('@'))
            .map(|(_, d)| d.to_owned());
        if let Some(d) = digest
            && d != current
        {
            return Ok(Some(d));
        }
    }
    Ok(None)
}
