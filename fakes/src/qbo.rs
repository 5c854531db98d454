//! A stateful stand-in for QuickBooks Online, as strict as the real service wherever a
//! rule can change what the jobs must do. Each rule names its source; "unverified"
//! marks what no primary source confirmed.
//!
//! - OAuth: refresh tokens rotate on every refresh (or daily, Intuit's FAQ: "the refresh
//!   token value changes every 24 hours"); a superseded one gets `invalid_grant`.
//! - Queries by `GET ?query=` and by `POST` with `Content-Type: application/text`
//!   (Intuit, "Data queries"; python-quickbooks), STARTPOSITION/MAXRESULTS with at most
//!   1000 (node-quickbooks pages by 1000), the entity key absent on no match.
//! - Invoice create: `requestid` replays the first answer, errors included (Intuit blog
//!   "Using requestid": "the same response"), at most 50 characters (36 for a batch);
//!   a DocNumber may not repeat unless the company allows it
//!   (`include=allowduplicatedocnum`, node-quickbooks) or the `duplicate_doc_numbers`
//!   setting says so; `Amount` must be `Qty x UnitPrice`; an invoice to be emailed
//!   (`EmailStatus: NeedToSend`) needs a `BillEmail` (design.md; the fault's code and
//!   wording are unverified).
//! - Batch: 1 to 30 items (Intuit, "Batch"; node-quickbooks enforces 30), `bId` at most
//!   10 characters, each item answered or faulted on its own.
//! - Send: `EmailStatus` becomes `EmailSent`, `DeliveryInfo` is filled in, the invoice's
//!   SyncToken and `MetaData.LastUpdatedTime` move; no `BillEmail`, no send.
//! - Every answer carries QBO's `time`; faults use its shapes (including the lowercase
//!   401).
//!
//! Adversarial switches (off by default): `ignore_requestid`, `duplicate_doc_numbers`,
//! and `fail_queries_matching` (a query naming that text faults, in a batch that item
//! only).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What the fake company holds at start.
#[derive(Debug, Clone)]
pub struct Seed {
    pub realm_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    /// `(display name, primary email)`.
    pub customers: Vec<(String, Option<String>)>,
    /// `(name, unit price)`.
    pub items: Vec<(String, f64)>,
}

impl Default for Seed {
    fn default() -> Self {
        Self {
            realm_id: "9130000000000001".into(),
            client_id: "qbo-client".into(),
            client_secret: "qbo-secret".into(),
            refresh_token: "rt-0".into(),
            customers: Vec::new(),
            items: vec![("Robot Minutes".into(), 1.25)],
        }
    }
}

/// The company's settings and the adversarial modes; `POST /_fakes/settings`
/// `{"qbo": {...}}` replaces them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(clippy::struct_excessive_bools)] // Independent switches, each a setting or a mode.
pub struct Settings {
    /// The company lets a DocNumber repeat (its "warn if duplicate number" preference
    /// off): creates with a used DocNumber succeed.
    pub duplicate_doc_numbers: bool,
    /// `requestid` is not honoured: every create runs (a public Intuit SDK issue
    /// reports a duplicate despite it).
    pub ignore_requestid: bool,
    pub refresh_rotation: Rotation,
    /// A query whose text contains this answers a ValidationFault.
    pub fail_queries_matching: Option<String>,
    /// The company's books are closed through this date (`YYYY-MM-DD`): a transaction
    /// dated on or before it is refused (QBO "Close the books"; the fault's code and
    /// wording are unverified). A refusal the bookkeeper fixes in QBO, not in the request.
    pub books_closed_through: Option<String>,
    /// The company's default terms in days (Net 30 when unset): an invoice created
    /// without a DueDate is due its TxnDate plus these (Intuit API reference, Invoice:
    /// DueDate defaults from the terms; the company default is unverified here).
    pub default_terms_days: Option<u32>,
    /// The company's home currency (USD when unset): every invoice carries a
    /// CurrencyRef, the home currency unless multicurrency says otherwise.
    pub home_currency: Option<String>,
    /// Batch creates of invoices numbered any of these fault with a SystemFault (a
    /// server error: Intuit, "Error codes"; "Batch": each item runs on its own)...
    pub system_fault_docs: Vec<String>,
    /// ...and are made all the same: a server error says nothing of what was done.
    pub system_fault_commits: bool,
    /// For this long after an invoice is written, reads (queries, `GET /invoice`) may
    /// still show it as it was: QBO promises no read-after-write (its entities are
    /// served by replicas; the window is unverified), so the jobs must not take one
    /// read as proof.
    pub stale_read_ms: u64,
    /// Before each query on `MetaData.LastUpdatedTime` is answered, the matching
    /// invoice updated longest ago is updated now (a payment arriving while a job
    /// reads the list): it moves to the end of that order (and of the stored order),
    /// and a read by position skips the row that slides into its place.
    pub updated_while_read: bool,
}

/// When a refresh returns a new refresh token (and the old one dies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rotation {
    /// Every refresh: the strictest reading, and the default.
    #[default]
    EveryRefresh,
    /// Once the token is a day old (Intuit's FAQ); until then the same one comes back.
    Daily,
}

#[derive(Debug, Default)]
pub struct Qbo {
    pub realm_id: String,
    pub settings: Settings,
    client: (String, String),
    refresh_token: String,
    refresh_issued: Option<Instant>,
    refreshes: u64,
    access_tokens: Vec<String>,
    customers: Vec<Value>,
    items: Vec<Value>,
    invoices: Vec<Value>,
    /// `requestid` -> the response first given, whatever it was.
    replays: BTreeMap<String, (u16, Value)>,
    /// Each write to an invoice: when, its Id, and the invoice before (none: created).
    writes: Vec<(Instant, String, Option<Value>)>,
    next_id: u64,
    /// Every call, for tests: `(method, path)`.
    pub calls: Vec<(String, String)>,
}

