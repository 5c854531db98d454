//! A stateful stand-in for QuickBooks Online: the OAuth token endpoint (refresh tokens
//! rotate; a stale one gets `invalid_grant`), the query language subset the jobs use
//! (STARTPOSITION/MAXRESULTS, the entity key absent on no match), invoice create with
//! `requestid` replay and unique DocNumber, read, send, and QBO's Fault bodies
//! (including the lowercase 401).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use serde::Deserialize;
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

#[derive(Debug, Default)]
pub struct Qbo {
    pub realm_id: String,
    client: (String, String),
    refresh_token: String,
    refreshes: u64,
    access_tokens: Vec<String>,
    customers: Vec<Value>,
    items: Vec<Value>,
    invoices: Vec<Value>,
    /// `requestid` -> the response first given.
    replays: BTreeMap<String, (u16, Value)>,
    next_id: u64,
    /// Every call, for tests: `(method, path)`.
    pub calls: Vec<(String, String)>,
}

pub type Shared = Arc<Mutex<Qbo>>;

impl Qbo {
    pub fn new(seed: &Seed) -> Self {
        let mut q = Self {
            realm_id: seed.realm_id.clone(),
            client: (seed.client_id.clone(), seed.client_secret.clone()),
            refresh_token: seed.refresh_token.clone(),
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
            q.items.push(json!({"Id": id, "Name": name, "UnitPrice": price, "Type": "Service", "Active": true}));
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
        new_invoice(self, body).map_err(|r| r.status().as_u16())
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
        .route("/qbo/v3/company/{realm}/query", get(query))
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

fn fault(status: StatusCode, kind: &str, code: &str, message: &str, detail: &str) -> Response {
    (
        status,
        Json(json!({
            "Fault": {"Error": [{"Message": message, "Detail": detail, "code": code, "element": ""}], "type": kind},
            "time": "2026-11-22T00:00:00.000-08:00",
        })),
    )
        .into_response()
}

/// QBO's 610: the object does not exist or is inactive.
fn not_found(what: &str) -> Response {
    fault(
        StatusCode::BAD_REQUEST,
        "ValidationFault",
        "610",
        "Object Not Found",
        &format!("{what} not found"),
    )
}

/// The first answer given to this `requestid`, if it was seen before.
fn replayed(q: &Qbo, rid: &RequestId) -> Option<Response> {
    let (status, body) = q.replays.get(rid.requestid.as_ref()?)?;
    Some(
        (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
            Json(body.clone()),
        )
            .into_response(),
    )
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
    // Every refresh rotates the refresh token; the old one dies.
    q.refreshes += 1;
    q.refresh_token = format!("rt-{}", q.refreshes);
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
        return Err(fault(
            StatusCode::FORBIDDEN,
            "AuthorizationFault",
            "120",
            "Authorization Failure",
            "unknown realm",
        ));
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
    let mut q = state.lock().expect("qbo state");
    q.calls.push(("GET".into(), "/query".into()));
    if let Err(r) = authorize(&q, &headers, &realm) {
        return r;
    }
    match run_query(&q, &params.query) {
        Ok(response) => {
            Json(json!({"QueryResponse": response, "time": "2026-11-22T00:00:00.000-08:00"}))
                .into_response()
        }
        Err((code, detail)) => fault(
            StatusCode::BAD_REQUEST,
            "ValidationFault",
            code,
            "Error parsing query",
            &detail,
        ),
    }
}

/// The `QueryResponse` object, or `(code, detail)` of the fault.
fn run_query(q: &Qbo, text: &str) -> Result<Value, (&'static str, String)> {
    let parsed = parse_query(text).map_err(|e| ("4000", e))?;
    let rows: &[Value] = match parsed.entity.as_str() {
        "Invoice" => &q.invoices,
        "Customer" => &q.customers,
        "Item" => &q.items,
        other => return Err(("4001", format!("unknown entity {other}"))),
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
/// at most 30 items; each item succeeds or faults on its own.
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
    if let Some(r) = replayed(&q, &rid) {
        return r;
    }
    let items = body["BatchItemRequest"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if items.is_empty() || items.len() > 30 {
        return fault(
            StatusCode::BAD_REQUEST,
            "ValidationFault",
            "4002",
            "Invalid batch",
            "a batch holds 1 to 30 items",
        );
    }
    let mut answers = Vec::new();
    for item in items {
        let bid = item["bId"].clone();
        let item_fault = |code: &str, detail: &str| json!({"bId": bid, "Fault": {"Error": [{"Message": detail, "Detail": detail, "code": code}], "type": "ValidationFault"}});
        if let Some(text) = item["Query"].as_str() {
            answers.push(match run_query(&q, text) {
                Ok(r) => json!({"bId": bid, "QueryResponse": r}),
                Err((code, detail)) => item_fault(code, &detail),
            });
        } else if item["operation"] == "create" && item["Invoice"].is_object() {
            answers.push(match new_invoice(&mut q, item["Invoice"].clone()) {
                Ok(inv) => json!({"bId": bid, "Invoice": inv}),
                Err(_) => item_fault("6000", "the invoice was rejected"),
            });
        } else {
            answers.push(item_fault("4003", "unsupported batch item"));
        }
    }
    let response = json!({"BatchItemResponse": answers, "time": "2026-11-22T00:00:00.000-08:00"});
    if let Some(r) = rid.requestid {
        q.replays.insert(r, (200, response.clone()));
    }
    Json(response).into_response()
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
        None => not_found("Invoice"),
    }
}

#[derive(Debug)]
struct ParsedQuery {
    entity: String,
    count: bool,
    /// `(field, allowed values)`, all of which must hold.
    conditions: Vec<(String, Vec<String>)>,
    start: usize,
    max: usize,
}

impl ParsedQuery {
    fn matches(&self, row: &Value) -> bool {
        self.conditions.iter().all(|(field, values)| {
            let v = field.split('.').fold(row, |v, k| &v[k]);
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => return false,
                other => other.to_string(),
            };
            values.contains(&text)
        })
    }
}

/// `SELECT * | count(*) FROM Entity [WHERE f = 'v' AND f IN ('a','b')] [STARTPOSITION n]
/// [MAXRESULTS n]`: the subset the jobs send.
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
                match op.as_str() {
                    "=" => {
                        let v = tokens.get(i + 3).ok_or("expected a value")?;
                        q.conditions.push((field, vec![unquote(v)]));
                        i += 4;
                    }
                    "IN" => {
                        let list = tokens.get(i + 3).ok_or("expected a list")?;
                        let inner = list.trim_start_matches('(').trim_end_matches(')');
                        q.conditions.push((field, split_list(inner)));
                        i += 4;
                    }
                    other => return Err(format!("operator {other} is not supported here")),
                }
            }
            Some("STARTPOSITION") => {
                q.start = tokens
                    .get(i + 1)
                    .and_then(|n| n.parse().ok())
                    .ok_or("bad STARTPOSITION")?;
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
    if let Some(r) = replayed(&q, &rid) {
        return r;
    }
    let (status, response) = match new_invoice(&mut q, body) {
        Ok(invoice) => (
            200,
            json!({"Invoice": invoice, "time": "2026-11-22T00:00:00.000-08:00"}),
        ),
        Err(resp) => return resp,
    };
    if let Some(r) = rid.requestid {
        q.replays.insert(r, (status, response.clone()));
    }
    Json(response).into_response()
}

fn new_invoice(q: &mut Qbo, mut body: Value) -> Result<Value, Response> {
    let customer = body["CustomerRef"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !q.customers.iter().any(|c| c["Id"] == customer.as_str()) {
        return Err(not_found("Customer"));
    }
    if let Some(doc) = body["DocNumber"].as_str()
        && q.invoices.iter().any(|i| i["DocNumber"] == doc)
    {
        return Err(fault(
            StatusCode::BAD_REQUEST,
            "ValidationFault",
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
                return Err(fault(
                    StatusCode::BAD_REQUEST,
                    "ValidationFault",
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
    body["Id"] = json!(id);
    body["SyncToken"] = json!("0");
    body["TotalAmt"] = json!(total);
    body["Balance"] = json!(total);
    body["MetaData"] = json!({"CreateTime": "2026-11-22T00:00:00-08:00"});
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
        Some(inv) => Json(json!({"Invoice": inv})).into_response(),
        None => not_found("Invoice"),
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
        return not_found("Invoice");
    };
    if let Some(address) = to.send_to {
        inv["BillEmail"] = json!({"Address": address});
    }
    if inv["BillEmail"]["Address"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return fault(
            StatusCode::BAD_REQUEST,
            "ValidationFault",
            "6010",
            "Invalid email address",
            "The invoice has no BillEmail",
        );
    }
    let sync = inv["SyncToken"]
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    inv["SyncToken"] = json!(sync.to_string());
    inv["EmailStatus"] = json!("EmailSent");
    inv["DeliveryInfo"] =
        json!({"DeliveryType": "Email", "DeliveryTime": "2026-11-22T05:00:00-08:00"});
    Json(json!({"Invoice": inv.clone()})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_lists_quotes_and_paging() {
        let q = parse_query("select * from Invoice where DocNumber in ('10001-202610', '10002-202610') and EmailStatus = 'NeedToSend' STARTPOSITION 101 MAXRESULTS 100").unwrap();
        assert_eq!(q.entity, "Invoice");
        assert_eq!(
            q.conditions[0],
            (
                "DocNumber".into(),
                vec!["10001-202610".into(), "10002-202610".into()]
            )
        );
        assert_eq!(
            q.conditions[1],
            ("EmailStatus".into(), vec!["NeedToSend".into()])
        );
        assert_eq!((q.start, q.max), (101, 100));
        let q = parse_query("SELECT * FROM Customer WHERE DisplayName = '10001 - AICPA'").unwrap();
        assert_eq!(q.conditions[0].1, ["10001 - AICPA"]);
        assert!(parse_query("select * from Invoice maxresults 5000").is_err());
        assert!(parse_query("select * from Invoice where a < 3").is_err());
    }
}
