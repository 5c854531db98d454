//! The environment file (`infra/envs/NAME.toml`): its schema, defaults and loading.
//! Every default is the name the original deployment used, so `prod.toml` can spell
//! them out and a test environment can stay short.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Problem, Result};

/// The job flags a schedule's command must choose between.
pub const JOB_FLAGS: [&str; 3] = ["--create-invoices", "--send-invoices", "--check-billed"];

/// One deployment environment: the validated file and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Environment {
    /// The file's stem (`prod` for `prod.toml`); it becomes the `env` tag.
    pub name: String,
    pub path: PathBuf,
    pub file: EnvFile,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvFile {
    /// The `app` tag on every resource, and the start of the names the stack makes up
    /// (the task-failed rule, the metric filters, the alarms).
    #[serde(default = "defaults::app")]
    pub app: String,
    /// The AWS region the stack is in.
    pub region: String,
    /// The AWS account id. When set, the deployer refuses any other account, and
    /// `deployer policy` names it in its ARNs.
    #[serde(default)]
    pub account: Option<String>,
    /// Where `push-image` sends the image and the task pulls it from.
    #[serde(default)]
    pub registry: Registry,
    /// The ECR repository of the job's images.
    #[serde(default)]
    pub repository: RepositoryConfig,
    /// The job's log group.
    #[serde(default)]
    pub logs: LogsConfig,
    /// The three IAM roles.
    #[serde(default)]
    pub roles: RolesConfig,
    /// The ECS cluster.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Where the tasks run.
    #[serde(default)]
    pub network: NetworkConfig,
    /// The task definition.
    #[serde(default)]
    pub task: TaskConfig,
    /// The four secrets' names (or full ARNs). The job reads all four; it writes only
    /// QBO's.
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// The client table, which you create (README, step 5).
    #[serde(default)]
    pub client_table: ClientTableConfig,
    /// The job's own ledger table, which `deployer up` creates.
    #[serde(default)]
    pub job_state: JobStateConfig,
    /// The job's settings, passed to the container as environment variables.
    pub job: JobConfig,
    /// When the jobs run.
    #[serde(default)]
    pub schedules: SchedulesConfig,
    /// Who hears of a failed or missed run, and how.
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// Where `push-image` sends the image and the task pulls it from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Registry {
    /// The account's own ECR registry (`ACCOUNT.dkr.ecr.REGION.amazonaws.com`).
    #[default]
    Ecr,
    /// A plain OCI registry, such as the local `docker-registry` used with moto.
    Local {
        /// The registry's `HOST:PORT`.
        url: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RepositoryConfig {
    /// The repository's name.
    pub name: String,
    /// ECR scans each image for known vulnerabilities as it is pushed.
    pub scan_on_push: bool,
    /// A tag never moves once set, except `deployed` and `previous`, which `up` moves
    /// (ECR's `IMMUTABLE_WITH_EXCLUSION`).
    pub immutable_tags: bool,
    /// Images beyond the newest N expire through a lifecycle policy; the `deployed` and
    /// `previous` images never do.
    pub keep_last_images: u32,
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        Self {
            name: defaults::app(),
            scan_on_push: true,
            immutable_tags: true,
            keep_last_images: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// The log group the job's lines go to.
    pub group: String,
    /// How long the job's lines are kept, in days (one of CloudWatch Logs' retention
    /// values); `status` shows a run older than this as ended, its lines expired.
    pub retention_days: u32,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            group: "/ecs/qbo-invoice-processor".into(),
            retention_days: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RolesConfig {
    /// The execution role, which ECS uses to pull the image and write the logs.
    pub execution: String,
    /// The task role, which the job runs as: its secrets and tables.
    pub task: String,
    /// The schedule role, which the schedules start the task as.
    pub schedule: String,
}

impl Default for RolesConfig {
    fn default() -> Self {
        Self {
            execution: "ecsTaskExecutionRole-QBOInvoiceProcessor".into(),
            task: "ecsTaskRole-QBOInvoiceProcessor".into(),
            schedule: "EventBridgeECSRole-QBOInvoiceProcessor".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The cluster's name.
    pub name: String,
    /// CloudWatch Container Insights (billed per metric); off by default for a batch job.
    pub container_insights: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: "qbo-invoice-processor-cluster".into(),
            container_insights: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// The egress-only HTTPS security group the task runs in.
    pub security_group: String,
    /// Subnet ids of one VPC. Empty: the default VPC's subnets, found at deploy time.
    pub subnets: Vec<String>,
    /// Needed in public subnets without a NAT gateway, so the task reaches ECR and the APIs.
    pub assign_public_ip: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            security_group: "qbo-invoice-processor-tasks".into(),
            subnets: Vec::new(),
            assign_public_ip: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    /// The task definition's family.
    pub family: String,
    /// The container's name.
    pub container: String,
    /// Fargate CPU units (1024 = 1 vCPU).
    pub cpu: u32,
    /// MiB; with `cpu`, a pair in Fargate's table.
    pub memory: u32,
    /// The CPU architecture the task runs on; `push-image` builds only on a machine of
    /// this architecture.
    pub architecture: Architecture,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            family: defaults::app(),
            container: "invoice-processor".into(),
            cpu: 2048,
            memory: 4096,
            architecture: Architecture::X86_64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types)]
pub enum Architecture {
    /// Intel or AMD.
    X86_64,
    /// AWS Graviton.
    ARM64,
}

impl Architecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X86_64 => "X86_64",
            Self::ARM64 => "ARM64",
        }
    }
}

/// Secrets Manager secret names (or full ARNs). The job reads all four; it writes only QBO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// QuickBooks Online's app credentials and refresh token; the job writes the
    /// rotated token back.
    pub qbo: String,
    /// The Microsoft Graph app's credentials (Mail.Send).
    pub msgraph: String,
    /// ClickUp's API token and team.
    pub clickup: String,
    /// Control Room's API keys, one per workspace.
    pub robocorp: String,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            qbo: "QBO/10000".into(),
            msgraph: "MsGraph/10000".into(),
            clickup: "ClickUp/10000".into(),
            robocorp: "RoboCorp/10000/ClientAPIKeys".into(),
        }
    }
}

