//! `deployer logs`: the job's log lines, oldest first, each JSON event made readable
//! (`--json` keeps them as they are); `--follow` keeps polling for new ones.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::time::Duration;

use jiff::{SignedDuration, Span, SpanRelativeTo, Timestamp};
use serde_json::Value;

use crate::aws::Aws;
use crate::cli::{Cli, Format, LogsArgs};
use crate::error::{Error, Result};
use crate::resources::{aws_error, code};

/// How often `--follow` asks for new lines.
const POLL: Duration = Duration::from_secs(2);

pub async fn run(cli: &Cli, args: &LogsArgs) -> Result<()> {
    let env = super::shared::load_environment(cli, &args.env)?;
    let aws = super::shared::connect(cli, &env).await;
    let since = parse_since(&args.since)?;
    let tz = super::shared::zone(cli, &env)?;
    let start = Timestamp::now() - since;
    let stream = args
        .task
        .as_deref()
        .map(|task| stream_name(&env.file.task.container, task));
    let mut tail = Tail::new(&env.file.logs.group, stream, start.as_millisecond());
    let mut shards: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    loop {
        for (ts, stream, message) in tail.next_batch(&aws).await? {
            // A shard's lines carry its `K/N` (learned from the stream's first lines).
            if let Some(shard) = shard_of(&message) {
                shards.insert(stream.clone(), shard);
            }
            let line = if args.output == Format::Json || args.json {
                message
            } else {
                match shards.get(&stream) {
                    Some(shard) => format!("[{shard}] {}", readable(ts, &message, &tz)),
                    None => readable(ts, &message, &tz),
                }
            };
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        if !args.follow {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    super::shared::report_calls(cli, &aws);
    Ok(())
}

/// `2h`, `30m`, `1d`, `90s` or an ISO 8601 duration.
fn parse_since(text: &str) -> Result<SignedDuration> {
    text.parse::<Span>()
        .ok()
        .and_then(|span| span.to_duration(SpanRelativeTo::days_are_24_hours()).ok())
        .filter(|d| !d.is_negative())
        .ok_or_else(|| {
            Error::Prerequisite(
                format!("--since {text} is not a duration"),
                "write it like 30m, 2h or 7d".into(),
            )
        })
}

/// The awslogs stream of one task: `ecs/CONTAINER/TASK_ID` (an ARN's last part is the id).
pub fn stream_name(container: &str, task: &str) -> String {
    let id = task.rsplit('/').next().unwrap_or(task);
    format!("ecs/{container}/{id}")
}

/// How far behind the newest line a read starts again: a line can reach CloudWatch
/// Logs after a newer one from another stream (each task's awslogs driver sends its own
/// batches, and CloudWatch Logs takes events up to 14 days old: PutLogEvents API
/// reference), so a read from the newest time alone would skip it.
const LATE: i64 = 5 * 60 * 1000;

/// Reads a log group (or one stream of it) forward from a start time, each event once,
/// including one that arrives late with an older time (up to [`LATE`] behind the newest).
pub struct Tail {
    group: String,
    /// One stream by its exact name (moto ignores `logStreamNamePrefix`; AWS takes both).
    stream: Option<String>,
    /// Never read before this.
    start: i64,
    /// The newest event's time so far.
    newest: i64,
    /// The events returned, by time, back to `newest - LATE`.
    seen: BTreeSet<(i64, String)>,
}

impl Tail {
    pub fn new(group: &str, stream: Option<String>, from_ms: i64) -> Self {
        Self {
            group: group.to_owned(),
            stream,
            start: from_ms,
            newest: from_ms,
            seen: BTreeSet::new(),
        }
    }

    /// The events not returned before, oldest first, as `(milliseconds, stream,
    /// message)`.
    pub async fn next_batch(&mut self, aws: &Aws) -> Result<Vec<(i64, String, String)>> {
        let from = self.start.max(self.newest - LATE);
        let mut pages = aws
            .logs
            .filter_log_events()
            .log_group_name(&self.group)
            .start_time(from)
            .set_log_stream_names(self.stream.clone().map(|s| vec![s]))
            .into_paginator()
            .send();
        let mut events = Vec::new();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(page) => page,
                Err(e) if code(&e) == Some("ResourceNotFoundException") => break,
                Err(e) => return Err(aws_error("read the logs in", &self.group)(e)),
            };
            for e in page.events() {
                let id = e.event_id().map_or_else(
                    || {
                        format!(
                            "{:?}{:?}{:?}",
                            e.log_stream_name(),
                            e.timestamp(),
                            e.message()
                        )
                    },
                    str::to_owned,
                );
                if self.seen.insert((e.timestamp().unwrap_or(0), id)) {
                    events.push((
                        e.timestamp().unwrap_or(0),
                        e.log_stream_name().unwrap_or_default().to_owned(),
                        e.message().unwrap_or_default().to_owned(),
                    ));
                }
            }
        }
        events.sort_by_key(|(ts, _, _)| *ts);
        if let Some((last, _, _)) = events.last() {
            self.newest = self.newest.max(*last);
        }
        // What the next read cannot return again need not be remembered.
        self.seen = self
            .seen
            .split_off(&(self.start.max(self.newest - LATE), String::new()));
        Ok(events)
    }
}

/// The `shard` (`K/N`) a job line names, if any.
pub fn shard_of(message: &str) -> Option<String> {
    serde_json::from_str::<Value>(message)
        .ok()?
        .get("shard")?
        .as_str()
        .map(str::to_owned)
}

/// `TIME ZONE  EVENT  key=value ...` for the job's JSON lines; other lines as they are.
pub fn readable(ts: i64, message: &str, tz: &jiff::tz::TimeZone) -> String {
    let time = super::shared::local_time(ts, tz);
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(message) else {
        return format!("{time}  {}", message.trim_end());
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let head: Vec<String> = ["level", "event", "message", "msg"]
        .iter()
        .filter_map(|k| fields.get(*k).map(text))
        .collect();
    let rest: Vec<String> = fields
        .iter()
        .filter(|(k, _)| {
            !["level", "event", "message", "msg", "timestamp", "time"].contains(&k.as_str())
        })
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    format!("{time}  {}  {}", head.join("  "), rest.join(" "))
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shards_lines_name_it() {
        assert_eq!(
            shard_of(r#"{"event":"run_started","shard":"2/4"}"#).as_deref(),
            Some("2/4")
        );
        assert_eq!(shard_of(r#"{"event":"progress"}"#), None);
        assert_eq!(shard_of("not json"), None);
    }

    #[test]
    fn json_lines_read_as_event_then_fields() {
        let line = readable(
            0,
            r#"{"event":"run_finished","job":"send-invoices","success":true}"#,
            &jiff::tz::TimeZone::UTC,
        );
        assert_eq!(
            line,
            "1970-01-01 00:00:00 UTC  run_finished  job=send-invoices success=true"
        );
        let la = jiff::tz::TimeZone::get("America/Los_Angeles").unwrap();
        assert_eq!(
            readable(0, "plain text\n", &la),
            "1969-12-31 16:00:00 PST  plain text"
        );
    }

    #[test]
    fn since_takes_friendly_durations() {
        assert_eq!(parse_since("2h").unwrap(), SignedDuration::from_hours(2));
        assert_eq!(parse_since("1d").unwrap(), SignedDuration::from_hours(24));
        assert!(parse_since("yesterday").is_err());
        assert_eq!(
            stream_name("c", "arn:aws:ecs:us-east-1:1:task/cl/abc"),
            "ecs/c/abc"
        );
    }
}
