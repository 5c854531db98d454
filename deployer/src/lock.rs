//! One `up` (or `destroy`, or `rollback`, which runs `up`) at a time per environment:
//! a lease in the job-state table (`lock/deployer`), taken with a conditional write
//! before the plan reads the account, renewed while the command runs, and released at
//! its end. Another command waits for it, saying who holds it and since when; a holder
//! that crashed stops renewing, so its lease lapses within [`LEASE`].
//!
//! The table is the stack's own: before the first `up` has made it there is nothing to
//! hold (two first `up`s at once are not kept apart), nor after a `destroy`.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use infra::resources::{Kind, Spec};
use infra::stack::Stack;
use jiff::Timestamp;

use crate::aws::Aws;
use crate::error::{Error, Result};
use crate::resources::{aws_error, code};

/// How long a lease lasts without renewal: how long a crashed holder blocks the next.
pub const LEASE: Duration = Duration::from_mins(2);
/// How often a holder renews its lease.
const RENEW: Duration = Duration::from_secs(30);
/// How long a command waits for another's lease before giving up.
const WAIT: Duration = Duration::from_mins(30);
/// The lease's key in the job-state table.
pub const KEY: &str = "lock/deployer";

/// A held lease: renewed until [`Held::release`].
#[derive(Debug)]
pub struct Held {
    aws: Aws,
    table: String,
    key_name: String,
    holder: String,
    renewing: tokio::task::JoinHandle<()>,
}

/// Takes the environment's lease for `command`, waiting for another holder's to end.
/// `None` when there is nothing to hold (no table yet).
pub async fn acquire(aws: &Aws, stack: &Stack, command: &str) -> Result<Option<Held>> {
    let Some(table) = stack.of_kind(Kind::DynamodbTable).next() else {
        return Ok(None);
    };
    let key_name = match &table.properties {
        Spec::DynamodbTable(t) => t.partition_key.clone(),
        _ => "pk".to_owned(),
    };
    let who = aws.sts.get_caller_identity().send().await.map_or_else(
        |_| "an unknown identity".to_owned(),
        |c| c.arn().unwrap_or("?").to_owned(),
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "?".to_owned(), |h| h.trim().to_owned());
    let holder = format!(
        "`{command}` by {who} on {host} (pid {})",
        std::process::id()
    );
    let started = std::time::Instant::now();
    let mut told = false;
    loop {
        match put(aws, &table.name, &key_name, &holder, true).await {
            Ok(()) => {
                let renewing = tokio::spawn(renew(
                    aws.clone(),
                    table.name.clone(),
                    key_name.clone(),
                    holder.clone(),
                ));
                return Ok(Some(Held {
                    aws: aws.clone(),
                    table: table.name.clone(),
                    key_name,
                    holder,
                    renewing,
                }));
            }
            Err(Taken::NoTable) => return Ok(None),
            Err(Taken::Other(e)) => return Err(e),
            Err(Taken::By(other, since, until)) => {
                if started.elapsed() > WAIT {
                    return Err(Error::Refused(
                        format!("{} is held by {other} since {since} (its lease runs to {until})", stack.environment),
                        "wait for it to finish and run this again; a holder that stopped lets go within two minutes".into(),
                    ));
                }
                if !told {
                    eprintln!(
                        "waiting: {} is held by {other} since {since}; it goes on once that ends (a holder that crashed lets go by {until})",
                        stack.environment
                    );
                    told = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

impl Held {
    /// Lets go of the lease (only ours: a lease that lapsed and was taken is left).
    pub async fn release(self) {
        self.renewing.abort();
        let _ = self
            .aws
            .dynamodb
            .delete_item()
            .table_name(&self.table)
            .key(&self.key_name, AttributeValue::S(KEY.to_owned()))
            .condition_expression("holder = :me")
            .expression_attribute_values(":me", AttributeValue::S(self.holder.clone()))
            .send()
            .await;
    }
}

/// Runs `body` holding the lease (when there is one), and lets go of it however `body`
/// ends.
pub async fn holding<T>(
    held: Option<Held>,
    body: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let out = body.await;
    if let Some(h) = held {
        h.release().await;
    }
    out
}

enum Taken {
    By(String, String, String),
    NoTable,
    Other(Error),
}

/// Writes the lease: when `fresh`, only if no one holds it or theirs lapsed; else (a
/// renewal) only if it is still ours.
async fn put(
    aws: &Aws,
    table: &str,
    key_name: &str,
    holder: &str,
    fresh: bool,
) -> std::result::Result<(), Taken> {
    let now = Timestamp::now();
    let until = now + jiff::SignedDuration::try_from(LEASE).unwrap_or_default();
    let mut request = aws
        .dynamodb
        .put_item()
        .table_name(table)
        .item(key_name, AttributeValue::S(KEY.to_owned()))
        .item("holder", AttributeValue::S(holder.to_owned()))
        .item("until", AttributeValue::N(until.as_second().to_string()))
        .expression_attribute_values(":now", AttributeValue::N(now.as_second().to_string()));
    request = if fresh {
        request
            .item("since", AttributeValue::S(now.to_string()))
            .condition_expression("attribute_not_exists(#k) OR #u < :now")
            .expression_attribute_names("#k", key_name)
            .expression_attribute_names("#u", "until")
    } else {
        request
            .condition_expression("holder = :me AND #u >= :now")
            .expression_attribute_names("#u", "until")
            .expression_attribute_values(":me", AttributeValue::S(holder.to_owned()))
    };
    match request.send().await {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("ResourceNotFoundException") => Err(Taken::NoTable),
        Err(e) if code(&e) == Some("ConditionalCheckFailedException") => {
            let got = aws
                .dynamodb
                .get_item()
                .table_name(table)
                .key(key_name, AttributeValue::S(KEY.to_owned()))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| Taken::Other(aws_error("read the deploy lease in", table)(e)))?;
            let item = got.item();
            let text = |k: &str| {
                item.and_then(|i| i.get(k))
                    .and_then(|v| v.as_s().ok().cloned().or_else(|| v.as_n().ok().cloned()))
                    .unwrap_or_else(|| "?".to_owned())
            };
            let until = text("until")
                .parse::<i64>()
                .ok()
                .and_then(|s| Timestamp::from_second(s).ok())
                .map_or_else(|| "?".to_owned(), |t| t.to_string());
            // Ours: an earlier attempt of this very call landed and its answer was lost
            // (the SDK retried it); the lease is held, by us.
            if text("holder") == holder {
                return Ok(());
            }
            Err(Taken::By(text("holder"), text("since"), until))
        }
        Err(e) => Err(Taken::Other(aws_error("take the deploy lease in", table)(
            e,
        ))),
    }
}

/// Renews the lease until aborted; one that can no longer be renewed (it lapsed and
/// another took it) is said once.
async fn renew(aws: Aws, table: String, key_name: String, holder: String) {
    loop {
        tokio::time::sleep(RENEW).await;
        if put(&aws, &table, &key_name, &holder, false).await.is_err() {
            eprintln!(
                "warning: the deploy lease on {table} could not be renewed: another command may start"
            );
            return;
        }
    }
}