impl SecretsConfig {
    /// `(key in this file, secret name)` for each secret, in a fixed order.
    pub fn entries(&self) -> [(&'static str, &str); 4] {
        [
            ("qbo", &self.qbo),
            ("msgraph", &self.msgraph),
            ("clickup", &self.clickup),
            ("robocorp", &self.robocorp),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTableConfig {
    /// The DynamoDB table of clients, one item each (docs/jobs.md, the client table).
    pub name: String,
}

impl Default for ClientTableConfig {
    fn default() -> Self {
        Self {
            name: "Robocorp_Client_Org_Workspace_IDs".into(),
        }
    }
}

/// The table the stack provisions for the job's own ledger (what the daily summary has
/// reported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct JobStateConfig {
    /// The DynamoDB table of what the job did (key `pk`, on demand).
    pub table: String,
}

impl Default for JobStateConfig {
    fn default() -> Self {
        Self {
            table: "qbo-invoice-processor-job-state".into(),
        }
    }
}

/// The job's non-secret settings, passed to the container as environment variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Who receives the billing report and the daily summary.
    pub bookkeeper_email: String,
    /// The mailbox the emails are sent from, through Microsoft Graph.
    pub sender_email: String,
    /// QBO customer display names never invoiced or emailed, e.g. `"10001 - AICPA"`.
    #[serde(default)]
    pub excluded_customers: Vec<String>,
    /// The SharePoint host, e.g. `contoso.sharepoint.com`.
    pub ms_graph_hostname: String,
    /// The billing month's time zone (an IANA name); unset, the job uses
    /// America/Los_Angeles.
    #[serde(default)]
    pub billing_timezone: Option<String>,
    /// Further variables passed as they are (API base-URL overrides, `QBO_ITEM_NAME`, ...).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulesConfig {
    /// What runs the schedules.
    pub engine: ScheduleEngine,
    /// The EventBridge Scheduler group holding the schedules (it carries the tags:
    /// schedules themselves cannot be tagged).
    pub group: String,
    /// The schedules, one `[[schedules.job]]` table each. Left out: the daily send at
    /// 05:00 and the monthly billing at 09:00 on the 4th, America/Los_Angeles.
    pub job: Vec<ScheduleConfig>,
}

impl Default for SchedulesConfig {
    fn default() -> Self {
        Self {
            engine: ScheduleEngine::Scheduler,
            group: defaults::app(),
            job: vec![
                ScheduleConfig {
                    name: "qbo-send-invoices-daily".into(),
                    cron: "0 5 * * ? *".into(),
                    timezone: "America/Los_Angeles".into(),
                    command: vec!["--send-invoices".into()],
                    enabled: true,
                    timeout: None,
                    cpu: None,
                    memory: None,
                },
                ScheduleConfig {
                    name: "qbo-create-invoices-monthly".into(),
                    cron: "0 9 4 * ? *".into(),
                    timezone: "America/Los_Angeles".into(),
                    command: vec!["--create-invoices".into()],
                    enabled: true,
                    timeout: None,
                    cpu: None,
                    memory: None,
                },
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleEngine {
    /// EventBridge Scheduler: cron in any IANA time zone, DST-correct.
    Scheduler,
    /// Classic EventBridge rules: cron in UTC only.
    Rules,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// The schedule's name.
    pub name: String,
    /// Six AWS cron fields: minutes hours day-of-month month day-of-week year.
    pub cron: String,
    /// The IANA time zone the cron is read in (`engine = "rules"`: UTC only).
    pub timezone: String,
    /// The container's arguments: exactly one job flag (`--create-invoices`,
    /// `--send-invoices` or `--check-billed`), and any others.
    pub command: Vec<String>,
    /// A disabled schedule is deployed, and does not run.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// How long a run may go on (e.g. "3h", "20m", at most "24h"), passed as
    /// `JOB_TIMEOUT` (a variable, which an image from before timeouts ignores): the job
    /// stops starting new work then, gives what is under way 25 s, logs
    /// `timed_out: true` and exits 124.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// This schedule's task size, overriding `task.cpu`/`task.memory` in the schedule's
    /// input (and in `deployer run-task`); the pair must be in the Fargate table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// MiB, with `cpu` (the other taken from `task` when only one is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
}

impl ScheduleConfig {
    /// The schedule's `timeout`, parsed (`None` when unset or not a duration).
    pub fn timeout(&self) -> Option<std::time::Duration> {
        parse_timeout(self.timeout.as_deref()?).ok()
    }

    /// The variables the schedule adds to the container's: `JOB_TIMEOUT` when it has a
    /// timeout. A variable rather than a flag: an image from before timeouts ignores it
    /// (and runs without one) where it would refuse an unknown flag, so a rollback to
    /// such an image still runs on schedule.
    pub fn environment(&self) -> std::collections::BTreeMap<String, String> {
        self.timeout
            .iter()
            .map(|t| ("JOB_TIMEOUT".to_owned(), t.trim().to_owned()))
            .collect()
    }

    /// `(cpu, memory)` a run of this schedule gets, given the task definition's.
    pub fn size(&self, task: &TaskConfig) -> (u32, u32) {
        (
            self.cpu.unwrap_or(task.cpu),
            self.memory.unwrap_or(task.memory),
        )
    }
}

/// A run's time limit, as the job's `--timeout` reads it: a friendly duration such as
/// "90m", "2h" or "1h30m", positive and at most 24 hours.
pub fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration"))?;
    let d = std::time::Duration::try_from(d).map_err(|_| format!("`{s}` is negative"))?;
    if d.is_zero() || d > std::time::Duration::from_hours(24) {
        return Err(format!("`{s}` is not between 1 s and 24 h"));
    }
    Ok(d)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// The SNS topic the alarms and the failed-task rule publish to.
    pub topic: String,
    /// Subscribed to the topic; defaults to the bookkeeper's address.
    pub email: Option<String>,
    /// CloudWatch namespace of the metrics the log filters derive from `run_finished`.
    pub metric_namespace: String,
    /// The schedule whose daily success is watched by the heartbeat alarm.
    pub heartbeat_schedule: Option<String>,
    /// When to check that the month was billed (six AWS cron fields, in the monthly
    /// schedule's time zone): a schedule `<monthly>-check` runs `--check-billed`, which
    /// fails, and so alerts, when the month's `--create-invoices` has not finished. A
    /// CloudWatch alarm cannot look back a month (at most 7 days of periods).
    pub billing_check: Option<String>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            topic: "qbo-invoice-processor-alerts".into(),
            email: None,
            metric_namespace: "QBOInvoiceProcessor".into(),
            heartbeat_schedule: Some("qbo-send-invoices-daily".into()),
            billing_check: Some("0 12 5 * ? *".into()),
        }
    }
}

mod defaults {
    pub fn app() -> String {
        "qbo-invoice-processor".into()
    }
    pub fn yes() -> bool {
        true
    }
}

/// The missed-run check's schedule, after the monthly billing schedule (the first that
/// runs `--create-invoices`), unless `alerts.billing_check` is off or the file already
/// names it.
pub(crate) fn add_billing_check(file: &mut EnvFile) {
    let Some(cron) = file.alerts.billing_check.clone() else {
        return;
    };
    let Some(monthly) = file
        .schedules
        .job
        .iter()
        .find(|s| s.command.iter().any(|c| c == "--create-invoices"))
    else {
        return;
    };
    let name = format!("{}-check", monthly.name);
    if file.schedules.job.iter().any(|s| s.name == name) {
        return;
    }
    let check = ScheduleConfig {
        name,
        cron,
        timezone: monthly.timezone.clone(),
        command: vec!["--check-billed".into()],
        enabled: monthly.enabled,
        // It reads one item: Fargate's smallest size, and a short leash.
        timeout: Some("15m".into()),
        cpu: Some(256),
        memory: Some(512),
    };
    file.schedules.job.push(check);
}

impl Environment {
    /// Finds `NAME.toml` in `dir`; a value with a `/` or ending in `.toml` is a path.
    pub fn locate(name_or_path: &str, dir: &Path) -> Result<PathBuf> {
        if is_path(name_or_path) {
            return Ok(PathBuf::from(name_or_path));
        }
        let path = dir.join(format!("{name_or_path}.toml"));
        if path.is_file() {
            return Ok(path);
        }
        let mut available: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(str::to_owned))?
            })
            .collect();
        available.sort();
        Err(Error::UnknownEnvironment {
            name: name_or_path.to_owned(),
            dir: dir.to_path_buf(),
            available,
        })
    }