pub type Shared = Arc<Mutex<Qbo>>;

/// QBO's clock, as its answers' `time` shows it: Pacific time with milliseconds.
pub fn now_text() -> String {
    pacific("%Y-%m-%dT%H:%M:%S%.3f%:z")
}

/// QBO's clock as its entities' times show it (`MetaData`, `DeliveryInfo`): whole
/// seconds, so two events of one second share a time.
pub fn stamp() -> String {
    pacific("%Y-%m-%dT%H:%M:%S%:z")
}

fn pacific(format: &str) -> String {
    let tz = jiff::tz::TimeZone::get("America/Los_Angeles").unwrap_or(jiff::tz::TimeZone::UTC);
    jiff::Timestamp::now()
        .to_zoned(tz)
        .strftime(format)
        .to_string()
}

impl Qbo {
    /// Deletes every item (a company whose service item was removed or renamed).
    pub fn clear_items(&mut self) {
        self.items.clear();
    }

    pub fn new(seed: &Seed) -> Self {
        let mut q = Self {
            realm_id: seed.realm_id.clone(),
            client: (seed.client_id.clone(), seed.client_secret.clone()),
            refresh_token: seed.refresh_token.clone(),
            refresh_issued: Some(Instant::now()),
            next_id: 1,
            ..Self::default()
        };
        for (name, email) in &seed.customers {
            let id = q.id();
            let mut c = json!({"Id": id, "DisplayName": name, "Active": true, "SyncToken": "0"});
            if let Some(email) = email {
                c["PrimaryEmailAddr"] = json!({"Address": email});
            }
            q.customers.push(c);
        }
        for (name, price) in &seed.items {
            let id = q.id();
            q.items.push(json!({"Id": id, "Name": name, "UnitPrice": price, "Type": "Service", "Active": true, "SyncToken": "0"}));
        }
        q
    }

    fn id(&mut self) -> String {
        let id = self.next_id;
        self.next_id += 1;
        id.to_string()
    }

    /// The refresh token the fake will accept next.
    pub fn refresh_token(&self) -> &str {
        &self.refresh_token
    }

    pub fn invoices(&self) -> &[Value] {
        &self.invoices
    }

    /// The invoices to change in place (for tests: times set in the past).
    pub fn invoices_mut(&mut self) -> &mut [Value] {
        &mut self.invoices
    }

    /// Adds an invoice as a create call would (for tests and the demo); `Err` is the
    /// fault's HTTP status.
    pub fn insert_invoice(&mut self, body: Value) -> Result<Value, u16> {
        let made = new_invoice(self, body, false).map_err(|f| f.status.as_u16())?;
        // Set up before the run: long settled, never read stale.
        self.writes.pop();
        Ok(made)
    }

    /// The number QBO proposes for the next invoice made in its web app when the
    /// company uses custom transaction numbers: the last invoice's number with its
    /// trailing digits counted up by one, the rest kept (`10999-202610` ->
    /// `10999-202611`, `INV-0099` -> `INV-0100`); a number that ends in anything but a
    /// digit proposes nothing (QuickBooks community answers on error 6140 and custom
    /// numbering; the behaviour for a trailing letter is unverified).
    pub fn proposed_number(&self) -> Option<String> {
        let last = self
            .invoices
            .iter()
            .rev()
            .find_map(|i| i["DocNumber"].as_str())?;
        let digits = last.len() - last.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        let (head, tail) = last.split_at(last.len() - digits);
        let next = tail.parse::<u128>().ok()? + 1;
        Some(format!("{head}{next:0digits$}"))
    }

    /// An invoice a bookkeeper makes by hand in QBO's web app for `customer` (a
    /// DisplayName): numbered as QBO proposes, for `amount`.
    pub fn hand_invoice(&mut self, customer: &str, amount: f64) -> Result<Value, u16> {
        let id = self.customer_id(customer).ok_or(404_u16)?;
        let mut body = json!({
            "CustomerRef": {"value": id, "name": customer},
            "Line": [{"DetailType": "SalesItemLineDetail", "Amount": amount,
                      "SalesItemLineDetail": {"Qty": 1, "UnitPrice": amount}}],
        });
        if let Some(doc) = self.proposed_number() {
            body["DocNumber"] = json!(doc);
        }
        self.insert_invoice(body)
    }

    /// Deletes an invoice, as the web app does: reads then answer Object Not Found.
    pub fn delete_invoice(&mut self, id: &str) -> bool {
        let Some(at) = self.invoices.iter().position(|i| i["Id"] == id) else {
            return false;
        };
        let before = self.invoices.remove(at);
        self.writes
            .push((Instant::now(), id.to_owned(), Some(before)));
        true
    }

    /// Voids an invoice, as the web app does: it stays, with every amount zero and
    /// "Voided" in its private note (QBO "Void an invoice"; the API shows a voided
    /// invoice with TotalAmt 0); its EmailStatus is left as it was.
    pub fn void_invoice(&mut self, id: &str) -> bool {
        let Some(inv) = self.invoices.iter_mut().find(|i| i["Id"] == id) else {
            return false;
        };
        let before = inv.clone();
        inv["TotalAmt"] = json!(0);
        inv["Balance"] = json!(0);
        if let Some(lines) = inv["Line"].as_array_mut() {
            for line in lines {
                line["Amount"] = json!(0);
                line["SalesItemLineDetail"]["Qty"] = json!(0);
            }
        }
        inv["PrivateNote"] = json!("Voided");
        inv["MetaData"]["LastUpdatedTime"] = json!(stamp());
        self.writes
            .push((Instant::now(), id.to_owned(), Some(before)));
        true
    }

