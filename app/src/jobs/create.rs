//! `--create-invoices`: for each active client in range, robot minutes of the billing
//! month from Control Room -> one ClickUp time entry -> one QBO invoice. The
//! destinations' own keys are the ledger (DocNumber and `requestid` in QBO, the entry
//! description in ClickUp), so a rerun after any crash finishes the rest and never
//! bills twice. Clients run concurrently; each service's limits are held by its client.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use jiff::civil::Date;
use jiff::{Timestamp, Zoned};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Context, Summary};
use crate::api::ApiError;
use crate::api::clickup::{ClickUp, Ensured};
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
}

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

/// Billable minutes of the runs that started in the period: finished runs only
/// (completed or unresolved), seconds from `duration` or else `ended_at -
/// started_at`, rounded up to the minute. Also the ids of runs skipped for lack of both.
pub fn minutes(runs: &[Run], period: &Period) -> (u64, Vec<String>) {
    let mut millis: u64 = 0;
    let mut unmeasured = Vec::new();
    for run in runs {
        if !matches!(run.state.as_str(), "completed" | "unresolved") {
            continue;
        }
        let Some(started) = run.started_at else {
            continue;
        };
        if started < period.start || started >= period.end {
            continue;
        }
        let ms = match (run.duration, run.ended_at) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            (Some(secs), _) if secs.is_finite() && secs >= 0.0 => (secs * 1000.0).round() as u64,
            (_, Some(ended)) if ended >= started => {
                u64::try_from(ended.duration_since(started).as_millis()).unwrap_or(0)
            }
            _ => {
                unmeasured.push(run.id.clone());
                continue;
            }
        };
        millis += ms;
    }
    (millis.div_ceil(60_000), unmeasured)
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

/// A client ready to bill: its row, QBO customer and rate.
#[derive(Debug)]
struct Candidate {
    row: ClientRow,
    customer: Value,
    rate: Decimal,
}

#[derive(Debug)]
struct Services {
    qbo: Qbo,
    clickup: ClickUp,
    control_room: ControlRoom,
    keys: RobocorpKeys,
    keys_secret: String,
    item: Value,
    period: Period,
    today: Date,
    dry_run: bool,
}

pub async fn run(ctx: &Context, opts: &Options) -> Result<Summary> {
    let config = &ctx.config;
    let today = Zoned::now().with_time_zone(config.timezone.clone());
    let period = Period::of(
        opts.period.unwrap_or_else(|| Period::previous(&today)),
        &config.timezone,
    )?;
    let (qbo_secret, clickup_secret, keys) = tokio::try_join!(
        ctx.secrets.qbo(&config.secrets.qbo),
        ctx.secrets.get::<ClickUpSecret>(&config.secrets.clickup),
        ctx.secrets.get::<RobocorpKeys>(&config.secrets.robocorp),
    )?;
    let rows = crate::clients::scan(&ctx.db, &config.table, opts.selection).await?;
    let mut summary = Summary::new("create-invoices", opts.dry_run);
    summary.total = rows.len() as u64;
    tracing::info!(
        event = "run_started",
        job = "create-invoices",
        period = %period.label(),
        clients = rows.len(),
        dry_run = opts.dry_run,
        concurrency = opts.concurrency
    );

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
            Ok(row) if config.excluded.contains(&row.display_name()) => {
                summary.skip(&row.client_id, "excluded customer");
            }
            Ok(row) => ready.push(row),
        }
    }

    let (qbo_secret, whole) = qbo_secret;
    let qbo = Qbo::new(
        &qbo_secret,
        whole,
        config.urls.qbo_api.as_deref(),
        &config.urls.qbo_token,
        ctx.secrets.clone(),
        &config.secrets.qbo,
    );
    let looked_up = look_up(&qbo, &ready, &period, &config.item_name)
        .await
        .map_err(super::fatal)?;
    let Some(item) = looked_up.item else {
        return Err(Error::Usage(
            format!("QBO has no active item named {:?}", config.item_name),
            "create that service item in QBO, or set QBO_ITEM_NAME to the item invoices should use"
                .into(),
        ));
    };
    let item_price = item["UnitPrice"]
        .as_f64()
        .and_then(|p| p.to_string().parse::<Decimal>().ok())
        // An item without a price says 0: billing at 0 would send $0.00 invoices.
        .filter(|p| *p > Decimal::ZERO);

    let mut candidates = Vec::new();
    for row in ready {
        let doc = doc_number(&row, &period);
        if looked_up.invoiced.contains(&doc) {
            summary.already(&row.client_id, &doc);
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
        });
    }

    let services = Arc::new(Services {
        qbo,
        clickup: ClickUp::new(&clickup_secret, &config.urls.clickup),
        control_room: ControlRoom::new(&config.urls.robocorp),
        keys,
        keys_secret: config.secrets.robocorp.clone(),
        item,
        period,
        today: today.date(),
        dry_run: opts.dry_run,
    });
    let (progress, ticker) = Progress::start(
        "create-invoices",
        candidates.len() as u64,
        Duration::from_secs(10),
    );
    let mut results = futures_util::stream::iter(candidates)
        .map(|c| {
            let services = Arc::clone(&services);
            let progress = Arc::clone(&progress);
            async move {
                let outcome = bill(&services, &c).await;
                progress.tick();
                let doc = doc_number(&c.row, &services.period);
                (c.row.client_id, doc, outcome)
            }
        })
        .buffer_unordered(opts.concurrency.max(1));
    let mut fatal = None;
    while let Some((client, doc, outcome)) = results.next().await {
        match outcome {
            Ok(Outcome::Invoiced) => summary.done += 1,
            Ok(Outcome::Would) => summary.would += 1,
            Ok(Outcome::AlreadyInvoiced) => summary.already(&client, &doc),
            Ok(Outcome::NoMinutes) => summary.no_minutes(&client),
            Ok(Outcome::Failed(why)) => summary.fail(&client, why),
            Err(e) => {
                fatal = Some(e);
                break;
            }
        }
    }
    drop(results);
    ticker.abort();
    progress.finish();
    match fatal {
        Some(e) => Err(super::fatal(e)),
        None => Ok(summary),
    }
}

