//! Client-side limits, held before a request leaves: at most N in flight, a steady pace
//! (at most one request per period, `governor`'s GCRA with no burst), and at most M in
//! any 60 s. When the service reports its budget in `X-RateLimit-*` headers (ClickUp),
//! that budget replaces the local count: calls go out while it lasts, then wait for the
//! reset time it names. A 429 pauses every caller of the service, not just the one that
//! met it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A minute, plus a second for the time a request takes to reach the service: the
/// service counts arrivals, this side counts departures.
const WINDOW: Duration = Duration::from_secs(61);

#[derive(Debug)]
struct Window {
    limit: usize,
    sent: VecDeque<Instant>,
    /// The budget the service last reported: requests left, and when it refills.
    /// Once the service has reported one, it replaces the local count for good.
    budget: Option<(u64, Instant)>,
    /// The latest reset time the service reported.
    last_reset: Option<Instant>,
    /// Requests sent and not yet answered: the service may not have counted them in
    /// the budget it reports.
    in_flight: u64,
    reported: bool,
}

type Pace = governor::DefaultDirectRateLimiter;

#[derive(Debug, Clone, Default)]
pub struct Limiter {
    in_flight: Option<Arc<Semaphore>>,
    pace: Option<Arc<Pace>>,
    window: Option<Arc<Mutex<Window>>>,
    /// A narrower minute budget for some of the calls (QBO's batch requests).
    also: Option<Arc<Mutex<Window>>>,
    /// Nothing goes out before then (after a 429).
    paused_until: Arc<Mutex<Option<Instant>>>,
}

/// Held while a request is in flight.
#[derive(Debug)]
pub struct Permit {
    _slot: Option<OwnedSemaphorePermit>,
    window: Option<Arc<Mutex<Window>>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(w) = &self.window {
            let mut w = w.lock().expect("limiter");
            w.in_flight = w.in_flight.saturating_sub(1);
        }
    }
}

impl Limiter {
    pub fn new(in_flight: Option<usize>, per_minute: Option<usize>) -> Self {
        Self {
            in_flight: in_flight.map(|n| Arc::new(Semaphore::new(n))),
            window: per_minute.map(window),
            ..Self::default()
        }
    }

    /// These same budgets, shared, and for the calls made through the result also at most
    /// `per_minute` in any minute.
    #[must_use]
    pub fn and_per_minute(&self, per_minute: usize) -> Self {
        Self {
            also: Some(window(per_minute)),
            ..self.clone()
        }
    }

    /// At most one request every `period`, evenly spaced (no burst): a service that
    /// allows N per second counted over any second sees at most N.
    #[must_use]
    pub fn with_pace(mut self, period: Duration) -> Self {
        let quota = governor::Quota::with_period(period).expect("a period above zero");
        self.pace = Some(Arc::new(governor::RateLimiter::direct(quota)));
        self
    }

    /// Waits out a pause, then for a slot in flight, the pace, and room in the window. A
    /// pause that begins while a caller waits for its turn sends it round again, with a
    /// fresh turn after the pause: callers never pile up behind a pause and leave at
    /// once when it ends.
    pub async fn acquire(&self) -> Permit {
        self.wait_for_pause().await;
        let permit = match &self.in_flight {
            Some(s) => Some(Arc::clone(s).acquire_owned().await.expect("never closed")),
            None => None,
        };
        loop {
            self.wait_for_pause().await;
            if let Some(pace) = &self.pace {
                pace.until_ready().await;
            }
            for window in [&self.also, &self.window].into_iter().flatten() {
                wait_for_room(window).await;
            }
            if !self.paused() {
                break;
            }
        }
        if let Some(window) = &self.window {
            window.lock().expect("limiter").in_flight += 1;
        }
        Permit {
            _slot: permit,
            window: self.window.clone(),
        }
    }

