//! `--check`: everything a run needs, read and not written. Each check logs one
//! `check` line (`status` ok, warn or fail, what was found, and the fix); the run ends
//! with `run_finished` and exits 1 when any check failed. The one write it can cause is
//! QBO's: signing in may rotate the refresh token, and the new one is saved to the QBO
//! secret (a token QBO rotated and we dropped would lock the next run out).
//!
//! Per-client checks (an item, a customer, a task, a workspace key) log a line only for
//! what is wrong, then one line with the count: a table of 3,000 clients makes a
//! readable list of its problems, not 12,000 lines of "ok".

use std::collections::{BTreeMap, BTreeSet};

use jiff::Zoned;
use serde_json::Value;

use super::create::{Period, look_up};
use super::{Context, Summary};
use crate::api::clickup::ClickUp;
use crate::api::control_room::ControlRoom;
use crate::api::graph::Graph;
use crate::clients::{ClientRow, Selection};
use crate::config::{Config, Problem};
use crate::error::Error;
use crate::secrets::{ClickUpSecret, GraphSecret, RobocorpKeys};

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Not a failure, but worth knowing (a customer without an email address).
    Warn,
    Fail,
}

/// The run's checks, counted into a [`Summary`] (total = checks, done = passed).
pub struct Checks {
    pub summary: Summary,
}

impl Checks {
    pub fn new() -> Self {
        Self {
            // `dry_run`: it writes nothing, so the failed-run alarm (which counts runs
            // that are not dry runs) does not count a check that found problems.
            summary: Summary::new("check", true),
        }
    }

    /// Logs one check line and counts it.
    pub fn record(&mut self, name: &str, status: Status, detail: &str, fix: &str) {
        self.summary.total += 1;
        match status {
            Status::Ok => {
                self.summary.done += 1;
                tracing::info!(event = "check", check = name, status = "ok", detail);
            }
            Status::Warn => {
                self.summary.done += 1;
                self.summary.skipped += 1;
                tracing::warn!(event = "check", check = name, status = "warn", detail, fix);
            }
            Status::Fail => {
                tracing::error!(event = "check", check = name, status = "fail", detail, fix);
                self.summary
                    .failures
                    .push((name.to_owned(), format!("{detail}; fix: {fix}")));
            }
        }
    }

    fn ok(&mut self, name: &str, detail: &str) {
        self.record(name, Status::Ok, detail, "");
    }

    fn fail(&mut self, name: &str, detail: &str, fix: &str) {
        self.record(name, Status::Fail, detail, fix);
    }

    /// The configuration's problems, each a failed check.
    pub fn config(&mut self, problems: &[Problem]) {
        for p in problems {
            self.fail(&format!("config:{}", p.var), &p.problem, &p.fix);
        }
    }
}

/// An error of a read as `(what, fix)`.
fn split(e: &Error) -> (String, String) {
    match e {
        Error::Secret { name, problem, fix } => (format!("secret {name} {problem}"), fix.clone()),
        Error::Usage(what, fix) | Error::Fatal(what, fix) => (what.clone(), fix.clone()),
        Error::Config(problems) => (
            problems
                .iter()
                .map(|p| format!("{}: {}", p.var, p.problem))
                .collect::<Vec<_>>()
                .join("; "),
            "fix the variables named".into(),
        ),
        Error::Aws { .. } | Error::Api(_) => (
            e.to_string(),
            "check the task role's permissions and the service's status".into(),
        ),
    }
}

