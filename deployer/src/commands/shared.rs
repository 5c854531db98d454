//! What the commands share: the environment, the AWS clients, the plan, the time zone,
//! confirmation and the call counts.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use infra::{Environment, Stack, synthesize};

use crate::aws::Aws;
use crate::cli::{Cli, EnvArg};
use crate::engine::{self, Plan};
use crate::error::{Error, Result};

/// Loads and validates the environment named on the command line.
pub fn load_environment(cli: &Cli, arg: &EnvArg) -> Result<Environment> {
    let dir = match (&cli.env_dir, infra::env::is_path(&arg.env)) {
        (Some(dir), _) => dir.clone(),
        (None, true) => PathBuf::from("."),
        (None, false) => find_env_dir()?,
    };
    let path = Environment::locate(&arg.env, &dir)?;
    Ok(Environment::load(&path)?)
}

/// `infra/envs` in the current directory or the nearest parent that has one.
fn find_env_dir() -> Result<PathBuf> {
    let cwd = std::env::current_dir()?;
    cwd.ancestors()
        .map(|d| d.join("infra/envs"))
        .find(|d| d.is_dir())
        .map(|d| relative_to(&d, &cwd))
        .ok_or(Error::NoEnvDir { cwd })
}

/// Shorter paths in messages when the directory is below the current one.
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    path.strip_prefix(base)
        .map_or_else(|_| path.to_path_buf(), Path::to_path_buf)
}

pub use crate::aws::connect;

/// Everything `diff` and `up` share: the environment, the live context, the stack and
/// the plan. Warnings go to stderr.
pub async fn prepare(
    cli: &Cli,
    args: &crate::cli::PlanArgs,
) -> Result<(Environment, Aws, Stack, Plan)> {
    let (env, aws, stack, plan, _) = Box::pin(prepare_holding(cli, args, None)).await?;
    Ok((env, aws, stack, plan))
}

/// [`prepare`], and for `command` (when named) the environment's deploy lease: a plan
/// with changes is made again once the lease is held, so what it applies was read
/// while no other command could change it. A plan with none takes no lease (and so
/// writes nothing); nor does a first `up`, before the table that holds it exists.
pub async fn prepare_holding(
    cli: &Cli,
    args: &crate::cli::PlanArgs,
    command: Option<&str>,
) -> Result<(Environment, Aws, Stack, Plan, Option<crate::lock::Held>)> {
    let env = load_environment(cli, &args.env)?;
    let aws = connect(cli, &env).await;
    let registry = match &env.file.registry {
        infra::env::Registry::Local { .. } => Some(crate::deployed::target(cli, &env).await?),
        infra::env::Registry::Ecr => None,
    };
    let (ctx, warnings) =
        crate::resolve::context(&aws, &env, args.image.as_deref(), true, registry.as_ref()).await?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let stack = synthesize(&env, &ctx);
    // The image must still be there; checked while the plan reads the account.
    let image_held = async {
        match crate::deployed::own_digest(&env, &stack, &ctx.registry_host) {
            Some(digest) => crate::deployed::ensure_held(cli, &aws, &env, &digest).await,
            None => Ok(()),
        }
    };
    let ((), plan) = tokio::try_join!(image_held, engine::plan(&aws, &env, &stack, args.adopt))?;
    // The lease lives in the job-state table: none to take before it exists.
    let table_is_new = plan.steps.iter().any(|s| {
        s.action == engine::Action::Create
            && matches!(
                s.resource.properties,
                infra::resources::Spec::DynamodbTable(_)
            )
    });
    let Some(command) = command.filter(|_| plan.has_changes() && !table_is_new) else {
        return Ok((env, aws, stack, plan, None));
    };
    let Some(held) = crate::lock::acquire(&aws, &stack, command).await? else {
        return Ok((env, aws, stack, plan, None));
    };
    match engine::plan(&aws, &env, &stack, args.adopt).await {
        Ok(plan) => Ok((env, aws, stack, plan, Some(held))),
        Err(e) => {
            held.release().await;
            Err(e)
        }
    }
}

/// The zone times are printed in: `--tz`, else the environment's billing time zone
/// (the job's own default when the file sets none).
pub fn zone(cli: &Cli, env: &Environment) -> Result<jiff::tz::TimeZone> {
    let name = cli.tz.clone().unwrap_or_else(|| {
        env.file
            .job
            .billing_timezone
            .clone()
            .unwrap_or_else(|| "America/Los_Angeles".to_owned())
    });
    jiff::tz::TimeZone::get(&name).map_err(|_| {
        Error::Prerequisite(
            format!("--tz {name} is not a time zone"),
            "give an IANA name such as America/New_York, or UTC".into(),
        )
    })
}

/// A moment as people read it: `2026-11-04 09:00:12 PST`.
pub fn local_time(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(
        |_| ms.to_string(),
        |t| {
            t.to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        },
    )
}

/// Asks on the terminal; with no terminal, refuses rather than guess.
pub fn confirm(question: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::NeedsConfirmation);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Error::Declined)
    }
}

/// With --verbose: every AWS call made, per service and operation.
pub fn report_calls(cli: &Cli, aws: &Aws) {
    if !cli.verbose {
        return;
    }
    eprintln!("AWS calls:");
    for c in aws.calls.snapshot() {
        let access = match c.access {
            aws_setup::Access::Read => "read",
            aws_setup::Access::Write => "write",
        };
        eprintln!(
            "  {:>4}  {:<5}  {}:{}",
            c.calls, access, c.service, c.operation
        );
    }
}
