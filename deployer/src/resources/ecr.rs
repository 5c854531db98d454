//! ECR repository: scan-on-push, tag mutability, lifecycle policy, tags.

use aws_sdk_ecr::types::{
    ImageScanningConfiguration, ImageTagMutability, ImageTagMutabilityExclusionFilter,
    ImageTagMutabilityExclusionFilterType, Tag,
};
use infra::resources::{EcrRepository, Resource, Spec, Tags};

use super::Change;
use super::{Deleted, Live, Managed, Options, Outputs, arn_of, aws_error, code, tag_map};
use crate::aws::Aws;
use crate::error::{Error, Result};

pub async fn read(aws: &Aws, r: &Resource) -> Result<Option<Live>> {
    // One round trip where the stack knows the repository's ARN: the repository, its
    // lifecycle policy and its tags at once (a repository that is not there answers
    // not found to each).
    let lifecycle = async {
        match aws
            .ecr
            .get_lifecycle_policy()
            .repository_name(&r.name)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .lifecycle_policy_text()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(serde_json::Value::Null)),
            Err(e) if code(&e) == Some("LifecyclePolicyNotFoundException") => {
                Ok(serde_json::Value::Null)
            }
            Err(e) => Err(aws_error("read lifecycle policy of", r.id())(e)),
        }
    };
    let tags_of = |arn: String| async move {
        aws.ecr
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(aws_error("read tags of", r.id()))
    };
    let known = r.arn.clone();
    let (found, lifecycle, early_tags) = tokio::join!(
        aws.ecr
            .describe_repositories()
            .repository_names(&r.name)
            .send(),
        lifecycle,
        async {
            match &known {
                Some(arn) => Some(tags_of(arn.clone()).await),
                None => None,
            }
        },
    );
    let repo = match found {
        Ok(out) => match out.repositories().first() {
            Some(repo) => repo.clone(),
            None => return Ok(None),
        },
        Err(e) if code(&e) == Some("RepositoryNotFoundException") => return Ok(None),
        Err(e) => return Err(aws_error("read", r.id())(e)),
    };
    let arn = repo.repository_arn().unwrap_or_default().to_owned();
    let tags = match early_tags {
        Some(tags) if known.as_deref() == Some(arn.as_str()) => tags?,
        _ => tags_of(arn.clone()).await?,
    };
    let lifecycle = lifecycle?;
    Ok(Some(Live {
        spec: Spec::EcrRepository(EcrRepository {
            scan_on_push: repo
                .image_scanning_configuration()
                .is_some_and(ImageScanningConfiguration::scan_on_push),
            tag_mutability: repo
                .image_tag_mutability()
                .map_or("MUTABLE", ImageTagMutability::as_str)
                .to_owned(),
            mutable_tags: repo
                .image_tag_mutability_exclusion_filters()
                .iter()
                .map(|f| f.filter().to_owned())
                .collect(),
            lifecycle_policy: lifecycle,
        }),
        tags: Some(tag_map(tags.tags().iter().map(|t| (t.key(), t.value())))),
        outputs: Outputs {
            id: Some(r.name.clone()),
            arn: Some(arn),
        },
    }))
}

pub async fn create(aws: &Aws, r: &Resource, d: &EcrRepository) -> Result<Outputs> {
    let out = aws
        .ecr
        .create_repository()
        .repository_name(&r.name)
        .image_tag_mutability(ImageTagMutability::from(d.tag_mutability.as_str()))
        .set_image_tag_mutability_exclusion_filters(exclusions(d)?)
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(d.scan_on_push)
                .build(),
        )
        .set_tags(Some(tags(&r.tags)?))
        .send()
        .await
        .map_err(aws_error("create", r.id()))?;
    put_lifecycle(aws, r, d).await?;
    Ok(Outputs {
        id: Some(r.name.clone()),
        arn: out
            .repository()
            .and_then(|repo| repo.repository_arn())
            .map(str::to_owned),
    })
}

