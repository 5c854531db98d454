//! `--send-invoices`: every QBO invoice waiting to be sent (EmailStatus NeedToSend,
//! paged) goes out once through QBO's send endpoint, excluded customers and invoices
//! without a billing email are skipped and reported, failures stay isolated; each sent
//! invoice's PDF is archived to SharePoint when a site is configured; then one summary
//! email goes from SENDER_EMAIL to BOOKKEEPER_EMAIL. A sent invoice leaves the
//! NeedToSend set, so a rerun never sends it twice.
//!
//! The summary tells the bookkeeper about every sent invoice exactly once. QBO's
//! `DeliveryInfo.DeliveryTime` says when each went out; the job-state ledger
//! (`state.rs`) keeps the newest one reported. Each summary lists this run's sends and
//! any delivered since then that no summary listed (a run that stopped before its
//! summary). Graph's sendMail has no idempotency key, so it is never retried after an
//! unclear answer, and the ledger records the summary as pending before it is sent: a
//! summary that may have gone out is not sent again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::{Timestamp, Zoned};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::{Context, Summary};
use crate::api::ApiError;
use crate::api::graph::Graph;
use crate::api::qbo::Qbo;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::report::Progress;
use crate::secrets::GraphSecret;
use crate::state::{Ledger, SummaryLedger};

/// The summary email's template as built into the binary: used when the assets
/// directory has none.
pub const TEMPLATE: &str = include_str!("../../../assets/sent_invoices_email_template.html");
const TEMPLATE_NAME: &str = "sent_invoices_email_template.html";
/// Where the job looks for its templates first: `ASSETS_DIR`, else `assets` under the
/// working directory (`/app/assets` in the image, the checkout's `assets/` locally).
pub const ASSETS_DIR_VAR: &str = "ASSETS_DIR";

/// The template's text and where it came from: the assets directory's copy when there
/// is one, so a practice can change its email without a rebuild; else the built-in one.
pub fn template() -> Result<(std::borrow::Cow<'static, str>, String)> {
    template_named(TEMPLATE_NAME, TEMPLATE)
}

/// The template `name` from the assets directory, else `builtin`.
pub fn template_named(
    name: &str,
    builtin: &'static str,
) -> Result<(std::borrow::Cow<'static, str>, String)> {
    let dir = std::env::var_os(ASSETS_DIR_VAR).map_or_else(|| "assets".into(), PathBuf::from);
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((text.into(), path.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((builtin.into(), "the built-in template".into()))
        }
        Err(e) => Err(Error::Usage(
            format!("cannot read the email template {}: {e}", path.display()),
            format!(
                "make it readable, or remove it to use the built-in template (or set {ASSETS_DIR_VAR})"
            ),
        )),
    }
}

/// One row of the summary email.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    /// QBO's Id: the link to the invoice.
    pub id: String,
    pub doc_number: String,
    pub customer: String,
    pub email: String,
    pub amount: String,
    /// The invoice's currency (its CurrencyRef; the company's home currency).
    pub currency: String,
    pub due_date: String,
    pub reason: String,
}

/// The sum of one currency's sent invoices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Total {
    pub currency: String,
    pub amount: String,
    pub invoices: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Email {
    pub date: String,
    pub sent: Vec<Row>,
    /// How many of `sent` went out in an earlier run that never reported them.
    pub earlier: usize,
    pub skipped: Vec<Row>,
    pub failed: Vec<Row>,
    /// An invoice's page in QBO is this followed by its Id (production or sandbox).
    pub invoice_url: String,
}

impl Email {
    /// The sent invoices' total per currency, to the cent (decimal sums).
    pub fn totals(&self) -> Vec<Total> {
        let mut sums: std::collections::BTreeMap<&str, (Decimal, usize)> =
            std::collections::BTreeMap::new();
        for r in &self.sent {
            let amount = r.amount.parse::<Decimal>().unwrap_or_default();
            let entry = sums.entry(r.currency.as_str()).or_default();
            entry.0 += amount;
            entry.1 += 1;
        }
        sums.into_iter()
            .map(|(currency, (sum, invoices))| Total {
                currency: currency.to_owned(),
                amount: format!("{:.2}", sum.round_dp(2)),
                invoices,
            })
            .collect()
    }

