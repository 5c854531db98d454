//! `--create-invoices`: for each active client in range, robot minutes of the billing
//! month from Control Room -> one ClickUp time entry -> one QBO invoice. The
//! destinations' own keys are the ledger (the DocNumber in QBO, with `requestid` as a
//! help; the entry description in ClickUp): each is read before it is written, and
//! read again after any answer that was lost, so a rerun after any crash finishes the
//! rest and never bills twice. Clients run concurrently; each service's limits are held
//! by its client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::civil::Date;
use jiff::{Timestamp, Zoned};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::batch::{Batched, Batcher};
use super::{Context, Summary};
use crate::api::ApiError;
use crate::api::clickup::{ClickUp, Ensured, Entry};
use crate::api::control_room::{ControlRoom, Run};
use crate::api::qbo::{self, Qbo};
use crate::clients::{ClientRow, Selection};
use crate::error::{Error, Result};
use crate::report::Progress;
use crate::secrets::{ClickUpSecret, RobocorpKeys};

#[derive(Debug, Clone)]
pub struct Options {
    pub dry_run: bool,
    pub period: Option<Date>,
    pub selection: Selection,
    pub concurrency: usize,
    /// Whether this run bills every client of the month (no `--clients`): it then
    /// records that the month was billed, for `--check-billed`.
    pub whole_month: bool,
    /// With `--dry-run`: where the billing report goes (its CSV beside it).
    pub report_out: std::path::PathBuf,
}

/// From this many invoices to create, they go in batches (see `batch.rs`): a batch of
/// even two costs one QBO request instead of two.
const BATCH_FROM: usize = 2;

/// The billing month: `[start, end)` in the billing time zone.
#[derive(Debug, Clone)]
pub struct Period {
    pub first: Date,
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Period {
    pub fn of(first: Date, tz: &jiff::tz::TimeZone) -> Result<Self> {
        let first = first.first_of_month();
        let next = first
            .last_of_month()
            .tomorrow()
            .map_err(|e| Error::Usage(e.to_string(), "pick a month before 9999".into()))?;
        let at = |d: Date| d.to_zoned(tz.clone()).map(|z| z.timestamp());
        Ok(Self {
            first,
            start: at(first)
                .map_err(|e| Error::Usage(e.to_string(), "check BILLING_TIMEZONE".into()))?,
            end: at(next)
                .map_err(|e| Error::Usage(e.to_string(), "check BILLING_TIMEZONE".into()))?,
        })
    }

    /// The month before `today`'s.
    pub fn previous(today: &Zoned) -> Date {
        today
            .date()
            .first_of_month()
            .yesterday()
            .expect("not the first day ever")
            .first_of_month()
    }

    /// `2026-10`.
    pub fn label(&self) -> String {
        self.first.strftime("%Y-%m").to_string()
    }

    /// `202610`, the DocNumber suffix.
    pub fn compact(&self) -> String {
        self.first.strftime("%Y%m").to_string()
    }
}

/// What the runs of a workspace bill for the period.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Finished runs (completed or unresolved) started in the period, each from
    /// `duration` or else `ended_at - started_at`, summed and rounded up to the minute.
    pub minutes: u64,
    /// Finished runs with neither duration nor end: not billed.
    pub unmeasured: Vec<String>,
    /// Runs started in the period and still going: not billed now, nor next month
    /// (they did not start then), so reported by id.
    pub in_progress: Vec<String>,
}

/// Billable minutes of the runs that started in the period.
pub fn minutes(runs: &[Run], period: &Period) -> Tally {
    let mut millis: u64 = 0;
    let mut tally = Tally::default();
    for run in runs {
        let Some(started) = run.started_at else {
            continue;
        };
        if started < period.start || started >= period.end {
            continue;
        }
        if !matches!(run.state.as_str(), "completed" | "unresolved") {
            tally.in_progress.push(run.id.clone());
            continue;
        }
        let ms = match (run.duration, run.ended_at) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            (Some(secs), _) if secs.is_finite() && secs >= 0.0 => (secs * 1000.0).round() as u64,
            (_, Some(ended)) if ended >= started => {
                u64::try_from(ended.duration_since(started).as_millis()).unwrap_or(0)
            }
            _ => {
                tally.unmeasured.push(run.id.clone());
                continue;
            }
        };
        millis += ms;
    }
    tally.minutes = millis.div_ceil(60_000);
    tally
}

