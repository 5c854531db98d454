//! `--send-invoices` and the bookkeeper's summary email.

use std::collections::BTreeMap;

use fakes::control::{Action, Fault, Limits};
use serde_json::{Value, json};

use super::{World, world};

const SCRIPT: &str = "10099 - <script>alert(1)</script> & Sons";

/// An invoice for every customer in the seed (each with an amount that tells it apart),
/// plus the `<script>` customer: waiting to be sent (NeedToSend) where the customer has
/// an address, not to be emailed (NotSet) where it has none, as QBO requires. Returns
/// DocNumber -> amount text.
pub(super) fn add_invoices(w: &World, per_customer: usize) -> BTreeMap<String, String> {
    let mut q = w.fakes.qbo.lock().unwrap();
    let customers: Vec<(String, Option<String>)> = w.month.seed.qbo.customers.clone();
    let mut amounts = BTreeMap::new();
    let mut n = 0;
    for k in 0..per_customer {
        for (name, email) in &customers {
            n += 1;
            let id = q.customer_id(name).unwrap();
            let doc = format!("S{n:05}");
            let cents = 1000 + n * 7;
            let amount = format!("{}.{:02}", cents / 100, cents % 100);
            let mut inv = json!({
                "DocNumber": doc,
                "TxnDate": "2026-11-04",
                "DueDate": "2026-12-04",
                "CustomerRef": {"value": id, "name": name},
                "EmailStatus": if email.is_some() { "NeedToSend" } else { "NotSet" },
                "Line": [{"DetailType": "SalesItemLineDetail", "Amount": amount.parse::<f64>().unwrap(),
                          "SalesItemLineDetail": {"Qty": 1, "UnitPrice": amount.parse::<f64>().unwrap()}}],
            });
            if let Some(e) = email {
                inv["BillEmail"] = json!({"Address": e});
            }
            q.insert_invoice(inv).unwrap();
            amounts.insert(doc, amount);
            let _ = k;
        }
    }
    amounts
}

/// `(doc, customer, amount)` of each row of the email's table `id`, and its reasons.
pub(super) fn table(html: &str, id: &str) -> Vec<Vec<String>> {
    let Some(start) = html.find(&format!("<table id=\"{id}\">")) else {
        return Vec::new();
    };
    let body = &html[start..];
    let body = &body[..body.find("</table>").unwrap()];
    body.split("<tr>")
        .skip(2)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let cell = &cell[cell.find('>').unwrap() + 1..];
                    text_of(&cell[..cell.find("</td>").unwrap()])
                })
                .collect()
        })
        .collect()
}

