//! The command line: global options and one subcommand per operation.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Deploys the QBO invoice processor to AWS ECS Fargate from an environment file.
///
/// Environments are TOML files in infra/envs/ (prod.toml, local.toml): `--env prod`
/// reads infra/envs/prod.toml, found from the current directory upwards. AWS
/// credentials come from the standard chain (AWS_PROFILE, SSO, environment, instance
/// role); AWS_ENDPOINT_URL points every call at an emulator such as moto.
///
/// Exit codes: 0 done; 1 failed (an AWS call, or a `verify` check); 2 bad input or a
/// missing prerequisite (the message says which, and the fix); 3 `diff --exit-code`
/// found changes; 130 interrupted (Ctrl-C); `run-task` exits with the job's own code.
#[derive(Debug, Parser)]
#[command(
    name = "deployer",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DEPLOYER_GIT_COMMIT"), ")"),
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Directory holding the environment files, or DEPLOYER_ENV_DIR [default: infra/envs,
    /// searched upwards]
    #[arg(
        long,
        global = true,
        env = "DEPLOYER_ENV_DIR",
        hide_env = true,
        value_name = "DIR"
    )]
    pub env_dir: Option<PathBuf>,

    /// AWS profile to use instead of the default chain's
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,

    /// Also print the AWS calls made, per service and operation
    #[arg(long, short, global = true)]
    pub verbose: bool,

    /// Address of a local registry, overriding the environment file's `registry.url`;
    /// or DEPLOYER_REGISTRY
    #[arg(
        long,
        global = true,
        env = "DEPLOYER_REGISTRY",
        hide_env = true,
        value_name = "HOST:PORT"
    )]
    pub registry: Option<String>,

    /// Time zone of the times `logs`, `status`, `tasks` and `run-task` print (an IANA
    /// name, or UTC); or DEPLOYER_TZ [default: the environment's job.billing_timezone,
    /// else America/Los_Angeles, as the job bills]
    #[arg(
        long,
        global = true,
        env = "DEPLOYER_TZ",
        hide_env = true,
        value_name = "ZONE"
    )]
    pub tz: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the desired state of an environment, without touching AWS
    ///
    /// Lists every resource with its kind, name, ARN, dependencies, tags and properties,
    /// IAM policy documents in full. Values only the live account can tell (account id,
    /// default-VPC subnets, the image digest) appear as ${...} placeholders.
    Synth(SynthArgs),
    /// Show what `up` would change in the account, without changing anything
    ///
    /// Reads every resource of the stack and prints a plan: `+` create, `~` update (with
    /// each differing property), `-/+` replace, `-` delete, `!` a same-named resource
    /// without this environment's tags (left alone). IAM and security-group changes are
    /// listed again on their own. Makes no mutating call.
    Diff(DiffArgs),
    /// Make the account match the environment file
    ///
    /// Prints the plan, asks before widening IAM or network access (--yes answers),
    /// then applies it in dependency order, independent resources at once, and re-reads
    /// what it changed. A second `up` finds nothing to do and makes no mutating call,
    /// unless the image's `deployed` tag was moved meanwhile: it puts that tag back.
    Up(UpArgs),
    /// Delete every resource this environment owns
    ///
    /// Deletes only resources tagged with this environment, in reverse dependency
    /// order, after confirmation. The ECR repository is kept while it holds images,
    /// unless --include-images.
    Destroy(DestroyArgs),
    /// Build the job's image with no Docker engine and push it
    ///
    /// Builds qbo-invoice-processor in release mode (or takes --binary), assembles a
    /// reproducible OCI image (a base layer with the binary's shared libraries, CA
    /// certificates and a non-root user; an app layer with the binary and assets/) and
    /// pushes it to the environment's registry (ECR, created if missing, or a local
    /// registry), uploading only the blobs the registry lacks. Prints
    /// REPOSITORY@sha256:... last.
    PushImage(PushImageArgs),
    /// Show the schedules' next runs, the last runs, the image and the alarms
    ///
    /// For each schedule: its expression and time zone and its next three runs in that
    /// time zone (DST-correct, as EventBridge Scheduler runs them). Then every run of
    /// the last 35 days, newest first, with its result and duration (from the job's
    /// run_finished log lines), and the tasks that stopped without one (killed, out of
    /// memory, never started) with ECS's reason, from the stopped-task history the
    /// stack keeps; times in --tz. Then the image the task definition runs, each
    /// alarm's state, and whether the alert subscriptions are confirmed.
    Status(StatusArgs),
    /// Run the previous image again, or the one given
    ///
    /// Finds the newest task-definition revision that runs another image than the one
    /// deployed (or takes --to), then plans and applies like `up`: a new revision with
    /// that image, and the schedules pointed at it. A plain `up` afterwards keeps it,
    /// until a newer image is pushed.
    Rollback(RollbackArgs),
    /// Print the job's log lines, oldest first
    ///
    /// Reads the environment's log group; the job's JSON lines are shown as
    /// `TIME ZONE  EVENT  key=value ...` (times in --tz) unless --output json.
    Logs(LogsArgs),
    /// Start the job now, as its schedule would, and wait for it
    ///
    /// Runs create-invoices or send-invoices with the schedule's network settings,
    /// command (with its timeout) and size (arguments after `--` are added), streams
    /// its log lines and its state changes (PROVISIONING, PENDING, RUNNING, STOPPED with
    /// the stop code and reason) until it stops, and exits with the job's own exit code.
    /// Ctrl-C asks whether to stop the task, and exits 130 either way. --local runs the
    /// binary on this machine with the environment the task definition would give it,
    /// built offline from the environment file, instead.
    RunTask(RunTaskArgs),
    /// Check that the next run will work, without running it
    ///
    /// The deploy side: the deployed image still in its repository, roles and policies
    /// as synthesized, each schedule enabled and starting the current task-definition
    /// revision, the rest of the stack as the file says, every alert subscription
    /// confirmed, no alarm in ALARM. Then the job's read-only `--check` (secrets and
    /// their keys, the client table and items, workspace keys, the QBO item and
    /// customers, ClickUp tasks, the Graph sender) as a real task with the task role,
    /// or here with --local. One table (or --output json); exit 0 only when nothing
    /// failed, 1 otherwise.
    Verify(VerifyArgs),
    /// List the job's running and recently stopped tasks, or stop one
    ///
    /// Each task with its state, start and stop times (in --tz), the job flags it runs,
    /// and for stopped ones the exit code, stop code and reason. ECS remembers stopped
    /// tasks for about an hour; `status` keeps the longer history. --stop ID asks ECS to
    /// stop a task of this job (the job gets SIGTERM, gives what is under way 25 s, ECS
    /// kills it at 30 s, and a rerun finishes the rest).
    Tasks(TasksArgs),
    /// Estimate the stack's monthly AWS cost, without touching AWS
    ///
    /// Fargate time from the schedules (runs in an average month) and the task size,
    /// plus secrets, alarms, metrics, logs and image storage, at public list prices.
    /// How long each job runs is an assumption: set it from `deployer status`.
    Cost(CostArgs),
    /// Write the least-privilege IAM policies the deploying identity needs
    ///
    /// Offline, from the environment file: every action push-image, diff, up, destroy,
    /// rollback, run-task, tasks, verify, logs and status call, each on the stack's own
    /// resources by name (the account from the file or --account). IAM holds at most 6,144
    /// characters in a managed policy, so they come as a few, each within it: `deployer
    /// policy --env prod --out-dir policy` writes them and prints the commands that create
    /// them and attach them to the user or role that deploys.
    Policy(PolicyArgs),
    /// Print a shell completion script
    ///
    /// bash: `deployer completions bash > ~/.local/share/bash-completion/completions/deployer`;
    /// zsh: `deployer completions zsh > ~/.zfunc/_deployer`; fish: `deployer completions
    /// fish > ~/.config/fish/completions/deployer.fish`.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(flatten)]
    pub env: EnvArg,

    /// The account the ARNs name [default: the file's `account`, else any]
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,

    /// Write each managed policy to DIR/NAME.json and print the commands that create
    /// and attach them [default: print them all as one JSON object]
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<std::path::PathBuf>,

    /// The IAM user the printed commands attach the policies to
    #[arg(long, value_name = "NAME", default_value = "deployer")]
    pub user: String,

    /// Output format (without --out-dir the policies are JSON either way; text adds
    /// notes on stderr)
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct CostArgs {
    #[command(flatten)]
    pub env: EnvArg,

    /// Minutes one create-invoices run takes
    #[arg(long, default_value_t = 30.0, value_name = "MIN")]
    pub create_minutes: f64,

    /// Minutes one send-invoices run takes
    #[arg(long, default_value_t = 5.0, value_name = "MIN")]
    pub send_minutes: f64,

    /// Log volume of one run, in MB
    #[arg(long, default_value_t = 1.0, value_name = "MB")]
    pub log_mb_per_run: f64,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Job {
    /// --create-invoices
    Create,
    /// --send-invoices
    Send,
    /// --check (read-only checks of everything a run needs; `deployer verify` runs it)
    Check,
}

impl Job {
    /// The job's name, as its log lines give it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create-invoices",
            Self::Send => "send-invoices",
            Self::Check => "check",
        }
    }

    /// The job's flag.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Create => "--create-invoices",
            Self::Send => "--send-invoices",
            Self::Check => "--check",
        }
    }
}

