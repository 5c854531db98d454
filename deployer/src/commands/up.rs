//! `deployer up`: plan, confirm when access widens, apply, verify, summarise.

use serde_json::json;

use crate::cli::{Cli, Format, UpArgs};
use crate::engine;
use crate::error::{Error, Result};
use crate::output;
use crate::resources::Options;

pub async fn run(cli: &Cli, args: &UpArgs) -> Result<()> {
    let (env, aws, stack, plan, held) =
        Box::pin(super::shared::prepare_holding(cli, &args.plan, Some("up"))).await?;
    crate::lock::holding(held, Box::pin(apply(cli, args, env, aws, stack, plan))).await
}

async fn apply(
    cli: &Cli,
    args: &UpArgs,
    env: infra::Environment,
    aws: crate::aws::Aws,
    stack: infra::stack::Stack,
    plan: engine::Plan,
) -> Result<()> {
    let text = args.plan.output == Format::Text;
    if text {
        output::text(&output::plan_text(&plan))?;
    }
    let widening = output::access_changes(&plan).iter().any(|c| c.widens);
    if widening && !args.yes {
        super::shared::confirm("This widens IAM or network access. Apply the plan?")?;
    }
    // Before anything runs the image: keep it (and the one it replaces) out of the
    // lifecycle rule's reach. On a run with no changes this repairs a tag an earlier
    // run did not set.
    let host = crate::deployed::registry_host(cli, &env, &plan.account);
    if let Some(digest) = crate::deployed::own_digest(&env, &stack, &host)
        && let Some(done) = Box::pin(crate::deployed::tag(cli, &aws, &env, &digest)).await?
        && text
    {
        eprintln!("  {done}");
    }
    if !plan.has_changes() {
        if !text {
            output::json(
                &json!({"plan": plan, "summary": engine::Summary::default(), "calls": output::calls(&aws)}),
            )?;
        }
        super::shared::report_calls(cli, &aws);
        return Ok(());
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
            super::shared::report_calls(cli, &aws);
            return Err(e);
        }
    };
    // Re-read: the account must now match the stack, once AWS shows every change.
    let say = |what: &str| {
        if text {
            eprintln!("  {what}");
        }
    };
    // The subscription check and the verification are independent reads: at once.
    let pending = async {
        // Alerts reach no one until the address confirms.
        let Some(topic) = stack
            .of_kind(infra::resources::Kind::SnsTopic)
            .find_map(|t| t.arn.clone())
        else {
            return Ok(Vec::new());
        };
        let subs = crate::resources::sns::subscriptions(&aws, &topic).await?;
        Ok::<_, Error>(
            subs.into_iter()
                .filter(|(_, _, arn)| !arn.starts_with("arn:"))
                .map(|(_, endpoint, _)| endpoint)
                .collect::<Vec<_>>(),
        )
    };
    let (left, pending) = tokio::try_join!(
        Box::pin(engine::verify(
            &aws,
            &env,
            &stack,
            &plan,
            args.plan.adopt,
            &say
        )),
        pending,
    )?;
    for endpoint in pending {
        eprintln!(
            "warning: alerts to {endpoint} are pending: open the confirmation email AWS sent there (it lapses after 48 hours; `deployer up` then subscribes again)"
        );
    }
    if text {
        output::text(&output::summary_line(&summary, &aws))?;
    } else {
        output::json(&json!({"plan": plan, "summary": summary, "calls": output::calls(&aws)}))?;
    }
    super::shared::report_calls(cli, &aws);
    if left.is_empty() {
        Ok(())
    } else {
        Err(Error::NotConverged(left))
    }
}
