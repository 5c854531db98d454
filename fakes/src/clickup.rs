//! A stand-in for ClickUp API v2: personal-token auth (`Authorization: pk_...`), tasks,
//! time entries (create, and list by date range and optionally task, wrapped in `data`,
//! the last 30 days without dates, not paged), and the per-token, per-minute rate limit
//! with `X-RateLimit-*` headers and 429s.
//!
//! - Each token is a user's; an entry is its creator's. The list returns only the
//!   calling user's entries unless `assignee` names users (comma-separated ids), which
//!   only Workspace owners and admins may do for others (ClickUp API v2, "Get time
//!   entries within a date range": "By default, this endpoint returns time entries from
//!   the last 30 days created by the authenticated user"; the refusal's code for a
//!   member naming others is unverified, answered here as 401 OAUTH_023).
//! - A task in a Workspace the user is not in answers 401 "Team not authorized"
//!   (OAUTH_027; public reports, e.g. clickupython issue 63), on `GET /task` and on an
//!   entry for it; an unknown task 404 ITEM_013.

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
/// The id of the user whose token the seed holds.
pub const OWNER: u64 = 81_000_001;

#[derive(Debug)]
pub struct ClickUp {
    pub team_id: String,
    /// Token -> the user it is: `(user id, owner or admin)`.
    users: BTreeMap<String, (u64, bool)>,
    tasks: Vec<String>,
    /// Tasks in another Workspace, which no user here belongs to.
    pub foreign_tasks: Vec<String>,
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
            // The practice's token: the Workspace owner's.
            users: BTreeMap::from([(token.to_owned(), (OWNER, true))]),
            tasks,
            foreign_tasks: Vec::new(),
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

    /// Another member of the Workspace, with a token of their own.
    pub fn add_user(&mut self, token: &str, id: u64, admin: bool) {
        self.users.insert(token.to_owned(), (id, admin));
    }

    /// Every member's id.
    fn members(&self) -> Vec<u64> {
        self.users.values().map(|(id, _)| *id).collect()
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
        .route("/clickup/api/v2/team", get(teams))
        .with_state(state)
}

/// What a request passed the gate with: the rate-limit headers, and its user.
struct Gate {
    limits: Vec<(HeaderName, HeaderValue)>,
    user: (u64, bool),
}

/// Auth, then the token's rate limit, shared by every route: `Err` is the response.
fn gate(c: &mut ClickUp, headers: &HeaderMap, method: &str, path: &str) -> Result<Gate, Response> {
    let token = headers.get("authorization").and_then(|v| v.to_str().ok());
    let Some(user) = token.and_then(|t| c.users.get(t)).copied() else {
        c.calls.push((method.into(), path.into(), 401));
        return Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"err": "Token invalid", "ECODE": "OAUTH_017"})),
        )
            .into_response());
    };
    let (limits, allowed) = c.admit();
    if allowed {
        c.calls.push((method.into(), path.into(), 200));
        return Ok(Gate { limits, user });
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
    let Gate { limits, user } = match gate(&mut c, &headers, "POST", "/time_entries") {
        Ok(g) => g,
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
        return team_not_authorized();
    }
    let (Some(start), Some(duration)) = (body.start, body.duration) else {
        return invalid("start and duration are required");
    };
    if duration <= 0 {
        return invalid("duration must be positive");
    }
    if let Some(tid) = &body.tid {
        if c.foreign_tasks.contains(tid) {
            return team_not_authorized();
        }
        if !c.tasks.contains(tid) {
            return task_not_found();
        }
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
        "user": {"id": user.0},
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
    let Gate { limits, user } = match gate(&mut c, &headers, "GET", "/time_entries") {
        Ok(g) => g,
        Err(r) => return r,
    };
    // The caller's entries, unless `assignee` names users; naming others takes an owner
    // or admin.
    let users: Vec<u64> = match q.get("assignee") {
        None => vec![user.0],
        Some(list) => {
            let Ok(ids) = list
                .split(',')
                .map(|id| id.trim().parse::<u64>())
                .collect::<Result<Vec<u64>, _>>()
            else {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"err": "Assignee must be user ids", "ECODE": "TIMEENTRY_049"})),
                )
                    .into_response();
            };
            if !user.1 && ids.iter().any(|id| *id != user.0) {
                return team_not_authorized_as("OAUTH_023");
            }
            let members = c.members();
            ids.into_iter().filter(|id| members.contains(id)).collect()
        }
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
        .filter(|e| e["user"]["id"].as_u64().is_some_and(|u| users.contains(&u)))
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
        Ok(g) => g.limits,
        Err(r) => return r,
    };
    if c.foreign_tasks.contains(&id) {
        return team_not_authorized();
    }
    if c.tasks.contains(&id) {
        ok(
            limits,
            json!({"id": id, "name": format!("Robot minutes {id}")}),
        )
    } else {
        task_not_found()
    }
}

fn task_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"err": "Task not found", "ECODE": "ITEM_013"})),
    )
        .into_response()
}

fn team_not_authorized() -> Response {
    team_not_authorized_as("OAUTH_027")
}

fn team_not_authorized_as(code: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"err": "Team not authorized", "ECODE": code})),
    )
        .into_response()
}

/// `GET /team`: the Workspaces the token opens, with their members (role 1 owner, 2
/// admin, 3 member; ClickUp API v2, "Get Authorized Workspaces").
async fn teams(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let mut c = state.lock().expect("clickup state");
    let limits = match gate(&mut c, &headers, "GET", "/team") {
        Ok(g) => g.limits,
        Err(r) => return r,
    };
    let members: Vec<Value> = c
        .users
        .values()
        .map(|(id, admin)| {
            let role = match (*id == OWNER, admin) {
                (true, _) => 1,
                (false, true) => 2,
                (false, false) => 3,
            };
            json!({"user": {"id": id, "username": format!("user {id}"), "role": role}})
        })
        .collect();
    ok(
        limits,
        json!({"teams": [{"id": c.team_id, "name": "Practice", "members": members}]}),
    )
}