#[derive(Debug, Args)]
pub struct RunTaskArgs {
    /// Which job to run
    #[arg(value_enum)]
    pub job: Job,

    #[command(flatten)]
    pub env: EnvArg,

    /// Print the task ARN and return without waiting
    #[arg(long, conflicts_with = "local")]
    pub no_wait: bool,

    /// Start N tasks of create-invoices, task K running `--shard K/N`. Each keeps to its
    /// Nth of QBO's and ClickUp's limits, which bound the run: shards isolate failures,
    /// or a very long month, in separate tasks and logs; they do not bill faster
    #[arg(long, default_value_t = 1, value_name = "N", conflicts_with = "local")]
    pub shards: u32,

    /// Run the binary here, with the environment the task definition would give it
    /// (built offline from the environment file), not in ECS
    #[arg(long)]
    pub local: bool,

    /// With --local: this executable (default: the qbo-invoice-processor next to this
    /// deployer, else a release build of the checkout)
    #[arg(long, value_name = "PATH", requires = "local")]
    pub binary: Option<PathBuf>,

    /// On Ctrl-C while waiting: ask whether to stop the tasks, stop them, or leave them
    /// running; the command exits 130 either way
    #[arg(long, value_enum, default_value_t = OnInterrupt::Ask, conflicts_with = "local")]
    pub on_interrupt: OnInterrupt,

