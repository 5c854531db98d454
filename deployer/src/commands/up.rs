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
    // The heartbeat's start, the subscription check and the verification are
    // independent reads and writes: at once.
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
    let (left, (), pending) = tokio::try_join!(
        Box::pin(engine::verify(&aws, &env, &stack, args.plan.adopt, &say)),
        arm_heartbeats(&aws, &plan),
        pending,
    )?;
    for endpoint in pending {
        eprintln!(
            "warning: alerts to {endpoint} are pending: open the confirmation email AWS sent there (it lapses after 48 hours; `deployer up` then subscribes again)"
        );
    }
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

/// For each heartbeat alarm (one counting data points) this `up` created or changed
/// from another statistic: one data point that is not a success, so its hours count
/// from now and it does not fire before the job's first run could succeed.
async fn arm_heartbeats(aws: &crate::aws::Aws, plan: &engine::Plan) -> Result<()> {
    use aws_sdk_cloudwatch::types::MetricDatum;
    for step in &plan.steps {
        let infra::resources::Spec::Alarm(alarm) = &step.resource.properties else {
            continue;
        };
        let armed_before = match step.action {
            engine::Action::Create => false,
            engine::Action::Update => !step
                .changes
                .iter()
                .any(|c| c.path == "properties.statistic"),
            _ => true,
        };
        if alarm.statistic != "SampleCount" || armed_before {
            continue;
        }
        aws.cloudwatch
            .put_metric_data()
            .namespace(&alarm.namespace)
            .metric_data(
                MetricDatum::builder()
                    .metric_name(&alarm.metric_name)
                    .value(infra::stack::HEARTBEAT_ARMING)
                    .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from(
                        std::time::SystemTime::now(),
                    ))
                    .build(),
            )
            .send()
            .await
            .map_err(crate::resources::aws_error(
                "record the heartbeat's start in",
                &alarm.metric_name,
            ))?;
    }
    Ok(())
}
