//! A deterministic month of clients for tests, benches and the demo: the fakes' seed
//! (QBO customers, Control Room workspaces and runs, ClickUp tasks), the client-table
//! items and secrets that match it, and what a correct create-invoices run must produce.
//!
//! The first nine clients are the cases that go wrong in real months, in this order:
//! excluded customer, inactive, malformed table item, workspace with no API key, unknown
//! QBO customer, zero minutes, null durations, runs straddling the month boundary, and a
//! run with neither duration nor end. The rest are ordinary clients.

use std::collections::BTreeMap;

use jiff::civil::{Date, date};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, ToSpan};
use serde_json::{Value, json};

use crate::control_room::{Run, Workspace};
use crate::server::Seed;

/// The secret names the app reads by default (design.md).
pub const SECRET_NAMES: [&str; 4] = [
    "QBO/10000",
    "MsGraph/10000",
    "ClickUp/10000",
    "RoboCorp/10000/ClientAPIKeys",
];
pub const TABLE: &str = "Robocorp_Client_Org_Workspace_IDs";
/// The job-state table's default name.
pub const STATE_TABLE: &str = "qbo-invoice-processor-job-state";
/// QBO item price per minute, and the rate every fifth client has in its table item.
pub const ITEM_PRICE: &str = "1.25";
pub const CUSTOM_RATE: &str = "0.875";

/// A DynamoDB attribute value, kept free of SDK types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    S(String),
    N(String),
    Bool(bool),
}

/// What create-invoices must do for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Invoiced { minutes: u64, amount_cents: u64 },
    Excluded,
    Inactive,
    Malformed,
    NoApiKey,
    UnknownCustomer,
    NoMinutes,
}

#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    /// `"{client_id} - {name}"`, the QBO customer's DisplayName.
    pub display_name: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub struct Month {
    pub period: (i16, i8),
    pub seed: Seed,
    pub items: Vec<BTreeMap<String, Attr>>,
    /// Secret name -> JSON value.
    pub secrets: BTreeMap<String, Value>,
    pub clients: Vec<Client>,
    /// Display names for `EXCLUDED_CUSTOMERS`.
    pub excluded: Vec<String>,
}

impl Month {
    /// The clients broken on purpose (a malformed item, a workspace without a key, an
    /// unknown customer) taken out of the table: a world where every check passes.
    pub fn remove_broken(&mut self) {
        let broken: Vec<String> = self
            .clients
            .iter()
            .filter(|c| {
                matches!(
                    c.outcome,
                    Outcome::Malformed | Outcome::NoApiKey | Outcome::UnknownCustomer
                )
            })
            .map(|c| c.client_id.clone())
            .collect();
        self.items.retain(
            |item| !matches!(item.get("client_id"), Some(Attr::S(id)) if broken.contains(id)),
        );
        self.clients.retain(|c| !broken.contains(&c.client_id));
    }

    pub fn invoiced(&self) -> impl Iterator<Item = (&Client, u64, u64)> {
        self.clients.iter().filter_map(|c| match c.outcome {
            Outcome::Invoiced {
                minutes,
                amount_cents,
            } => Some((c, minutes, amount_cents)),
            _ => None,
        })
    }
}

/// A small xorshift generator: the same month on every machine.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs and the seconds they bill, for one client.
#[derive(Default)]
struct Runs {
    runs: Vec<Run>,
    billed_seconds: u64,
}

impl Runs {
    /// A finished run starting at `start`, lasting `secs`; billed when `billed`.
    fn add(&mut self, start: Timestamp, secs: u64, duration: bool, billed: bool) {
        let end = start
            .checked_add(Span::new().seconds(i64::try_from(secs).unwrap_or(0)))
            .expect("in range");
        self.runs.push(Run {
            id: String::new(),
            state: if secs.is_multiple_of(7) {
                "unresolved"
            } else {
                "completed"
            }
            .into(),
            started_at: Some(start.to_string()),
            ended_at: Some(end.to_string()),
            // Control Room reports fractional seconds; the job sums them.
            duration: duration.then_some(f64::from(u32::try_from(secs).unwrap_or(u32::MAX))),
        });
        if billed {
            self.billed_seconds += secs;
        }
    }
}