    /// The invoices as a read sees them: within `stale_read_ms` of a write, as before it.
    fn visible_invoices(&self) -> Vec<Value> {
        let mut view = self.invoices.clone();
        if self.settings.stale_read_ms == 0 {
            return view;
        }
        let window = Duration::from_millis(self.settings.stale_read_ms);
        // Newest first: the oldest write still in the window decides what shows.
        for (at, id, before) in self.writes.iter().rev() {
            if at.elapsed() >= window {
                break;
            }
            let at_pos = view.iter().position(|i| i["Id"] == id.as_str());
            match (at_pos, before) {
                (Some(p), Some(b)) => view[p] = b.clone(),
                (Some(p), None) => {
                    view.remove(p);
                }
                (None, Some(b)) => view.push(b.clone()),
                (None, None) => {}
            }
        }
        view
    }

    /// The customer's Id, by DisplayName.
    pub fn customer_id(&self, display_name: &str) -> Option<String> {
        self.customers
            .iter()
            .find(|c| c["DisplayName"] == display_name)
            .and_then(|c| c["Id"].as_str().map(str::to_owned))
    }
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/qbo/oauth2/v1/tokens/bearer", post(token))
        .route(
            "/qbo/v3/company/{realm}/query",
            get(query).post(query_by_post),
        )
        .route("/qbo/v3/company/{realm}/invoice", post(create_invoice))
        .route("/qbo/v3/company/{realm}/invoice/{id}", get(read_invoice))
        .route(
            "/qbo/v3/company/{realm}/invoice/{id}/send",
            post(send_invoice),
        )
        .route("/qbo/v3/company/{realm}/invoice/{id}/pdf", get(invoice_pdf))
        .route("/qbo/v3/company/{realm}/batch", post(batch))
        .with_state(state)
}

/// One QBO fault: the HTTP status and the `Fault` object's parts.
#[derive(Debug, Clone)]
pub struct Fault {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    detail: String,
}

impl Fault {
    fn validation(code: &'static str, message: &str, detail: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "ValidationFault",
            code,
            message: message.to_owned(),
            detail: detail.to_owned(),
        }
    }

    /// The `Fault` object, as a body or a batch item carries it.
    fn object(&self) -> Value {
        json!({"Error": [{"Message": self.message, "Detail": self.detail, "code": self.code, "element": ""}], "type": self.kind})
    }

    fn body(&self) -> Value {
        json!({"Fault": self.object(), "time": now_text()})
    }

    fn response(&self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// QBO's 610: the object does not exist or is inactive.
fn not_found(what: &str) -> Fault {
    Fault::validation("610", "Object Not Found", &format!("{what} not found"))
}

/// The first answer given to this `requestid`, if it was seen before.
fn replayed(q: &Qbo, rid: &RequestId) -> Option<Response> {
    if q.settings.ignore_requestid {
        return None;
    }
    let (status, body) = q.replays.get(rid.requestid.as_ref()?)?;
    Some(
        (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
            Json(body.clone()),
        )
            .into_response(),
    )
}

/// Keeps the answer for a later request with the same `requestid`, and gives it.
fn remember(q: &mut Qbo, rid: &RequestId, status: StatusCode, body: Value) -> Response {
    if let Some(r) = &rid.requestid
        && !q.settings.ignore_requestid
    {
        q.replays.insert(r.clone(), (status.as_u16(), body.clone()));
    }
    (status, Json(body)).into_response()
}

/// A `requestid` longer than QBO takes (50; 36 for a batch).
fn bad_request_id(rid: &RequestId, max: usize) -> Option<Response> {
    let r = rid.requestid.as_ref()?;
    (r.chars().count() > max).then(|| {
        Fault::validation(
            "4000",
            "Invalid requestid",
            &format!("requestid is at most {max} characters"),
        )
        .response()
    })
}

/// QBO's 401 uses lowercase keys.
fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            "www-authenticate",
            "Bearer realm=\"Intuit\", error=\"invalid_token\"",
        )],
        Json(json!({"fault": {"error": [{
            "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
            "detail": "Token expired or invalid",
            "code": "3200",
        }], "type": "AUTHENTICATION"}})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    refresh_token: Option<String>,
}

async fn token(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let mut q = state.lock().expect("qbo state");
    q.calls
        .push(("POST".into(), "/oauth2/v1/tokens/bearer".into()));
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if basic.as_deref() != Some(&format!("{}:{}", q.client.0, q.client.1)) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    if form.grant_type != "refresh_token"
        || form.refresh_token.as_deref() != Some(q.refresh_token.as_str())
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    q.refreshes += 1;
    let rotate = match q.settings.refresh_rotation {
        Rotation::EveryRefresh => true,
        Rotation::Daily => q
            .refresh_issued
            .is_none_or(|t| t.elapsed() >= Duration::from_hours(24)),
    };
    if rotate {
        // The old refresh token dies with the rotation.
        q.refresh_token = format!("rt-{}", q.refreshes);
        q.refresh_issued = Some(Instant::now());
    }
    let access = format!("at-{}", q.refreshes);
    q.access_tokens.push(access.clone());
    Json(json!({
        "token_type": "bearer",
        "access_token": access,
        "refresh_token": q.refresh_token,
        "expires_in": 3600,
        "x_refresh_token_expires_in": 8_726_400,
    }))
    .into_response()
}

