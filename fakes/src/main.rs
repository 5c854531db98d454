//! `fakes`: serves the SaaS stand-ins on one loopback port, seeded with a generated
//! month, and optionally writes the matching secrets and client table into an AWS
//! endpoint. Runs until interrupted.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Parser;
use fakes::control::Limits;
use fakes::server::Fakes;

/// Local stand-ins of QuickBooks Online, ClickUp, Microsoft Graph and Control Room.
#[derive(Debug, Parser)]
#[command(
    name = "fakes",
    version,
    max_term_width = 100,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Loopback port to listen on (0 picks a free one)
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Generated clients (at least 9: the first nine are the problem cases)
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Month the generated runs fall in, YYYY-MM (default: last month in
    /// America/Los_Angeles, the job's default billing time zone)
    #[arg(long)]
    period: Option<String>,
    /// Latency added to every call, in milliseconds
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// QBO latency only, in milliseconds (default: --latency-ms)
    #[arg(long)]
    qbo_latency_ms: Option<u64>,
    /// ClickUp requests per token per minute: 100 (Free to Business plans), 1000
    /// (Business Plus), 10000 (Enterprise)
    #[arg(long, default_value_t = 100)]
    clickup_per_minute: u32,
    /// Lift QBO's documented limits (10 in flight, 10 per second, 500 per minute, 40
    /// batches per minute), which are enforced by default
    #[arg(long)]
    no_qbo_limits: bool,
    /// Write the month's secrets and client table into this AWS endpoint (moto)
    #[arg(long, value_name = "URL")]
    seed_aws: Option<String>,
    /// With --seed-aws, also create the job-state table (`deployer up` makes it on a
    /// deployment), for running the job with no deploy
    #[arg(long, value_name = "NAME", requires = "seed_aws")]
    state_table: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// A loopback proxy in front of an AWS emulator (moto) that answers as real AWS
    /// does where moto is kinder: eventually consistent reads, a network's latency,
    /// EC2's refusal to delete a security group an interface still uses, the services'
    /// model constraints (lengths, patterns, enums, ranges, from botocore's models beside
    /// moto, or FAKES_BOTOCORE_DATA), IAM's quotas, and IAM users' calls authorized
    /// against their policies. Point AWS_ENDPOINT_URL at the address it prints.
    AwsProxy(ProxyArgs),
}

#[derive(Debug, clap::Args)]
struct ProxyArgs {
    /// The emulator, e.g. http://127.0.0.1:5000
    #[arg(long, value_name = "URL")]
    upstream: String,
    /// Loopback port to listen on (0 picks a free one)
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Stale window in milliseconds: for this long after a write, reads answered
    /// before it answer the same again, and a new IAM role or security group is not
    /// found by the calls naming it (0: off)
    #[arg(long, default_value_t = 0)]
    stale_ms: u64,
    /// The least time from a call's arrival to its answer, in milliseconds, upstream's
    /// own time included (100 is a typical API round trip)
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Run ECS tasks for real (RunTask, DescribeTasks, StopTask, ListTasks) under runc,
    /// in this region: the local Fargate (needs root and runc)
    #[arg(long, value_name = "REGION")]
    fargate: Option<String>,
}