    /// HTML, with every value escaped (the template is `.html`, so auto-escaping is on).
    pub fn render(&self) -> Result<String> {
        let (source, origin) = template()?;
        let mut env = crate::money::environment();
        let data = minijinja::context! {
            totals => self.totals(),
            ..minijinja::Value::from_serialize(self)
        };
        env.add_template(TEMPLATE_NAME, &source)
            .and_then(|()| env.get_template(TEMPLATE_NAME)?.render(data))
            .map_err(|e| {
                Error::Usage(
                    format!("cannot render the summary email from {origin}: {e}"),
                    format!("fix {origin}, or remove it to use the built-in template"),
                )
            })
    }

    fn subject(&self) -> String {
        use std::fmt::Write as _;
        let mut s = format!("Invoices sent {}: {} sent", self.date, self.sent.len());
        if !self.failed.is_empty() {
            let _ = write!(s, ", {} failed", self.failed.len());
        }
        if !self.skipped.is_empty() {
            let _ = write!(s, ", {} skipped", self.skipped.len());
        }
        s
    }
}

fn row(invoice: &Value, reason: &str) -> Row {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let amount = invoice["TotalAmt"]
        .as_f64()
        .and_then(|a| a.to_string().parse::<Decimal>().ok())
        .map(|d| format!("{:.2}", d.round_dp(2)))
        .unwrap_or_default();
    Row {
        id: text(&invoice["Id"]),
        currency: invoice["CurrencyRef"]["value"]
            .as_str()
            .unwrap_or("USD")
            .to_owned(),
        doc_number: text(&invoice["DocNumber"]),
        customer: text(&invoice["CustomerRef"]["name"]),
        email: text(&invoice["BillEmail"]["Address"]),
        amount,
        due_date: text(&invoice["DueDate"]),
        reason: reason.to_owned(),
    }
}

/// What became of one invoice.
#[derive(Debug)]
enum Sent {
    /// Sent; the archive error, if archiving failed.
    Done(Value, Option<String>),
    Would,
    Failed(String),
}

pub async fn run(
    ctx: &Context,
    dry_run: bool,
    email_out: &Path,
    concurrency: usize,
) -> Result<Summary> {
    // Boxed: the job's future is large.
    let job = Box::pin(send_all(ctx, dry_run, email_out, concurrency));
    super::exclusive(
        ctx,
        "send-invoices",
        "lease/send-invoices".into(),
        crate::state::Slot::WHOLE,
        dry_run,
        job,
    )
    .await
}

async fn send_all(
    ctx: &Context,
    dry_run: bool,
    email_out: &Path,
    concurrency: usize,
) -> Result<Summary> {
    let config = &ctx.config;
    // A template that cannot render stops the run before anything is sent, not after.
    Email::default().render()?;
    let today = Zoned::now().with_time_zone(config.timezone.clone()).date();
    let (qbo, graph_secret) = tokio::try_join!(
        ctx.qbo(),
        ctx.secrets.get::<GraphSecret>(&config.secrets.msgraph),
    )?;
    let graph = Graph::new(
        &graph_secret,
        &config.urls.graph,
        &config.urls.login,
        config.settle,
    );
    let mut summary = Summary::new("send-invoices", dry_run);
    let ledger = Ledger::new(ctx.db.clone(), &config.state_table);
    let state = ledger_state(ctx, &qbo, &ledger, dry_run, &mut summary).await?;
    let waiting = waiting(&qbo).await.map_err(super::fatal)?;
    summary.total = waiting.len() as u64;
    tracing::info!(
        event = "run_started",
        job = "send-invoices",
        waiting = waiting.len(),
        dry_run
    );
    let mut email = Email {
        date: today.to_string(),
        invoice_url: qbo.invoice_link(""),
        ..Email::default()
    };
    let to_send = triage(config, waiting, &mut summary, &mut email);
    let sent_now = send_each(
        ctx,
        (&qbo, &graph),
        to_send,
        concurrency,
        dry_run,
        (&mut summary, &mut email),
    )
    .await?;
    if dry_run {
        return write_dry_run_email(&email, email_out, summary);
    }
    let Some(state) = state else {
        unreachable!("a run that is not dry started the ledger")
    };
    if ctx.stop.reason().is_some() {
        // A summary begun this late could be cut off mid-send; the next one is whole.
        tracing::warn!(
            event = "summary_deferred",
            "the run was stopped: the next run's summary lists the invoices this one sent"
        );
        return Ok(summary);
    }
    summarize(
        ctx,
        (&qbo, &graph),
        &ledger,
        state,
        &sent_now,
        email,
        &mut summary,
    )
    .await?;
    Ok(summary)
}

