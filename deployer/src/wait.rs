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

/// How long a resource just made may stay invisible to the calls naming it: EC2 and
/// IAM document eventual consistency without a bound ("Eventual consistency in the
/// Amazon EC2 API"; IAM user guide, "Changes that I make are not always immediately
/// visible"); two minutes is ours, as for a new role to be usable by ECS.
pub const VISIBLE: Duration = Duration::from_mins(2);

/// Calls `call` again, with backoff for up to `VISIBLE`, while it fails with one of
/// `codes`: the not-found answers of a service that does not show a new resource
/// everywhere yet. Any other outcome is returned at once.
pub async fn until_visible<T, F, Fut>(codes: &[&str], mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + limit(VISIBLE);
    let mut pause = Duration::from_millis(250);
    loop {
        match call().await {
            Err(e)
                if e.aws_code().is_some_and(|c| codes.contains(&c))
                    && Instant::now() + pause < deadline =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(8));
            }
            other => return other,
        }
    }
}
