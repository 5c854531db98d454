//! The images a deploy depends on: the one `up` deploys must still be in the
//! repository, and `up` tags it `deployed` (moving the old one to `previous`) so the
//! repository's lifecycle rule never expires either.

use aws_sdk_ecr::types::ImageIdentifier;
use base64::Engine as _;
use infra::Environment;
use infra::Stack;
use infra::env::Registry;
use infra::resources::{Kind, Spec};
use infra::stack::{DEPLOYED_TAG, PREVIOUS_TAG};
use oci_client::secrets::RegistryAuth;

use crate::aws::Aws;
use crate::cli::Cli;
use crate::error::{Error, Result};
use crate::image::registry::Target;
use crate::resources::{aws_error, code};

/// Manifest types an image of ours (or a pinned base's) may have.
const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The digest the stack's task definition runs, when it is in the environment's own
/// repository, `host/repository` exactly (not an `--image` from another account,
/// region or registry that happens to share the repository's name).
pub fn own_digest(env: &Environment, stack: &Stack, host: &str) -> Option<String> {
    let image = stack
        .of_kind(Kind::TaskDefinition)
        .find_map(|r| match &r.properties {
            Spec::TaskDefinition(td) => Some(td.container.image.clone()),
            _ => None,
        })?;
    let (repo, digest) = image.rsplit_once('@')?;
    (repo == format!("{host}/{}", env.file.repository.name)).then(|| digest.to_owned())
}

/// The environment's registry host: the local registry (or `--registry`), else the
/// account's ECR.
pub fn registry_host(cli: &Cli, env: &Environment, account: &str) -> String {
    match &env.file.registry {
        Registry::Local { url } => cli.registry.clone().unwrap_or_else(|| url.clone()),
        Registry::Ecr => infra::context::registry_host(env, account),
    }
}

/// Whether the repository still holds an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    Held,
    Missing,
    /// A local registry that cannot be asked (not running): why.
    Unknown(String),
}

/// Looks for `digest` in the environment's repository.
pub async fn holding(cli: &Cli, aws: &Aws, env: &Environment, digest: &str) -> Result<Holding> {
    let held = match &env.file.registry {
        Registry::Local { .. } => {
            let target = target(cli, env).await?;
            match target.holds(digest).await {
                Ok(held) => held,
                Err(e) => return Ok(Holding::Unknown(e.to_string())),
            }
        }
        Registry::Ecr => {
            match aws
                .ecr
                .describe_images()
                .repository_name(&env.file.repository.name)
                .image_ids(ImageIdentifier::builder().image_digest(digest).build())
                .send()
                .await
            {
                Ok(out) => !out.image_details().is_empty(),
                Err(e)
                    if matches!(
                        code(&e),
                        Some("ImageNotFoundException" | "RepositoryNotFoundException")
                    ) =>
                {
                    false
                }
                Err(e) => {
                    return Err(aws_error("look for an image in", &env.file.repository.name)(e));
                }
            }
        }
    };
    Ok(if held {
        Holding::Held
    } else {
        Holding::Missing
    })
}

/// Refuses to deploy a digest the repository no longer holds (expired by its
/// lifecycle rule, or deleted): the tasks could not pull it.
pub async fn ensure_held(cli: &Cli, aws: &Aws, env: &Environment, digest: &str) -> Result<()> {
    let held = match holding(cli, aws, env, digest).await? {
        Holding::Held => true,
        Holding::Missing => false,
        // A local registry is a development stand-in: when it is not running, say so
        // and go on (moto-only runs deploy images no registry holds).
        Holding::Unknown(why) => {
            eprintln!("warning: cannot check that the local registry holds the image: {why}");
            return Ok(());
        }
    };
    if held {
        return Ok(());
    }
    Err(Error::Refused(
        format!(
            "the image {digest} is no longer in repository {} (expired by its lifecycle rule, or deleted): tasks could not pull it",
            env.file.repository.name
        ),
        format!(
            "push it again (`deployer push-image --env {0}`), or deploy one the repository holds (`deployer up --env {0} --image REGISTRY/REPOSITORY@sha256:...`)",
            env.name
        ),
    ))
}

