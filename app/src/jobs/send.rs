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

use std::path::Path;
use std::time::Duration;

use jiff::{Timestamp, Zoned};
use minijinja::Environment;
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

/// The summary email's template, built into the binary so the image needs no files.
pub const TEMPLATE: &str = include_str!("../../../assets/sent_invoices_email_template.html");
const TEMPLATE_NAME: &str = "sent_invoices_email_template.html";

/// One row of the summary email.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    pub doc_number: String,
    pub customer: String,
    pub email: String,
    pub amount: String,
    pub due_date: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Email {
    pub date: String,
    pub sent: Vec<Row>,
    /// How many of `sent` went out in an earlier run that never reported them.
    pub earlier: usize,
    pub skipped: Vec<Row>,
    pub failed: Vec<Row>,
}

impl Email {
    /// HTML, with every value escaped (the template is `.html`, so auto-escaping is on).
    pub fn render(&self) -> Result<String> {
        let mut env = Environment::new();
        env.add_template(TEMPLATE_NAME, TEMPLATE)
            .and_then(|()| env.get_template(TEMPLATE_NAME)?.render(self))
            .map_err(|e| {
                Error::Fatal(
                    format!("rendering the summary email: {e}"),
                    "fix assets/sent_invoices_email_template.html".into(),
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
    let config = &ctx.config;
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
    let ledger = Ledger::new(ctx.db.clone(), &config.state_table);
    // Read before anything is sent: a missing table stops the run before it emails a
    // client, not after.
    let mut state = match ledger.summary().await {
        Ok(state) => state,
        Err(e) if dry_run => {
            tracing::warn!(event = "ledger_unreadable", error = %e, "a real run would stop here");
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(s) = state.as_ref().filter(|s| s.pending.is_some()) {
        tracing::warn!(
            event = "summary_uncertain",
            through = %s.pending.unwrap_or(s.reported_through),
            "an earlier run began sending its summary and never learned whether Graph took it: it is not sent again (a second copy is worse than a missing one); look in the sender's Sent Items"
        );
        if !dry_run {
            let through = s.pending.unwrap_or(s.reported_through);
            state = Some(ledger.settle(s, through).await?);
        }
    }
    if state.is_none() && !dry_run {
        // The first run reports what is sent from now on (a margin for clock skew).
        state = Some(
            ledger
                .start(Timestamp::now() - jiff::SignedDuration::from_mins(5))
                .await?,
        );
    }
    let waiting = waiting(&qbo).await.map_err(super::fatal)?;
    let mut summary = Summary::new("send-invoices", dry_run);
    summary.total = waiting.len() as u64;
    tracing::info!(
        event = "run_started",
        job = "send-invoices",
        waiting = waiting.len(),
        dry_run
    );

    let mut email = Email {
        date: today.to_string(),
        ..Email::default()
    };
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
            email.skipped.push(row(&invoice, "excluded customer"));
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
            let (qbo, graph, site, progress) = (&qbo, &graph, &site, &progress);
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
                fatal_error = Some(e);
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
    if let Some(e) = &fatal_error {
        email.failed.push(Row {
            reason: format!("the run stopped: {e}"),
            ..Row::default()
        });
    }

    // This run's sends, and those of a run that stopped before its summary.
    let through = state.as_ref().map(|s| s.reported_through);
    let earlier = match through {
        Some(t) if !dry_run => match sent_since(&qbo, t).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(event = "earlier_sends_unknown", error = %e, "invoices sent by an earlier run that stopped before its summary could not be read; the next summary lists them");
                Vec::new()
            }
        },
        _ => Vec::new(),
    };
    let mine: std::collections::BTreeSet<String> = sent_now
        .iter()
        .map(|i| i["Id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let earlier: Vec<Value> = earlier
        .into_iter()
        .filter(|i| !mine.contains(i["Id"].as_str().unwrap_or_default()))
        .collect();
    email.earlier = earlier.len();
    let newest = sent_now
        .iter()
        .chain(&earlier)
        .filter_map(delivered_at)
        .max();
    email
        .sent
        .extend(sent_now.iter().chain(&earlier).map(|i| row(i, "")));
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
    } else if dry_run {
        let html = email.render()?;
        std::fs::write(email_out, &html).map_err(|e| {
            Error::Usage(
                format!("cannot write the email to {}: {e}", email_out.display()),
                "pass --email-out with a writable path".into(),
            )
        })?;
        tracing::info!(event = "email_rendered", path = %email_out.display(), subject = %email.subject());
    } else if ctx
        .stop
        .deadline()
        .is_some_and(|d| d <= std::time::Instant::now())
    {
        tracing::warn!(
            event = "summary_deferred",
            "the run was stopped and its grace period is over: the next run's summary lists these invoices"
        );
    } else if let Some(state) = state {
        let through = newest.unwrap_or(state.reported_through);
        deliver(
            &graph,
            config,
            &ledger,
            state,
            through,
            &email,
            &mut summary,
        )
        .await?;
    }
    if let Some(e) = fatal_error {
        tracing::info!(
            event = "sent_before_stop",
            sent = summary.done,
            failed = summary.failures.len()
        );
        return Err(super::fatal(e));
    }
    Ok(summary)
}

/// When QBO says the invoice was emailed.
fn delivered_at(invoice: &Value) -> Option<Timestamp> {
    invoice["DeliveryInfo"]["DeliveryTime"]
        .as_str()
        .and_then(|t| t.parse().ok())
}

/// Invoices emailed after `through`: any run's, or a person's from QBO itself. Sending
/// updates an invoice, so its `MetaData.LastUpdatedTime` is at least its delivery time.
async fn sent_since(qbo: &Qbo, through: Timestamp) -> Result<Vec<Value>, ApiError> {
    let since = through.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string();
    let rows = qbo
        .query_all(&format!(
            "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime > '{since}'"
        ))
        .await?;
    Ok(unique(
        rows.into_iter()
            .filter(|i| i["EmailStatus"] == "EmailSent")
            .filter(|i| delivered_at(i).is_some_and(|t| t > through))
            .collect(),
    ))
}

/// Sends the summary email from SENDER_EMAIL to BOOKKEEPER_EMAIL, at most once: the
/// ledger marks it pending first, and an unclear answer from Graph counts as sent.
async fn deliver(
    graph: &Graph,
    config: &Config,
    ledger: &Ledger,
    state: SummaryLedger,
    through: Timestamp,
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
    let state = ledger.begin(&state, through).await?;
    match graph.send_mail(from, &message).await {
        Ok(()) => {
            ledger.settle(&state, through).await?;
            summary.emailed = true;
            tracing::info!(event = "email_sent", from = %from, to = %to, sent = email.sent.len(), failed = email.failed.len(), skipped = email.skipped.len());
        }
        Err(e) if e.is_ambiguous() => {
            ledger.settle(&state, through).await?;
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
                doc_number: "10002-202610".into(),
                customer: "<script>alert(1)</script> & Co".into(),
                email: "a@b.example".into(),
                amount: "12.50".into(),
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
        assert_eq!(email.subject(), "Invoices sent 2026-11-22: 1 sent");
    }
}
