//! The bookkeeper's monthly billing report, after `--create-invoices`: what was billed
//! (from QBO itself, so a rerun's report covers earlier runs' invoices too), the change
//! from the previous month's invoices, who was not billed and why, the runs still going
//! at billing time, a chart of the largest clients, and the rows as a CSV attachment.
//!
//! Sent at most once per period (and shard) through Graph: the job-state table keeps
//! the DocNumbers reported, and a report about to be sent. A rerun that billed nothing
//! new sends nothing; one that did sends an update. A send whose answer was lost is
//! never repeated (a second copy is worse than a missing one) but is reported as a
//! failure naming the Sent Items to look in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine as _;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};

use super::Summary;
use crate::api::graph::Graph;
use crate::api::qbo::{self, Qbo};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::state::Ledger;

const TEMPLATE: &str = include_str!("../../../assets/monthly_report_email_template.html");
const TEMPLATE_NAME: &str = "monthly_report_email_template.html";
/// Clients in the chart: the largest by minutes.
const CHART_ROWS: usize = 15;
/// A change beyond this factor (either way) is flagged for a look.
const LARGE_CHANGE: i64 = 3;

/// One invoiced client.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Line {
    pub client_id: String,
    pub customer: String,
    pub doc_number: String,
    pub minutes: String,
    pub rate: String,
    pub amount: String,
    pub currency: String,
    /// The previous month's amount, if it was billed.
    pub previous: String,
    /// `+12.5%`, `-40.0%`, or empty when new.
    pub change: String,
    /// Why a person should look: `new`, `more than 3x last month`, `less than a third`.
    pub flag: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Total {
    pub currency: String,
    pub invoices: usize,
    pub minutes: String,
    pub amount: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotBilled {
    pub client_id: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    pub label: String,
    pub minutes: String,
    /// Percent of the largest, at least 1.
    pub width: u32,
}

/// The report's data: everything the template shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub period: String,
    /// A second report for the period: something new was billed since the first.
    pub update: bool,
    pub dry_run: bool,
    pub result: String,
    pub totals: Vec<Total>,
    pub lines: Vec<Line>,
    pub not_billed: Vec<NotBilled>,
    /// Billed last month, nothing this month.
    pub dropped: Vec<Line>,
    /// `(client, run id)` of Control Room runs still going at billing time.
    pub in_progress: Vec<(String, String)>,
    /// `(client, run id)` of finished runs with neither duration nor end: not billed.
    pub unmeasured: Vec<(String, String)>,
    pub chart: Vec<Bar>,
    pub invoice_url: String,
    /// `K/N` of a sharded run's report.
    pub shard: Option<String>,
}

/// The largest request Graph takes, attachments included (see `fakes::graph`).
const GRAPH_REQUEST_LIMIT: usize = 4 * 1024 * 1024;

/// The id a report failure is listed under, beside the clients' ids.
pub const REPORT_ID: &str = "billing-report";

/// What the billing run hands over.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub period_label: String,
    /// `YYYYMM` of the period and of the month before.
    pub compact: (String, String),
    /// Every client in the run's part of the table: `client_id`.
    pub clients: Vec<String>,
    /// With `--dry-run`: the invoices the run would create (they are not in QBO).
    pub would: Vec<Value>,
    pub in_progress: Vec<(String, String)>,
    pub unmeasured: Vec<(String, String)>,
    /// Each client's QBO customer `Id`, where the run found it: an invoice is the
    /// client's only if it bills that customer (an invoice number alone is no proof).
    pub customers: BTreeMap<String, Value>,
    pub summary: &'a Summary,
}

