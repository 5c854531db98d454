//! A stand-in for Microsoft Graph as the send job uses it: the Entra ID token endpoint
//! (client credentials), sendMail (202 with an empty body; the message is kept), the
//! SharePoint site lookup and small-file upload, and throttling with `Retry-After`.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Default)]
pub struct Graph {
    tenant: String,
    client: (String, String),
    tokens: Vec<String>,
    /// `(sender, message)` for every accepted sendMail.
    pub mails: Vec<(String, Value)>,
    /// `(path in the drive, bytes)` for every upload.
    pub files: Vec<(String, Vec<u8>)>,
    /// The next this many sendMail calls get 429 with `Retry-After: 1`.
    pub throttle_next: u32,
    pub settings: Settings,
}

/// The tenant as the app sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The tenant's mailboxes; sendMail as anyone else is refused with 404
    /// ErrorInvalidUser, as Graph refuses a user it does not know. `None` (the
    /// default): every address is a mailbox, for tests about something else.
    pub mailboxes: Option<Vec<String>>,
    /// Whether the app holds User.ReadBasic.All (or User.Read.All), which
    /// `GET /users/{id}` needs as an application permission (Microsoft Graph, "Get
    /// user", permissions); without it Graph answers 403 Authorization_RequestDenied.
    pub read_users: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mailboxes: None,
            read_users: true,
        }
    }
}

impl Settings {
    fn has_mailbox(&self, user: &str) -> bool {
        self.mailboxes
            .as_ref()
            .is_none_or(|m| m.iter().any(|a| a.eq_ignore_ascii_case(user)))
    }
}

pub type Shared = Arc<Mutex<Graph>>;

impl Graph {
    pub fn new(tenant: &str, client_id: &str, client_secret: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            client: (client_id.to_owned(), client_secret.to_owned()),
            ..Self::default()
        }
    }
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/login/{tenant}/oauth2/v2.0/token", post(token))
        .route("/graph/v1.0/users/{user}/sendMail", post(send_mail))
        .route("/graph/v1.0/users/{user}", get(user))
        // Site references hold slashes (`HOST:/sites/PATH`), so one wildcard route
        // serves the lookup (GET) and the upload (PUT `.../drive/root:/PATH:/content`).
        .route("/graph/v1.0/sites/{*rest}", get(site).put(upload))
        // Bodies past Graph's limit get Graph's answer, not the framework's.
        .layer(axum::extract::DefaultBodyLimit::max(2 * REQUEST_LIMIT))
        .with_state(state)
}

/// Graph takes requests of at most 4 MB, attachments included: a larger sendMail is
/// refused with 413 "The maximum request length supported is 4MB." (a Microsoft
/// answer on Microsoft Q&A, question 1824204; python-o365 issue 472 shows the message;
/// the error code is unverified). Files from 3 MB go through an upload session.
pub const REQUEST_LIMIT: usize = 4 * 1024 * 1024;

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message, "innerError": {"request-id": "fake"}}}))).into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    client_id: String,
    client_secret: String,
    scope: String,
    grant_type: String,
}

async fn token(
    State(state): State<Shared>,
    Path(tenant): Path<String>,
    Form(form): Form<TokenForm>,
) -> Response {
    let mut g = state.lock().expect("graph state");
    if tenant != g.tenant || form.client_id != g.client.0 || form.client_secret != g.client.1 {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."})),
        )
            .into_response();
    }
    if form.grant_type != "client_credentials"
        || form.scope != "https://graph.microsoft.com/.default"
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_scope", "error_description": "AADSTS70011: The provided scope is not valid."})),
        )
            .into_response();
    }
    let token = format!("graph-{}", g.tokens.len() + 1);
    g.tokens.push(token.clone());
    Json(json!({"token_type": "Bearer", "expires_in": 3599, "access_token": token})).into_response()
}

/// Graph's answer to a request without a valid token.
fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        "Access token is empty or invalid.",
    )
}

fn authorized(g: &Graph, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| g.tokens.iter().any(|k| k == t))
}

async fn send_mail(
    State(state): State<Shared>,
    Path(user): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let mut g = state.lock().expect("graph state");
    if !authorized(&g, &headers) {
        return unauthorized();
    }
    if raw.len() > REQUEST_LIMIT {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The maximum request length supported is 4MB.",
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Unable to read JSON request payload.",
        );
    };
    if g.throttle_next > 0 {
        g.throttle_next -= 1;
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "ApplicationThrottled",
            "Too many requests.",
        );
        r.headers_mut()
            .insert("retry-after", "1".parse().expect("header"));
        return r;
    }
    if !g.settings.has_mailbox(&user) {
        // Graph's answer for a user the tenant does not have (public reports of
        // sendMail as an unknown address; the code is ErrorInvalidUser).
        return error(
            StatusCode::NOT_FOUND,
            "ErrorInvalidUser",
            &format!("The requested user '{user}' is invalid."),
        );
    }
    if body["message"]["toRecipients"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRecipients",
            "At least one recipient is required.",
        );
    }
    g.mails.push((user, body["message"].clone()));
    StatusCode::ACCEPTED.into_response()
}

/// `GET /users/{id or userPrincipalName}`: 403 without a user-read permission, 404
/// for an unknown user (Request_ResourceNotFound), else the user.
async fn user(
    State(state): State<Shared>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    let g = state.lock().expect("graph state");
    if !authorized(&g, &headers) {
        return unauthorized();
    }
    if !g.settings.read_users {
        return error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        );
    }
    if !g.settings.has_mailbox(&user) {
        return error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{user}' does not exist or one of its queried reference-property objects are not present."
            ),
        );
    }
    Json(json!({"id": format!("user-{}", user.to_ascii_lowercase()), "mail": user, "userPrincipalName": user})).into_response()
}

/// `sites/{hostname}:/{site-path}` (or a plain id): the site, with a stable id.
async fn site(
    State(state): State<Shared>,
    Path(site): Path<String>,
    headers: HeaderMap,
) -> Response {
    let g = state.lock().expect("graph state");
    if !authorized(&g, &headers) {
        return unauthorized();
    }
    let host = site.split(':').next().unwrap_or_default();
    Json(json!({"id": format!("{host},site-1,web-1"), "name": "Billing", "webUrl": format!("https://{host}/sites/billing")})).into_response()
}

async fn upload(
    State(state): State<Shared>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut g = state.lock().expect("graph state");
    if !authorized(&g, &headers) {
        return unauthorized();
    }
    let Some(path) = rest
        .split_once("/drive/root:/")
        .and_then(|(_, p)| p.strip_suffix(":/content"))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "expected root:/PATH:/content",
        );
    };
    if body.len() > 4 * 1024 * 1024 {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "requestTooLarge",
            "use an upload session above 4 MB",
        );
    }
    g.files.push((path.to_owned(), body.to_vec()));
    (
        StatusCode::CREATED,
        Json(json!({"name": path.rsplit('/').next(), "size": body.len()})),
    )
        .into_response()
}
