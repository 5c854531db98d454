//! The services' rules that a kinder stand-in would hide, one a test: an invoice number
//! is no proof of whose invoice it is, a month has one run whatever its shards, a
//! ClickUp task out of reach or a member's entries, batch server faults that committed,
//! a deleted invoice replayed by `requestid`, stale reads after a lost send, voided
//! invoices, and a report that fails on its own.

use std::collections::BTreeMap;

use fakes::control::{Action, Fault};
use fakes::generate::SECRET_NAMES;
use serde_json::{Value, json};

use super::create::{create, entries, expected, expected_entries, failed_ids, run_create};
use super::send::{add_invoices, sent, table};
use super::{World, finish, world};

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Client id -> (DocNumber, customer Id) of every invoice the job made (its PrivateNote
/// names the client); fails on a client billed twice.
fn billed(state: &Value) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for inv in state["invoices"].as_array().unwrap() {
        let Some(note) = inv["PrivateNote"].as_str() else {
            continue;
        };
        let Some(client) = note.strip_prefix("Robot minutes 2026-10, client ") else {
            continue;
        };
        let entry = (
            inv["DocNumber"].as_str().unwrap().to_owned(),
            inv["CustomerRef"]["value"].as_str().unwrap().to_owned(),
        );
        assert!(
            out.insert(client.to_owned(), entry).is_none(),
            "client {client} billed twice"
        );
    }
    out
}

/// Client id -> invoice amount in cents, for every client the month bills.
fn billed_amounts(w: &World) -> BTreeMap<String, u64> {
    w.month
        .invoiced()
        .map(|(c, _, cents)| (c.client_id.clone(), cents))
        .collect()
}

fn customer_of(w: &World, client: &str) -> String {
    let display = &w
        .month
        .clients
        .iter()
        .find(|c| c.client_id == client)
        .unwrap()
        .display_name;
    w.fakes.qbo.lock().unwrap().customer_id(display).unwrap()
}

#[tokio::test]
async fn a_hand_made_invoice_numbered_after_the_jobs_last_does_not_stop_the_client_being_billed() {
    let w = world(12, |_| {}).await;
    let last = w.month.invoiced().last().unwrap().0.client_id.clone();
    let other = w.month.invoiced().next().unwrap().0.display_name.clone();
    {
        let mut q = w.fakes.qbo.lock().unwrap();
        // The job's last invoice, September's for the last client...
        let id = q
            .customer_id(
                &w.month
                    .clients
                    .iter()
                    .find(|c| c.client_id == last)
                    .unwrap()
                    .display_name,
            )
            .unwrap();
        q.insert_invoice(json!({
            "DocNumber": format!("{last}-202609"),
            "CustomerRef": {"value": id},
            "Line": [{"Amount": 5.0, "SalesItemLineDetail": {"Qty": 4, "UnitPrice": 1.25}}],
        }))
        .unwrap();
        // ...then the bookkeeper's invoice for another customer, numbered by QBO.
        let hand = q.hand_invoice(&other, 80.0).unwrap();
        assert_eq!(hand["DocNumber"], format!("{last}-202610"));
    }
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 1, "the generated failures: {}", run.stdout);
    assert_eq!(run.finished()["failed_ids"], failed_ids(&w));
    let state = w.state().await;
    let billed = billed(&state);
    let want = billed_amounts(&w);
    assert_eq!(
        billed.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "every client billed, the last one too"
    );
    let (doc, customer) = &billed[&last];
    assert_eq!(doc, &format!("{last}-202610-Q"), "the other number");
    assert_eq!(customer, &customer_of(&w, &last));
    assert!(
        run.events("invoice_number_taken")
            .iter()
            .any(|e| e["client_id"] == last.as_str())
    );
    // The report shows the client's own invoice, not the bookkeeper's.
    let report =
        super::create::mails_about(&state, "Billing 2026-10")[0]["message"]["body"]["content"]
            .as_str()
            .unwrap()
            .to_owned();
    let rows = table(&report, "invoiced");
    let row = rows.iter().find(|r| r[0] == last).unwrap();
    assert_eq!(row[2], format!("{last}-202610-Q"), "{row:?}");
    assert!(!row[1].contains(&other), "{row:?}");

    // A rerun finds it by its customer and bills nobody again.
    let again = run_create(&w, &[]).await;
    assert_eq!(again.finished()["done"], 0, "{}", again.stdout);
    assert_eq!(again.finished()["already_done"], want.len());
    assert_eq!(
        super::billing_rules::billed(&w.state().await).len(),
        want.len()
    );
}