/// Reads this month's and last month's invoices of `clients` from QBO (batched
/// queries, 100 DocNumbers each), then builds the report.
pub async fn build(qbo: &Qbo, inputs: &Inputs<'_>) -> Result<Report> {
    let (now, before) = &inputs.compact;
    let docs = |month: &str| -> Vec<String> {
        inputs
            .clients
            .iter()
            .flat_map(|c| super::create::numbers(c, month))
            .collect()
    };
    let mut queries = Vec::new();
    for month in [now, before] {
        for chunk in docs(month).chunks(100) {
            let list: Vec<String> = chunk.iter().map(|d| qbo::quote(d)).collect();
            queries.push(format!(
                "SELECT * FROM Invoice WHERE DocNumber IN ({}) MAXRESULTS 1000",
                list.join(", ")
            ));
        }
    }
    let mut found: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for chunk in queries.chunks(qbo::BATCH) {
        let answers = qbo.batch_queries(chunk).await.map_err(super::fatal)?;
        for answer in answers {
            let rows = answer.map_err(|e| {
                Error::Fatal(
                    format!("reading the month's invoices for the billing report failed: {e}"),
                    "run the job again: it bills no one twice, and sends the report".into(),
                )
            })?;
            for row in rows {
                if let Some(doc) = row["DocNumber"].as_str() {
                    found.entry(doc.to_owned()).or_default().push(row);
                }
            }
        }
    }
    for w in &inputs.would {
        if let Some(doc) = w["DocNumber"].as_str() {
            found.entry(doc.to_owned()).or_default().push(w.clone());
        }
    }
    Ok(assemble(inputs, &found, qbo.invoice_link("")))
}

fn decimal(v: &Value) -> Decimal {
    match v {
        Value::Number(n) => n.to_string().parse().unwrap_or_default(),
        Value::String(s) => s.parse().unwrap_or_default(),
        _ => Decimal::ZERO,
    }
}

fn money(d: Decimal) -> String {
    format!(
        "{:.2}",
        d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
    )
}

