//! What every fake shares, as one axum middleware: per-service latency, in-flight,
//! per-second, per-minute and batch-per-minute limits answered with the service's own
//! 429, the service's own request timeout, fault injection (fail or hang a given call, a
//! client's calls, or a fraction of them; lose the answer of a call that did its work; or
//! answer at once and do the work later) and the statistics tests and benches read back
//! (calls, most in flight, most in any second and minute, every call's status).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

/// The services, told apart by the path prefix the server mounts them under.
pub const SERVICES: [&str; 6] = ["qbo-oauth", "qbo", "clickup", "login", "graph", "robocorp"];

/// The service a request path belongs to.
pub fn service_of(path: &str) -> &'static str {
    if path.starts_with("/qbo/oauth2") {
        "qbo-oauth"
    } else if path.starts_with("/qbo/") {
        "qbo"
    } else if path.starts_with("/clickup/") {
        "clickup"
    } else if path.starts_with("/login/") {
        "login"
    } else if path.starts_with("/graph/") {
        "graph"
    } else {
        "robocorp"
    }
}

/// One service's limits. ClickUp's per-minute limit is enforced by the ClickUp fake
/// itself, which also sends the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Added before every answer.
    pub latency_ms: u64,
    /// More requests than this at once get 429.
    pub max_in_flight: Option<u32>,
    /// More requests than this in any 1 s get 429.
    pub per_second: Option<u32>,
    /// More requests than this in any 60 s get 429.
    pub per_minute: Option<u32>,
    /// More batch requests (paths ending in `/batch`) than this in any 60 s get 429.
    pub batch_per_minute: Option<u32>,
    /// The service abandons a request it has not finished after this long: a call a
    /// fault holds before its work (`hang_before`, `late_run`) never takes effect later.
    pub request_timeout_ms: Option<u64>,
}

impl Limits {
    /// QBO's documented limits per realm and app (Intuit, "API call limits and
    /// throttles"): 10 in flight, 10 per second, 500 per minute, 40 batch requests per
    /// minute; requests time out after 120 s.
    pub const QBO: Self = Self {
        latency_ms: 0,
        max_in_flight: Some(10),
        per_second: Some(10),
        per_minute: Some(500),
        batch_per_minute: Some(40),
        request_timeout_ms: Some(120_000),
    };

    /// The limits every service has unless a test or the fakes' flags say otherwise:
    /// QBO's documented ones (the rest have no documented limit the fakes enforce here;
    /// ClickUp's per-token minute is the ClickUp fake's own, 100 by default).
    pub fn documented() -> BTreeMap<String, Self> {
        BTreeMap::from([("qbo".to_owned(), Self::QBO)])
    }
}

/// Which calls a fault hits: those of `service` whose method and path, or body,
/// contain `matching`; of those, the `nth` (1-based) and the `times - 1` after it, or
/// a deterministic `fraction` of them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub service: String,
    #[serde(default)]
    pub matching: Option<String>,
    #[serde(default = "one")]
    pub nth: u64,
    #[serde(default = "one")]
    pub times: u64,
    #[serde(default)]
    pub fraction: Option<f64>,
    pub action: Action,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Answer with this status (and the service's error body) without running the call.
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Run the call (its effect happens), then never answer: the moment a crash hurts
    /// most. Released when the server stops.
    HangAfter,
    /// Run the call (its effect happens), then answer this status as if it failed: a
    /// lost answer, which a blind retry would repeat.
    StatusAfter { status: u16 },
    /// Hold the call without running it, and never answer (a request lost on the way
    /// in, or stuck before the service acted). Released when the server stops.
    HangBefore,
    /// Answer this status at once (a gateway giving up), and run the call `after_ms`
    /// later, unless that is past the service's request timeout: the effect lands after
    /// the caller has been told it failed, as when a proxy times out before the backend.
    LateRun { status: u16, after_ms: u64 },
}

impl Fault {
    /// Fails the `nth` call of `service` matching `text` once with `status`.
    pub fn status(service: &str, matching: Option<&str>, nth: u64, status: u16) -> Self {
        Self {
            service: service.to_owned(),
            matching: matching.map(str::to_owned),
            nth,
            times: 1,
            fraction: None,
            action: Action::Status {
                status,
                retry_after: None,
            },
        }
    }

    fn hits(&self, index: u64) -> bool {
        match self.fraction {
            // A fixed hash of the index: the same calls fail on every run.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(f) => {
                (index.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54)
                    < (f.clamp(0.0, 1.0) * 1024.0) as u64
            }
            None => index >= self.nth && index < self.nth + self.times,
        }
    }
}

/// One call as the fakes saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub service: &'static str,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Milliseconds since the server started, when the call arrived.
    pub at_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceStats {
    pub calls: u64,
    pub throttled: u64,
    pub max_in_flight: u32,
    pub max_per_second: u32,
    pub max_per_minute: u32,
    pub batches: u64,
    pub max_batches_per_minute: u32,
    #[serde(skip)]
    in_flight: u32,
    /// Admitted calls of the last minute (the last second is its tail).
    #[serde(skip)]
    recent: VecDeque<Instant>,
    #[serde(skip)]
    recent_batches: VecDeque<Instant>,
}

