//! `--send-invoices`: every QBO invoice waiting to be sent (EmailStatus NeedToSend,
//! paged) goes out once through QBO's send endpoint, excluded customers and invoices
//! without a billing email are skipped and reported, failures stay isolated; each sent
//! invoice's PDF is archived to SharePoint when a site is configured; then one summary
//! email goes from SENDER_EMAIL to BOOKKEEPER_EMAIL. A sent invoice leaves the
//! NeedToSend set, so a rerun never sends it twice.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use jiff::Zoned;
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
    let ((qbo_secret, whole), graph_secret) = tokio::try_join!(
        ctx.secrets.qbo(&config.secrets.qbo),
        ctx.secrets.get::<GraphSecret>(&config.secrets.msgraph),
    )?;
    let qbo = Qbo::new(
        &qbo_secret,
        whole,
        config.urls.qbo_api.as_deref(),
        &config.urls.qbo_token,
        ctx.secrets.clone(),
        &config.secrets.qbo,
    );
    let graph = Graph::new(&graph_secret, &config.urls.graph, &config.urls.login);
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
    let shared = Arc::new((qbo, graph, config.clone()));
    let (progress, ticker) = Progress::start(
        "send-invoices",
        to_send.len() as u64,
        Duration::from_secs(10),
    );
    let mut results = futures_util::stream::iter(to_send)
        .map(|(id, invoice)| {
            let shared = Arc::clone(&shared);
            let progress = Arc::clone(&progress);
            let site = &site;
            async move {
                let (qbo, graph, config) = &*shared;
                let outcome = send(qbo, graph, config, site, &invoice, dry_run).await;
                progress.tick();
                (id, invoice, outcome)
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut fatal_error = None;
    while let Some((id, invoice, outcome)) = results.next().await {
        match outcome {
            Ok(Sent::Done(sent, archive_error)) => {
                summary.done += 1;
                email.sent.push(row(&sent, ""));
                if let Some(why) = archive_error {
                    summary.fail(&id, why.clone());
                    email.failed.push(row(&sent, &why));
                }
            }
            Ok(Sent::Would) => {
                summary.would += 1;
                email.sent.push(row(&invoice, ""));
            }
            Ok(Sent::Failed(why)) => {
                summary.fail(&id, why.clone());
                email.failed.push(row(&invoice, &why));
            }
            Err(e) => {
                fatal_error = Some(e);
                break;
            }
        }
    }
    drop(results);
    ticker.abort();
    progress.finish();
    let (_, graph, _) = &*shared;
    if let Some(e) = fatal_error {
        // What already went out is still reported, if Graph can be reached.
        if !dry_run && !email.sent.is_empty() {
            email.failed.push(Row {
                reason: format!("the run stopped: {e}"),
                ..Row::default()
            });
            let _ = deliver(graph, config, &email, &mut summary).await;
        }
        tracing::info!(
            event = "sent_before_stop",
            sent = summary.done,
            failed = summary.failures.len()
        );
        return Err(super::fatal(e));
    }
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
        return Ok(summary);
    }
    if dry_run {
        let html = email.render()?;
        std::fs::write(email_out, &html).map_err(|e| {
            Error::Usage(
                format!("cannot write the email to {}: {e}", email_out.display()),
                "pass --email-out with a writable path".into(),
            )
        })?;
        tracing::info!(event = "email_rendered", path = %email_out.display(), subject = %email.subject());
        return Ok(summary);
    }
    deliver(graph, config, &email, &mut summary).await?;
    Ok(summary)
}

/// Sends the summary email from SENDER_EMAIL to BOOKKEEPER_EMAIL.
async fn deliver(
    graph: &Graph,
    config: &Config,
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
    match graph.send_mail(from, &message).await {
        Ok(()) => {
            summary.emailed = true;
            tracing::info!(event = "email_sent", from = %from, to = %to, sent = email.sent.len(), failed = email.failed.len(), skipped = email.skipped.len());
        }
        Err(e) if e.fatal => return Err(super::fatal(e)),
        Err(e) => summary.fail(
            "summary-email",
            format!("the summary email to {to} was not sent: {e}"),
        ),
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
