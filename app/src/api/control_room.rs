//! Robocorp (Sema4.ai) Control Room API v1: a workspace (to check the key belongs to
//! the client's organization) and its process runs, following `next` while `has_more`.
//! Each workspace has its own key (`Authorization: RC-WSKEY KEY`). Runs are kept once
//! per id whatever the paging does (a run started while the list is read shifts it, so
//! one run can show on two pages), and a `next` that comes back again stops the
//! reading with an error rather than looping.

use std::collections::HashSet;
use std::time::Duration;

use jiff::Timestamp;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use super::limits::Limiter;
use super::{Api, ApiError};
use crate::secrets::Redacted;

const SERVICE: &str = "robocorp";
/// Runs asked for per page.
const PAGE: &str = "100";
/// Requests to Control Room at once (two per client at most, one per workspace key).
const IN_FLIGHT: usize = 128;
/// Pages read from one workspace at most: 100,000 runs.
const MAX_PAGES: usize = 1000;
/// How long before its start a run may have been made (queued, waiting for a worker).
const QUEUE_MARGIN: jiff::SignedDuration = jiff::SignedDuration::from_hours(7 * 24);

#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    pub id: String,
    /// When the run was made (queued); its start may come later. Only an order hint:
    /// a time that does not parse is taken as none.
    #[serde(default, deserialize_with = "lenient_time")]
    pub created_at: Option<Timestamp>,
    /// `new`, `in_progress`, `completed`, `unresolved` or `stopping`.
    pub state: String,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// Seconds; may be null.
    pub duration: Option<f64>,
}

fn lenient_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    Ok(text.and_then(|t| t.parse().ok()))
}

#[derive(Debug, Deserialize)]
struct RunsPage {
    next: Option<String>,
    #[serde(default)]
    has_more: bool,
    data: Vec<Run>,
}

#[derive(Debug)]
pub struct ControlRoom {
    api: Api,
    base: String,
}

impl ControlRoom {
    /// `settle` (see `Config::settle`) caps each request's one-minute timeout.
    pub fn new(base: &str, settle: Duration) -> Self {
        Self {
            // No documented limit: a bound of our own on requests at once (the
            // pause after a 429, with its Retry-After, holds every caller).
            api: Api::new(
                SERVICE,
                Duration::from_mins(1).min(settle),
                Limiter::new(Some(IN_FLIGHT), None),
            ),
            base: base.to_owned(),
        }
    }

    /// The organization id the workspace belongs to.
    pub async fn organization(&self, workspace: &str, key: &Redacted) -> Result<String, ApiError> {
        let url = format!("{}/workspaces/{workspace}", self.base);
        let v = self.get(&url, key).await?;
        Ok(v["organization"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// The process runs of the workspace that can have started at or after `since`,
    /// each once. The API has no date filter and documents no order (robocorp/robocorp
    /// `workspace/research/openapi.json`: `process_id`, `state`, `limit`), so the pages
    /// are read until the end, except while every run read so far came newest first:
    /// then reading stops after a page whose runs were all made more than
    /// [`QUEUE_MARGIN`] before `since` (a run is made before it starts, and does not
    /// wait in the queue that long). A workspace used for years is then read only as
    /// far back as the month needs.
    pub async fn runs(
        &self,
        workspace: &str,
        key: &Redacted,
        since: Timestamp,
    ) -> Result<Vec<Run>, ApiError> {
        let horizon = since - QUEUE_MARGIN;
        // The newest-first order holds so far, and the last time seen in it.
        let (mut newest_first, mut last): (bool, Option<Timestamp>) = (true, None);
        let mut url = format!(
            "{}/workspaces/{workspace}/process-runs?limit={PAGE}",
            self.base
        );
        let mut runs = Vec::new();
        let mut ids = HashSet::new();
        let mut pages = HashSet::from([url.clone()]);
        let mut repeated = 0;
        loop {
            let v = self.get(&url, key).await?;
            let page: RunsPage = serde_json::from_value(v).map_err(|e| {
                ApiError::new(
                    SERVICE,
                    Some(200),
                    format!("process runs of {workspace} have an unexpected shape: {e}"),
                )
            })?;
            let mut all_older = !page.data.is_empty();
            for run in page.data {
                // A run never started (queued) carries no time and sorts as newest.
                if let Some(t) = run.created_at.or(run.started_at) {
                    newest_first &= last.is_none_or(|l| t <= l);
                    last = Some(t);
                    all_older &= t < horizon;
                } else {
                    newest_first &= last.is_none();
                    all_older = false;
                }
                if ids.insert(run.id.clone()) {
                    runs.push(run);
                } else {
                    repeated += 1;
                }
            }
            if newest_first && all_older && page.has_more {
                tracing::info!(
                    event = "runs_read_back_to",
                    workspace,
                    pages = pages.len(),
                    oldest = %last.map(|t| t.to_string()).unwrap_or_default(),
                    "the runs come newest first and this page was made more than a week before the month: the rest is not read"
                );
                return Ok(runs);
            }
            match page.next {
                Some(next)
                    if page.has_more
                        && (!pages.insert(next.clone()) || pages.len() > MAX_PAGES) =>
                {
                    return Err(ApiError::new(
                        SERVICE,
                        Some(200),
                        if pages.len() > MAX_PAGES {
                            format!(
                                "workspace {workspace} lists more than {MAX_PAGES} pages of process runs and not newest first, so the month's runs cannot be told from older ones (Control Room's API has no date filter): the client is not billed; ask Sema4.ai support to archive the workspace's old runs, or move the robot to a new workspace and update robocorp_workspace_id"
                            )
                        } else {
                            format!(
                                "the process runs of {workspace} do not end: page {} names a next page already read, so its minutes cannot be counted; the client is not billed this run (rerun later)",
                                pages.len()
                            )
                        },
                    ));
                }
                // The key goes with every page: follow `next` only on the same service.
                Some(next) if page.has_more && same_origin(&next, &self.base) => url = next,
                Some(next) if page.has_more => {
                    return Err(ApiError::new(
                        SERVICE,
                        Some(200),
                        format!(
                            "the next page of {workspace} points at another host ({next}); not sending the key there"
                        ),
                    ));
                }
                _ => {
                    if repeated > 0 {
                        tracing::info!(
                            event = "runs_repeated",
                            workspace,
                            repeated,
                            "runs shown on two pages (the list moved while it was read) were counted once"
                        );
                    }
                    return Ok(runs);
                }
            }
        }
    }

    async fn get(&self, url: &str, key: &Redacted) -> Result<Value, ApiError> {
        let answer = self
            .api
            .call(
                |c| {
                    c.get(url)
                        .header("authorization", format!("RC-WSKEY {}", key.expose()))
                },
                error_of,
            )
            .await?;
        answer.json(SERVICE)
    }
}

/// Whether `url` is on the scheme, host and port of `base`.
fn same_origin(url: &str, base: &str) -> bool {
    match (reqwest::Url::parse(url), reqwest::Url::parse(base)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
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
        ..ApiError::new(SERVICE, Some(status.as_u16()), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_only_follows_next_pages_on_the_same_service() {
        let base = "https://cloud.robocorp.com/api/v1";
        assert!(same_origin(
            "https://cloud.robocorp.com/api/v1/workspaces/w/process-runs?cursor=2",
            base
        ));
        assert!(!same_origin(
            "https://evil.example/api/v1/workspaces/w/process-runs",
            base
        ));
        assert!(!same_origin("http://cloud.robocorp.com/api/v1/x", base));
        assert!(!same_origin("not a url", base));
    }
}
