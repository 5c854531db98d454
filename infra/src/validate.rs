//! Checks an environment file against AWS's own rules before anything touches AWS:
//! name formats, Fargate sizes, cron and time zones, emails, secrets. Each problem names
//! its key and the fix.

use std::collections::BTreeSet;

use crate::cron::Cron;
use crate::env::{EnvFile, Registry, ScheduleEngine};
use crate::error::Problem;

pub use crate::env::JOB_FLAGS;

/// Log retention values CloudWatch Logs accepts.
pub const RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// Environment variables the stack sets itself; `job.environment` may not redefine them.
pub const DERIVED_VARIABLES: [&str; 12] = [
    "AWS_REGION",
    "QBO_SECRET_NAME",
    "MSGRAPH_SECRET_NAME",
    "CLICKUP_SECRET_NAME",
    "ROBOCORP_API_SECRET_NAME",
    "DYNAMODB_TABLE_ROBOCORP_CLIENTS",
    "BOOKKEEPER_EMAIL",
    "SENDER_EMAIL",
    "EXCLUDED_CUSTOMERS",
    "MS_GRAPH_HOSTNAME",
    "BILLING_TIMEZONE",
    "JOB_STATE_TABLE",
];

pub(crate) fn environment_name(name: &str) -> Vec<Problem> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Vec::new()
    } else {
        vec![Problem::new(
            "",
            format!(
                "the file name gives the environment name `{name}`, which is not 1-32 of a-z, 0-9 and -"
            ),
            "rename the file, e.g. staging.toml",
        )]
    }
}

pub(crate) fn env_file(f: &EnvFile) -> Vec<Problem> {
    let mut v = Check::default();
    check_account(&mut v, f);
    check_repository(&mut v, f);
    check_logs(&mut v, f);
    check_roles(&mut v, f);
    check_cluster(&mut v, f);
    check_network(&mut v, f);
    check_task(&mut v, f);
    check_secrets(&mut v, f);
    check_tables(&mut v, f);
    check_job(&mut v, f);
    check_schedules(&mut v, f);
    check_alerts(&mut v, f);
    v.0
}

/// `app`, `region`, `account` and `registry`.
fn check_account(v: &mut Check, f: &EnvFile) {
    // `app` starts the names the stack makes up (`{app}-task-failed`, alarms, ...), so
    // it follows the strictest of their rules.
    v.name("app", &f.app, 1, 32, "_-", "letters, digits, _ and -");
    if !is_region(&f.region) {
        v.push(
            "region",
            format!("`{}` is not an AWS region", f.region),
            "use a region code such as us-west-2",
        );
    }
    if let Some(account) = &f.account
        && (account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()))
    {
        v.push(
            "account",
            format!("`{account}` is not a 12-digit AWS account id"),
            "write the id as a string of 12 digits, or remove the key",
        );
    }
    if let Registry::Local { url } = &f.registry
        && (url.is_empty() || url.contains("://") || url.contains('/'))
    {
        v.push(
            "registry.url",
            format!("`{url}` is not a registry host"),
            "write host:port without a scheme, e.g. 127.0.0.1:5000",
        );
    }
}

/// `[repository]`: the ECR name and how many images it keeps.
fn check_repository(v: &mut Check, f: &EnvFile) {
    let r = &f.repository;
    if !is_ecr_repository(&r.name) {
        v.push(
            "repository.name",
            format!("`{}` is not a valid ECR repository name", r.name),
            "use 2-256 lowercase letters, digits and . _ - / (starting with a letter or digit)",
        );
    }
    if !(1..=1000).contains(&r.keep_last_images) {
        v.push(
            "repository.keep_last_images",
            format!("{} is out of range", r.keep_last_images),
            "keep between 1 and 1000 images",
        );
    }
}

/// `[logs]`: the group's name and a retention CloudWatch Logs offers.
fn check_logs(v: &mut Check, f: &EnvFile) {
    v.name(
        "logs.group",
        &f.logs.group,
        1,
        512,
        "._-/#",
        "letters, digits and . _ - / #",
    );
    if !RETENTION_DAYS.contains(&f.logs.retention_days) {
        v.push(
            "logs.retention_days",
            format!(
                "{} is not a retention CloudWatch Logs offers",
                f.logs.retention_days
            ),
            format!("use one of {}", join(&RETENTION_DAYS)),
        );
    }
}