/// Runs every check (given a configuration that parsed) and returns the summary.
pub async fn run(ctx: &Context, checks: &mut Checks) {
    let config = &ctx.config;
    match config.check_send() {
        Ok(()) => checks.ok("config", "every variable the two jobs read is valid"),
        Err(problems) => checks.config(&problems),
    }

    // The secrets: each readable and of its shape (a missing key names the key).
    let (qbo, clickup, keys, graph) = tokio::join!(
        ctx.qbo(),
        ctx.secrets.get::<ClickUpSecret>(&config.secrets.clickup),
        ctx.secrets.get::<RobocorpKeys>(&config.secrets.robocorp),
        ctx.secrets.get::<GraphSecret>(&config.secrets.msgraph),
    );
    let mut secret = |name: &str, ok: bool, err: Option<&Error>, detail: &str| match err {
        None if ok => checks.ok(&format!("secret:{name}"), detail),
        Some(e) => {
            let (what, fix) = split(e);
            checks.fail(&format!("secret:{name}"), &what, &fix);
        }
        None => {}
    };
    secret(
        &config.secrets.qbo,
        qbo.is_ok(),
        qbo.as_ref().err(),
        "readable, with client_id, client_secret, refresh_token and realm_id",
    );
    secret(
        &config.secrets.clickup,
        clickup.is_ok(),
        clickup.as_ref().err(),
        "readable, with api_token and team_id",
    );
    let workspaces = keys.as_ref().map_or(0, |k| k.0.len());
    secret(
        &config.secrets.robocorp,
        keys.is_ok(),
        keys.as_ref().err(),
        &format!("readable, with API keys of {workspaces} workspaces"),
    );
    secret(
        &config.secrets.msgraph,
        graph.is_ok(),
        graph.as_ref().err(),
        "readable, with tenant_id, client_id and client_secret",
    );

    // The client table, every item of it, and the job's own state table.
    let mut scanned = true;
    let rows = match crate::clients::scan(&ctx.db, &config.table, Selection::default()).await {
        Ok(rows) => rows,
        Err(e) => {
            scanned = false;
            checks.fail(
                "table",
                &e.to_string(),
                &format!(
                    "create the table {} (key client_id, a string), or set DYNAMODB_TABLE_ROBOCORP_CLIENTS; the task role needs dynamodb:Scan on it",
                    config.table
                ),
            );
            Vec::new()
        }
    };
    let mut good = Vec::new();
    let mut bad = 0;
    for row in rows {
        match row {
            Ok(row) => good.push(row),
            Err(item) => {
                bad += 1;
                checks.fail(
                    &format!("item:{}", item.key),
                    &format!(
                        "the client table item is malformed: {}",
                        item.problems.join("; ")
                    ),
                    "correct the item in the table (docs/jobs.md lists each attribute)",
                );
            }
        }
    }
    if scanned && bad == 0 && good.is_empty() {
        checks.record(
            "table",
            Status::Warn,
            &format!("{} has no items: a run bills nobody", config.table),
            "put one item per client in the table (docs/jobs.md lists each attribute)",
        );
    } else if scanned && bad == 0 {
        checks.ok(
            "table",
            &format!(
                "{} readable, {} items, each well formed",
                config.table,
                good.len()
            ),
        );
    }
    let ledger = crate::state::Ledger::new(ctx.db.clone(), &config.state_table);
    match ledger.summary().await {
        Ok(_) => checks.ok("state-table", &format!("{} readable", config.state_table)),
        Err(e) => checks.fail(
            "state-table",
            &e.to_string(),
            &format!(
                "create {} (`deployer up` does), or set JOB_STATE_TABLE to its name",
                config.state_table
            ),
        ),
    }
    // The clients a run would bill: active and not excluded.
    let billed: Vec<ClientRow> = good
        .into_iter()
        .filter(|r| r.active && !config.excluded.contains(&r.display_name()))
        .filter(|r| config_range(config).takes(&r.client_id))
        .collect();

    if let Ok(keys) = &keys {
        workspaces_open(checks, config, &billed, keys).await;
    }
    if let Ok(qbo) = &qbo {
        match qbo.sign_in().await {
            Ok(()) => {
                checks.ok(
                    "qbo:sign-in",
                    "signed in (when QBO rotates the refresh token, the new one is saved to the QBO secret: the only write --check makes)",
                );
                qbo_records(checks, config, qbo, &billed).await;
            }
            Err(e) => {
                let (what, fix) = split(&super::fatal(e));
                checks.fail("qbo:sign-in", &what, &fix);
            }
        }
    }
    if let Ok(secret) = &clickup {
        clickup_tasks(checks, config, secret, &billed).await;
    }
    if let Ok(secret) = &graph {
        sender(checks, config, secret).await;
    }
}

fn config_range(config: &Config) -> Selection {
    Selection {
        range: config.client_range,
        shard: None,
    }
}

