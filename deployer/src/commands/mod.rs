//! One module per command, each with `run`; the steps they share (loading the
//! environment, connecting, planning, confirming) live in `shared`.

use crate::cli::{Cli, Command};
use crate::error::Result;

pub mod cost;
pub mod destroy;
pub mod diff;
pub mod logs;
pub mod policy;
pub mod push_image;
pub mod rollback;
pub mod run_task;
pub mod shared;
pub mod status;
pub mod synth;
pub mod tasks;
pub mod up;
pub mod verify;

/// Each command's future is boxed: they hold whole AWS calls (clippy::large_futures).
pub async fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Synth(args) => synth::run(cli, args),
        Command::Diff(args) => Box::pin(diff::run(cli, args)).await,
        Command::Up(args) => Box::pin(up::run(cli, args)).await,
        Command::Destroy(args) => Box::pin(destroy::run(cli, args)).await,
        Command::PushImage(args) => Box::pin(push_image::run(cli, args)).await,
        Command::Status(args) => Box::pin(status::run(cli, args)).await,
        Command::Rollback(args) => Box::pin(rollback::run(cli, args)).await,
        Command::Logs(args) => Box::pin(logs::run(cli, args)).await,
        Command::RunTask(args) => Box::pin(run_task::run(cli, args)).await,
        Command::Tasks(args) => Box::pin(tasks::run(cli, args)).await,
        Command::Verify(args) => Box::pin(verify::run(cli, args)).await,
        Command::Cost(args) => cost::run(cli, args),
        Command::Policy(args) => policy::run(cli, args),
        Command::Completions(args) => {
            use clap::CommandFactory as _;
            // Into a buffer first: the generator panics on a closed pipe (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "deployer", &mut script);
            crate::output::text(&String::from_utf8_lossy(&script))
        }
    }
}