/// `n` clients (at least 9) billed for `year-month` in America/Los_Angeles.
pub fn month(n: usize, year: i16, month: i8) -> Month {
    assert!(
        n >= 9,
        "the generator needs at least 9 clients for its cases"
    );
    let tz = TimeZone::get("America/Los_Angeles").expect("tzdb");
    let first: Date = date(year, month, 1);
    let next = first.checked_add(1.month()).expect("in range");
    let end = next.to_zoned(tz.clone()).expect("tz").timestamp();
    let days = first.days_in_month();
    // Local midnight of `day`, plus `secs` (negative reaches back into last month).
    let at = |day: i8, secs: i64| {
        let midnight = first
            .checked_add(Span::new().days(i64::from(day - 1)))
            .and_then(|d| d.to_zoned(tz.clone()))
            .expect("in range")
            .timestamp();
        midnight.checked_add(Span::new().seconds(secs)).unwrap()
    };
    let mut rng = Rng(0x5EED_0000_0000_0001
        ^ (u64::from(year.unsigned_abs()) << 8)
        ^ u64::from(month.unsigned_abs()));
    let mut seed = Seed::default();
    seed.qbo.items = vec![("Robot Minutes".into(), ITEM_PRICE.parse().expect("price"))];
    let (team, token, _) = seed.clickup.clone();
    let mut tasks = Vec::new();
    let mut keys = serde_json::Map::new();
    let mut out = Month {
        period: (year, month),
        seed: seed.clone(),
        items: Vec::new(),
        secrets: BTreeMap::new(),
        clients: Vec::new(),
        excluded: Vec::new(),
    };
    for i in 0..n {
        let id = format!("{}", 10001 + i);
        let name = if i == 0 {
            "AICPA".to_owned()
        } else {
            format!("Client {id}")
        };
        let display = format!("{id} - {name}");
        let (ws, org, task) = (
            format!("ws-{id}"),
            format!("org-{id}"),
            format!("task-{id}"),
        );
        let mut runs = Runs::default();
        let mut outcome = None;
        match i {
            0 => outcome = Some(Outcome::Excluded),
            1 => outcome = Some(Outcome::Inactive),
            2 => outcome = Some(Outcome::Malformed),
            3 => outcome = Some(Outcome::NoApiKey),
            4 => outcome = Some(Outcome::UnknownCustomer),
            5 => {
                // Only runs outside the period, and one still going inside it.
                runs.add(at(1, -7200), 900, true, false);
                runs.add(end, 600, true, false);
                runs.runs.push(Run {
                    id: String::new(),
                    state: "in_progress".into(),
                    started_at: Some(at(3, 3600).to_string()),
                    ended_at: None,
                    duration: None,
                });
            }
            6 => {
                for d in 1..=4 {
                    runs.add(at(d, 36_000), 125, false, true);
                }
            }
            7 => {
                // Starts 30 min before the month in Los Angeles (08:00 UTC on the
                // 1st, in the month by UTC): not billed. Starts 10 min before the end
                // and runs past it: billed. Starts at 20:00 on the last day in Los
                // Angeles (the 1st of next month by UTC): billed.
                runs.add(at(1, -1800), 3600, true, false);
                runs.add(end.checked_sub(10.minutes()).unwrap(), 1800, true, true);
                runs.add(at(days, 72_000), 61, true, true);
            }
            8 => {
                runs.runs.push(Run {
                    id: String::new(),
                    state: "completed".into(),
                    started_at: Some(at(2, 0).to_string()),
                    ended_at: None,
                    duration: None,
                });
                runs.add(at(5, 3600), 3000, true, true);
            }
            _ => {
                let count = 3 + rng.below(140);
                for _ in 0..count {
                    let day = i8::try_from(1 + rng.below(u64::try_from(days).unwrap())).unwrap();
                    let secs = i64::try_from(rng.below(86_000)).unwrap();
                    let length = 20 + rng.below(1800);
                    let whole = rng.below(3) > 0;
                    runs.add(at(day, secs), length, whole, true);
                }
            }
        }
        let rate = (i % 5 == 4).then_some(CUSTOM_RATE);
        let outcome = outcome.unwrap_or_else(|| {
            let minutes = runs.billed_seconds.div_ceil(60);
            if minutes == 0 {
                Outcome::NoMinutes
            } else {
                let millis = thousandths(rate.unwrap_or(ITEM_PRICE));
                Outcome::Invoiced {
                    minutes,
                    amount_cents: (minutes * millis + 5) / 10,
                }
            }
        });
        if outcome != Outcome::UnknownCustomer {
            seed.qbo.customers.push((
                display.clone(),
                (i % 11 != 10).then(|| format!("billing@client{id}.example")),
            ));
        }
        if outcome == Outcome::Excluded {
            out.excluded.push(display.clone());
        }
        if outcome != Outcome::NoApiKey {
            keys.insert(ws.clone(), json!(format!("wskey-{id}")));
        }
        seed.workspaces.push(Workspace {
            id: ws.clone(),
            name: name.clone(),
            organization_id: org.clone(),
            key: format!("wskey-{id}"),
            runs: runs.runs,
        });
        tasks.push(task.clone());
        let mut item = BTreeMap::from([
            ("client_id".to_owned(), Attr::S(id.clone())),
            ("client_name".to_owned(), Attr::S(name)),
            ("robocorp_org_id".to_owned(), Attr::S(org)),
            ("robocorp_workspace_id".to_owned(), Attr::S(ws)),
            ("clickup_task_id".to_owned(), Attr::S(task)),
        ]);
        if let Some(rate) = rate {
            item.insert("rate_per_minute".into(), Attr::N(rate.into()));
        }
        if outcome == Outcome::Inactive {
            item.insert("active".into(), Attr::Bool(false));
        }
        if outcome == Outcome::Malformed {
            // A workspace id typed as a number, and no ClickUp task.
            item.insert("robocorp_workspace_id".into(), Attr::N("42".into()));
            item.remove("clickup_task_id");
        }
        if i % 7 == 6 && outcome != Outcome::UnknownCustomer {
            // QBO ids are handed out in seed order from 1: customers first.
            let customer_id = seed.qbo.customers.len();
            item.insert("qbo_customer_id".into(), Attr::S(customer_id.to_string()));
        }
        out.items.push(item);
        out.clients.push(Client {
            client_id: id,
            display_name: display,
            outcome,
        });
    }
    seed.clickup = (team.clone(), token.clone(), tasks);
    let (tenant, graph_id, graph_secret) = seed.graph.clone();
    out.secrets = BTreeMap::from([
        (
            SECRET_NAMES[0].to_owned(),
            json!({"client_id": seed.qbo.client_id, "client_secret": seed.qbo.client_secret,
                   "refresh_token": seed.qbo.refresh_token, "realm_id": seed.qbo.realm_id,
                   "environment": "sandbox"}),
        ),
        (
            SECRET_NAMES[1].to_owned(),
            json!({"tenant_id": tenant, "client_id": graph_id, "client_secret": graph_secret}),
        ),
        (
            SECRET_NAMES[2].to_owned(),
            json!({"api_token": token, "team_id": team}),
        ),
        (SECRET_NAMES[3].to_owned(), Value::Object(keys)),
    ]);
    out.seed = seed;
    out
}

