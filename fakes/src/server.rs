//! One HTTP server on a free loopback port serving the SaaS stand-ins (QuickBooks Online,
//! Control Room, ClickUp and Microsoft Graph) and `/_fakes/...` inspection endpoints for tests and the demo.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::clickup::{self, ClickUp};
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
}

/// The running server; stopped when dropped.
#[derive(Debug)]
pub struct Fakes {
    addr: SocketAddr,
    pub qbo: qbo::Shared,
    pub control_room: control_room::Shared,
    pub clickup: clickup::Shared,
    pub graph: graph::Shared,
    stop: Option<oneshot::Sender<()>>,
}

impl Fakes {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub async fn start(seed: &Seed) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let qbo = Arc::new(Mutex::new(Qbo::new(&seed.qbo)));
        let control_room = Arc::new(Mutex::new(ControlRoom::new(seed.workspaces.clone())));
        let (team, token, tasks) = &seed.clickup;
        let clickup = Arc::new(Mutex::new(ClickUp::new(team, token, tasks.clone())));
        let (tenant, id, secret) = &seed.graph;
        let graph = Arc::new(Mutex::new(Graph::new(tenant, id, secret)));
        let app = qbo::router(Arc::clone(&qbo))
            .merge(graph::router(Arc::clone(&graph)))
            .merge(control_room::router(Arc::clone(&control_room)))
            .merge(clickup::router(Arc::clone(&clickup)))
            .route(
                "/_fakes/qbo/invoices",
                get(invoices).with_state(Arc::clone(&qbo)),
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
        }
    }
}

impl Drop for Fakes {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn invoices(State(qbo): State<qbo::Shared>) -> Json<Value> {
    let q = qbo.lock().expect("qbo state");
    Json(json!({"invoices": q.invoices()}))
}