/// Checks the bearer token and the realm; `Err` is the response to give.
fn authorize(q: &Qbo, headers: &HeaderMap, realm: &str) -> Result<(), Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| q.access_tokens.iter().any(|a| a == t)) {
        return Err(unauthorized());
    }
    if realm != q.realm_id {
        return Err(Fault {
            status: StatusCode::FORBIDDEN,
            kind: "AuthorizationFault",
            code: "120",
            message: "Authorization Failure".into(),
            detail: "unknown realm".into(),
        }
        .response());
    }
    Ok(())
}

#[derive(Deserialize)]
struct QueryParams {
    query: String,
}

async fn query(
    State(state): State<Shared>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    Query(params): Query<QueryParams>,
) -> Response {
    answer_query(&state, &realm, &headers, &params.query)
}

/// The same query as the SQL text of the body (`Content-Type: application/text`).
async fn query_by_post(
    State(state): State<Shared>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/text") {
        return Fault {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            kind: "ValidationFault",
            code: "4000",
            message: "Unsupported content type".into(),
            detail: format!("a query is posted as application/text, not {content_type:?}"),
        }
        .response();
    }
    answer_query(&state, &realm, &headers, &body)
}

fn answer_query(state: &Shared, realm: &str, headers: &HeaderMap, text: &str) -> Response {
    let mut q = state.lock().expect("qbo state");
    q.calls.push(("GET".into(), "/query".into()));
    if let Err(r) = authorize(&q, headers, realm) {
        return r;
    }
    if q.settings.updated_while_read && text.contains("MetaData.LastUpdatedTime") {
        update_oldest(&mut q, text);
    }
    match run_query(&q, text) {
        Ok(response) => {
            Json(json!({"QueryResponse": response, "time": now_text()})).into_response()
        }
        Err(fault) => fault.response(),
    }
}

/// The `QueryResponse` object, or the fault.
fn run_query(q: &Qbo, text: &str) -> Result<Value, Fault> {
    let parse_error = |detail: String| Fault::validation("4000", "Error parsing query", &detail);
    if let Some(poison) = &q.settings.fail_queries_matching
        && text.contains(poison.as_str())
    {
        return Err(parse_error(format!(
            "QueryParserError: injected for {poison:?}"
        )));
    }
    let parsed = parse_query(text).map_err(parse_error)?;
    let invoices;
    let rows: &[Value] = match parsed.entity.as_str() {
        "Invoice" => {
            invoices = q.visible_invoices();
            &invoices
        }
        "Customer" => &q.customers,
        "Item" => &q.items,
        other => {
            return Err(Fault::validation(
                "4001",
                "Invalid query",
                &format!("unknown entity {other}"),
            ));
        }
    };
    let mut matching: Vec<Value> = rows.iter().filter(|r| parsed.matches(r)).cloned().collect();
    if parsed.count {
        return Ok(json!({"totalCount": matching.len()}));
    }
    // Sorted as asked, stably; without ORDERBY in the order the entities were made
    // (QBO documents no default order: a job must not rely on one).
    if let Some((field, descending)) = &parsed.order {
        matching.sort_by(|a, b| {
            let o = compare(value_at(a, field), value_at(b, field));
            if *descending { o.reverse() } else { o }
        });
    }
    let page: Vec<Value> = matching
        .into_iter()
        .skip(parsed.start.saturating_sub(1))
        .take(parsed.max)
        .map(|row| parsed.project(row))
        .collect();
    let mut response = json!({"startPosition": parsed.start, "maxResults": page.len()});
    // QBO leaves the entity key out when nothing matches.
    if !page.is_empty() {
        response[parsed.entity.as_str()] = Value::Array(page);
    }
    Ok(response)
}