/// Every workspace of a billed client has a key, and the key opens it (and the
/// workspace belongs to the organization the table names).
async fn workspaces_open(
    checks: &mut Checks,
    config: &Config,
    billed: &[ClientRow],
    keys: &RobocorpKeys,
) {
    let control_room = ControlRoom::new(&config.urls.robocorp, config.settle);
    let mut by_workspace: BTreeMap<&str, Vec<&ClientRow>> = BTreeMap::new();
    for r in billed {
        by_workspace
            .entry(r.robocorp_workspace_id.as_str())
            .or_default()
            .push(r);
    }
    let mut failed = 0;
    for (ws, rows) in &by_workspace {
        let clients = rows
            .iter()
            .map(|r| r.client_id.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let name = format!("robocorp:{ws}");
        let Some(key) = keys.0.get(*ws) else {
            failed += 1;
            checks.fail(
                &name,
                &format!("no API key for workspace {ws} (client {clients}) in {}", config.secrets.robocorp),
                &format!(
                    "add \"{ws}\": \"<the workspace's API key>\" to {} (Control Room: Workspace > Access > API keys, with read access to process runs)",
                    config.secrets.robocorp
                ),
            );
            continue;
        };
        match control_room.organization(ws, key).await {
            Ok(org) if rows.iter().all(|r| r.robocorp_org_id == org) => {}
            Ok(org) => {
                failed += 1;
                checks.fail(
                    &name,
                    &format!("workspace {ws} belongs to organization {org}, not the one the table gives (client {clients})"),
                    "correct robocorp_org_id (or robocorp_workspace_id) in the table",
                );
            }
            Err(e) => {
                failed += 1;
                checks.fail(
                    &name,
                    &format!("the key for workspace {ws} (client {clients}) does not open it: {e}"),
                    &format!(
                        "replace the key for {ws} in {} with a current one of that workspace",
                        config.secrets.robocorp
                    ),
                );
            }
        }
    }
    if failed == 0 {
        checks.ok(
            "robocorp",
            &format!(
                "each of {} workspaces has a key that opens it",
                by_workspace.len()
            ),
        );
    }
}

/// The item exists (with a price, or every client has a rate), each client's customer
/// exists and is active, and has an email address to send the invoice to.
async fn qbo_records(
    checks: &mut Checks,
    config: &Config,
    qbo: &crate::api::qbo::Qbo,
    billed: &[ClientRow],
) {
    let today = Zoned::now().with_time_zone(config.timezone.clone());
    let period = match Period::of(Period::previous(&today), &config.timezone) {
        Ok(period) => period,
        Err(e) => {
            let (what, fix) = split(&e);
            checks.fail("qbo", &what, &fix);
            return;
        }
    };
    let found = match look_up(qbo, billed, &period, &config.item_name).await {
        Ok(found) => found,
        Err(e) => {
            let (what, fix) = split(&super::fatal(e));
            checks.fail("qbo", &what, &fix);
            return;
        }
    };
    let priced = match &found.item {
        Ok(Some(item)) => {
            checks.ok(
                "qbo:item",
                &format!("item {:?} exists and is active", config.item_name),
            );
            item["UnitPrice"].as_f64().is_some_and(|p| p > 0.0)
        }
        Ok(None) => {
            checks.fail(
                "qbo:item",
                &format!("QBO has no active item named {:?}", config.item_name),
                "create that service item in QBO, or set QBO_ITEM_NAME to the item invoices should use",
            );
            true
        }
        Err(e) => {
            checks.fail(
                "qbo:item",
                &format!("looking up the item {:?} failed: {e}", config.item_name),
                "check QBO's status, then run the check again",
            );
            true
        }
    };
    let mut failed = 0;
    let mut no_email = 0;
    for r in billed {
        let name = format!("qbo:customer:{}", r.client_id);
        if let Some(why) = found.failed.get(&r.client_id) {
            failed += 1;
            checks.fail(
                &name,
                &format!("looking the customer up failed: {why}"),
                "run the check again",
            );
            continue;
        }
        let customer: Option<&Value> = match &r.qbo_customer_id {
            Some(id) => found.by_id.get(id),
            None => found.by_name.get(&r.display_name()),
        };
        let Some(customer) = customer else {
            failed += 1;
            let (what, fix) = r.qbo_customer_id.as_ref().map_or_else(
                || {
                    (
                        format!(
                            "no active QBO customer has DisplayName {:?}",
                            r.display_name()
                        ),
                        "create the customer in QBO, or set qbo_customer_id in the table"
                            .to_owned(),
                    )
                },
                |id| {
                    (
                        format!("no active QBO customer has Id {id}"),
                        "fix qbo_customer_id in the table, or make the customer active".to_owned(),
                    )
                },
            );
            checks.fail(&name, &what, &fix);
            continue;
        };
        if r.rate_per_minute.is_none() && !priced {
            failed += 1;
            checks.fail(
                &name,
                &format!(
                    "client {} has no rate_per_minute and the item {:?} no price",
                    r.client_id, config.item_name
                ),
                "set rate_per_minute in the table, or a price on the QBO item",
            );
            continue;
        }
        let email = customer["PrimaryEmailAddr"]["Address"]
            .as_str()
            .unwrap_or_default();
        if email.trim().is_empty() {
            no_email += 1;
            checks.record(
                &name,
                Status::Warn,
                &format!(
                    "customer {:?} has no email address: its invoice is created but never sent",
                    customer["DisplayName"].as_str().unwrap_or_default()
                ),
                "add the customer's billing email in QBO",
            );
        }
    }
    if failed == 0 {
        checks.ok(
            "qbo:customers",
            &format!(
                "{} clients each have an active customer{}",
                billed.len(),
                if no_email == 0 {
                    String::new()
                } else {
                    format!(" ({no_email} without an email address)")
                }
            ),
        );
    }
}

/// The token opens the team (its time-entry list), and each client's task exists.
async fn clickup_tasks(
    checks: &mut Checks,
    config: &Config,
    secret: &ClickUpSecret,
    billed: &[ClientRow],
) {
    let clickup = ClickUp::new(secret, &config.urls.clickup, config.settle, config.share);
    let now = jiff::Timestamp::now().as_millisecond();
    if let Err(e) = clickup.entries(now - 3_600_000, now).await {
        let (what, fix) = split(&super::fatal(e));
        checks.fail("clickup:team", &what, &fix);
        return;
    }
    checks.ok(
        "clickup:team",
        &format!("the token opens team {}", secret.team_id),
    );
    let tasks: BTreeSet<&str> = billed.iter().map(|r| r.clickup_task_id.as_str()).collect();
    let mut failed = 0;
    for task in &tasks {
        let clients = billed
            .iter()
            .filter(|r| r.clickup_task_id == *task)
            .map(|r| r.client_id.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        match clickup.task_exists(task).await {
            Ok(true) => {}
            Ok(false) => {
                failed += 1;
                checks.fail(
                    &format!("clickup:task:{task}"),
                    &format!("task {task} (client {clients}) does not exist, or is in a Workspace the token's user is not in"),
                    &format!("set clickup_task_id to a task of team {} in the table", secret.team_id),
                );
            }
            Err(e) => {
                failed += 1;
                checks.fail(
                    &format!("clickup:task:{task}"),
                    &format!("reading task {task} (client {clients}) failed: {e}"),
                    "run the check again; if it persists, check the token in the ClickUp secret",
                );
            }
        }
    }
    if failed == 0 {
        checks.ok(
            "clickup:tasks",
            &format!("each of {} tasks exists", tasks.len()),
        );
    }
}

/// A Graph token, and the sender's mailbox.
async fn sender(checks: &mut Checks, config: &Config, secret: &GraphSecret) {
    let graph = Graph::new(
        secret,
        &config.urls.graph,
        &config.urls.login,
        config.settle,
    );
    if let Err(e) = graph.sign_in().await {
        let (what, fix) = split(&super::fatal(e));
        checks.fail("graph:sign-in", &what, &fix);
        return;
    }
    checks.ok("graph:sign-in", "Entra ID issued a token for the app");
    let Some(from) = &config.sender_email else {
        return;
    };
    match graph.user(from).await {
        Ok(_) => checks.ok("graph:sender", &format!("{from} is a user of the tenant")),
        Err(e) if e.status == Some(404) => checks.fail(
            "graph:sender",
            &format!("{from} is not a user (mailbox) of the tenant"),
            "set SENDER_EMAIL to a mailbox of the tenant the MsGraph secret names",
        ),
        Err(e) if e.status == Some(403) => checks.record(
            "graph:sender",
            Status::Warn,
            &format!("the app may not read users, so {from} could not be confirmed (sending needs only Mail.Send)"),
            "grant the app User.ReadBasic.All to let --check confirm the sender, or send a test by running --send-invoices",
        ),
        Err(e) => checks.fail(
            "graph:sender",
            &format!("looking up {from} failed: {e}"),
            "run the check again",
        ),
    }
}

/// The summary of a `--check` run whose configuration did not parse.
pub fn config_failed(problems: &[Problem]) -> Summary {
    let mut checks = Checks::new();
    checks.config(problems);
    checks.summary
}
