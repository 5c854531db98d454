//! `deployer`: puts the invoice processor on AWS ECS Fargate. This file only parses the
//! command line and dispatches; each command lives in `commands/`.

use std::process::ExitCode;

use clap::Parser as _;

mod aws;
mod cli;
mod commands;
mod deployed;
mod engine;
mod error;
mod image;
mod lock;
mod output;
mod resolve;
mod resources;
mod wait;

#[tokio::main]
async fn main() -> ExitCode {
    // The command reference, docs/reference/deployer.md, is generated from these
    // definitions by this hidden flag; a test fails when the checked-in copy is stale.
    if std::env::args().nth(1).as_deref() == Some("--markdown-help") {
        let options = clap_markdown::MarkdownOptions::new()
            .title("`deployer` command reference".to_owned())
            .show_footer(false);
        print!(
            "{}",
            clap_markdown::help_markdown_custom::<cli::Cli>(&options)
        );
        return ExitCode::SUCCESS;
    }
    let cli = cli::Cli::parse();
    match Box::pin(commands::run(&cli)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error::Error::ChangesPending) => ExitCode::from(error::CHANGES_PENDING),
        Err(error::Error::Interrupted) => ExitCode::from(130),
        Err(err) => {
            if err.is_broken_pipe() {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err}");
            if let Some(help) = err.help() {
                eprintln!("help: {help}");
            }
            ExitCode::from(err.exit_code())
        }
    }
}