    /// The value of the `env` tag and the environment's name in messages.
    pub fn tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app".to_owned(), self.file.app.clone()),
            ("env".to_owned(), self.name.clone()),
            ("managed-by".to_owned(), "deployer".to_owned()),
        ])
    }

    /// The address alerts go to: `alerts.email`, else the bookkeeper.
    pub fn alert_email(&self) -> &str {
        self.file
            .alerts
            .email
            .as_deref()
            .unwrap_or(&self.file.job.bookkeeper_email)
    }
}

/// Deserializes TOML, turning the first error into a problem with its key path and line.
pub(crate) fn parse_toml(text: &str) -> std::result::Result<EnvFile, Problem> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner();
        let line = inner
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let message = inner.message().trim().to_owned();
        let help = if message.starts_with("unknown field") {
            "remove the key or correct its spelling (see infra/envs/prod.toml for every key)"
        } else if message.starts_with("missing field") {
            "add the key; infra/envs/prod.toml shows an example of each"
        } else if message.starts_with("unknown variant") {
            "use one of the values listed"
        } else if message.starts_with("invalid type") {
            "give the value the type shown in infra/envs/prod.toml"
        } else {
            "fix the TOML syntax at this line"
        };
        Problem {
            key: if key == "." { String::new() } else { key },
            line,
            message,
            help: help.to_owned(),
        }
    })
}

/// Whether `--env` names a file rather than an environment.
pub fn is_path(name_or_path: &str) -> bool {
    name_or_path.contains('/')
        || Path::new(name_or_path)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}
