//! Client-side limits, held before a request leaves: at most N in flight, at most K in
//! any second and at most M in any minute (sliding windows of the departures, each a
//! little longer than the service's so that uneven network delays cannot bunch the
//! arrivals; a burst of K goes at once). A 429 pauses every caller of the service, not
//! just the one that met it.
//!
//! When the service reports its budget in `X-RateLimit-*` headers (ClickUp: the limit,
//! what is left, and when its minute ends), the minute is the service's: every
//! departure since that minute began counts against the limit. What an answer says the
//! service has counted beyond this side's own departures is someone else's use of the
//! token (another shard, a person's script), and counts too. When nothing is left,
//! callers wait for the reset.
//!
//! Why windows and not a token bucket (GCRA, as `governor` has): a bucket that allows a
//! burst of K refills one every 1/K s, so K + 1 requests can land in one second; one
//! with no burst spaces every request, and a short run of requests takes longer than
//! the service's rule asks. "At most K in any second" is a sliding window.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A minute, plus a second for the time a request takes to reach the service: the
/// service counts arrivals, this side counts departures.
const MINUTE: Duration = Duration::from_secs(61);
/// A second, plus a tenth for uneven network delays.
const SECOND: Duration = Duration::from_millis(1100);
/// The length of a service's own minute, once it reports one.
const SERVICE_MINUTE: Duration = Duration::from_mins(1);
/// A request that left this long before the service's minute began may still land in
/// it.
const EDGE: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Window {
    /// How long a departure counts.
    length: Duration,
    /// The service's limit (for everyone on the token or realm).
    limit: usize,
    /// How many runs share it: this one keeps to its part.
    share: usize,
    /// Departures of the last `length` (or of the service's minute).
    sent: VecDeque<Instant>,
    /// The service's own minute, once an answer has named it.
    service: Option<Reported>,
}

/// What the service said of its minute.
#[derive(Debug, Clone, Copy)]
struct Reported {
    /// When its minute ends.
    reset: Instant,
    /// Requests it counted that were not this side's (at least).
    others: u64,
    /// The minute turned and no answer has named the new one yet: `reset` is a guess.
    assumed: bool,
}

impl Reported {
    /// When this side's count for the minute starts: its start, less a request's trip.
    fn began(&self) -> Instant {
        let began = self.reset.checked_sub(SERVICE_MINUTE).unwrap_or(self.reset);
        began.checked_sub(EDGE).unwrap_or(began)
    }
}

impl Window {
    fn new(limit: usize, length: Duration) -> Self {
        Self {
            length,
            limit,
            share: 1,
            sent: VecDeque::new(),
            service: None,
        }
    }

