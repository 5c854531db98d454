//! The job's own ledger, in a DynamoDB table the stack provisions (`JOB_STATE_TABLE`):
//! for the daily summary email, which invoices it has reported. A sent invoice's
//! `DeliveryInfo.DeliveryTime` in QBO says when it went out; the ledger keeps the newest
//! time the bookkeeper was told about, and a summary about to be sent (`pending`), so
//! that a run that died before its summary is caught up by the next one, and a summary
//! whose sending had no clear answer is never sent twice. Every change is conditional on
//! the version read, so two runs cannot both move the ledger.
//!
//! The table also holds a lease per job (per month for create-invoices, whatever its
//! shards): one run at a time. A write's lost answer is only settled within one
//! process; a second run (a duplicate schedule invocation, a manual run beside the
//! scheduled one, a rerun right after a kill) waits until the first one's lease has run
//! out, which is long enough for every request it left behind to be over at the
//! service. Shards of one split share the month's lease, each in its slot with its own
//! expiry.

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
    slot: Slot,
    holder: String,
    renewer: tokio::task::JoinHandle<()>,
}

/// Which part of a job a run does: shard `k` of `n` (1 of 1 for a whole run). Runs
/// that split the work the same way (the same `n`) cover disjoint clients in each slot,
/// so they may hold one lease together, each in its own slot; a run that splits it
/// otherwise would cover the same clients as one of them, and waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub k: u64,
    pub n: u64,
}

