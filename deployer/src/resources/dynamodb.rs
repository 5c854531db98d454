//! DynamoDB: the job's ledger table (billed per request, keyed by one string). Its tags
//! and billing mode change in place; another key is a new table (the ledger starts
//! again: the summary then reports what is sent from then on).

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    Tag,
};
use infra::resources::{DynamodbTable, Resource, Spec, Tags};

use super::Change;
use super::{Deleted, Live, Managed, Options, Outputs, arn_of, aws_error, built, code, tag_map};
use crate::aws::Aws;
use crate::error::{Error, Result};

pub async fn read(aws: &Aws, r: &Resource) -> Result<Option<Live>> {
    let out = match aws
        .dynamodb
        .describe_table()
        .table_name(&r.name)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if code(&e) == Some("ResourceNotFoundException") => return Ok(None),
        Err(e) => return Err(aws_error("read", r.id())(e)),
    };
    let Some(table) = out
        .table()
        .filter(|t| t.table_status() != Some(&TableStatus::Deleting))
    else {
        return Ok(None);
    };
    let partition_key = table
        .key_schema()
        .iter()
        .find(|k| k.key_type() == &KeyType::Hash)
        .map(|k| k.attribute_name().to_owned())
        .unwrap_or_default();
    // A table made without a billing mode is provisioned.
    let billing_mode = table
        .billing_mode_summary()
        .and_then(|b| b.billing_mode())
        .map_or("PROVISIONED", BillingMode::as_str)
        .to_owned();
    let arn = table.table_arn().map(str::to_owned);
    let tags = match &arn {
        Some(arn) => {
            let out = aws
                .dynamodb
                .list_tags_of_resource()
                .resource_arn(arn)
                .send()
                .await
                .map_err(aws_error("read tags of", r.id()))?;
            tag_map(out.tags().iter().map(|t| (t.key(), t.value())))
        }
        None => Tags::new(),
    };
    Ok(Some(Live {
        spec: Spec::DynamodbTable(DynamodbTable {
            partition_key,
            billing_mode,
        }),
        tags: Some(tags),
        outputs: Outputs {
            id: Some(r.name.clone()),
            arn,
        },
    }))
}

pub async fn create(aws: &Aws, r: &Resource, d: &DynamodbTable) -> Result<Outputs> {
    let out = aws
        .dynamodb
        .create_table()
        .table_name(&r.name)
        .billing_mode(BillingMode::from(d.billing_mode.as_str()))
        .attribute_definitions(built(
            AttributeDefinition::builder()
                .attribute_name(&d.partition_key)
                .attribute_type(ScalarAttributeType::S)
                .build(),
        )?)
        .key_schema(built(
            KeySchemaElement::builder()
                .attribute_name(&d.partition_key)
                .key_type(KeyType::Hash)
                .build(),
        )?)
        .set_tags(Some(tags(&r.tags)?))
        .send()
        .await
        .map_err(aws_error("create", r.id()))?;
    Ok(Outputs {
        id: Some(r.name.clone()),
        arn: out
            .table_description()
            .and_then(|t| t.table_arn())
            .map(str::to_owned),
    })
}

pub async fn update(
    aws: &Aws,
    r: &Resource,
    d: &DynamodbTable,
    live: &DynamodbTable,
) -> Result<Outputs> {
    if d.billing_mode != live.billing_mode {
        aws.dynamodb
            .update_table()
            .table_name(&r.name)
            .billing_mode(BillingMode::from(d.billing_mode.as_str()))
            .send()
            .await
            .map_err(aws_error("update billing mode of", r.id()))?;
    }
    Ok(Outputs::default())
}

pub async fn delete(aws: &Aws, name: &str) -> Result<()> {
    match aws.dynamodb.delete_table().table_name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(()),
        Err(e) => Err(aws_error("delete table", name)(e)),
    }
}

pub async fn tag(aws: &Aws, arn: &str, t: &Tags) -> Result<()> {
    aws.dynamodb
        .tag_resource()
        .resource_arn(arn)
        .set_tags(Some(tags(t)?))
        .send()
        .await
        .map_err(aws_error("tag", arn))?;
    Ok(())
}

fn tags(t: &Tags) -> Result<Vec<Tag>> {
    t.iter()
        .map(|(k, v)| built(Tag::builder().key(k).value(v).build()))
        .collect()
}

impl Managed for DynamodbTable {
    const SERVICE: &'static str = "dynamodb";

    async fn read(&self, aws: &Aws, r: &Resource) -> Result<Option<Live>> {
        read(aws, r).await
    }

    async fn create(&self, aws: &Aws, r: &Resource) -> Result<Outputs> {
        create(aws, r, self).await
    }

    async fn update(
        &self,
        aws: &Aws,
        r: &Resource,
        live: &Self,
        _outputs: &Outputs,
        _changes: &[Change],
    ) -> Result<Outputs> {
        update(aws, r, self, live).await
    }

    async fn tag(&self, aws: &Aws, r: &Resource, outputs: &Outputs) -> Result<()> {
        tag(aws, arn_of(r, outputs)?, &r.tags).await
    }

    async fn delete(&self, aws: &Aws, r: &Resource, _live: &Live, _o: Options) -> Result<Deleted> {
        delete(aws, &r.name).await?;
        Ok(Deleted::Yes)
    }

    /// DynamoDB cannot change a table's key schema (UpdateTable has no key parameter).
    fn replaces(change: &Change) -> bool {
        change.path == "properties.partition_key"
    }

    /// The table is the job's ledger: a new one under the same name would mean deleting
    /// what says which invoices were already reported, so this is left to a person.
    async fn replace(&self, _aws: &Aws, r: &Resource, live: &Live) -> Result<Outputs> {
        let have = match &live.spec {
            Spec::DynamodbTable(t) => t.partition_key.clone(),
            _ => String::new(),
        };
        Err(Error::Refused(
            format!(
                "table {} is keyed by `{have}`, the stack wants `{}`, and a key cannot change in place",
                r.name, self.partition_key
            ),
            format!(
                "the table holds the job's ledger and run leases: when no run is in progress, export what you need, delete the table (`aws dynamodb delete-table --table-name {}`) and run `deployer up` again",
                r.name
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use infra::resources::{Kind, Spec};

    use crate::resources::fixture::{judge, resource};

    fn table(spec: &mut Spec) -> &mut infra::resources::DynamodbTable {
        let Spec::DynamodbTable(t) = spec else {
            panic!("a table")
        };
        t
    }

    #[test]
    fn another_key_replaces_the_table_and_billing_changes_in_place() {
        let r = resource(Kind::DynamodbTable);
        let (paths, replaced) = judge(&r, |s| table(s).partition_key = "id".into());
        assert_eq!(paths, ["properties.partition_key"]);
        assert!(replaced);
        let (paths, replaced) = judge(&r, |s| table(s).billing_mode = "PROVISIONED".into());
        assert_eq!(paths, ["properties.billing_mode"]);
        assert!(!replaced);
    }
}
