//! Writes a generated month's secrets and client table into an AWS endpoint (moto in
//! tests and the demo), creating the secrets and the table when they are missing.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, WriteRequest,
};
use aws_setup::SdkConfig;

use crate::generate::{Attr, Month};

#[derive(Debug, thiserror::Error)]
#[error("seeding {what}: {message}")]
pub struct SeedError {
    what: String,
    message: String,
}

fn fail(what: impl Into<String>, e: impl std::error::Error) -> SeedError {
    SeedError {
        what: what.into(),
        message: aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
    }
}

/// Creates the job-state table the stack provisions (`deployer up` does it on a
/// deployment), for tests that run the job without deploying.
pub async fn state_table(config: &SdkConfig, table: &str) -> Result<(), SeedError> {
    create_table(&aws_sdk_dynamodb::Client::new(config), table, "pk").await
}

/// An on-demand table keyed by the string `key`, unless it exists.
async fn create_table(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &str,
) -> Result<(), SeedError> {
    if db.describe_table().table_name(table).send().await.is_ok() {
        return Ok(());
    }
    db.create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| fail(table, e))?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .map_err(|e| fail(table, e))?,
        )
        .send()
        .await
        .map_err(|e| fail(table, e))?;
    Ok(())
}

/// Puts each secret (creating it first if needed) and every table item into `table`.
pub async fn seed(config: &SdkConfig, month: &Month, table: &str) -> Result<(), SeedError> {
    let sm = aws_sdk_secretsmanager::Client::new(config);
    for (name, value) in &month.secrets {
        let exists = sm.describe_secret().secret_id(name).send().await.is_ok();
        if exists {
            sm.put_secret_value()
                .secret_id(name)
                .secret_string(value.to_string())
                .send()
                .await
                .map_err(|e| fail(name.clone(), e))?;
        } else {
            sm.create_secret()
                .name(name)
                .secret_string(value.to_string())
                .send()
                .await
                .map_err(|e| fail(name.clone(), e))?;
        }
    }
    let db = aws_sdk_dynamodb::Client::new(config);
    create_table(&db, table, "client_id").await?;
    for chunk in month.items.chunks(25) {
        let mut requests = Vec::new();
        for item in chunk {
            let item = item
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Attr::S(s) => AttributeValue::S(s.clone()),
                        Attr::N(n) => AttributeValue::N(n.clone()),
                        Attr::Bool(b) => AttributeValue::Bool(*b),
                    };
                    (k.clone(), v)
                })
                .collect();
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(|e| fail(table, e))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        db.batch_write_item()
            .request_items(table, requests)
            .send()
            .await
            .map_err(|e| fail(table, e))?;
    }
    Ok(())
}
