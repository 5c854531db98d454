//! `qbo-invoice-processor`: the monthly create-invoices and daily send-invoices jobs.
//! This build parses the job's command line; the jobs themselves are not in it yet,
//! so any run stops with exit code 3 and says so.

use std::process::ExitCode;

use clap::{ArgGroup, Parser};

/// Bills the practice's clients for robot minutes through QuickBooks Online.
#[derive(Debug, Parser)]
#[command(name = "qbo-invoice-processor", version, max_term_width = 100)]
#[command(group(ArgGroup::new("job").required(true).args(["create_invoices", "send_invoices"])))]
struct Cli {
    /// Monthly: robot minutes -> ClickUp time entry -> QBO invoice per client
    #[arg(long)]
    create_invoices: bool,
    /// Daily: send QBO invoices waiting to be sent, then email the bookkeeper a summary
    #[arg(long)]
    send_invoices: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let job = if cli.create_invoices {
        "create-invoices"
    } else {
        "send-invoices"
    };
    eprintln!("error: the {job} job is not part of this build yet");
    ExitCode::from(3)
}
