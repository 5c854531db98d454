//! The QBO fake through real HTTP, as the job will meet it.

mod strict;

use base64::Engine as _;
use fakes::control_room::{Run, Workspace};
use fakes::server::{Fakes, Seed};
use serde_json::{Value, json};

fn seed() -> Seed {
    Seed {
        qbo: fakes::qbo::Seed {
            customers: vec![
                ("10001 - AICPA".into(), Some("ap@aicpa.example".into())),
                ("10002 - Acme".into(), None),
            ],
            ..fakes::qbo::Seed::default()
        },
        workspaces: vec![Workspace {
            id: "ws-1".into(),
            name: "AICPA".into(),
            organization_id: "org-1".into(),
            key: "key-1".into(),
            runs: (0..250)
                .map(|i| Run {
                    id: String::new(),
                    state: "completed".into(),
                    started_at: Some(format!("2026-10-{:02}T10:00:00Z", 1 + i % 28)),
                    ended_at: Some(format!("2026-10-{:02}T10:05:00Z", 1 + i % 28)),
                    duration: (i % 10 != 0).then_some(300.0),
                })
                .collect(),
        }],
        clickup: ("9000001".into(), "pk_fake".into(), vec!["task-1".into()]),
        // The rules' own tests; the limits have theirs.
        limits: std::collections::BTreeMap::new(),
        ..Seed::default()
    }
}

async fn token(fakes: &Fakes, refresh: &str) -> reqwest::Response {
    let basic = base64::engine::general_purpose::STANDARD.encode("qbo-client:qbo-secret");
    reqwest::Client::new()
        .post(format!("{}/qbo/oauth2/v1/tokens/bearer", fakes.url()))
        .header("authorization", format!("Basic {basic}"))
        .header("accept", "application/json")
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .unwrap()
}

