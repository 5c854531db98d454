//! `deployer destroy`: delete what this environment owns, in reverse order.

use serde_json::json;

use crate::cli::{Cli, DestroyArgs, Format};
use crate::engine;
use crate::error::Result;
use crate::output;
use crate::resources::Options;

pub async fn run(cli: &Cli, args: &DestroyArgs) -> Result<()> {
    let env = super::shared::load_environment(cli, &args.env)?;
    let aws = super::shared::connect(cli, &env).await;
    let (ctx, _warnings) = crate::resolve::context(&aws, &env, None, false, None).await?;
    let stack = infra::synthesize(&env, &ctx);
    // Deleting the table lets go of the lease with it.
    let held = crate::lock::acquire(&aws, &stack, "destroy").await?;
    crate::lock::holding(held, Box::pin(apply(cli, args, env, aws, stack))).await
}

async fn apply(
    cli: &Cli,
    args: &DestroyArgs,
    env: infra::Environment,
    aws: crate::aws::Aws,
    stack: infra::stack::Stack,
) -> Result<()> {
    let plan = engine::destroy_plan(&engine::plan(&aws, &env, &stack, false).await?);
    let text = args.output == Format::Text;
    if text {
        output::text(&output::plan_text(&plan))?;
    }
    if plan.has_changes() {
        if !args.yes {
            super::shared::confirm(&format!("Delete these resources of {}?", env.name))?;
        }
        let options = Options {
            include_images: args.include_images,
        };
        let deleted = std::sync::Mutex::new(Vec::new());
        let progress = |p: &engine::Progress| {
            if text {
                eprintln!("{}", output::progress_line(p));
            }
            if p.outcome == Ok(None) {
                deleted.lock().expect("progress lock").push(p.id.clone());
            }
        };
        let summary = engine::apply(&aws, &plan, options, &progress).await?;
        // Done once AWS shows the deletions: an `up` right after must not find them.
        let say = |what: &str| {
            if text {
                eprintln!("  {what}");
            }
        };
        let deleted = deleted.into_inner().expect("progress lock");
        let left = engine::verify_gone(&aws, &env, &stack, &deleted, &say).await?;
        if !left.is_empty() {
            eprintln!(
                "warning: AWS accepted these deletions but still shows {}; they should go within minutes",
                left.join(", ")
            );
        }
        if text {
            output::text(&output::summary_line(&summary, &aws))?;
        } else {
            output::json(&json!({"plan": plan, "summary": summary, "calls": output::calls(&aws)}))?;
        }
    } else if !text {
        output::json(
            &json!({"plan": plan, "summary": engine::Summary::default(), "calls": output::calls(&aws)}),
        )?;
    }
    super::shared::report_calls(cli, &aws);
    Ok(())
}
