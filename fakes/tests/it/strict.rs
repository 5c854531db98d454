//! The rules of the real services that the fakes enforce by default, and the switches
//! that make them adversarial, each through real HTTP.

use std::time::Duration;

use fakes::control::{Action, Fault, Limits};
use fakes::control_room::{Run, Workspace};
use fakes::server::{Fakes, Seed};
use serde_json::{Value, json};

use super::{api, seed, token};

/// A started fake and a bearer token for its QBO.
async fn qbo(seed: &Seed) -> (Fakes, String) {
    let fakes = Fakes::start(seed).await.unwrap();
    let access = token(&fakes, "rt-0").await.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    (fakes, format!("Bearer {access}"))
}

async fn settings(fakes: &Fakes, change: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{}/_fakes/settings", fakes.url()))
        .json(&change)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn customer_id(fakes: &Fakes, name: &str) -> String {
    fakes.qbo.lock().unwrap().customer_id(name).unwrap()
}

fn invoice(customer: &str, doc: &str, email: Option<&str>) -> Value {
    let mut i = json!({
        "DocNumber": doc,
        "CustomerRef": {"value": customer},
        "EmailStatus": "NeedToSend",
        "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 12.5,
                  "SalesItemLineDetail": {"ItemRef": {"value": "3"}, "Qty": 10, "UnitPrice": 1.25}}],
    });
    if let Some(e) = email {
        i["BillEmail"] = json!({"Address": e});
    }
    i
}

