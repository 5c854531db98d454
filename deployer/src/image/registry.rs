//! Pushes an assembled image through the OCI distribution API (oci-client), skipping
//! blobs the registry already has; reads back which digest a tag names; pulls a pinned
//! base image.
//!
//! Pushes are shaped for ECR: each blob is uploaded in one request (ECR refuses upload
//! parts under 5 MiB except the last: "UploadLayerPart", Amazon ECR API reference, and
//! oci-client's chunked default uses 4 MiB parts), the manifest is stored by digest
//! before any tag, and a tag that already names another image in a repository with
//! immutable tags is reported, not fatal: the image itself is stored.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::layer::{Layer, sha256};
use super::{Image, MANIFEST_TYPE, Pinned};
use crate::error::{Error, Result};

/// Where an image goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// `HOST[:PORT]`.
    pub host: String,
    pub repository: String,
    pub auth: RegistryAuth,
    /// Plain HTTP (a local registry on loopback).
    pub insecure: bool,
}

/// What a push did with each blob.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// `(what, digest, bytes)` uploaded.
    pub uploaded: Vec<(String, String, usize)>,
    /// `(what, digest)` already in the registry.
    pub skipped: Vec<(String, String)>,
    /// Tags set (`tag`), or left as they were because they already named this image.
    pub tags: Vec<String>,
    /// Tags left naming another image (immutable), each as a sentence.
    pub warnings: Vec<String>,
}

impl Target {
    fn client(&self) -> Client {
        Client::new(ClientConfig {
            protocol: if self.insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            use_monolithic_push: true,
            ..ClientConfig::default()
        })
    }

    fn reference(&self, tag: &str) -> Reference {
        Reference::with_tag(self.host.clone(), self.repository.clone(), tag.to_owned())
    }

    /// `HOST/REPOSITORY@DIGEST`.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}/{}@{digest}", self.host, self.repository)
    }

    fn error(&self, action: &'static str, e: impl std::fmt::Display) -> Error {
        Error::Registry {
            action,
            target: format!("{}/{}", self.host, self.repository),
            message: e.to_string(),
        }
    }

    /// Uploads the blobs the registry lacks, then the manifest under each tag. A tag
    /// that already names another image is an error (ECR tags are immutable), except
    /// the `mutable` ones.
    pub async fn push(
        &self,
        image: &Image,
        tags: &[String],
        mutable: &[String],
        on_blob: &dyn Fn(&str, &str, usize, bool),
    ) -> Result<Report> {
        let client = self.client();
        let first = self.reference(tags.first().map_or("latest", String::as_str));
        client.store_auth_if_needed(&self.host, &self.auth).await;
        let mut report = Report::default();
        for (what, digest, data) in image.blobs() {
            let exists = client
                .blob_exists(&first, digest)
                .await
                .map_err(|e| self.error("check for a blob in", e))?;
            if exists {
                report.skipped.push((what.to_owned(), digest.to_owned()));
            } else {
                client
                    .push_blob(&first, data.to_vec(), digest)
                    .await
                    .map_err(|e| self.error("upload a blob to", e))?;
                report
                    .uploaded
                    .push((what.to_owned(), digest.to_owned(), data.len()));
            }
            on_blob(what, digest, data.len(), !exists);
        }
        // By digest first: the image is stored whatever happens to its tags.
        let by_digest = Reference::with_digest(
            self.host.clone(),
            self.repository.clone(),
            image.digest.clone(),
        );
        client
            .push_manifest_raw(
                &by_digest,
                image.manifest.clone(),
                http::HeaderValue::from_static(MANIFEST_TYPE),
            )
            .await
            .map_err(|e| self.error("push the manifest to", e))?;
        for tag in tags {
            let reference = self.reference(tag);
            let clash = |existing: &str| {
                format!(
                    "tag {tag} already names {existing} and tags here are immutable: left as is (this image is stored, by digest)"
                )
            };
            match client.fetch_manifest_digest(&reference, &self.auth).await {
                Ok(existing) if existing == image.digest => {
                    report.tags.push(tag.clone());
                    continue;
                }
                Ok(existing) if !mutable.contains(tag) => {
                    report.warnings.push(clash(&existing));
                    continue;
                }
                _ => {}
            }
            match client
                .push_manifest_raw(
                    &reference,
                    image.manifest.clone(),
                    http::HeaderValue::from_static(MANIFEST_TYPE),
                )
                .await
            {
                Ok(_) => report.tags.push(tag.clone()),
                // Set by another push since the check: ECR answers TAG_INVALID (its
                // ImageTagAlreadyExistsException; the message's wording has changed).
                Err(e) if e.to_string().contains("TAG_INVALID") => {
                    report.warnings.push(clash("another image"));
                }
                Err(e) => return Err(self.error("tag an image in", e)),
            }
        }
        Ok(report)
    }

    /// Whether the registry holds the image with `digest`.
    pub async fn holds(&self, digest: &str) -> Result<bool> {
        let client = self.client();
        let by_digest = Reference::with_digest(
            self.host.clone(),
            self.repository.clone(),
            digest.to_owned(),
        );
        match client.fetch_manifest_digest(&by_digest, &self.auth).await {
            Ok(_) => Ok(true),
            Err(e) if is_unknown(&e) => Ok(false),
            Err(e) => Err(self.error("look for an image in", e)),
        }
    }

    /// The digest `tag` names, if the tag exists.
    pub async fn digest_of(&self, tag: &str) -> Result<Option<String>> {
        let client = self.client();
        match client
            .fetch_manifest_digest(&self.reference(tag), &self.auth)
            .await
        {
            Ok(digest) => Ok(Some(digest)),
            Err(e) if is_unknown(&e) => Ok(None),
            Err(e) => Err(self.error("read a tag in", e)),
        }
    }
}

