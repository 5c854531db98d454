//! The environment file (`infra/envs/NAME.toml`): its schema, defaults and loading.
//! Every default is the name the original deployment used, so `prod.toml` can spell
//! them out and a test environment can stay short.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvFile {
    /// The `app` tag on every resource.
    #[serde(default = "defaults::app")]
    pub app: String,
    pub region: String,
    /// When set, the deployer refuses to touch any other account.
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub registry: Registry,
    #[serde(default)]
    pub repository: RepositoryConfig,
    #[serde(default)]
    pub logs: LogsConfig,
    #[serde(default)]
    pub roles: RolesConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub task: TaskConfig,
    #[serde(default)]
    pub secrets: SecretsConfig,
    #[serde(default)]
    pub client_table: ClientTableConfig,
    #[serde(default)]
    pub job_state: JobStateConfig,
    pub job: JobConfig,
    #[serde(default)]
    pub schedules: SchedulesConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// Where `push-image` sends the image and the task pulls it from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Registry {
    /// The account's own ECR registry (`ACCOUNT.dkr.ecr.REGION.amazonaws.com`).
    #[default]
    Ecr,
    /// A plain OCI registry, such as the local `docker-registry` used with moto.
    Local { url: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepositoryConfig {
    pub name: String,
    pub scan_on_push: bool,
    pub immutable_tags: bool,
    /// Older images beyond this count expire through a lifecycle policy.
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    pub group: String,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolesConfig {
    /// Used by ECS to pull the image and write logs.
    pub execution: String,
    /// Assumed by the job itself: secrets and the client table.
    pub task: String,
    /// Assumed by the schedules to start the task.
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// The egress-only HTTPS security group the task runs in.
    pub security_group: String,
    /// Empty: the default VPC's subnets, found at deploy time.
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    pub family: String,
    pub container: String,
    /// Fargate CPU units (1024 = 1 vCPU).
    pub cpu: u32,
    /// MiB; must be a valid Fargate pairing with `cpu`.
    pub memory: u32,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(non_camel_case_types)]
pub enum Architecture {
    X86_64,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    pub qbo: String,
    pub msgraph: String,
    pub clickup: String,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTableConfig {
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobStateConfig {
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub bookkeeper_email: String,
    pub sender_email: String,
    /// QBO customer display names never invoiced or emailed, e.g. `"10001 - AICPA"`.
    #[serde(default)]
    pub excluded_customers: Vec<String>,
    /// The SharePoint host, e.g. `contoso.sharepoint.com`.
    pub ms_graph_hostname: String,
    #[serde(default)]
    pub billing_timezone: Option<String>,
    /// Further variables passed as they are (API base-URL overrides, `QBO_ITEM_NAME`, ...).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulesConfig {
    pub engine: ScheduleEngine,
    /// The EventBridge Scheduler group holding the schedules (it carries the tags:
    /// schedules themselves cannot be tagged).
    pub group: String,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleEngine {
    /// EventBridge Scheduler: cron in any IANA time zone, DST-correct.
    Scheduler,
    /// Classic EventBridge rules: cron in UTC only.
    Rules,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub name: String,
    /// Six AWS cron fields: minutes hours day-of-month month day-of-week year.
    pub cron: String,
    pub timezone: String,
    /// The container command override: the job's flags.
    pub command: Vec<String>,
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// How long a run may go on (e.g. "3h", "20m"): the job stops starting new work
    /// then, gives what is under way 25 s, and logs `timed_out: true` (JOB_TIMEOUT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// This schedule's task size, overriding `task.cpu`/`task.memory` in the schedule's
    /// input (and in `deployer run-task`); the pair must be in the Fargate table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
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