/// Tags `digest` `deployed`, and the image that tag named before `previous`. `up`
/// calls it before it applies anything (and on a run with no changes, to repair it),
/// so the image the tasks are about to run is out of the lifecycle rule's reach before
/// they run it, and the one they ran stays for `rollback`. Returns what it did; `None`
/// when `digest` was already `deployed`.
pub async fn tag(cli: &Cli, aws: &Aws, env: &Environment, digest: &str) -> Result<Option<String>> {
    match &env.file.registry {
        // A local registry is a development stand-in: not running, it is a warning.
        Registry::Local { .. } => {
            let target = target(cli, env).await?;
            let moved_tags = async {
                let old = target.digest_of(DEPLOYED_TAG).await?;
                if old.as_deref() == Some(digest) {
                    return Ok(None);
                }
                if let Some(old) = &old {
                    target.retag(old, PREVIOUS_TAG).await?;
                }
                target.retag(digest, DEPLOYED_TAG).await?;
                Ok::<_, Error>(Some(moved(digest, old.as_deref())))
            };
            match moved_tags.await {
                Ok(done) => Ok(done),
                Err(e) => {
                    eprintln!("warning: cannot tag the deployed image in the local registry: {e}");
                    Ok(None)
                }
            }
        }
        Registry::Ecr => {
            let repo = &env.file.repository.name;
            let get = |id: ImageIdentifier| async move {
                aws.ecr
                    .batch_get_image()
                    .repository_name(repo)
                    .image_ids(id)
                    .set_accepted_media_types(Some(MANIFEST_TYPES.map(str::to_owned).to_vec()))
                    .send()
                    .await
                    .map_err(aws_error("read an image of", repo))
                    .map(|out| out.images().first().cloned())
            };
            let old = get(ImageIdentifier::builder().image_tag(DEPLOYED_TAG).build()).await?;
            let old_digest = old
                .as_ref()
                .and_then(|i| i.image_id())
                .and_then(|id| id.image_digest())
                .map(str::to_owned);
            if old_digest.as_deref() == Some(digest) {
                return Ok(None);
            }
            let new = get(ImageIdentifier::builder().image_digest(digest).build())
                .await?
                .ok_or_else(|| {
                    Error::Internal(format!("image {digest} vanished from {repo} during up"))
                })?;
            let put = |image: aws_sdk_ecr::types::Image, tag: &'static str| async move {
                let sent = aws
                    .ecr
                    .put_image()
                    .repository_name(repo)
                    .image_manifest(image.image_manifest().unwrap_or_default())
                    .set_image_manifest_media_type(
                        image.image_manifest_media_type().map(str::to_owned),
                    )
                    .image_tag(tag)
                    .send()
                    .await;
                match sent {
                    // The tag already names this image: nothing to move.
                    Err(e) if code(&e) == Some("ImageAlreadyExistsException") => Ok(()),
                    other => other.map(drop).map_err(aws_error("tag an image in", repo)),
                }
            };
            if let Some(old) = old {
                put(old, PREVIOUS_TAG).await?;
            }
            put(new, DEPLOYED_TAG).await?;
            Ok(Some(moved(digest, old_digest.as_deref())))
        }
    }
}

fn moved(digest: &str, old: Option<&str>) -> String {
    let short = |d: &str| d.chars().take(19).collect::<String>();
    match old {
        Some(old) => format!(
            "image {} tagged {DEPLOYED_TAG}, {} {PREVIOUS_TAG} (the lifecycle rule keeps both)",
            short(digest),
            short(old)
        ),
        None => format!(
            "image {} tagged {DEPLOYED_TAG} (the lifecycle rule keeps it)",
            short(digest)
        ),
    }
}

/// The environment's registry: a local one as configured (or `--registry`), else the
/// account's ECR, whose repository is created here if `up` has not made it yet.
pub async fn target(cli: &Cli, env: &infra::Environment) -> Result<Target> {
    let repository = env.file.repository.name.clone();
    if let Registry::Local { url } = &env.file.registry {
        return Ok(Target {
            host: cli.registry.clone().unwrap_or_else(|| url.clone()),
            repository,
            auth: RegistryAuth::Anonymous,
            insecure: true,
        });
    }
    let aws = crate::aws::connect(cli, env).await;
    let (ctx, _) = crate::resolve::context(&aws, env, None, false, None).await?;
    let stack = infra::synthesize(env, &ctx);
    if let Some(repo) = stack.of_kind(Kind::EcrRepository).next()
        && crate::resources::read(&aws, repo).await?.is_none()
    {
        crate::resources::create(&aws, repo).await?;
    }
    let token = aws
        .ecr
        .get_authorization_token()
        .send()
        .await
        .map_err(aws_error("get a registry token from", "ECR"))?;
    let data = token
        .authorization_data()
        .first()
        .and_then(|d| d.authorization_token())
        .unwrap_or_default();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    let (user, password) = decoded.split_once(':').unwrap_or(("AWS", ""));
    Ok(Target {
        host: ctx.registry_host,
        repository,
        auth: RegistryAuth::Basic(user.to_owned(), password.to_owned()),
        insecure: false,
    })
}
