//! Invoices created through QBO's batch endpoint: up to 30 in one request, at most 40
//! batch requests a minute (Intuit, "Batch" and "API call limits and throttles"), so a
//! month of clients costs one request per 30 invoices instead of one each. Clients hand
//! their invoice in as they get to it; a batch leaves when it is full, when no client
//! still at work can add to it, or when its first invoice has waited half a second.
//!
//! A batch is only the fast path. An item QBO faults, and every item of a batch whose
//! answer was lost and that a lookup does not find (at once, and again once QBO can no
//! longer be working on the batch), goes on to the single create in `create.rs`, with
//! its own request id, replay check and lookups: no invoice is sent twice, and no
//! refusal is taken for final on a batch's word.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::api::ApiError;
use crate::api::qbo::{BATCH, Qbo, Stamped};

/// A batch leaves at the latest once its first invoice has waited this long.
const LONGEST: Duration = Duration::from_millis(500);
/// How often a waiting batch looks whether any client can still add to it.
const LOOK: Duration = Duration::from_millis(10);

/// What became of one invoice handed to the batcher.
#[derive(Debug)]
pub enum Batched {
    Created(Value),
    /// The batch's answer was lost, and the invoice is there.
    Found(Value),
    /// Not created by a batch: create it on its own.
    Single,
}

#[derive(Debug)]
struct Item {
    invoice: Value,
    doc: String,
    reply: oneshot::Sender<Result<Batched, ApiError>>,
}

/// Hands invoices to the task that batches them; dropping it lets the task finish.
#[derive(Debug)]
pub struct Batcher {
    items: mpsc::UnboundedSender<Item>,
    /// Clients that may still hand an invoice in.
    coming: Arc<AtomicUsize>,
}

/// A client's place in the batches: handed in with its invoice, or given up (dropped)
/// when the client has none.
#[derive(Debug)]
pub struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Batcher {
    /// A batcher for `clients` that may each hand in one invoice.
    pub fn start(qbo: Arc<Qbo>, settle: Duration, clients: usize) -> Self {
        let (items, rx) = mpsc::unbounded_channel();
        let coming = Arc::new(AtomicUsize::new(clients));
        tokio::spawn(collect(qbo, rx, settle, Arc::clone(&coming)));
        Self { items, coming }
    }

    /// One client's ticket (each of the `clients` takes one).
    pub fn ticket(&self) -> Ticket {
        Ticket(Arc::clone(&self.coming))
    }

    /// Creates `invoice` (numbered `doc`) in the next batch.
    pub async fn create(
        &self,
        ticket: Ticket,
        invoice: Value,
        doc: String,
    ) -> Result<Batched, ApiError> {
        let (reply, answer) = oneshot::channel();
        let item = Item {
            invoice,
            doc,
            reply,
        };
        let sent = self.items.send(item);
        drop(ticket);
        if sent.is_err() {
            return Ok(Batched::Single);
        }
        // A batch task that ended without answering leaves the write unknown: the
        // client fails this run, and the next one looks the invoice up first.
        answer.await.unwrap_or_else(|_| {
            Err(ApiError::new(
                "qbo",
                None,
                "the batch holding this invoice ended without an answer",
            ))
        })
    }
}

async fn collect(
    qbo: Arc<Qbo>,
    mut rx: mpsc::UnboundedReceiver<Item>,
    settle: Duration,
    coming: Arc<AtomicUsize>,
) {
    let mut sending = JoinSet::new();
    while let Some(first) = rx.recv().await {
        let started = Instant::now();
        let mut items = vec![first];
        while items.len() < BATCH && started.elapsed() < LONGEST {
            match rx.try_recv() {
                Ok(item) => items.push(item),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                // Nothing waiting, and no client still at work: it leaves now.
                Err(mpsc::error::TryRecvError::Empty) if coming.load(Ordering::Relaxed) == 0 => {
                    break;
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    if let Ok(Some(item)) = tokio::time::timeout(LOOK, rx.recv()).await {
                        items.push(item);
                    }
                }
            }
        }
        sending.spawn(send(Arc::clone(&qbo), items, settle));
    }
    while sending.join_next().await.is_some() {}
}

