//! Typed clients of the four SaaS APIs, over one retrying HTTP core: every call has a
//! timeout, waits for the service's client-side limits, and retries 429, 5xx and
//! transport errors with jittered exponential backoff (honouring `Retry-After` in
//! seconds or as an HTTP date, and `X-RateLimit-Reset`), bounded in attempts and in
//! total time. Other 4xx never retry. A write with no idempotency key never goes
//! through that retry: [`Api::call_unsure`] hands an ambiguous answer back, and
//! [`confirm`] reads the service to learn whether the write took effect.

pub mod clickup;
pub mod control_room;
pub mod graph;
pub mod limits;
pub mod qbo;

use std::future::Future;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;

use self::limits::{Limiter, until_unix};

/// A call that did not succeed: which service, the HTTP status (none for a transport
/// error), the service's error code when it gave one, and its message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service}: {message}{}", code.as_ref().map(|c| format!(" (code {c})")).unwrap_or_default())]
pub struct ApiError {
    pub service: &'static str,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
    /// The whole run cannot go on (credentials rejected, the token not persisted).
    pub fatal: bool,
    /// When the service says it made this answer (QBO stamps `time` on each): an answer
    /// made long before it was asked for is a replay of an earlier one.
    pub time: Option<Timestamp>,
    /// When the last attempt left this process (after every limiter wait and retry).
    pub sent: Option<Instant>,
}

impl ApiError {
    /// The call may have taken effect: no answer, a broken one, or a 5xx.
    pub fn is_ambiguous(&self) -> bool {
        self.status.is_none_or(|s| s >= 500)
    }

    pub fn new(service: &'static str, status: Option<u16>, message: impl Into<String>) -> Self {
        Self {
            service,
            status,
            code: None,
            message: message.into(),
            fatal: false,
            time: None,
            sent: None,
        }
    }

    #[must_use]
    fn sent_at(self, at: Instant) -> Self {
        Self {
            sent: Some(at),
            ..self
        }
    }
}

/// After a write whose answer was lost (no answer, a broken one, a 5xx), whether it took
/// effect, as `check` finds it in the service: looked up at once, and when not found,
/// once more when the service can no longer be working on it (`settle` after the last
/// attempt left, which `lost` carries). `None` means it surely did not happen, so
/// sending it again is safe.
pub async fn confirm<T, F, Fut>(
    lost: &ApiError,
    what: &str,
    settle: Duration,
    mut check: F,
) -> Result<Option<T>, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, ApiError>>,
{
    let service = lost.service;
    // Every error of a write carries it; a missing one waits the whole settle time.
    let sent = lost.sent.unwrap_or_else(Instant::now);
    if let Some(found) = check().await? {
        return Ok(Some(found));
    }
    let wait = (sent + settle).saturating_duration_since(Instant::now());
    if wait.is_zero() {
        return Ok(None);
    }
    tracing::info!(
        event = "write_settling",
        service,
        what,
        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        "the answer was lost and the write is not visible yet; waiting until the service cannot still be working on it"
    );
    tokio::time::sleep(wait).await;
    check().await
}

/// How hard to try: attempts, total time, and the backoff's base and cap.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub budget: Duration,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 8,
            budget: Duration::from_mins(10),
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
        }
    }
}

/// One service's HTTP client, limits and retry policy.
#[derive(Debug, Clone)]
pub struct Api {
    pub service: &'static str,
    http: reqwest::Client,
    pub limiter: Limiter,
    retry: Retry,
    /// How long to wait after a 429 that names no time (QBO says a minute).
    throttle_wait: Option<Duration>,
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self, service: &'static str) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        // An answer that cannot be read says nothing of what happened: no status, so a
        // write that got it is looked up before anything else.
        serde_json::from_slice(&self.body).map_err(|e| {
            ApiError::new(
                service,
                None,
                format!(
                    "answered {} with a body that is not JSON ({e})",
                    self.status
                ),
            )
        })
    }
}