/// The `updated_while_read` switch: the invoice matching `text` updated longest ago is
/// updated now.
fn update_oldest(q: &mut Qbo, text: &str) {
    let Ok(parsed) = parse_query(text) else {
        return;
    };
    let oldest = q
        .invoices
        .iter()
        .enumerate()
        .filter(|(_, i)| parsed.matches(i))
        .min_by(|(_, a), (_, b)| {
            compare(
                value_at(a, "MetaData.LastUpdatedTime"),
                value_at(b, "MetaData.LastUpdatedTime"),
            )
        })
        .map(|(at, _)| at);
    if let Some(at) = oldest {
        let inv = &mut q.invoices[at];
        let sync = inv["SyncToken"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        inv["SyncToken"] = json!(sync.to_string());
        inv["MetaData"]["LastUpdatedTime"] = json!(stamp());
        // Stored last, as a store ordered by update keeps it: a read in the stored
        // order (no ORDERBY) sees the rows after it slide up.
        let moved = q.invoices.remove(at);
        q.invoices.push(moved);
    }
}

/// `{"BatchItemRequest":[{"bId","Query"} | {"bId","operation":"create","Invoice"}]}`,
/// 1 to 30 items, `bId` at most 10 characters; each item succeeds or faults on its own.
async fn batch(
    State(state): State<Shared>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    Query(rid): Query<RequestId>,
    Json(body): Json<Value>,
) -> Response {
    let mut q = state.lock().expect("qbo state");
    q.calls.push(("POST".into(), "/batch".into()));
    if let Err(r) = authorize(&q, &headers, &realm) {
        return r;
    }
    if let Some(r) = bad_request_id(&rid, 36) {
        return r;
    }
    if let Some(r) = replayed(&q, &rid) {
        return r;
    }
    let items = body["BatchItemRequest"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if items.is_empty() || items.len() > 30 {
        let fault = Fault::validation("4002", "Invalid batch", "a batch holds 1 to 30 items");
        return remember(&mut q, &rid, fault.status, fault.body());
    }
    if let Some(long) = items.iter().find(|i| {
        i["bId"]
            .as_str()
            .is_none_or(|b| b.is_empty() || b.len() > 10)
    }) {
        let fault = Fault::validation(
            "4002",
            "Invalid batch",
            &format!("bId must be 1 to 10 characters: {}", long["bId"]),
        );
        return remember(&mut q, &rid, fault.status, fault.body());
    }
    let allow_duplicates = rid.allows_duplicates();
    let mut answers = Vec::new();
    for item in items {
        let bid = item["bId"].clone();
        if let Some(text) = item["Query"].as_str() {
            answers.push(match run_query(&q, text) {
                Ok(r) => json!({"bId": bid, "QueryResponse": r}),
                Err(f) => json!({"bId": bid, "Fault": f.object()}),
            });
        } else if item["operation"] == "create" && item["Invoice"].is_object() {
            let doc = item["Invoice"]["DocNumber"].as_str().unwrap_or_default();
            if q.settings.system_fault_docs.iter().any(|d| d == doc) {
                if q.settings.system_fault_commits {
                    let _ = new_invoice(&mut q, item["Invoice"].clone(), allow_duplicates);
                }
                let f = Fault {
                    status: StatusCode::OK,
                    kind: "SystemFault",
                    code: "10000",
                    message: "An application error has occurred while processing your request"
                        .into(),
                    detail: "System Failure Error: injected".into(),
                };
                answers.push(json!({"bId": bid, "Fault": f.object()}));
                continue;
            }
            answers.push(
                match new_invoice(&mut q, item["Invoice"].clone(), allow_duplicates) {
                    Ok(inv) => json!({"bId": bid, "Invoice": inv}),
                    Err(f) => json!({"bId": bid, "Fault": f.object()}),
                },
            );
        } else {
            let f = Fault::validation("4003", "Unsupported batch item", "unsupported batch item");
            answers.push(json!({"bId": bid, "Fault": f.object()}));
        }
    }
    let response = json!({"BatchItemResponse": answers, "time": now_text()});
    remember(&mut q, &rid, StatusCode::OK, response)
}

/// A small, valid-looking PDF naming the invoice.
async fn invoice_pdf(
    State(state): State<Shared>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut q = state.lock().expect("qbo state");
    q.calls.push(("GET".into(), "/invoice/pdf".into()));
    if let Err(r) = authorize(&q, &headers, &realm) {
        return r;
    }
    match q.invoices.iter().find(|i| i["Id"] == id.as_str()) {
        Some(inv) => (
            [("content-type", "application/pdf")],
            format!(
                "%PDF-1.4\n% invoice {} for {}\n%%EOF\n",
                inv["DocNumber"].as_str().unwrap_or_default(),
                inv["CustomerRef"]["value"].as_str().unwrap_or_default()
            ),
        )
            .into_response(),
        None => not_found("Invoice").response(),
    }
}

#[derive(Debug)]
struct ParsedQuery {
    entity: String,
    count: bool,
    /// The fields asked for; none for `*` alone. `*, Sku` asks for every field and
    /// `Sku` (Intuit, "Data queries": some fields come only when named).
    fields: Vec<String>,
    /// All of which must hold.
    conditions: Vec<Condition>,
    /// `ORDERBY field [ASC|DESC]`: the field, and whether descending.
    order: Option<(String, bool)>,
    start: usize,
    max: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    field: String,
    op: Op,
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    In,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
}

/// The value at a dotted path (`MetaData.LastUpdatedTime`).
fn value_at<'a>(row: &'a Value, field: &str) -> &'a Value {
    field.split('.').fold(row, |v, k| &v[k])
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Times compare as instants, numbers as numbers, the rest as text; a missing value
/// first.
fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (text_of(a), text_of(b)) {
        (Some(a), Some(b)) => compare_text(&a, &b),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

fn compare_text(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<jiff::Timestamp>(), b.parse::<jiff::Timestamp>()) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(a), Ok(b)) => a.total_cmp(&b),
            _ => a.cmp(b),
        },
    }
}

/// `LIKE` with `%` as the only wildcard (Intuit, "Data queries"), case-insensitive.
fn like(text: &str, pattern: &str) -> bool {
    crate::wildcard(&pattern.to_lowercase(), &text.to_lowercase(), '%')
}

impl Condition {
    fn holds(&self, row: &Value) -> bool {
        let Some(text) = text_of(value_at(row, &self.field)) else {
            return false;
        };
        if self.op == Op::In {
            return self.values.contains(&text);
        }
        let Some(bound) = self.values.first() else {
            return false;
        };
        if self.op == Op::Like {
            return like(&text, bound);
        }
        let order = compare_text(&text, bound);
        match self.op {
            Op::Gt => order.is_gt(),
            Op::Ge => order.is_ge(),
            Op::Lt => order.is_lt(),
            Op::Le => order.is_le(),
            Op::In | Op::Like => unreachable!("handled above"),
        }
    }
}

impl ParsedQuery {
    fn matches(&self, row: &Value) -> bool {
        self.conditions.iter().all(|c| c.holds(row))
    }

    /// The row with only the fields asked for (all of them for `*`).
    fn project(&self, row: Value) -> Value {
        if self.fields.is_empty() || self.fields.iter().any(|f| f == "*") {
            return row;
        }
        let mut out = serde_json::Map::new();
        for field in &self.fields {
            let top = field.split('.').next().unwrap_or(field);
            if let Some(v) = row.get(top) {
                out.insert(top.to_owned(), v.clone());
            }
        }
        Value::Object(out)
    }
}

