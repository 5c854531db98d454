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

    /// Adds an invoice as a create call would (for tests and the demo); `Err` is the
    /// fault's HTTP status.
    pub fn insert_invoice(&mut self, body: Value) -> Result<Value, u16> {
        new_invoice(self, body, false).map_err(|f| f.status.as_u16())
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
    let rows: &[Value] = match parsed.entity.as_str() {
        "Invoice" => &q.invoices,
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
    let matching: Vec<Value> = rows.iter().filter(|r| parsed.matches(r)).cloned().collect();
    if parsed.count {
        return Ok(json!({"totalCount": matching.len()}));
    }
    let page: Vec<Value> = matching
        .into_iter()
        .skip(parsed.start.saturating_sub(1))
        .take(parsed.max)
        .collect();
    let mut response = json!({"startPosition": parsed.start, "maxResults": page.len()});
    // QBO leaves the entity key out when nothing matches.
    if !page.is_empty() {
        response[parsed.entity.as_str()] = Value::Array(page);
    }
    Ok(response)
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
    /// All of which must hold.
    conditions: Vec<Condition>,
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
}

impl Condition {
    fn holds(&self, row: &Value) -> bool {
        let v = self.field.split('.').fold(row, |v, k| &v[k]);
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Null => return false,
            other => other.to_string(),
        };
        if self.op == Op::In {
            return self.values.contains(&text);
        }
        let Some(bound) = self.values.first() else {
            return false;
        };
        // Times compare as instants, numbers as numbers, the rest as text.
        let order = match (
            text.parse::<jiff::Timestamp>(),
            bound.parse::<jiff::Timestamp>(),
        ) {
            (Ok(a), Ok(b)) => a.cmp(&b),
            _ => match (text.parse::<f64>(), bound.parse::<f64>()) {
                (Ok(a), Ok(b)) => a.total_cmp(&b),
                _ => text.as_str().cmp(bound.as_str()),
            },
        };
        match self.op {
            Op::Gt => order.is_gt(),
            Op::Ge => order.is_ge(),
            Op::Lt => order.is_lt(),
            Op::Le => order.is_le(),
            Op::In => unreachable!("handled above"),
        }
    }
}

impl ParsedQuery {
    fn matches(&self, row: &Value) -> bool {
        self.conditions.iter().all(|c| c.holds(row))
    }
}

/// `SELECT * | count(*) FROM Entity [WHERE f = 'v' AND f IN ('a','b') AND f > 'v']
/// [STARTPOSITION n] [MAXRESULTS n]`: the subset the jobs send (QBO has no `OR`).
fn parse_query(text: &str) -> Result<ParsedQuery, String> {
    let tokens = tokenize(text);
    let upper = |i: usize| tokens.get(i).map(|t| t.to_ascii_uppercase());
    if upper(0).as_deref() != Some("SELECT") {
        return Err("expected SELECT".into());
    }
    let count = tokens
        .get(1)
        .is_some_and(|t| t.eq_ignore_ascii_case("count(*)"));
    if upper(2).as_deref() != Some("FROM") {
        return Err("expected FROM".into());
    }
    let entity = tokens.get(3).cloned().ok_or("expected an entity")?;
    let mut q = ParsedQuery {
        entity,
        count,
        conditions: Vec::new(),
        start: 1,
        max: 100,
    };
    let mut i = 4;
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
                    other => return Err(format!("operator {other} is not supported")),
                };
                q.conditions.push(Condition { field, op, values });
                i += 4;
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
            Some("ORDERBY") => i += 2,
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
        return Err(Fault::validation(
            "6210",
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
    body["Id"] = json!(id);
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
    match q.invoices.iter().find(|i| i["Id"] == id.as_str()) {
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
    Json(json!({"Invoice": inv.clone(), "time": now_text()})).into_response()
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
        assert!(parse_query("select * from Invoice where a LIKE '3%'").is_err());
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
}