    /// Learns from `X-RateLimit-Limit/Remaining/Reset` (Unix seconds).
    pub fn observe(&self, headers: &HeaderMap) {
        let Some(window) = &self.window else { return };
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let mut w = window.lock().expect("limiter");
        if let Some(limit) = num("x-ratelimit-limit").filter(|l| *l > 0) {
            w.limit = usize::try_from(limit).unwrap_or(usize::MAX);
        }
        if let (Some(left), Some(reset)) = (num("x-ratelimit-remaining"), num("x-ratelimit-reset"))
        {
            // Reset is in whole seconds: wait for the second after it.
            // A reset further off than a minute window allows is not believed.
            let reset = Instant::now() + until_unix(reset + 1).min(Duration::from_mins(2));
            // Besides this one, the requests still out may not be in the count.
            let left = left.saturating_sub(w.in_flight.saturating_sub(1));
            let slack = Duration::from_millis(1500);
            // A late answer from a window that has already turned says nothing now.
            if w.last_reset.is_some_and(|last| reset + slack < last) {
                return;
            }
            // Answers overtake each other: within one window, the lowest count wins, as
            // calls sent since an answer left the service are not in it.
            w.budget = Some(match (w.budget, w.last_reset) {
                (Some((mine, known)), Some(last)) if last.max(reset) - last.min(reset) < slack => {
                    (mine.min(left), known)
                }
                _ => (left, reset),
            });
            w.last_reset = Some(w.last_reset.map_or(reset, |l| l.max(reset)));
            w.reported = true;
        }
    }

    /// Stops every caller until `wait` has passed (after a 429).
    pub fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait;
        {
            let mut paused = self.paused_until.lock().expect("limiter");
            *paused = Some(paused.map_or(until, |u| u.max(until)));
        }
        if let Some(window) = &self.window {
            let mut w = window.lock().expect("limiter");
            if let Some((left, reset)) = &mut w.budget {
                *left = 0;
                *reset = (*reset).max(until);
            }
        }
    }

    fn paused(&self) -> bool {
        self.paused_until
            .lock()
            .expect("limiter")
            .is_some_and(|t| t > Instant::now())
    }

    async fn wait_for_pause(&self) {
        loop {
            let until = *self.paused_until.lock().expect("limiter");
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                _ => return,
            }
        }
    }
}

fn window(limit: usize) -> Arc<Mutex<Window>> {
    Arc::new(Mutex::new(Window {
        limit,
        sent: VecDeque::new(),
        budget: None,
        last_reset: None,
        in_flight: 0,
        reported: false,
    }))
}

/// Takes one request's room in the window: from the service's own budget once it has
/// reported one, else from the local count of the last minute.
async fn wait_for_room(window: &Mutex<Window>) {
    loop {
        let wait = {
            let mut w = window.lock().expect("limiter");
            let now = Instant::now();
            while w
                .sent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= WINDOW)
            {
                w.sent.pop_front();
            }
            if w.reported {
                match &mut w.budget {
                    Some((0, reset)) if *reset > now => Some(*reset - now),
                    Some((left, reset)) if *reset > now => {
                        *left -= 1;
                        None
                    }
                    // The window has turned: a fresh budget of the known limit,
                    // until an answer says how much is left.
                    _ => {
                        // Requests still out may land in the new window.
                        let fresh = u64::try_from(w.limit)
                            .unwrap_or(u64::MAX)
                            .saturating_sub(w.in_flight + 1);
                        w.budget = Some((fresh, now + WINDOW));
                        None
                    }
                }
            } else if w.sent.len() < w.limit {
                w.sent.push_back(now);
                None
            } else {
                w.sent
                    .front()
                    .map(|t| WINDOW.saturating_sub(now.duration_since(*t)))
            }
        };
        match wait {
            None => return,
            Some(d) => tokio::time::sleep(d.max(Duration::from_millis(5))).await,
        }
    }
}

/// How long until the Unix time `secs` (zero when it has passed).
pub fn until_unix(secs: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(secs).saturating_sub(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_window_holds_the_rate_and_learns_the_limit_from_headers() {
        let l = Limiter::new(Some(2), Some(3));
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            drop(l.acquire().await);
        }
        assert!(start.elapsed() < Duration::from_secs(1));
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit", "5".parse().unwrap());
        l.observe(&headers);
        for _ in 0..2 {
            drop(l.acquire().await);
        }
        assert!(start.elapsed() < Duration::from_secs(1), "learned limit 5");
    }

    #[tokio::test]
    async fn the_pace_spaces_requests_and_a_pause_holds_every_caller() {
        let l = Limiter::new(None, None).with_pace(Duration::from_millis(50));
        let start = Instant::now();
        for _ in 0..5 {
            drop(l.acquire().await);
        }
        // The first goes at once, then one every 50 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(195),
            "{:?}",
            start.elapsed()
        );
        let l = Limiter::default();
        l.pause(Duration::from_millis(300));
        let other = l.clone();
        let start = Instant::now();
        drop(other.acquire().await);
        assert!(
            start.elapsed() >= Duration::from_millis(290),
            "{:?}",
            start.elapsed()
        );
    }
}