pub async fn update(
    aws: &Aws,
    r: &Resource,
    d: &EcrRepository,
    live: &EcrRepository,
    outputs: &Outputs,
) -> Result<Outputs> {
    if d.scan_on_push != live.scan_on_push {
        aws.ecr
            .put_image_scanning_configuration()
            .repository_name(&r.name)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(d.scan_on_push)
                    .build(),
            )
            .send()
            .await
            .map_err(aws_error("set scan-on-push of", r.id()))?;
    }
    if d.tag_mutability != live.tag_mutability || d.mutable_tags != live.mutable_tags {
        aws.ecr
            .put_image_tag_mutability()
            .repository_name(&r.name)
            .image_tag_mutability(ImageTagMutability::from(d.tag_mutability.as_str()))
            .set_image_tag_mutability_exclusion_filters(exclusions(d)?)
            .send()
            .await
            .map_err(aws_error("set tag mutability of", r.id()))?;
    }
    if d.lifecycle_policy != live.lifecycle_policy {
        put_lifecycle(aws, r, d).await?;
    }
    Ok(outputs.clone())
}

/// The tags that may move, as ECR's wildcard exclusion filters (none: `None`).
fn exclusions(d: &EcrRepository) -> Result<Option<Vec<ImageTagMutabilityExclusionFilter>>> {
    if d.mutable_tags.is_empty() {
        return Ok(None);
    }
    d.mutable_tags
        .iter()
        .map(|tag| {
            ImageTagMutabilityExclusionFilter::builder()
                .filter_type(ImageTagMutabilityExclusionFilterType::Wildcard)
                .filter(tag)
                .build()
                .map_err(|e| Error::Internal(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

async fn put_lifecycle(aws: &Aws, r: &Resource, d: &EcrRepository) -> Result<()> {
    aws.ecr
        .put_lifecycle_policy()
        .repository_name(&r.name)
        .lifecycle_policy_text(d.lifecycle_policy.to_string())
        .send()
        .await
        .map_err(aws_error("set lifecycle policy of", r.id()))?;
    Ok(())
}

pub async fn tag(aws: &Aws, arn: &str, t: &Tags) -> Result<()> {
    aws.ecr
        .tag_resource()
        .resource_arn(arn)
        .set_tags(Some(tags(t)?))
        .send()
        .await
        .map_err(aws_error("tag", arn))?;
    Ok(())
}

/// Keeps a repository that holds images unless told otherwise: they may be the only
/// copy of what runs in production.
pub async fn delete(aws: &Aws, name: &str, include_images: bool) -> Result<Deleted> {
    if !include_images {
        let images = aws
            .ecr
            .list_images()
            .repository_name(name)
            .max_results(1)
            .send()
            .await
            .map_err(aws_error("list images of", name))?;
        if !images.image_ids().is_empty() {
            return Ok(Deleted::Kept(
                "it holds images; --include-images deletes them too".into(),
            ));
        }
    }
    aws.ecr
        .delete_repository()
        .repository_name(name)
        .force(include_images)
        .send()
        .await
        .map_err(aws_error("delete", name))?;
    Ok(Deleted::Yes)
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

impl Managed for EcrRepository {
    const SERVICE: &'static str = "ecr";

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
        outputs: &Outputs,
        _changes: &[Change],
    ) -> Result<Outputs> {
        update(aws, r, self, live, outputs).await
    }

    async fn tag(&self, aws: &Aws, r: &Resource, outputs: &Outputs) -> Result<()> {
        tag(aws, arn_of(r, outputs)?, &r.tags).await
    }

    async fn delete(&self, aws: &Aws, r: &Resource, _live: &Live, o: Options) -> Result<Deleted> {
        delete(aws, &r.name, o.include_images).await
    }
}

#[cfg(test)]
mod tests {
    use infra::resources::{Kind, Spec};

    use crate::resources::fixture::{judge, resource};

    #[test]
    fn repository_settings_change_in_place() {
        let (paths, replaced) = judge(&resource(Kind::EcrRepository), |s| {
            let Spec::EcrRepository(e) = s else { panic!() };
            e.tag_mutability = "MUTABLE".into();
            e.lifecycle_policy = serde_json::Value::Null;
        });
        assert_eq!(
            paths,
            ["properties.lifecycle_policy", "properties.tag_mutability"]
        );
        assert!(!replaced);
    }
}
