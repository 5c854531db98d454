//! `deployer up`: plan, confirm when access widens, apply, verify, summarise.

use serde_json::json;

use crate::cli::{Cli, Format, UpArgs};
use crate::engine;
use crate::error::{Error, Result};
use crate::output;
use crate::resources::Options;

pub async fn run(cli: &Cli, args: &UpArgs) -> Result<()> {
    let (env, aws, stack, plan) = Box::pin(super::prepare(cli, &args.plan)).await?;
    let text = args.plan.output == Format::Text;
    if text {
        output::text(&output::plan_text(&plan))?;
    }
    if !plan.has_changes() {
        if !text {
            output::json(
                &json!({"plan": plan, "summary": engine::Summary::default(), "calls": output::calls(&aws)}),
            )?;
        }
        super::report_calls(cli, &aws);
        return Ok(());
    }
    let widening = output::access_changes(&plan).iter().any(|c| c.widens);
    if widening && !args.yes {
        super::confirm("This widens IAM or network access. Apply the plan?")?;
    }
    let progress = |p: &engine::Progress| {
        if text {
            eprintln!("{}", output::progress_line(p));
        }
    };
    let result = engine::apply(&aws, &plan, Options::default(), &progress).await;
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            super::report_calls(cli, &aws);
            return Err(e);
        }
    };
    // Re-read: the account must now match the stack, once AWS shows every change.
    let say = |what: &str| {
        if text {
            eprintln!("  {what}");
        }
    };
    let left = engine::verify(&aws, &env, &stack, args.plan.adopt, &say).await?;
    if left.is_empty()
        && let Some(digest) = crate::deployed::own_digest(&env, &stack)
    {
        // Deployed: keep this image (and the one before) out of the lifecycle rule's reach.
        match Box::pin(crate::deployed::tag(cli, &aws, &env, &digest)).await {
            Ok(Some(done)) => say(&done),
            Ok(None) => {}
            Err(e) => eprintln!(
                "warning: the deploy is done, but tagging its image failed: {e}
  fix: run `deployer up --env {}` again, or the lifecycle rule may expire the image",
                env.name
            ),
        }
    }
    if text {
        output::text(&output::summary_line(&summary, &aws))?;
    } else {
        output::json(&json!({"plan": plan, "summary": summary, "calls": output::calls(&aws)}))?;
    }
    super::report_calls(cli, &aws);
    if left.is_empty() {
        Ok(())
    } else {
        Err(Error::NotConverged(left))
    }
}