fn api(fakes: &Fakes, path: &str) -> String {
    format!("{}/qbo/v3/company/9130000000000001{path}", fakes.url())
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_stale_one_gets_invalid_grant() {
    let fakes = Fakes::start(&seed()).await.unwrap();
    let first: Value = token(&fakes, "rt-0").await.json().await.unwrap();
    assert_eq!(first["refresh_token"], "rt-1");
    assert_eq!(first["expires_in"], 3600);
    let stale = token(&fakes, "rt-0").await;
    assert_eq!(stale.status(), 400);
    assert_eq!(
        stale.json::<Value>().await.unwrap(),
        json!({"error": "invalid_grant"})
    );
    assert_eq!(fakes.qbo.lock().unwrap().refresh_token(), "rt-1");
}

#[tokio::test]
async fn invoices_are_created_once_per_requestid_queried_by_page_and_sent() {
    let fakes = Fakes::start(&seed()).await.unwrap();
    let http = reqwest::Client::new();
    let access = token(&fakes, "rt-0").await.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bearer = format!("Bearer {access}");

    // No token: the lowercase 401.
    let denied = http
        .get(api(&fakes, "/query"))
        .query(&[("query", "select * from Invoice")])
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    assert_eq!(
        denied.json::<Value>().await.unwrap()["fault"]["error"][0]["code"],
        "3200"
    );

    let customer: Value = http
        .get(api(&fakes, "/query"))
        .header("authorization", &bearer)
        .query(&[(
            "query",
            "select * from Customer where DisplayName = '10001 - AICPA'",
        )])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let customer_id = customer["QueryResponse"]["Customer"][0]["Id"]
        .as_str()
        .unwrap()
        .to_owned();

    let invoice = |doc: &str, qty: f64| {
        json!({
            "DocNumber": doc,
            "CustomerRef": {"value": customer_id},
            "BillEmail": {"Address": "ap@aicpa.example"},
            "EmailStatus": "NeedToSend",
            "Line": [{"DetailType": "SalesItemLineDetail", "Amount": qty * 1.25,
                      "SalesItemLineDetail": {"ItemRef": {"value": "3"}, "Qty": qty, "UnitPrice": 1.25}}],
        })
    };
    let create = |body: Value, rid: &str| {
        http.post(api(&fakes, "/invoice"))
            .header("authorization", &bearer)
            .query(&[("requestid", rid)])
            .json(&body)
            .send()
    };
    let a: Value = create(invoice("10001-202610", 100.0), "r1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["Invoice"]["TotalAmt"], 125.0);
    // The same requestid replays the first answer and creates nothing.
    let again: Value = create(invoice("10001-202610", 100.0), "r1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["Invoice"]["Id"], a["Invoice"]["Id"]);
    // Another requestid with the same DocNumber is a duplicate.
    let dup = create(invoice("10001-202610", 100.0), "r2").await.unwrap();
    assert_eq!(dup.status(), 400);
    assert_eq!(
        dup.json::<Value>().await.unwrap()["Fault"]["Error"][0]["code"],
        "6140"
    );
    for n in 2..=5 {
        create(invoice(&format!("10001-20261{n}"), 10.0), &format!("r{n}0"))
            .await
            .unwrap();
    }
    assert_eq!(fakes.qbo.lock().unwrap().invoices().len(), 5);

    let page = |start: &str| {
        http.get(api(&fakes, "/query"))
            .header("authorization", &bearer)
            .query(&[("query", format!("select * from Invoice where EmailStatus = 'NeedToSend' STARTPOSITION {start} MAXRESULTS 2"))])
            .send()
    };
    let first: Value = page("1").await.unwrap().json().await.unwrap();
    assert_eq!(
        first["QueryResponse"]["Invoice"].as_array().unwrap().len(),
        2
    );
    let last: Value = page("5").await.unwrap().json().await.unwrap();
    assert_eq!(
        last["QueryResponse"]["Invoice"].as_array().unwrap().len(),
        1
    );
    let past: Value = page("7").await.unwrap().json().await.unwrap();
    assert!(
        past["QueryResponse"].get("Invoice").is_none(),
        "the entity key is absent: {past}"
    );

    let id = a["Invoice"]["Id"].as_str().unwrap();
    let sent: Value = http
        .post(api(&fakes, &format!("/invoice/{id}/send")))
        .header("authorization", &bearer)
        .header("content-type", "application/octet-stream")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["Invoice"]["EmailStatus"], "EmailSent");
    assert_eq!(sent["Invoice"]["SyncToken"], "1");
    let seen: Value = http
        .get(format!("{}/_fakes/qbo/invoices", fakes.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        seen["invoices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["EmailStatus"] == "EmailSent")
            .count(),
        1
    );
}

#[tokio::test]
async fn control_room_pages_runs_with_next_and_checks_the_workspace_key() {
    let fakes = Fakes::start(&seed()).await.unwrap();
    let http = reqwest::Client::new();
    let wrong = http
        .get(format!(
            "{}/robocorp/api/v1/workspaces/ws-1/process-runs",
            fakes.url()
        ))
        .header("authorization", "RC-WSKEY nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["error"]["code"],
        "unauthorized"
    );

    let ws: Value = http
        .get(format!("{}/robocorp/api/v1/workspaces/ws-1", fakes.url()))
        .header("authorization", "RC-WSKEY key-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ws["organization"]["id"], "org-1");

    // Follow `next` as given until has_more is false.
    let mut url = format!(
        "{}/robocorp/api/v1/workspaces/ws-1/process-runs?limit=100",
        fakes.url()
    );
    let (mut runs, mut pages, mut null_durations) = (0, 0, 0);
    loop {
        let page: Value = http
            .get(&url)
            .header("authorization", "RC-WSKEY key-1")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        let data = page["data"].as_array().unwrap();
        runs += data.len();
        null_durations += data.iter().filter(|r| r["duration"].is_null()).count();
        if !page["has_more"].as_bool().unwrap() {
            assert!(page["next"].is_null());
            break;
        }
        url = page["next"].as_str().unwrap().to_owned();
    }
    assert_eq!((runs, pages, null_durations), (250, 3, 25));
}

#[tokio::test]
async fn clickup_keeps_time_entries_per_task_and_limits_each_token_per_minute() {
    let fakes = Fakes::start(&seed()).await.unwrap();
    let http = reqwest::Client::new();
    let entries = format!("{}/clickup/api/v2/team/9000001/time_entries", fakes.url());
    let created = http
        .post(&entries)
        .header("authorization", "pk_fake")
        .json(
            &json!({"start": 1_790_000_000_000_i64, "duration": 600_000, "billable": true,
                      "description": "Robot minutes 2026-10 (10001)", "tid": "task-1"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    assert_eq!(created.headers()["x-ratelimit-limit"], "100");
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["data"]["duration"], "600000");
    let unknown = http
        .post(&entries)
        .header("authorization", "pk_fake")
        .json(&json!({"start": 1, "duration": 1, "tid": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404, "an unknown task: ITEM_013");
    let listed: Value = http
        .get(&entries)
        .header("authorization", "pk_fake")
        .query(&[
            ("task_id", "task-1"),
            ("start_date", "1789999999999"),
            ("end_date", "1790000000001"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    // Without dates: the last 30 days only, and that entry is older.
    let recent: Value = http
        .get(&entries)
        .header("authorization", "pk_fake")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(recent["data"].as_array().unwrap().is_empty(), "{recent}");
    let bad = http
        .get(&entries)
        .header("authorization", "pk_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert_eq!(bad.json::<Value>().await.unwrap()["ECODE"], "OAUTH_017");

    // Four requests so far (the bad token counts against no one): one more fits in 5.
    fakes.clickup.lock().unwrap().limit = 5;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = http
            .get(&entries)
            .header("authorization", "pk_fake")
            .send()
            .await
            .unwrap();
        statuses.push((
            r.status().as_u16(),
            r.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        ));
        assert!(
            r.headers()["x-ratelimit-reset"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 1_790_000_000
        );
    }
    assert_eq!(
        statuses,
        [
            (200, "0".to_owned()),
            (429, "0".to_owned()),
            (429, "0".to_owned())
        ]
    );
}

#[tokio::test]
async fn clickup_lists_the_callers_own_entries_unless_an_admin_names_others() {
    let fakes = Fakes::start(&seed()).await.unwrap();
    let http = reqwest::Client::new();
    let entries = format!("{}/clickup/api/v2/team/9000001/time_entries", fakes.url());
    {
        let mut c = fakes.clickup.lock().unwrap();
        c.add_user("pk_admin", 7, true);
        c.add_user("pk_member", 8, false);
        c.foreign_tasks.push("task-elsewhere".into());
    }
    let post = |token: &'static str, tid: &'static str| {
        http.post(&entries)
            .header("authorization", token)
            .json(&json!({"start": 1_790_000_000_000_i64, "duration": 60_000, "tid": tid}))
            .send()
    };
    assert_eq!(post("pk_fake", "task-1").await.unwrap().status(), 200);
    let elsewhere = post("pk_fake", "task-elsewhere").await.unwrap();
    assert_eq!(elsewhere.status(), 401);
    assert_eq!(
        elsewhere.json::<Value>().await.unwrap()["ECODE"],
        "OAUTH_027"
    );
    let list = |token: &'static str, assignee: Option<&'static str>| {
        let mut q = vec![
            ("start_date", "1789999999999"),
            ("end_date", "1790000000001"),
        ];
        if let Some(a) = assignee {
            q.push(("assignee", a));
        }
        http.get(&entries)
            .header("authorization", token)
            .query(&q)
            .send()
    };
    let count = |v: Value| v["data"].as_array().map_or(0, Vec::len);
    // The owner's entry: invisible to another user's plain list...
    let own: Value = list("pk_admin", None).await.unwrap().json().await.unwrap();
    assert_eq!(count(own), 0);
    // ...seen when an admin names the members...
    let members: Value = http
        .get(format!("{}/clickup/api/v2/team", fakes.url()))
        .header("authorization", "pk_admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<String> = members["teams"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"]["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 3);
    let all = ids.join(",");
    let all: &'static str = Box::leak(all.into_boxed_str());
    let seen: Value = list("pk_admin", Some(all))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count(seen), 1);
    // ...and refused when a member does.
    let refused = list("pk_member", Some(all)).await.unwrap();
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn graph_sends_mail_with_202_keeps_it_throttles_with_retry_after_and_takes_uploads() {
    let fakes = Fakes::start(&seed()).await.unwrap();
    let http = reqwest::Client::new();
    let bad = http
        .post(format!("{}/login/tenant-1/oauth2/v2.0/token", fakes.url()))
        .form(&[
            ("client_id", "graph-client"),
            ("client_secret", "wrong"),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let token: Value = http
        .post(format!("{}/login/tenant-1/oauth2/v2.0/token", fakes.url()))
        .form(&[
            ("client_id", "graph-client"),
            ("client_secret", "graph-secret"),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let mail = json!({"message": {"subject": "Invoices sent", "body": {"contentType": "HTML", "content": "<p>hi</p>"},
                      "toRecipients": [{"emailAddress": {"address": "bookkeeper@example.com"}}]}});
    let send = || {
        http.post(format!(
            "{}/graph/v1.0/users/billing@example.com/sendMail",
            fakes.url()
        ))
        .header("authorization", &bearer)
        .json(&mail)
        .send()
    };

    fakes.graph.lock().unwrap().throttle_next = 1;
    let throttled = send().await.unwrap();
    assert_eq!(throttled.status(), 429);
    assert_eq!(throttled.headers()["retry-after"], "1");
    let sent = send().await.unwrap();
    assert_eq!(sent.status(), 202);
    assert!(sent.bytes().await.unwrap().is_empty());
    let mails = fakes.graph.lock().unwrap().mails.clone();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].0, "billing@example.com");
    assert_eq!(mails[0].1["subject"], "Invoices sent");
    // Past 4 MB with its attachment, Graph refuses the message whole.
    let big = json!({"message": {"subject": "Billing", "body": {"contentType": "HTML", "content": "x"},
        "toRecipients": [{"emailAddress": {"address": "bookkeeper@example.com"}}],
        "attachments": [{"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.csv",
            "contentBytes": "A".repeat(fakes::graph::REQUEST_LIMIT)}]}});
    let refused = http
        .post(format!(
            "{}/graph/v1.0/users/billing@example.com/sendMail",
            fakes.url()
        ))
        .header("authorization", &bearer)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 413);
    assert_eq!(fakes.graph.lock().unwrap().mails.len(), 1, "nothing sent");

    let site: Value = http
        .get(format!(
            "{}/graph/v1.0/sites/example.sharepoint.com:/sites/billing",
            fakes.url()
        ))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = site["id"].as_str().unwrap();
    let up = http
        .put(format!(
            "{}/graph/v1.0/sites/{id}/drive/root:/Invoices/2026-10/10001-202610.pdf:/content",
            fakes.url()
        ))
        .header("authorization", &bearer)
        .body(b"%PDF-1.4".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(up.status(), 201);
    assert_eq!(
        fakes.graph.lock().unwrap().files[0].0,
        "Invoices/2026-10/10001-202610.pdf"
    );
}

#[tokio::test]
async fn limits_answer_the_services_own_429_and_faults_fail_or_hold_the_chosen_call() {
    let mut s = seed();
    s.limits.insert(
        "qbo".into(),
        fakes::control::Limits {
            latency_ms: 200,
            max_in_flight: Some(2),
            per_minute: Some(5),
            ..fakes::control::Limits::default()
        },
    );
    let fakes = Fakes::start(&s).await.unwrap();
    let access = token(&fakes, "rt-0").await.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let query = |q: &'static str| {
        reqwest::Client::new()
            .get(api(&fakes, "/query"))
            .header("authorization", format!("Bearer {access}"))
            .query(&[("query", q)])
            .send()
    };
    // Three at once against two in flight: one 429 with QBO's throttle fault.
    let (a, b, c) = tokio::join!(
        query("select * from Item"),
        query("select * from Item"),
        query("select * from Item")
    );
    let mut statuses: Vec<u16> = [a, b, c]
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429]);
    // Per minute: 3 arrived so far (a refused call counts too); 2 more pass, the sixth
    // is refused with Retry-After.
    for _ in 0..2 {
        assert_eq!(query("select * from Item").await.unwrap().status(), 200);
    }
    let refused = query("select * from Item").await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["Fault"]["Error"][0]["code"], "003001");

    // Faults through the HTTP control endpoint: the 2nd matching Control Room call fails.
    let http = reqwest::Client::new();
    http.post(format!("{}/_fakes/faults", fakes.url()))
        .json(&json!({"service": "robocorp", "matching": "ws-1", "nth": 2, "action": {"status": {"status": 503}}}))
        .send()
        .await
        .unwrap();
    let ws = || {
        http.get(format!("{}/robocorp/api/v1/workspaces/ws-1", fakes.url()))
            .header("authorization", "RC-WSKEY key-1")
            .send()
    };
    assert_eq!(ws().await.unwrap().status(), 200);
    assert_eq!(ws().await.unwrap().status(), 503);
    assert_eq!(ws().await.unwrap().status(), 200);

    let state: Value = http
        .get(format!("{}/_fakes/state", fakes.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["stats"]["qbo"]["max_in_flight"], 2);
    assert_eq!(state["stats"]["qbo"]["throttled"], 2);
    assert_eq!(state["stats"]["robocorp"]["calls"], 3);
}

/// The local Fargate started by someone who cannot run tasks: the message names the fix
/// and the proxy does not start.
#[test]
fn the_local_fargate_without_root_names_the_fix() {
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_fakes"))
        .args([
            "aws-proxy",
            "--upstream",
            "http://127.0.0.1:9",
            "--port",
            "0",
            "--fargate",
            "us-east-1",
        ])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("runc needs root") && stderr.contains("run as root"),
        "{stderr}"
    );
}

/// docs/reference/fakes.md is `fakes --markdown-help`, with every subcommand and long
/// flag `--help` shows; a copy that differs is named, with the fix.
#[test]
fn the_command_reference_is_generated_from_the_cli_and_current() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_fakes"));
    let reference =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference/fakes.md");
    fakes::cli_reference::check(bin, &reference).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("fakes.md");
    let text = std::fs::read_to_string(&reference).unwrap();
    std::fs::write(
        &stale,
        text.replace("* `--clients <CLIENTS>`", "* `--customers`"),
    )
    .unwrap();
    let error = fakes::cli_reference::check(bin, &stale).unwrap_err();
    assert!(
        error.contains("lacks what --help shows: `fakes --clients`")
            && error.contains("is stale")
            && error.contains("make reference"),
        "{error}"
    );
}