    /// Output format: text makes the job's lines readable (state changes on stderr);
    /// json prints the job's lines as written, state changes among them as
    /// `task_state` lines (--no-wait: the task ARNs)
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,

    /// Arguments for the job, after `--` (e.g. -- --clients 10001-10010 --dry-run)
    #[arg(last = true, value_name = "JOB_ARGS")]
    pub extra: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub env: EnvArg,

    /// Run the job's --check on this machine (with this machine's AWS credentials and
    /// the task definition's environment) instead of as a task
    #[arg(long)]
    pub local: bool,

    /// With --local: this executable (default: the qbo-invoice-processor next to this
    /// deployer, else a release build of the checkout)
    #[arg(long, value_name = "PATH", requires = "local")]
    pub binary: Option<PathBuf>,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct TasksArgs {
    #[command(flatten)]
    pub env: EnvArg,

    /// Stop this task (its id or ARN, as the list shows it)
    #[arg(long, value_name = "ID")]
    pub stop: Option<String>,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub env: EnvArg,

    /// Keep printing new lines as they arrive (Ctrl-C stops)
    #[arg(long, short)]
    pub follow: bool,

    /// How far back to start, e.g. 30m, 2h, 7d
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub since: String,

    /// Only this task's lines (its id or ARN)
    #[arg(long, value_name = "ID")]
    pub task: Option<String>,

    /// Output format: text makes the job's JSON lines readable (times in --tz), json
    /// prints each line as the job wrote it
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,

    /// The same as --output json
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub env: EnvArg,

    /// The image digest to run (sha256:...) [default: the one before the deployed one]
    #[arg(long, value_name = "DIGEST")]
    pub to: Option<String>,

    /// Apply without asking
    #[arg(long, short)]
    pub yes: bool,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub env: EnvArg,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,

    /// Compute next runs from this instant instead of now (RFC 3339)
    #[arg(long, hide = true, value_name = "TIMESTAMP")]
    pub at: Option<jiff::Timestamp>,
}

#[derive(Debug, Args)]
pub struct PushImageArgs {
    #[command(flatten)]
    pub env: EnvArg,

