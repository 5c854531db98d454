//! Microsoft Graph: the client-credentials token from Entra ID, sendMail, and the
//! SharePoint site lookup and small-file upload (under 4 MB). Throttling is answered
//! with `Retry-After`, which the HTTP core honours.

use std::time::{Duration, Instant};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::sync::Mutex;

use super::limits::Limiter;
use super::{Api, ApiError};
use crate::secrets::{GraphSecret, Redacted};

const SERVICE: &str = "graph";
/// Path characters kept as they are: unreserved ones and `/`.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/')
    .remove(b'@');

#[derive(Debug)]
pub struct Graph {
    api: Api,
    base: String,
    token_url: String,
    secret: GraphSecret,
    token: Mutex<Option<(Redacted, Instant)>>,
}

impl Graph {
    /// `settle` (see `Config::settle`) caps each request's one-minute timeout.
    pub fn new(secret: &GraphSecret, base: &str, login: &str, settle: Duration) -> Self {
        Self {
            // Outlook allows 4 concurrent requests per mailbox.
            api: Api::new(
                SERVICE,
                Duration::from_mins(1).min(settle),
                Limiter::new(Some(4), None),
            ),
            base: base.to_owned(),
            token_url: format!("{login}/{}/oauth2/v2.0/token", secret.tenant_id),
            secret: secret.clone(),
            token: Mutex::new(None),
        }
    }

    /// Gets a token now (or keeps the one held), so that a failed sign-in shows before a
    /// write whose outcome would then be unclear.
    pub async fn sign_in(&self) -> Result<(), ApiError> {
        self.token().await.map(drop)
    }

    async fn token(&self) -> Result<Redacted, ApiError> {
        let mut token = self.token.lock().await;
        if let Some((t, expires)) = &*token
            && *expires > Instant::now() + Duration::from_mins(2)
        {
            return Ok(t.clone());
        }
        let answer = self
            .api
            .call(
                |c| {
                    c.post(&self.token_url).form(&[
                        ("client_id", self.secret.client_id.as_str()),
                        ("client_secret", self.secret.client_secret.expose()),
                        ("scope", "https://graph.microsoft.com/.default"),
                        ("grant_type", "client_credentials"),
                    ])
                },
                |status, _, body| {
                    let v: Value = serde_json::from_slice(body).unwrap_or_default();
                    let code = v["error"].as_str().unwrap_or("unknown").to_owned();
                    let detail = v["error_description"].as_str().unwrap_or_default();
                    ApiError {
                        code: Some(code.clone()),
                        fatal: true,
                        ..ApiError::new(
                            SERVICE,
                            Some(status.as_u16()),
                            format!(
                                "Entra ID refused the client credentials ({code}): {}",
                                detail.lines().next().unwrap_or_default()
                            ),
                        )
                    }
                },
            )
            .await?;
        let v = answer.json(SERVICE)?;
        let access = v["access_token"].as_str().ok_or_else(|| {
            ApiError::new(SERVICE, Some(200), "the token answer lacks access_token")
        })?;
        let t = Redacted::new(access);
        *token = Some((
            t.clone(),
            Instant::now() + Duration::from_secs(v["expires_in"].as_u64().unwrap_or(3599)),
        ));
        Ok(t)
    }

    /// `POST /users/{from}/sendMail`; Graph answers 202 with no body. sendMail has no
    /// idempotency key (graph docs, `user-sendmail.md`): a 429 or a refused connection
    /// is tried again, but no answer, a broken one or a 5xx comes back at once, since
    /// the message may have been accepted.
    pub async fn send_mail(&self, from: &str, message: &Value) -> Result<(), ApiError> {
        let token = self.token().await?;
        let url = format!(
            "{}/users/{}/sendMail",
            self.base,
            utf8_percent_encode(from, PATH)
        );
        let body = serde_json::json!({"message": message, "saveToSentItems": true});
        self.api
            .call_unsure(
                |c| c.post(&url).bearer_auth(token.expose()).json(&body),
                error_of,
            )
            .await?;
        Ok(())
    }

    /// The user (mailbox owner) `address`, read-only: `GET /users/{address}` with
    /// `$select=id,mail`. Needs User.ReadBasic.All or User.Read.All as an application
    /// permission (Microsoft Graph, "Get user", permissions); a 403 says only that the
    /// app may not look, not that the mailbox is missing.
    pub async fn user(&self, address: &str) -> Result<Value, ApiError> {
        let token = self.token().await?;
        let url = format!("{}/users/{}", self.base, utf8_percent_encode(address, PATH));
        let answer = self
            .api
            .call(
                |c| {
                    c.get(&url)
                        .bearer_auth(token.expose())
                        .query(&[("$select", "id,mail,userPrincipalName")])
                },
                error_of,
            )
            .await?;
        answer.json(SERVICE)
    }

    /// The site id of `https://{host}/{site_path}`.
    pub async fn site_id(&self, host: &str, site_path: &str) -> Result<String, ApiError> {
        let token = self.token().await?;
        let url = format!(
            "{}/sites/{host}:/{}",
            self.base,
            utf8_percent_encode(site_path.trim_matches('/'), PATH)
        );
        let answer = self
            .api
            .call(|c| c.get(&url).bearer_auth(token.expose()), error_of)
            .await?;
        let v = answer.json(SERVICE)?;
        v["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::new(SERVICE, Some(200), "the site answer lacks an id"))
    }

    /// Puts `bytes` at `path` in the site's default document library (replacing).
    pub async fn upload(&self, site_id: &str, path: &str, bytes: Vec<u8>) -> Result<(), ApiError> {
        let token = self.token().await?;
        let url = format!(
            "{}/sites/{site_id}/drive/root:/{}:/content",
            self.base,
            utf8_percent_encode(path, PATH)
        );
        self.api
            .call(
                |c| {
                    c.put(&url)
                        .bearer_auth(token.expose())
                        .header("content-type", "application/pdf")
                        .body(bytes.clone())
                },
                error_of,
            )
            .await?;
        Ok(())
    }
}

/// `{"error": {"code", "message"}}`.
fn error_of(status: StatusCode, _: &HeaderMap, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let message = v["error"]["message"]
        .as_str()
        .map_or_else(|| format!("answered {status}"), str::to_owned);
    ApiError {
        code: v["error"]["code"].as_str().map(str::to_owned),
        fatal: status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
        ..ApiError::new(SERVICE, Some(status.as_u16()), message)
    }
}