#[tokio::test]
async fn two_runs_of_a_month_with_different_shard_settings_bill_each_client_once() {
    let w = world(40, |m| {
        // Only the job keeps numbers unique, and QBO does not replay.
        m.seed.settings.qbo.duplicate_doc_numbers = true;
        m.seed.settings.qbo.ignore_requestid = true;
        m.seed.limits.insert(
            "qbo".into(),
            fakes::control::Limits {
                latency_ms: 150,
                ..fakes::control::Limits::QBO
            },
        );
    })
    .await;
    let mut args = vec![create(&[])];
    args.extend((1..=4).map(|k| create(&["--shard", &format!("{k}/4")])));
    let children: Vec<_> = args
        .iter()
        .map(|a| w.job(&strs(a)).spawn().unwrap())
        .collect();
    let mut runs = Vec::new();
    for child in children {
        runs.push(finish(child).await);
    }
    let state = w.state().await;
    assert_eq!(super::create::invoices(&state), expected(&w));
    assert_eq!(
        entries(&state),
        expected_entries(&w),
        "one ClickUp entry each"
    );
    // Either the whole-month run billed and the four shards found nothing to do, or
    // the shards billed together (joining one lease) and the whole run did nothing.
    let done = |r: &super::Run| r.finished()["done"].as_u64().unwrap();
    let (whole, shards) = runs.split_first().unwrap();
    let by_shards: u64 = shards.iter().map(done).sum();
    assert_eq!(
        done(whole) + by_shards,
        expected(&w).len() as u64,
        "each invoice made once"
    );
    assert!(
        done(whole) == 0 || by_shards == 0,
        "one split billed, not both"
    );
    let waited = |r: &super::Run| !r.events("lease_wait").is_empty();
    if by_shards > 0 {
        assert!(
            waited(whole),
            "the whole run waited for the shards: {}",
            whole.stdout
        );
        for s in shards {
            assert_eq!(
                s.finished()["skipped_run"],
                false,
                "a shard joined: {}",
                s.stdout
            );
        }
    } else {
        assert!(
            shards.iter().all(waited),
            "every shard waited for the whole run"
        );
    }
}

