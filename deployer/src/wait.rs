//! Waiting out what AWS finishes in its own time (a stopped task's network interface
//! releasing its security group), with backoff, within a bound, saying what it waits for.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The bound for one wait: `default`, or `DEPLOYER_WAIT_LIMIT` seconds when set (for a
/// person who would rather come back later, and for tests).
pub fn limit(default: Duration) -> Duration {
    std::env::var("DEPLOYER_WAIT_LIMIT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(default, Duration::from_secs)
}

/// Calls `attempt` until it no longer fails in a way `refused` recognises, sleeping with
/// backoff in between and printing (to stderr) what `holders` says still holds `what`
/// each time that changes. Past `limit` the refusal is returned with `fix`.
pub async fn while_refused<T, A, AF, H, HF>(
    what: &str,
    limit: Duration,
    mut attempt: A,
    refused: impl Fn(&Error) -> bool,
    mut holders: H,
    fix: &str,
) -> Result<T>
where
    A: FnMut() -> AF,
    AF: Future<Output = Result<T>>,
    H: FnMut() -> HF,
    HF: Future<Output = String>,
{
    let started = Instant::now();
    let mut pause = Duration::from_secs(2);
    let mut said = String::new();
    loop {
        match attempt().await {
            Err(e) if refused(&e) => {
                let why = holders().await;
                let left = limit.saturating_sub(started.elapsed());
                if left < pause {
                    return Err(Error::Refused(
                        format!(
                            "{what} is still in use after waiting {} s: {why} ({e})",
                            started.elapsed().as_secs()
                        ),
                        fix.to_owned(),
                    ));
                }
                if why != said {
                    eprintln!(
                        "  waiting for {what}: {why}; trying again for up to {} s",
                        left.as_secs()
                    );
                    said = why;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(20));
            }
            other => return other,
        }
    }
}