/// `[roles]`: three valid, distinct role names.
fn check_roles(v: &mut Check, f: &EnvFile) {
    for (key, name) in [
        ("roles.execution", &f.roles.execution),
        ("roles.task", &f.roles.task),
        ("roles.schedule", &f.roles.schedule),
    ] {
        v.name(key, name, 1, 64, "_+=,.@-", "letters, digits and _+=,.@-");
    }
    let roles = [&f.roles.execution, &f.roles.task, &f.roles.schedule];
    if roles.iter().collect::<BTreeSet<_>>().len() != roles.len() {
        v.push("roles", "two roles share a name", "give the execution, task and schedule roles different names: each gets only its own permissions");
    }
}

/// `[cluster]`.
fn check_cluster(v: &mut Check, f: &EnvFile) {
    v.name(
        "cluster.name",
        &f.cluster.name,
        1,
        255,
        "_-",
        "letters, digits, _ and -",
    );
}

/// `[network]`: the group's name and the subnet ids.
fn check_network(v: &mut Check, f: &EnvFile) {
    let n = &f.network;
    v.name(
        "network.security_group",
        &n.security_group,
        1,
        255,
        " ._-:/()#,@[]+=&;{}!$*",
        "ASCII letters, digits and common punctuation",
    );
    if n.security_group.starts_with("sg-") {
        v.push(
            "network.security_group",
            "names starting with `sg-` are reserved by EC2",
            "choose another name",
        );
    }
    for (i, subnet) in n.subnets.iter().enumerate() {
        let hex = subnet.strip_prefix("subnet-").unwrap_or_default();
        if ![8, 17].contains(&hex.len()) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            v.push(format!("network.subnets[{i}]"), format!("`{subnet}` is not a subnet id"), "use ids like subnet-0123456789abcdef0, or leave the list empty for the default VPC");
        }
    }
}

/// `[task]`: names, and a Fargate cpu/memory pair.
fn check_task(v: &mut Check, f: &EnvFile) {
    let t = &f.task;
    v.name(
        "task.family",
        &t.family,
        1,
        255,
        "_-",
        "letters, digits, _ and -",
    );
    v.name(
        "task.container",
        &t.container,
        1,
        255,
        "_-",
        "letters, digits, _ and -",
    );
    if let Err(msg) = fargate_size(t.cpu, t.memory) {
        v.push(
            "task.cpu/task.memory",
            msg,
            "pick a pair from the Fargate table, e.g. cpu = 2048 with memory = 4096",
        );
    }
}

/// `[client_table]` and `[job_state]`: two tables, each validly named.
fn check_tables(v: &mut Check, f: &EnvFile) {
    v.name(
        "client_table.name",
        &f.client_table.name,
        3,
        255,
        "_.-",
        "3-255 letters, digits and _ . -",
    );
    v.name(
        "job_state.table",
        &f.job_state.table,
        3,
        255,
        "_.-",
        "3-255 letters, digits and _ . -",
    );
    if f.job_state.table == f.client_table.name {
        v.push(
            "job_state.table",
            "is the client table",
            "give the job's ledger a table of its own, e.g. qbo-invoice-processor-job-state",
        );
    }
}

