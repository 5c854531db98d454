//! `deployer diff`: the plan, with no mutating call.

use serde_json::json;

use crate::cli::{Cli, DiffArgs, Format};
use crate::error::Result;
use crate::output;

pub async fn run(cli: &Cli, args: &DiffArgs) -> Result<()> {
    let (_env, aws, _stack, plan) = Box::pin(super::shared::prepare(cli, &args.plan)).await?;
    match args.plan.output {
        Format::Json => output::json(&json!({
            "plan": plan,
            "access_changes": output::access_changes(&plan),
            "calls": output::calls(&aws),
        }))?,
        Format::Text => output::text(&output::plan_text(&plan))?,
    }
    super::shared::report_calls(cli, &aws);
    if args.exit_code && plan.has_changes() {
        return Err(crate::error::Error::ChangesPending);
    }
    Ok(())
}
