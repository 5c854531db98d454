//! The image repository: immutable tags but the two `up` moves, and lifecycle rules that
//! keep the last images without ever expiring the deployed or the previous one.

use serde_json::json;

use super::{Builder, Made};
use crate::resources::{EcrRepository, Resource, Spec};

/// The tag `up` moves to the image it deploys, and the one it moves the old one to:
/// the lifecycle rule never expires either, so `rollback` always has its target.
pub const DEPLOYED_TAG: &str = "deployed";
pub const PREVIOUS_TAG: &str = "previous";
/// The tag a local registry's newest push carries (ECR's newest is found by push time).
pub const LATEST_TAG: &str = "deployer-latest";

pub fn image_repository(b: &mut Builder<'_>) -> Made {
    let r = &b.file().repository;
    let protect = |priority: u32, tag: &str| {
        json!({
            "rulePriority": priority,
            "description": format!("never expire the {tag} image"),
            "selection": {
                "tagStatus": "tagged",
                "tagPatternList": [tag],
                "countType": "imageCountMoreThan",
                "countNumber": 1,
            },
            "action": {"type": "expire"},
        })
    };
    let arn = b.arn("ecr", &format!("repository/{}", r.name));
    b.made(
        Resource::new(
            &r.name,
            Spec::EcrRepository(EcrRepository {
                scan_on_push: r.scan_on_push,
                // Immutable tags but the two `up` moves (ECR's IMMUTABLE_WITH_EXCLUSION,
                // July 2025; "ImageTagMutabilityExclusionFilter", ECR API reference).
                tag_mutability: if r.immutable_tags {
                    "IMMUTABLE_WITH_EXCLUSION"
                } else {
                    "MUTABLE"
                }
                .into(),
                mutable_tags: if r.immutable_tags {
                    vec![DEPLOYED_TAG.to_owned(), PREVIOUS_TAG.to_owned()]
                } else {
                    Vec::new()
                },
                // "An image that matches the tagging requirements of a higher priority
                // rule cannot be expired by a rule with a lower priority" (ECR user
                // guide, "Lifecycle policy evaluation rules"): the deployed and previous
                // images match rules 1 and 2, which never expire (one image holds a
                // tag), so rule 3 cannot expire them.
                lifecycle_policy: json!({"rules": [
                    protect(1, DEPLOYED_TAG),
                    protect(2, PREVIOUS_TAG),
                    {
                        "rulePriority": 3,
                        "description": format!("keep the last {} images", r.keep_last_images),
                        "selection": {
                            "tagStatus": "any",
                            "countType": "imageCountMoreThan",
                            "countNumber": r.keep_last_images,
                        },
                        "action": {"type": "expire"},
                    },
                ]}),
            }),
        ),
        arn,
        &[],
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constructs::testing::prod;

    #[test]
    fn the_deployed_and_previous_images_are_never_expired() {
        let (env, ctx) = prod();
        let mut b = Builder::new(&env, &ctx);
        let repo = image_repository(&mut b);
        assert!(
            repo.arn
                .ends_with(&format!("repository/{}", env.file.repository.name))
        );
        let Spec::EcrRepository(r) = &b.resources()[0].properties else {
            panic!("a repository");
        };
        let rules = r.lifecycle_policy["rules"].as_array().unwrap();
        assert_eq!(rules[0]["selection"]["tagPatternList"][0], DEPLOYED_TAG);
        assert_eq!(rules[1]["selection"]["tagPatternList"][0], PREVIOUS_TAG);
        assert_eq!(rules[2]["rulePriority"], 3);
    }
}