impl Slot {
    pub const WHOLE: Self = Self { k: 1, n: 1 };
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

/// Placeholders of the lease's attributes: the slots taken (a number set), who holds
/// each and until when (maps by slot), the split they share, and the lease's expiry
/// (the latest of its slots', for a run that would take it whole).
const LEASE_NAMES: [(&str, &str); 5] = [
    ("#holders", "holders"),
    ("#by", "by"),
    ("#ends", "ends"),
    ("#n", "n"),
    ("#until", "until"),
];

/// What a slot holds once its run ended with requests that may still be under way.
const COOLING: &str = "cooling";

impl Lease {
    /// Gives the lease up. `busy` is how long requests this run left unanswered may still
    /// run at a service: the slot stays taken that long, so a rerun does not start
    /// before. The lease goes when no slot is held.
    pub async fn release(self, busy: Option<Duration>) -> Result<()> {
        self.renewer.abort();
        let (ledger, k) = (&self.ledger, self.slot.k.to_string());
        let mine = |update: &str| {
            ledger
                .lease_update(&self.key, &k, update, "#by.#k = :me")
                .expression_attribute_values(":me", AttributeValue::S(self.holder.clone()))
        };
        match busy {
            None => {
                mine("DELETE #holders :kset REMOVE #by.#k, #ends.#k")
                    .expression_attribute_values(":kset", AttributeValue::Ns(vec![k.clone()]))
                    .send()
                    .await
                    .map_err(|e| ledger.error("releasing the lease in", &e))?;
                // The last slot out removes the lease; another still held keeps it.
                let gone = ledger
                    .db
                    .delete_item()
                    .table_name(&ledger.table)
                    .key("pk", AttributeValue::S(self.key.clone()))
                    .condition_expression("attribute_not_exists(#holders)")
                    .expression_attribute_names("#holders", "holders")
                    .send()
                    .await;
                match gone {
                    Err(e) if !is_condition_failed(&e) => {
                        Err(ledger.error("releasing the lease in", &e))
                    }
                    _ => Ok(()),
                }
            }
            Some(busy) => {
                mine("SET #by.#k = :cooling, #ends.#k = :later")
                    .expression_attribute_values(":cooling", AttributeValue::S(COOLING.into()))
                    .expression_attribute_values(":later", until(busy))
                    .send()
                    .await
                    .map_err(|e| ledger.error("releasing the lease in", &e))?;
                // The lease lasts at least `busy` more; a later expiry (another slot
                // at work) stays.
                let longer = ledger
                    .lease_update(&self.key, &k, "SET #until = :until", "#until < :until")
                    .expression_attribute_values(":until", until(busy))
                    .send()
                    .await;
                match longer {
                    Err(e) if !is_condition_failed(&e) => {
                        Err(ledger.error("releasing the lease in", &e))
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

/// Whether a DynamoDB write was refused by its condition.
fn is_condition_failed<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(aws_sdk_dynamodb::error::ProvideErrorMetadata::code)
        == Some("ConditionalCheckFailedException")
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

    /// Takes `slot` of the lease `key` for `length` (renewed every third of it while
    /// the run goes on). Held by a run that splits the work otherwise, or in the same
    /// slot, it waits up to `length` for that run to end or its lease to run out.
    pub async fn lease(&self, key: &str, slot: Slot, length: Duration) -> Result<Leased> {
        let holder = format!("{}-{}", std::process::id(), fastrand::u64(..));
        let k = slot.k.to_string();
        let waited_from = std::time::Instant::now();
        loop {
            let now = AttributeValue::N(Timestamp::now().as_second().to_string());
            // A new lease where there is none, or where the last one ran out...
            let fresh = self
                .db
                .put_item()
                .table_name(&self.table)
                .item("pk", AttributeValue::S(key.to_owned()))
                .item("n", AttributeValue::N(slot.n.to_string()))
                .item("holders", AttributeValue::Ns(vec![k.clone()]))
                .item(
                    "by",
                    AttributeValue::M(HashMap::from([(
                        k.clone(),
                        AttributeValue::S(holder.clone()),
                    )])),
                )
                .item(
                    "ends",
                    AttributeValue::M(HashMap::from([(k.clone(), until(length))])),
                )
                .item("until", until(length))
                .condition_expression("attribute_not_exists(pk) OR #until < :now")
                .expression_attribute_names("#until", "until")
                .expression_attribute_values(":now", now.clone())
                .send()
                .await;
            let taken = match fresh {
                Ok(_) => true,
                Err(e) if is_condition_failed(&e) => {
                    // ...or a slot of a live lease that splits the work as this run does,
                    // free or run out (a killed shard's, or one cooling no more).
                    let joined = self
                        .lease_update(
                            key,
                            &k,
                            "ADD #holders :kset SET #by.#k = :me, #ends.#k = :until, #until = :until",
                            "#n = :n AND #until >= :now AND (attribute_not_exists(#ends.#k) OR #ends.#k < :now)",
                        )
                        .expression_attribute_values(":kset", AttributeValue::Ns(vec![k.clone()]))
                        .expression_attribute_values(":n", AttributeValue::N(slot.n.to_string()))
                        .expression_attribute_values(":me", AttributeValue::S(holder.clone()))
                        .expression_attribute_values(":until", until(length))
                        .expression_attribute_values(":now", now)
                        .send()
                        .await;
                    match joined {
                        Ok(_) => true,
                        Err(e) if is_condition_failed(&e) => false,
                        Err(e) => return Err(self.error("taking the lease in", &e)),
                    }
                }
                Err(e) => return Err(self.error("taking the lease in", &e)),
            };
            if taken {
                let renewer = tokio::spawn(renew(
                    self.clone(),
                    key.to_owned(),
                    k.clone(),
                    holder.clone(),
                    length,
                ));
                return Ok(Leased::Held(Lease {
                    ledger: self.clone(),
                    key: key.to_owned(),
                    slot,
                    holder,
                    renewer,
                }));
            }
            let held_until = self.lease_until(key).await?;
            if waited_from.elapsed() > length + Duration::from_secs(1) {
                return Ok(Leased::Busy {
                    until: held_until.unwrap_or_else(Timestamp::now),
                });
            }
            tracing::info!(
                event = "lease_wait",
                lease = key,
                slot = %format!("{}/{}", slot.k, slot.n),
                until = %held_until.map(|t| t.to_string()).unwrap_or_default(),
                "another run holds this job (or these clients), or ended less than its lease ago: waiting"
            );
            tokio::time::sleep((length / 4).max(Duration::from_millis(500))).await;
        }
    }

    /// An update of the lease `key`: `update` if `condition` holds, with the
    /// placeholders they use (DynamoDB refuses an unused one), `#k` naming `slot`.
    fn lease_update(
        &self,
        key: &str,
        slot: &str,
        update: &str,
        condition: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        let mut builder = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.to_owned()))
            .update_expression(update)
            .condition_expression(condition);
        let used = |p: &str| update.contains(p) || condition.contains(p);
        if used("#k") {
            builder = builder.expression_attribute_names("#k", slot);
        }
        for (placeholder, name) in LEASE_NAMES {
            if used(placeholder) {
                builder = builder.expression_attribute_names(placeholder, name);
            }
        }
        builder
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
    /// itself, so `--check-billed` can tell a month that ran from one that did not. A
    /// run of the whole month also marks the month whole, which a later shard rerun
    /// (another count) does not undo.
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
            .update_expression(match (success, n) {
                (true, 1) => "SET #at = :now, #count = :n, #whole = :now ADD #done :k",
                (true, _) => "SET #at = :now, #count = :n ADD #done :k",
                (false, 1) => "SET #at = :now, #count = :n, #whole = :now ADD #done :k, #failed :k",
                (false, _) => "SET #at = :now, #count = :n ADD #done :k, #failed :k",
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
        if n == 1 {
            update = update.expression_attribute_names("#whole", "whole_month_at");
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
            whole_month: item.contains_key("whole_month_at"),
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
                format!("another run changed this job's record in the job-state table {} at the same time ({doing} it)", self.table),
                "let one run finish; the next one does whatever is left".into(),
            ),
            _ => Error::aws(format!("{doing} the job-state table {}", self.table), e),
        }
    }
}

/// Keeps the lease alive while the run goes on. A write that fails (throttled, a lost
/// answer) is tried again well before the lease runs out; only a lease taken over by
/// another run (its slot no longer this run's) ends the renewing.
async fn renew(ledger: Ledger, key: String, slot: String, holder: String, length: Duration) {
    let mut wait = length / 3;
    loop {
        tokio::time::sleep(wait).await;
        let renewing = ledger
            .lease_update(
                &key,
                &slot,
                "SET #ends.#k = :until, #until = :until",
                "#by.#k = :me",
            )
            .expression_attribute_values(":me", AttributeValue::S(holder.clone()))
            .expression_attribute_values(":until", until(length))
            .send();
        // The SDK's own backoff on a throttled write could outlast the lease: each
        // renewal gets a sixth of it, then the next one goes.
        let why = match tokio::time::timeout(length / 6, renewing).await {
            Ok(Ok(_)) => {
                wait = length / 3;
                continue;
            }
            Ok(Err(e)) if is_condition_failed(&e) => {
                tracing::error!(event = "lease_lost", lease = %key, "this run's lease was taken over (it ran out): another run may start beside it");
                return;
            }
            Ok(Err(e)) => aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string(),
            Err(_) => "no answer in time".to_owned(),
        };
        tracing::warn!(event = "lease_renew_retry", lease = %key, error = %why, "renewing the lease failed; trying again");
        wait = (length / 12).max(Duration::from_millis(200));
    }
}

fn billed_key(period: &str) -> String {
    format!("create-invoices/billed/{period}")
}

/// The record of a month's billing runs.
#[derive(Debug, Clone)]
pub struct Billed {
    /// A run of the whole month (not sharded) finished.
    pub whole_month: bool,
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