/// `"1.25"` -> 1250.
fn thousandths(rate: &str) -> u64 {
    let (whole, frac) = rate.split_once('.').unwrap_or((rate, ""));
    let frac = format!("{frac:0<3}");
    whole.parse::<u64>().expect("rate") * 1000 + frac[..3].parse::<u64>().expect("rate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_month_is_the_same_every_time_and_holds_every_case() {
        let a = month(50, 2026, 10);
        let b = month(50, 2026, 10);
        assert_eq!(
            a.clients.iter().map(|c| &c.outcome).collect::<Vec<_>>(),
            b.clients.iter().map(|c| &c.outcome).collect::<Vec<_>>()
        );
        assert_eq!(a.excluded, ["10001 - AICPA"]);
        // Client 10008: one run of 1800 s from 10 min before the end and one of 61 s.
        assert_eq!(
            a.clients[7].outcome,
            Outcome::Invoiced {
                minutes: 32,
                amount_cents: 4000
            }
        );
        // Client 10007: 4 x 125 s with null durations = 500 s -> 9 min at 1.25.
        assert_eq!(
            a.clients[6].outcome,
            Outcome::Invoiced {
                minutes: 9,
                amount_cents: 1125
            }
        );
        assert!(a.invoiced().count() > 35);
        assert_eq!(thousandths("0.875"), 875);
    }
}