/// `[job]`: addresses, the Graph host, excluded customers, time zone, extra variables.
fn check_job(v: &mut Check, f: &EnvFile) {
    let j = &f.job;
    v.email("job.bookkeeper_email", &j.bookkeeper_email);
    v.email("job.sender_email", &j.sender_email);
    if !is_hostname(&j.ms_graph_hostname) {
        v.push(
            "job.ms_graph_hostname",
            format!("`{}` is not a host name", j.ms_graph_hostname),
            "give the SharePoint host only, e.g. contoso.sharepoint.com (no https://, no path)",
        );
    }
    for (i, name) in j.excluded_customers.iter().enumerate() {
        if name.trim().is_empty() || name.contains(',') {
            v.push(
                format!("job.excluded_customers[{i}]"),
                format!("`{name}` cannot be passed in the comma-separated EXCLUDED_CUSTOMERS"),
                "give the QBO display name without commas, e.g. \"10001 - AICPA\"",
            );
        }
    }
    if let Some(tz) = &j.billing_timezone {
        v.timezone("job.billing_timezone", tz);
    }
    for key in j.environment.keys() {
        let path = format!("job.environment.{key}");
        if DERIVED_VARIABLES.contains(&key.as_str()) {
            v.push(
                path,
                "this variable is set by the stack itself",
                "set it through its own key ([secrets], [client_table], [job_state], [job]) instead",
            );
        } else if !is_env_var_name(key) {
            v.push(
                path,
                "not a valid environment variable name",
                "use upper-case letters, digits and _, not starting with a digit",
            );
        }
    }
}

/// `[alerts]`: topic, address, namespace, and a daily heartbeat schedule.
fn check_alerts(v: &mut Check, f: &EnvFile) {
    let a = &f.alerts;
    v.name(
        "alerts.topic",
        &a.topic,
        1,
        256,
        "_-",
        "letters, digits, _ and -",
    );
    if let Some(email) = &a.email {
        v.email("alerts.email", email);
    }
    if a.metric_namespace.is_empty()
        || a.metric_namespace.len() > 255
        || a.metric_namespace.starts_with("AWS/")
    {
        v.push(
            "alerts.metric_namespace",
            format!(
                "`{}` cannot be a custom metric namespace",
                a.metric_namespace
            ),
            "use 1-255 characters not starting with AWS/, e.g. QBOInvoiceProcessor",
        );
    }
    if let Some(name) = &a.heartbeat_schedule {
        let help = "name an enabled schedule that runs once a day, or remove the key to have no heartbeat alarm";
        match f.schedules.job.iter().find(|s| &s.name == name) {
            None => v.push("alerts.heartbeat_schedule", format!("no schedule is named `{name}`"), help),
            Some(s) if !s.enabled || Cron::parse(&s.cron).is_ok_and(|c| !c.is_daily()) => v.push(
                "alerts.heartbeat_schedule",
                format!("`{name}` is not an enabled daily schedule; the alarm expects a success every day"),
                help,
            ),
            Some(_) => {}
        }
    }
}

fn check_secrets(v: &mut Check, f: &EnvFile) {
    let mut seen = BTreeSet::new();
    for (key, reference) in f.secrets.entries() {
        let path = format!("secrets.{key}");
        let name = secret_name(reference);
        if let Err(msg) = secret_reference(reference, &f.region) {
            v.push(
                &path,
                msg,
                "give the secret's name (e.g. QBO/10000) or its full ARN in this region",
            );
        }
        if !seen.insert(name) {
            v.push(&path, format!("`{name}` is used for two secrets"), "each of qbo, msgraph, clickup and robocorp needs its own secret: the task may write only the QBO one");
        }
    }
}

