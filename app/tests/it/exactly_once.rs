//! The strict stand-ins' adversarial modes, one rule a test: whatever the services do
//! (lose an answer, land a write late, replay a refusal, shift or loop their pages) and
//! however the job ends (a signal, a kill), each client is billed once and the
//! bookkeeper hears of each sent invoice once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fakes::control::{Action, Fault, Limits};
use fakes::fault_proxy::FaultProxy;
use serde_json::{Value, json};

use super::create::{create, entries, expected, expected_entries, invoices, run_create};
use super::send::{add_invoices, sent, table};
use super::{World, finish, terminate, wait_until, world};

fn fault(service: &str, matching: &str, action: Action) -> Fault {
    Fault {
        action,
        ..Fault::status(service, Some(matching), 1, 0)
    }
}

fn doc(client: u32) -> String {
    format!(r#""DocNumber":"{client}-202610""#)
}

fn args(extra: &[&str]) -> Vec<String> {
    create(extra)
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The `doc_number` of every event named `name`.
fn docs_of(run: &super::Run, name: &str) -> BTreeSet<String> {
    run.events(name)
        .iter()
        .filter_map(|e| e["doc_number"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn lost_and_late_writes_bill_once_with_duplicate_numbers_allowed_and_requestid_ignored() {
    let w = world(30, |m| {
        m.seed.settings.qbo.duplicate_doc_numbers = true;
        m.seed.settings.qbo.ignore_requestid = true;
    })
    .await;
    // A gateway answers 502 at once; the invoice lands 1.5 s later, after the job's
    // first look and before QBO's request timeout (3 s here).
    w.faults([fault(
        "qbo",
        &doc(10012),
        Action::LateRun {
            status: 502,
            after_ms: 1500,
        },
    )]);
    let late = run_create(&w, &["--clients", "10012"]).await;
    assert_eq!(late.code, 0, "{}", late.stdout);
    assert!(
        late.events("write_settling")
            .iter()
            .any(|e| e["what"] == "10012-202610"),
        "the late invoice was waited for, not sent again: {}",
        late.stdout
    );
    assert_eq!(
        docs_of(&late, "invoice_confirmed"),
        BTreeSet::from(["10012-202610".to_owned()])
    );
    w.faults([
        // The first create never answers (it did its work).
        fault("qbo", &doc(10010), Action::HangAfter),
        // Created, then the answer is lost.
        fault("qbo", &doc(10013), Action::StatusAfter { status: 503 }),
        // The same for ClickUp, which has no idempotency key at all.
        fault(
            "clickup",
            r#""description":"Robot minutes 2026-10 (10014)""#,
            Action::LateRun {
                status: 502,
                after_ms: 1000,
            },
        ),
        fault(
            "clickup",
            r#""description":"Robot minutes 2026-10 (10015)""#,
            Action::HangAfter,
        ),
    ]);
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 1, "the generated failures only\n{}", run.stdout);
    let state = w.state().await;
    // `invoices` and `entries` fail on any DocNumber or description seen twice.
    assert_eq!(invoices(&state), expected(&w));
    assert_eq!(entries(&state), expected_entries(&w));
    let confirmed = docs_of(&run, "invoice_confirmed");
    for d in ["10010-202610", "10013-202610"] {
        assert!(
            confirmed.contains(d),
            "{d} confirmed by lookup: {confirmed:?}"
        );
    }

    w.faults([]);
    let again = run_create(&w, &[]).await;
    assert_eq!(again.code, 1);
    assert_eq!(again.finished()["done"], 0);
    let state = w.state().await;
    assert_eq!(invoices(&state), expected(&w));
    assert_eq!(entries(&state), expected_entries(&w));
}

#[tokio::test]
async fn a_refusal_fixed_in_qbo_is_not_replayed_to_the_next_run() {
    let today = jiff::Zoned::now()
        .with_time_zone(jiff::tz::TimeZone::get("America/Los_Angeles").unwrap())
        .date()
        .to_string();
    let w = world(16, |m| {
        m.seed.settings.qbo.books_closed_through = Some(today.clone());
    })
    .await;
    // One client, created on its own (a requestid of its own), and then the month in
    // batches: QBO refuses them all.
    let one = run_create(&w, &["--clients", "10010"]).await;
    assert_eq!(one.code, 1);
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 1);
    assert!(w.state().await["invoices"].as_array().unwrap().is_empty());
    let refused = run
        .events("client_failed")
        .iter()
        .filter(|e| e["error"].as_str().unwrap().contains("books are closed"))
        .count();
    assert_eq!(refused, expected(&w).len());

    // The bookkeeper reopens the period; the same requests go again the same day. QBO
    // replays its refusal to a requestid it has seen: the job sees it for what it is.
    w.settings(json!({"qbo": {}})).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let one = run_create(&w, &["--clients", "10010"]).await;
    assert_eq!(one.code, 0, "{}", one.stdout);
    assert_eq!(
        docs_of(&one, "refusal_replayed"),
        BTreeSet::from(["10010-202610".to_owned()])
    );
    let again = run_create(&w, &[]).await;
    assert_eq!(again.code, 1, "{}", again.stdout);
    assert_eq!(invoices(&w.state().await), expected(&w));
}

/// Clients whose runs fill more than one page of 100.
fn paged_clients(w: &World) -> BTreeSet<String> {
    w.month
        .seed
        .workspaces
        .iter()
        .filter(|ws| ws.runs.len() > 100)
        .map(|ws| ws.id.trim_start_matches("ws-").to_owned())
        .collect()
}

#[tokio::test]
async fn runs_shown_twice_while_paging_are_billed_once() {
    let w = world(40, |m| m.seed.settings.control_room.paging_race = true).await;
    assert!(!paged_clients(&w).is_empty());
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 1);
    assert_eq!(invoices(&w.state().await), expected(&w));
    assert!(!run.events("runs_repeated").is_empty());
}

#[tokio::test]
async fn a_next_page_that_repeats_stops_that_client_with_a_clear_error() {
    let w = world(40, |m| m.seed.settings.control_room.repeat_next = true).await;
    let paged = paged_clients(&w);
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 1);
    let failed: BTreeMap<String, String> = run
        .events("client_failed")
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for id in &paged {
        assert!(failed[id].contains("do not end"), "{id}: {failed:?}");
    }
    let state = w.state().await;
    let not_paged = |doc: &String| !paged.contains(doc.split('-').next().unwrap());
    let want: BTreeMap<_, _> = expected(&w)
        .into_iter()
        .filter(|(d, _)| not_paged(d))
        .collect();
    assert_eq!(invoices(&state), want);
    let want_entries: BTreeMap<_, _> = expected_entries(&w)
        .into_iter()
        .filter(|(d, _)| !paged.iter().any(|p| d.contains(&format!("({p})"))))
        .collect();
    assert_eq!(
        entries(&state),
        want_entries,
        "no ClickUp entry for them either"
    );
}

#[tokio::test]
async fn a_failed_lookup_query_fails_only_the_clients_it_covers() {
    let w = world(30, |m| {
        m.seed.settings.qbo.fail_queries_matching = Some("10012 - Client 10012".into());
    })
    .await;
    // Clients named by customer Id in the table are looked up by another query.
    let by_id: BTreeSet<String> = w
        .month
        .items
        .iter()
        .filter(|i| i.contains_key("qbo_customer_id"))
        .map(|i| match &i["client_id"] {
            fakes::generate::Attr::S(s) => s.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 1, "not fatal: {}", run.stderr);
    let want: BTreeMap<_, _> = expected(&w)
        .into_iter()
        .filter(|(d, _)| by_id.contains(d.split('-').next().unwrap()))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(invoices(&w.state().await), want);
    let lookup_failed: BTreeSet<String> = run
        .events("client_failed")
        .iter()
        .filter(|e| {
            e["error"]
                .as_str()
                .unwrap()
                .contains("looking it up in QBO failed")
        })
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(lookup_failed.is_disjoint(&by_id), "{lookup_failed:?}");
    for d in expected(&w).keys().filter(|d| !want.contains_key(*d)) {
        assert!(lookup_failed.contains(d.split('-').next().unwrap()), "{d}");
    }
}

#[tokio::test]
async fn sigterm_lets_clients_under_way_finish_and_a_rerun_bills_the_rest_once() {
    let w = world(40, |m| {
        m.seed.limits.insert(
            "qbo".into(),
            Limits {
                latency_ms: 150,
                ..Limits::QBO
            },
        );
    })
    .await;
    let args = args(&["--concurrency", "3"]);
    let child = w.job(&strs(&args)).spawn().unwrap();
    wait_until("three invoices", || {
        w.fakes.qbo.lock().unwrap().invoices().len() >= 3
    })
    .await;
    terminate(&child);
    let run = finish(child).await;
    assert_eq!(run.code, 143, "128 + SIGTERM\n{}", run.stdout);
    let done = run.finished();
    assert_eq!(done["interrupted"], true);
    assert_eq!(done["exit_code"], 143);
    assert!(done["not_started"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(done["abandoned"], 0, "those under way finished: {done}");
    assert_eq!(run.events("stop_requested").len(), 1);
    let state = w.state().await;
    let partial = invoices(&state);
    let all = expected(&w);
    assert!(partial.len() < all.len());
    assert!(
        partial.iter().all(|(d, v)| all.get(d) == Some(v)),
        "{partial:?}"
    );

    let rest = run_create(&w, &[]).await;
    assert_eq!(rest.code, 1);
    let state = w.state().await;
    assert_eq!(invoices(&state), all);
    assert_eq!(entries(&state), expected_entries(&w));
}

#[tokio::test]
async fn a_token_save_under_way_finishes_although_the_job_is_told_to_stop() {
    let w = world(12, |_| {}).await;
    // Secrets Manager takes two seconds to store the rotated token.
    let proxy =
        FaultProxy::delaying(w.moto.addr(), "PutSecretValue", Duration::from_secs(2)).unwrap();
    let args = args(&[]);
    let mut cmd = w.job(&strs(&args));
    cmd.env("AWS_ENDPOINT_URL", proxy.endpoint());
    let child = cmd.spawn().unwrap();
    wait_until("QBO rotated the refresh token", || {
        w.fakes.qbo.lock().unwrap().refresh_token() != "rt-0"
    })
    .await;
    terminate(&child);
    let run = finish(child).await;
    assert_eq!(run.code, 143, "{}\n{}", run.stdout, run.stderr);
    let current = w.fakes.qbo.lock().unwrap().refresh_token().to_owned();
    assert_eq!(w.qbo_secret().await["refresh_token"], current.as_str());
    let at = |event: &str| run.lines.iter().position(|l| l["event"] == event).unwrap();
    assert!(
        at("stop_requested") < at("qbo_refresh_token_rotated"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn killed_at_the_token_endpoint_the_next_run_goes_on_unless_a_rotated_token_was_lost() {
    let w = world(12, |_| {}).await;
    let args = args(&[]);
    let token = |action| fault("qbo-oauth", "tokens/bearer", action);

    // Held before QBO acted: nothing rotated, nothing lost.
    w.faults([token(Action::HangBefore)]);
    w.kill_when_held(&strs(&args), "the token request").await;
    w.faults([]);
    assert_eq!(w.qbo_secret().await["refresh_token"], "rt-0");
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(invoices(&w.state().await), expected(&w));

    // QBO answered, the answer was lost; Intuit changes the value once a day, so the
    // stored token still works.
    w.settings(json!({"qbo": {"refresh_rotation": "daily"}}))
        .await;
    w.faults([token(Action::HangAfter)]);
    w.kill_when_held(&strs(&args), "the token answer").await;
    w.faults([]);
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);

    // A rotation whose answer was lost: QBO killed the stored token, and no client can
    // learn the new one. The run says how to reconnect and writes nothing.
    w.settings(json!({"qbo": {"refresh_rotation": "every_refresh"}}))
        .await;
    let stored = w.qbo_secret().await;
    w.faults([token(Action::HangAfter)]);
    w.kill_when_held(&strs(&args), "the rotated token's answer")
        .await;
    w.faults([]);
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.contains("reconnect the QBO app"),
        "{}",
        run.stderr
    );
    assert_eq!(w.qbo_secret().await, stored);
    assert_eq!(invoices(&w.state().await), expected(&w));
}

/// Every summary email's listed invoices.
fn summaries(state: &Value) -> Vec<Vec<String>> {
    state["mails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            table(m["message"]["body"]["content"].as_str().unwrap(), "sent")
                .into_iter()
                .map(|row| row[0].clone())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn the_bookkeeper_hears_of_each_sent_invoice_once_through_lost_answers_and_kills() {
    let w = world(30, |_| {}).await;
    add_invoices(&w, 1);
    let send = ["--send-invoices"];

    // Killed after five sends went out: no summary yet.
    w.faults([Fault {
        nth: 5,
        ..fault("qbo", "/send", Action::HangAfter)
    }]);
    w.kill_when_held(&send, "the fifth send").await;
    let state = w.state().await;
    let early: BTreeSet<String> = sent(&state).into_keys().collect();
    assert!(early.len() >= 5, "{early:?}");
    assert!(summaries(&state).is_empty());

    // The next run sends the rest; Graph takes its summary and answers 503.
    w.faults([fault(
        "graph",
        "sendMail",
        Action::StatusAfter { status: 503 },
    )]);
    let run = w.run(&send).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.events("client_failed")
            .iter()
            .any(|e| e["id"] == "summary-email"
                && e["error"].as_str().unwrap().contains("not sent again")),
        "{}",
        run.stdout
    );
    let state = w.state().await;
    let listed = summaries(&state);
    assert_eq!(listed.len(), 1, "one summary, not a second copy");
    let all_sent: BTreeSet<String> = sent(&state).into_keys().collect();
    assert_eq!(listed[0].iter().cloned().collect::<BTreeSet<_>>(), all_sent);
    let html = state["mails"][0]["message"]["body"]["content"]
        .as_str()
        .unwrap();
    assert!(
        html.contains(&format!(
            "{} of these went out in an earlier run",
            early.len()
        )),
        "{html}"
    );

    // Nothing new: no email.
    w.faults([]);
    let quiet = w.run(&send).await;
    assert_eq!(quiet.code, 0);
    assert_eq!(summaries(&w.state().await).len(), 1);

    // A new invoice; Graph takes the summary and never answers; the job is killed.
    {
        let mut q = w.fakes.qbo.lock().unwrap();
        let (name, email) = w.month.seed.qbo.customers[12..]
            .iter()
            .find(|(_, e)| e.is_some())
            .cloned()
            .unwrap();
        let id = q.customer_id(&name).unwrap();
        q.insert_invoice(json!({
            "DocNumber": "LATE-1", "TxnDate": "2026-11-05", "DueDate": "2026-12-05",
            "CustomerRef": {"value": id, "name": name},
            "BillEmail": {"Address": email.unwrap()}, "EmailStatus": "NeedToSend",
            "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 5.0,
                      "SalesItemLineDetail": {"Qty": 4, "UnitPrice": 1.25}}],
        }))
        .unwrap();
    }
    w.faults([fault("graph", "sendMail", Action::HangAfter)]);
    w.kill_when_held(&send, "the summary's answer").await;
    w.faults([]);
    assert_eq!(summaries(&w.state().await).len(), 2, "Graph took it");
    // It is not sent again, but it is not silent either: the run fails naming it.
    let after = w.run(&send).await;
    assert_eq!(after.code, 1, "{}", after.stdout);
    assert_eq!(after.events("summary_uncertain").len(), 1);
    assert!(
        after
            .events("client_failed")
            .iter()
            .any(|e| e["id"] == "summary-email" && e["error"].as_str().unwrap().contains("LATE-1")),
        "{}",
        after.stdout
    );

    // Every sent invoice was in exactly one summary.
    let state = w.state().await;
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for doc in summaries(&state).into_iter().flatten() {
        *count.entry(doc).or_default() += 1;
    }
    assert_eq!(
        count.keys().cloned().collect::<BTreeSet<_>>(),
        sent(&state).into_keys().collect::<BTreeSet<_>>()
    );
    assert!(count.values().all(|n| *n == 1), "{count:?}");
}

#[tokio::test]
async fn two_runs_at_once_bill_each_client_once_and_the_second_does_nothing() {
    let w = world(30, |m| {
        m.seed.limits.insert(
            "qbo".into(),
            Limits {
                latency_ms: 250,
                ..Limits::QBO
            },
        );
        // The company allows duplicate numbers: only the job keeps them unique.
        m.seed.settings.qbo.duplicate_doc_numbers = true;
        m.seed.settings.qbo.ignore_requestid = true;
    })
    .await;
    let args = args(&[]);
    let (a, b) = (
        w.job(&strs(&args)).spawn().unwrap(),
        w.job(&strs(&args)).spawn().unwrap(),
    );
    let (a, b) = tokio::join!(finish(a), finish(b));
    let state = w.state().await;
    assert_eq!(invoices(&state), expected(&w));
    assert_eq!(entries(&state), expected_entries(&w));
    // One run billed; the other waited for its lease, then did nothing (it found the
    // first still at work) or found every client billed.
    let (ran, idle) = if a.finished()["done"].as_u64().unwrap() > 0 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(ran.code, 1, "the generated failures");
    assert_eq!(ran.finished()["done"], expected(&w).len());
    assert!(!idle.events("lease_wait").is_empty(), "{}", idle.stdout);
    assert_eq!(idle.finished()["done"], 0, "{}", idle.stdout);
    assert!(
        idle.finished()["skipped_run"] == true
            || idle.finished()["already_done"] == expected(&w).len(),
        "{}",
        idle.stdout
    );
}

#[tokio::test]
async fn four_shards_at_once_keep_to_one_realms_budget_and_bill_each_client_once() {
    let w = world(60, |_| {}).await;
    let shards: Vec<Vec<String>> = (1..=4)
        .map(|k| args(&["--shard", &format!("{k}/4")]))
        .collect();
    let children: Vec<_> = shards
        .iter()
        .map(|a| w.job(&strs(a)).spawn().unwrap())
        .collect();
    let mut runs = Vec::new();
    for child in children {
        runs.push(finish(child).await);
    }
    let state = w.state().await;
    assert_eq!(invoices(&state), expected(&w));
    assert_eq!(entries(&state), expected_entries(&w));
    let qbo = &state["stats"]["qbo"];
    assert_eq!(qbo["throttled"], 0, "{qbo}");
    assert!(qbo["max_per_second"].as_u64().unwrap() <= 10, "{qbo}");
    assert!(qbo["max_in_flight"].as_u64().unwrap() <= 10, "{qbo}");
    assert_eq!(state["stats"]["clickup"]["throttled"], 0);
    let mut failed: Vec<String> = Vec::new();
    for (k, run) in runs.iter().enumerate() {
        let done = run.finished();
        assert_eq!(done["shard"], format!("{}/4", k + 1), "{}", run.stdout);
        failed.extend(
            done["failed_ids"]
                .as_str()
                .unwrap()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
    }
    failed.sort();
    assert_eq!(failed.join(","), super::create::failed_ids(&w));
    // The token the shards rotated in turn is the one stored.
    let current = w.fakes.qbo.lock().unwrap().refresh_token().to_owned();
    assert_eq!(w.qbo_secret().await["refresh_token"], current.as_str());
}

#[tokio::test]
async fn a_billing_report_whose_answer_was_lost_is_not_sent_again_but_named() {
    let w = world(12, |_| {}).await;
    let reports = |state: &Value| {
        state["mails"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| {
                m["message"]["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Billing 2026-10"))
            })
            .count()
    };
    // Graph takes the report, and the job dies waiting for the answer.
    w.faults([fault("graph", "sendMail", Action::HangAfter)]);
    let run = args(&[]);
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    w.kill_when_held(&run, "the report's answer").await;
    w.faults([]);
    assert_eq!(reports(&w.state().await), 1, "Graph took it");
    // The rerun bills nothing twice, sends no second report, and says so.
    let after = w.run(&run).await;
    assert_eq!(after.code, 1, "{}", after.stdout);
    assert_eq!(reports(&w.state().await), 1, "not sent again");
    assert!(
        after
            .events("client_failed")
            .iter()
            .any(|e| e["id"] == "billing-report"
                && e["error"]
                    .as_str()
                    .unwrap()
                    .contains("may not have reached")),
        "{}",
        after.stdout
    );
    // And the next run is quiet: the report is settled.
    let quiet = w.run(&run).await;
    assert!(
        !quiet
            .events("client_failed")
            .iter()
            .any(|e| e["id"] == "billing-report"),
        "{}",
        quiet.stdout
    );
    assert_eq!(reports(&w.state().await), 1);
}
