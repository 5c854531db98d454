//! The four secrets in Secrets Manager, parsed into typed values whose secret fields
//! never print, and the QBO refresh-token write-back (PutSecretValue with a
//! ClientRequestToken derived from the token, so a retried write is a no-op).

use std::collections::BTreeMap;
use std::fmt;

use aws_sdk_secretsmanager::Client;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A value that must never be printed or logged: `Debug` and `Display` show `***`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Redacted(String);

impl Redacted {
    pub fn new(v: impl Into<String>) -> Self {
        Self(v.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct QboSecret {
    pub client_id: String,
    pub client_secret: Redacted,
    pub refresh_token: Redacted,
    pub realm_id: String,
    #[serde(default = "production")]
    pub environment: QboEnvironment,
}

fn production() -> QboEnvironment {
    QboEnvironment::Production
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QboEnvironment {
    Production,
    Sandbox,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GraphSecret {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Redacted,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClickUpSecret {
    pub api_token: Redacted,
    pub team_id: String,
}

/// Workspace id -> that workspace's Control Room API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct RobocorpKeys(pub BTreeMap<String, Redacted>);

/// Reads secrets; the QBO one is kept whole so the write-back changes only its token.
#[derive(Debug, Clone)]
pub struct Secrets {
    client: Client,
}

impl Secrets {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The secret's JSON string, parsed as `T`. Errors name the secret and the field,
    /// never a value.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let raw = self.raw(name).await?;
        parse(name, raw.expose())
    }

    /// The QBO secret, and its whole JSON for the write-back.
    pub async fn qbo(&self, name: &str) -> Result<(QboSecret, Redacted)> {
        let raw = self.raw(name).await?;
        Ok((parse(name, raw.expose())?, raw))
    }

    async fn raw(&self, name: &str) -> Result<Redacted> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(name)
            .send()
            .await
            .map_err(|e| unreadable(name, &e))?;
        out.secret_string()
            .map(Redacted::new)
            .ok_or_else(|| Error::Secret {
                name: name.to_owned(),
                problem: "holds binary data, not a JSON string".into(),
                fix: shape_fix(name),
            })
    }

    /// Writes `refresh_token` into the QBO secret (other keys kept as they are). The
    /// request token is a hash of the refresh token: a retry of the same write is a
    /// no-op, and the value itself never leaves this function in the clear.
    pub async fn put_qbo_refresh_token(
        &self,
        name: &str,
        whole: &Redacted,
        refresh_token: &Redacted,
    ) -> Result<Redacted> {
        let mut value: Value = serde_json::from_str(whole.expose()).map_err(|_| Error::Secret {
            name: name.to_owned(),
            problem: "is not a JSON object".into(),
            fix: shape_fix(name),
        })?;
        value["refresh_token"] = Value::String(refresh_token.expose().to_owned());
        let updated = Redacted::new(value.to_string());
        let request_token = hex(&Sha256::digest(refresh_token.expose().as_bytes()));
        self.client
            .put_secret_value()
            .secret_id(name)
            .secret_string(updated.expose())
            .client_request_token(request_token)
            .send()
            .await
            .map_err(|e| {
                Error::aws(
                    format!("writing the rotated QBO refresh token to {name}"),
                    &e,
                )
            })?;
        Ok(updated)
    }
}

fn shape_fix(name: &str) -> String {
    format!("store a JSON object with the keys the README lists for {name}")
}

/// A secret that cannot be read is a configuration problem (exit 2) when AWS says why:
/// it does not exist, the role may not read it, its key cannot decrypt it, or it is
/// being deleted. Anything else (no answer, no credentials) is fatal (exit 3).
fn unreadable<E>(name: &str, e: &aws_sdk_secretsmanager::error::SdkError<E>) -> Error
where
    E: std::error::Error + aws_sdk_secretsmanager::error::ProvideErrorMetadata + 'static,
{
    let service = e.as_service_error();
    let (problem, fix) = match service.and_then(|s| s.code()) {
        Some("ResourceNotFoundException") => (
            "does not exist in this account and region".to_owned(),
            format!("create {name} (the README lists its keys), or set the job's *_SECRET_NAME variable to the secret's real name"),
        ),
        Some("AccessDeniedException") => (
            "cannot be read: access denied".to_owned(),
            format!("let the task role call secretsmanager:GetSecretValue on {name} (deployer up grants it for the secrets in the environment file)"),
        ),
        Some("DecryptionFailure") => (
            "cannot be decrypted with its KMS key".to_owned(),
            "let the task role use the secret's KMS key (kms:Decrypt), or store the secret with the AWS managed key".to_owned(),
        ),
        Some("InvalidRequestException") => (
            format!(
                "cannot be read now: {}",
                service.and_then(|s| s.message()).unwrap_or("the request was refused")
            ),
            format!("if {name} is scheduled for deletion, restore it (RestoreSecret)"),
        ),
        _ => return Error::aws(format!("reading secret {name}"), e),
    };
    Error::Secret {
        name: name.to_owned(),
        problem,
        fix,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn parse<T: DeserializeOwned>(name: &str, text: &str) -> Result<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde's messages for a wrong type quote the value; only these two are safe.
        let msg = inner.to_string();
        let problem = if msg.starts_with("missing field")
            || msg.starts_with("unknown variant") && !msg.contains('"')
        {
            msg.split(" at line").next().unwrap_or(&msg).to_owned()
        } else if inner.is_syntax() || inner.is_eof() {
            "is not valid JSON".to_owned()
        } else if path == "." {
            "has the wrong shape".to_owned()
        } else {
            format!("has a wrong value at `{path}`")
        };
        Error::Secret {
            name: name.to_owned(),
            problem,
            fix: shape_fix(name),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_never_print() {
        let s: QboSecret = parse(
            "QBO/10000",
            r#"{"client_id":"id","client_secret":"s3cr3t","refresh_token":"rt-XYZ","realm_id":"1","environment":"sandbox"}"#,
        )
        .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("rt-XYZ"),
            "{shown}"
        );
        assert_eq!(s.environment, QboEnvironment::Sandbox);
    }

    #[test]
    fn a_bad_secret_names_the_field_but_not_the_value() {
        let e = parse::<QboSecret>(
            "QBO/10000",
            r#"{"client_id":"id","client_secret":"s3cr3t"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("QBO/10000") && e.contains("missing field `refresh_token`"),
            "{e}"
        );
        let e = parse::<ClickUpSecret>("ClickUp/10000", r#"{"api_token":12345678,"team_id":"1"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("api_token") && !e.contains("12345678"), "{e}");
        let e = parse::<GraphSecret>("MsGraph/10000", "tenant=abc")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid JSON") && !e.contains("abc"), "{e}");
    }
}