fn doc_number(row: &ClientRow, period: &Period) -> String {
    format!("{}-{}", row.client_id, period.compact())
}

/// What one batch of up-front queries found.
#[derive(Debug, Default)]
struct LookedUp {
    invoiced: BTreeSet<String>,
    by_id: BTreeMap<String, Value>,
    by_name: BTreeMap<String, Value>,
    item: Option<Value>,
}

/// The period's existing DocNumbers, the customers and the item, in as few requests
/// as QBO's batch allows (30 queries each, 100 values per `IN`).
async fn look_up(
    qbo: &Qbo,
    rows: &[ClientRow],
    period: &Period,
    item_name: &str,
) -> Result<LookedUp, ApiError> {
    const IN: usize = 100;
    let in_list = |values: &[String]| {
        values
            .iter()
            .map(|v| qbo::quote(v))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let docs: Vec<String> = rows.iter().map(|r| doc_number(r, period)).collect();
    let ids: Vec<String> = rows
        .iter()
        .filter_map(|r| r.qbo_customer_id.clone())
        .collect();
    let names: Vec<String> = rows
        .iter()
        .filter(|r| r.qbo_customer_id.is_none())
        .map(ClientRow::display_name)
        .collect();
    let mut queries = vec![format!(
        "SELECT * FROM Item WHERE Name = {} AND Active = true",
        qbo::quote(item_name)
    )];
    // A page of 1000 always holds the answer to an IN of 100 unique keys.
    queries.extend(docs.chunks(IN).map(|c| {
        format!(
            "SELECT * FROM Invoice WHERE DocNumber IN ({}) MAXRESULTS 1000",
            in_list(c)
        )
    }));
    queries.extend(ids.chunks(IN).map(|c| {
        format!(
            "SELECT * FROM Customer WHERE Id IN ({}) AND Active = true MAXRESULTS 1000",
            in_list(c)
        )
    }));
    queries.extend(names.chunks(IN).map(|c| {
        format!(
            "SELECT * FROM Customer WHERE DisplayName IN ({}) AND Active = true MAXRESULTS 1000",
            in_list(c)
        )
    }));
    let mut found = LookedUp::default();
    for chunk in queries.chunks(qbo::BATCH) {
        let answers = qbo.batch_queries(chunk).await?;
        for answer in answers {
            for row in answer? {
                if let Some(doc) = row["DocNumber"]
                    .as_str()
                    .filter(|_| row.get("Line").is_some())
                {
                    found.invoiced.insert(doc.to_owned());
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
                    found.item = Some(row);
                }
            }
        }
    }
    Ok(found)
}

/// Bills one client. `Err` only for what stops the whole run.
async fn bill(s: &Services, c: &Candidate) -> Result<Outcome, ApiError> {
    let row = &c.row;
    let ws = &row.robocorp_workspace_id;
    let Some(key) = s.keys.0.get(ws) else {
        return Ok(Outcome::Failed(format!(
            "no Control Room API key for workspace {ws}; add \"{ws}\": \"KEY\" to the secret {}",
            s.keys_secret
        )));
    };
    let (org, runs) = match tokio::try_join!(
        s.control_room.organization(ws, key),
        s.control_room.runs(ws, key)
    ) {
        Ok(found) => found,
        Err(e) => return soft(e),
    };
    if org != row.robocorp_org_id {
        return Ok(Outcome::Failed(format!(
            "workspace {ws} belongs to organization {org}, but the table says {}; fix robocorp_org_id or the workspace id",
            row.robocorp_org_id
        )));
    }
    let (minutes, unmeasured) = minutes(&runs, &s.period);
    for run in unmeasured {
        tracing::warn!(event = "run_unmeasured", client_id = %row.client_id, run_id = %run, "a finished run has neither duration nor ended_at; not billed");
    }
    if minutes == 0 {
        return Ok(Outcome::NoMinutes);
    }
    let amount = amount(minutes, c.rate);
    let doc = doc_number(row, &s.period);
    let invoice = invoice(s, c, minutes, amount, &doc);
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
        return Ok(Outcome::Would);
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
            &row.clickup_task_id,
            (start_ms, end_ms),
            duration,
            &description,
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
        Err(e) => return soft(e),
    }

    match s
        .qbo
        .create_invoice(&invoice, &request_id(row, &s.period, c, minutes))
        .await
    {
        Ok(created) => {
            tracing::info!(
                event = "invoice_created",
                client_id = %row.client_id,
                doc_number = %doc,
                invoice_id = created["Id"].as_str().unwrap_or_default(),
                minutes,
                rate = %c.rate,
                amount = %amount
            );
            Ok(Outcome::Invoiced)
        }
        // A validation fault may be a duplicate DocNumber (another run got there first,
        // or this one before a crash): QBO's code for it varies by source, so look.
        Err(e) if e.status == Some(400) && !e.fatal => {
            match s
                .qbo
                .query_all(&format!(
                    "SELECT * FROM Invoice WHERE DocNumber = {}",
                    qbo::quote(&doc)
                ))
                .await
            {
                Ok(found) if !found.is_empty() => Ok(Outcome::AlreadyInvoiced),
                Ok(_) => Ok(Outcome::Failed(e.to_string())),
                Err(lookup) => soft(lookup),
            }
        }
        Err(e) => soft(e),
    }
}

