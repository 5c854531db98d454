//! The two jobs and what they share: the AWS clients and configuration of a run, and
//! the summary that becomes the `run_finished` line and the exit code.

pub mod create;
pub mod send;

use crate::api::ApiError;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::secrets::Secrets;

/// What every job starts from.
#[derive(Debug)]
pub struct Context {
    pub config: Config,
    pub secrets: Secrets,
    pub db: aws_sdk_dynamodb::Client,
}

impl Context {
    /// AWS from the standard chain (profile, SSO, env, the ECS task role);
    /// `AWS_ENDPOINT_URL` points it at an emulator.
    pub async fn load(config: Config) -> Result<Self> {
        let sdk = aws_setup::load(&aws_setup::AwsOptions::default()).await;
        if sdk.region().is_none() {
            return Err(Error::Usage(
                "no AWS region is configured".into(),
                "set AWS_REGION (the task definition sets it), or a region in the AWS profile"
                    .into(),
            ));
        }
        Ok(Self {
            config,
            secrets: Secrets::new(aws_sdk_secretsmanager::Client::new(&sdk)),
            db: aws_sdk_dynamodb::Client::new(&sdk),
        })
    }
}

/// An error that stops the whole run, with the fix for its service.
#[allow(clippy::needless_pass_by_value)] // Reads best as `.map_err(fatal)`.
pub fn fatal(e: ApiError) -> Error {
    let fix = match (e.service, e.code.as_deref()) {
        ("qbo-oauth", Some("invalid_grant")) => {
            "reconnect the QBO app (authorization code flow) and put the new refresh_token in the QBO secret"
        }
        ("qbo-oauth", _) => "check client_id and client_secret in the QBO secret",
        ("clickup", _) => "check api_token and team_id in the ClickUp secret",
        ("graph", _) => {
            "check tenant_id, client_id and client_secret in the MsGraph secret, and that the app has Mail.Send (and Sites.ReadWrite.All to archive)"
        }
        ("secretsmanager", _) => {
            "let the task role call secretsmanager:PutSecretValue on the QBO secret"
        }
        _ => "check the service's status and the credentials in its secret, then run the job again",
    };
    Error::Fatal(e.to_string(), fix.into())
}

/// Counts of a run, and each failure with its reason.
#[derive(Debug, Default)]
pub struct Summary {
    pub job: &'static str,
    pub dry_run: bool,
    pub total: u64,
    /// Invoices created, or sent.
    pub done: u64,
    /// Would have been created or sent (dry run).
    pub would: u64,
    /// Done by an earlier run.
    pub already_done: u64,
    pub no_minutes: u64,
    pub skipped: u64,
    pub failures: Vec<(String, String)>,
    /// The send job's summary email went out.
    pub emailed: bool,
}

impl Summary {
    pub fn new(job: &'static str, dry_run: bool) -> Self {
        Self {
            job,
            dry_run,
            ..Self::default()
        }
    }

    pub fn fail(&mut self, id: &str, why: String) {
        tracing::error!(event = "client_failed", job = self.job, id, error = %why);
        self.failures.push((id.to_owned(), why));
    }

    pub fn skip(&mut self, id: &str, why: &str) {
        tracing::info!(event = "skipped", job = self.job, id, reason = why);
        self.skipped += 1;
    }

    pub fn already(&mut self, id: &str, key: &str) {
        tracing::info!(event = "already_done", job = self.job, id, key);
        self.already_done += 1;
    }

    pub fn no_minutes(&mut self, id: &str) {
        tracing::info!(
            event = "no_minutes",
            job = self.job,
            id,
            "no billable minutes this month; nothing written"
        );
        self.no_minutes += 1;
    }

    /// 0 when everything went through, 1 when some items failed.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.failures.is_empty())
    }

    pub fn log_finished(&self, duration_ms: u64) {
        let mut ids: Vec<&str> = self.failures.iter().map(|(id, _)| id.as_str()).collect();
        ids.sort_unstable();
        tracing::info!(
            event = "run_finished",
            job = self.job,
            success = self.failures.is_empty(),
            dry_run = self.dry_run,
            total = self.total,
            done = self.done,
            would = self.would,
            already_done = self.already_done,
            no_minutes = self.no_minutes,
            skipped = self.skipped,
            failed = self.failures.len(),
            failed_ids = %ids.join(","),
            emailed = self.emailed,
            duration_ms
        );
    }
}
