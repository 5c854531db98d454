//! A stand-in for Robocorp (Sema4.ai) Control Room API v1: workspace keys
//! (`Authorization: RC-WSKEY KEY`, one workspace each), the workspace resource, and
//! process runs paginated with `next`/`has_more` and an opaque cursor (no date filter,
//! as the real API: robocorp.com/api, "List process runs").
//!
//! Runs come newest first (the usual order of such lists; Control Room's own order is
//! unverified: its OpenAPI, robocorp/robocorp `workspace/research/openapi.json`, gives
//! only `process_id`, `state` and `limit`, no date filter and no order), so the job may
//! stop early only while the order it sees allows it: `oldest_first` serves the other
//! order. `history_runs` gives each workspace that many finished runs before its own,
//! one every six hours back, as a workspace used for years holds. The cursor is a position, so a run
//! started between two page requests shifts the list: the `paging_race` switch makes
//! that happen on every page. `repeat_next` answers the same `next` again and again.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The instant a run's time stands for, for ordering.
fn ts(t: &str) -> Option<jiff::Timestamp> {
    t.parse().ok()
}

/// One process run; `duration` is in seconds and may be null. An empty `id` gets one
/// from its workspace and position when the fake starts.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub id: String,
    pub state: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub duration: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub organization_id: String,
    /// The workspace's API key.
    pub key: String,
    pub runs: Vec<Run>,
}

/// Adversarial modes; `POST /_fakes/settings` `{"control_room": {...}}` sets them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// A new run (in progress, started now) appears at the head of a workspace's list
    /// after each page it serves.
    pub paging_race: bool,
    /// `next` names the page it was given on, forever.
    pub repeat_next: bool,
    /// Runs before each workspace's own, one every six hours going back.
    pub history_runs: usize,
    /// The list oldest first.
    pub oldest_first: bool,
}

/// One run as the list shows it.
fn listed(r: &Run) -> Value {
    json!({
        "id": r.id,
        "state": r.state,
        "created_at": r.started_at,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "duration": r.duration,
        "process": {"id": "p1", "name": "Billing robot"},
        "started_by": {"type": "schedule", "details": null},
    })
}

/// Run `k` (0 is the newest) of the history from `oldest` back.
fn history_run(ws: &str, oldest: jiff::Timestamp, k: usize) -> Run {
    let hours = i64::try_from(k).unwrap_or(i64::MAX / 6) * 6;
    let start = oldest
        .checked_sub(jiff::SignedDuration::from_hours(hours))
        .unwrap_or(oldest);
    let end = start
        .checked_add(jiff::SignedDuration::from_mins(5))
        .unwrap_or(start);
    Run {
        id: format!("{ws}-old-{k}"),
        state: "completed".into(),
        started_at: Some(start.to_string()),
        ended_at: Some(end.to_string()),
        duration: Some(300.0),
    }
}

#[derive(Debug, Default)]
pub struct ControlRoom {
    workspaces: Vec<Workspace>,
    pub settings: Settings,
    /// Runs started by `paging_race`, for their ids.
    started: u64,
    /// Largest page a request may ask for.
    page_limit: usize,
    /// Every call, for tests: `(workspace, path)`.
    pub calls: Vec<(String, String)>,
}

pub type Shared = Arc<Mutex<ControlRoom>>;

impl ControlRoom {
    pub fn new(mut workspaces: Vec<Workspace>) -> Self {
        for w in &mut workspaces {
            for (i, run) in w.runs.iter_mut().enumerate() {
                if run.id.is_empty() {
                    run.id = format!("{}-run-{i}", w.id);
                }
            }
            // Newest first; runs that never started sort as the newest.
            w.runs.sort_by_key(|r| {
                (
                    r.started_at.is_some(),
                    std::cmp::Reverse(r.started_at.as_deref().and_then(ts)),
                )
            });
        }
        Self {
            workspaces,
            page_limit: 100,
            ..Self::default()
        }
    }
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/robocorp/api/v1/workspaces/{ws}", get(workspace))
        .route(
            "/robocorp/api/v1/workspaces/{ws}/process-runs",
            get(process_runs),
        )
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The workspace, if the key in the request is its key.
fn authorized<'a>(
    cr: &'a ControlRoom,
    headers: &HeaderMap,
    ws: &str,
) -> Result<&'a Workspace, Response> {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("RC-WSKEY "));
    let Some(workspace) = cr.workspaces.iter().find(|w| w.id == ws) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "workspace not found",
        ));
    };
    if key != Some(workspace.key.as_str()) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid workspace key",
        ));
    }
    Ok(workspace)
}

async fn workspace(
    State(state): State<Shared>,
    Path(ws): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut cr = state.lock().expect("control room state");
    cr.calls.push((ws.clone(), "workspace".into()));
    match authorized(&cr, &headers, &ws) {
        Ok(w) => axum::Json(json!({
            "id": w.id,
            "name": w.name,
            "organization": {"id": w.organization_id, "name": format!("org {}", w.organization_id)},
        }))
        .into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    cursor: Option<usize>,
}

async fn process_runs(
    State(state): State<Shared>,
    Path(ws): Path<String>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Response {
    let mut cr = state.lock().expect("control room state");
    cr.calls.push((ws.clone(), "process-runs".into()));
    let limit = page.limit.unwrap_or(cr.page_limit).clamp(1, cr.page_limit);
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let w = match authorized(&cr, &headers, &ws) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let start = page.cursor.unwrap_or(0);
    let own = w.runs.len();
    let total = own + cr.settings.history_runs;
    // History ends 40 days before the workspace's oldest own run: never in the month
    // its own runs stand for.
    let oldest = w
        .runs
        .iter()
        .filter_map(|r| r.started_at.as_deref().and_then(ts))
        .min()
        .unwrap_or_else(jiff::Timestamp::now)
        .checked_sub(jiff::SignedDuration::from_hours(40 * 24))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    // Position `i` of the list, newest first.
    let at = |i: usize| -> Value {
        if i < own {
            listed(&w.runs[i])
        } else {
            listed(&history_run(&ws, oldest, i - own))
        }
    };
    let data: Vec<Value> = (start..total.min(start + limit))
        .map(|i| {
            if cr.settings.oldest_first {
                at(total - 1 - i)
            } else {
                at(i)
            }
        })
        .collect();
    let end = start + data.len();
    // Past the first page, a repeating `next` names the page it came with, forever.
    let (has_more, cursor) = if cr.settings.repeat_next && page.cursor.is_some() {
        (true, start)
    } else {
        (end < total, end)
    };
    let next = has_more.then(|| {
        format!(
            "http://{host}/robocorp/api/v1/workspaces/{ws}/process-runs?limit={limit}&cursor={cursor}"
        )
    });
    if cr.settings.paging_race && has_more {
        cr.started += 1;
        let id = format!("{ws}-run-new-{}", cr.started);
        let now = jiff::Timestamp::now().to_string();
        if let Some(w) = cr.workspaces.iter_mut().find(|w| w.id == ws) {
            w.runs.insert(
                0,
                Run {
                    id,
                    state: "in_progress".into(),
                    started_at: Some(now),
                    ended_at: None,
                    duration: None,
                },
            );
        }
    }
    axum::Json(json!({"next": next, "has_more": has_more, "data": data})).into_response()
}