fn aws_proxy(args: &ProxyArgs) -> ExitCode {
    let upstream = args
        .upstream
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let Ok(upstream) = upstream.parse::<std::net::SocketAddr>() else {
        eprintln!(
            "error: --upstream {:?} is not http://IP:PORT (e.g. http://127.0.0.1:5000)",
            args.upstream
        );
        return ExitCode::from(2);
    };
    let fargate = match &args.fargate {
        None => None,
        Some(region) => match fakes::fargate::Fargate::new(&format!("http://{upstream}"), region) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let options = fakes::fault_proxy::Options {
        latency: std::time::Duration::from_millis(args.latency_ms),
        stale: (args.stale_ms > 0).then(|| std::time::Duration::from_millis(args.stale_ms)),
        fargate,
        ..fakes::fault_proxy::Options::default()
    };
    let proxy =
        match fakes::fault_proxy::FaultProxy::on(("127.0.0.1", args.port), upstream, options) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: cannot listen on 127.0.0.1:{}: {e}", args.port);
                return ExitCode::from(1);
            }
        };
    println!(
        "aws-proxy listening on {} -> {} (stale {} ms, latency {} ms{})",
        proxy.endpoint(),
        args.upstream,
        args.stale_ms,
        args.latency_ms,
        if args.fargate.is_some() {
            ", tasks run under runc"
        } else {
            ""
        }
    );
    let _ = std::io::Write::flush(&mut std::io::stdout());
    loop {
        std::thread::park();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // The command reference, docs/reference/fakes.md, is generated from these
    // definitions by this hidden flag; a test fails when the checked-in copy is stale.
    if std::env::args().nth(1).as_deref() == Some("--markdown-help") {
        let options = clap_markdown::MarkdownOptions::new()
            .title("`fakes` command reference".to_owned())
            .show_footer(false);
        print!("{}", clap_markdown::help_markdown_custom::<Cli>(&options));
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    if let Some(Command::AwsProxy(args)) = &cli.command {
        return aws_proxy(args);
    }
    let (year, mon) = match cli.period.as_deref().map(parse_period) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            eprintln!("error: --period: {e}");
            return ExitCode::from(2);
        }
        None => {
            // Last month where the job bills by default (its BILLING_TIMEZONE), not in
            // this machine's zone: on the 1st in UTC it can still be the 30th there.
            let tz = jiff::tz::TimeZone::get("America/Los_Angeles").expect("tzdb");
            let today = jiff::Zoned::now().with_time_zone(tz).date();
            let last = today.first_of_month().yesterday().expect("in range");
            (last.year(), last.month())
        }
    };
    if cli.clients < 9 {
        eprintln!("error: --clients must be at least 9");
        return ExitCode::from(2);
    }
    let mut month = fakes::generate::month(cli.clients, year, mon);
    let mut limits = BTreeMap::new();
    for service in fakes::control::SERVICES {
        let mut l = match service {
            "qbo" if !cli.no_qbo_limits => Limits::QBO,
            "clickup" => Limits {
                per_minute: Some(cli.clickup_per_minute),
                ..Limits::default()
            },
            _ => Limits::default(),
        };
        l.latency_ms = match service {
            "qbo" => cli.qbo_latency_ms.unwrap_or(cli.latency_ms),
            _ => cli.latency_ms,
        };
        limits.insert(service.to_owned(), l);
    }
    month.seed.limits = limits;
    if let Some(endpoint) = &cli.seed_aws {
        let config = aws_setup::load(&aws_setup::AwsOptions {
            endpoint_url: Some(endpoint.clone()),
            ..aws_setup::AwsOptions::default()
        })
        .await;
        if let Err(e) = fakes::aws_seed::seed(&config, &month, fakes::generate::TABLE).await {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
        if let Some(table) = &cli.state_table
            && let Err(e) = fakes::aws_seed::state_table(&config, table).await
        {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
    let server = match Fakes::start_on(&month.seed, cli.port).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen on 127.0.0.1:{}: {e}", cli.port);
            return ExitCode::from(1);
        }
    };
    println!(
        "fakes listening on {} ({} clients, runs in {year}-{mon:02}, {} to invoice)",
        server.url(),
        cli.clients,
        month.invoiced().count()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(server);
    ExitCode::SUCCESS
}

fn parse_period(s: &str) -> Result<(i16, i8), String> {
    jiff::civil::Date::strptime("%Y-%m-%d", format!("{}-01", s.trim()))
        .ok()
        .filter(|d| (2000..=2100).contains(&d.year()))
        .map(|d| (d.year(), d.month()))
        .ok_or_else(|| format!("{s:?} is not a month; write YYYY-MM, e.g. 2026-10"))
}
