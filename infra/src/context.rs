//! What the stack needs from the live account that no file can say: the account id,
//! exact secret ARNs, the subnets, the image to run. Offline, each is a clearly marked
//! placeholder, so `synth` works with no AWS access at all.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::env::Environment;

/// Placeholder text, `${...}` so it can never be mistaken for a real value.
pub const ACCOUNT: &str = "${account}";
pub const VPC: &str = "${default-vpc}";
pub const SUBNETS: &str = "${default-vpc-subnets}";
pub const IMAGE_DIGEST: &str = "${image-digest}";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Context {
    pub account: String,
    pub region: String,
    /// Secret name -> exact ARN (from DescribeSecret). A name missing here is granted
    /// as `name-??????`, which matches only that secret's ARN suffix.
    pub secret_arns: BTreeMap<String, String>,
    pub vpc_id: String,
    pub subnets: Vec<String>,
    /// `sha256:...` of the image to run.
    pub image_digest: String,
    /// A full `REGISTRY/REPOSITORY@sha256:...` given on the command line; it wins over
    /// the environment's repository and `image_digest`.
    pub image: Option<String>,
    /// Host (and port) of the registry the image lives in.
    pub registry_host: String,
    /// Values still unresolved, with how the deployer resolves them.
    pub placeholders: Vec<Placeholder>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placeholder {
    pub placeholder: &'static str,
    pub resolved_by: &'static str,
}

impl Context {
    /// The context `synth` uses with no AWS access: everything not in the file is a
    /// placeholder.
    pub fn offline(env: &Environment) -> Self {
        let f = &env.file;
        let mut placeholders = Vec::new();
        let account = f.account.clone().unwrap_or_else(|| {
            placeholders.push(Placeholder {
                placeholder: ACCOUNT,
                resolved_by: "STS GetCallerIdentity of the deploying identity",
            });
            ACCOUNT.to_owned()
        });
        let default_vpc = f.network.subnets.is_empty();
        placeholders.push(Placeholder {
            placeholder: VPC,
            resolved_by: if default_vpc {
                "EC2 DescribeVpcs (isDefault=true)"
            } else {
                "EC2 DescribeSubnets (the VPC of the configured subnets)"
            },
        });
        let subnets = if default_vpc {
            placeholders.push(Placeholder {
                placeholder: SUBNETS,
                resolved_by: "EC2 DescribeSubnets in the default VPC",
            });
            vec![SUBNETS.to_owned()]
        } else {
            f.network.subnets.clone()
        };
        let vpc_id = VPC.to_owned();
        placeholders.push(Placeholder {
            placeholder: IMAGE_DIGEST,
            resolved_by: "the newest image pushed with `deployer push-image`, or --image",
        });
        let region = f.region.clone();
        let registry_host = registry_host(env, &account);
        Self {
            account,
            region,
            secret_arns: BTreeMap::new(),
            vpc_id,
            subnets,
            image_digest: IMAGE_DIGEST.to_owned(),
            image: None,
            registry_host,
            placeholders,
        }
    }

    pub fn partition(&self) -> &'static str {
        partition(&self.region)
    }

    /// `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`; `region` is empty for global services.
    pub fn arn(&self, service: &str, regional: bool, resource: &str) -> String {
        let region = if regional { self.region.as_str() } else { "" };
        format!(
            "arn:{}:{service}:{region}:{}:{resource}",
            self.partition(),
            self.account
        )
    }

    /// The ARN to grant for a secret: exact when resolved, else `name-??????`.
    pub fn secret_arn(&self, name: &str) -> String {
        if name.starts_with("arn:") {
            return name.to_owned();
        }
        self.secret_arns
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.arn("secretsmanager", true, &format!("secret:{name}-??????")))
    }
}

/// The registry host of an environment for an account (ECR's, or the configured one).
pub fn registry_host(env: &Environment, account: &str) -> String {
    match &env.file.registry {
        crate::env::Registry::Ecr => {
            let region = &env.file.region;
            let suffix = if region.starts_with("cn-") {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            format!("{account}.dkr.ecr.{region}.{suffix}")
        }
        crate::env::Registry::Local { url } => url.clone(),
    }
}

pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}