/// The summary ledger, read before anything is sent (a missing table stops the run
/// before it emails a client, not after), its uncertain send settled, and started on a
/// first run.
async fn ledger_state(
    ctx: &Context,
    qbo: &Qbo,
    ledger: &Ledger,
    dry_run: bool,
    summary: &mut Summary,
) -> Result<Option<SummaryLedger>> {
    let config = &ctx.config;
    let mut state = match ledger.summary().await {
        Ok(state) => state,
        Err(e) if dry_run => {
            tracing::warn!(event = "ledger_unreadable", error = %e, "a real run would stop here");
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(s) = state.clone()
        && let Some(pending) = s.pending
    {
        state = Some(uncertain(qbo, ledger, &s, pending, config, dry_run, summary).await?);
    }
    if state.is_none() && !dry_run {
        // The first run reports what is sent from now on (a margin for clock skew).
        state = Some(
            ledger
                .start(Timestamp::now() - jiff::SignedDuration::from_mins(5))
                .await?,
        );
    }
    Ok(state)
}

/// The invoices to send; the others (an excluded customer, a voided one, no address)
/// skipped in `summary` and listed in the email.
fn triage(
    config: &Config,
    waiting: Vec<Value>,
    summary: &mut Summary,
    email: &mut Email,
) -> Vec<(String, Value)> {
    let mut to_send = Vec::new();
    for invoice in waiting {
        let r = row(&invoice, "");
        let id = if r.doc_number.is_empty() {
            format!("Id {}", invoice["Id"].as_str().unwrap_or("?"))
        } else {
            r.doc_number.clone()
        };
        if config.excluded.contains(&r.customer) {
            summary.skip(&id, "excluded customer");
            email.skipped.push(row(
                &invoice,
                "excluded customer (EXCLUDED_CUSTOMERS): never sent from here; send it from QBO if it should go",
            ));
        } else if invoice["TotalAmt"].as_f64() == Some(0.0)
            && invoice["PrivateNote"]
                .as_str()
                .is_some_and(|n| n.starts_with("Voided"))
        {
            // A voided invoice keeps its EmailStatus: sending it would email a $0.00
            // invoice to the client. (QBO zeroes a void's amounts and puts "Voided" at
            // the head of its private note: Intuit blog, "Voiding Invoice Objects".)
            summary.skip(&id, "zero total (voided)");
            email.skipped.push(row(
                &invoice,
                "its total is zero (voided?): not sent; send it from QBO if it should go",
            ));
        } else if r.email.is_empty() {
            summary.skip(&id, "no billing email");
            email.skipped.push(row(
                &invoice,
                "no billing email: add one to the customer or the invoice",
            ));
        } else {
            to_send.push((id, invoice));
        }
    }
    to_send
}

/// Sends every invoice, `concurrency` at a time, counting each in `summary` and listing
/// it in the email: the invoices this run sent.
async fn send_each(
    ctx: &Context,
    (qbo, graph): (&Qbo, &Graph),
    to_send: Vec<(String, Value)>,
    concurrency: usize,
    dry_run: bool,
    (summary, email): (&mut Summary, &mut Email),
) -> Result<Vec<Value>> {
    let config = &ctx.config;
    let site = OnceCell::new();
    let (progress, ticker) = Progress::start(
        "send-invoices",
        to_send.len() as u64,
        Duration::from_secs(10),
    );
    let mut sent_now: Vec<Value> = Vec::new();
    let mut fatal_error = None;
    let unfinished = super::run_all(
        to_send,
        concurrency,
        &ctx.stop,
        |(id, invoice)| {
            let (site, progress) = (&site, &progress);
            async move {
                let outcome = send(qbo, graph, config, site, &invoice, dry_run).await;
                progress.tick();
                (id, invoice, outcome)
            }
        },
        |(id, invoice, outcome)| match outcome {
            Ok(Sent::Done(sent, archive_error)) => {
                summary.done += 1;
                if let Some(why) = archive_error {
                    summary.fail(&id, why.clone());
                    email.failed.push(row(&sent, &why));
                }
                sent_now.push(sent);
                true
            }
            Ok(Sent::Would) => {
                summary.would += 1;
                email.sent.push(row(&invoice, ""));
                true
            }
            Ok(Sent::Failed(why)) => {
                summary.fail(&id, why.clone());
                email.failed.push(row(&invoice, &why));
                true
            }
            Err(e) => {
                fatal_error.get_or_insert(e);
                false
            }
        },
    )
    .await;
    ticker.abort();
    progress.finish();
    if let Some(reason) = ctx.stop.reason() {
        summary.stopped = Some((reason, unfinished));
    }
    if let Some(e) = fatal_error {
        tracing::warn!(
            event = "summary_deferred",
            sent = summary.done,
            "the run stopped: the next run's summary lists the invoices this one sent"
        );
        return Err(super::fatal(e));
    }
    Ok(sent_now)
}

/// A dry run's email, written to `email_out` for a person to read (none when nothing
/// would be sent).
fn write_dry_run_email(email: &Email, email_out: &Path, summary: Summary) -> Result<Summary> {
    if email.sent.is_empty() && email.failed.is_empty() {
        tracing::info!(
            event = "no_email",
            "nothing would be sent; no summary email"
        );
        return Ok(summary);
    }
    let html = email.render()?;
    std::fs::write(email_out, &html).map_err(|e| {
        Error::Usage(
            format!("cannot write the email to {}: {e}", email_out.display()),
            "pass --email-out with a writable path".into(),
        )
    })?;
    tracing::info!(event = "email_rendered", path = %email_out.display(), subject = %email.subject());
    Ok(summary)
}

/// The bookkeeper's summary: this run's sends and those of a run that stopped before
/// its summary, delivered once (see `deliver`).
async fn summarize(
    ctx: &Context,
    (qbo, graph): (&Qbo, &Graph),
    ledger: &Ledger,
    state: SummaryLedger,
    sent_now: &[Value],
    mut email: Email,
    summary: &mut Summary,
) -> Result<()> {
    let config = &ctx.config;
    // This run's sends, and those of a run that stopped before its summary.
    let since = match sent_since(qbo, &state).await {
        Ok(rows) => rows,
        Err(e) => {
            summary.fail(
                "summary-email",
                format!("no summary today: which invoices earlier runs sent could not be read ({e}); the next run's summary lists today's too"),
            );
            return Ok(());
        }
    };
    let mine: std::collections::BTreeSet<String> =
        sent_now.iter().map(|i| id_of(i).to_owned()).collect();
    let earlier: Vec<Value> = since
        .into_iter()
        .filter(|i| !mine.contains(id_of(i)))
        .collect();
    email.earlier = earlier.len();
    let reported: Vec<&Value> = sent_now.iter().chain(&earlier).collect();
    email.sent.extend(reported.iter().map(|i| row(i, "")));
    email.sent.sort_by(|a, b| a.doc_number.cmp(&b.doc_number));
    email.failed.sort_by(|a, b| a.doc_number.cmp(&b.doc_number));
    email
        .skipped
        .sort_by(|a, b| a.doc_number.cmp(&b.doc_number));
    if email.sent.is_empty() && email.failed.is_empty() {
        tracing::info!(
            event = "no_email",
            "nothing was sent or failed; no summary email"
        );
        return Ok(());
    }
    let (through, edge) = newest(&reported, &state);
    deliver(
        graph,
        config,
        ledger,
        state,
        (through, edge),
        &email,
        summary,
    )
    .await
}

fn id_of(invoice: &Value) -> &str {
    invoice["Id"].as_str().unwrap_or_default()
}

/// When QBO says the invoice was emailed.
fn delivered_at(invoice: &Value) -> Option<Timestamp> {
    invoice["DeliveryInfo"]["DeliveryTime"]
        .as_str()
        .and_then(|t| t.parse().ok())
}

/// The newest delivery time among `invoices` (or the ledger's, if none is newer), and
/// the ids delivered at that very time.
fn newest(invoices: &[&Value], state: &SummaryLedger) -> (Timestamp, Vec<String>) {
    let through = invoices
        .iter()
        .filter_map(|i| delivered_at(i))
        .max()
        .map_or(state.reported_through, |t| t.max(state.reported_through));
    let edge = invoices
        .iter()
        .filter(|i| delivered_at(i) == Some(through))
        .map(|i| id_of(i).to_owned())
        .collect();
    (through, edge)
}

/// Invoices emailed since the ledger's last summary: any run's, or a person's from QBO
/// itself. Sending updates an invoice, so its `MetaData.LastUpdatedTime` is at least its
/// delivery time. QBO's times have whole seconds: those delivered in the ledger's own
/// second count unless the ledger names them.
async fn sent_since(qbo: &Qbo, state: &SummaryLedger) -> Result<Vec<Value>, ApiError> {
    let through = state.reported_through;
    let since = through.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string();
    let rows = qbo.invoices_updated_since(&since).await?;
    Ok(unique(
        rows.into_iter()
            .filter(|i| i["EmailStatus"] == "EmailSent")
            .filter(|i| match delivered_at(i) {
                Some(t) if t > through => true,
                Some(t) => t == through && !state.edge.iter().any(|id| id == id_of(i)),
                None => false,
            })
            .collect(),
    ))
}

/// An earlier run marked a summary pending and never learned whether Graph took it. It
/// is not sent again (a second copy is worse than a missing one), but it is never
/// silent: the run fails (exit 1) naming the invoices it covered.
async fn uncertain(
    qbo: &Qbo,
    ledger: &Ledger,
    state: &SummaryLedger,
    pending: Timestamp,
    config: &Config,
    dry_run: bool,
    summary: &mut Summary,
) -> Result<SummaryLedger> {
    let covered: Vec<Value> = sent_since(qbo, state)
        .await
        .map_err(super::fatal)?
        .into_iter()
        .filter(|i| delivered_at(i).is_some_and(|t| t <= pending))
        .collect();
    let docs: Vec<&str> = covered
        .iter()
        .map(|i| i["DocNumber"].as_str().unwrap_or_else(|| id_of(i)))
        .collect();
    let (from, to) = (
        config.sender_email.as_deref().unwrap_or_default(),
        config.bookkeeper_email.as_deref().unwrap_or_default(),
    );
    tracing::warn!(event = "summary_uncertain", through = %pending, invoices = %docs.join(","));
    summary.fail(
        "summary-email",
        format!(
            "an earlier run's summary of {} invoice(s) ({}) may not have reached {to}: Graph never answered, so it is not sent again; look in {from}'s Sent Items and forward it if it is not there",
            docs.len(),
            docs.join(", ")
        ),
    );
    if dry_run {
        return Ok(state.clone());
    }
    let refs: Vec<&Value> = covered.iter().collect();
    let (_, edge) = newest(&refs, state);
    let edge = if newest(&refs, state).0 == pending {
        edge
    } else {
        Vec::new()
    };
    ledger.settle(state, pending, edge).await
}

/// Sends the summary email from SENDER_EMAIL to BOOKKEEPER_EMAIL, at most once: the
/// ledger marks it pending first, and an unclear answer from Graph's sendMail counts as
/// sent (a sign-in that fails comes before the mark, and sends nothing).
async fn deliver(
    graph: &Graph,
    config: &Config,
    ledger: &Ledger,
    state: SummaryLedger,
    (through, edge): (Timestamp, Vec<String>),
    email: &Email,
    summary: &mut Summary,
) -> Result<()> {
    let html = email.render()?;
    let (Some(from), Some(to)) = (&config.sender_email, &config.bookkeeper_email) else {
        unreachable!("checked before the run")
    };
    let message = json!({
        "subject": email.subject(),
        "body": {"contentType": "HTML", "content": html},
        "toRecipients": [{"emailAddress": {"address": to}}],
    });
    if let Err(e) = graph.sign_in().await {
        if e.fatal {
            return Err(super::fatal(e));
        }
        summary.fail(
            "summary-email",
            format!("the summary email to {to} was not sent: signing in to Graph failed ({e}); the next run's summary lists these invoices"),
        );
        return Ok(());
    }
    let state = ledger.begin(&state, through).await?;
    match graph.send_mail(from, &message).await {
        Ok(()) => {
            ledger.settle(&state, through, edge).await?;
            summary.emailed = true;
            tracing::info!(event = "email_sent", from = %from, to = %to, sent = email.sent.len(), failed = email.failed.len(), skipped = email.skipped.len());
        }
        Err(e) if e.is_ambiguous() => {
            ledger.settle(&state, through, edge).await?;
            summary.fail(
                "summary-email",
                format!("Graph gave no clear answer to the summary email to {to} ({e}): it may have been delivered, so it is not sent again; look in {from}'s Sent Items"),
            );
        }
        Err(e) => {
            ledger.abandon(&state).await?;
            if e.fatal {
                return Err(super::fatal(e));
            }
            summary.fail(
                "summary-email",
                format!("the summary email to {to} was not sent: {e}; the next run's summary lists these invoices"),
            );
        }
    }
    Ok(())
}

/// Every NeedToSend invoice; if QBO refuses the filter, every invoice filtered here.
async fn waiting(qbo: &Qbo) -> Result<Vec<Value>, ApiError> {
    match qbo
        .query_all("SELECT * FROM Invoice WHERE EmailStatus = 'NeedToSend' ORDERBY Id")
        .await
    {
        // Pages are read by position: an invoice that moves between two reads could
        // show up twice, and must still be sent once.
        Ok(rows) => Ok(unique(rows)),
        Err(e) if !e.fatal && e.status == Some(400) => {
            tracing::warn!(event = "filter_refused", error = %e, "QBO refused the EmailStatus filter; filtering every invoice locally");
            let all = qbo.query_all("SELECT * FROM Invoice ORDERBY Id").await?;
            Ok(unique(
                all.into_iter()
                    .filter(|i| i["EmailStatus"] == "NeedToSend")
                    .collect(),
            ))
        }
        Err(e) => Err(e),
    }
}

fn unique(rows: Vec<Value>) -> Vec<Value> {
    let mut seen = std::collections::BTreeSet::new();
    rows.into_iter()
        .filter(|r| seen.insert(r["Id"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

async fn send(
    qbo: &Qbo,
    graph: &Graph,
    config: &Config,
    site: &OnceCell<String>,
    invoice: &Value,
    dry_run: bool,
) -> Result<Sent, ApiError> {
    let id = invoice["Id"].as_str().unwrap_or_default();
    let doc = invoice["DocNumber"].as_str().unwrap_or(id);
    if dry_run {
        tracing::info!(
            event = "would_send",
            doc_number = doc,
            to = invoice["BillEmail"]["Address"].as_str().unwrap_or_default()
        );
        return Ok(Sent::Would);
    }
    let sent = match qbo.send_invoice(id).await {
        Ok(sent) => sent,
        Err(e) if e.fatal => return Err(e),
        Err(e) => return Ok(Sent::Failed(e.to_string())),
    };
    tracing::info!(
        event = "invoice_sent",
        doc_number = doc,
        invoice_id = id,
        to = sent["BillEmail"]["Address"].as_str().unwrap_or_default()
    );
    if let (Some(path), Some(host)) = (&config.sharepoint_site_path, &config.ms_graph_hostname) {
        let archived = async {
            let site_id = site.get_or_try_init(|| graph.site_id(host, path)).await?;
            let pdf = qbo.invoice_pdf(id).await?;
            let month = invoice["TxnDate"]
                .as_str()
                .and_then(|d| d.get(..7))
                .unwrap_or("undated");
            let file = format!("Invoices/{month}/{}.pdf", doc.replace(['/', '\\'], "-"));
            graph.upload(site_id, &file, pdf).await.map(|()| file)
        };
        // The invoice went out either way: an archive error is reported, never fatal.
        match archived.await {
            Ok(file) => tracing::info!(event = "invoice_archived", doc_number = doc, path = %file),
            Err(e) => {
                return Ok(Sent::Done(
                    sent,
                    Some(format!(
                        "sent, but archiving the PDF to SharePoint failed: {e}"
                    )),
                ));
            }
        }
    }
    Ok(Sent::Done(sent, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_the_email_are_escaped() {
        let email = Email {
            date: "2026-11-22".into(),
            sent: vec![Row {
                id: "\"><script>".into(),
                doc_number: "10002-202610".into(),
                customer: "<script>alert(1)</script> & Co".into(),
                email: "a@b.example".into(),
                amount: "12.50".into(),
                currency: "USD".into(),
                due_date: "2026-12-22".into(),
                reason: String::new(),
            }],
            ..Email::default()
        };
        let html = email.render().unwrap();
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; Co"),
            "{html}"
        );
        assert!(!html.contains("<script>"));
        assert!(
            !html.contains("\"><"),
            "the link's id is escaped too: {html}"
        );
        assert_eq!(email.subject(), "Invoices sent 2026-11-22: 1 sent");
    }

    #[test]
    fn totals_are_per_currency_and_exact_to_the_cent() {
        let row = |amount: &str, currency: &str| Row {
            amount: amount.into(),
            currency: currency.into(),
            ..Row::default()
        };
        let email = Email {
            // Three 0.1s: a float sum would not be 0.30.
            sent: vec![
                row("0.10", "USD"),
                row("0.10", "USD"),
                row("0.10", "USD"),
                row("5.00", "CAD"),
            ],
            ..Email::default()
        };
        let totals: Vec<(String, String, usize)> = email
            .totals()
            .into_iter()
            .map(|t| (t.currency, t.amount, t.invoices))
            .collect();
        assert_eq!(
            totals,
            [
                ("CAD".into(), "5.00".into(), 1),
                ("USD".into(), "0.30".into(), 3)
            ]
        );
    }
}
