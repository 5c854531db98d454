//! The job's own ledger, in a DynamoDB table the stack provisions (`JOB_STATE_TABLE`):
//! for the daily summary email, which invoices it has reported. A sent invoice's
//! `DeliveryInfo.DeliveryTime` in QBO says when it went out; the ledger keeps the newest
//! time the bookkeeper was told about, and a summary about to be sent (`pending`), so
//! that a run that died before its summary is caught up by the next one, and a summary
//! whose sending had no clear answer is never sent twice. Every change is conditional on
//! the version read, so two runs cannot both move the ledger.
//!
//! The table also holds a lease per job (per month and shard for create-invoices): one
//! run at a time. A write's lost answer is only settled within one process; a second
//! run (a duplicate schedule invocation, a manual run beside the scheduled one, a rerun
//! right after a kill) waits until the first one's lease has run out, which is long
//! enough for every request it left behind to be over at the service.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use jiff::Timestamp;

use crate::error::{Error, Result};

const SUMMARY_KEY: &str = "send-invoices/summary";

/// Placeholders of the ledger's attributes in update expressions.
const NAMES: [(&str, &str); 4] = [
    ("#through", "reported_through"),
    ("#edge", "edge"),
    ("#pending", "pending_through"),
    ("#version", "version"),
];

/// A run's hold on its job: kept alive by a task of its own while the run goes on.
#[derive(Debug)]
pub struct Lease {
    ledger: Ledger,
    key: String,
    holder: String,
    renewer: tokio::task::JoinHandle<()>,
}

/// What [`Ledger::lease`] found.
#[derive(Debug)]
pub enum Leased {
    Held(Lease),
    /// Another run holds it, and kept it alive the whole time this one waited.
    Busy {
        until: Timestamp,
    },
}

impl Lease {
    /// Gives the lease up. `busy` is how long requests this run left unanswered may still
    /// run at a service: the lease stays that long, so a rerun does not start before.
    pub async fn release(self, busy: Option<Duration>) -> Result<()> {
        self.renewer.abort();
        let db = &self.ledger.db;
        match busy {
            None => db
                .delete_item()
                .table_name(&self.ledger.table)
                .key("pk", AttributeValue::S(self.key.clone()))
                .condition_expression("#holder = :me")
                .expression_attribute_names("#holder", "holder")
                .expression_attribute_values(":me", AttributeValue::S(self.holder.clone()))
                .send()
                .await
                .map(drop)
                .map_err(|e| self.ledger.error("releasing the lease in", &e)),
            Some(busy) => db
                .update_item()
                .table_name(&self.ledger.table)
                .key("pk", AttributeValue::S(self.key.clone()))
                .update_expression("SET #until = :until")
                .condition_expression("#holder = :me")
                .expression_attribute_names("#holder", "holder")
                .expression_attribute_names("#until", "until")
                .expression_attribute_values(":me", AttributeValue::S(self.holder.clone()))
                .expression_attribute_values(":until", until(busy))
                .send()
                .await
                .map(drop)
                .map_err(|e| self.ledger.error("releasing the lease in", &e)),
        }
    }
}

/// An expiry `from_now` ahead, as the table keeps it (Unix seconds).
fn until(from_now: Duration) -> AttributeValue {
    let at =
        Timestamp::now().as_second() + i64::try_from(from_now.as_secs()).unwrap_or(i64::MAX / 2);
    AttributeValue::N(at.to_string())
}

/// The summary ledger as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryLedger {
    /// Invoices delivered up to this time have been reported...
    pub reported_through: Timestamp,
    /// ...except those delivered at that very time (QBO's times have whole seconds)
    /// not named here.
    pub edge: Vec<String>,
    /// A summary covering up to this time was being sent when its run ended or lost the
    /// answer: it may have been delivered.
    pub pending: Option<Timestamp>,
    version: u64,
}

#[derive(Debug, Clone)]
pub struct Ledger {
    db: Client,
    table: String,
}

impl Ledger {
    pub fn new(db: Client, table: &str) -> Self {
        Self {
            db,
            table: table.to_owned(),
        }
    }