fn check_schedules(v: &mut Check, f: &EnvFile) {
    let s = &f.schedules;
    v.name(
        "schedules.group",
        &s.group,
        1,
        64,
        "-_.",
        "letters, digits and - _ .",
    );
    let mut names = BTreeSet::new();
    for (i, job) in s.job.iter().enumerate() {
        let at = |k: &str| format!("schedules.job[{i}].{k}");
        v.name(
            &at("name"),
            &job.name,
            1,
            64,
            "-_.",
            "letters, digits and - _ .",
        );
        if s.engine == ScheduleEngine::Rules && job.name == crate::names::task_failed_rule(&f.app) {
            v.push(
                at("name"),
                format!(
                    "`{}` is the name of the stack's own task-failed rule",
                    job.name
                ),
                "choose another schedule name",
            );
        }
        if !names.insert(job.name.as_str()) {
            v.push(
                at("name"),
                format!("`{}` names two schedules", job.name),
                "give each schedule its own name",
            );
        }
        if let Some(t) = &job.timeout
            && let Err(e) = crate::env::parse_timeout(t)
        {
            v.push(
                at("timeout"),
                e,
                "write a duration such as \"3h\" or \"45m\" (at most 24h), or leave it out",
            );
        }
        if job.cpu.is_some() || job.memory.is_some() {
            let (cpu, memory) = job.size(&f.task);
            if let Err(msg) = fargate_size(cpu, memory) {
                v.push(
                    format!("schedules.job[{i}].cpu/memory"),
                    msg,
                    "pick a pair from the Fargate table (e.g. cpu = 256 with memory = 512); an unset one is the task's",
                );
            }
        }
        if let Err(e) = Cron::parse(&job.cron) {
            v.push(
                at("cron"),
                format!("`{}` {e}", job.cron),
                "write six AWS cron fields, e.g. \"0 9 4 * ? *\" for 09:00 on the 4th",
            );
        }
        v.timezone(&at("timezone"), &job.timezone);
        if s.engine == ScheduleEngine::Rules && job.timezone != "UTC" {
            v.push(at("timezone"), format!("engine \"rules\" runs cron in UTC only, not {}", job.timezone), "set timezone = \"UTC\" and write the time in UTC, or use engine = \"scheduler\" for time zones");
        }
        if job.command.is_empty() || job.command.iter().any(|a| a.trim().is_empty()) {
            v.push(
                at("command"),
                "the command is empty or has an empty argument",
                "give the job's flags, e.g. [\"--send-invoices\"]",
            );
        } else {
            let flags = job
                .command
                .iter()
                .filter(|a| JOB_FLAGS.contains(&a.as_str()))
                .count();
            if flags != 1 {
                v.push(
                    at("command"),
                    format!(
                        "{:?} must contain exactly one of {}",
                        job.command,
                        JOB_FLAGS.join(" or ")
                    ),
                    "start the command with the job to run, e.g. [\"--create-invoices\"]",
                );
            }
        }
    }
}

/// The secret's name, also when it is given as a full ARN (`...:secret:NAME-AbCdEf`).
fn secret_name(reference: &str) -> &str {
    match reference.split_once(":secret:") {
        Some((_, rest)) if reference.starts_with("arn:") => {
            rest.rsplit_once('-').map_or(rest, |(name, _)| name)
        }
        _ => reference,
    }
}

/// Accepts a secret name, or a complete Secrets Manager ARN in `region`.
fn secret_reference(name: &str, region: &str) -> Result<(), String> {
    if let Some(rest) = name.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(6, ':').collect();
        let ok = parts.len() == 6
            && parts[0].starts_with("aws")
            && parts[1] == "secretsmanager"
            && parts[4] == "secret"
            && parts[3].len() == 12;
        if !ok {
            return Err(format!("`{name}` is not a Secrets Manager secret ARN"));
        }
        let suffix = parts[5]
            .rsplit_once('-')
            .map(|(_, s)| s)
            .unwrap_or_default();
        if suffix.len() != 6 || !suffix.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "`{name}` lacks the `-XXXXXX` suffix of a complete secret ARN, so no grant on it would match"
            ));
        }
        if parts[2] != region {
            return Err(format!(
                "`{name}` is in {}, but this environment is in {region}",
                parts[2]
            ));
        }
        return Ok(());
    }
    if name.is_empty() || name.len() > 512 {
        return Err("a secret name has 1-512 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c)))
    {
        return Err(format!(
            "`{name}` has `{c}`, which a secret name (and so its ARN) cannot hold"
        ));
    }
    // AWS: a name ending in -XXXXXX is ambiguous with the ARN's random suffix.
    if let Some((_, tail)) = name.rsplit_once('-')
        && tail.len() == 6
        && tail.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "`{name}` ends in a hyphen and six characters, which AWS confuses with the random suffix of a secret ARN"
        ));
    }
    Ok(())
}