impl Api {
    /// `timeout` bounds each attempt; QBO documents 120 s for its own requests.
    pub fn new(service: &'static str, timeout: Duration, limiter: Limiter) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(timeout)
            .user_agent(concat!("qbo-invoice-processor/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the TLS backend loads");
        Self {
            service,
            http,
            limiter,
            retry: Retry::default(),
            throttle_wait: None,
        }
    }

    /// Waits `wait` after a 429 that names no time, instead of the backoff.
    pub fn with_throttle_wait(mut self, wait: Duration) -> Self {
        self.throttle_wait = Some(wait);
        self
    }

    /// Sends the request `build` makes (again on each attempt) and returns the first
    /// 2xx answer; `error` turns a non-2xx answer into the service's error.
    pub async fn call(
        &self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
        error: impl Fn(StatusCode, &HeaderMap, &[u8]) -> ApiError,
    ) -> Result<Answer, ApiError> {
        self.attempts(build, error, true).await
    }

    /// As [`Api::call`] for a write with no idempotency key: retries only what surely
    /// did not happen (a 429, a refused connection); a timeout, a broken answer or a
    /// 5xx comes back at once, for the caller to check whether the write took effect.
    pub async fn call_unsure(
        &self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
        error: impl Fn(StatusCode, &HeaderMap, &[u8]) -> ApiError,
    ) -> Result<Answer, ApiError> {
        self.attempts(build, error, false).await
    }

    async fn attempts(
        &self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
        error: impl Fn(StatusCode, &HeaderMap, &[u8]) -> ApiError,
        replay: bool,
    ) -> Result<Answer, ApiError> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = self.limiter.acquire().await;
            // When this attempt left: a write's answer is settled from here.
            let at = Instant::now();
            let sent = build(&self.http).send().await;
            let (wait, last) = match sent {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    self.limiter.observe(&headers);
                    let body = response.bytes().await.map(|b| b.to_vec());
                    drop(permit);
                    match body {
                        Ok(body) if status.is_success() => {
                            return Ok(Answer { status, body });
                        }
                        Ok(body) => {
                            let err = error(status, &headers, &body);
                            if status == StatusCode::TOO_MANY_REQUESTS {
                                let wait = server_wait(&headers)
                                    .or(self.throttle_wait)
                                    .unwrap_or_else(|| self.backoff(attempt));
                                self.limiter.pause(wait);
                                tracing::info!(
                                    event = "throttled",
                                    service = self.service,
                                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
                                );
                                (wait, err)
                            } else if status.is_server_error() && !replay {
                                return Err(err.sent_at(at));
                            } else if status.is_server_error() {
                                (
                                    server_wait(&headers).unwrap_or_else(|| self.backoff(attempt)),
                                    err,
                                )
                            } else {
                                return Err(err.sent_at(at));
                            }
                        }
                        Err(e) => {
                            let err = ApiError::new(
                                self.service,
                                None,
                                format!("the answer broke off: {e}"),
                            );
                            if !replay {
                                return Err(err.sent_at(at));
                            }
                            (self.backoff(attempt), err)
                        }
                    }
                }
                Err(e) => {
                    drop(permit);
                    let what = if e.is_timeout() {
                        "timed out"
                    } else if e.is_connect() {
                        "could not connect"
                    } else {
                        "failed"
                    };
                    let err = ApiError::new(
                        self.service,
                        None,
                        format!("the request {what}: {}", without_url(&e)),
                    );
                    // A refused connection never reached the service.
                    if !replay && !e.is_connect() {
                        return Err(err.sent_at(at));
                    }
                    (self.backoff(attempt), err)
                }
            };
            if attempt >= self.retry.attempts || started.elapsed() + wait > self.retry.budget {
                return Err(ApiError {
                    message: format!("{} (gave up after {attempt} attempts)", last.message),
                    ..last
                }
                .sent_at(at));
            }
            tracing::debug!(event = "retry", service = self.service, attempt, error = %last);
            tokio::time::sleep(wait).await;
        }
    }

    /// Full jitter over an exponential ceiling.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .retry
            .base
            .saturating_mul(1 << attempt.min(16))
            .min(self.retry.cap);
        ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
    }
}

/// `Retry-After` (seconds, or an HTTP date: RFC 9110 §10.2.3), else `X-RateLimit-Reset`
/// (Unix seconds) when the budget is spent; capped at two minutes.
fn server_wait(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let num = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
    let wait = num("retry-after")
        .map(Duration::from_secs)
        .or_else(|| text("retry-after").and_then(http_date_wait))
        .or_else(|| num("x-ratelimit-reset").map(until_unix))?;
    Some(wait.clamp(Duration::from_millis(100), Duration::from_mins(2)))
}

/// How long until an HTTP date such as `Sun, 06 Nov 1994 08:49:37 GMT` (zero if past).
fn http_date_wait(date: &str) -> Option<Duration> {
    let at = jiff::fmt::rfc2822::parse(date).ok()?.timestamp();
    let secs = at.as_second().checked_sub(Timestamp::now().as_second())?;
    Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// reqwest's message names the URL, which may carry a query; keep only the cause.
fn without_url(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    last.unwrap_or_else(|| "no detail".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(server_wait(&h), Some(Duration::from_secs(7)));
        let soon = Timestamp::now() + jiff::SignedDuration::from_secs(30);
        let date = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&soon)
            .unwrap();
        assert!(date.ends_with("GMT"), "{date}");
        h.insert("retry-after", date.parse().unwrap());
        let wait = server_wait(&h).unwrap();
        assert!((28..=30).contains(&wait.as_secs()), "{wait:?} from {date}");
        h.insert(
            "retry-after",
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(
            server_wait(&h),
            Some(Duration::from_millis(100)),
            "a past date: soon"
        );
    }
}
