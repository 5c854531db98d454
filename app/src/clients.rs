//! The client table (DynamoDB): one item per client, read with a paginated Scan and
//! filtered by id range and shard. A malformed item fails that client only, with a
//! message naming the attribute and what it should hold.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use rust_decimal::Decimal;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub client_id: String,
    pub client_name: String,
    pub robocorp_org_id: String,
    pub robocorp_workspace_id: String,
    pub clickup_task_id: String,
    pub qbo_customer_id: Option<String>,
    pub rate_per_minute: Option<Decimal>,
    pub active: bool,
}

impl ClientRow {
    /// The QBO customer's DisplayName when no `qbo_customer_id` is set.
    pub fn display_name(&self) -> String {
        format!("{} - {}", self.client_id, self.client_name)
    }
    pub fn number(&self) -> u64 {
        self.client_id.parse().unwrap_or(0)
    }
}

/// An item that could not be read; `key` is its `client_id` when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadItem {
    pub key: String,
    pub problems: Vec<String>,
}

/// `--shard K/N`: this task takes the clients whose id mod N is K-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub k: u64,
    pub n: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a shard; write K/N with 1 <= K <= N, e.g. 2/4");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n) = (
            k.trim().parse::<u64>().map_err(|_| bad())?,
            n.trim().parse::<u64>().map_err(|_| bad())?,
        );
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        Ok(Self { k, n })
    }
}

/// Which clients a run takes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection {
    pub range: (Option<u64>, Option<u64>),
    pub shard: Option<Shard>,
}

impl Selection {
    /// Items without a readable numeric id are always taken, so they are reported.
    pub fn takes(&self, client_id: &str) -> bool {
        let Ok(n) = client_id.parse::<u64>() else {
            return true;
        };
        self.range.0.is_none_or(|lo| n >= lo)
            && self.range.1.is_none_or(|hi| n <= hi)
            && self.shard.is_none_or(|s| n % s.n == s.k - 1)
    }
}

/// Every item of the table in the selection, parsed or not, ordered by client id.
pub async fn scan(
    db: &Client,
    table: &str,
    selection: Selection,
) -> Result<Vec<Result<ClientRow, BadItem>>> {
    let items: Vec<HashMap<String, AttributeValue>> = db
        .scan()
        .table_name(table)
        .into_paginator()
        .items()
        .send()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| Error::aws(format!("scanning the client table {table}"), &e))?;
    let mut rows: Vec<Result<ClientRow, BadItem>> = items
        .iter()
        .map(parse)
        .filter(|r| match r {
            Ok(row) => selection.takes(&row.client_id),
            Err(bad) => selection.takes(&bad.key),
        })
        .collect();
    let key = |r: &Result<ClientRow, BadItem>| match r {
        Ok(row) => (row.number(), row.client_id.clone()),
        Err(bad) => (bad.key.parse().unwrap_or(0), bad.key.clone()),
    };
    rows.sort_by_key(key);
    Ok(rows)
}

/// Reads one item; every problem is listed, not just the first.
pub fn parse(item: &HashMap<String, AttributeValue>) -> Result<ClientRow, BadItem> {
    let mut problems = Vec::new();
    let mut text = |name: &str, required: bool| -> Option<String> {
        match item.get(name) {
            Some(AttributeValue::S(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(AttributeValue::S(_)) => {
                problems.push(format!("{name} is empty"));
                None
            }
            Some(AttributeValue::N(n)) if name == "client_id" || name == "qbo_customer_id" => {
                Some(n.clone())
            }
            Some(other) => {
                problems.push(format!(
                    "{name} must be a string (S), found {}",
                    kind(other)
                ));
                None
            }
            None if required => {
                problems.push(format!("{name} is missing"));
                None
            }
            None => None,
        }
    };
    let client_id = text("client_id", true);
    let client_name = text("client_name", true);
    let org = text("robocorp_org_id", true);
    let workspace = text("robocorp_workspace_id", true);
    let task = text("clickup_task_id", true);
    let customer = text("qbo_customer_id", false);
    if let Some(id) = &client_id
        && id.parse::<u64>().is_err()
    {
        problems.push(format!(
            "client_id {id:?} is not numeric text such as \"10001\""
        ));
    }
    let rate = match item.get("rate_per_minute") {
        None => None,
        Some(AttributeValue::N(n) | AttributeValue::S(n)) => match n.trim().parse::<Decimal>() {
            Ok(d) if d > Decimal::ZERO => Some(d),
            _ => {
                problems.push(format!(
                    "rate_per_minute {n:?} is not a positive number such as 1.25"
                ));
                None
            }
        },
        Some(other) => {
            problems.push(format!(
                "rate_per_minute must be a number (N), found {}",
                kind(other)
            ));
            None
        }
    };
    let active = match item.get("active") {
        None => true,
        Some(AttributeValue::Bool(b)) => *b,
        Some(other) => {
            problems.push(format!(
                "active must be a boolean (BOOL), found {}",
                kind(other)
            ));
            true
        }
    };
    match (client_id, client_name, org, workspace, task) {
        (
            Some(client_id),
            Some(client_name),
            Some(robocorp_org_id),
            Some(robocorp_workspace_id),
            Some(clickup_task_id),
        ) if problems.is_empty() => Ok(ClientRow {
            client_id,
            client_name,
            robocorp_org_id,
            robocorp_workspace_id,
            clickup_task_id,
            qbo_customer_id: customer,
            rate_per_minute: rate,
            active,
        }),
        (client_id, ..) => Err(BadItem {
            key: client_id.unwrap_or_else(|| "(no client_id)".into()),
            problems,
        }),
    }
}

fn kind(v: &AttributeValue) -> &'static str {
    match v {
        AttributeValue::S(_) => "a string (S)",
        AttributeValue::N(_) => "a number (N)",
        AttributeValue::Bool(_) => "a boolean (BOOL)",
        AttributeValue::Null(_) => "NULL",
        AttributeValue::M(_) => "a map (M)",
        AttributeValue::L(_) => "a list (L)",
        _ => "another type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }
    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    #[test]
    fn a_malformed_item_lists_every_problem() {
        let bad = parse(&item(&[
            ("client_id", s("10003")),
            ("client_name", s("Acme")),
            ("robocorp_org_id", s("org")),
            ("robocorp_workspace_id", AttributeValue::N("42".into())),
            ("rate_per_minute", s("cheap")),
        ]))
        .unwrap_err();
        assert_eq!(bad.key, "10003");
        assert_eq!(
            bad.problems,
            [
                "robocorp_workspace_id must be a string (S), found a number (N)",
                "clickup_task_id is missing",
                "rate_per_minute \"cheap\" is not a positive number such as 1.25"
            ]
        );
    }

    #[test]
    fn shards_split_clients_disjointly_and_completely() {
        let shards: Vec<Selection> = (1..=3)
            .map(|k| Selection {
                shard: Some(Shard { k, n: 3 }),
                ..Selection::default()
            })
            .collect();
        for id in 10001..10031 {
            let takers = shards.iter().filter(|s| s.takes(&id.to_string())).count();
            assert_eq!(takers, 1, "client {id}");
        }
        assert!("0/3".parse::<Shard>().is_err());
        assert!("4/3".parse::<Shard>().is_err());
        let range = Selection {
            range: (Some(10010), Some(10020)),
            shard: None,
        };
        assert!(range.takes("10010") && range.takes("10020") && !range.takes("10021"));
    }
}