#[tokio::test]
async fn a_clickup_task_in_another_workspace_fails_only_its_client() {
    let w = world(12, |_| {}).await;
    let (first, rest): (Vec<_>, Vec<_>) = w
        .month
        .invoiced()
        .map(|(c, _, _)| c.client_id.clone())
        .enumerate()
        .partition(|(i, _)| *i == 0);
    let lost = first[0].1.clone();
    w.fakes
        .clickup
        .lock()
        .unwrap()
        .foreign_tasks
        .push(format!("task-{lost}"));
    let run = run_create(&w, &["--concurrency", "1"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let failed = run
        .events("client_failed")
        .into_iter()
        .find(|e| e["id"] == lost.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{lost} failed: {}", run.stdout));
    let why = failed["error"].as_str().unwrap();
    assert!(
        why.contains("OAUTH_027") && why.contains("clickup_task_id"),
        "{why}"
    );
    let billed = billed(&w.state().await);
    for (_, id) in rest {
        assert!(billed.contains_key(&id), "{id} billed despite {lost}");
    }
    assert!(!billed.contains_key(&lost));
}

#[tokio::test]
async fn entries_another_member_made_are_found_and_not_made_twice() {
    let w = world(12, |m| {
        // QBO refuses every invoice: the entries are made, the invoices not.
        m.seed.settings.qbo.books_closed_through = Some("2099-12-31".into());
    })
    .await;
    let first = run_create(&w, &[]).await;
    assert_eq!(first.code, 1);
    let made = entries(&w.state().await);
    assert_eq!(made, expected_entries(&w));
    // The practice moves the job to an admin's token: that user made none of them.
    w.fakes
        .clickup
        .lock()
        .unwrap()
        .add_user("pk_admin", 81_000_002, true);
    let team = w.month.seed.clickup.0.clone();
    let sm = aws_sdk_secretsmanager::Client::new(&w.sdk);
    sm.put_secret_value()
        .secret_id(SECRET_NAMES[2])
        .secret_string(json!({"api_token": "pk_admin", "team_id": team}).to_string())
        .send()
        .await
        .unwrap();
    w.settings(json!({"qbo": {}})).await;
    let second = run_create(&w, &[]).await;
    assert_eq!(second.code, 1, "the generated failures: {}", second.stdout);
    assert_eq!(entries(&w.state().await), made, "no entry made twice");
    assert_eq!(super::create::invoices(&w.state().await), expected(&w));

    // A plain member's token can list only its own: the run says so.
    w.fakes
        .clickup
        .lock()
        .unwrap()
        .add_user("pk_member", 81_000_003, false);
    sm.put_secret_value()
        .secret_id(SECRET_NAMES[2])
        .secret_string(json!({"api_token": "pk_member", "team_id": team}).to_string())
        .send()
        .await
        .unwrap();
    let third = run_create(&w, &["--clients", "10001-10012"]).await;
    assert!(
        !third.events("clickup_entries_own_only").is_empty(),
        "{}",
        third.stdout
    );
}

#[tokio::test]
async fn a_report_that_fails_fails_only_itself_and_the_month_counts_as_billed() {
    let w = world(12, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("monthly_report_email_template.html"),
        "{% for l in lines %}never closed",
    )
    .unwrap();
    let mut cmd = w.job(&strs(&create(&[])));
    cmd.env("ASSETS_DIR", dir.path());
    let run = finish(cmd.spawn().unwrap()).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let done = run.finished();
    assert_eq!(
        done["done"],
        expected(&w).len(),
        "the counts are there: {done}"
    );
    let generated = failed_ids(&w);
    let mut failed: Vec<&str> = generated.split(',').collect();
    failed.push("billing-report");
    failed.sort_unstable();
    assert_eq!(done["failed_ids"], failed.join(","));
    assert_eq!(super::create::invoices(&w.state().await), expected(&w));
    // The missed-run check sees the month billed.
    let check = w.run(&["--check-billed", "--period", "2026-10"]).await;
    assert_eq!(check.code, 0, "{}", check.stdout);
    // A finished run without an end time is named, not dropped.
    assert_eq!(done["runs_unmeasured"], 1, "{done}");
    assert_eq!(run.events("run_unmeasured").len(), 1);
}

#[tokio::test]
async fn a_finished_run_without_an_end_is_in_the_report_and_a_name_that_runs_in_excel_does_not() {
    let w = world(12, |_| {}).await;
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 1);
    let unmeasured = run.events("run_unmeasured")[0].clone();
    let state = w.state().await;
    let mail = &super::create::mails_about(&state, "Billing 2026-10")[0]["message"];
    let html = mail["body"]["content"].as_str().unwrap();
    let rows = table(html, "unmeasured");
    assert_eq!(
        rows,
        [vec![
            unmeasured["client_id"].as_str().unwrap().to_owned(),
            unmeasured["run_id"].as_str().unwrap().to_owned()
        ]]
    );
}

#[tokio::test]
async fn a_batch_item_that_faults_on_the_server_but_was_made_is_billed_once() {
    let w = world(12, |m| {
        m.seed.settings.qbo.duplicate_doc_numbers = true;
        m.seed.settings.qbo.ignore_requestid = true;
        m.seed.settings.qbo.system_fault_commits = true;
    })
    .await;
    let docs: Vec<String> = expected(&w).keys().take(3).cloned().collect();
    w.settings(json!({"qbo": {
        "duplicate_doc_numbers": true, "ignore_requestid": true,
        "system_fault_docs": docs, "system_fault_commits": true,
    }}))
    .await;
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 1, "the generated failures: {}", run.stdout);
    assert_eq!(super::create::invoices(&w.state().await), expected(&w));
    let confirmed: Vec<&str> = run
        .events("invoice_confirmed")
        .iter()
        .filter_map(|e| e["doc_number"].as_str())
        .collect();
    for d in &docs {
        assert!(
            confirmed.contains(&d.as_str()),
            "{d} looked up: {confirmed:?}"
        );
    }
}

#[tokio::test]
async fn a_same_day_rerun_after_the_invoice_was_deleted_bills_it_again() {
    let w = world(12, |_| {}).await;
    let client = w.month.invoiced().next().unwrap().0.client_id.clone();
    let first = run_create(&w, &["--clients", &format!("{client}-{client}")]).await;
    assert_eq!(first.code, 0, "{}", first.stdout);
    let id = {
        let mut q = w.fakes.qbo.lock().unwrap();
        let id = q.invoices()[0]["Id"].as_str().unwrap().to_owned();
        assert!(q.delete_invoice(&id));
        id
    };
    // The same request again, later that day: QBO replays the first answer (the
    // deleted invoice), stamped with its first time.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let again = run_create(&w, &["--clients", &format!("{client}-{client}")]).await;
    assert_eq!(again.code, 0, "{}", again.stdout);
    assert!(
        !again.events("created_replayed_gone").is_empty(),
        "{}",
        again.stdout
    );
    let state = w.state().await;
    let billed = billed(&state);
    assert_eq!(billed.len(), 1);
    let now = state["invoices"][0]["Id"].as_str().unwrap();
    assert_ne!(now, id, "a new invoice");
    assert_eq!(entries(&state).len(), 1, "and still one ClickUp entry");
}

#[tokio::test]
async fn a_lost_send_answer_with_stale_reads_sends_the_invoice_once() {
    // Every read for a minute after a write shows the invoice as it was.
    let w = world(9, |m| {
        m.seed.settings.qbo.stale_read_ms = 60_000;
    })
    .await;
    add_invoices(&w, 1);
    let target = "S00002";
    let id = {
        let q = w.fakes.qbo.lock().unwrap();
        q.invoices()
            .iter()
            .find(|i| i["DocNumber"] == target)
            .unwrap()["Id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // The send goes through, and its answer is lost.
    w.faults([Fault {
        action: Action::StatusAfter { status: 503 },
        ..Fault::status("qbo", Some(&format!("/invoice/{id}/send")), 1, 0)
    }]);
    let run = w.run(&["--send-invoices"]).await;
    assert_eq!(run.code, 1, "unclear, so reported: {}", run.stdout);
    let sends = w
        .fakes
        .qbo
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|(m, p)| m == "POST" && p == "/invoice/send")
        .count();
    let state = w.state().await;
    let sent = sent(&state);
    assert_eq!(sent.get(target), Some(&1), "sent, once: {sent:?}");
    assert_eq!(sends, sent.len(), "no invoice sent twice");
}

#[tokio::test]
async fn a_voided_invoice_still_waiting_is_not_sent() {
    let w = world(9, |_| {}).await;
    add_invoices(&w, 1);
    let (voided, waiting) = {
        let mut q = w.fakes.qbo.lock().unwrap();
        let waiting: Vec<String> = q
            .invoices()
            .iter()
            .filter(|i| i["EmailStatus"] == "NeedToSend")
            .filter(|i| {
                !w.month
                    .excluded
                    .iter()
                    .any(|e| i["CustomerRef"]["name"] == e.as_str())
            })
            .map(|i| i["DocNumber"].as_str().unwrap().to_owned())
            .collect();
        let inv = q
            .invoices()
            .iter()
            .find(|i| i["DocNumber"] == waiting[0].as_str())
            .unwrap()["Id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(q.void_invoice(&inv));
        (waiting[0].clone(), waiting)
    };
    let run = w.run(&["--send-invoices"]).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    let sent = sent(&w.state().await);
    assert!(!sent.contains_key(&voided), "{sent:?}");
    assert_eq!(sent.len(), waiting.len() - 1);
    assert!(
        run.events("skipped")
            .iter()
            .any(|e| e["id"] == voided.as_str() && e["reason"] == "zero total (voided)")
    );
}

/// Control Room requests for process runs, per workspace.
fn run_pages(w: &World) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (ws, what) in &w.fakes.control_room.lock().unwrap().calls {
        if what == "process-runs" {
            *out.entry(ws.clone()).or_default() += 1;
        }
    }
    out
}

#[tokio::test]
async fn years_of_control_room_history_are_read_only_as_far_back_as_the_month() {
    // 20,000 older runs per workspace: 200 more pages each.
    let w = world(12, |m| m.seed.settings.control_room.history_runs = 20_000).await;
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 1, "the generated failures: {}", run.stdout);
    assert_eq!(super::create::invoices(&w.state().await), expected(&w));
    assert_eq!(entries(&w.state().await), expected_entries(&w));
    let pages = run_pages(&w);
    assert!(
        pages.values().all(|n| *n <= 3),
        "newest first: a page or two past the month, {pages:?}"
    );

    // In the other order nothing may be skipped: every page is read, and the month is
    // billed the same.
    let w = world(12, |m| {
        m.seed.settings.control_room.history_runs = 2_000;
        m.seed.settings.control_room.oldest_first = true;
    })
    .await;
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(super::create::invoices(&w.state().await), expected(&w));
    assert!(
        run_pages(&w).values().any(|n| *n > 20),
        "oldest first: read to the end, {:?}",
        run_pages(&w)
    );
}

#[tokio::test]
async fn invoices_updated_while_the_summary_reads_them_are_all_reported() {
    let w = world(9, |_| {}).await;
    // The ledger starts with the first run: a run with nothing to send.
    let first = w.run(&["--send-invoices"]).await;
    assert_eq!(first.code, 0, "{}", first.stdout);
    // Then 1,100 invoices are emailed from QBO by hand, over the next minutes (more
    // than one page of QBO's 1,000), and a payment arrives on one while the next run
    // reads each page.
    // The ledger started five minutes before the first run: the hand-made sends come
    // after that and before now.
    let from = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(4);
    let mut want = Vec::new();
    {
        let mut q = w.fakes.qbo.lock().unwrap();
        let name = w.month.seed.qbo.customers[0].0.clone();
        let customer = q.customer_id(&name).unwrap();
        for n in 0..1_100 {
            let doc = format!("H{n:05}");
            q.insert_invoice(json!({
                "DocNumber": doc, "CustomerRef": {"value": customer, "name": name},
                "BillEmail": {"Address": "client@example.com"}, "EmailStatus": "EmailSent",
                "Line": [{"Amount": 10.0, "SalesItemLineDetail": {"Qty": 1, "UnitPrice": 10.0}}],
            }))
            .unwrap();
            want.push(doc);
        }
        for (n, inv) in q
            .invoices_mut()
            .iter_mut()
            .filter(|i| i["DocNumber"].as_str().is_some_and(|d| d.starts_with('H')))
            .enumerate()
        {
            // A few a second, each at its own time, all after the ledger's start.
            let at = from + jiff::SignedDuration::from_secs(i64::try_from(n / 5).unwrap());
            inv["MetaData"]["LastUpdatedTime"] = json!(at.to_string());
            inv["DeliveryInfo"] = json!({"DeliveryType": "Email", "DeliveryTime": at.to_string()});
        }
        q.settings.updated_while_read = true;
    }
    let run = w.run(&["--send-invoices"]).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    let state = w.state().await;
    let mails = super::create::mails_about(&state, "Invoices sent");
    let html = mails.last().unwrap()["message"]["body"]["content"]
        .as_str()
        .unwrap();
    let mut listed: Vec<String> = table(html, "sent")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    listed.sort();
    assert_eq!(listed, want, "every invoice sent by hand is reported");
}

#[tokio::test]
async fn a_throttled_lease_renewal_is_tried_again_and_a_second_run_still_waits() {
    let w = world(30, |m| {
        m.seed.settings.qbo.duplicate_doc_numbers = true;
        m.seed.settings.qbo.ignore_requestid = true;
        m.seed.limits.insert(
            "qbo".into(),
            fakes::control::Limits {
                latency_ms: 600,
                ..fakes::control::Limits::QBO
            },
        );
    })
    .await;
    // The first renewal of the lease (the run's first UpdateItem) is throttled through
    // every retry of the SDK.
    let proxy = fakes::fault_proxy::FaultProxy::with(
        w.moto.addr(),
        fakes::fault_proxy::Options {
            throttle: Some(("UpdateItem".into(), 1)),
            ..fakes::fault_proxy::Options::default()
        },
    )
    .unwrap();
    // One client at a time: a run of half a minute, several renewals long.
    let args = create(&["--concurrency", "1"]);
    let mut first = w.job(&strs(&args));
    first.env("AWS_ENDPOINT_URL", proxy.endpoint());
    let first = first.spawn().unwrap();
    // Every attempt the SDK makes is throttled, so the error reaches the job.
    super::wait_until("the renewal was throttled", || !proxy.failed().is_empty()).await;
    // Past the lease's length (twice the 3 s settle time) since the last renewal that
    // went through: a lease no longer renewed would have run out.
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let second = w.job(&strs(&args)).spawn().unwrap();
    let (first, second) = tokio::join!(finish(first), finish(second));
    assert!(
        !first.events("lease_renew_retry").is_empty(),
        "{}",
        first.stdout
    );
    assert!(first.events("lease_lost").is_empty(), "{}", first.stdout);
    assert!(!second.events("lease_wait").is_empty(), "{}", second.stdout);
    let state = w.state().await;
    assert_eq!(super::create::invoices(&state), expected(&w));
    assert_eq!(entries(&state), expected_entries(&w));
}

#[tokio::test]
async fn a_same_day_rerun_after_a_batch_of_invoices_was_deleted_bills_them_again() {
    let w = world(12, |_| {}).await;
    // One client at a time: each batch holds the same invoice on both runs.
    let first = run_create(&w, &["--concurrency", "1"]).await;
    assert_eq!(first.code, 1, "the generated failures: {}", first.stdout);
    let want = billed_amounts(&w);
    {
        let mut q = w.fakes.qbo.lock().unwrap();
        let ids: Vec<String> = q
            .invoices()
            .iter()
            .map(|i| i["Id"].as_str().unwrap().to_owned())
            .collect();
        for id in ids {
            assert!(q.delete_invoice(&id));
        }
    }
    // The same batches again, later that day: QBO replays their first answers.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let again = run_create(&w, &["--concurrency", "1"]).await;
    assert_eq!(again.code, 1, "{}", again.stdout);
    assert_eq!(
        again.events("created_replayed_gone").len(),
        want.len(),
        "{}",
        again.stdout
    );
    let state = w.state().await;
    assert_eq!(billed(&state).len(), want.len(), "each billed again, once");
    assert_eq!(entries(&state), expected_entries(&w), "no entry made twice");
}

#[tokio::test]
async fn the_jobs_invoice_moved_to_another_customer_is_not_billed_again_and_numbers_both_taken_fail_the_client()
 {
    let w = world(12, |_| {}).await;
    let mut clients = w.month.invoiced().map(|(c, _, _)| c.client_id.clone());
    let (moved, blocked) = (clients.next().unwrap(), clients.next().unwrap());
    let walk_in = w.month.invoiced().last().unwrap().0.display_name.clone();
    let first = run_create(&w, &["--clients", &format!("{moved}-{moved}")]).await;
    assert_eq!(first.code, 0, "{}", first.stdout);
    {
        let mut q = w.fakes.qbo.lock().unwrap();
        let other = q.customer_id(&walk_in).unwrap();
        // The bookkeeper moves the job's invoice to another customer...
        q.invoices_mut()[0]["CustomerRef"] = json!({"value": other, "name": walk_in});
        // ...and both of another client's numbers hold other customers' invoices.
        for doc in [format!("{blocked}-202610"), format!("{blocked}-202610-Q")] {
            q.insert_invoice(json!({
                "DocNumber": doc, "CustomerRef": {"value": other},
                "Line": [{"Amount": 1.0, "SalesItemLineDetail": {"Qty": 1, "UnitPrice": 1.0}}],
            }))
            .unwrap();
        }
    }
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.events("invoice_customer_changed")
            .iter()
            .any(|e| e["client_id"] == moved.as_str()),
        "{}",
        run.stdout
    );
    let failed = run
        .events("client_failed")
        .into_iter()
        .find(|e| e["id"] == blocked.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{blocked} failed: {}", run.stdout));
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("taken by other customers"),
        "{failed}"
    );
    let billed = billed(&w.state().await);
    assert!(billed.contains_key(&moved), "billed once, by the first run");
    assert!(!billed.contains_key(&blocked));
}