/// Fargate's CPU/memory table (Linux).
pub fn fargate_size(cpu: u32, memory: u32) -> Result<(), String> {
    let (lo, hi, step) = match cpu {
        256 => {
            return if [512, 1024, 2048].contains(&memory) {
                Ok(())
            } else {
                Err(format!(
                    "cpu 256 takes memory 512, 1024 or 2048, not {memory}"
                ))
            };
        }
        512 => (1024, 4096, 1024),
        1024 => (2048, 8192, 1024),
        2048 => (4096, 16384, 1024),
        4096 => (8192, 30720, 1024),
        8192 => (16384, 61440, 4096),
        16384 => (32768, 122_880, 8192),
        _ => {
            return Err(format!(
                "cpu {cpu} is not a Fargate size; use 256, 512, 1024, 2048, 4096, 8192 or 16384"
            ));
        }
    };
    if (lo..=hi).contains(&memory) && (memory - lo).is_multiple_of(step) {
        Ok(())
    } else {
        Err(format!(
            "cpu {cpu} takes memory {lo}-{hi} MiB in steps of {step}, not {memory}"
        ))
    }
}

#[derive(Default)]
struct Check(Vec<Problem>);

impl Check {
    fn push(
        &mut self,
        key: impl Into<String>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.0.push(Problem::new(key, message, help));
    }

    /// Length and character-set rule shared by most AWS names.
    fn name(&mut self, key: &str, value: &str, min: usize, max: usize, extra: &str, allowed: &str) {
        let bad = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(*c)));
        if value.len() < min || value.len() > max || bad.is_some() {
            let why = bad.map_or_else(String::new, |c| format!(" (`{c}` is not allowed)"));
            self.push(
                key,
                format!("`{value}` is not a valid name{why}"),
                format!("use {min}-{max} characters: {allowed}"),
            );
        }
    }

    fn email(&mut self, key: &str, value: &str) {
        if !is_email(value) {
            self.push(
                key,
                format!("`{value}` is not an email address"),
                "write one address like name@example.com",
            );
        }
    }

    fn timezone(&mut self, key: &str, value: &str) {
        if jiff::tz::TimeZone::get(value).is_err() {
            self.push(
                key,
                format!("`{value}` is not an IANA time zone"),
                "use a name such as America/Los_Angeles or UTC",
            );
        }
    }
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>(),;:\"[]\\".contains(c))
        && is_hostname(domain)
        && domain.contains('.')
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts.iter().all(|p| {
            p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && !p.is_empty()
        })
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

fn is_ecr_repository(s: &str) -> bool {
    (2..=256).contains(&s.len())
        && s.split('/').all(|seg| {
            !seg.is_empty()
                && seg.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && seg.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && seg
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        })
}

fn is_env_var_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn join(values: &[u32]) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fargate_table_accepts_documented_pairs_and_rejects_others() {
        assert!(fargate_size(2048, 4096).is_ok());
        assert!(fargate_size(256, 512).is_ok());
        assert!(fargate_size(8192, 20480).is_ok());
        assert!(fargate_size(2048, 2048).unwrap_err().contains("4096-16384"));
        assert!(fargate_size(8192, 17408).is_err());
        assert!(
            fargate_size(3000, 4096)
                .unwrap_err()
                .contains("not a Fargate size")
        );
    }

    #[test]
    fn secret_references_follow_arn_rules() {
        assert!(secret_reference("RoboCorp/10000/ClientAPIKeys", "us-west-2").is_ok());
        assert!(
            secret_reference(
                "arn:aws:secretsmanager:us-west-2:123456789012:secret:QBO/10000-AbCdEf",
                "us-west-2"
            )
            .is_ok()
        );
        assert!(
            secret_reference(
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:QBO-AbCdEf",
                "us-west-2"
            )
            .unwrap_err()
            .contains("us-east-1")
        );
        assert!(
            secret_reference("QBO 10000", "us-west-2")
                .unwrap_err()
                .contains("` `")
        );
        assert!(
            secret_reference("QBO-abc123", "us-west-2")
                .unwrap_err()
                .contains("six characters")
        );
    }

    #[test]
    fn emails_hosts_and_regions() {
        assert!(is_email("books@example.com"));
        assert!(!is_email("books@example"));
        assert!(!is_email("books example.com"));
        assert!(is_hostname("contoso.sharepoint.com"));
        assert!(!is_hostname("https://contoso.sharepoint.com"));
        assert!(is_region("us-west-2") && is_region("us-gov-west-1"));
        assert!(!is_region("uswest2") && !is_region("US-WEST-2"));
    }
}
