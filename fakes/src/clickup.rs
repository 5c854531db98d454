//! A stand-in for ClickUp API v2: personal-token auth (`Authorization: pk_...`), tasks,
//! time entries (create, and list by date range and optionally task, wrapped in `data`,
//! the last 30 days without dates, not paged), and the per-token, per-minute rate limit
//! with `X-RateLimit-*` headers and 429s.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

const WINDOW: Duration = Duration::from_mins(1);

#[derive(Debug)]
pub struct ClickUp {
    pub team_id: String,
    token: String,
    tasks: Vec<String>,
    entries: Vec<Value>,
    /// Requests allowed per token per minute (100 on the Free to Business plans).
    pub limit: u32,
    /// How long one budget lasts: a minute, as ClickUp's; tests shorten it.
    pub window_length: Duration,
    window: (Instant, u32),
    next_id: u64,
    /// Every call, for tests: `(method, path, status)`.
    pub calls: Vec<(String, String, u16)>,
}

pub type Shared = Arc<Mutex<ClickUp>>;

impl ClickUp {
    pub fn new(team_id: &str, token: &str, tasks: Vec<String>) -> Self {
        Self {
            team_id: team_id.to_owned(),
            token: token.to_owned(),
            tasks,
            entries: Vec::new(),
            limit: 100,
            window_length: WINDOW,
            window: (Instant::now(), 0),
            next_id: 1,
            calls: Vec::new(),
        }
    }

    pub fn entries(&self) -> &[Value] {
        &self.entries
    }

    /// Counts a request against the window; the headers to send and whether it passes.
    fn admit(&mut self) -> (Vec<(HeaderName, HeaderValue)>, bool) {
        if self.window.0.elapsed() >= self.window_length {
            self.window = (Instant::now(), 0);
        }
        let allowed = self.window.1 < self.limit;
        if allowed {
            self.window.1 += 1;
        }
        let reset = SystemTime::now()
            .checked_add(self.window_length.saturating_sub(self.window.0.elapsed()))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let header = |name: &'static str, v: String| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_str(&v).expect("ascii"),
            )
        };
        (
            vec![
                header("x-ratelimit-limit", self.limit.to_string()),
                header(
                    "x-ratelimit-remaining",
                    (self.limit - self.window.1).to_string(),
                ),
                header("x-ratelimit-reset", reset.to_string()),
            ],
            allowed,
        )
    }
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route(
            "/clickup/api/v2/team/{team}/time_entries",
            get(list_entries).post(create_entry),
        )
        .route("/clickup/api/v2/task/{task}", get(task))
        .with_state(state)
}

/// Auth, then the token's rate limit, shared by every route: `Err` is the response.
fn gate(
    c: &mut ClickUp,
    headers: &HeaderMap,
    method: &str,
    path: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, Response> {
    let token = headers.get("authorization").and_then(|v| v.to_str().ok());
    if token != Some(c.token.as_str()) {
        c.calls.push((method.into(), path.into(), 401));
        return Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"err": "Token invalid", "ECODE": "OAUTH_017"})),
        )
            .into_response());
    }
    let (limits, allowed) = c.admit();
    if allowed {
        c.calls.push((method.into(), path.into(), 200));
        return Ok(limits);
    }
    c.calls.push((method.into(), path.into(), 429));
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({"err": "Rate limit reached", "ECODE": "APP_002"})),
    )
        .into_response();
    response.headers_mut().extend(limits);
    Err(response)
}

fn ok(limits: Vec<(HeaderName, HeaderValue)>, body: Value) -> Response {
    let mut response = Json(body).into_response();
    response.headers_mut().extend(limits);
    response
}

#[derive(Deserialize)]
struct NewEntry {
    start: Option<i64>,
    duration: Option<i64>,
    description: Option<String>,
    billable: Option<bool>,
    tid: Option<String>,
}

async fn create_entry(
    State(state): State<Shared>,
    Path(team): Path<String>,
    headers: HeaderMap,
    Json(body): Json<NewEntry>,
) -> Response {
    let mut c = state.lock().expect("clickup state");
    let limits = match gate(&mut c, &headers, "POST", "/time_entries") {
        Ok(l) => l,
        Err(r) => return r,
    };
    let invalid = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"err": why, "ECODE": "TIMEENTRY_001"})),
        )
            .into_response()
    };
    if team != c.team_id {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"err": "Team not authorized", "ECODE": "OAUTH_027"})),
        )
            .into_response();
    }
    let (Some(start), Some(duration)) = (body.start, body.duration) else {
        return invalid("start and duration are required");
    };
    if duration <= 0 {
        return invalid("duration must be positive");
    }
    if let Some(tid) = &body.tid
        && !c.tasks.contains(tid)
    {
        return invalid("Task not found");
    }
    let id = c.next_id.to_string();
    c.next_id += 1;
    let entry = json!({
        "id": id,
        "wid": team,
        "task": body.tid.as_ref().map(|t| json!({"id": t})),
        "start": start.to_string(),
        "end": (start + duration).to_string(),
        "duration": duration.to_string(),
        "description": body.description.unwrap_or_default(),
        "billable": body.billable.unwrap_or(false),
    });
    c.entries.push(entry.clone());
    ok(limits, json!({"data": entry}))
}

async fn list_entries(
    State(state): State<Shared>,
    Path(_team): Path<String>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let mut c = state.lock().expect("clickup state");
    let limits = match gate(&mut c, &headers, "GET", "/time_entries") {
        Ok(l) => l,
        Err(r) => return r,
    };
    let num = |k: &str| q.get(k).and_then(|v| v.parse::<i64>().ok());
    // Without dates, the last 30 days (ClickUp API v2, "Get time entries within a date
    // range"); the list is not paged.
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(i64::MAX);
    let (from, to) = match (num("start_date"), num("end_date")) {
        (None, None) => (Some(now - 30 * 86_400_000), Some(now)),
        dates => dates,
    };
    let data: Vec<Value> = c
        .entries
        .iter()
        .filter(|e| {
            q.get("task_id")
                .is_none_or(|t| e["task"]["id"] == t.as_str())
        })
        .filter(|e| {
            let start = e["start"]
                .as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(0);
            from.is_none_or(|f| start >= f) && to.is_none_or(|t| start <= t)
        })
        .cloned()
        .collect();
    ok(limits, json!({"data": data}))
}

async fn task(State(state): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let mut c = state.lock().expect("clickup state");
    let limits = match gate(&mut c, &headers, "GET", "/task") {
        Ok(l) => l,
        Err(r) => return r,
    };
    if c.tasks.contains(&id) {
        ok(
            limits,
            json!({"id": id, "name": format!("Robot minutes {id}")}),
        )
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"err": "Task not found", "ECODE": "ITEM_013"})),
        )
            .into_response()
    }
}
