//! `--check`: every problem a run would meet, named with its fix, and nothing written.

use fakes::generate::{Outcome, SECRET_NAMES};
use serde_json::{Value, json};

use super::{Run, World, world};

/// The `check` lines that failed, as `check -> detail`.
fn failed(run: &Run) -> Vec<(String, String, String)> {
    run.events("check")
        .into_iter()
        .filter(|l| l["status"] == "fail")
        .map(|l| {
            (
                l["check"].as_str().unwrap_or_default().to_owned(),
                l["detail"].as_str().unwrap_or_default().to_owned(),
                l["fix"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Nothing billed, entered or sent: the fakes hold what they were seeded with.
async fn nothing_written(w: &World) {
    let s = w.state().await;
    assert_eq!(s["invoices"], json!([]), "no invoice created");
    assert_eq!(s["time_entries"], json!([]), "no time entry made");
    assert_eq!(s["mails"], json!([]), "no mail sent");
}

fn client_with(w: &World, outcome: &Outcome) -> String {
    w.month
        .clients
        .iter()
        .find(|c| c.outcome == *outcome)
        .map(|c| c.client_id.clone())
        .unwrap()
}

#[tokio::test]
async fn a_sound_world_passes_every_check_and_nothing_is_written() {
    let w = world(20, fakes::generate::Month::remove_broken).await;
    let run = w.run(&["--check"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(failed(&run), []);
    let names: Vec<&str> = run
        .events("check")
        .iter()
        .map(|l| l["check"].as_str().unwrap())
        .collect();
    for want in [
        "config",
        "table",
        "state-table",
        "robocorp",
        "qbo:sign-in",
        "qbo:item",
        "qbo:customers",
        "clickup:team",
        "clickup:tasks",
        "graph:sign-in",
        "graph:sender",
    ] {
        assert!(names.contains(&want), "no {want} check in {names:?}");
    }
    for name in SECRET_NAMES {
        assert!(
            names.contains(&format!("secret:{name}").as_str()),
            "{names:?}"
        );
    }
    let end = run.finished();
    assert_eq!(end["job"], "check");
    assert_eq!(end["success"], true);
    // It writes nothing: the failed-run alarm, which counts only runs that are not dry
    // runs, never counts a check.
    assert_eq!(end["dry_run"], true);
    // Customers without an email are named as a warning, not a failure.
    assert!(
        run.events("check")
            .iter()
            .any(|l| l["status"] == "warn"
                && l["detail"].as_str().unwrap().contains("no email address")),
        "{}",
        run.stdout
    );
    nothing_written(&w).await;
}

#[tokio::test]
async fn each_broken_client_is_named_with_its_fix_and_the_check_exits_1() {
    // The generated month as the demo has it: three clients broken on purpose.
    let w = world(20, |_| {}).await;
    let run = w.run(&["--check"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let fails = failed(&run);
    let malformed = client_with(&w, &Outcome::Malformed);
    let unknown = client_with(&w, &Outcome::UnknownCustomer);
    let has = |check: &str, detail: &str, fix: &str| {
        assert!(
            fails
                .iter()
                .any(|(c, d, f)| c == check && d.contains(detail) && f.contains(fix)),
            "no failed {check} saying {detail:?} / {fix:?} in {fails:#?}"
        );
    };
    has(
        &format!("item:{malformed}"),
        "clickup_task_id is missing",
        "correct the item",
    );
    has(
        &format!("qbo:customer:{unknown}"),
        "no active QBO customer",
        "create the customer in QBO",
    );
    assert!(
        fails.iter().any(|(c, d, f)| c.starts_with("robocorp:")
            && d.contains("no API key")
            && f.contains(SECRET_NAMES[3])),
        "{fails:#?}"
    );
    assert_eq!(fails.len(), 3, "{fails:#?}");
    assert_eq!(run.finished()["success"], false);
    nothing_written(&w).await;
}

#[tokio::test]
async fn a_missing_key_item_mailbox_or_workspace_key_fails_its_check() {
    let w = world(12, |m| {
        m.remove_broken();
        // The QBO item is gone, and the ClickUp secret lacks team_id.
        m.seed.qbo.items.clear();
        if let Some(Value::Object(s)) = m.secrets.get_mut(SECRET_NAMES[2]) {
            s.remove("team_id");
        }
    })
    .await;
    // The tenant has mailboxes, but not the sender's.
    w.settings(json!({"graph": {"mailboxes": ["someone@example.com"], "read_users": true}}))
        .await;
    let run = w.run(&["--check"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let fails = failed(&run);
    let has = |check: &str, detail: &str, fix: &str| {
        assert!(
            fails
                .iter()
                .any(|(c, d, f)| c == check && d.contains(detail) && f.contains(fix)),
            "no failed {check} saying {detail:?} / {fix:?} in {fails:#?}"
        );
    };
    has(&format!("secret:{}", SECRET_NAMES[2]), "team_id", "README");
    has(
        "qbo:item",
        "no active item named \"Robot Minutes\"",
        "QBO_ITEM_NAME",
    );
    has(
        "graph:sender",
        "billing@example.com is not a user",
        "SENDER_EMAIL",
    );
    // Without a user-read permission the sender cannot be confirmed: a warning only.
    w.settings(json!({"graph": {"read_users": false}})).await;
    let run = w.run(&["--check"]).await;
    let sender = run
        .events("check")
        .into_iter()
        .find(|l| l["check"] == "graph:sender")
        .cloned()
        .unwrap();
    assert_eq!(sender["status"], "warn", "{sender}");
    assert!(
        sender["fix"]
            .as_str()
            .unwrap()
            .contains("User.ReadBasic.All")
    );
}

#[tokio::test]
async fn a_workspace_key_that_does_not_open_its_workspace_fails() {
    let w = world(12, |m| {
        m.remove_broken();
        let ws = m.seed.workspaces[5].id.clone();
        if let Some(Value::Object(s)) = m.secrets.get_mut(SECRET_NAMES[3]) {
            s.insert(ws, json!("wskey-revoked"));
        }
    })
    .await;
    let run = w.run(&["--check"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let ws = &w.month.seed.workspaces[5].id;
    let fails = failed(&run);
    assert!(
        fails.iter().any(|(c, d, f)| c == &format!("robocorp:{ws}")
            && d.contains("does not open it")
            && f.contains("replace the key")),
        "{fails:#?}"
    );
    // The key itself never shows.
    assert!(!run.stdout.contains("wskey-revoked") && !run.stderr.contains("wskey-revoked"));
}

#[tokio::test]
async fn a_timeout_stops_new_work_and_says_so() {
    let w = world(30, |m| {
        m.remove_broken();
        // Each Control Room answer takes 700 ms: two clients at a time cannot finish
        // the month in a second.
        m.seed.limits.insert(
            "robocorp".into(),
            fakes::control::Limits {
                latency_ms: 700,
                ..fakes::control::Limits::default()
            },
        );
    })
    .await;
    let run = w
        .run(&[
            "--create-invoices",
            "--period",
            "2026-10",
            "--concurrency",
            "2",
            "--timeout",
            "1s",
        ])
        .await;
    let end = run.finished();
    assert_eq!(run.code, 124, "{}", run.stdout);
    assert_eq!(end["timed_out"], true, "{end}");
    assert_eq!(end["interrupted"], true);
    assert!(end["not_started"].as_u64().unwrap() > 0, "{end}");
    assert!(!run.events("stop_requested").is_empty());
    // A rerun without the deadline bills the rest, each client once.
    let again = w.run(&["--create-invoices", "--period", "2026-10"]).await;
    assert_eq!(again.code, 0, "{}", again.stdout);
    let s = w.state().await;
    assert_eq!(
        s["invoices"].as_array().unwrap().len(),
        w.month.invoiced().count()
    );
}