/// `minutes x rate`, rounded half-up to cents.
pub fn amount(minutes: u64, rate: Decimal) -> Decimal {
    (Decimal::from(minutes) * rate)
        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// A decimal as a JSON number with exactly its digits.
fn number(d: Decimal) -> Value {
    serde_json::from_str(&d.normalize().to_string()).unwrap_or(Value::Null)
}

/// What happened to one client.
#[derive(Debug)]
enum Outcome {
    Invoiced,
    Would,
    AlreadyInvoiced,
    NoMinutes,
    Failed(String),
}

/// What one client's billing also found, for the run's counts.
#[derive(Debug, Default)]
struct Notes {
    /// Ids of the client's runs still going at billing time.
    runs_in_progress: Vec<String>,
    /// Ids of the client's finished runs with neither duration nor end: not billed.
    runs_unmeasured: Vec<String>,
    /// With `--dry-run`: the invoice the run would create, for the report.
    would: Option<Value>,
    /// Invoiced with EmailStatus NotSet: the customer has no email address.
    not_emailed: bool,
}

/// A client ready to bill: its row, QBO customer and rate.
#[derive(Debug)]
struct Candidate {
    row: ClientRow,
    customer: Value,
    rate: Decimal,
    /// The invoice's number: the client's first number unless another customer's
    /// invoice took it (see [`numbers`]).
    doc: String,
}

#[derive(Debug)]
struct Services {
    qbo: Arc<Qbo>,
    /// Batches the invoices when the month has more than one to create.
    batcher: Option<Batcher>,
    clickup: ClickUp,
    /// The period's ClickUp entries, read once (none on a dry run).
    entries: Vec<Entry>,
    control_room: ControlRoom,
    keys: RobocorpKeys,
    keys_secret: String,
    item: Value,
    period: Period,
    today: Date,
    dry_run: bool,
    settle: Duration,
}

pub async fn run(ctx: &Context, opts: &Options) -> Result<Summary> {
    let config = &ctx.config;
    let today = Zoned::now().with_time_zone(config.timezone.clone());
    let first = opts.period.unwrap_or_else(|| Period::previous(&today));
    let period = Period::of(first, &config.timezone)?;
    if period.first >= today.date().first_of_month() && !opts.dry_run {
        return Err(Error::Usage(
            format!(
                "{} is not over in {}: billing it now would invoice part of the month, and the scheduled run would then skip those clients as already invoiced",
                period.label(),
                config.timezone.iana_name().unwrap_or("the billing time zone")
            ),
            "bill a month that has ended (the default is last month), or look at this one with --dry-run".into(),
        ));
    }
    // One lease per month, whatever the shard settings: a shard joins the month's run
    // (shards of one split cover disjoint clients), a run split otherwise waits.
    let key = format!("lease/create-invoices/{}", period.label());
    let slot = opts
        .selection
        .shard
        .map_or(crate::state::Slot::WHOLE, |s| crate::state::Slot {
            k: s.k,
            n: s.n,
        });
    // Boxed: the job's future is large.
    let label = period.label();
    let job = Box::pin(bill_month(ctx, opts, period, today));
    let summary = super::exclusive(ctx, "create-invoices", key, slot, opts.dry_run, job).await?;
    // Only a run that billed: not a dry run, not one stopped by a signal, not one that
    // found the month's lease held by another run and did nothing.
    if opts.whole_month && !opts.dry_run && summary.stopped.is_none() && summary.busy.is_none() {
        let ledger = crate::state::Ledger::new(ctx.db.clone(), &config.state_table);
        let shard = opts.selection.shard.map(|s| (s.k, s.n));
        // The report's own failure does not make the month's billing a failure.
        let clients_failed = summary
            .failures
            .iter()
            .any(|(id, _)| id != super::billing_report::REPORT_ID);
        if let Err(e) = ledger.record_billed(&label, shard, !clients_failed).await {
            // The invoices stand; only the missed-run check will say this month is missing.
            tracing::error!(event = "billing_record_failed", period = %label, error = %e, "the run is done, but recording it failed: the missed-run check will report this month");
        }
    }
    Ok(summary)
}

/// `--check-billed`: whether the month's billing runs happened (every shard), for the
/// missed-run alert. Read-only.
pub async fn check_billed(ctx: &Context, period: Option<Date>) -> Result<Summary> {
    let config = &ctx.config;
    let today = Zoned::now().with_time_zone(config.timezone.clone());
    let first = period.unwrap_or_else(|| Period::previous(&today));
    let label = Period::of(first, &config.timezone)?.label();
    let ledger = crate::state::Ledger::new(ctx.db.clone(), &config.state_table);
    let mut summary = Summary::new("check-billed", false);
    summary.total = 1;
    let fix = format!(
        "run it: `deployer run-task create --env ENV -- --period {label}` (a rerun bills only clients not yet invoiced), then see `deployer logs` for why the schedule did not"
    );
    match ledger.billed(&label).await? {
        None => summary.fail(
            &label,
            format!("no billing run of {label} has finished; {fix}"),
        ),
        Some(b) => {
            let missing: Vec<String> = (1..=b.shard_count)
                .filter(|k| !b.whole_month && !b.shards_done.contains(k))
                .map(|k| format!("{k}/{}", b.shard_count))
                .collect();
            if missing.is_empty() {
                tracing::info!(
                    event = "billed",
                    period = %label,
                    finished_at = %b.finished_at,
                    shards = b.shard_count,
                    shards_with_failures = ?b.shards_failed,
                    "the month's billing run finished"
                );
                summary.done += 1;
            } else {
                summary.fail(
                    &label,
                    format!(
                        "shards {} of {label} have not finished; {fix}",
                        missing.join(", ")
                    ),
                );
            }
        }
    }
    Ok(summary)
}

async fn bill_month(
    ctx: &Context,
    opts: &Options,
    period: Period,
    today: Zoned,
) -> Result<Summary> {
    let config = &ctx.config;
    let (qbo, clickup_secret, keys) = tokio::try_join!(
        ctx.qbo(),
        ctx.secrets.get::<ClickUpSecret>(&config.secrets.clickup),
        ctx.secrets.get::<RobocorpKeys>(&config.secrets.robocorp),
    )?;
    // QBO's token while the table is read: the first QBO query waits for neither.
    let (rows, signed_in) = tokio::join!(
        crate::clients::scan(&ctx.db, &config.table, opts.selection),
        qbo.sign_in()
    );
    let rows = rows?;
    signed_in.map_err(super::fatal)?;
    let mut summary = started(ctx, opts, &period, rows.len());
    let ready = ready_rows(ctx, rows, &mut summary);
    let clients: Vec<String> = ready.iter().map(|r| r.client_id.clone()).collect();
    let looked_up = look_up(&qbo, &ready, &period, &config.item_name)
        .await
        .map_err(super::fatal)?;
    let (item, item_price) = billed_item(ctx, &looked_up.item)?;
    let (candidates, customers) =
        candidates(ctx, &looked_up, ready, &period, item_price, &mut summary);
    let services = services(
        ctx,
        opts,
        qbo,
        clickup_secret,
        keys,
        item,
        period,
        today,
        &candidates,
    )
    .await?;
    let gathered = bill_candidates(ctx, opts, &services, candidates, &mut summary).await?;
    let Some(Gathered {
        would,
        mut in_progress,
        mut unmeasured,
    }) = gathered
    else {
        return Ok(summary);
    };
    // A report goes to the bookkeeper from the sender: with neither address set (they
    // are optional for this job) there is nothing to send, nor to read for it.
    if !opts.dry_run && (config.sender_email.is_none() || config.bookkeeper_email.is_none()) {
        tracing::info!(
            event = "report_skipped",
            "SENDER_EMAIL or BOOKKEEPER_EMAIL is not set: no billing report"
        );
        return Ok(summary);
    }
    in_progress.sort();
    unmeasured.sort();
    let reported = Reported {
        clients,
        customers,
        would,
        in_progress,
        unmeasured,
    };
    // The invoices stand whatever happens to the report: its failure is the report's
    // alone, and the month still counts as billed.
    if let Err(e) = report(ctx, opts, &services, reported, &mut summary).await {
        summary.fail(
            super::billing_report::REPORT_ID,
            format!("no billing report: {e}"),
        );
    }
    Ok(summary)
}

/// The run's summary, begun, and its `run_started` line.
fn started(ctx: &Context, opts: &Options, period: &Period, clients: usize) -> Summary {
    let config = &ctx.config;
    let mut summary = Summary::new("create-invoices", opts.dry_run);
    summary.total = clients as u64;
    summary.shard = opts.selection.shard.map(|s| format!("{}/{}", s.k, s.n));
    summary.run_group.clone_from(&config.run_group);
    tracing::info!(
        event = "run_started",
        job = "create-invoices",
        shard = opts.selection.shard.map(|s| format!("{}/{}", s.k, s.n)),
        run_group = config.run_group,
        period = %period.label(),
        clients = clients,
        dry_run = opts.dry_run,
        concurrency = opts.concurrency
    );
    summary
}

/// The table's rows to bill: malformed items failed, inactive and excluded ones skipped.
fn ready_rows(
    ctx: &Context,
    rows: Vec<std::result::Result<ClientRow, crate::clients::BadItem>>,
    summary: &mut Summary,
) -> Vec<ClientRow> {
    let mut ready = Vec::new();
    for row in rows {
        match row {
            Err(bad) => summary.fail(
                &bad.key,
                format!(
                    "the client table item is malformed: {}",
                    bad.problems.join("; ")
                ),
            ),
            Ok(row) if !row.active => summary.skip(&row.client_id, "inactive"),
            Ok(row) if ctx.config.excluded.contains(&row.display_name()) => {
                summary.skip(&row.client_id, "excluded customer");
            }
            Ok(row) => ready.push(row),
        }
    }
    ready
}

/// The QBO item invoices bill, and its price (none when it has none: billing at 0 would
/// send $0.00 invoices).
fn billed_item(
    ctx: &Context,
    looked_up: &std::result::Result<Option<Value>, ApiError>,
) -> Result<(Value, Option<Decimal>)> {
    let config = &ctx.config;
    let item = match looked_up {
        Ok(Some(item)) => item.clone(),
        Ok(None) => {
            return Err(Error::Usage(
                format!("QBO has no active item named {:?}", config.item_name),
                "create that service item in QBO, or set QBO_ITEM_NAME to the item invoices should use"
                    .into(),
            ));
        }
        Err(e) => {
            return Err(Error::Fatal(
                format!("looking up the QBO item {:?} failed: {e}", config.item_name),
                "check QBO's status, then run the job again".into(),
            ));
        }
    };
    let item_price = item["UnitPrice"]
        .as_f64()
        .and_then(|p| p.to_string().parse::<Decimal>().ok())
        .filter(|p| *p > Decimal::ZERO);
    Ok((item, item_price))
}

/// The clients ready to bill, each with its QBO customer, invoice number and rate (the
/// others failed, skipped or already invoiced in `summary`), and each client's customer
/// id for the report.
fn candidates(
    ctx: &Context,
    looked_up: &LookedUp,
    ready: Vec<ClientRow>,
    period: &Period,
    item_price: Option<Decimal>,
    summary: &mut Summary,
) -> (Vec<Candidate>, BTreeMap<String, Value>) {
    let config = &ctx.config;
    let mut candidates = Vec::new();
    // Each client's QBO customer, for the report to tell its invoices from others'.
    let mut customers: BTreeMap<String, Value> = BTreeMap::new();
    for row in ready {
        if let Some(why) = looked_up.failed.get(&row.client_id) {
            summary.fail(
                &row.client_id,
                format!(
                    "looking it up in QBO failed, so it was not billed: {why}; run the job again"
                ),
            );
            continue;
        }
        let customer = match &row.qbo_customer_id {
            Some(id) => looked_up.by_id.get(id),
            None => looked_up.by_name.get(&row.display_name()),
        };
        let Some(customer) = customer.cloned() else {
            let how = row.qbo_customer_id.as_ref().map_or_else(
                || format!("no QBO customer has DisplayName {:?}; create it or set qbo_customer_id in the table", row.display_name()),
                |id| format!("no active QBO customer has Id {id}; fix qbo_customer_id in the table"),
            );
            summary.fail(&row.client_id, how);
            continue;
        };
        if customer["DisplayName"]
            .as_str()
            .is_some_and(|n| config.excluded.contains(n))
        {
            summary.skip(&row.client_id, "excluded customer");
            continue;
        }
        customers.insert(row.client_id.clone(), customer["Id"].clone());
        // The client's invoice is one of its numbers *for its customer*: a number
        // another customer's invoice took does not count, and the other one is used.
        // QBO takes a DocNumber of at most 21 characters (Intuit .NET SDK reference,
        // Transaction.DocNumber).
        if let Some(long) = numbers(&row.client_id, &period.compact())
            .iter()
            .find(|d| d.len() > DOC_NUMBER_MAX)
        {
            summary.fail(
                &row.client_id,
                format!(
                    "its invoice number {long} would be longer than QBO's {DOC_NUMBER_MAX} characters; use a client_id of at most 12 characters"
                ),
            );
            continue;
        }
        let doc = match numbered(&looked_up.invoiced, &row, period, &customer) {
            Numbered::Invoiced(doc) => {
                summary.already(&row.client_id, &doc);
                continue;
            }
            Numbered::Free(doc) => doc,
            Numbered::Taken(docs) => {
                summary.fail(
                    &row.client_id,
                    format!(
                        "invoice numbers {} are taken by other customers' invoices in QBO; renumber those invoices, then run the job again",
                        docs.join(" and ")
                    ),
                );
                continue;
            }
        };
        let Some(rate) = row.rate_per_minute.or(item_price) else {
            summary.fail(
                &row.client_id,
                format!(
                    "no rate: set rate_per_minute in the table or a price on the QBO item {:?}",
                    config.item_name
                ),
            );
            continue;
        };
        candidates.push(Candidate {
            row,
            customer,
            rate,
            doc,
        });
    }
    (candidates, customers)
}

/// What billing a client needs: QBO (batched when there are enough invoices), ClickUp
/// with the period's entries read once, Control Room.
#[allow(clippy::too_many_arguments)]
async fn services(
    ctx: &Context,
    opts: &Options,
    qbo: Qbo,
    clickup_secret: ClickUpSecret,
    keys: RobocorpKeys,
    item: Value,
    period: Period,
    today: Zoned,
    candidates: &[Candidate],
) -> Result<Services> {
    let config = &ctx.config;
    let clickup = ClickUp::new(
        &clickup_secret,
        &config.urls.clickup,
        config.settle,
        config.share,
    );
    // The period's entries, once: one ClickUp call for the run, then one per entry made.
    let entries = if opts.dry_run || candidates.is_empty() {
        Vec::new()
    } else {
        clickup
            .entries(period.start.as_millisecond(), period.end.as_millisecond())
            .await
            .map_err(super::fatal)?
    };
    let qbo = Arc::new(qbo);
    let batcher = (!opts.dry_run && candidates.len() >= BATCH_FROM)
        .then(|| Batcher::start(Arc::clone(&qbo), config.settle, candidates.len()));
    Ok(Services {
        qbo,
        batcher,
        clickup,
        entries,
        control_room: ControlRoom::new(&config.urls.robocorp, config.settle),
        keys,
        keys_secret: config.secrets.robocorp.clone(),
        item,
        period,
        today: today.date(),
        dry_run: opts.dry_run,
        settle: config.settle,
    })
}

/// What billing every candidate gathered for the report.
struct Gathered {
    would: Vec<Value>,
    in_progress: Vec<(String, String)>,
    unmeasured: Vec<(String, String)>,
}

/// Bills every candidate, `opts.concurrency` at a time, counting each outcome in
/// `summary`; `None` when the run was stopped (its report would be partial: the rerun's
/// covers it all).
async fn bill_candidates(
    ctx: &Context,
    opts: &Options,
    services: &Services,
    candidates: Vec<Candidate>,
    summary: &mut Summary,
) -> Result<Option<Gathered>> {
    let (progress, ticker) = Progress::start(
        "create-invoices",
        candidates.len() as u64,
        Duration::from_secs(10),
    );
    let mut fatal = None;
    let (mut in_progress, mut unmeasured, mut would) = (Vec::new(), Vec::new(), Vec::new());
    let unfinished = super::run_all(
        candidates,
        opts.concurrency,
        &ctx.stop,
        |c| {
            let progress = &progress;
            async move {
                let billed = bill(services, &c).await;
                progress.tick();
                (c.row.client_id, c.doc, billed)
            }
        },
        |(client, doc, billed)| match billed {
            Ok((outcome, notes)) => {
                summary.runs_in_progress += notes.runs_in_progress.len() as u64;
                summary.runs_unmeasured += notes.runs_unmeasured.len() as u64;
                unmeasured.extend(
                    notes
                        .runs_unmeasured
                        .into_iter()
                        .map(|run| (client.clone(), run)),
                );
                in_progress.extend(
                    notes
                        .runs_in_progress
                        .into_iter()
                        .map(|run| (client.clone(), run)),
                );
                would.extend(notes.would);
                summary.not_emailed += u64::from(notes.not_emailed);
                match outcome {
                    Outcome::Invoiced => summary.done += 1,
                    Outcome::Would => summary.would += 1,
                    Outcome::AlreadyInvoiced => summary.already(&client, &doc),
                    Outcome::NoMinutes => summary.no_minutes(&client),
                    Outcome::Failed(why) => summary.fail(&client, why),
                }
                true
            }
            Err(e) => {
                fatal.get_or_insert(e);
                false
            }
        },
    )
    .await;
    ticker.abort();
    progress.finish();
    if let Some(e) = fatal {
        return Err(super::fatal(e));
    }
    if let Some(reason) = ctx.stop.reason() {
        summary.stopped = Some((reason, unfinished));
        return Ok(None);
    }
    Ok(Some(Gathered {
        would,
        in_progress,
        unmeasured,
    }))
}

/// What the run gathered for its billing report.
struct Reported {
    clients: Vec<String>,
    customers: BTreeMap<String, Value>,
    would: Vec<Value>,
    in_progress: Vec<(String, String)>,
    unmeasured: Vec<(String, String)>,
}

/// Builds the billing report from QBO and sends it once (a dry run writes it to
/// `--report-out` instead). A failure here is the report's only.
async fn report(
    ctx: &Context,
    opts: &Options,
    services: &Services,
    reported: Reported,
    summary: &mut Summary,
) -> Result<()> {
    let config = &ctx.config;
    let period = &services.period;
    let previous = period
        .first
        .checked_sub(jiff::Span::new().months(1))
        .map_err(|e| Error::Fatal(e.to_string(), "report this".into()))?;
    let inputs = super::billing_report::Inputs {
        period_label: period.label(),
        compact: (period.compact(), previous.strftime("%Y%m").to_string()),
        clients: reported.clients,
        would: reported.would,
        in_progress: reported.in_progress,
        unmeasured: reported.unmeasured,
        customers: reported.customers,
        summary: &*summary,
    };
    let report = super::billing_report::build(&services.qbo, &inputs).await?;
    if opts.dry_run {
        return super::billing_report::write(&report, &opts.report_out);
    }
    let graph_secret = ctx
        .secrets
        .get::<crate::secrets::GraphSecret>(&config.secrets.msgraph)
        .await?;
    let graph = crate::api::graph::Graph::new(
        &graph_secret,
        &config.urls.graph,
        &config.urls.login,
        config.settle,
    );
    let ledger = crate::state::Ledger::new(ctx.db.clone(), &config.state_table);
    let key = match opts.selection.shard {
        Some(s) => format!(
            "create-invoices/report/{}/{}-of-{}",
            period.label(),
            s.k,
            s.n
        ),
        None => format!("create-invoices/report/{}", period.label()),
    };
    super::billing_report::deliver(&graph, config, &ledger, &key, report, summary).await
}

/// The longest DocNumber QBO takes.
const DOC_NUMBER_MAX: usize = 21;

/// The numbers a client's invoice for `period` may have, in the order they are used:
/// `{client}-{YYYYMM}`, and `{client}-{YYYYMM}-Q` when another customer's invoice took
/// the first. QBO proposes a hand-made invoice's number by adding one to the trailing
/// digits of the last number (prefixes kept), so after the job's `10999-202610` a
/// bookkeeper's next invoice gets `10999-202611`, next month's number for client
/// 10999; a number ending in a letter is never reached that way.
pub fn numbers(client_id: &str, compact: &str) -> [String; 2] {
    let first = format!("{client_id}-{compact}");
    let second = format!("{first}-Q");
    [first, second]
}

/// Whether `invoice` bills `customer_id`.
pub fn belongs(invoice: &Value, customer_id: &Value) -> bool {
    !customer_id.is_null() && invoice["CustomerRef"]["value"] == *customer_id
}

/// The private note the job puts on a client's invoice for a month (`2026-10`): a mark
/// no hand-made invoice carries, which stays if a person moves the invoice to another
/// customer (QBO prepends "Voided" to it on a void).
pub fn marker(client_id: &str, label: &str) -> String {
    format!("Robot minutes {label}, client {client_id}")
}

/// Whether `invoice` carries `marker` (and not a longer client id that starts alike).
pub fn marked(invoice: &Value, marker: &str) -> bool {
    invoice["PrivateNote"].as_str().is_some_and(|note| {
        note.match_indices(marker)
            .any(|(at, _)| !note[at + marker.len()..].starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// Whether `invoice` is the client's: it bills the client's customer, or the job made
/// it for the client (a person may have moved it to another customer since: billing
/// again would bill twice).
pub fn is_clients(invoice: &Value, customer_id: &Value, marker: &str) -> bool {
    belongs(invoice, customer_id) || marked(invoice, marker)
}

/// What the client's numbers hold in QBO.
#[derive(Debug, PartialEq, Eq)]
enum Numbered {
    /// An invoice of the client's customer has this number: billed.
    Invoiced(String),
    /// Not billed; the first number no other customer's invoice holds.
    Free(String),
    /// Every number is another customer's.
    Taken(Vec<String>),
}

fn numbered(
    invoiced: &BTreeMap<String, Vec<Value>>,
    row: &ClientRow,
    period: &Period,
    customer: &Value,
) -> Numbered {
    let docs = numbers(&row.client_id, &period.compact());
    let held = |doc: &String| invoiced.get(doc).map_or(&[][..], Vec::as_slice);
    let mark = marker(&row.client_id, &period.label());
    for doc in &docs {
        if let Some(inv) = held(doc)
            .iter()
            .find(|i| is_clients(i, &customer["Id"], &mark))
        {
            if !belongs(inv, &customer["Id"]) {
                tracing::warn!(
                    event = "invoice_customer_changed",
                    client_id = %row.client_id,
                    doc_number = %doc,
                    customer = inv["CustomerRef"]["name"].as_str().unwrap_or_default(),
                    "the job's invoice for this client now bills another customer (moved in QBO?): not billed again; move it back if that was a mistake"
                );
            }
            return Numbered::Invoiced(doc.clone());
        }
    }
    match docs.iter().find(|d| held(d).is_empty()) {
        Some(doc) => {
            if doc != &docs[0] {
                tracing::warn!(
                    event = "invoice_number_taken",
                    client_id = %row.client_id,
                    taken = %docs[0],
                    doc_number = %doc,
                    "another customer's invoice has this client's invoice number (a hand-made invoice QBO numbered after the job's last one): the client's invoice gets the other number"
                );
            }
            Numbered::Free(doc.clone())
        }
        None => Numbered::Taken(docs.to_vec()),
    }
}

/// What the up-front queries found.
#[derive(Debug)]
pub struct LookedUp {
    /// Invoices by DocNumber (more than one where the company allows duplicates).
    pub invoiced: BTreeMap<String, Vec<Value>>,
    pub by_id: BTreeMap<String, Value>,
    pub by_name: BTreeMap<String, Value>,
    /// The item, or why its query failed.
    pub item: Result<Option<Value>, ApiError>,
    /// Clients a failed query covered, and its error: they are not billed this run.
    pub failed: BTreeMap<String, String>,
}

/// The period's existing DocNumbers, the customers and the item, in as few requests
/// as QBO's batch allows (30 queries each, 100 values per `IN`). A query that fails
/// fails only the clients it covers; `Err` only when QBO cannot be used at all.
pub async fn look_up(
    qbo: &Qbo,
    rows: &[ClientRow],
    period: &Period,
    item_name: &str,
) -> Result<LookedUp, ApiError> {
    const IN: usize = 100;
    let in_list = |rows: &[&ClientRow], key: &dyn Fn(&ClientRow) -> Vec<String>| {
        rows.iter()
            .flat_map(|r| key(r))
            .map(|k| qbo::quote(&k))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ids = |rows: &[&ClientRow]| rows.iter().map(|r| r.client_id.clone()).collect();
    let all: Vec<&ClientRow> = rows.iter().collect();
    let by_id: Vec<&ClientRow> = rows
        .iter()
        .filter(|r| r.qbo_customer_id.is_some())
        .collect();
    let by_name: Vec<&ClientRow> = rows
        .iter()
        .filter(|r| r.qbo_customer_id.is_none())
        .collect();
    // Each query, and the clients it covers (none: the item, which every client needs).
    let mut queries: Vec<(String, Vec<String>)> = vec![(
        format!(
            "SELECT * FROM Item WHERE Name = {} AND Active = true",
            qbo::quote(item_name)
        ),
        Vec::new(),
    )];
    // A page of 1000 holds the answer to an IN of 100 keys (ten invoices per number
    // where the company allows duplicates): both numbers of 50 clients.
    queries.extend(all.chunks(IN / 2).map(|c| {
        (
            format!(
                "SELECT * FROM Invoice WHERE DocNumber IN ({}) MAXRESULTS 1000",
                in_list(c, &|r| numbers(&r.client_id, &period.compact()).to_vec())
            ),
            ids(c),
        )
    }));
    queries.extend(by_id.chunks(IN).map(|c| {
        (
            format!(
                "SELECT * FROM Customer WHERE Id IN ({}) AND Active = true MAXRESULTS 1000",
                in_list(c, &|r| vec![r.qbo_customer_id.clone().unwrap_or_default()])
            ),
            ids(c),
        )
    }));
    queries.extend(by_name.chunks(IN).map(|c| {
        (
            format!(
                "SELECT * FROM Customer WHERE DisplayName IN ({}) AND Active = true MAXRESULTS 1000",
                in_list(c, &|r| vec![r.display_name()])
            ),
            ids(c),
        )
    }));
    let mut found = LookedUp {
        invoiced: BTreeMap::new(),
        by_id: BTreeMap::new(),
        by_name: BTreeMap::new(),
        item: Ok(None),
        failed: BTreeMap::new(),
    };
    let mut numbered: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for chunk in queries.chunks(qbo::BATCH) {
        let texts: Vec<String> = chunk.iter().map(|(q, _)| q.clone()).collect();
        let answers = match qbo.batch_queries(&texts).await {
            Ok(answers) => answers,
            Err(e) if e.fatal => return Err(e),
            // The whole request failed: every query in it did.
            Err(e) => texts.iter().map(|_| Err(e.clone())).collect(),
        };
        for ((text, covers), answer) in chunk.iter().zip(answers) {
            let rows = match answer {
                Ok(rows) => rows,
                Err(e) if covers.is_empty() && text.contains("FROM Item") => {
                    found.item = Err(e);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(event = "lookup_failed", query = %text, error = %e, clients = covers.len());
                    for id in covers {
                        found.failed.insert(id.clone(), e.to_string());
                    }
                    continue;
                }
            };
            for row in rows {
                if let Some(doc) = row["DocNumber"]
                    .as_str()
                    .filter(|_| row.get("Line").is_some())
                {
                    found
                        .invoiced
                        .entry(doc.to_owned())
                        .or_default()
                        .push(row.clone());
                    if row["TotalAmt"].as_f64() == Some(0.0) {
                        tracing::warn!(
                            event = "invoice_voided",
                            doc_number = %doc,
                            invoice_id = row["Id"].as_str().unwrap_or_default(),
                            "this month's invoice exists with a zero total (voided?): the client is not billed again; to bill it anew, create the invoice by hand"
                        );
                    }
                    numbered
                        .entry(doc.to_owned())
                        .or_default()
                        .push(row["Id"].as_str().unwrap_or_default().to_owned());
                } else if row.get("DisplayName").is_some() {
                    found.by_id.insert(
                        row["Id"].as_str().unwrap_or_default().to_owned(),
                        row.clone(),
                    );
                    found.by_name.insert(
                        row["DisplayName"].as_str().unwrap_or_default().to_owned(),
                        row,
                    );
                } else if row.get("Name").is_some() {
                    found.item = Ok(Some(row));
                }
            }
        }
    }
    for (doc, ids) in numbered.iter().filter(|(_, ids)| ids.len() > 1) {
        tracing::warn!(
            event = "duplicate_invoices",
            doc_number = %doc,
            invoice_ids = %ids.join(","),
            "QBO holds more than one invoice with this number (the company allows duplicate numbers): void all but one"
        );
    }
    Ok(found)
}

/// Bills one client. `Err` only for what stops the whole run.
async fn bill(s: &Services, c: &Candidate) -> Result<(Outcome, Notes), ApiError> {
    let row = &c.row;
    // Given up on any way out of here without an invoice, so no batch waits for it.
    let ticket = s.batcher.as_ref().map(Batcher::ticket);
    let mut notes = Notes::default();
    let ws = &row.robocorp_workspace_id;
    let Some(key) = s.keys.0.get(ws) else {
        return Ok((
            Outcome::Failed(format!(
                "no Control Room API key for workspace {ws}; add \"{ws}\": \"KEY\" to the secret {}",
                s.keys_secret
            )),
            notes,
        ));
    };
    let (org, runs) = match tokio::try_join!(
        s.control_room.organization(ws, key),
        s.control_room.runs(ws, key, s.period.start)
    ) {
        Ok(found) => found,
        Err(e) => return soft(e, notes),
    };
    if org != row.robocorp_org_id {
        return Ok((
            Outcome::Failed(format!(
                "workspace {ws} belongs to organization {org}, but the table says {}; fix robocorp_org_id or the workspace id",
                row.robocorp_org_id
            )),
            notes,
        ));
    }
    let tally = minutes(&runs, &s.period);
    for run in &tally.unmeasured {
        tracing::warn!(event = "run_unmeasured", client_id = %row.client_id, run_id = %run, "a finished run has neither duration nor ended_at; not billed");
    }
    for run in &tally.in_progress {
        tracing::warn!(event = "run_in_progress", client_id = %row.client_id, run_id = %run, period = %s.period.label(), "a run that started in the billing month is still going: its minutes are not billed (not now, and not next month); bill them by hand once it ends");
    }
    notes.runs_in_progress = tally.in_progress.iter().map(ToString::to_string).collect();
    notes.runs_unmeasured = tally.unmeasured.clone();
    let minutes = tally.minutes;
    if minutes == 0 {
        return Ok((Outcome::NoMinutes, notes));
    }
    let amount = amount(minutes, c.rate);
    let doc = c.doc.clone();
    let invoice = invoice(s, c, minutes, amount, &doc);
    notes.not_emailed = invoice["EmailStatus"] == "NotSet";
    if notes.not_emailed {
        tracing::warn!(
            event = "invoice_not_emailed",
            client_id = %row.client_id,
            doc_number = %doc,
            customer = c.customer["DisplayName"].as_str().unwrap_or_default(),
            "the QBO customer has no email address: the invoice is created but not set to be emailed; add an address to the customer and send it from QBO"
        );
    }
    if s.dry_run {
        tracing::info!(
            event = "would_create_invoice",
            client_id = %row.client_id,
            doc_number = %doc,
            customer = c.customer["DisplayName"].as_str().unwrap_or_default(),
            minutes,
            rate = %c.rate,
            amount = %amount
        );
        notes.would = Some(invoice);
        return Ok((Outcome::Would, notes));
    }

    // ClickUp first: the invoice is the last write, so its DocNumber marks the client done.
    let description = format!("Robot minutes {} ({})", s.period.label(), row.client_id);
    let (start_ms, end_ms) = (
        s.period.start.as_millisecond(),
        s.period.end.as_millisecond(),
    );
    let duration = i64::try_from(minutes * 60_000).unwrap_or(i64::MAX);
    match s
        .clickup
        .ensure_entry(
            &s.entries,
            &row.clickup_task_id,
            (start_ms, end_ms),
            duration,
            &description,
            s.settle,
        )
        .await
    {
        Ok(Ensured::Created(id)) => {
            tracing::info!(event = "time_entry_created", client_id = %row.client_id, task_id = %row.clickup_task_id, entry_id = %id, minutes);
        }
        Ok(Ensured::Existing(e)) if e.duration_ms != duration => {
            // Runs that arrived after an interrupted run: the entry keeps the earlier
            // count, the invoice bills this one; someone should look.
            tracing::warn!(event = "time_entry_differs", client_id = %row.client_id, entry_id = %e.id, entry_minutes = e.duration_ms / 60_000, invoice_minutes = minutes, "the ClickUp entry from an earlier run has other minutes than this invoice");
        }
        Ok(Ensured::Existing(_)) => {
            tracing::info!(event = "time_entry_exists", client_id = %row.client_id, task_id = %row.clickup_task_id);
        }
        Err(e) => return soft(e, notes),
    }

    let made = match (&s.batcher, ticket) {
        (Some(batcher), Some(ticket)) => {
            match batcher.create(ticket, invoice.clone(), doc.clone()).await {
                Ok(Batched::Created(created)) => Ok(Made::Created(created)),
                Ok(Batched::Found(found)) => Ok(Made::Found(found)),
                Ok(Batched::Single) => create(s, row, &invoice, &doc).await,
                Err(e) => Err(e),
            }
        }
        _ => create(s, row, &invoice, &doc).await,
    };
    let outcome = match made {
        Ok(Made::Created(created)) => {
            tracing::info!(
                event = "invoice_created",
                client_id = %row.client_id,
                doc_number = %doc,
                invoice_id = created["Id"].as_str().unwrap_or_default(),
                minutes,
                rate = %c.rate,
                amount = %amount
            );
            Outcome::Invoiced
        }
        Ok(Made::Found(found)) => {
            tracing::info!(
                event = "invoice_confirmed",
                client_id = %row.client_id,
                doc_number = %doc,
                invoice_id = found["Id"].as_str().unwrap_or_default(),
                "the invoice exists although no answer said so (lost, or replayed from an earlier run)"
            );
            Outcome::AlreadyInvoiced
        }
        Ok(Made::Refused(why)) => Outcome::Failed(why),
        Err(e) => return soft(e, notes),
    };
    Ok((outcome, notes))
}

/// How much earlier than the request QBO's stamp on a refusal must be for it to be a
/// replay: QBO's clock and this host's (both NTP-synced) may differ by a little.
const REPLAY_MARGIN: jiff::SignedDuration = jiff::SignedDuration::from_secs(2);

/// What an invoice create came to.
#[derive(Debug)]
enum Made {
    Created(Value),
    /// It exists, made by this run or an earlier one.
    Found(Value),
    Refused(String),
}

/// Creates the invoice exactly once. `requestid` lets QBO replay a repeated request,
/// but the DocNumber is the proof: after an ambiguous answer the invoice is looked up
/// (again once QBO can no longer be working on it) and sent again only when it is
/// surely not there. QBO replays refusals too, so a refusal stamped before it was asked
/// for is an earlier run's: the request goes once more under a new id.
async fn create(
    s: &Services,
    row: &ClientRow,
    invoice: &Value,
    doc: &str,
) -> Result<Made, ApiError> {
    let mut rid = request_id(row, &s.period, invoice, None);
    // The request ids this call sent: a replay of one of them answers this call's own
    // earlier attempt (its answer was lost), not another run's.
    let mut sent: Vec<String> = Vec::new();
    let customer = &invoice["CustomerRef"]["value"];
    let mark = invoice["PrivateNote"].as_str().unwrap_or_default();
    // Only the client's own invoice proves it billed.
    let lookup = || async {
        let found = s.qbo.invoices_numbered(doc).await?;
        Ok(found.into_iter().find(|i| is_clients(i, customer, mark)))
    };
    for _ in 0..3 {
        let asked = Timestamp::now();
        let ours = sent.contains(&rid);
        sent.push(rid.clone());
        let err = match s.qbo.create_invoice(invoice, &rid).await {
            Ok(created) if is_replay(created.time, asked) && !ours => {
                // QBO replayed an earlier run's answer to the same request (the same
                // day, the same invoice). That invoice may have been deleted since.
                if !s.qbo.is_gone(&created.value).await? {
                    return Ok(Made::Found(created.value));
                }
                tracing::info!(event = "created_replayed_gone", doc_number = %doc, "QBO replayed an earlier run's create of this invoice, which has been deleted since: creating it under a new request id");
                rid = request_id(row, &s.period, invoice, Some(&asked.to_string()));
                continue;
            }
            Ok(created) => return Ok(Made::Created(created.value)),
            Err(e) => e,
        };
        if err.fatal {
            return Err(err);
        }
        if err.is_ambiguous() {
            match crate::api::confirm(&err, doc, s.settle, lookup).await? {
                Some(found) => return Ok(Made::Found(found)),
                None => continue,
            }
        }
        if err.status != Some(400) {
            return Ok(Made::Refused(err.to_string()));
        }
        // A validation fault may be a duplicate DocNumber (another run got there
        // first): QBO's code for it varies by source, so look.
        if let Some(found) = lookup().await? {
            return Ok(Made::Found(found));
        }
        // A refusal QBO stamped before this request was made: the replay of an earlier
        // run's, whose cause may be fixed since. (A clock behind ours costs one more
        // attempt at a request QBO refuses anyway.)
        let replay = is_replay(err.time, asked);
        if replay && !ours {
            tracing::info!(event = "refusal_replayed", doc_number = %doc, error = %err, "QBO replayed an earlier run's refusal of this request; sending it again under a new request id");
            rid = request_id(
                row,
                &s.period,
                invoice,
                err.time.map(|t| t.to_string()).as_deref(),
            );
            continue;
        }
        return Ok(Made::Refused(err.to_string()));
    }
    Ok(Made::Refused(format!(
        "QBO did not create invoice {doc} after 3 attempts whose answers were lost; run the job again"
    )))
}

/// Whether an answer QBO stamped at `time` was made before a request sent at `asked`:
/// the replay of an earlier answer to the same `requestid`.
pub fn is_replay(time: Option<Timestamp>, asked: Timestamp) -> bool {
    time.is_some_and(|t| t < asked - REPLAY_MARGIN)
}

/// A per-client failure, unless the error stops the run.
fn soft(e: ApiError, notes: Notes) -> Result<(Outcome, Notes), ApiError> {
    if e.fatal {
        Err(e)
    } else {
        Ok((Outcome::Failed(e.to_string()), notes))
    }
}

/// The invoice for `minutes` at the client's rate. QBO refuses an invoice set to be
/// emailed (`NeedToSend`) without a `BillEmail`: a customer without an address gets
/// `NotSet`, so the client is still billed, and the run reports it.
fn invoice(s: &Services, c: &Candidate, minutes: u64, amount: Decimal, doc: &str) -> Value {
    let label = s.period.label();
    let mut invoice = json!({
        "DocNumber": doc,
        "TxnDate": s.today.to_string(),
        "CustomerRef": {"value": c.customer["Id"], "name": c.customer["DisplayName"]},
        "EmailStatus": "NotSet",
        "PrivateNote": marker(&c.row.client_id, &label),
        "Line": [{
            "DetailType": "SalesItemLineDetail",
            "Amount": number(amount),
            "Description": format!("Robot minutes {label}"),
            "SalesItemLineDetail": {
                "ItemRef": {"value": s.item["Id"], "name": s.item["Name"]},
                "Qty": minutes,
                "UnitPrice": number(c.rate),
                "ServiceDate": s.period.first.last_of_month().to_string(),
            },
        }],
    });
    if let Some(email) = c.customer["PrimaryEmailAddr"]["Address"]
        .as_str()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        invoice["BillEmail"] = json!({"Address": email});
        invoice["EmailStatus"] = json!("NeedToSend");
    }
    invoice
}

/// The same request gives the same id on any run of the same day, so QBO replays the
/// first answer; any change to what is sent (the minutes, the rate, the customer, the
/// address, the date) gives a new id. `salt` sets a replayed refusal aside. At most 50
/// characters.
fn request_id(row: &ClientRow, period: &Period, invoice: &Value, salt: Option<&str>) -> String {
    // serde_json's maps are sorted: the same invoice always prints the same.
    let key = format!("{invoice}|{}", salt.unwrap_or_default());
    let hash = crate::secrets::hex(&Sha256::digest(key.as_bytes()));
    let id = format!("inv-{}-{}-{}", row.client_id, period.compact(), &hash[..16]);
    id.chars().take(50).collect()
}

#[cfg(test)]
mod tests {
    use jiff::civil::date;
    use jiff::tz::TimeZone;

    use super::*;

    fn run(state: &str, start: &str, end: Option<&str>, duration: Option<f64>) -> Run {
        Run {
            id: start.into(),
            created_at: None,
            state: state.into(),
            started_at: Some(start.parse().unwrap()),
            ended_at: end.map(|e| e.parse().unwrap()),
            duration,
        }
    }

    #[test]
    fn the_period_is_last_month_in_the_billing_time_zone() {
        let la = TimeZone::get("America/Los_Angeles").unwrap();
        let today = date(2026, 11, 4)
            .at(9, 0, 0, 0)
            .to_zoned(la.clone())
            .unwrap();
        let p = Period::of(Period::previous(&today), &la).unwrap();
        assert_eq!(p.label(), "2026-10");
        assert_eq!(p.start.to_string(), "2026-10-01T07:00:00Z");
        // November 1 is still daylight time in 2026 (the change is that day at 02:00).
        assert_eq!(p.end.to_string(), "2026-11-01T07:00:00Z");
        let jan = Period::of(
            Period::previous(
                &date(2027, 1, 4)
                    .at(9, 0, 0, 0)
                    .to_zoned(la.clone())
                    .unwrap(),
            ),
            &la,
        )
        .unwrap();
        assert_eq!(jan.label(), "2026-12");
        assert_eq!(jan.start.to_string(), "2026-12-01T08:00:00Z");
    }

    #[test]
    fn minutes_count_finished_runs_started_in_the_period_rounded_up() {
        let la = TimeZone::get("America/Los_Angeles").unwrap();
        let p = Period::of(date(2026, 10, 1), &la).unwrap();
        let runs = [
            run("completed", "2026-10-05T10:00:00Z", None, Some(90.4)),
            run(
                "unresolved",
                "2026-10-06T10:00:00Z",
                Some("2026-10-06T10:01:00Z"),
                None,
            ),
            // 23:30 on Sept 30 in Los Angeles: last month.
            run("completed", "2026-10-01T06:30:00Z", None, Some(600.0)),
            // 20:00 on Oct 31 in Los Angeles: this month.
            run("completed", "2026-11-01T03:00:00Z", None, Some(29.6)),
            run("in_progress", "2026-10-07T10:00:00Z", None, None),
            run("completed", "2026-10-08T10:00:00Z", None, None),
        ];
        let tally = minutes(&runs, &p);
        // 90.4 + 60 + 29.6 = 180 s.
        assert_eq!(tally.minutes, 3);
        assert_eq!(tally.unmeasured, ["2026-10-08T10:00:00Z"]);
        assert_eq!(tally.in_progress, ["2026-10-07T10:00:00Z"]);
    }

    #[test]
    fn the_request_id_follows_the_request_and_a_salt_sets_a_replayed_refusal_aside() {
        let row = ClientRow {
            client_id: "10002".into(),
            client_name: "Acme".into(),
            robocorp_org_id: "o".into(),
            robocorp_workspace_id: "w".into(),
            clickup_task_id: "t".into(),
            qbo_customer_id: None,
            rate_per_minute: None,
            active: true,
        };
        let la = TimeZone::get("America/Los_Angeles").unwrap();
        let p = Period::of(date(2026, 10, 1), &la).unwrap();
        let invoice = |qty: u64, email: Option<&str>| {
            let mut i = json!({"DocNumber": "10002-202610", "CustomerRef": {"value": "58"},
                "Line": [{"Amount": 1.25, "SalesItemLineDetail": {"Qty": qty, "UnitPrice": 1.25}}]});
            if let Some(e) = email {
                i["BillEmail"] = json!({"Address": e});
            }
            i
        };
        let id = request_id(&row, &p, &invoice(90, None), None);
        assert!(
            id.starts_with("inv-10002-202610-") && id.len() <= 50,
            "{id}"
        );
        assert_eq!(id, request_id(&row, &p, &invoice(90, None), None));
        assert_ne!(id, request_id(&row, &p, &invoice(91, None), None));
        // An address added to the customer after a refusal: a new request.
        assert_ne!(
            id,
            request_id(&row, &p, &invoice(90, Some("a@b.example")), None)
        );
        let salted = request_id(&row, &p, &invoice(90, None), Some("2026-11-04T09:00:00Z"));
        assert_ne!(id, salted);
        assert_eq!(
            salted,
            request_id(&row, &p, &invoice(90, None), Some("2026-11-04T09:00:00Z")),
            "the same replayed refusal gives the same new id, so a rerun after a crash reuses it"
        );
    }

    #[test]
    fn amounts_round_half_up_to_cents_in_decimal() {
        assert_eq!(amount(7, "0.875".parse().unwrap()).to_string(), "6.13");
        assert_eq!(amount(3, "0.335".parse().unwrap()).to_string(), "1.01");
        assert_eq!(
            amount(1_000_003, "1.25".parse().unwrap()).to_string(),
            "1250003.75"
        );
        assert_eq!(number("6.130".parse().unwrap()), json!(6.13));
    }
}
