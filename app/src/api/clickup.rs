//! ClickUp API v2: time entries (the period's, read once for the run; create on a
//! task). Personal-token auth; the per-token minute budget starts at the lowest plan's
//! 100 and follows the `X-RateLimit-*` headers ClickUp sends on every answer.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::limits::Limiter;
use super::{Api, ApiError};
use crate::secrets::{ClickUpSecret, Redacted};

const SERVICE: &str = "clickup";

#[derive(Debug)]
pub struct ClickUp {
    api: Api,
    base: String,
    team: String,
    token: Redacted,
}

/// What [`ClickUp::ensure_entry`] found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    Existing(Entry),
    Created(String),
}

/// One time entry, as far as the job reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    /// The task's id (empty for an entry on no task).
    pub task: String,
    pub description: String,
    pub duration_ms: i64,
}

impl ClickUp {
    /// `settle` (see `Config::settle`) caps each request's 30 s timeout; `share` runs
    /// use the token at once, and this one keeps to its part of the budget.
    pub fn new(secret: &ClickUpSecret, base: &str, settle: Duration, share: u32) -> Self {
        Self {
            api: Api::new(
                SERVICE,
                Duration::from_secs(30).min(settle),
                Limiter::new(None, Some(100)).shared_by(share),
            ),
            base: base.to_owned(),
            team: secret.team_id.clone(),
            token: secret.api_token.clone(),
        }
    }

    /// The entries of the token's user starting in `[start_ms, end_ms]`, across the
    /// whole Workspace, in one request (the API does not page this list: ClickUp API v2,
    /// "Get time entries within a date range").
    pub async fn entries(&self, start_ms: i64, end_ms: i64) -> Result<Vec<Entry>, ApiError> {
        let url = format!("{}/team/{}/time_entries", self.base, self.team);
        let (start, end) = (start_ms.to_string(), end_ms.to_string());
        let answer = self
            .api
            .call(
                |c| {
                    c.get(&url)
                        .header("authorization", self.token.expose())
                        .query(&[("start_date", &start), ("end_date", &end)])
                },
                error_of,
            )
            .await?;
        let v = answer.json(SERVICE)?;
        let Some(entries) = v["data"].as_array() else {
            // Taking a malformed answer as "no entries" would bill twice.
            return Err(ApiError::new(
                SERVICE,
                Some(200),
                "the time-entry list has no `data` array",
            ));
        };
        Ok(entries
            .iter()
            .map(|e| Entry {
                id: text(&e["id"]),
                task: text(&e["task"]["id"]),
                description: e["description"].as_str().unwrap_or_default().to_owned(),
                // Durations come as strings of milliseconds.
                duration_ms: text(&e["duration"]).parse().unwrap_or(0),
            })
            .collect())
    }

    /// Whether the token can see task `id`: `Ok(false)` when ClickUp answers 404 (no
    /// such task, or not in a Workspace the token's user belongs to). Read-only.
    pub async fn task_exists(&self, id: &str) -> Result<bool, ApiError> {
        let url = format!("{}/task/{id}", self.base);
        match self
            .api
            .call(
                |c| c.get(&url).header("authorization", self.token.expose()),
                error_of,
            )
            .await
        {
            Ok(_) => Ok(true),
            // An unknown task is a 404 (ITEM_013); one in a Workspace the token's user is
            // not in is a 401 "Team not authorized" (OAUTH_027; public reports, e.g.
            // clickupython issue 63): both mean "not this token's task".
            Err(e) if e.status == Some(404) || e.code.as_deref() == Some("OAUTH_027") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The entry `description` on `task`: the one in `known` (the period's entries, read
    /// once for the run), or a new billable one starting at `start_ms`. ClickUp has no
    /// idempotency key, so its entries are the ledger: whenever a create may have gone
    /// through without an answer, they are read again (and once more after `settle`,
    /// when ClickUp can no longer be working on it) before it is tried again.
    pub async fn ensure_entry(
        &self,
        known: &[Entry],
        task: &str,
        (start_ms, end_ms): (i64, i64),
        duration_ms: i64,
        description: &str,
        settle: Duration,
    ) -> Result<Ensured, ApiError> {
        let mine = |e: &Entry| e.description == description && e.task == task;
        if let Some(e) = known.iter().find(|e| mine(e)) {
            return Ok(Ensured::Existing(e.clone()));
        }
        let find = || async {
            let entries = self.entries(start_ms, end_ms).await?;
            Ok(entries.into_iter().find(|e| mine(e)))
        };
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            match self
                .create_entry(task, start_ms, duration_ms, description)
                .await
            {
                Ok(id) => return Ok(Ensured::Created(id)),
                Err(e) if e.is_ambiguous() && attempt < 3 => {
                    let what = format!("time entry {description:?}");
                    if let Some(e) = super::confirm(&e, &what, settle, find).await? {
                        return Ok(Ensured::Created(e.id));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn create_entry(
        &self,
        task: &str,
        start_ms: i64,
        duration_ms: i64,
        description: &str,
    ) -> Result<String, ApiError> {
        let url = format!("{}/team/{}/time_entries", self.base, self.team);
        let body = json!({
            "tid": task,
            "start": start_ms,
            "duration": duration_ms,
            "billable": true,
            "description": description,
        });
        let answer = self
            .api
            .call_unsure(
                |c| {
                    c.post(&url)
                        .header("authorization", self.token.expose())
                        .json(&body)
                },
                error_of,
            )
            .await?;
        let v = answer.json(SERVICE)?;
        // The spec shows a flat body; the service wraps it in `data`.
        let entry = if v["data"].is_object() {
            &v["data"]
        } else {
            &v
        };
        Ok(text(&entry["id"]))
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `{"err": "...", "ECODE": "..."}`.
fn error_of(status: StatusCode, _: &HeaderMap, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let message = v["err"]
        .as_str()
        .map_or_else(|| format!("answered {status}"), str::to_owned);
    ApiError {
        code: v["ECODE"].as_str().map(str::to_owned),
        fatal: status == StatusCode::UNAUTHORIZED,
        ..ApiError::new(SERVICE, Some(status.as_u16()), message)
    }
}