    /// Takes room for one departure now, or says how long to wait.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let limit = u64::try_from(self.limit).unwrap_or(u64::MAX);
        let part = (self.limit / self.share.max(1)).max(1);
        match &mut self.service {
            None => {
                let length = self.length;
                while self
                    .sent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= length)
                {
                    self.sent.pop_front();
                }
                if self.sent.len() >= part {
                    let first = self.sent.front().copied().unwrap_or(now);
                    return Err(length.saturating_sub(now.duration_since(first)));
                }
            }
            Some(service) => {
                if now >= service.reset {
                    // Its minute has turned: a fresh one from now, until an answer
                    // names it (the service may start it at the next request).
                    *service = Reported {
                        reset: now + SERVICE_MINUTE,
                        others: 0,
                        assumed: true,
                    };
                }
                let began = service.began();
                while self.sent.front().is_some_and(|t| *t < began) {
                    self.sent.pop_front();
                }
                let counted = u64::try_from(self.sent.len()).unwrap_or(u64::MAX);
                let part = u64::try_from(part).unwrap_or(u64::MAX);
                if counted >= part || counted + service.others >= limit {
                    return Err(service.reset.saturating_duration_since(now));
                }
            }
        }
        self.sent.push_back(now);
        Ok(())
    }

    /// This side's departures in the service's minute that ends at `reset`.
    fn departures(&self, reset: Instant) -> u64 {
        let began = Reported {
            reset,
            others: 0,
            assumed: false,
        }
        .began();
        u64::try_from(self.sent.iter().filter(|t| **t >= began).count()).unwrap_or(u64::MAX)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Limiter {
    in_flight: Option<Arc<Semaphore>>,
    per_second: Option<Arc<Mutex<Window>>>,
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
}

impl Limiter {
    pub fn new(in_flight: Option<usize>, per_minute: Option<usize>) -> Self {
        Self {
            in_flight: in_flight.map(|n| Arc::new(Semaphore::new(n))),
            window: per_minute.map(|n| window(n, MINUTE)),
            ..Self::default()
        }
    }

    /// These same budgets, shared, and for the calls made through the result also at most
    /// `per_minute` in any minute.
    #[must_use]
    pub fn and_per_minute(&self, per_minute: usize) -> Self {
        Self {
            also: Some(window(per_minute, MINUTE)),
            ..self.clone()
        }
    }

    /// This run shares the minute budget with `n - 1` others (shards): it keeps to its
    /// part of the limit, the service's headers' limit included.
    #[must_use]
    pub fn shared_by(self, n: u32) -> Self {
        if let Some(w) = &self.window {
            w.lock().expect("limiter").share = usize::try_from(n.max(1)).unwrap_or(1);
        }
        self
    }

    /// At most `n` requests in any second (a burst of `n` goes at once).
    #[must_use]
    pub fn with_per_second(mut self, n: usize) -> Self {
        self.per_second = Some(window(n, SECOND));
        self
    }

    /// Waits out a pause, then for a slot in flight and room in every window. A pause
    /// that begins while a caller waits for its turn sends it round again, with a fresh
    /// turn after the pause: callers never pile up behind a pause and leave at once
    /// when it ends.
    pub async fn acquire(&self) -> Permit {
        self.wait_for_pause().await;
        let slot = match &self.in_flight {
            Some(s) => Some(Arc::clone(s).acquire_owned().await.expect("never closed")),
            None => None,
        };
        loop {
            self.wait_for_pause().await;
            for window in [&self.per_second, &self.also, &self.window]
                .into_iter()
                .flatten()
            {
                wait_for_room(window).await;
            }
            if !self.paused() {
                return Permit { _slot: slot };
            }
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
        let (Some(left), Some(reset)) = (num("x-ratelimit-remaining"), num("x-ratelimit-reset"))
        else {
            return;
        };
        // Reset is in whole seconds: the second after it. A reset further off than a
        // minute is not believed.
        let reset = Instant::now() + until_unix(reset + 1).min(Duration::from_mins(2));
        let limit = u64::try_from(w.limit).unwrap_or(u64::MAX);
        // Everything this side has sent in that minute may be in the service's count
        // (and later ones not yet): what it counted beyond that is others' use.
        let others = limit
            .saturating_sub(left)
            .saturating_sub(w.departures(reset));
        let slack = Duration::from_millis(1500);
        w.service = Some(match w.service {
            // A late answer from a minute that has ended says nothing now.
            Some(known) if !known.assumed && reset + slack < known.reset => known,
            // The same minute: the most use by others seen holds.
            Some(known) if !known.assumed && known.reset + slack >= reset => Reported {
                others: known.others.max(others),
                ..known
            },
            // The first word on a minute.
            _ => Reported {
                reset,
                others,
                assumed: false,
            },
        });
    }

    /// Stops every caller until `wait` has passed (after a 429); the service's minute,
    /// if it named one, counts as spent until then.
    pub fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait;
        {
            let mut paused = self.paused_until.lock().expect("limiter");
            *paused = Some(paused.map_or(until, |u| u.max(until)));
        }
        if let Some(window) = &self.window {
            let mut w = window.lock().expect("limiter");
            let limit = u64::try_from(w.limit).unwrap_or(u64::MAX);
            if let Some(service) = &mut w.service {
                service.others = limit;
                service.reset = service.reset.max(until);
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

fn window(limit: usize, length: Duration) -> Arc<Mutex<Window>> {
    Arc::new(Mutex::new(Window::new(limit, length)))
}

/// Takes one request's room in the window, waiting as long as it takes.
async fn wait_for_room(window: &Mutex<Window>) {
    loop {
        let taken = window.lock().expect("limiter").take(Instant::now());
        match taken {
            Ok(()) => return,
            Err(wait) => tokio::time::sleep(wait.max(Duration::from_millis(5))).await,
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
        drop(l.acquire().await);
        assert!(start.elapsed() < Duration::from_secs(1), "learned limit 5");
    }

    #[test]
    fn the_services_minute_counts_every_departure_and_others_use_of_the_token() {
        let now = Instant::now();
        let mut w = Window::new(10, MINUTE);
        // Before any answer, the local count holds.
        for _ in 0..4 {
            assert_eq!(w.take(now), Ok(()));
        }
        // The service's minute (ends in 30 s) has counted 4: all ours.
        w.service = Some(Reported {
            reset: now + Duration::from_secs(30),
            others: 0,
            assumed: false,
        });
        for _ in 4..10 {
            assert_eq!(w.take(now), Ok(()), "room for 10 in the minute");
        }
        let wait = w.take(now).unwrap_err();
        assert!(wait > Duration::from_secs(29), "until the reset: {wait:?}");
        // Another client of the token used 8 of this minute: 2 are left for us.
        let mut w = Window::new(10, MINUTE);
        w.service = Some(Reported {
            reset: now + Duration::from_secs(30),
            others: 8,
            assumed: false,
        });
        assert_eq!(w.take(now), Ok(()));
        assert_eq!(w.take(now), Ok(()));
        assert!(w.take(now).is_err(), "others' use counts");
        // The minute turns: a fresh budget of the limit.
        assert_eq!(w.take(now + Duration::from_secs(31)), Ok(()));
    }

    #[tokio::test]
    async fn a_second_holds_a_burst_then_waits() {
        let l = Limiter::new(None, None).with_per_second(3);
        let start = Instant::now();
        for _ in 0..3 {
            drop(l.acquire().await);
        }
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "a burst of 3 at once"
        );
        drop(l.acquire().await);
        assert!(
            start.elapsed() >= SECOND,
            "the 4th a second (and a tenth) after the 1st"
        );
    }

    #[tokio::test]
    async fn a_pause_holds_every_caller_and_they_do_not_leave_together_after_it() {
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
        // Callers waiting for their turn when a pause begins take a fresh turn after
        // it, one a second here.
        let l = Limiter::new(None, None).with_per_second(1);
        drop(l.acquire().await);
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move {
                    drop(l.acquire().await);
                    Instant::now()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let paused_at = Instant::now();
        l.pause(Duration::from_millis(400));
        let mut left = Vec::new();
        for w in waiting {
            left.push(w.await.unwrap());
        }
        left.sort();
        assert!(
            left[0] >= paused_at + Duration::from_millis(390),
            "none during the pause"
        );
        for pair in left.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(1090), "{left:?}");
        }
    }
}
