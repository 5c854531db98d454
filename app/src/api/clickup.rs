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

    /// Every entry starting in `[start_ms, end_ms]` across the whole Workspace, by any
    /// member, in one request (the API does not page this list: ClickUp API v2, "Get
    /// time entries within a date range"). Without `assignee` ClickUp returns only the
    /// token user's own entries, so an entry an earlier run made under another member's
    /// token would be missed and made again: the list names every member. Only owners
    /// and admins may name others; for a member's token the list falls back to its own
    /// entries, with a warning.
    pub async fn entries(&self, start_ms: i64, end_ms: i64) -> Result<Vec<Entry>, ApiError> {
        let members = self.members().await?;
        let everyone = members
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        match self.list_entries(start_ms, end_ms, Some(&everyone)).await {
            // How ClickUp refuses a member who names others is not documented: any
            // refusal but a rejected token (fatal) or the rate limit falls back.
            Err(e) if !e.fatal && e.status.is_some_and(|s| (400..500).contains(&s) && s != 429) => {
                tracing::warn!(
                    event = "clickup_entries_own_only",
                    error = %e,
                    "the ClickUp token's user is not a Workspace owner or admin, so only its own time entries can be read: an entry another member made for a client would not be seen; use an owner's or admin's token"
                );
                self.list_entries(start_ms, end_ms, None).await
            }
            listed => listed,
        }
        .map_err(team_level)
    }

    /// The ids of the Workspace's members (`GET /team`, the Workspaces the token opens).
    async fn members(&self) -> Result<Vec<u64>, ApiError> {
        let url = format!("{}/team", self.base);
        let answer = self
            .api
            .call(
                |c| c.get(&url).header("authorization", self.token.expose()),
                error_of,
            )
            .await
            .map_err(team_level)?;
        let v = answer.json(SERVICE)?;
        let team = v["teams"]
            .as_array()
            .and_then(|teams| teams.iter().find(|t| text(&t["id"]) == self.team))
            .ok_or_else(|| ApiError {
                fatal: true,
                ..ApiError::new(
                    SERVICE,
                    Some(200),
                    format!(
                        "the ClickUp token does not open Workspace {} (team_id)",
                        self.team
                    ),
                )
            })?;
        Ok(team["members"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["user"]["id"].as_u64()).collect())
            .unwrap_or_default())
    }

    async fn list_entries(
        &self,
        start_ms: i64,
        end_ms: i64,
        assignee: Option<&str>,
    ) -> Result<Vec<Entry>, ApiError> {
        let url = format!("{}/team/{}/time_entries", self.base, self.team);
        let (start, end) = (start_ms.to_string(), end_ms.to_string());
        let answer = self
            .api
            .call(
                |c| {
                    let mut query =
                        vec![("start_date", start.as_str()), ("end_date", end.as_str())];
                    if let Some(a) = assignee {
                        query.push(("assignee", a));
                    }
                    c.get(&url)
                        .header("authorization", self.token.expose())
                        .query(&query)
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
            Err(e) if e.status == Some(404) || team_not_authorized(e.code.as_deref()) => Ok(false),
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
                Err(e) if team_not_authorized(e.code.as_deref()) => {
                    return Err(ApiError {
                        message: format!(
                            "ClickUp refused task {task}: {} ({}); the task is in a Workspace the ClickUp token's user is not in: fix clickup_task_id in the client table, or add that user to the task's Workspace",
                            e.message,
                            e.code.as_deref().unwrap_or_default()
                        ),
                        ..e
                    });
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
    let code = v["ECODE"].as_str().map(str::to_owned);
    ApiError {
        // A bad token stops the run; a task in a Workspace the token's user is not in
        // (401 "Team not authorized") is that client's problem only. Team-level calls
        // make it fatal again (`team_level`).
        fatal: status == StatusCode::UNAUTHORIZED && !team_not_authorized(code.as_deref()),
        code,
        ..ApiError::new(SERVICE, Some(status.as_u16()), message)
    }
}

/// ClickUp's "Team not authorized" codes: OAUTH_023, OAUTH_026, OAUTH_027 and
/// OAUTH_029 to OAUTH_045 (developer.clickup.com, "Common errors"): the token is good,
/// the Workspace of what was asked is not the user's.
fn team_not_authorized(code: Option<&str>) -> bool {
    code.and_then(|c| c.strip_prefix("OAUTH_"))
        .and_then(|n| n.parse::<u16>().ok())
        .is_some_and(|n| matches!(n, 23 | 26 | 27 | 29..=45))
}

/// For a call on the Workspace itself, "Team not authorized" means the secret's
/// `team_id` is wrong: nothing can be done for any client.
fn team_level(e: ApiError) -> ApiError {
    if e.status == Some(401) {
        ApiError { fatal: true, ..e }
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_team_not_authorized_codes_spare_the_run() {
        for code in [
            "OAUTH_023",
            "OAUTH_026",
            "OAUTH_027",
            "OAUTH_029",
            "OAUTH_045",
        ] {
            let e = error_of(
                StatusCode::UNAUTHORIZED,
                &HeaderMap::new(),
                format!(r#"{{"err":"Team not authorized","ECODE":"{code}"}}"#).as_bytes(),
            );
            assert!(!e.fatal, "{code}");
            assert!(team_level(e).fatal, "{code} on the Workspace itself");
        }
        for code in [
            "OAUTH_017",
            "OAUTH_019",
            "OAUTH_025",
            "OAUTH_046",
            "OAUTH_028",
        ] {
            let e = error_of(
                StatusCode::UNAUTHORIZED,
                &HeaderMap::new(),
                format!(r#"{{"err":"Token invalid","ECODE":"{code}"}}"#).as_bytes(),
            );
            assert!(e.fatal, "{code}");
        }
    }
}