impl ServiceStats {
    fn per_second(&self, now: Instant) -> usize {
        self.recent
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) < Duration::from_secs(1))
            .count()
    }
}

#[derive(Debug, Default)]
pub struct Control {
    pub limits: BTreeMap<String, Limits>,
    pub faults: Vec<(Fault, u64)>,
    pub stats: BTreeMap<&'static str, ServiceStats>,
    pub calls: Vec<Call>,
    /// Calls held by a `HangAfter` or `HangBefore` fault so far.
    pub hung: u64,
    started: Option<Instant>,
}

pub type Shared = Arc<(Mutex<Control>, Notify)>;

impl Control {
    pub fn shared(limits: BTreeMap<String, Limits>) -> Shared {
        Arc::new((
            Mutex::new(Self {
                limits,
                started: Some(Instant::now()),
                ..Self::default()
            }),
            Notify::new(),
        ))
    }

    pub fn add_fault(&mut self, fault: Fault) {
        self.faults.push((fault, 0));
    }

    /// Statistics and the call log, for `/_fakes/state`.
    pub fn report(&self) -> serde_json::Value {
        json!({"stats": self.stats, "hung": self.hung, "calls": self.calls})
    }
}

/// What the middleware decided before running the call.
enum Verdict {
    Run {
        hang: bool,
        status_after: Option<u16>,
    },
    /// Hold the call, unrun, until the server stops.
    Hold,
    /// Answer `status` now and run the call after `after` (if within the timeout).
    Late {
        status: u16,
        after: Duration,
    },
    Answer(Response),
}

pub async fn layer(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    // Counted when it arrives, before its body is read.
    let arrived = Instant::now();
    let service = service_of(request.uri().path());
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 8 * 1024 * 1024).await.unwrap_or_default();
    let (verdict, limits, at_ms) = {
        let mut c = shared.0.lock().expect("control state");
        // What faults match against; only built when there are faults.
        let text = if c.faults.is_empty() {
            String::new()
        } else {
            format!(
                "{method} {path}?{} {}",
                parts.uri.query().unwrap_or_default(),
                String::from_utf8_lossy(&body)
            )
        };
        let at_ms = c.started.map_or(0, |s| {
            u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX)
        });
        let limits = c.limits.get(service).copied().unwrap_or_default();
        let verdict = admit(&mut c, service, &path, &text, limits, arrived);
        (verdict, limits, at_ms)
    };
    let latency = Duration::from_millis(limits.latency_ms);
    let record = |status: u16, throttled: bool| {
        let mut c = shared.0.lock().expect("control state");
        let s = c.stats.entry(service).or_default();
        s.calls += 1;
        if throttled {
            s.throttled += 1;
        }
        c.calls.push(Call {
            service,
            method: method.clone(),
            path: path.clone(),
            status,
            at_ms,
        });
    };
    let done = |hang: bool| {
        let mut c = shared.0.lock().expect("control state");
        if let Some(s) = c.stats.get_mut(service) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
        if hang {
            c.hung += 1;
        }
    };
    let (hang, status_after) = match verdict {
        Verdict::Answer(response) => {
            tokio::time::sleep(latency).await;
            let status = response.status().as_u16();
            record(status, status == 429);
            return response;
        }
        Verdict::Hold => {
            shared.0.lock().expect("control state").hung += 1;
            record(0, false);
            // Stuck at the service: it holds a slot until the service gives up on it.
            let timeout = limits.request_timeout_ms.map(Duration::from_millis);
            let release = Arc::clone(&shared);
            tokio::spawn(async move {
                if let Some(t) = timeout {
                    tokio::time::sleep(t).await;
                    let mut c = release.0.lock().expect("control state");
                    if let Some(s) = c.stats.get_mut(service) {
                        s.in_flight = s.in_flight.saturating_sub(1);
                    }
                }
            });
            // Never run, never answered: released (dropped) when the server stops.
            shared.1.notified().await;
            return error(service, 503, None);
        }
        Verdict::Late { status, after } => {
            record(status, false);
            let timeout = limits.request_timeout_ms.map(Duration::from_millis);
            let request = Request::from_parts(parts, Body::from(body));
            let release = Arc::clone(&shared);
            // The service is still working on it: it holds a slot until it lands.
            tokio::spawn(async move {
                let lands = timeout.is_none_or(|t| after < t);
                tokio::time::sleep(if lands {
                    after
                } else {
                    timeout.unwrap_or(after)
                })
                .await;
                if lands {
                    let _ = next.run(request).await;
                }
                let mut c = release.0.lock().expect("control state");
                if let Some(s) = c.stats.get_mut(service) {
                    s.in_flight = s.in_flight.saturating_sub(1);
                }
            });
            tokio::time::sleep(latency).await;
            return error(service, status, None);
        }
        Verdict::Run { hang, status_after } => (hang, status_after),
    };
    tokio::time::sleep(latency).await;
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    done(hang);
    if let Some(status) = status_after {
        record(status, false);
        return error(service, status, None);
    }
    let status = response.status().as_u16();
    record(status, status == 429);
    if hang {
        shared.1.notified().await;
    }
    response
}