/// The registry says the tag or repository does not exist (404, `MANIFEST_UNKNOWN`,
/// `NAME_UNKNOWN`).
fn is_unknown(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::OciDistributionError as E;
    if matches!(e, E::ImageManifestNotFoundError(_)) {
        return true;
    }
    let text = e.to_string().to_ascii_lowercase();
    ["manifest unknown", "name unknown", "404", "not found"]
        .iter()
        .any(|m| text.contains(m))
}

impl Target {
    /// Points `tag` at the image with `digest`, which the registry already holds.
    pub async fn retag(&self, digest: &str, tag: &str) -> Result<()> {
        let client = self.client();
        let by_digest = Reference::with_digest(
            self.host.clone(),
            self.repository.clone(),
            digest.to_owned(),
        );
        let (manifest, _) = client
            .pull_manifest_raw(&by_digest, &self.auth, &[MANIFEST_TYPE])
            .await
            .map_err(|e| self.error("read a manifest from", e))?;
        client
            .push_manifest_raw(
                &self.reference(tag),
                manifest,
                http::HeaderValue::from_static(MANIFEST_TYPE),
            )
            .await
            .map_err(|e| self.error("tag an image in", e))?;
        Ok(())
    }
}

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: [&str; 4] = [
    MANIFEST_TYPE,
    "application/vnd.docker.distribution.manifest.v2+json",
    INDEX_TYPES[0],
    INDEX_TYPES[1],
];

/// Pulls `reference` (`REGISTRY/REPO@sha256:...`, an image or a multi-platform index)
/// for `architecture`, checking every digest. Plain HTTP for the hosts in `insecure`.
pub async fn pull_base(
    reference: &str,
    architecture: &str,
    insecure: &[String],
    auth: &RegistryAuth,
) -> Result<Pinned> {
    let fail = |action: &str, e: &dyn std::fmt::Display| {
        Error::Prerequisite(
            format!("cannot {action} the base image {reference}: {e}"),
            "check the reference and that this machine can reach its registry".into(),
        )
    };
    let parsed: Reference = reference.parse().map_err(|e| fail("parse", &e))?;
    let Some(pinned) = parsed.digest().map(str::to_owned) else {
        return Err(Error::Prerequisite(
            format!("the base image {reference} is not pinned by digest"),
            "give it as REGISTRY/REPO@sha256:... (`crane digest IMAGE` or `docker buildx imagetools inspect IMAGE` prints the digest)".into(),
        ));
    };
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(insecure.to_vec()),
        ..ClientConfig::default()
    });
    let by_digest = |digest: &str| {
        Reference::with_digest(
            parsed.registry().to_owned(),
            parsed.repository().to_owned(),
            digest.to_owned(),
        )
    };
    let manifest = |digest: String| {
        let client = &client;
        let by_digest = &by_digest;
        async move {
            let (bytes, _) = client
                .pull_manifest_raw(&by_digest(&digest), auth, &MANIFEST_TYPES)
                .await
                .map_err(|e| fail("pull", &e))?;
            if sha256(&bytes) != digest {
                return Err(fail("verify", &format!("its manifest is not {digest}")));
            }
            serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| fail("read", &e))
        }
    };
    let mut digest = pinned.clone();
    let mut doc = manifest(digest.clone()).await?;
    if doc["manifests"].is_array() {
        let entry = doc["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| {
                m["platform"]["os"] == "linux" && m["platform"]["architecture"] == architecture
            })
            .ok_or_else(|| fail("use", &format!("it has no linux/{architecture} image")))?;
        digest = entry["digest"].as_str().unwrap_or_default().to_owned();
        doc = manifest(digest.clone()).await?;
    }
    let blob = |digest: String| {
        let client = &client;
        let parsed = &parsed;
        async move {
            let mut data = Vec::new();
            client
                .pull_blob(parsed, digest.as_str(), &mut data)
                .await
                .map_err(|e| fail("pull a layer of", &e))?;
            if sha256(&data) != digest {
                return Err(fail("verify", &format!("a blob is not {digest}")));
            }
            Ok::<_, Error>(data)
        }
    };
    let config_digest = doc["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let config: serde_json::Value = serde_json::from_slice(&blob(config_digest).await?)
        .map_err(|e| fail("read the config of", &e))?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let descriptors = doc["layers"].as_array().cloned().unwrap_or_default();
    if diff_ids.len() != descriptors.len() {
        return Err(fail(
            "use",
            &"its config and manifest list different layers",
        ));
    }
    let mut layers = Vec::new();
    for (descriptor, diff_id) in descriptors.iter().zip(&diff_ids) {
        let digest = descriptor["digest"].as_str().unwrap_or_default().to_owned();
        layers.push(Layer {
            blob: blob(digest.clone()).await?,
            digest,
            diff_id: diff_id.as_str().unwrap_or_default().to_owned(),
            media_type: descriptor["mediaType"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        });
    }
    Ok(Pinned {
        reference: reference.to_owned(),
        digest,
        layers,
        config,
    })
}
