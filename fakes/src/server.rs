//! One HTTP server on a free loopback port serving the SaaS stand-ins (QuickBooks Online,
//! Control Room, ClickUp and Microsoft Graph) and `/_fakes/...` inspection endpoints for tests and the demo.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::clickup::{self, ClickUp};
use crate::control::{self, Control, Fault, Limits};
use crate::control_room::{self, ControlRoom, Workspace};
use crate::graph::{self, Graph};
use crate::qbo::{self, Qbo};

/// What every fake holds at start.
#[derive(Debug, Clone)]
pub struct Seed {
    pub qbo: qbo::Seed,
    pub workspaces: Vec<Workspace>,
    /// ClickUp: `(team id, personal token, task ids)`.
    pub clickup: (String, String, Vec<String>),
    /// Graph: `(tenant, client id, client secret)`.
    pub graph: (String, String, String),
    /// Per service (see [`control::SERVICES`]); QBO's documented ones by default.
    pub limits: BTreeMap<String, Limits>,
    /// Company settings and adversarial modes; the documented behaviour by default.
    pub settings: Settings,
}

/// Every fake's switches, as `/_fakes/settings` reads and writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub qbo: qbo::Settings,
    pub control_room: control_room::Settings,
    pub graph: graph::Settings,
}

/// A `POST /_fakes/settings` body: each service named replaces its settings whole.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsChange {
    qbo: Option<qbo::Settings>,
    control_room: Option<control_room::Settings>,
    graph: Option<graph::Settings>,
}

/// The running server; stopped when dropped.
#[derive(Debug)]
pub struct Fakes {
    addr: SocketAddr,
    pub qbo: qbo::Shared,
    pub control_room: control_room::Shared,
    pub clickup: clickup::Shared,
    pub graph: graph::Shared,
    pub control: control::Shared,
    stop: Option<oneshot::Sender<()>>,
}

impl Fakes {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub async fn start(seed: &Seed) -> std::io::Result<Self> {
        Self::start_on(seed, 0).await
    }

    /// As [`Fakes::start`], on a given loopback port (0 picks a free one).
    pub async fn start_on(seed: &Seed, port: u16) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let mut fake_qbo = Qbo::new(&seed.qbo);
        fake_qbo.settings = seed.settings.qbo.clone();
        let qbo = Arc::new(Mutex::new(fake_qbo));
        let mut fake_control_room = ControlRoom::new(seed.workspaces.clone());
        fake_control_room.settings = seed.settings.control_room.clone();
        let control_room = Arc::new(Mutex::new(fake_control_room));
        let (team, token, tasks) = &seed.clickup;
        let mut fake_clickup = ClickUp::new(team, token, tasks.clone());
        if let Some(per_minute) = seed.limits.get("clickup").and_then(|l| l.per_minute) {
            fake_clickup.limit = per_minute;
        }
        let clickup = Arc::new(Mutex::new(fake_clickup));
        let control = Control::shared(seed.limits.clone());
        let (tenant, id, secret) = &seed.graph;
        let mut fake_graph = Graph::new(tenant, id, secret);
        fake_graph.settings = seed.settings.graph.clone();
        let graph = Arc::new(Mutex::new(fake_graph));
        let app = qbo::router(Arc::clone(&qbo))
            .merge(graph::router(Arc::clone(&graph)))
            .merge(control_room::router(Arc::clone(&control_room)))
            .merge(clickup::router(Arc::clone(&clickup)))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&control),
                control::layer,
            ))
            .route(
                "/_fakes/qbo/invoices",
                get(invoices).with_state(Arc::clone(&qbo)),
            )
            .route(
                "/_fakes/state",
                get(state).with_state(Inspect {
                    qbo: Arc::clone(&qbo),
                    clickup: Arc::clone(&clickup),
                    graph: Arc::clone(&graph),
                    control: Arc::clone(&control),
                }),
            )
            .route(
                "/_fakes/faults",
                post(add_fault).with_state(Arc::clone(&control)),
            )
            .route(
                "/_fakes/limits",
                post(set_limits).with_state(Arc::clone(&control)),
            )
            .route(
                "/_fakes/settings",
                get(settings).post(change_settings).with_state((
                    Arc::clone(&qbo),
                    Arc::clone(&control_room),
                    Arc::clone(&graph),
                )),
            );
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            qbo,
            control_room,
            clickup,
            graph,
            control,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Default for Seed {
    fn default() -> Self {
        Self {
            qbo: qbo::Seed::default(),
            workspaces: Vec::new(),
            clickup: ("9000001".into(), "pk_fake_token".into(), Vec::new()),
            graph: (
                "tenant-1".into(),
                "graph-client".into(),
                "graph-secret".into(),
            ),
            limits: Limits::documented(),
            settings: Settings::default(),
        }
    }
}