/// `SELECT * | COUNT(*) | field, ... FROM Entity [WHERE cond AND cond ...]
/// [ORDERBY field [ASC|DESC]] [STARTPOSITION n] [MAXRESULTS n]`, conditions with `=`,
/// `IN`, `<`, `>`, `<=`, `>=` and `LIKE` (Intuit, "Data queries"; QBO has no `OR`).
fn parse_query(text: &str) -> Result<ParsedQuery, String> {
    let tokens = tokenize(text);
    let upper = |i: usize| tokens.get(i).map(|t| t.to_ascii_uppercase());
    if upper(0).as_deref() != Some("SELECT") {
        return Err("expected SELECT".into());
    }
    let from = (1..tokens.len())
        .find(|i| upper(*i).as_deref() == Some("FROM"))
        .ok_or("expected FROM")?;
    let projection = tokens[1..from].join(" ");
    let fields: Vec<String> = projection
        .split(',')
        .map(|f| f.trim().to_owned())
        .filter(|f| !f.is_empty())
        .collect();
    if fields.is_empty() {
        return Err("expected * or fields after SELECT".into());
    }
    let count = fields.len() == 1 && fields[0].eq_ignore_ascii_case("count(*)");
    let entity = tokens.get(from + 1).cloned().ok_or("expected an entity")?;
    let mut q = ParsedQuery {
        entity,
        count,
        fields: if count { Vec::new() } else { fields },
        conditions: Vec::new(),
        order: None,
        start: 1,
        max: 100,
    };
    let mut i = from + 2;
    while i < tokens.len() {
        match upper(i).as_deref() {
            Some("WHERE" | "AND") => {
                let field = tokens.get(i + 1).cloned().ok_or("expected a field")?;
                let op = upper(i + 2).ok_or("expected an operator")?;
                let operand = tokens.get(i + 3).ok_or("expected a value")?;
                let (op, values) = match op.as_str() {
                    "=" => (Op::In, vec![unquote(operand)]),
                    "IN" => {
                        let inner = operand.trim_start_matches('(').trim_end_matches(')');
                        (Op::In, split_list(inner))
                    }
                    ">" => (Op::Gt, vec![unquote(operand)]),
                    ">=" => (Op::Ge, vec![unquote(operand)]),
                    "<" => (Op::Lt, vec![unquote(operand)]),
                    "<=" => (Op::Le, vec![unquote(operand)]),
                    "LIKE" => (Op::Like, vec![unquote(operand)]),
                    other => return Err(format!("operator {other} is not supported")),
                };
                q.conditions.push(Condition { field, op, values });
                i += 4;
            }
            Some("ORDERBY") => {
                let field = tokens.get(i + 1).ok_or("expected a field after ORDERBY")?;
                let field = field.trim_end_matches(',').to_owned();
                i += 2;
                let descending = match upper(i).as_deref() {
                    Some("DESC") => {
                        i += 1;
                        true
                    }
                    Some("ASC") => {
                        i += 1;
                        false
                    }
                    _ => false,
                };
                q.order = Some((field, descending));
            }
            Some("STARTPOSITION") => {
                q.start = tokens
                    .get(i + 1)
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n >= 1)
                    .ok_or("STARTPOSITION starts at 1")?;
                i += 2;
            }
            Some("MAXRESULTS") => {
                q.max = tokens
                    .get(i + 1)
                    .and_then(|n| n.parse().ok())
                    .ok_or("bad MAXRESULTS")?;
                if q.max > 1000 {
                    return Err("MAXRESULTS is at most 1000".into());
                }
                i += 2;
            }
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    Ok(q)
}

/// Words, quoted strings and parenthesised lists as single tokens.
fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut depth) = (false, 0);
    for c in text.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                cur.push(c);
            }
            '(' if !quoted => {
                depth += 1;
                cur.push(c);
            }
            ')' if !quoted => {
                depth -= 1;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted && depth == 0 => {
                if !cur.is_empty() {
                    tokens.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    tokens
}

fn unquote(v: &str) -> String {
    v.trim().trim_matches('\'').replace("\\'", "'")
}

fn split_list(inner: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in inner.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(unquote(&std::mem::take(&mut cur))),
            c => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(unquote(&cur));
    }
    out
}

#[derive(Deserialize)]
struct RequestId {
    requestid: Option<String>,
    include: Option<String>,
}

impl RequestId {
    /// `include=allowduplicatedocnum` lets this request reuse a DocNumber.
    fn allows_duplicates(&self) -> bool {
        self.include
            .as_deref()
            .is_some_and(|i| i.split(',').any(|x| x.trim() == "allowduplicatedocnum"))
    }
}

fn cents(v: &Value) -> Option<i64> {
    #[allow(clippy::cast_possible_truncation)]
    v.as_f64().map(|f| (f * 100.0).round() as i64)
}

async fn create_invoice(
    State(state): State<Shared>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    Query(rid): Query<RequestId>,
    Json(body): Json<Value>,
) -> Response {
    let mut q = state.lock().expect("qbo state");
    q.calls.push(("POST".into(), "/invoice".into()));
    if let Err(r) = authorize(&q, &headers, &realm) {
        return r;
    }
    if let Some(r) = bad_request_id(&rid, 50) {
        return r;
    }
    if let Some(r) = replayed(&q, &rid) {
        return r;
    }
    let (status, response) = match new_invoice(&mut q, body, rid.allows_duplicates()) {
        Ok(invoice) => (
            StatusCode::OK,
            json!({"Invoice": invoice, "time": now_text()}),
        ),
        Err(fault) => (fault.status, fault.body()),
    };
    remember(&mut q, &rid, status, response)
}

fn new_invoice(q: &mut Qbo, mut body: Value, allow_duplicate: bool) -> Result<Value, Fault> {
    let customer = body["CustomerRef"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !q
        .customers
        .iter()
        .any(|c| c["Id"] == customer.as_str() && c["Active"] == true)
    {
        return Err(not_found("Customer"));
    }
    if body["EmailStatus"] == "NeedToSend"
        && body["BillEmail"]["Address"]
            .as_str()
            .is_none_or(|a| a.trim().is_empty())
    {
        return Err(Fault::validation(
            "6000",
            "A business validation error has occurred while processing your request",
            "Business Validation Error: an invoice set to be emailed (EmailStatus NeedToSend) needs a BillEmail address.",
        ));
    }
    if let (Some(closed), Some(date)) = (&q.settings.books_closed_through, body["TxnDate"].as_str())
        && date <= closed.as_str()
    {
        return Err(Fault::validation(
            "6000",
            "A business validation error has occurred while processing your request",
            &format!(
                "Business Validation Error: the books are closed through {closed}; TxnDate {date} is in the closed period."
            ),
        ));
    }
    if let Some(doc) = body["DocNumber"].as_str()
        && !(allow_duplicate || q.settings.duplicate_doc_numbers)
        && q.invoices.iter().any(|i| i["DocNumber"] == doc)
    {
        // QBO's code for it is 6140 (Intuit error codes; QuickBooks community answers).
        return Err(Fault::validation(
            "6140",
            "Duplicate Document Number Error",
            &format!(
                "Duplicate Document Number Error : You must specify a different number. This number has already been used. DocNumber={doc}"
            ),
        ));
    }
    let mut total = 0;
    for line in body["Line"].as_array().cloned().unwrap_or_default() {
        let detail = &line["SalesItemLineDetail"];
        let (qty, price, amount) = (
            detail["Qty"].as_f64(),
            detail["UnitPrice"].as_f64(),
            cents(&line["Amount"]),
        );
        if let (Some(qty), Some(price), Some(amount)) = (qty, price, amount) {
            #[allow(clippy::cast_possible_truncation)]
            let expected = (qty * price * 100.0).round() as i64;
            if (expected - amount).abs() > 1 {
                return Err(Fault::validation(
                    "6070",
                    "Amount is not equal to UnitPrice * Qty",
                    &format!("Amount {amount} cents, expected {expected}"),
                ));
            }
        }
        total += amount.unwrap_or(0);
    }
    let id = q.id();
    #[allow(clippy::cast_precision_loss)]
    let total = total as f64 / 100.0;
    let now = stamp();
    body["Id"] = json!(id.clone());
    body["SyncToken"] = json!("0");
    body["TotalAmt"] = json!(total);
    body["Balance"] = json!(total);
    body["MetaData"] = json!({"CreateTime": now, "LastUpdatedTime": now});
    if body["TxnDate"].is_null() {
        body["TxnDate"] = json!(jiff::Zoned::now().date().to_string());
    }
    if body["DueDate"].is_null() {
        let days = q.settings.default_terms_days.unwrap_or(30);
        let due = body["TxnDate"]
            .as_str()
            .and_then(|d| d.parse::<jiff::civil::Date>().ok())
            .and_then(|d| d.checked_add(jiff::Span::new().days(i64::from(days))).ok());
        if let Some(due) = due {
            body["DueDate"] = json!(due.to_string());
        }
    }
    if body["CurrencyRef"].is_null() {
        let home = q
            .settings
            .home_currency
            .clone()
            .unwrap_or_else(|| "USD".into());
        body["CurrencyRef"] = json!({"value": home});
    }
    if body["EmailStatus"].is_null() {
        body["EmailStatus"] = json!("NotSet");
    }
    q.invoices.push(body.clone());
    q.writes.push((Instant::now(), id, None));
    Ok(body)
}

async fn read_invoice(
    State(state): State<Shared>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut q = state.lock().expect("qbo state");
    q.calls.push(("GET".into(), "/invoice".into()));
    if let Err(r) = authorize(&q, &headers, &realm) {
        return r;
    }
    match q.visible_invoices().iter().find(|i| i["Id"] == id.as_str()) {
        Some(inv) => Json(json!({"Invoice": inv, "time": now_text()})).into_response(),
        None => not_found("Invoice").response(),
    }
}

#[derive(Deserialize)]
struct SendTo {
    #[serde(rename = "sendTo")]
    send_to: Option<String>,
}

async fn send_invoice(
    State(state): State<Shared>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(to): Query<SendTo>,
) -> Response {
    let mut q = state.lock().expect("qbo state");
    q.calls.push(("POST".into(), "/invoice/send".into()));
    if let Err(r) = authorize(&q, &headers, &realm) {
        return r;
    }
    let Some(inv) = q.invoices.iter_mut().find(|i| i["Id"] == id.as_str()) else {
        return not_found("Invoice").response();
    };
    if let Some(address) = to.send_to {
        inv["BillEmail"] = json!({"Address": address});
    }
    if inv["BillEmail"]["Address"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return Fault::validation(
            "6010",
            "Invalid email address",
            "The invoice has no BillEmail",
        )
        .response();
    }
    let before = inv.clone();
    let sync = inv["SyncToken"]
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let now = stamp();
    inv["SyncToken"] = json!(sync.to_string());
    inv["EmailStatus"] = json!("EmailSent");
    inv["DeliveryInfo"] = json!({"DeliveryType": "Email", "DeliveryTime": now});
    inv["MetaData"]["LastUpdatedTime"] = json!(now);
    let sent = inv.clone();
    q.writes.push((Instant::now(), id, Some(before)));
    Json(json!({"Invoice": sent, "time": now_text()})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_lists_quotes_and_paging() {
        let q = parse_query("select * from Invoice where DocNumber in ('10001-202610', '10002-202610') and EmailStatus = 'NeedToSend' STARTPOSITION 101 MAXRESULTS 100").unwrap();
        assert_eq!(q.entity, "Invoice");
        assert_eq!(
            q.conditions[0].values,
            ["10001-202610".to_owned(), "10002-202610".to_owned()]
        );
        assert_eq!(q.conditions[1].values, ["NeedToSend"]);
        assert_eq!((q.start, q.max), (101, 100));
        let q = parse_query("SELECT * FROM Customer WHERE DisplayName = '10001 - AICPA'").unwrap();
        assert_eq!(q.conditions[0].values, ["10001 - AICPA"]);
        assert!(parse_query("select * from Invoice maxresults 5000").is_err());
        assert!(parse_query("select * from Invoice where a != '3'").is_err());
        assert!(parse_query("select * from Invoice startposition 0").is_err());
        // Times compare as instants whatever their offsets.
        let q = parse_query(
            "select * from Invoice where MetaData.LastUpdatedTime > '2026-11-22T05:00:00-08:00'",
        )
        .unwrap();
        let at = |t: &str| json!({"MetaData": {"LastUpdatedTime": t}});
        assert!(q.matches(&at("2026-11-22T13:00:01Z")));
        assert!(!q.matches(&at("2026-11-22T13:00:00Z")));
    }

    fn company(docs: &[&str]) -> Qbo {
        let mut q = Qbo::new(&Seed {
            customers: vec![("10001 - A".into(), None), ("20000 - Walk-in".into(), None)],
            ..Seed::default()
        });
        for doc in docs {
            let id = q.customer_id("10001 - A").unwrap();
            q.insert_invoice(json!({"DocNumber": doc, "CustomerRef": {"value": id},
                "Line": [{"Amount": 2.5, "SalesItemLineDetail": {"Qty": 2, "UnitPrice": 1.25}}]}))
                .unwrap();
        }
        q
    }

    fn rows(q: &Qbo, text: &str) -> Vec<Value> {
        let r = run_query(q, text).unwrap();
        r["Invoice"].as_array().cloned().unwrap_or_default()
    }

    #[test]
    fn the_query_language_projects_orders_counts_and_matches_like() {
        let q = company(&["B-2", "A-10", "A-9"]);
        let docs = |rows: Vec<Value>| -> Vec<String> {
            rows.iter()
                .map(|r| r["DocNumber"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            docs(rows(&q, "SELECT * FROM Invoice ORDERBY DocNumber")),
            ["A-10", "A-9", "B-2"]
        );
        assert_eq!(
            docs(rows(&q, "SELECT * FROM Invoice ORDERBY DocNumber DESC")),
            ["B-2", "A-9", "A-10"]
        );
        assert_eq!(
            docs(rows(
                &q,
                "SELECT * FROM Invoice ORDERBY Id DESC MAXRESULTS 1"
            )),
            ["A-9"]
        );
        assert_eq!(
            docs(rows(&q, "SELECT * FROM Invoice WHERE DocNumber LIKE 'a-%'")),
            ["A-10", "A-9"]
        );
        let projected = rows(
            &q,
            "SELECT Id, DocNumber FROM Invoice WHERE DocNumber = 'B-2'",
        );
        assert_eq!(projected.len(), 1);
        let keys: Vec<&String> = projected[0].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["DocNumber", "Id"]);
        assert_eq!(
            run_query(
                &q,
                "SELECT COUNT(*) FROM Invoice WHERE DocNumber LIKE '%-1%'"
            )
            .unwrap()["totalCount"],
            1
        );
        let item = run_query(&q, "SELECT *, Sku FROM Item").unwrap();
        assert_eq!(item["Item"][0]["Name"], "Robot Minutes");
    }

    #[test]
    fn qbo_proposes_the_last_number_plus_one_and_refuses_a_duplicate_with_6140() {
        let mut q = company(&["10999-202610"]);
        assert_eq!(q.proposed_number().as_deref(), Some("10999-202611"));
        let hand = q.hand_invoice("20000 - Walk-in", 40.0).unwrap();
        assert_eq!(hand["DocNumber"], "10999-202611");
        let mut q = company(&["INV-0099"]);
        assert_eq!(q.proposed_number().as_deref(), Some("INV-0100"));
        let q2 = company(&["10001-202610-Q"]);
        assert_eq!(q2.proposed_number(), None);
        let dup = new_invoice(
            &mut q,
            json!({"DocNumber": "INV-0099", "CustomerRef": {"value": "1"}}),
            false,
        )
        .unwrap_err();
        assert_eq!(dup.code, "6140");
    }

    #[test]
    fn reads_within_the_stale_window_show_an_invoice_as_it_was() {
        let mut q = company(&["A-1"]);
        q.settings.stale_read_ms = 60_000;
        let id = q.invoices()[0]["Id"].as_str().unwrap().to_owned();
        let customer = q.customer_id("10001 - A").unwrap();
        new_invoice(
            &mut q,
            json!({"DocNumber": "A-2", "CustomerRef": {"value": customer}}),
            false,
        )
        .unwrap();
        // Made within the window: not visible yet.
        assert_eq!(rows(&q, "SELECT * FROM Invoice").len(), 1);
        assert_eq!(q.invoices().len(), 2);
        q.void_invoice(&id);
        let seen = rows(&q, "SELECT * FROM Invoice");
        assert_eq!(seen[0]["TotalAmt"], 2.5, "the void is not visible yet");
        assert_eq!(q.invoices()[0]["TotalAmt"], 0);
    }
}
