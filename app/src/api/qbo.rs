//! QuickBooks Online: OAuth refresh with the rotated refresh token written back to
//! Secrets Manager before any other call (in a task of its own, so a failing or stopped
//! run still finishes the save), queries paged by STARTPOSITION/MAXRESULTS, batch
//! requests, invoice create with `requestid`, send and PDF. Faults are read from the
//! body on any status (QBO sometimes answers 200 with a Fault), in both the usual and
//! the lowercase 401 shape. Every call, the token refresh included, keeps to the realm's
//! limits (Intuit, "API call limits and throttles"): at most 10 in flight, 10 per second
//! and 500 per minute.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jiff::Timestamp;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_util::task::TaskTracker;

use super::limits::Limiter;
use super::{Api, ApiError};
use crate::config::Config;
use crate::secrets::{QboEnvironment, QboSecret, Redacted, Secrets};

const SERVICE: &str = "qbo";
const MINOR_VERSION: &str = "75";
/// QBO's largest page.
pub const PAGE: usize = 1000;
/// Pages of one keyset read at most (a million rows).
const MAX_PAGES: usize = 1000;
/// Recommended most items per batch request.
pub const BATCH: usize = 30;
/// Batch requests a minute per realm and app (Intuit, "API call limits and throttles").
pub const BATCHES_PER_MINUTE: usize = 40;
/// Requests per second per realm and app (Intuit, "API call limits and throttles").
pub const PER_SECOND: usize = 10;

#[derive(Debug)]
struct Tokens {
    access: Option<(Redacted, Instant)>,
    refresh: Redacted,
    /// The whole secret JSON, so the write-back keeps its other keys.
    whole: Redacted,
}

/// What a token refresh needs, shared with the task that runs it.
#[derive(Debug)]
struct Refresher {
    /// Refreshes tried before the token is given up on: shards refreshing at once each
    /// find the token the others rotated.
    rounds: u32,
    auth: Api,
    token_url: String,
    basic: Redacted,
    secrets: Secrets,
    secret_name: String,
}

#[derive(Debug)]
pub struct Qbo {
    api: Api,
    /// The same limits, and 40 batch requests a minute on top.
    batch_api: Api,
    base: String,
    refresher: Arc<Refresher>,
    tokens: Arc<Mutex<Tokens>>,
    critical: TaskTracker,
    settle: Duration,
    /// Where a person opens an invoice: QBO's web app, production or sandbox.
    app_url: &'static str,
}