impl Drop for Fakes {
    fn drop(&mut self) {
        // Release calls a `HangAfter` fault holds, so the server can stop.
        self.control.1.notify_waiters();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn invoices(State(qbo): State<qbo::Shared>) -> Json<Value> {
    let q = qbo.lock().expect("qbo state");
    Json(json!({"invoices": q.invoices()}))
}

#[derive(Clone)]
struct Inspect {
    qbo: qbo::Shared,
    clickup: clickup::Shared,
    graph: graph::Shared,
    control: control::Shared,
}

/// Everything the fakes hold and saw: invoices, time entries, mails, uploads, and the
/// per-service statistics (calls, most in flight, most in any minute, 429s).
async fn state(State(s): State<Inspect>) -> Json<Value> {
    let invoices = s.qbo.lock().expect("qbo state").invoices().to_vec();
    let entries = s.clickup.lock().expect("clickup state").entries().to_vec();
    let (mails, files) = {
        let g = s.graph.lock().expect("graph state");
        let mails: Vec<Value> = g
            .mails
            .iter()
            .map(|(from, m)| json!({"from": from, "message": m}))
            .collect();
        let files: Vec<Value> = g
            .files
            .iter()
            .map(|(path, bytes)| json!({"path": path, "size": bytes.len()}))
            .collect();
        (mails, files)
    };
    let control = s.control.0.lock().expect("control state").report();
    Json(json!({
        "invoices": invoices,
        "time_entries": entries,
        "mails": mails,
        "files": files,
        "stats": control["stats"],
        "hung": control["hung"],
        "calls": control["calls"],
    }))
}

async fn add_fault(
    State(control): State<control::Shared>,
    Json(fault): Json<Fault>,
) -> Json<Value> {
    control.0.lock().expect("control state").add_fault(fault);
    Json(json!({"ok": true}))
}

async fn set_limits(
    State(control): State<control::Shared>,
    Json(limits): Json<BTreeMap<String, Limits>>,
) -> Json<Value> {
    control
        .0
        .lock()
        .expect("control state")
        .limits
        .extend(limits);
    Json(json!({"ok": true}))
}

type Switches = (qbo::Shared, control_room::Shared, graph::Shared);

fn current(s: &Switches) -> Settings {
    Settings {
        qbo: s.0.lock().expect("qbo state").settings.clone(),
        control_room: s.1.lock().expect("control room state").settings.clone(),
        graph: s.2.lock().expect("graph state").settings.clone(),
    }
}

async fn settings(State(s): State<Switches>) -> Json<Settings> {
    Json(current(&s))
}

async fn change_settings(
    State(s): State<Switches>,
    Json(change): Json<SettingsChange>,
) -> Json<Settings> {
    if let Some(q) = change.qbo {
        s.0.lock().expect("qbo state").settings = q;
    }
    if let Some(c) = change.control_room {
        s.1.lock().expect("control room state").settings = c;
    }
    if let Some(g) = change.graph {
        s.2.lock().expect("graph state").settings = g;
    }
    Json(current(&s))
}