async fn create(fakes: &Fakes, bearer: &str, body: &Value, query: &[(&str, &str)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(api(fakes, "/invoice"))
        .header("authorization", bearer)
        .query(query)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn qbo_refuses_an_invoice_to_email_without_an_address_and_replays_the_refusal() {
    let (fakes, bearer) = qbo(&seed()).await;
    let acme = customer_id(&fakes, "10002 - Acme");
    let no_email = invoice(&acme, "10002-202610", None);
    let (status, body) = create(&fakes, &bearer, &no_email, &[("requestid", "rid-1")]).await;
    assert_eq!(status, 400);
    assert_eq!(body["Fault"]["type"], "ValidationFault");
    assert!(body["time"].is_string(), "QBO stamps every answer: {body}");
    // The same requestid with the data fixed: QBO replays the first answer.
    let fixed = invoice(&acme, "10002-202610", Some("ap@acme.example"));
    let (again, replay) = create(&fakes, &bearer, &fixed, &[("requestid", "rid-1")]).await;
    assert_eq!((again, &replay), (400, &body), "the refusal, time and all");
    // A new requestid runs the request.
    let (ok, created) = create(&fakes, &bearer, &fixed, &[("requestid", "rid-2")]).await;
    assert_eq!(ok, 200, "{created}");
    // Not to be emailed, no address needed.
    let mut not_set = invoice(&acme, "10002-202611", None);
    not_set["EmailStatus"] = json!("NotSet");
    assert_eq!(create(&fakes, &bearer, &not_set, &[]).await.0, 200);
    // requestid is at most 50 characters.
    let long = "r".repeat(51);
    let (status, _) = create(&fakes, &bearer, &fixed, &[("requestid", &long)]).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn duplicate_numbers_are_refused_unless_the_company_or_the_request_allows_them() {
    let (fakes, bearer) = qbo(&seed()).await;
    let aicpa = customer_id(&fakes, "10001 - AICPA");
    let inv = invoice(&aicpa, "10001-202610", Some("ap@aicpa.example"));
    assert_eq!(
        create(&fakes, &bearer, &inv, &[("requestid", "a")]).await.0,
        200
    );
    let (status, body) = create(&fakes, &bearer, &inv, &[("requestid", "b")]).await;
    assert_eq!(status, 400);
    assert!(
        body["Fault"]["Error"][0]["Detail"]
            .as_str()
            .unwrap()
            .contains("DocNumber=10001-202610")
    );
    let per_request = [("requestid", "c"), ("include", "allowduplicatedocnum")];
    assert_eq!(create(&fakes, &bearer, &inv, &per_request).await.0, 200);
    // The company setting, and requestid ignored: the same request twice makes two.
    let now = settings(
        &fakes,
        json!({"qbo": {"duplicate_doc_numbers": true, "ignore_requestid": true}}),
    )
    .await;
    assert_eq!(now["qbo"]["ignore_requestid"], true);
    assert_eq!(now["control_room"]["paging_race"], false);
    assert_eq!(
        create(&fakes, &bearer, &inv, &[("requestid", "d")]).await.0,
        200
    );
    assert_eq!(
        create(&fakes, &bearer, &inv, &[("requestid", "d")]).await.0,
        200
    );
    let numbered = fakes
        .qbo
        .lock()
        .unwrap()
        .invoices()
        .iter()
        .filter(|i| i["DocNumber"] == "10001-202610")
        .count();
    assert_eq!(numbered, 4);
}

#[tokio::test]
async fn queries_go_by_get_or_by_post_as_application_text_and_filter_on_times() {
    let (fakes, bearer) = qbo(&seed()).await;
    let http = reqwest::Client::new();
    let aicpa = customer_id(&fakes, "10001 - AICPA");
    let before = fakes::qbo::stamp();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, made) = create(
        &fakes,
        &bearer,
        &invoice(&aicpa, "10001-202610", Some("ap@aicpa.example")),
        &[],
    )
    .await;
    let id = made["Invoice"]["Id"].as_str().unwrap();
    let text = format!("SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime > '{before}'");
    let by_post: Value = http
        .post(api(&fakes, "/query"))
        .header("authorization", &bearer)
        .header("content-type", "application/text")
        .body(text.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        by_post["QueryResponse"]["Invoice"][0]["Id"], id,
        "{by_post}"
    );
    let wrong_type = http
        .post(api(&fakes, "/query"))
        .header("authorization", &bearer)
        .header("content-type", "application/json")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    let too_many = http
        .get(api(&fakes, "/query"))
        .header("authorization", &bearer)
        .query(&[("query", "SELECT * FROM Invoice MAXRESULTS 1001")])
        .send()
        .await
        .unwrap();
    assert_eq!(too_many.status(), 400);
    // A send stamps DeliveryInfo and moves LastUpdatedTime.
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
    let delivered = sent["Invoice"]["DeliveryInfo"]["DeliveryTime"]
        .as_str()
        .unwrap();
    assert!(delivered.parse::<jiff::Timestamp>().unwrap() > before.parse().unwrap());
    assert_eq!(sent["Invoice"]["MetaData"]["LastUpdatedTime"], delivered);
}

#[tokio::test]
async fn a_batch_holds_30_items_with_short_ids_and_faults_each_item_on_its_own() {
    let (fakes, bearer) = qbo(&seed()).await;
    let http = reqwest::Client::new();
    let aicpa = customer_id(&fakes, "10001 - AICPA");
    let post = |body: Value, rid: Option<&str>| {
        let mut r = http
            .post(api(&fakes, "/batch"))
            .header("authorization", &bearer)
            .json(&body);
        if let Some(rid) = rid {
            r = r.query(&[("requestid", rid)]);
        }
        r.send()
    };
    let queries = |n: usize| json!({"BatchItemRequest": (0..n).map(|i| json!({"bId": i.to_string(), "Query": "select * from Item"})).collect::<Vec<_>>()});
    assert_eq!(post(queries(30), None).await.unwrap().status(), 200);
    assert_eq!(post(queries(31), None).await.unwrap().status(), 400);
    let long_bid =
        json!({"BatchItemRequest": [{"bId": "12345678901", "Query": "select * from Item"}]});
    assert_eq!(post(long_bid, None).await.unwrap().status(), 400);
    assert_eq!(
        post(queries(1), Some(&"r".repeat(37)))
            .await
            .unwrap()
            .status(),
        400
    );
    let items = json!({"BatchItemRequest": [
        {"bId": "1", "operation": "create", "Invoice": invoice(&aicpa, "A-1", Some("ap@aicpa.example"))},
        {"bId": "2", "operation": "create", "Invoice": invoice(&aicpa, "A-2", None)},
        {"bId": "3", "operation": "create", "Invoice": invoice(&aicpa, "A-1", Some("ap@aicpa.example"))},
    ]});
    let answer: Value = post(items, Some("batch-1"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answers = answer["BatchItemResponse"].as_array().unwrap();
    assert!(answers[0]["Invoice"]["Id"].is_string(), "{answer}");
    assert!(
        answers[1]["Fault"]["Error"][0]["Detail"]
            .as_str()
            .unwrap()
            .contains("BillEmail"),
        "{answer}"
    );
    assert!(
        answers[2]["Fault"]["Error"][0]["Detail"]
            .as_str()
            .unwrap()
            .contains("Duplicate"),
        "{answer}"
    );
    assert_eq!(fakes.qbo.lock().unwrap().invoices().len(), 1);
}

#[tokio::test]
async fn qbo_allows_10_per_second_and_40_batches_per_minute() {
    let mut s = seed();
    s.limits.insert("qbo".into(), Limits::QBO);
    let (fakes, bearer) = qbo(&s).await;
    let http = reqwest::Client::new();
    let one = || {
        http.get(api(&fakes, "/query"))
            .header("authorization", &bearer)
            .query(&[("query", "select * from Item")])
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(one().await.unwrap());
    }
    let last = statuses.pop().unwrap();
    assert!(statuses.iter().all(|r| r.status() == 200));
    assert_eq!(last.status(), 429, "the 11th within a second");
    assert_eq!(
        last.json::<Value>().await.unwrap()["Fault"]["Error"][0]["code"],
        "003001"
    );
    // Batches: 40 in a minute, paced under 10 a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let batch = json!({"BatchItemRequest": [{"bId": "1", "Query": "select * from Item"}]});
    let mut refused = None;
    for n in 1..=41 {
        tokio::time::sleep(Duration::from_millis(110)).await;
        let r = http
            .post(api(&fakes, "/batch"))
            .header("authorization", &bearer)
            .json(&batch)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            refused = Some(n);
            break;
        }
    }
    assert_eq!(refused, Some(41));
    let state: Value = reqwest::get(format!("{}/_fakes/state", fakes.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let qbo = &state["stats"]["qbo"];
    // The refused ones arrived too.
    assert_eq!(qbo["max_per_second"], 11, "{qbo}");
    assert_eq!(qbo["max_batches_per_minute"], 41, "{qbo}");
    assert_eq!(qbo["throttled"], 2, "{qbo}");
}

#[tokio::test]
async fn refresh_tokens_rotate_daily_when_the_fake_is_told_to() {
    let fakes = Fakes::start(&seed()).await.unwrap();
    settings(&fakes, json!({"qbo": {"refresh_rotation": "daily"}})).await;
    let first: Value = token(&fakes, "rt-0").await.json().await.unwrap();
    let second: Value = token(&fakes, "rt-0").await.json().await.unwrap();
    assert_eq!(
        (&first["refresh_token"], &second["refresh_token"]),
        (&json!("rt-0"), &json!("rt-0"))
    );
    assert_ne!(first["access_token"], second["access_token"]);
}

/// A workspace of `n` finished October runs, one a day.
fn workspace(n: usize) -> Seed {
    Seed {
        workspaces: vec![Workspace {
            id: "ws-1".into(),
            name: "W".into(),
            organization_id: "org-1".into(),
            key: "key-1".into(),
            runs: (0..n)
                .map(|i| Run {
                    id: String::new(),
                    state: "completed".into(),
                    started_at: Some(format!("2026-10-{:02}T10:00:00Z", 1 + i)),
                    ended_at: Some(format!("2026-10-{:02}T10:05:00Z", 1 + i)),
                    duration: Some(300.0),
                })
                .collect(),
        }],
        ..Seed::default()
    }
}

/// Every page of ws-1's runs (at most `max` pages): the run ids of each.
async fn pages(fakes: &Fakes, limit: usize, max: usize) -> Vec<Vec<String>> {
    let http = reqwest::Client::new();
    let mut url = format!(
        "{}/robocorp/api/v1/workspaces/ws-1/process-runs?limit={limit}",
        fakes.url()
    );
    let mut out = Vec::new();
    while out.len() < max {
        let page: Value = http
            .get(&url)
            .header("authorization", "RC-WSKEY key-1")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.push(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["started_at"].as_str().unwrap()[..10].to_owned())
                .collect(),
        );
        match page["next"].as_str() {
            Some(next) => next.clone_into(&mut url),
            None => break,
        }
    }
    out
}

#[tokio::test]
async fn control_room_lists_runs_newest_first_and_can_shift_or_loop_its_pages() {
    let fakes = Fakes::start(&workspace(6)).await.unwrap();
    assert_eq!(
        pages(&fakes, 3, 10).await,
        [
            ["2026-10-06", "2026-10-05", "2026-10-04"],
            ["2026-10-03", "2026-10-02", "2026-10-01"]
        ]
    );
    // A run starting between two page requests shifts the list by one.
    settings(&fakes, json!({"control_room": {"paging_race": true}})).await;
    let shifted = pages(&fakes, 3, 10).await;
    assert_eq!(
        shifted[1][0], "2026-10-04",
        "the last run of page 1 again: {shifted:?}"
    );
    // A next link that names the page it came with.
    settings(&fakes, json!({"control_room": {"repeat_next": true}})).await;
    let looping = pages(&fakes, 3, 4).await;
    assert_eq!(looping.len(), 4, "{looping:?}");
    assert_eq!(looping[2], looping[3]);
}

#[tokio::test]
async fn a_late_run_lands_after_its_failed_answer_and_a_held_call_never_runs() {
    let (fakes, bearer) = qbo(&seed()).await;
    let aicpa = customer_id(&fakes, "10001 - AICPA");
    {
        let mut c = fakes.control.0.lock().unwrap();
        c.add_fault(Fault {
            action: Action::LateRun {
                status: 502,
                after_ms: 100,
            },
            ..Fault::status("qbo", Some("LATE-1"), 1, 502)
        });
        c.add_fault(Fault {
            action: Action::LateRun {
                status: 504,
                after_ms: 300,
            },
            ..Fault::status("qbo", Some("LATE-2"), 1, 504)
        });
        c.add_fault(Fault {
            action: Action::HangBefore,
            ..Fault::status("qbo", Some("HELD-1"), 1, 0)
        });
        // QBO gives up on a request after this long: LATE-2 never lands.
        c.limits.insert(
            "qbo".into(),
            Limits {
                request_timeout_ms: Some(200),
                ..Limits::default()
            },
        );
    }
    let count = |doc: &str| {
        fakes
            .qbo
            .lock()
            .unwrap()
            .invoices()
            .iter()
            .filter(|i| i["DocNumber"] == doc)
            .count()
    };
    let late = invoice(&aicpa, "LATE-1", Some("ap@aicpa.example"));
    assert_eq!(create(&fakes, &bearer, &late, &[]).await.0, 502);
    assert_eq!(count("LATE-1"), 0, "not yet");
    let too_late = invoice(&aicpa, "LATE-2", Some("ap@aicpa.example"));
    assert_eq!(create(&fakes, &bearer, &too_late, &[]).await.0, 504);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(count("LATE-1"), 1, "landed after the 502");
    assert_eq!(count("LATE-2"), 0, "past QBO's request timeout");
    let held = invoice(&aicpa, "HELD-1", Some("ap@aicpa.example"));
    let attempt = reqwest::Client::new()
        .post(api(&fakes, "/invoice"))
        .header("authorization", &bearer)
        .timeout(Duration::from_millis(300))
        .json(&held)
        .send()
        .await;
    assert!(attempt.is_err_and(|e| e.is_timeout()));
    assert_eq!(count("HELD-1"), 0);
    assert_eq!(fakes.control.0.lock().unwrap().hung, 1);
}

/// The AWS proxy refuses what the service's published model refuses (here a value off its
/// enum), as the service refuses it, before moto sees the call.
#[tokio::test(flavor = "multi_thread")]
async fn the_aws_proxy_refuses_what_the_services_model_refuses() {
    let moto = fakes::emulators::Moto::start().unwrap();
    let proxy = fakes::fault_proxy::FaultProxy::start(moto.addr(), 0).unwrap();
    let config = aws_setup::load(&aws_setup::AwsOptions {
        profile: None,
        region: Some("us-east-1".into()),
        endpoint_url: Some(proxy.endpoint()),
    })
    .await
    .into_builder()
    .credentials_provider(
        aws_credential_types::provider::SharedCredentialsProvider::new(
            aws_credential_types::Credentials::new("testing", "testing", None, None, "moto"),
        ),
    )
    .build();
    let db = aws_sdk_dynamodb::Client::new(&config);
    let short = db
        .update_table()
        .table_name("job-state")
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::from("FREE"))
        .send()
        .await
        .unwrap_err();
    let service = short.as_service_error().unwrap();
    assert_eq!(
        aws_smithy_types::error::metadata::ProvideErrorMetadata::code(service),
        Some("ValidationException")
    );
    assert_eq!(
        aws_smithy_types::error::metadata::ProvideErrorMetadata::message(service),
        Some(
            "1 validation error detected: Value 'FREE' at 'billingMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"
        )
    );
    // The same call, kept within the model, reaches moto (which has no such table).
    let absent = db
        .update_table()
        .table_name("job-state")
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap_err();
    assert!(
        absent
            .as_service_error()
            .unwrap()
            .is_resource_not_found_exception(),
        "{absent:?}"
    );
}
