//! The job's own ledger, in a DynamoDB table the stack provisions (`JOB_STATE_TABLE`):
//! for the daily summary email, which invoices it has reported. A sent invoice's
//! `DeliveryInfo.DeliveryTime` in QBO says when it went out; the ledger keeps the newest
//! time the bookkeeper was told about, and a summary about to be sent (`pending`), so
//! that a run that died before its summary is caught up by the next one, and a summary
//! whose sending had no clear answer is never sent twice. Every change is conditional on
//! the version read, so two runs cannot both move the ledger.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use jiff::Timestamp;

use crate::error::{Error, Result};

const SUMMARY_KEY: &str = "send-invoices/summary";

/// The summary ledger as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryLedger {
    /// Invoices delivered up to this time have been reported.
    pub reported_through: Timestamp,
    /// A summary covering up to this time was being sent when its run ended or lost the
    /// answer: it may have been delivered.
    pub pending: Option<Timestamp>,
    version: u64,
}

#[derive(Debug, Clone)]
pub struct Ledger {
    db: Client,
    table: String,
}

impl Ledger {
    pub fn new(db: Client, table: &str) -> Self {
        Self {
            db,
            table: table.to_owned(),
        }
    }

    /// The summary ledger, if a summary was ever prepared.
    pub async fn summary(&self) -> Result<Option<SummaryLedger>> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(SUMMARY_KEY.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error("reading", &e))?;
        out.item().map(|item| self.parse(item)).transpose()
    }

    /// Starts the ledger: invoices delivered after `through` are to be reported.
    pub async fn start(&self, through: Timestamp) -> Result<SummaryLedger> {
        let out = SummaryLedger {
            reported_through: through,
            pending: None,
            version: 1,
        };
        self.db
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(SUMMARY_KEY.into()))
            .item("reported_through", AttributeValue::S(through.to_string()))
            .item("version", AttributeValue::N("1".into()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| self.error("starting", &e))?;
        Ok(out)
    }

    /// Records that a summary covering up to `through` is about to be sent.
    pub async fn begin(&self, l: &SummaryLedger, through: Timestamp) -> Result<SummaryLedger> {
        self.update(l, "SET pending_through = :p, version = :n", Some(through))
            .await?;
        Ok(SummaryLedger {
            pending: Some(through),
            version: l.version + 1,
            ..l.clone()
        })
    }

    /// The summary up to `through` is out (or may be): it will not be sent again.
    pub async fn settle(&self, l: &SummaryLedger, through: Timestamp) -> Result<SummaryLedger> {
        let through = through.max(l.reported_through);
        self.update(
            l,
            "SET reported_through = :p, version = :n REMOVE pending_through",
            Some(through),
        )
        .await?;
        Ok(SummaryLedger {
            reported_through: through,
            pending: None,
            version: l.version + 1,
        })
    }

    /// The summary surely did not go out: its invoices stay to be reported.
    pub async fn abandon(&self, l: &SummaryLedger) -> Result<SummaryLedger> {
        self.update(l, "SET version = :n REMOVE pending_through", None)
            .await?;
        Ok(SummaryLedger {
            pending: None,
            version: l.version + 1,
            ..l.clone()
        })
    }

    async fn update(&self, l: &SummaryLedger, expr: &str, at: Option<Timestamp>) -> Result<()> {
        let mut req = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(SUMMARY_KEY.into()))
            .update_expression(expr)
            .condition_expression("version = :v")
            .expression_attribute_values(":v", AttributeValue::N(l.version.to_string()))
            .expression_attribute_values(":n", AttributeValue::N((l.version + 1).to_string()));
        if let Some(at) = at {
            req = req.expression_attribute_values(":p", AttributeValue::S(at.to_string()));
        }
        req.send().await.map_err(|e| self.error("updating", &e))?;
        Ok(())
    }

    fn parse(&self, item: &HashMap<String, AttributeValue>) -> Result<SummaryLedger> {
        let time = |name: &str| -> Result<Option<Timestamp>> {
            match item.get(name) {
                None => Ok(None),
                Some(AttributeValue::S(s)) => s.parse().map(Some).map_err(|_| self.bad(name)),
                Some(_) => Err(self.bad(name)),
            }
        };
        let version = match item.get("version") {
            Some(AttributeValue::N(n)) => n.parse().map_err(|_| self.bad("version"))?,
            _ => return Err(self.bad("version")),
        };
        Ok(SummaryLedger {
            reported_through: time("reported_through")?
                .ok_or_else(|| self.bad("reported_through"))?,
            pending: time("pending_through")?,
            version,
        })
    }

    fn bad(&self, attribute: &str) -> Error {
        Error::Fatal(
            format!(
                "the item {SUMMARY_KEY} in the job-state table {} has no valid {attribute}",
                self.table
            ),
            "delete that item (the next run starts the ledger again and reports what is sent from then on)".into(),
        )
    }

    /// A missing table or no permission is configuration (exit 2); a lost race with
    /// another run, or AWS out of reach, is fatal.
    fn error<E>(&self, doing: &str, e: &aws_sdk_dynamodb::error::SdkError<E>) -> Error
    where
        E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
    {
        match e.as_service_error().and_then(|s| s.code()) {
            Some("ResourceNotFoundException") => Error::Usage(
                format!("the job-state table {} does not exist", self.table),
                "run `deployer up` (it creates the table), or set JOB_STATE_TABLE to its name".into(),
            ),
            Some("AccessDeniedException") => Error::Usage(
                format!("the job may not use the job-state table {}", self.table),
                "let the task role call dynamodb:GetItem, PutItem and UpdateItem on it (`deployer up` grants them)".into(),
            ),
            Some("ConditionalCheckFailedException") => Error::Fatal(
                format!("another send-invoices run changed the job-state table {} at the same time", self.table),
                "let one run finish; the next one reports whatever is left".into(),
            ),
            _ => Error::aws(format!("{doing} the job-state table {}", self.table), e),
        }
    }
}
