//! `deployer destroy`: delete what this environment owns, in reverse order.

use serde_json::json;

use crate::cli::{Cli, DestroyArgs, Format};
use crate::engine;
use crate::error::Result;
use crate::output;
use crate::resources::Options;

pub async fn run(cli: &Cli, args: &DestroyArgs) -> Result<()> {
    let env = super::load_environment(cli, &args.env)?;
    let aws = super::connect(cli, &env).await;
    let (ctx, _warnings) = crate::resolve::context(&aws, &env, None, false, None).await?;
    let stack = infra::synthesize(&env, &ctx);
    let plan = engine::destroy_plan(&engine::plan(&aws, &env, &stack, false).await?);
    let text = args.output == Format::Text;
    if text {
        output::text(&output::plan_text(&plan))?;
    }
    if plan.has_changes() {
        if !args.yes {
            super::confirm(&format!("Delete these resources of {}?", env.name))?;
        }
        let options = Options {
            include_images: args.include_images,
        };
        let progress = |p: &engine::Progress| {
            if text {
                eprintln!("{}", output::progress_line(p));
            }
        };
        let summary = engine::apply(&aws, &plan, options, &progress).await?;
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
    super::report_calls(cli, &aws);
    Ok(())
}