/// A cell's text: its tags dropped.
fn text_of(cell: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in cell.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Each row's first link, with the HTML escapes in it undone.
fn links(html: &str, id: &str) -> Vec<String> {
    let start = html.find(&format!("<table id=\"{id}\">")).unwrap();
    let body = &html[start..];
    let body = &body[..body.find("</table>").unwrap()];
    body.split("<a href=\"")
        .skip(1)
        .map(|l| {
            l[..l.find('"').unwrap()]
                .replace("&#x2f;", "/")
                .replace("&amp;", "&")
        })
        .collect()
}

pub(super) fn sent(state: &Value) -> BTreeMap<String, u64> {
    state["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["EmailStatus"] == "EmailSent")
        .map(|i| {
            (
                i["DocNumber"].as_str().unwrap().to_owned(),
                i["SyncToken"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn waiting_invoices_go_out_once_and_the_bookkeeper_gets_the_summary() {
    let w = world(40, |m| {
        m.seed
            .qbo
            .customers
            .push((SCRIPT.into(), Some("sons@example.com".into())));
    })
    .await;
    let amounts = add_invoices(&w, 1);
    assert!(amounts.len() >= 40);
    let (excluded, no_email): (Vec<String>, Vec<String>) = {
        let q = w.fakes.qbo.lock().unwrap();
        let inv = q.invoices();
        let docs = |f: &dyn Fn(&Value) -> bool| {
            inv.iter()
                .filter(|i| f(i))
                .map(|i| i["DocNumber"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        (
            docs(&|i| {
                w.month
                    .excluded
                    .iter()
                    .any(|e| i["CustomerRef"]["name"] == e.as_str())
            }),
            docs(&|i| i["BillEmail"].is_null()),
        )
    };
    assert_eq!(excluded.len(), 1);
    assert!(!no_email.is_empty());
    // One send the fake refuses, and one answered 429 with Retry-After first.
    let refused_id = w
        .fakes
        .qbo
        .lock()
        .unwrap()
        .invoices()
        .iter()
        .find(|i| i["DocNumber"] == "S00012")
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lost_id = w
        .fakes
        .qbo
        .lock()
        .unwrap()
        .invoices()
        .iter()
        .find(|i| i["DocNumber"] == "S00030")
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    let throttled_id = w
        .fakes
        .qbo
        .lock()
        .unwrap()
        .invoices()
        .iter()
        .find(|i| i["DocNumber"] == "S00020")
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    {
        let mut c = w.fakes.control.0.lock().unwrap();
        c.add_fault(Fault {
            times: 100,
            ..Fault::status("qbo", Some(&format!("/invoice/{refused_id}/send")), 1, 400)
        });
        // The send goes through but its answer is lost: it must not go out twice.
        c.add_fault(Fault {
            action: Action::StatusAfter { status: 502 },
            ..Fault::status("qbo", Some(&format!("/invoice/{lost_id}/send")), 1, 502)
        });
        c.add_fault(Fault {
            action: Action::Status {
                status: 429,
                retry_after: Some(1),
            },
            ..Fault::status(
                "qbo",
                Some(&format!("/invoice/{throttled_id}/send")),
                1,
                429,
            )
        });
    }
    w.fakes.graph.lock().unwrap().throttle_next = 1;

    let mut cmd = w.job(&["--send-invoices"]);
    cmd.env("SHAREPOINT_SITE_PATH", "sites/billing");
    let run = super::finish(cmd.spawn().unwrap()).await;
    assert_eq!(
        run.code, 1,
        "one send failed\n{}\n{}",
        run.stdout, run.stderr
    );
    let state = w.state().await;
    let want: Vec<String> = amounts
        .keys()
        .filter(|d| !excluded.contains(d) && !no_email.contains(d) && **d != "S00012")
        .cloned()
        .collect();
    let got = sent(&state);
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        want,
        "every eligible invoice is sent"
    );
    assert!(
        got.values().all(|sync| *sync == 1),
        "each sent exactly once: {got:?}"
    );
    // Each sent invoice's PDF is archived under Invoices/YYYY-MM/.
    let files: Vec<String> = state["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    let mut want_files: Vec<String> = want
        .iter()
        .map(|d| format!("Invoices/2026-11/{d}.pdf"))
        .collect();
    let mut files_sorted = files.clone();
    files_sorted.sort();
    want_files.sort();
    assert_eq!(files_sorted, want_files);

    // One email, from the sender to the bookkeeper, listing exactly the sent ones.
    let mails = state["mails"].as_array().unwrap();
    assert_eq!(mails.len(), 1, "one summary email");
    assert_eq!(mails[0]["from"], "billing@example.com");
    let message = &mails[0]["message"];
    assert_eq!(
        message["toRecipients"][0]["emailAddress"]["address"],
        "bookkeeper@example.com"
    );
    let html = message["body"]["content"].as_str().unwrap();
    let rows = table(html, "sent");
    let listed: BTreeMap<String, String> =
        rows.iter().map(|r| (r[0].clone(), r[3].clone())).collect();
    let expected: BTreeMap<String, String> = want
        .iter()
        .map(|d| {
            let (units, frac) = amounts[d].split_once('.').unwrap();
            let cents = units.parse::<i64>().unwrap() * 100 + frac.parse::<i64>().unwrap();
            (d.clone(), super::shown(cents, "USD"))
        })
        .collect();
    assert_eq!(
        listed, expected,
        "the table lists the sent invoices with their amounts"
    );
    // Each row: the invoice's due date as QBO holds it, and a link to it in QBO (the
    // sandbox's web app: the test's secret says sandbox).
    let by_doc: BTreeMap<&str, &Value> = state["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["DocNumber"].as_str().unwrap(), i))
        .collect();
    for (r, link) in rows.iter().zip(links(html, "sent")) {
        let invoice = by_doc[r[0].as_str()];
        assert!(!r[4].is_empty(), "a due date: {r:?}");
        assert_eq!(r[4], invoice["DueDate"].as_str().unwrap(), "{r:?}");
        assert_eq!(
            link,
            format!(
                "https://app.sandbox.qbo.intuit.com/app/invoice?txnId={}",
                invoice["Id"].as_str().unwrap()
            )
        );
    }
    // The total per currency, to the cent.
    let cents: i64 = want
        .iter()
        .map(|d| {
            let (units, frac) = amounts[d].split_once('.').unwrap();
            units.parse::<i64>().unwrap() * 100 + frac.parse::<i64>().unwrap()
        })
        .sum();
    let totals = table(html, "totals");
    assert_eq!(
        totals,
        [vec![
            "USD".to_owned(),
            want.len().to_string(),
            super::shown(cents, "USD")
        ]]
    );
    let failed = table(html, "failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0][0], "S00012");
    assert!(failed[0][2].contains("injected fault"), "{failed:?}");
    let skipped = table(html, "skipped");
    assert_eq!(
        skipped.len(),
        excluded.len(),
        "invoices not set to be emailed are not waiting"
    );
    // The customer name is escaped.
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; Sons"),
        "{html}"
    );
    assert!(!html.contains("<script>"));

    // The 429s were waited out: QBO's and Graph's calls came back after Retry-After.
    let calls = state["calls"].as_array().unwrap();
    for path in [
        format!("/qbo/v3/company/9130000000000001/invoice/{throttled_id}/send"),
        "/graph/v1.0/users/billing@example.com/sendMail".to_owned(),
    ] {
        let at: Vec<(u64, u64)> = calls
            .iter()
            .filter(|c| c["path"] == path.as_str())
            .map(|c| (c["at_ms"].as_u64().unwrap(), c["status"].as_u64().unwrap()))
            .collect();
        assert_eq!(at.len(), 2, "{path}: {at:?}");
        assert_eq!(at[0].1, 429);
        assert!(
            at[1].0 - at[0].0 >= 1000,
            "{path} retried after {} ms",
            at[1].0 - at[0].0
        );
    }
    assert_eq!(run.finished()["failed_ids"], "S00012");
    assert_eq!(run.finished()["emailed"], true);

    // Once the refused invoice goes through, a run sends only it; the next sends nothing
    // and emails nothing.
    w.fakes.control.0.lock().unwrap().faults.clear();
    let retry = w.run(&["--send-invoices"]).await;
    assert_eq!(retry.code, 0, "{}", retry.stdout);
    assert_eq!(retry.finished()["done"], 1);
    let quiet = w.run(&["--send-invoices"]).await;
    assert_eq!(quiet.code, 0);
    assert_eq!(quiet.finished()["done"], 0);
    assert_eq!(quiet.finished()["emailed"], false);
    let state = w.state().await;
    assert_eq!(
        state["mails"].as_array().unwrap().len(),
        2,
        "no email when nothing was sent or failed"
    );
    assert!(sent(&state).values().all(|sync| *sync == 1));
}

#[tokio::test]
async fn more_than_a_page_of_invoices_is_sent_within_qbo_limits() {
    let w = world(50, |m| {
        m.seed.limits.insert("qbo".into(), Limits::QBO);
    })
    .await;
    // Over a page (1000) to send, and over QBO's 500 a minute: two minutes at least.
    let amounts = add_invoices(&w, 24);
    let with_email = {
        let q = w.fakes.qbo.lock().unwrap();
        q.invoices()
            .iter()
            .filter(|i| {
                !i["BillEmail"].is_null()
                    && !w
                        .month
                        .excluded
                        .iter()
                        .any(|e| i["CustomerRef"]["name"] == e.as_str())
            })
            .count()
    };
    assert!(
        with_email > 1000,
        "{} invoices, {with_email} to send",
        amounts.len()
    );
    let run = w.run(&["--send-invoices"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let state = w.state().await;
    assert_eq!(sent(&state).len(), with_email);
    let qbo = &state["stats"]["qbo"];
    assert_eq!(qbo["throttled"], 0, "{qbo}");
    assert!(qbo["max_per_minute"].as_u64().unwrap() <= 500, "{qbo}");
    assert!(qbo["max_per_second"].as_u64().unwrap() <= 10, "{qbo}");
    assert!(qbo["max_in_flight"].as_u64().unwrap() <= 10, "{qbo}");
}

#[tokio::test]
async fn a_dry_run_sends_nothing_and_renders_the_email_to_a_file() {
    let w = world(12, |_| {}).await;
    add_invoices(&w, 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("email.html");
    let run = w
        .run(&[
            "--send-invoices",
            "--dry-run",
            "--email-out",
            out.to_str().unwrap(),
        ])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let state = w.state().await;
    assert!(sent(&state).is_empty());
    assert!(state["mails"].as_array().unwrap().is_empty());
    let html = std::fs::read_to_string(&out).unwrap();
    assert_eq!(table(&html, "sent").len(), run.events("would_send").len());
    assert!(!run.events("would_send").is_empty());

    // Without the bookkeeper's address, the send job refuses to start.
    let mut cmd = w.job(&["--send-invoices"]);
    cmd.env_remove("BOOKKEEPER_EMAIL");
    let run = super::finish(cmd.spawn().unwrap()).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("BOOKKEEPER_EMAIL"), "{}", run.stderr);
}

#[tokio::test]
async fn the_email_template_comes_from_the_assets_directory_and_a_broken_one_sends_nothing() {
    let w = world(12, |_| {}).await;
    add_invoices(&w, 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("email.html");
    let template = dir.path().join("sent_invoices_email_template.html");
    std::fs::write(
        &template,
        "<p>Practice edition</p>{% for r in sent %}<p>{{ r.customer }}</p>{% endfor %}",
    )
    .unwrap();
    let mut cmd = w.job(&[
        "--send-invoices",
        "--dry-run",
        "--email-out",
        out.to_str().unwrap(),
    ]);
    cmd.env("ASSETS_DIR", dir.path());
    let run = super::finish(cmd.spawn().unwrap()).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<p>Practice edition</p>"), "{html}");

    // A template that does not parse stops the run before any invoice is sent.
    std::fs::write(&template, "{% for r in sent %}never closed").unwrap();
    let mut cmd = w.job(&["--send-invoices"]);
    cmd.env("ASSETS_DIR", dir.path());
    let run = super::finish(cmd.spawn().unwrap()).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(template.to_str().unwrap()),
        "{}",
        run.stderr
    );
    let state = w.state().await;
    assert!(sent(&state).is_empty());
    assert!(state["mails"].as_array().unwrap().is_empty());
}