    /// Use this executable instead of building one
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,

    /// Directory copied to /app/assets, where the job reads its email template first
    /// [default: the checkout's assets/]
    #[arg(long, value_name = "DIR")]
    pub assets: Option<PathBuf>,

    /// Build on this base image, pinned by digest, instead of the host's libraries:
    /// the digest then depends on the base, the binary, the assets and the commit label,
    /// not on this machine (e.g. gcr.io/distroless/cc-debian12@sha256:...; its glibc
    /// must be at least the build host's)
    #[arg(
        long,
        value_name = "REGISTRY/REPO@sha256:DIGEST",
        conflicts_with = "docker"
    )]
    pub base: Option<String>,

    /// Read the host base layer's libraries and CA certificates under this root
    /// instead of / (a mounted root filesystem of the same layout); unused with --base
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub sysroot: PathBuf,

    /// Also tag the image NAME (repeatable); a tag that already names another image
    /// where tags are immutable is left as is, with a warning
    #[arg(long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,

    /// Build with the Dockerfile and a Docker engine instead
    #[arg(long)]
    pub docker: bool,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    #[command(flatten)]
    pub env: EnvArg,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct EnvArg {
    /// Environment name (a file in the environment directory) or path to a .toml file
    #[arg(long, short = 'e', value_name = "NAME")]
    pub env: String,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub env: EnvArg,

    /// Image to run, pinned by digest [default: the newest pushed, else the deployed one]
    #[arg(long, value_name = "REGISTRY/REPOSITORY@sha256:DIGEST")]
    pub image: Option<String>,

    /// Take over same-named resources that lack this environment's tags
    #[arg(long)]
    pub adopt: bool,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub plan: PlanArgs,

    /// Exit with 3 when there are changes, 0 when there are none (1 is an error, 2 bad
    /// input)
    #[arg(long)]
    pub exit_code: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub plan: PlanArgs,

    /// Apply without asking, also when IAM or network access widens
    #[arg(long, short)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    #[command(flatten)]
    pub env: EnvArg,

    /// Delete the ECR repository even when it holds images
    #[arg(long)]
    pub include_images: bool,

    /// Delete without asking
    #[arg(long, short)]
    pub yes: bool,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Readable text
    Text,
    /// JSON, for scripts
    Json,
}

/// What to do with the tasks when Ctrl-C interrupts the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnInterrupt {
    /// Ask on the terminal; with no terminal, leave them running (and say how to stop them)
    Ask,
    /// Stop them (ECS StopTask: the job gets SIGTERM and gives what is under way 25 s;
    /// ECS kills it at 30 s)
    Stop,
    /// Leave them running
    Leave,
}
