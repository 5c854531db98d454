//! `--create-invoices` against a generated month.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use fakes::control::{Action, Fault, Limits};
use fakes::generate::Outcome;
use serde_json::{Value, json};

use super::{Run, World, finish, world};

pub(super) const PERIOD: [&str; 2] = ["--period", "2026-10"];

pub(super) fn create(extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--create-invoices".to_owned()];
    args.extend(PERIOD.iter().map(|s| (*s).to_owned()));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

pub(super) async fn run_create(w: &World, extra: &[&str]) -> Run {
    let args = create(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    w.run(&args).await
}

/// DocNumber -> (quantity, amount in cents) of every invoice in the fake QBO.
pub(super) fn invoices(state: &Value) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for inv in state["invoices"].as_array().unwrap() {
        let line = &inv["Line"][0];
        let doc = inv["DocNumber"].as_str().unwrap().to_owned();
        let qty = line["SalesItemLineDetail"]["Qty"].as_u64().unwrap();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let cents = (line["Amount"].as_f64().unwrap() * 100.0).round() as u64;
        assert!(
            out.insert(doc.clone(), (qty, cents)).is_none(),
            "{doc} twice"
        );
    }
    out
}

pub(super) fn expected(w: &World) -> BTreeMap<String, (u64, u64)> {
    w.month
        .invoiced()
        .map(|(c, minutes, cents)| (format!("{}-202610", c.client_id), (minutes, cents)))
        .collect()
}

/// Description -> duration in ms of every ClickUp time entry; fails on a duplicate.
pub(super) fn entries(state: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for e in state["time_entries"].as_array().unwrap() {
        let d = e["description"].as_str().unwrap().to_owned();
        let ms = e["duration"].as_str().unwrap().parse().unwrap();
        assert!(out.insert(d.clone(), ms).is_none(), "entry {d} twice");
    }
    out
}

pub(super) fn expected_entries(w: &World) -> BTreeMap<String, u64> {
    w.month
        .invoiced()
        .map(|(c, minutes, _)| {
            (
                format!("Robot minutes 2026-10 ({})", c.client_id),
                minutes * 60_000,
            )
        })
        .collect()
}

pub(super) fn failed_ids(w: &World) -> String {
    w.month
        .clients
        .iter()
        .filter(|c| {
            matches!(
                c.outcome,
                Outcome::Malformed | Outcome::NoApiKey | Outcome::UnknownCustomer
            )
        })
        .map(|c| c.client_id.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn a_month_is_billed_exactly_once_with_each_failure_named() {
    let w = world(60, |_| {}).await;
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 1, "some clients fail: exit 1\n{}", run.stdout);
    let state = w.state().await;
    assert_eq!(invoices(&state), expected(&w));
    assert_eq!(entries(&state), expected_entries(&w));
    // Invoice shape: customer, email, item, status.
    let inv = state["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["DocNumber"] == "10010-202610")
        .expect("client 10010 is billed");
    assert_eq!(inv["CustomerRef"]["name"], "10010 - Client 10010");
    assert_eq!(inv["EmailStatus"], "NeedToSend");
    assert_eq!(inv["BillEmail"]["Address"], "billing@client10010.example");
    assert_eq!(
        inv["Line"][0]["SalesItemLineDetail"]["ItemRef"]["name"],
        "Robot Minutes"
    );
    // QBO refuses an invoice to be emailed without an address: a customer without one
    // gets an invoice not set to be emailed, and the run says so.
    let no_email: Vec<String> = w
        .month
        .seed
        .qbo
        .customers
        .iter()
        .filter(|(_, e)| e.is_none())
        .map(|(name, _)| format!("{}-202610", &name[..5]))
        .filter(|doc| expected(&w).contains_key(doc))
        .collect();
    assert!(!no_email.is_empty());
    for i in state["invoices"].as_array().unwrap() {
        let quiet = no_email.contains(&i["DocNumber"].as_str().unwrap().to_owned());
        assert_eq!(
            i["EmailStatus"],
            if quiet { "NotSet" } else { "NeedToSend" },
            "{i}"
        );
        assert_eq!(i["BillEmail"].is_null(), quiet, "{i}");
    }
    assert_eq!(run.events("invoice_not_emailed").len(), no_email.len());

    // Each failure is named with its reason, and in the summary.
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
    assert!(
        failed["10003"].contains("robocorp_workspace_id must be a string"),
        "{failed:?}"
    );
    assert!(
        failed["10004"].contains("no Control Room API key for workspace ws-10004"),
        "{failed:?}"
    );
    assert!(
        failed["10005"].contains("no QBO customer has DisplayName \"10005 - Client 10005\""),
        "{failed:?}"
    );
    let done = run.finished();
    assert_eq!(done["success"], false);
    assert_eq!(done["failed_ids"], failed_ids(&w));
    assert_eq!(done["done"], expected(&w).len());
    assert_eq!(done["skipped"], 2, "excluded 10001 and inactive 10002");
    assert_eq!(done["no_minutes"], 1, "10006");
    assert_eq!(done["total"], 60);
    assert_eq!(done["not_emailed"], no_email.len());
    let unmeasured = run.events("run_unmeasured");
    assert_eq!(unmeasured.len(), 1);
    assert_eq!(unmeasured[0]["client_id"], "10009");
    assert_eq!(unmeasured[0]["level"], "WARN");
    // A run still going at billing time is named, not dropped.
    let going = run.events("run_in_progress");
    assert_eq!(going.len(), 1, "{going:?}");
    assert_eq!(going[0]["client_id"], "10006");
    assert!(
        going[0]["run_id"]
            .as_str()
            .unwrap()
            .starts_with("ws-10006-run-")
    );
    assert_eq!(done["runs_in_progress"], 1);

    // The rotated refresh token is in the secret.
    let current = w.fakes.qbo.lock().unwrap().refresh_token().to_owned();
    assert_eq!(w.qbo_secret().await["refresh_token"], current.as_str());
    assert_ne!(current, "rt-0");

    // No secret value reaches the output.
    let secrets: Vec<String> = {
        let mut v = vec![
            "qbo-secret".to_owned(),
            "rt-0".to_owned(),
            current.clone(),
            "pk_fake_token".to_owned(),
            "graph-secret".to_owned(),
            "at-1".to_owned(),
        ];
        v.extend(
            w.month.secrets[fakes::generate::SECRET_NAMES[3]]
                .as_object()
                .unwrap()
                .values()
                .map(|k| k.as_str().unwrap().to_owned()),
        );
        v
    };
    for s in &secrets {
        assert!(
            !run.stdout.contains(s.as_str()) && !run.stderr.contains(s.as_str()),
            "{s} in the output"
        );
    }

    // A second run creates nothing new and names the same failures.
    let again = run_create(&w, &[]).await;
    assert_eq!(again.code, 1);
    let state = w.state().await;
    assert_eq!(invoices(&state), expected(&w));
    assert_eq!(entries(&state), expected_entries(&w));
    let done = again.finished();
    assert_eq!(done["done"], 0);
    assert_eq!(done["already_done"], expected(&w).len());
    assert_eq!(done["failed_ids"], failed_ids(&w));
    // Invoiced clients were skipped before any Control Room call.
    let robocorp_calls = state["stats"]["robocorp"]["calls"].as_u64().unwrap();
    assert!(
        robocorp_calls <= 2 * (expected(&w).len() as u64 + 10) * 2,
        "{robocorp_calls} Control Room calls over two runs"
    );
}

#[tokio::test]
async fn killing_the_job_at_ten_points_and_rerunning_bills_each_client_once() {
    let w = world(40, |_| {}).await;
    // Each point holds one call after the fake has done its work; the job is killed
    // while it waits for the answer.
    // Invoices go in batches: `requestid=bat-` marks a batch of creates.
    let batch = "requestid=bat-";
    let points: [(&str, &str, u64); 10] = [
        ("qbo", "/batch", 1),
        ("robocorp", "process-runs", 1),
        ("clickup", "GET /clickup", 1),
        ("clickup", "POST /clickup", 1),
        ("qbo", batch, 1),
        ("robocorp", "process-runs", 6),
        ("clickup", "POST /clickup", 3),
        ("qbo", batch, 2),
        ("qbo", batch, 3),
        ("clickup", "POST /clickup", 2),
    ];
    let args = create(&["--concurrency", "4"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for (i, (service, matching, nth)) in points.into_iter().enumerate() {
        w.faults([Fault {
            service: service.into(),
            matching: Some(matching.into()),
            nth,
            times: 1,
            fraction: None,
            action: Action::HangAfter,
        }]);
        w.kill_when_held(&args, &format!("point {i} ({service} {matching} #{nth})"))
            .await;
        if i == 0 {
            // Killed right after a token refresh: the new token is already stored.
            let current = w.fakes.qbo.lock().unwrap().refresh_token().to_owned();
            assert_eq!(w.qbo_secret().await["refresh_token"], current.as_str());
        }
    }
    w.fakes.control.0.lock().unwrap().faults.clear();
    let last = run_create(&w, &[]).await;
    assert_eq!(last.code, 1, "{}", last.stdout);
    let state = w.state().await;
    assert_eq!(invoices(&state), expected(&w));
    assert_eq!(entries(&state), expected_entries(&w));
    assert_eq!(last.finished()["failed_ids"], failed_ids(&w));
}

#[tokio::test]
async fn the_job_keeps_within_the_limits_and_waits_out_429s() {
    let w = world(70, |m| {
        m.seed.limits.insert(
            "qbo".into(),
            Limits {
                latency_ms: 30,
                ..Limits::QBO
            },
        );
        m.seed.limits.insert(
            "robocorp".into(),
            Limits {
                latency_ms: 10,
                ..Limits::default()
            },
        );
        // 40 per token per window: the job's ~60 ClickUp calls need a second window.
        m.seed.limits.insert(
            "clickup".into(),
            Limits {
                latency_ms: 10,
                per_minute: Some(40),
                ..Limits::default()
            },
        );
    })
    .await;
    // The window lasts 3 s here instead of a minute, so the reset comes quickly; the
    // job makes about 60 ClickUp calls (one read, one create per client), so it must
    // wait for one reset.
    w.fakes.clickup.lock().unwrap().window_length = Duration::from_secs(3);
    {
        let mut c = w.fakes.control.0.lock().unwrap();
        c.add_fault(Fault {
            action: Action::Status {
                status: 429,
                retry_after: Some(1),
            },
            ..Fault::status("robocorp", Some("ws-10012/process-runs"), 1, 429)
        });
        c.add_fault(Fault {
            action: Action::Status {
                status: 429,
                retry_after: Some(1),
            },
            ..Fault::status("qbo", Some(r#""DocNumber":"10020-202610""#), 1, 429)
        });
        // Writes that happen but whose answer is lost (a 5xx after the work): no
        // second entry or invoice may follow.
        c.add_fault(Fault {
            action: Action::StatusAfter { status: 502 },
            ..Fault::status(
                "clickup",
                Some(r#""description":"Robot minutes 2026-10 (10015)""#),
                1,
                502,
            )
        });
        c.add_fault(Fault {
            action: Action::StatusAfter { status: 503 },
            ..Fault::status("qbo", Some(r#""DocNumber":"10016-202610""#), 1, 503)
        });
    }
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let state = w.state().await;
    assert_eq!(
        invoices(&state),
        expected(&w),
        "429s are waited out, not failures"
    );
    assert_eq!(entries(&state), expected_entries(&w));
    let qbo = &state["stats"]["qbo"];
    assert!(qbo["max_in_flight"].as_u64().unwrap() <= 10, "{qbo}");
    assert!(qbo["max_per_second"].as_u64().unwrap() <= 10, "{qbo}");
    assert_eq!(qbo["throttled"], 1, "only the injected 429: {qbo}");
    assert!(
        run.events("client_failed")
            .iter()
            .all(|e| e["id"] != "10015" && e["id"] != "10016"),
        "lost answers are not failures"
    );
    // ClickUp: the job reads the budget from X-RateLimit-* and waits for the reset
    // rather than going over it.
    let clickup = &state["stats"]["clickup"];
    assert!(clickup["calls"].as_u64().unwrap() > 40, "{clickup}");
    assert_eq!(clickup["throttled"], 0, "{clickup}");
    // The Control Room call answered 429 with Retry-After: 1 came back a second later.
    let calls = state["calls"].as_array().unwrap();
    let path = "/robocorp/api/v1/workspaces/ws-10012/process-runs";
    let tries: Vec<(u64, u64)> = calls
        .iter()
        .filter(|c| c["path"] == path)
        .map(|c| (c["at_ms"].as_u64().unwrap(), c["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(tries[0].1, 429, "{tries:?}");
    assert!(
        tries[1].0 - tries[0].0 >= 1000,
        "retried after {} ms",
        tries[1].0 - tries[0].0
    );
}

#[tokio::test]
async fn a_dry_run_writes_nothing_but_the_rotated_token() {
    let w = world(20, |_| {}).await;
    let run = run_create(&w, &["--dry-run"]).await;
    assert_eq!(run.code, 1, "the failures are still reported");
    let state = w.state().await;
    assert!(state["invoices"].as_array().unwrap().is_empty());
    assert!(state["time_entries"].as_array().unwrap().is_empty());
    let would: BTreeMap<String, (u64, String)> = run
        .events("would_create_invoice")
        .iter()
        .map(|e| {
            (
                e["doc_number"].as_str().unwrap().to_owned(),
                (
                    e["minutes"].as_u64().unwrap(),
                    e["amount"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, (u64, String)> = expected(&w)
        .into_iter()
        .map(|(doc, (m, cents))| (doc, (m, format!("{}.{:02}", cents / 100, cents % 100))))
        .collect();
    assert_eq!(would, want);
    assert_eq!(run.finished()["would"], want.len());
    // The report it would send, written beside it instead (the CSV too), not mailed.
    let html = std::fs::read_to_string(w.dir.path().join("billing_report.html")).unwrap();
    assert!(html.contains("Dry run"), "{html}");
    assert_eq!(super::send::table(&html, "invoiced").len(), want.len());
    let csv = std::fs::read_to_string(w.dir.path().join("billing_report.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        want.len() + 1,
        "a header and a row each"
    );
    assert!(mails_about(&state, "Billing").is_empty());
    let current = w.fakes.qbo.lock().unwrap().refresh_token().to_owned();
    assert_eq!(w.qbo_secret().await["refresh_token"], current.as_str());
}

#[tokio::test]
async fn bad_configuration_and_rejected_credentials_stop_with_a_fix() {
    let w = world(9, |_| {}).await;
    let mut cmd = w.job(&create(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    cmd.env("BILLING_TIMEZONE", "Mars/Olympus")
        .env("LOWER_CLIENT_ID", "ten");
    let run = finish(cmd.spawn().unwrap()).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("BILLING_TIMEZONE: \"Mars/Olympus\" is not an IANA time zone"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("LOWER_CLIENT_ID"), "{}", run.stderr);
    assert_eq!(run.finished()["success"], false);

    let run = run_create(&w, &["--shard", "3/2"]).await;
    assert_eq!(run.code, 2, "clap rejects a bad shard");
    assert!(run.stderr.contains("K/N"), "{}", run.stderr);
    // The alarms read run_finished: a schedule with a bad flag shows as a failed run.
    assert_eq!(run.finished()["job"], "create-invoices");
    assert_eq!(run.finished()["exit_code"], 2);

    // A month that is not over is refused, unless it is only looked at.
    let this_month = jiff::Zoned::now()
        .with_time_zone(jiff::tz::TimeZone::get("America/Los_Angeles").unwrap())
        .strftime("%Y-%m")
        .to_string();
    let run = w.run(&["--create-invoices", "--period", &this_month]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("is not over"), "{}", run.stderr);
    assert_eq!(run.finished()["success"], false);
    let look = w
        .run(&["--create-invoices", "--period", &this_month, "--dry-run"])
        .await;
    assert_eq!(look.code, 1, "the generated failures: {}", look.stderr);
    assert!(w.state().await["invoices"].as_array().unwrap().is_empty());

    // A secret that does not exist: configuration (2), naming it.
    let mut cmd = w.job(&create(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    cmd.env("CLICKUP_SECRET_NAME", "ClickUp/missing");
    let run = finish(cmd.spawn().unwrap()).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("ClickUp/missing") && run.stderr.contains("does not exist"),
        "{}",
        run.stderr
    );
    assert_eq!(run.finished()["exit_code"], 2);

    // A stale refresh token: exit 3, saying how to reconnect; nothing written.
    let sm = aws_sdk_secretsmanager::Client::new(&w.sdk);
    let mut secret = w.qbo_secret().await;
    secret["refresh_token"] = "rt-stale".into();
    sm.put_secret_value()
        .secret_id(fakes::generate::SECRET_NAMES[0])
        .secret_string(secret.to_string())
        .send()
        .await
        .unwrap();
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 3, "{}", run.stdout);
    assert!(
        run.stderr.contains("invalid_grant") && run.stderr.contains("reconnect the QBO app"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("rt-stale") && !run.stdout.contains("rt-stale"));
    assert!(w.state().await["invoices"].as_array().unwrap().is_empty());

    // A secret that is not the JSON the job expects: exit 2, naming the field only.
    sm.put_secret_value()
        .secret_id(fakes::generate::SECRET_NAMES[2])
        .secret_string(r#"{"api_token": 424242}"#)
        .send()
        .await
        .unwrap();
    let run = run_create(&w, &[]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("ClickUp/10000") && run.stderr.contains("api_token"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("424242"));
}

#[tokio::test]
async fn the_missed_run_check_fails_until_every_shard_of_the_month_has_run() {
    let w = world(12, |_| {}).await;
    let check = || w.run(&["--check-billed", "--period", "2026-10"]);

    let run = check().await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.finished()["job"], "check-billed");
    assert_eq!(run.finished()["success"], false);
    assert!(
        run.stdout
            .contains("no billing run of 2026-10 has finished"),
        "{}",
        run.stdout
    );

    // Neither a dry run nor a run of some clients counts as the month's billing.
    run_create(&w, &["--dry-run"]).await;
    run_create(&w, &["--clients", "1-2"]).await;
    assert_eq!(check().await.code, 1);

    // Half the shards: the other half is named.
    let half = run_create(&w, &["--shard", "1/2"]).await;
    assert!(half.code <= 1, "{}", half.stderr);
    let run = check().await;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("shards 2/2 of 2026-10 have not finished"),
        "{}",
        run.stdout
    );
    run_create(&w, &["--shard", "2/2"]).await;
    let run = check().await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.finished()["success"], true);
    // It reads only: the fakes saw nothing from it.
    assert!(!run.stdout.contains("\"event\":\"invoice_created\""));

    // A whole-month run, then a rerun of one shard of another count: the month stays
    // billed (the rerun's count does not make the others missing).
    run_create(&w, &[]).await;
    let rerun = run_create(&w, &["--shard", "3/4"]).await;
    assert!(rerun.code <= 1, "{}", rerun.stderr);
    let run = check().await;
    assert_eq!(run.code, 0, "{}", run.stdout);
}

/// The mails the fake Graph holds whose subject starts with `prefix`.
pub(super) fn mails_about<'a>(state: &'a Value, prefix: &str) -> Vec<&'a Value> {
    state["mails"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            m["message"]["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with(prefix))
        })
        .collect()
}

/// HTML's escapes undone (minijinja's set).
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

/// The cents of an amount as the emails show it (`1,234.50 USD`), which must be
/// exactly how the bookkeeper should read it.
fn cents_of(text: &str) -> i64 {
    let number = text.split_whitespace().next().unwrap().replace(',', "");
    let (units, frac) = number.split_once('.').unwrap();
    let cents = units.parse::<i64>().unwrap() * 100 + frac.parse::<i64>().unwrap();
    assert_eq!(
        text,
        super::shown(cents, "USD"),
        "grouped, to the cent, with the currency"
    );
    cents
}

#[tokio::test]
async fn the_billing_report_compares_with_last_month_and_goes_out_once_per_new_billing() {
    let w = world(20, |_| {}).await;
    let want = expected(&w);
    let docs: Vec<&String> = want.keys().collect();
    // Last month, as QBO holds it: the first client billed the same, the second a
    // quarter (now more than 3x), the third four times as much (now less than a
    // third), and a client that fails this month (no API key) billed, under a name a
    // browser would run.
    let client = |doc: &str| doc.split('-').next().unwrap().to_owned();
    let seeded = [
        (docs[0].clone(), want[docs[0]].1),
        (docs[1].clone(), want[docs[1]].1 / 4),
        (docs[2].clone(), want[docs[2]].1 * 4),
    ];
    {
        let mut q = w.fakes.qbo.lock().unwrap();
        let mut previous = |doc: &str, cents: u64, name: &str| {
            #[allow(clippy::cast_precision_loss)]
            let amount = cents as f64 / 100.0;
            // Last month's invoice bills the client's own customer: only that counts.
            let c = client(doc);
            let display = &w
                .month
                .clients
                .iter()
                .find(|x| x.client_id == c)
                .unwrap()
                .display_name;
            let customer = q.customer_id(display).unwrap();
            q.insert_invoice(json!({
                "DocNumber": format!("{c}-202609"),
                "TxnDate": "2026-10-04",
                "CustomerRef": {"value": customer, "name": name},
                "Line": [{"DetailType": "SalesItemLineDetail", "Amount": amount,
                          "SalesItemLineDetail": {"Qty": 1, "UnitPrice": amount}}],
            }))
            .unwrap();
        };
        for (doc, cents) in &seeded {
            previous(doc, *cents, "Someone");
        }
        previous("10004-x", 12_345, "<b>Evil & \"Co\"</b>");
    }

    // A first run of some clients, then the whole month: the second report is an update.
    let first = run_create(&w, &["--clients", "10001-10010"]).await;
    assert!(first.code <= 1, "{}", first.stderr);
    let whole = run_create(&w, &[]).await;
    assert_eq!(whole.code, 1, "the failing clients: {}", whole.stderr);
    let state = w.state().await;
    let reports = mails_about(&state, "Billing 2026-10");
    assert_eq!(reports.len(), 2, "one report, then one update");
    let latest = &reports[1]["message"];
    let subject = latest["subject"].as_str().unwrap();
    assert!(
        subject.starts_with("Billing 2026-10 (update):"),
        "{subject}"
    );
    assert_eq!(
        latest["toRecipients"][0]["emailAddress"]["address"],
        "bookkeeper@example.com"
    );
    let html = latest["body"]["content"].as_str().unwrap();

    // Every invoice in QBO, to the cent, and the totals.
    let rows = super::send::table(html, "invoiced");
    let listed: BTreeMap<String, (u64, i64)> = rows
        .iter()
        .map(|r| (r[2].clone(), (r[3].parse().unwrap(), cents_of(&r[5]))))
        .collect();
    let expected: BTreeMap<String, (u64, i64)> = want
        .iter()
        .map(|(doc, (minutes, cents))| (doc.clone(), (*minutes, i64::try_from(*cents).unwrap())))
        .collect();
    assert_eq!(listed, expected);
    let sum: i64 = expected.values().map(|(_, c)| c).sum();
    let totals = super::send::table(html, "totals");
    assert_eq!(totals.len(), 1);
    assert_eq!(totals[0][0], "USD");
    assert_eq!(totals[0][1], want.len().to_string());
    assert_eq!(cents_of(&totals[0][3]), sum, "the total, to the cent");

    // Month over month: the seeded previous amounts, the change and the flags.
    let row_of = |doc: &str| rows.iter().find(|r| r[2] == doc).unwrap().clone();
    let same = row_of(docs[0]);
    assert_eq!(
        (same[7].as_str(), same[8].as_str()),
        ("+0.0%", ""),
        "{same:?}"
    );
    let up = row_of(docs[1]);
    assert_eq!(cents_of(&up[6]), i64::try_from(seeded[1].1).unwrap());
    assert_eq!(up[8], "more than 3x last month");
    let down = row_of(docs[2]);
    assert_eq!(down[8], "less than a third of last month");
    let new = row_of(docs[3]);
    assert_eq!((new[6].as_str(), new[8].as_str()), ("", "new"));
    let dropped = super::send::table(html, "dropped");
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0][0], "10004");
    assert_eq!(cents_of(&dropped[0][2]), 12_345);
    // Escaped, as text: never markup.
    assert!(
        html.contains("&lt;b&gt;Evil &amp; &quot;Co&quot;&lt;&#x2f;b&gt;"),
        "{html}"
    );
    assert!(!html.contains("<b>Evil"));
    // Who was not billed, with the same words as the log.
    let not_billed = super::send::table(html, "not-billed");
    for (id, why) in whole.events("client_failed").iter().map(|e| {
        (
            e["id"].as_str().unwrap().to_owned(),
            e["error"].as_str().unwrap().to_owned(),
        )
    }) {
        assert!(
            not_billed
                .iter()
                .any(|r| r[0] == id && unescape(&r[1]) == why),
            "{id}: {why} in {not_billed:?}"
        );
    }
    // Runs still going at billing time, by client and run id, as the log names them.
    let going: Vec<(String, String)> = whole
        .events("run_in_progress")
        .iter()
        .map(|e| {
            (
                e["client_id"].as_str().unwrap().to_owned(),
                e["run_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        !going.is_empty(),
        "the generated month has a run still going"
    );
    let listed: Vec<(String, String)> = super::send::table(html, "in-progress")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(listed, going);
    // The chart: a bar per largest client (up to 15), the largest full width, drawn
    // with table cells (no SVG, no script: mail clients drop them).
    let bars: Vec<&str> = html
        .split("<td width=\"")
        .skip(1)
        .filter(|c| c.contains("bgcolor=\"#3584e4\""))
        .map(|c| &c[..c.find('"').unwrap()])
        .collect();
    assert_eq!(bars.len(), want.len().min(15), "{html}");
    assert_eq!(bars[0], "100%");
    assert!(!html.contains("<svg") && !html.contains("<script"));

    // The CSV attachment: the same rows.
    let attachment = &latest["attachments"][0];
    assert_eq!(attachment["name"], "billing-2026-10.csv");
    let csv_bytes = base64::engine::general_purpose::STANDARD
        .decode(attachment["contentBytes"].as_str().unwrap())
        .unwrap();
    let mut reader = csv::Reader::from_reader(csv_bytes.as_slice());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(
        records.len(),
        want.len() + 1,
        "every invoice and the dropped client"
    );
    for r in &records[..want.len()] {
        let (minutes, cents) = expected[&r[2]];
        assert_eq!(
            // The CSV keeps plain numbers.
            (r[3].parse::<u64>().unwrap(), {
                let (units, frac) = r[5].split_once('.').unwrap();
                units.parse::<i64>().unwrap() * 100 + frac.parse::<i64>().unwrap()
            }),
            (minutes, cents)
        );
    }
    assert_eq!(
        &records[want.len()][1],
        "<b>Evil & \"Co\"</b>",
        "CSV holds the name as it is"
    );

    // A rerun bills nothing new: no third report.
    let again = run_create(&w, &[]).await;
    assert_eq!(again.code, 1);
    assert_eq!(mails_about(&w.state().await, "Billing 2026-10").len(), 2);
    assert_eq!(again.events("report_unchanged").len(), 1);
}

#[tokio::test]
async fn without_the_addresses_the_month_is_billed_and_no_report_is_read_or_sent() {
    let w = world(12, |_| {}).await;
    let args = create(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = w.job(&args);
    cmd.env_remove("BOOKKEEPER_EMAIL")
        .env_remove("SENDER_EMAIL");
    let run = finish(cmd.spawn().unwrap()).await;
    assert!(run.code <= 1, "{}", run.stderr);
    assert_eq!(run.events("report_skipped").len(), 1, "{}", run.stdout);
    let state = w.state().await;
    assert_eq!(invoices(&state), expected(&w), "billed as always");
    assert!(mails_about(&state, "Billing").is_empty());
}