fn line_of(client_id: &str, inv: &Value) -> Line {
    let detail = &inv["Line"][0]["SalesItemLineDetail"];
    let amount = inv
        .get("TotalAmt")
        .map_or_else(|| decimal(&inv["Line"][0]["Amount"]), decimal);
    Line {
        client_id: client_id.to_owned(),
        customer: inv["CustomerRef"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        doc_number: inv["DocNumber"].as_str().unwrap_or_default().to_owned(),
        minutes: decimal(&detail["Qty"]).normalize().to_string(),
        rate: decimal(&detail["UnitPrice"]).normalize().to_string(),
        amount: money(amount),
        currency: inv["CurrencyRef"]["value"]
            .as_str()
            .unwrap_or("USD")
            .to_owned(),
        ..Line::default()
    }
}

/// The report from the invoices found (by DocNumber), pure: the tests feed it directly.
pub fn assemble(
    inputs: &Inputs<'_>,
    found: &BTreeMap<String, Vec<Value>>,
    invoice_url: String,
) -> Report {
    let (lines, dropped) = invoiced_lines(inputs, found);
    let totals = totals(&lines);
    let chart = chart(&lines);
    let s = inputs.summary;
    let result = result(&lines, &totals, s);
    Report {
        period: inputs.period_label.clone(),
        update: false,
        dry_run: s.dry_run,
        result,
        totals,
        not_billed: not_billed(s),
        lines,
        dropped,
        in_progress: inputs.in_progress.clone(),
        unmeasured: inputs.unmeasured.clone(),
        chart,
        invoice_url,
        shard: s.shard.clone(),
    }
}

/// Each client's invoice of the month beside last month's, flagged when new or far from
/// it, sorted by client; and the clients billed last month but not this one.
fn invoiced_lines(
    inputs: &Inputs<'_>,
    found: &BTreeMap<String, Vec<Value>>,
) -> (Vec<Line>, Vec<Line>) {
    let (now, before) = &inputs.compact;
    let mut lines = Vec::new();
    let mut dropped = Vec::new();
    for client in &inputs.clients {
        // The client's invoice of a month: one of its numbers, billing its customer or
        // carrying the job's mark for it (where the run did not learn the customer, the
        // mark, else the first number's).
        let of = |month: &str| {
            let (year, rest) = month.split_at(4.min(month.len()));
            let mark = super::create::marker(client, &format!("{year}-{rest}"));
            let held: Vec<&Value> = super::create::numbers(client, month)
                .iter()
                .filter_map(|doc| found.get(doc))
                .flatten()
                .collect();
            match inputs.customers.get(client) {
                Some(c) => held
                    .into_iter()
                    .find(|i| super::create::is_clients(i, c, &mark)),
                None => held
                    .iter()
                    .find(|i| super::create::marked(i, &mark))
                    .or_else(|| held.first())
                    .copied(),
            }
        };
        let current = of(now);
        let previous = of(before).map(|p| line_of(client, p));
        match (current, previous) {
            (Some(inv), previous) => {
                let mut line = line_of(client, inv);
                match previous {
                    None => line.flag = "new".into(),
                    Some(p) => {
                        let (was, is) = (
                            p.amount.parse::<Decimal>().unwrap_or_default(),
                            line.amount.parse::<Decimal>().unwrap_or_default(),
                        );
                        line.previous = p.amount;
                        if was > Decimal::ZERO {
                            let pct = (is - was) / was * Decimal::from(100);
                            line.change = format!("{:+.1}%", pct.round_dp(1));
                            if is > was * Decimal::from(LARGE_CHANGE) {
                                line.flag = format!("more than {LARGE_CHANGE}x last month");
                            } else if is * Decimal::from(LARGE_CHANGE) < was {
                                line.flag = "less than a third of last month".into();
                            }
                        }
                    }
                }
                lines.push(line);
            }
            (None, Some(mut p)) => {
                p.flag = "billed last month, not this month".into();
                p.previous.clone_from(&p.amount);
                dropped.push(p);
            }
            (None, None) => {}
        }
    }
    lines.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    (lines, dropped)
}

/// The month's totals, per currency.
fn totals(lines: &[Line]) -> Vec<Total> {
    let mut sums: BTreeMap<String, (usize, Decimal, Decimal)> = BTreeMap::new();
    for l in lines {
        let e = sums.entry(l.currency.clone()).or_default();
        e.0 += 1;
        e.1 += l.minutes.parse::<Decimal>().unwrap_or_default();
        e.2 += l.amount.parse::<Decimal>().unwrap_or_default();
    }
    sums.into_iter()
        .map(|(currency, (invoices, minutes, amount))| Total {
            currency,
            invoices,
            minutes: minutes.normalize().to_string(),
            amount: money(amount),
        })
        .collect()
}

/// The clients with the most minutes, as bars relative to the largest.
fn chart(lines: &[Line]) -> Vec<Bar> {
    let mut by_minutes: Vec<&Line> = lines.iter().collect();
    by_minutes.sort_by(|a, b| {
        let m = |l: &Line| l.minutes.parse::<Decimal>().unwrap_or_default();
        m(b).cmp(&m(a)).then_with(|| a.client_id.cmp(&b.client_id))
    });
    let largest = by_minutes
        .first()
        .map_or(Decimal::ZERO, |l| l.minutes.parse().unwrap_or_default());
    by_minutes
        .iter()
        .take(CHART_ROWS)
        .map(|l| {
            let m: Decimal = l.minutes.parse().unwrap_or_default();
            let pct = if largest > Decimal::ZERO {
                (m / largest * Decimal::from(100)).round()
            } else {
                Decimal::ZERO
            };
            Bar {
                label: l.customer.clone(),
                minutes: l.minutes.clone(),
                width: pct.to_string().parse::<u32>().unwrap_or(0).clamp(1, 100),
            }
        })
        .collect()
}

/// Every client not billed, failed or skipped, with why, by client.
fn not_billed(s: &Summary) -> Vec<NotBilled> {
    let mut not_billed: Vec<NotBilled> = s
        .failures
        .iter()
        .map(|(id, why)| NotBilled {
            client_id: id.clone(),
            why: why.clone(),
        })
        .chain(s.skips.iter().map(|(id, why)| NotBilled {
            client_id: id.clone(),
            why: why.clone(),
        }))
        .collect();
    not_billed.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    not_billed
}

/// The report's one-line result: how many invoiced, for how much, and how many failed.
fn result(lines: &[Line], totals: &[Total], s: &Summary) -> String {
    let billed: Vec<String> = totals
        .iter()
        .map(|t: &Total| crate::money::shown(&t.amount, &t.currency))
        .collect();
    let billed = if billed.is_empty() {
        String::new()
    } else {
        format!(" for {}", billed.join(" + "))
    };
    if s.failures.is_empty() {
        format!("{} invoiced{billed}, nothing failed", lines.len())
    } else {
        format!(
            "{} invoiced{billed}, {} failed (below, with what to do)",
            lines.len(),
            s.failures.len()
        )
    }
}

impl Report {
    pub fn subject(&self) -> String {
        let totals: Vec<String> = self
            .totals
            .iter()
            .map(|t| crate::money::shown(&t.amount, &t.currency))
            .collect();
        format!(
            "Billing {}{}: {} invoices{}{}",
            self.period,
            if self.update { " (update)" } else { "" },
            self.lines.len(),
            if totals.is_empty() {
                String::new()
            } else {
                format!(", {}", totals.join(" + "))
            },
            if self
                .not_billed
                .iter()
                .any(|n| !n.why.starts_with("inactive") && !n.why.starts_with("excluded"))
            {
                ", some not billed"
            } else {
                ""
            }
        )
    }

    /// HTML, every value escaped (an `.html` template: auto-escaping on). The template
    /// is read from the assets directory first, as the daily summary's is.
    pub fn render(&self) -> Result<String> {
        let (source, origin) = super::send::template_named(TEMPLATE_NAME, TEMPLATE)?;
        let mut env = crate::money::environment();
        env.add_template(TEMPLATE_NAME, &source)
            .and_then(|()| env.get_template(TEMPLATE_NAME)?.render(self))
            .map_err(|e| {
                Error::Usage(
                    format!("cannot render the billing report from {origin}: {e}"),
                    format!("fix {origin}, or remove it to use the built-in template"),
                )
            })
    }

    /// The rows as CSV: every invoiced client, then those billed last month only.
    pub fn csv(&self) -> Result<Vec<u8>> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let fail = |e: csv::Error| {
            Error::Fatal(
                format!("writing the report's CSV: {e}"),
                "report this".into(),
            )
        };
        w.write_record([
            "client_id",
            "customer",
            "doc_number",
            "minutes",
            "rate",
            "amount",
            "currency",
            "previous_amount",
            "change",
            "flag",
        ])
        .map_err(fail)?;
        for l in self.lines.iter().chain(&self.dropped) {
            w.write_record([
                inert(&l.client_id).as_ref(),
                &inert(&l.customer),
                &inert(&l.doc_number),
                &l.minutes,
                &l.rate,
                &l.amount,
                &l.currency,
                &l.previous,
                &l.change,
                &inert(&l.flag),
            ])
            .map_err(fail)?;
        }
        w.into_inner().map_err(|e| {
            Error::Fatal(
                format!("writing the report's CSV: {e}"),
                "report this".into(),
            )
        })
    }

    fn csv_name(&self) -> String {
        format!("billing-{}.csv", self.period)
    }
}