/// Counts the call against the limits and faults, in that order.
fn admit(
    c: &mut Control,
    service: &'static str,
    path: &str,
    text: &str,
    limits: Limits,
    now: Instant,
) -> Verdict {
    let minute = Duration::from_mins(1);
    let s = c.stats.entry(service).or_default();
    for window in [&mut s.recent, &mut s.recent_batches] {
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= minute)
        {
            window.pop_front();
        }
    }
    let batch = path.ends_with("/batch");
    // Every arrival counts toward the rate windows, a refused one too (the stricter
    // reading: a client that keeps knocking stays refused).
    s.recent.push_back(now);
    s.max_per_minute = s
        .max_per_minute
        .max(u32::try_from(s.recent.len()).unwrap_or(u32::MAX));
    s.max_per_second = s
        .max_per_second
        .max(u32::try_from(s.per_second(now)).unwrap_or(u32::MAX));
    if batch {
        s.recent_batches.push_back(now);
        s.max_batches_per_minute = s
            .max_batches_per_minute
            .max(u32::try_from(s.recent_batches.len()).unwrap_or(u32::MAX));
    }
    if limits.max_in_flight.is_some_and(|max| s.in_flight >= max) {
        return Verdict::Answer(throttled(service, None));
    }
    if limits
        .per_second
        .is_some_and(|max| s.per_second(now) > max as usize)
    {
        return Verdict::Answer(throttled(service, None));
    }
    let minute_left = |window: &VecDeque<Instant>| {
        window
            .front()
            .map_or(60, |t| 60 - now.duration_since(*t).as_secs().min(59))
    };
    if service != "clickup"
        && limits
            .per_minute
            .is_some_and(|max| s.recent.len() > max as usize)
    {
        return Verdict::Answer(throttled(service, Some(minute_left(&s.recent))));
    }
    if batch
        && limits
            .batch_per_minute
            .is_some_and(|max| s.recent_batches.len() > max as usize)
    {
        return Verdict::Answer(throttled(service, Some(minute_left(&s.recent_batches))));
    }
    let mut verdict = Verdict::Run {
        hang: false,
        status_after: None,
    };
    for (fault, seen) in &mut c.faults {
        if fault.service != service || fault.matching.as_deref().is_some_and(|m| !text.contains(m))
        {
            continue;
        }
        *seen += 1;
        if !fault.hits(*seen) {
            continue;
        }
        verdict = match &fault.action {
            Action::Status {
                status,
                retry_after,
            } => Verdict::Answer(error(service, *status, *retry_after)),
            Action::HangAfter => Verdict::Run {
                hang: true,
                status_after: None,
            },
            Action::StatusAfter { status } => Verdict::Run {
                hang: false,
                status_after: Some(*status),
            },
            Action::HangBefore => Verdict::Hold,
            Action::LateRun { status, after_ms } => Verdict::Late {
                status: *status,
                after: Duration::from_millis(*after_ms),
            },
        };
        break;
    }
    if !matches!(verdict, Verdict::Answer(_)) {
        let s = c.stats.entry(service).or_default();
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        if batch {
            s.batches += 1;
        }
    }
    verdict
}

fn throttled(service: &str, retry_after: Option<u64>) -> Response {
    error(service, 429, retry_after)
}

/// The service's own error body for `status`.
fn error(service: &str, status: u16, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match (service, status) {
        ("qbo", 429) => {
            json!({"Fault": {"Error": [{"Message": "message=ThrottleExceeded; errorCode=003001; statusCode=429", "Detail": "The request limit was reached.", "code": "003001"}], "type": "ThrottleExceeded"}})
        }
        ("qbo", _) => {
            json!({"Fault": {"Error": [{"Message": "An application error has occurred", "Detail": "injected fault", "code": "10000"}], "type": "SystemFault"}})
        }
        ("clickup", 429) => json!({"err": "Rate limit reached", "ECODE": "APP_002"}),
        ("clickup", _) => json!({"err": "Internal error", "ECODE": "APP_001"}),
        ("graph", 429) => {
            json!({"error": {"code": "TooManyRequests", "message": "Too many requests."}})
        }
        _ => json!({"error": {"code": "injected", "message": format!("injected status {status}")}}),
    };
    let mut response = (code, axum::Json(body)).into_response();
    if let Some(secs) = retry_after {
        response.headers_mut().insert(
            "retry-after",
            HeaderValue::from_str(&secs.to_string()).expect("digits"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fraction_fault_hits_about_that_share_of_calls() {
        let f = Fault {
            fraction: Some(0.25),
            ..Fault::status("qbo", None, 1, 500)
        };
        let hits = (1..=4000).filter(|i| f.hits(*i)).count();
        assert!((800..1200).contains(&hits), "{hits} of 4000");
        let nth = Fault {
            times: 2,
            ..Fault::status("qbo", None, 3, 500)
        };
        let hit: Vec<u64> = (1..=6).filter(|i| nth.hits(*i)).collect();
        assert_eq!(hit, [3, 4]);
    }
}