/// One batch request, and each item's answer.
async fn send(qbo: Arc<Qbo>, items: Vec<Item>, settle: Duration) {
    let invoices: Vec<&Value> = items.iter().map(|i| &i.invoice).collect();
    let rid = request_id(&invoices);
    let asked = jiff::Timestamp::now();
    let answers: Vec<Result<Result<Stamped, ApiError>, ApiError>> =
        match qbo.create_invoices(&invoices, &rid).await {
            Ok(answers) => answers.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e); items.len()],
        };
    // A replayed answer (an earlier run sent this very batch today; a batch is sent
    // once, so never this run's own) names invoices that may have been deleted since:
    // each is read by Id, and one gone is made on its own, under its own request id.
    let mut gone: BTreeMap<usize, Result<bool, ApiError>> = BTreeMap::new();
    for (at, answer) in answers.iter().enumerate() {
        if let Ok(Ok(made)) = answer
            && super::create::is_replay(made.time, asked)
        {
            gone.insert(at, qbo.is_gone(&made.value).await);
        }
    }
    // Unclear items (the whole answer lost, or an item left out of it) are looked up
    // together before anything else happens to them.
    let unclear: Vec<(&Item, &ApiError)> = items
        .iter()
        .zip(&answers)
        .filter_map(|(item, a)| match a {
            Ok(Err(e)) | Err(e) if e.is_ambiguous() && !e.fatal => Some((item, e)),
            _ => None,
        })
        .collect();
    let found = match unclear.first() {
        Some((_, lost)) => {
            let of: Vec<&Item> = unclear.iter().map(|(i, _)| *i).collect();
            Some(look_up(&qbo, &of, lost, settle).await)
        }
        None => None,
    };
    for (at, (item, answer)) in items.into_iter().zip(answers).enumerate() {
        let outcome = match answer {
            Ok(Ok(made)) if gone.contains_key(&at) => match &gone[&at] {
                Ok(false) => Ok(Batched::Found(made.value)),
                Ok(true) => {
                    tracing::info!(event = "created_replayed_gone", doc_number = %item.doc, "QBO replayed an earlier run's batch holding this invoice, which has been deleted since: creating it on its own");
                    Ok(Batched::Single)
                }
                Err(e) => Err(e.clone()),
            },
            Ok(Ok(made)) => Ok(Batched::Created(made.value)),
            Ok(Err(e)) | Err(e) if e.fatal => Err(e),
            Ok(Err(e)) | Err(e) if e.is_ambiguous() => match &found {
                Some(Ok(found)) => Ok(found
                    .get(&item.doc)
                    .filter(|i| mine(&item, i))
                    .cloned()
                    .map_or(Batched::Single, Batched::Found)),
                Some(Err(lookup)) if lookup.fatal => Err(lookup.clone()),
                // Not known either way: the client fails this run; the next looks it up.
                _ => Err(e),
            },
            // Refused (the item, or the whole request with a 4xx): nothing was created.
            Ok(Err(e)) | Err(e) => {
                tracing::info!(event = "batch_item_refused", doc_number = %item.doc, error = %e, "created on its own instead");
                Ok(Batched::Single)
            }
        };
        let _ = item.reply.send(outcome);
    }
}

/// The batch's invoices that exist, by DocNumber: looked up at once, and those not
/// found again once QBO can no longer be working on the batch.
async fn look_up(
    qbo: &Qbo,
    items: &[&Item],
    lost: &ApiError,
    settle: Duration,
) -> Result<BTreeMap<String, Value>, ApiError> {
    let mut found = BTreeMap::new();
    let mut missing: Vec<String> = items.iter().map(|i| i.doc.clone()).collect();
    for round in 0..2 {
        if round == 1 {
            let sent = lost.sent.unwrap_or_else(Instant::now);
            let wait = (sent + settle).saturating_duration_since(Instant::now());
            if wait.is_zero() {
                break;
            }
            tracing::info!(
                event = "write_settling",
                service = "qbo",
                what = "batch",
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "the batch's answer was lost and some of its invoices are not visible yet"
            );
            tokio::time::sleep(wait).await;
        }
        for invoice in qbo.invoices_numbered_in(&missing).await? {
            let Some(doc) = invoice["DocNumber"].as_str() else {
                continue;
            };
            // Only an invoice of the item's own customer is the item's.
            if items.iter().any(|i| i.doc == doc && mine(i, &invoice)) {
                found.entry(doc.to_owned()).or_insert(invoice);
            }
        }
        missing.retain(|d| !found.contains_key(d));
        if missing.is_empty() {
            break;
        }
    }
    Ok(found)
}

/// Whether `invoice` (found in QBO) is `item`'s: the same number, for the same
/// customer or with the job's mark for the same client.
fn mine(item: &Item, invoice: &Value) -> bool {
    super::create::is_clients(
        invoice,
        &item.invoice["CustomerRef"]["value"],
        item.invoice["PrivateNote"].as_str().unwrap_or_default(),
    )
}

/// The same invoices give the same id; at most 36 characters, as QBO asks of a batch.
fn request_id(invoices: &[&Value]) -> String {
    let mut hash = Sha256::new();
    for invoice in invoices {
        hash.update(invoice.to_string().as_bytes());
        hash.update(b"\n");
    }
    let hex = crate::secrets::hex(&hash.finalize());
    format!("bat-{}", &hex[..32])
}
