//! Resolves the context the stack needs from the live account: who we are, the exact
//! secret ARNs, the network, and the image to run. Reads only.

use aws_sdk_ec2::types::Filter;
use infra::{Context, Environment};

use crate::aws::Aws;
use crate::error::{Error, Result};
use crate::image::registry::Target;
use crate::resources::{aws_error, code};

/// A non-fatal finding, shown before the plan.
pub type Warning = String;

/// `need_image`: whether having no image to run is an error (it is not for `destroy`).
pub async fn context(
    aws: &Aws,
    env: &Environment,
    image: Option<&str>,
    need_image: bool,
    local_registry: Option<&Target>,
) -> Result<(Context, Vec<Warning>)> {
    let mut ctx = Context::offline(env);
    ctx.placeholders.clear();
    let mut warnings = Vec::new();

    // Independent reads, at once: on a real network each is a round trip.
    let identity = async {
        aws.sts
            .get_caller_identity()
            .send()
            .await
            .map_err(aws_error("identify the caller of", "STS"))
    };
    let secrets = futures_util::future::join_all(
        env.file
            .secrets
            .entries()
            .into_iter()
            .filter(|(_, name)| !name.starts_with("arn:"))
            .map(|(key, name)| async move {
                (
                    key,
                    name,
                    aws.secrets.describe_secret().secret_id(name).send().await,
                )
            }),
    );
    let newest = async {
        match image {
            Some(_) => None,
            None => Some(newest_image(aws, env, local_registry).await),
        }
    };
    let (me, secrets, network, newest) = tokio::join!(identity, secrets, network(aws, env), newest);
    let me = me?;
    let actual = me.account().unwrap_or_default().to_owned();
    if let Some(expected) = &env.file.account
        && *expected != actual
    {
        return Err(Error::WrongAccount {
            env: env.path.display().to_string(),
            expected: expected.clone(),
            actual,
        });
    }
    ctx.account = actual;
    ctx.registry_host = match local_registry {
        Some(target) => target.host.clone(),
        None => infra::context::registry_host(env, &ctx.account),
    };

    for (key, name, found) in secrets {
        match found {
            Ok(out) => {
                if let Some(arn) = out.arn() {
                    ctx.secret_arns.insert(name.to_owned(), arn.to_owned());
                }
            }
            Err(e) if code(&e) == Some("ResourceNotFoundException") => warnings.push(format!(
                "secret {name} (secrets.{key}) does not exist yet: granting {name}-?????? until it does; the job fails until it is created"
            )),
            Err(e) => return Err(aws_error("describe secret", name)(e)),
        }
    }

    let (vpc, subnets) = network?;
    ctx.vpc_id = vpc;
    ctx.subnets = subnets;

    ctx.image_digest = match image {
        Some(reference) => {
            let (repo, digest) = reference.rsplit_once('@').ok_or_else(|| {
                Error::Prerequisite(
                    format!("--image {reference} is not pinned by digest"),
                    "pass REGISTRY/REPOSITORY@sha256:... (a tag can change under you)".into(),
                )
            })?;
            ctx.image = Some(format!("{repo}@{digest}"));
            digest.to_owned()
        }
        None => match newest.expect("looked up when no image is given") {
            Err(Error::Prerequisite(..)) if !need_image => ctx.image_digest.clone(),
            other => other?,
        },
    };
    Ok((ctx, warnings))
}

/// The configured subnets and their VPC, or the default VPC's default subnets.
async fn network(aws: &Aws, env: &Environment) -> Result<(String, Vec<String>)> {
    let configured = &env.file.network.subnets;
    if configured.is_empty() {
        // Only the default VPC has default subnets: one call finds both.
        let subnets = aws
            .ec2
            .describe_subnets()
            .filters(
                Filter::builder()
                    .name("default-for-az")
                    .values("true")
                    .build(),
            )
            .send()
            .await
            .map_err(aws_error("list the default subnets of", "the default VPC"))?;
        let vpc = subnets.subnets().iter().find_map(|s| s.vpc_id());
        let mut ids: Vec<String> = subnets
            .subnets()
            .iter()
            .filter(|s| s.vpc_id() == vpc)
            .filter_map(|s| s.subnet_id().map(str::to_owned))
            .collect();
        ids.sort();
        let Some(vpc) = vpc else {
            return Err(Error::Prerequisite(
                format!(
                    "region {} has no default VPC with default subnets",
                    env.file.region
                ),
                "list the subnets to run in under [network] subnets = [...] in the environment file".into(),
            ));
        };
        return Ok((vpc.to_owned(), ids));
    }
    let found = aws
        .ec2
        .describe_subnets()
        .set_subnet_ids(Some(configured.clone()))
        .send()
        .await
        .map_err(aws_error("find", "the configured subnets"))?;
    let vpcs: std::collections::BTreeSet<&str> =
        found.subnets().iter().filter_map(|s| s.vpc_id()).collect();
    match (vpcs.len(), vpcs.first()) {
        (1, Some(vpc)) => Ok(((*vpc).to_owned(), configured.clone())),
        _ => Err(Error::Prerequisite(
            format!("the subnets in network.subnets are in {} VPCs", vpcs.len()),
            "list subnets of one VPC".into(),
        )),
    }
}

/// Without --image: the newest image pushed (by push time in ECR; the tag push-image
/// moves in a local registry), else the one the deployed task definition runs.
async fn newest_image(aws: &Aws, env: &Environment, local: Option<&Target>) -> Result<String> {
    if let Some(target) = local
        && let Some(digest) = target.digest_of(infra::stack::LATEST_TAG).await?
    {
        return Ok(digest);
    }
    if env.file.registry == infra::env::Registry::Ecr {
        let mut newest: Option<(i64, String)> = None;
        let mut pages = aws
            .ecr
            .describe_images()
            .repository_name(&env.file.repository.name)
            .into_paginator()
            .items()
            .send();
        while let Some(image) = pages.next().await {
            let image = match image {
                Ok(image) => image,
                Err(e) if code(&e) == Some("RepositoryNotFoundException") => break,
                Err(e) => return Err(aws_error("list images of", &env.file.repository.name)(e)),
            };
            let pushed = image
                .image_pushed_at()
                .map_or(0, aws_smithy_types::DateTime::secs);
            if let Some(digest) = image.image_digest()
                && newest.as_ref().is_none_or(|(t, _)| pushed > *t)
            {
                newest = Some((pushed, digest.to_owned()));
            }
        }
        if let Some((pushed, digest)) = newest {
            // A rollback registers an older image after the newest push: keep it until
            // something newer than that revision is pushed.
            let deployed = aws
                .ecs
                .describe_task_definition()
                .task_definition(&env.file.task.family)
                .send()
                .await;
            // The revision just read names the deployed image: no second read.
            if let Ok(out) = deployed
                && let Some(td) = out.task_definition()
                && td.registered_at().is_some_and(|at| at.secs() >= pushed)
                && let Some(current) = td
                    .container_definitions()
                    .first()
                    .and_then(|c| c.image())
                    .and_then(|image| image.rsplit_once('@'))
            {
                return Ok(current.1.to_owned());
            }
            return Ok(digest);
        }
    }
    if let Some(digest) = crate::resources::ecs::deployed_digest(aws, &env.file.task.family).await?
    {
        return Ok(digest);
    }
    Err(Error::Prerequisite(
        format!(
            "no image of {} has been pushed yet",
            env.file.repository.name
        ),
        format!(
            "run `deployer push-image --env {}` first, or pass --image REGISTRY/REPOSITORY@sha256:...",
            env.name
        ),
    ))
}
