//! Pushes an assembled image through the OCI distribution API (oci-client), skipping
//! blobs the registry already has; reads back which digest a tag names.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::{Image, MANIFEST_TYPE};
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
}

impl Target {
    fn client(&self) -> Client {
        Client::new(ClientConfig {
            protocol: if self.insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
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
        for tag in tags {
            let reference = self.reference(tag);
            match client.fetch_manifest_digest(&reference, &self.auth).await {
                Ok(existing) if existing == image.digest => {
                    report.tags.push(tag.clone());
                    continue;
                }
                Ok(existing) if !mutable.contains(tag) => {
                    return Err(self.error(
                        "tag an image in",
                        format!("tag {tag} already names {existing}; tags here are immutable"),
                    ));
                }
                _ => {}
            }
            client
                .push_manifest_raw(
                    &reference,
                    image.manifest.clone(),
                    http::HeaderValue::from_static(MANIFEST_TYPE),
                )
                .await
                .map_err(|e| self.error("push the manifest to", e))?;
            report.tags.push(tag.clone());
        }
        Ok(report)
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