    /// Takes the lease `key` for `length` (renewed every third of it while the run goes
    /// on). Held by another run, it waits up to `length` for it to end or run out.
    pub async fn lease(&self, key: &str, length: Duration) -> Result<Leased> {
        let holder = format!("{}-{}", std::process::id(), fastrand::u64(..));
        let waited_from = std::time::Instant::now();
        loop {
            let now = Timestamp::now().as_second();
            let taken = self
                .db
                .put_item()
                .table_name(&self.table)
                .item("pk", AttributeValue::S(key.to_owned()))
                .item("holder", AttributeValue::S(holder.clone()))
                .item("until", until(length))
                .condition_expression("attribute_not_exists(pk) OR #until < :now")
                .expression_attribute_names("#until", "until")
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                .send()
                .await;
            match taken {
                Ok(_) => {
                    let renewer = tokio::spawn(renew(self.clone(), key.to_owned(), holder.clone(), length));
                    return Ok(Leased::Held(Lease {
                        ledger: self.clone(),
                        key: key.to_owned(),
                        holder,
                        renewer,
                    }));
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(aws_sdk_dynamodb::operation::put_item::PutItemError::is_conditional_check_failed_exception) =>
                {
                    let held_until = self.lease_until(key).await?;
                    if waited_from.elapsed() > length + Duration::from_secs(1) {
                        return Ok(Leased::Busy {
                            until: held_until.unwrap_or_else(Timestamp::now),
                        });
                    }
                    tracing::info!(
                        event = "lease_wait",
                        lease = key,
                        until = %held_until.map(|t| t.to_string()).unwrap_or_default(),
                        "another run holds this job, or ended less than its lease ago: waiting"
                    );
                    tokio::time::sleep((length / 4).max(Duration::from_millis(500))).await;
                }
                Err(e) => return Err(self.error("taking the lease in", &e)),
            }
        }
    }

    /// The item `key`, read consistently (the ledger must see its own last write).
    async fn item(&self, key: &str) -> Result<Option<HashMap<String, AttributeValue>>> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error("reading", &e))?;
        Ok(out.item)
    }

    async fn lease_until(&self, key: &str) -> Result<Option<Timestamp>> {
        Ok(self
            .item(key)
            .await?
            .as_ref()
            .and_then(|i| match i.get("until") {
                Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
                _ => None,
            })
            .and_then(|s| Timestamp::from_second(s).ok()))
    }

    /// Records that a billing run of `period` (`YYYY-MM`) finished: every shard adds
    /// itself, so `--check-billed` can tell a month that ran from one that did not.
    pub async fn record_billed(
        &self,
        period: &str,
        shard: Option<(u64, u64)>,
        success: bool,
    ) -> Result<()> {
        let (k, n) = shard.unwrap_or((1, 1));
        let mut update = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(billed_key(period)))
            .update_expression(if success {
                "SET #at = :now, #count = :n ADD #done :k"
            } else {
                "SET #at = :now, #count = :n ADD #done :k, #failed :k"
            })
            .expression_attribute_names("#at", "finished_at")
            .expression_attribute_names("#count", "shard_count")
            .expression_attribute_names("#done", "shards_done")
            .expression_attribute_values(":now", AttributeValue::S(Timestamp::now().to_string()))
            .expression_attribute_values(":n", AttributeValue::N(n.to_string()))
            .expression_attribute_values(":k", AttributeValue::Ns(vec![k.to_string()]));
        if !success {
            update = update.expression_attribute_names("#failed", "shards_failed");
        }
        update
            .send()
            .await
            .map_err(|e| self.error("recording the billing run in", &e))?;
        Ok(())
    }

    /// What the billing runs of `period` recorded: `None` when none finished.
    pub async fn billed(&self, period: &str) -> Result<Option<Billed>> {
        let Some(item) = self.item(&billed_key(period)).await? else {
            return Ok(None);
        };
        let numbers = |name: &str| -> Vec<u64> {
            match item.get(name) {
                Some(AttributeValue::Ns(v)) => v.iter().filter_map(|n| n.parse().ok()).collect(),
                _ => Vec::new(),
            }
        };
        let count = match item.get("shard_count") {
            Some(AttributeValue::N(n)) => n.parse().unwrap_or(1),
            _ => 1,
        };
        let finished_at = match item.get("finished_at") {
            Some(AttributeValue::S(s)) => s.clone(),
            _ => String::new(),
        };
        Ok(Some(Billed {
            shard_count: count,
            shards_done: numbers("shards_done"),
            shards_failed: numbers("shards_failed"),
            finished_at,
        }))
    }

    /// What the billing reports of `key` recorded: the DocNumbers reported, and those
    /// of a report being sent (set before the send, cleared after).
    pub async fn report(&self, key: &str) -> Result<ReportState> {
        let Some(item) = self.item(key).await? else {
            return Ok(ReportState::default());
        };
        let set = |name: &str| -> Option<BTreeSet<String>> {
            match item.get(name) {
                Some(AttributeValue::Ss(v)) => Some(v.iter().cloned().collect()),
                // An empty set cannot be stored: a marker stands for it.
                Some(AttributeValue::S(_)) => Some(BTreeSet::new()),
                _ => None,
            }
        };
        let version = match item.get("version") {
            Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
            _ => 0,
        };
        Ok(ReportState {
            reported: set("reported").unwrap_or_default(),
            pending: set("pending"),
            version,
        })
    }

    /// Marks `docs` as a report about to be sent: only if no other run moved the record
    /// since it was read.
    pub async fn begin_report(
        &self,
        key: &str,
        state: &ReportState,
        docs: &BTreeSet<String>,
    ) -> Result<ReportState> {
        self.put_report(key, state, &state.reported, Some(docs))
            .await
    }

    /// The report of `docs` went out (or may have): they are reported, nothing pending.
    pub async fn settle_report(
        &self,
        key: &str,
        state: &ReportState,
        docs: BTreeSet<String>,
    ) -> Result<ReportState> {
        let reported: BTreeSet<String> = state.reported.union(&docs).cloned().collect();
        self.put_report(key, state, &reported, None).await
    }

    /// The report was refused (a clear error): nothing went out, the next run sends it.
    pub async fn abandon_report(&self, key: &str, state: &ReportState) -> Result<ReportState> {
        self.put_report(key, state, &state.reported, None).await
    }

    async fn put_report(
        &self,
        key: &str,
        state: &ReportState,
        reported: &BTreeSet<String>,
        pending: Option<&BTreeSet<String>>,
    ) -> Result<ReportState> {
        let set = |docs: &BTreeSet<String>| {
            if docs.is_empty() {
                AttributeValue::S("none".into())
            } else {
                AttributeValue::Ss(docs.iter().cloned().collect())
            }
        };
        let mut put = self
            .db
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(key.to_owned()))
            .item("reported", set(reported))
            .item(
                "version",
                AttributeValue::N((state.version + 1).to_string()),
            );
        if let Some(p) = pending {
            put = put.item("pending", set(p));
        }
        put = if state.version == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("#v = :v")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":v", AttributeValue::N(state.version.to_string()))
        };
        put.send()
            .await
            .map_err(|e| self.error("recording the billing report in", &e))?;
        Ok(ReportState {
            reported: reported.clone(),
            pending: pending.cloned(),
            version: state.version + 1,
        })
    }

    /// The summary ledger, if a summary was ever prepared.
    pub async fn summary(&self) -> Result<Option<SummaryLedger>> {
        self.item(SUMMARY_KEY)
            .await?
            .map(|item| self.parse(&item))
            .transpose()
    }

    /// Starts the ledger: invoices delivered after `through` are to be reported.
    pub async fn start(&self, through: Timestamp) -> Result<SummaryLedger> {
        let out = SummaryLedger {
            reported_through: through,
            edge: Vec::new(),
            pending: None,
            version: 1,
        };
        self.db
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(SUMMARY_KEY.into()))
            .item("reported_through", AttributeValue::S(through.to_string()))
            .item("version", AttributeValue::N("1".into()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| self.error("starting", &e))?;
        Ok(out)
    }

    /// Records that a summary covering up to `through` is about to be sent.
    pub async fn begin(&self, l: &SummaryLedger, through: Timestamp) -> Result<SummaryLedger> {
        self.update(l, "SET #pending = :p, #version = :n", Some(through), None)
            .await?;
        Ok(SummaryLedger {
            pending: Some(through),
            version: l.version + 1,
            ..l.clone()
        })
    }

    /// The summary up to `through` is out (or may be): it will not be sent again. `edge`
    /// names the invoices delivered at `through` itself that it reported.
    pub async fn settle(
        &self,
        l: &SummaryLedger,
        through: Timestamp,
        edge: Vec<String>,
    ) -> Result<SummaryLedger> {
        let (through, edge) = match through.cmp(&l.reported_through) {
            std::cmp::Ordering::Greater => (through, edge),
            std::cmp::Ordering::Equal => {
                let mut all = l.edge.clone();
                all.extend(edge);
                all.sort();
                all.dedup();
                (through, all)
            }
            std::cmp::Ordering::Less => (l.reported_through, l.edge.clone()),
        };
        let list = AttributeValue::L(
            edge.iter()
                .map(|id| AttributeValue::S(id.clone()))
                .collect(),
        );
        self.update(
            l,
            "SET #through = :p, #edge = :e, #version = :n REMOVE #pending",
            Some(through),
            Some(list),
        )
        .await?;
        Ok(SummaryLedger {
            reported_through: through,
            edge,
            pending: None,
            version: l.version + 1,
        })
    }

    /// The summary surely did not go out: its invoices stay to be reported.
    pub async fn abandon(&self, l: &SummaryLedger) -> Result<SummaryLedger> {
        self.update(l, "SET #version = :n REMOVE #pending", None, None)
            .await?;
        Ok(SummaryLedger {
            pending: None,
            version: l.version + 1,
            ..l.clone()
        })
    }

    async fn update(
        &self,
        l: &SummaryLedger,
        expr: &str,
        at: Option<Timestamp>,
        edge: Option<AttributeValue>,
    ) -> Result<()> {
        let mut req = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(SUMMARY_KEY.into()))
            .update_expression(expr)
            .condition_expression("#version = :v")
            .expression_attribute_values(":v", AttributeValue::N(l.version.to_string()))
            .expression_attribute_values(":n", AttributeValue::N((l.version + 1).to_string()));
        if let Some(at) = at {
            req = req.expression_attribute_values(":p", AttributeValue::S(at.to_string()));
        }
        if let Some(edge) = edge {
            req = req.expression_attribute_values(":e", edge);
        }
        // Names, not the words themselves: a DynamoDB reserved word in an expression is
        // refused, and each name given must be used.
        for (name, attribute) in NAMES {
            if expr.contains(name) || name == "#version" {
                req = req.expression_attribute_names(name, attribute);
            }
        }
        req.send().await.map_err(|e| self.error("updating", &e))?;
        Ok(())
    }

    fn parse(&self, item: &HashMap<String, AttributeValue>) -> Result<SummaryLedger> {
        let time = |name: &str| -> Result<Option<Timestamp>> {
            match item.get(name) {
                None => Ok(None),
                Some(AttributeValue::S(s)) => s.parse().map(Some).map_err(|_| self.bad(name)),
                Some(_) => Err(self.bad(name)),
            }
        };
        let version = match item.get("version") {
            Some(AttributeValue::N(n)) => n.parse().map_err(|_| self.bad("version"))?,
            _ => return Err(self.bad("version")),
        };
        let edge = match item.get("edge") {
            None => Vec::new(),
            Some(AttributeValue::L(ids)) => ids
                .iter()
                .map(|v| match v {
                    AttributeValue::S(id) => Ok(id.clone()),
                    _ => Err(self.bad("edge")),
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(self.bad("edge")),
        };
        Ok(SummaryLedger {
            reported_through: time("reported_through")?
                .ok_or_else(|| self.bad("reported_through"))?,
            edge,
            pending: time("pending_through")?,
            version,
        })
    }

    fn bad(&self, attribute: &str) -> Error {
        Error::Fatal(
            format!(
                "the item {SUMMARY_KEY} in the job-state table {} has no valid {attribute}",
                self.table
            ),
            "delete that item (the next run starts the ledger again and reports what is sent from then on)".into(),
        )
    }

    /// A missing table or no permission is configuration (exit 2); a lost race with
    /// another run, or AWS out of reach, is fatal.
    fn error<E>(&self, doing: &str, e: &aws_sdk_dynamodb::error::SdkError<E>) -> Error
    where
        E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
    {
        match e.as_service_error().and_then(|s| s.code()) {
            Some("ResourceNotFoundException") => Error::Usage(
                format!("the job-state table {} does not exist", self.table),
                "run `deployer up` (it creates the table), or set JOB_STATE_TABLE to its name".into(),
            ),
            Some("AccessDeniedException") => Error::Usage(
                format!("the job may not use the job-state table {}", self.table),
                "let the task role call dynamodb:GetItem, PutItem and UpdateItem on it (`deployer up` grants them)".into(),
            ),
            Some("ConditionalCheckFailedException") => Error::Fatal(
                format!("another send-invoices run changed the job-state table {} at the same time", self.table),
                "let one run finish; the next one reports whatever is left".into(),
            ),
            _ => Error::aws(format!("{doing} the job-state table {}", self.table), e),
        }
    }
}

/// Keeps the lease alive every third of its length; a renewal that finds another holder
/// (this process stalled past its lease) says so and stops.
async fn renew(ledger: Ledger, key: String, holder: String, length: Duration) {
    loop {
        tokio::time::sleep(length / 3).await;
        let renewed = ledger
            .db
            .update_item()
            .table_name(&ledger.table)
            .key("pk", AttributeValue::S(key.clone()))
            .update_expression("SET #until = :until")
            .condition_expression("#holder = :me")
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":me", AttributeValue::S(holder.clone()))
            .expression_attribute_values(":until", until(length))
            .send()
            .await;
        if let Err(e) = renewed {
            tracing::error!(event = "lease_lost", lease = %key, error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "this run's lease could not be renewed: another run may start beside it");
            if e.as_service_error().is_some() {
                return;
            }
        }
    }
}

fn billed_key(period: &str) -> String {
    format!("create-invoices/billed/{period}")
}

/// The record of a month's billing runs.
#[derive(Debug, Clone)]
pub struct Billed {
    pub shard_count: u64,
    pub shards_done: Vec<u64>,
    pub shards_failed: Vec<u64>,
    /// The last run's end, RFC 3339.
    pub finished_at: String,
}

/// The billing reports sent for one period (and shard).
#[derive(Debug, Clone, Default)]
pub struct ReportState {
    pub reported: BTreeSet<String>,
    /// A report marked as being sent whose outcome no run learned.
    pub pending: Option<BTreeSet<String>>,
    pub version: u64,
}
