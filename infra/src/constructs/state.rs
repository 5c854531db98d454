//! The job's own ledger: what it billed, sent and reported, read by a rerun before it
//! writes again.

use super::{Builder, Made};
use crate::resources::{DynamodbTable, Resource, Spec};

pub fn job_state_table(b: &mut Builder<'_>) -> Made {
    let table = &b.file().job_state.table;
    let arn = b.arn("dynamodb", &format!("table/{table}"));
    b.made(
        Resource::new(
            table,
            Spec::DynamodbTable(DynamodbTable {
                partition_key: "pk".into(),
                billing_mode: "PAY_PER_REQUEST".into(),
            }),
        ),
        arn,
        &[],
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constructs::testing::prod;

    #[test]
    fn the_ledger_is_billed_per_request() {
        let (env, ctx) = prod();
        let mut b = Builder::new(&env, &ctx);
        let made = job_state_table(&mut b);
        assert!(
            made.arn
                .ends_with(&format!("table/{}", env.file.job_state.table))
        );
        let Spec::DynamodbTable(t) = &b.resources()[0].properties else {
            panic!("a table");
        };
        assert_eq!(t.billing_mode, "PAY_PER_REQUEST");
    }
}