/// A text cell a spreadsheet shows as text: one that starts with `=`, `+`, `-`, `@`, a
/// tab or a carriage return would run as a formula in Excel or Sheets, so it gets a
/// leading `'` (OWASP, "CSV Injection"). QBO display names are typed by people.
fn inert(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// With `--dry-run`: the report to `out` and its CSV beside it, nothing sent.
pub fn write(report: &Report, out: &Path) -> Result<()> {
    let html = report.render()?;
    let csv_path = out.with_extension("csv");
    let fail = |path: &Path, e: std::io::Error| {
        Error::Usage(
            format!("cannot write the billing report to {}: {e}", path.display()),
            "pass --report-out with a writable path".into(),
        )
    };
    std::fs::write(out, html).map_err(|e| fail(out, e))?;
    std::fs::write(&csv_path, report.csv()?).map_err(|e| fail(&csv_path, e))?;
    tracing::info!(event = "report_written", path = %out.display(), csv = %csv_path.display(), subject = %report.subject());
    Ok(())
}

/// Sends the report to the bookkeeper at most once per period and key, unless
/// something new was billed since the last one (then as an update).
pub async fn deliver(
    graph: &Graph,
    config: &Config,
    ledger: &Ledger,
    key: &str,
    mut report: Report,
    summary: &mut Summary,
) -> Result<()> {
    let (Some(from), Some(to)) = (&config.sender_email, &config.bookkeeper_email) else {
        unreachable!("the run checks both addresses before it builds a report")
    };
    let docs: BTreeSet<String> = report.lines.iter().map(|l| l.doc_number.clone()).collect();
    let mut state = ledger.report(key).await?;
    if let Some(pending) = state.pending.clone() {
        summary.fail(
            REPORT_ID,
            format!(
                "an earlier run's billing report of {} invoice(s) may not have reached {to}: Graph never answered, so it is not sent again; look in {from}'s Sent Items",
                pending.len()
            ),
        );
        state = ledger.settle_report(key, &state, pending).await?;
    }
    if docs.is_empty() || docs.is_subset(&state.reported) {
        tracing::info!(event = "report_unchanged", period = %report.period, "nothing billed since the last report: no report");
        return Ok(());
    }
    report.update = !state.reported.is_empty();
    let html = report.render()?;
    let csv = report.csv()?;
    let mut message = json!({
        "subject": report.subject(),
        "body": {"contentType": "HTML", "content": html},
        "toRecipients": [{"emailAddress": {"address": to}}],
        "attachments": [{
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": report.csv_name(),
            "contentType": "text/csv",
            "contentBytes": base64::engine::general_purpose::STANDARD.encode(csv),
        }],
    });
    // Graph takes a request of at most 4 MB, attachments included (a larger one is
    // refused with 413): a CSV that would pass it stays out, and the email says so.
    if json!({"message": &message}).to_string().len() > GRAPH_REQUEST_LIMIT {
        tracing::warn!(
            event = "report_csv_left_out",
            "the report with its CSV is over Graph's 4 MB: sent without the CSV"
        );
        message["attachments"] = json!([]);
        let rerun = format!(
            "qbo-invoice-processor --create-invoices --dry-run --period {}{} --report-out report.html",
            report.period,
            report
                .shard
                .as_deref()
                .map(|s| format!(" --shard {s}"))
                .unwrap_or_default()
        );
        let note = format!(
            "<p><strong>The CSV is too large to attach</strong> (Graph takes 4 MB a message): run <code>{rerun}</code> for it.</p>"
        );
        let body = message["body"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // Right after the body's opening tag, whatever its attributes; else first.
        let at = body
            .find("<body")
            .and_then(|b| body[b..].find('>').map(|e| b + e + 1))
            .unwrap_or(0);
        message["body"]["content"] = json!(format!("{}{note}{}", &body[..at], &body[at..]));
        if json!({"message": &message}).to_string().len() > GRAPH_REQUEST_LIMIT {
            return Err(Error::Usage(
                format!(
                    "the billing report of {} is over Graph's 4 MB even without its CSV",
                    report.period
                ),
                format!("run `{rerun}` to have it as a file"),
            ));
        }
    }
    if let Err(e) = graph.sign_in().await {
        summary.fail(
            REPORT_ID,
            format!("the billing report was not sent: signing in to Graph failed ({e}); the next run sends it"),
        );
        return Ok(());
    }
    let state = ledger.begin_report(key, &state, &docs).await?;
    match graph.send_mail(from, &message).await {
        Ok(()) => {
            ledger.settle_report(key, &state, docs).await?;
            tracing::info!(event = "report_sent", period = %report.period, update = report.update, invoices = report.lines.len(), to = %to);
        }
        Err(e) if e.is_ambiguous() => {
            ledger.settle_report(key, &state, docs).await?;
            summary.fail(
                REPORT_ID,
                format!("Graph gave no clear answer to the billing report to {to} ({e}): it may have been delivered, so it is not sent again; look in {from}'s Sent Items"),
            );
        }
        Err(e) => {
            ledger.abandon_report(key, &state).await?;
            summary.fail(
                REPORT_ID,
                format!("the billing report to {to} was not sent ({e}); the next run sends it"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_text_cells_that_a_spreadsheet_would_run_are_neutralised() {
        let line = |customer: &str| Line {
            client_id: "10001".into(),
            customer: customer.into(),
            doc_number: "10001-202610".into(),
            amount: "-12.50".into(),
            ..Line::default()
        };
        let report = Report {
            lines: vec![
                line("=HYPERLINK(\"http://x.example\",\"click\")"),
                line("+1 Widgets"),
                line("-Acme"),
                line("@SUM(A1)"),
                line("\tTabbed"),
                line("Plain & Co"),
            ],
            ..Report::default()
        };
        let csv = String::from_utf8(report.csv().unwrap()).unwrap();
        let customers: Vec<String> = csv::Reader::from_reader(csv.as_bytes())
            .records()
            .map(|r| r.unwrap()[1].to_owned())
            .collect();
        assert_eq!(
            customers,
            [
                "'=HYPERLINK(\"http://x.example\",\"click\")",
                "'+1 Widgets",
                "'-Acme",
                "'@SUM(A1)",
                "'\tTabbed",
                "Plain & Co"
            ]
        );
        // Numbers stay numbers.
        assert!(csv.contains(",-12.50,"), "{csv}");
    }
}