impl Qbo {
    /// The client for the realm in `secret` (`whole` is the secret's JSON, for the
    /// write-back). Each request is bounded by `config.settle` (QBO's own timeout plus a
    /// margin): once it has passed, a request without an answer is over at QBO too.
    pub fn new(
        secret: &QboSecret,
        whole: Redacted,
        secrets: Secrets,
        critical: TaskTracker,
        config: &Config,
    ) -> Self {
        let settle = config.settle;
        let host = config.urls.qbo_api.as_deref().map_or_else(
            || match secret.environment {
                QboEnvironment::Production => "https://quickbooks.api.intuit.com".to_owned(),
                QboEnvironment::Sandbox => "https://sandbox-quickbooks.api.intuit.com".to_owned(),
            },
            str::to_owned,
        );
        // Shards share the realm: each keeps to its part of every budget.
        let part = |n: usize| (n / config.share as usize).max(1);
        let limiter =
            Limiter::new(Some(part(10)), Some(part(500))).with_per_second(part(PER_SECOND));
        let basic = Redacted::new(base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            secret.client_id,
            secret.client_secret.expose()
        )));
        let app_url = match secret.environment {
            QboEnvironment::Production => "https://app.qbo.intuit.com",
            QboEnvironment::Sandbox => "https://app.sandbox.qbo.intuit.com",
        };
        Self {
            app_url,
            // Intuit: after a 429, wait a minute.
            api: Api::new(SERVICE, settle, limiter.clone())
                .with_throttle_wait(Duration::from_mins(1)),
            batch_api: Api::new(
                SERVICE,
                settle,
                limiter.and_per_minute(part(BATCHES_PER_MINUTE)),
            )
            .with_throttle_wait(Duration::from_mins(1)),
            base: format!("{host}/v3/company/{}", secret.realm_id),
            refresher: Arc::new(Refresher {
                rounds: 3 + config.share,
                auth: Api::new("qbo-oauth", Duration::from_secs(30), limiter),
                token_url: config.urls.qbo_token.clone(),
                basic,
                secrets,
                secret_name: config.secrets.qbo.clone(),
            }),
            tokens: Arc::new(Mutex::new(Tokens {
                access: None,
                refresh: secret.refresh_token.clone(),
                whole,
            })),
            critical,
            settle,
        }
    }

    /// A valid access token, refreshing (one caller at a time) when needed. The refresh
    /// and the save of a rotated refresh token run in a task of their own, tracked as
    /// critical: dropping the caller (a fatal error elsewhere, a stop) does not cut
    /// them short, and the process waits for them before it exits.
    async fn access_token(&self) -> Result<Redacted, ApiError> {
        let guard = Arc::clone(&self.tokens).lock_owned().await;
        if let Some((token, expires)) = &guard.access
            && *expires > Instant::now() + Duration::from_mins(2)
        {
            return Ok(token.clone());
        }
        let refresher = Arc::clone(&self.refresher);
        self.critical
            .spawn(async move { refresher.refresh(guard).await })
            .await
            .map_err(|e| ApiError {
                fatal: true,
                ..ApiError::new("qbo-oauth", None, format!("the token refresh stopped: {e}"))
            })?
    }

    /// Gets an access token now (refreshing, and saving a rotated refresh token).
    /// The invoice's page in QBO's web app, for a person to open.
    pub fn invoice_link(&self, id: &str) -> String {
        format!("{}/app/invoice?txnId={id}", self.app_url)
    }

    pub async fn sign_in(&self) -> Result<(), ApiError> {
        self.access_token().await.map(drop)
    }

    async fn forget(&self, token: &Redacted) {
        let mut tokens = self.tokens.lock().await;
        if tokens.access.as_ref().is_some_and(|(t, _)| t == token) {
            tokens.access = None;
        }
    }

    /// One QBO call; a 401 refreshes the access token once and tries again.
    async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Body<'_>,
        accept: &str,
        replay: bool,
    ) -> Result<Vec<u8>, ApiError> {
        let url = format!("{}{path}", self.base);
        for round in 0..2 {
            let token = self.access_token().await?;
            let call = |c: &reqwest::Client| {
                let r = c
                    .request(method.clone(), &url)
                    .bearer_auth(token.expose())
                    .header("accept", accept)
                    .query(&[("minorversion", MINOR_VERSION)])
                    .query(query);
                match body {
                    Body::Json(b) => r.json(b),
                    Body::Text(t) => r
                        .header("content-type", "application/text")
                        .body(t.to_owned()),
                    Body::Empty if method == Method::POST => {
                        r.header("content-type", "application/octet-stream")
                    }
                    Body::Empty => r,
                }
            };
            let api = if path == "/batch" {
                &self.batch_api
            } else {
                &self.api
            };
            let result = if replay {
                api.call(call, fault_of).await
            } else {
                api.call_unsure(call, fault_of).await
            };
            match result {
                Err(e) if e.status == Some(401) && round == 0 => self.forget(&token).await,
                Err(e) if e.status == Some(401) || e.status == Some(403) => {
                    return Err(ApiError { fatal: true, ..e });
                }
                Err(e) => return Err(e),
                Ok(answer) => return Ok(answer.body),
            }
        }
        unreachable!("the loop returns on its second round")
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Body<'_>,
        replay: bool,
    ) -> Result<Value, ApiError> {
        let bytes = self
            .request(method, path, query, body, "application/json", replay)
            .await?;
        // An answer that cannot be read says nothing of what happened (see `Answer::json`).
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                SERVICE,
                None,
                format!("answered with a body that is not JSON ({e})"),
            )
        })?;
        // QBO can answer 200 with a Fault.
        if v.get("Fault").is_some() || v.get("fault").is_some() {
            return Err(fault_of(StatusCode::OK, &HeaderMap::new(), &bytes));
        }
        Ok(v)
    }

    /// Every row of `select` (`SELECT * FROM Entity ...` without paging clauses), by
    /// POST with the query as an `application/text` body: a long `IN (...)` list would
    /// not fit a URL.
    pub async fn query_all(&self, select: &str) -> Result<Vec<Value>, ApiError> {
        let mut rows = Vec::new();
        loop {
            let page = self.query_page(select, rows.len() + 1).await?;
            let short = page.len() < PAGE;
            rows.extend(page);
            if short {
                return Ok(rows);
            }
        }
    }

    /// One page of up to [`PAGE`] rows of `select`, from row `start` (1 is the first).
    pub async fn query_page(&self, select: &str, start: usize) -> Result<Vec<Value>, ApiError> {
        let text = format!("{select} STARTPOSITION {start} MAXRESULTS {PAGE}");
        let v = self
            .json(Method::POST, "/query", &[], Body::Text(&text), true)
            .await?;
        // The entity key is absent when nothing matches.
        Ok(v["QueryResponse"][entity_of(select)]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Every invoice updated at or after `since` (an RFC 3339 time), read in order of
    /// `MetaData.LastUpdatedTime` with the next page starting at the last time read,
    /// not at a position: an invoice updated while the pages are read (a payment
    /// arriving) moves to the end, and a position-based read would then skip the row
    /// that slid into its place. Rows at the boundary are read twice; `Id`s tell them.
    pub async fn invoices_updated_since(&self, since: &str) -> Result<Vec<Value>, ApiError> {
        let mut rows: Vec<Value> = Vec::new();
        // Id -> its place in `rows`: a row read again (it moved) replaces the first copy.
        let mut seen = std::collections::BTreeMap::new();
        let (mut cursor, mut start) = (since.to_owned(), 1);
        for _ in 0..MAX_PAGES {
            let select = format!(
                "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= {} ORDERBY MetaData.LastUpdatedTime ASC",
                quote(&cursor)
            );
            let page = self.query_page(&select, start).await?;
            let short = page.len() < PAGE;
            let last = page
                .last()
                .and_then(|r| r["MetaData"]["LastUpdatedTime"].as_str())
                .map(str::to_owned);
            for row in page {
                let id = row["Id"].as_str().unwrap_or_default().to_owned();
                if let Some(&at) = seen.get(&id) {
                    rows[at] = row;
                } else {
                    seen.insert(id, rows.len());
                    rows.push(row);
                }
            }
            match last {
                _ if short => return Ok(rows),
                // A whole page of one second: the next page of that second.
                Some(last) if last == cursor => start += PAGE,
                Some(last) => (cursor, start) = (last, 1),
                None => {
                    return Err(ApiError::new(
                        SERVICE,
                        Some(200),
                        "a full page of invoices without MetaData.LastUpdatedTime: the rest cannot be read in order",
                    ));
                }
            }
        }
        Err(ApiError::new(
            SERVICE,
            Some(200),
            format!("the invoices updated since {since} did not end within {MAX_PAGES} pages"),
        ))
    }

    /// The invoices numbered `doc` (none, one, or more where the company allows
    /// duplicate numbers).
    pub async fn invoices_numbered(&self, doc: &str) -> Result<Vec<Value>, ApiError> {
        self.query_all(&format!(
            "SELECT * FROM Invoice WHERE DocNumber = {}",
            quote(doc)
        ))
        .await
    }

    /// One batch request of up to 30 `items` (each `{"Query": ...}` or
    /// `{"operation": "create", "Invoice": ...}`; `bId` is added), the answer of each
    /// item in order: its body, or its fault. Every batch request keeps to the 40 a
    /// minute besides the realm's other limits.
    async fn batch(
        &self,
        items: Vec<Value>,
        request_id: Option<&str>,
        replay: bool,
    ) -> Result<Vec<Result<Value, ApiError>>, ApiError> {
        assert!(items.len() <= BATCH, "a batch holds at most {BATCH} items");
        let count = items.len();
        let items: Vec<Value> = items
            .into_iter()
            .enumerate()
            .map(|(i, mut item)| {
                item["bId"] = json!(i.to_string());
                item
            })
            .collect();
        let query: Vec<(&str, &str)> = request_id.map(|r| ("requestid", r)).into_iter().collect();
        let v = self
            .json(
                Method::POST,
                "/batch",
                &query,
                Body::Json(&json!({"BatchItemRequest": items})),
                replay,
            )
            .await?;
        let time = time_of(&v);
        let answers = v["BatchItemResponse"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok((0..count)
            .map(|i| {
                let a = answers.iter().find(|a| a["bId"] == i.to_string().as_str());
                match a {
                    // An answer that leaves an item out says nothing of it.
                    None => Err(ApiError::new(
                        SERVICE,
                        None,
                        "the batch answer misses an item",
                    )),
                    Some(a) if a.get("Fault").is_some() => Err(item_fault(a, time)),
                    Some(a) => {
                        let mut a = a.clone();
                        a["time"] = v["time"].clone();
                        Ok(a)
                    }
                }
            })
            .collect())
    }

    /// Runs up to 30 queries in one request; each answer is the rows of its query, or
    /// the error of that item.
    pub async fn batch_queries(
        &self,
        queries: &[String],
    ) -> Result<Vec<Result<Vec<Value>, ApiError>>, ApiError> {
        let items = queries.iter().map(|q| json!({"Query": q})).collect();
        let answers = self.batch(items, None, true).await?;
        Ok(queries
            .iter()
            .zip(answers)
            .map(|(q, a)| {
                a.map(|a| {
                    a["QueryResponse"][entity_of(q)]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
            })
            .collect())
    }

    /// One attempt to create up to 30 invoices in one batch request: each created
    /// invoice, or the fault of its item. An ambiguous failure of the whole request (no
    /// answer, a 5xx) is returned, never retried here: the caller looks the DocNumbers
    /// up first.
    pub async fn create_invoices(
        &self,
        invoices: &[&Value],
        request_id: &str,
    ) -> Result<Vec<Result<Stamped, ApiError>>, ApiError> {
        let items = invoices
            .iter()
            .map(|i| json!({"operation": "create", "Invoice": i}))
            .collect();
        let answers = self.batch(items, Some(request_id), false).await?;
        Ok(answers
            .into_iter()
            .map(|a| {
                a.map(|a| Stamped {
                    time: time_of(&a),
                    value: a["Invoice"].clone(),
                })
            })
            .collect())
    }

    /// The invoices numbered any of `docs` (at most 100).
    pub async fn invoices_numbered_in(&self, docs: &[String]) -> Result<Vec<Value>, ApiError> {
        let list: Vec<String> = docs.iter().map(|d| quote(d)).collect();
        self.query_all(&format!(
            "SELECT * FROM Invoice WHERE DocNumber IN ({})",
            list.join(", ")
        ))
        .await
    }

    /// One attempt to create an invoice. A repeated `request_id` gets the first answer
    /// back, whatever it was; an ambiguous failure (no answer, a 5xx) is returned, never
    /// retried here: the caller looks the DocNumber up first ([`super::confirm`]).
    pub async fn create_invoice(
        &self,
        invoice: &Value,
        request_id: &str,
    ) -> Result<Stamped, ApiError> {
        let v = self
            .json(
                Method::POST,
                "/invoice",
                &[("requestid", request_id)],
                Body::Json(invoice),
                false,
            )
            .await?;
        Ok(Stamped {
            time: time_of(&v),
            value: v["Invoice"].clone(),
        })
    }

    pub async fn invoice(&self, id: &str) -> Result<Value, ApiError> {
        let v = self
            .json(
                Method::GET,
                &format!("/invoice/{id}"),
                &[],
                Body::Empty,
                true,
            )
            .await?;
        Ok(v["Invoice"].clone())
    }

    /// Whether the invoice an earlier answer named is no longer in QBO (deleted): read
    /// by Id, QBO answers Object Not Found (610: "Another user has deleted this
    /// transaction", Intuit's error list), or the entity with `status: Deleted`.
    pub async fn is_gone(&self, invoice: &Value) -> Result<bool, ApiError> {
        let Some(id) = invoice["Id"].as_str() else {
            return Ok(true);
        };
        match self.invoice(id).await {
            Ok(now) => Ok(now["status"] == "Deleted"),
            Err(e) if e.code.as_deref() == Some("610") => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Emails the invoice to its BillEmail; QBO answers with the updated invoice.
    /// `/send` takes no idempotency key: when an attempt may have gone through (no
    /// answer, a 5xx), the invoice is read back (again once QBO can no longer be working
    /// on the send). A read may be stale (QBO promises no read-after-write), so an
    /// invoice that still reads NeedToSend is not sent again in this run: the next
    /// day's run reads it long after, and sends it then if it truly did not go.
    pub async fn send_invoice(&self, id: &str) -> Result<Value, ApiError> {
        let path = format!("/invoice/{id}/send");
        match self
            .json(Method::POST, &path, &[], Body::Empty, false)
            .await
        {
            Ok(v) => Ok(v["Invoice"].clone()),
            Err(e) if e.is_ambiguous() => {
                let what = format!("send of invoice {id}");
                let found = super::confirm(&e, &what, self.settle, || async {
                    let now = self.invoice(id).await?;
                    Ok((now["EmailStatus"] == "EmailSent").then_some(now))
                })
                .await?;
                match found {
                    Some(now) => {
                        tracing::info!(
                            event = "send_confirmed",
                            invoice_id = id,
                            "the send went through although its answer was lost"
                        );
                        Ok(now)
                    }
                    None => Err(ApiError {
                        message: format!(
                            "{}; whether it went out is unclear, so it is not sent again today: the next run sends it if QBO still shows it waiting",
                            e.message
                        ),
                        ..e
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }

    pub async fn invoice_pdf(&self, id: &str) -> Result<Vec<u8>, ApiError> {
        self.request(
            Method::GET,
            &format!("/invoice/{id}/pdf"),
            &[],
            Body::Empty,
            "application/pdf",
            true,
        )
        .await
    }
}

/// An entity QBO answered with, and the `time` it stamped on the answer: a time long
/// before the request was made marks a replay of an earlier answer (`requestid`).
#[derive(Debug, Clone)]
pub struct Stamped {
    pub value: Value,
    pub time: Option<Timestamp>,
}

/// A batch item's fault. A ValidationFault is a refusal (nothing was made); any other
/// (a SystemFault above all) says nothing of whether the item was made, so it counts
/// as unanswered (Intuit, "Batch": items run on their own, and a SystemFault is a
/// server error), and an authentication fault stops the run.
fn item_fault(a: &Value, time: Option<Timestamp>) -> ApiError {
    let e = fault_of(StatusCode::OK, &HeaderMap::new(), a.to_string().as_bytes());
    let kind = a["Fault"]["type"].as_str().unwrap_or_default();
    let (status, fatal) = match kind.to_ascii_lowercase().as_str() {
        "validationfault" => (400, false),
        "authorizationfault" => (403, false),
        k if k.starts_with("authentication") => (401, true),
        _ => (500, false),
    };
    ApiError {
        time,
        status: Some(status),
        fatal,
        ..e
    }
}

/// What a QBO request carries.
#[derive(Debug, Clone, Copy)]
enum Body<'a> {
    Empty,
    Json(&'a Value),
    /// A query, as `application/text`.
    Text(&'a str),
}

impl Refresher {
    /// Refreshes the access token with the refresh token in `tokens`; a rotated refresh
    /// token is written to the secret before anything else happens.
    async fn refresh(&self, mut tokens: OwnedMutexGuard<Tokens>) -> Result<Redacted, ApiError> {
        let mut round = 0;
        let answer = loop {
            round += 1;
            let refresh = tokens.refresh.clone();
            let result = self
                .auth
                .call(
                    |c| {
                        c.post(&self.token_url)
                            .header("authorization", format!("Basic {}", self.basic.expose()))
                            .header("accept", "application/json")
                            .form(&[
                                ("grant_type", "refresh_token"),
                                ("refresh_token", refresh.expose()),
                            ])
                    },
                    |status, _, body| {
                        let v: Value = serde_json::from_slice(body).unwrap_or_default();
                        let code = v["error"].as_str().unwrap_or("unknown").to_owned();
                        let message = if code == "invalid_grant" {
                            format!(
                                "the refresh token in {} was rejected (invalid_grant): it is stale, expired or revoked",
                                self.secret_name
                            )
                        } else {
                            format!("the token endpoint answered {status} ({code})")
                        };
                        ApiError {
                            code: Some(code),
                            fatal: true,
                            ..ApiError::new("qbo-oauth", Some(status.as_u16()), message)
                        }
                    },
                )
                .await;
            match result {
                Ok(answer) => break answer,
                // Another run (a shard, the other job) may have rotated the token and
                // stored the new one: take it from the secret and try again.
                Err(e) if e.code.as_deref() == Some("invalid_grant") && round < self.rounds => {
                    // Another run (a shard, the other job) may have rotated the token:
                    // its save can take a few seconds to land, so look a few times.
                    let mut reloaded = false;
                    for wait in [0, 1, 2, 4, 8] {
                        tokio::time::sleep(Duration::from_secs(wait)).await;
                        if let Ok((secret, whole)) = self.secrets.qbo(&self.secret_name).await
                            && secret.refresh_token != tokens.refresh
                        {
                            tracing::info!(event = "qbo_refresh_token_reloaded", secret = %self.secret_name);
                            tokens.refresh = secret.refresh_token;
                            tokens.whole = whole;
                            reloaded = true;
                            break;
                        }
                    }
                    if !reloaded {
                        return Err(e);
                    }
                }
                // Without a token nothing else can be done: every failure is fatal.
                Err(e) => return Err(ApiError { fatal: true, ..e }),
            }
        };
        let v = answer.json("qbo-oauth")?;
        let (Some(access), Some(new_refresh)) =
            (v["access_token"].as_str(), v["refresh_token"].as_str())
        else {
            return Err(ApiError {
                fatal: true,
                ..ApiError::new(
                    "qbo-oauth",
                    Some(200),
                    "the token answer lacks access_token or refresh_token",
                )
            });
        };
        let expires_in = v["expires_in"].as_u64().unwrap_or(3600);
        let new_refresh = Redacted::new(new_refresh);
        if new_refresh != tokens.refresh {
            // Persist before anything else: the old token is already dead. The write is
            // idempotent (its request token is derived from the value), so it is tried
            // again over half a minute before the run gives up.
            let mut tries = 0;
            tokens.whole = loop {
                tries += 1;
                match self
                    .secrets
                    .put_qbo_refresh_token(&self.secret_name, &tokens.whole, &new_refresh)
                    .await
                {
                    Ok(whole) => break whole,
                    Err(e) if tries < 5 && matches!(e, crate::error::Error::Aws { .. }) => {
                        tracing::warn!(event = "qbo_refresh_token_save_retry", secret = %self.secret_name, error = %e);
                        tokio::time::sleep(Duration::from_secs(2u64.pow(tries))).await;
                    }
                    Err(e) => {
                        tracing::error!(
                            event = "qbo_refresh_token_unsaved",
                            secret = %self.secret_name,
                            error = %e,
                            "QBO rotated the refresh token and it could not be stored: the next run will need the app reconnected"
                        );
                        return Err(ApiError {
                            fatal: true,
                            ..ApiError::new("secretsmanager", None, e.to_string())
                        });
                    }
                }
            };
            tokens.refresh = new_refresh;
            tracing::info!(event = "qbo_refresh_token_rotated", secret = %self.secret_name);
        }
        let access = Redacted::new(access);
        tokens.access = Some((
            access.clone(),
            Instant::now() + Duration::from_secs(expires_in),
        ));
        Ok(access)
    }
}

/// The `time` QBO stamps on an answer (`2026-11-22T05:00:00.000-08:00`).
fn time_of(v: &Value) -> Option<Timestamp> {
    v["time"].as_str().and_then(|t| t.parse().ok())
}

/// `Invoice` from `select * from Invoice where ...`.
fn entity_of(select: &str) -> &str {
    let words: Vec<&str> = select.split_whitespace().collect();
    words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("from"))
        .and_then(|i| words.get(i + 1))
        .copied()
        .unwrap_or("")
}

/// QBO's Fault, in the usual shape or the lowercase one its 401s use.
fn fault_of(status: StatusCode, _: &HeaderMap, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let fault = v.get("Fault").or_else(|| v.get("fault"));
    let error = fault
        .and_then(|f| f.get("Error").or_else(|| f.get("error")))
        .and_then(|e| e.get(0));
    let field = |k: &str| {
        error
            .and_then(|e| e.get(k).or_else(|| e.get(k.to_ascii_lowercase())))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let code = field("code");
    let message = match (field("Message"), field("Detail")) {
        (Some(m), Some(d)) if d != m => format!("{m}: {d}"),
        (Some(m), _) => m,
        (None, Some(d)) => d,
        (None, None) => format!("answered {status}"),
    };
    ApiError {
        code,
        time: time_of(&v),
        ..ApiError::new(SERVICE, Some(status.as_u16()), message)
    }
}

/// Quotes a value for the QBO query language.
pub fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_read_in_both_shapes() {
        let upper = br#"{"Fault":{"Error":[{"Message":"Duplicate Document Number Error","Detail":"DocNumber=1","code":"6210"}],"type":"ValidationFault"}}"#;
        let e = fault_of(StatusCode::BAD_REQUEST, &HeaderMap::new(), upper);
        assert_eq!(e.code.as_deref(), Some("6210"));
        assert!(e.message.contains("DocNumber=1"));
        let lower = br#"{"fault":{"error":[{"message":"message=AuthenticationFailed; errorCode=003200; statusCode=401","detail":"Token expired","code":"3200"}],"type":"AUTHENTICATION"}}"#;
        let e = fault_of(StatusCode::UNAUTHORIZED, &HeaderMap::new(), lower);
        assert_eq!(e.code.as_deref(), Some("3200"));
        assert!(e.message.contains("Token expired"));
        assert_eq!(quote("O'Brien"), r"'O\'Brien'");
        assert_eq!(entity_of("SELECT * FROM Invoice WHERE x = 'y'"), "Invoice");
    }
}