/// A per-client failure, unless the error stops the run.
fn soft(e: ApiError) -> Result<Outcome, ApiError> {
    if e.fatal {
        Err(e)
    } else {
        Ok(Outcome::Failed(e.to_string()))
    }
}

fn invoice(s: &Services, c: &Candidate, minutes: u64, amount: Decimal, doc: &str) -> Value {
    let label = s.period.label();
    let mut invoice = json!({
        "DocNumber": doc,
        "TxnDate": s.today.to_string(),
        "CustomerRef": {"value": c.customer["Id"], "name": c.customer["DisplayName"]},
        "EmailStatus": "NeedToSend",
        "PrivateNote": format!("Robot minutes {label}, client {}", c.row.client_id),
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
    if let Some(email) = c.customer["PrimaryEmailAddr"]["Address"].as_str() {
        invoice["BillEmail"] = json!({"Address": email});
    }
    invoice
}

/// The same client, month, customer, minutes and rate give the same id on any day, so
/// QBO replays the first answer; anything else gets a new id, and the DocNumber still
/// stops a duplicate. At most 50 characters.
fn request_id(row: &ClientRow, period: &Period, c: &Candidate, minutes: u64) -> String {
    let key = format!(
        "{}|{}|{}|{minutes}|{}",
        row.client_id,
        period.compact(),
        c.customer["Id"].as_str().unwrap_or_default(),
        c.rate.normalize()
    );
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
        let (m, unmeasured) = minutes(&runs, &p);
        // 90.4 + 60 + 29.6 = 180 s.
        assert_eq!(m, 3);
        assert_eq!(unmeasured, ["2026-10-08T10:00:00Z"]);
    }

    #[test]
    fn the_request_id_is_the_same_on_any_day_and_changes_with_what_is_billed() {
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
        let c = Candidate {
            row: row.clone(),
            customer: json!({"Id": "58"}),
            rate: "1.25".parse().unwrap(),
        };
        let id = request_id(&row, &p, &c, 90);
        assert!(
            id.starts_with("inv-10002-202610-") && id.len() <= 50,
            "{id}"
        );
        assert_eq!(id, request_id(&row, &p, &c, 90));
        assert_ne!(id, request_id(&row, &p, &c, 91));
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
