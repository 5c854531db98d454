//! The jobs as their users meet them: the real binary, run as a process against moto
//! (secrets, client table) and the SaaS fakes on loopback, asserting what ends up in
//! the fakes, the secret, the log lines and the exit code.

mod billing_rules;
mod check;
mod create;
mod docs;
mod exactly_once;
mod send;

use std::process::Stdio;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use fakes::emulators::Moto;
use fakes::generate::{Month, SECRET_NAMES, STATE_TABLE, TABLE};
use fakes::server::Fakes;
use serde_json::Value;
use tokio::process::{Child, Command};

/// How long the job waits for a lost write to surface before it sends it again: the
/// fakes answer within this, and `late_run` faults land within it.
const SETTLE: Duration = Duration::from_secs(3);

/// One moto, one fakes server, and the generated month seeded into both.
struct World {
    moto: Moto,
    fakes: Fakes,
    month: Month,
    sdk: aws_setup::SdkConfig,
    /// The jobs' working directory: what a dry run writes lands here.
    dir: tempfile::TempDir,
}

async fn world(clients: usize, tune: impl FnOnce(&mut Month)) -> World {
    world_of(fakes::generate::month(clients, 2026, 10), tune).await
}

/// One moto, one fakes server, and `month` seeded into both.
async fn world_of(mut month: Month, tune: impl FnOnce(&mut Month)) -> World {
    let moto = Moto::start().expect("moto starts (make tools installs it)");
    // ClickUp's Business Plus plan, as the practice has; tests of the limits lower it.
    month.seed.limits.insert(
        "clickup".into(),
        fakes::control::Limits {
            per_minute: Some(1000),
            ..fakes::control::Limits::default()
        },
    );
    tune(&mut month);
    let fakes = Fakes::start(&month.seed).await.expect("fakes start");
    let sdk = aws_setup::load(&aws_setup::AwsOptions {
        profile: None,
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint()),
    })
    .await
    .into_builder()
    .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
        "testing", "testing", None, None, "moto",
    )))
    .build();
    fakes::aws_seed::seed(&sdk, &month, TABLE)
        .await
        .expect("seeding moto");
    fakes::aws_seed::state_table(&sdk, STATE_TABLE)
        .await
        .expect("the job-state table");
    World {
        moto,
        fakes,
        month,
        sdk,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// What one run printed and returned.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    lines: Vec<Value>,
}

impl Run {
    fn events(&self, name: &str) -> Vec<&Value> {
        self.lines.iter().filter(|l| l["event"] == name).collect()
    }
    fn finished(&self) -> &Value {
        let last = self.lines.last().expect("a log line");
        assert_eq!(
            last["event"], "run_finished",
            "the last line is run_finished"
        );
        // The alarms' metric filters read `success` and `dry_run`: both always there.
        assert!(last["success"].is_boolean(), "{last}");
        assert!(last["dry_run"].is_boolean(), "{last}");
        last
    }
}

impl World {
    /// The environment the task definition gives the job, pointed at moto and the
    /// fakes (what a dry run writes goes to the temporary directory, a task's /tmp).
    fn job_env(&self) -> Vec<(&'static str, String)> {
        let url = self.fakes.url();
        vec![
            ("TMPDIR", self.dir.path().display().to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.moto.endpoint()),
            ("QBO_SECRET_NAME", SECRET_NAMES[0].into()),
            ("MSGRAPH_SECRET_NAME", SECRET_NAMES[1].into()),
            ("CLICKUP_SECRET_NAME", SECRET_NAMES[2].into()),
            ("ROBOCORP_API_SECRET_NAME", SECRET_NAMES[3].into()),
            ("DYNAMODB_TABLE_ROBOCORP_CLIENTS", TABLE.into()),
            ("JOB_STATE_TABLE", STATE_TABLE.into()),
            // QBO ends a request after 120 s; the fakes after a few (see `SETTLE`).
            ("WRITE_SETTLE_SECONDS", SETTLE.as_secs().to_string()),
            ("BOOKKEEPER_EMAIL", "bookkeeper@example.com".into()),
            ("SENDER_EMAIL", "billing@example.com".into()),
            ("EXCLUDED_CUSTOMERS", self.month.excluded.join(",")),
            ("MS_GRAPH_HOSTNAME", "example.sharepoint.com".into()),
            ("QBO_BASE_URL", format!("{url}/qbo")),
            (
                "QBO_TOKEN_URL",
                format!("{url}/qbo/oauth2/v1/tokens/bearer"),
            ),
            ("CLICKUP_BASE_URL", format!("{url}/clickup/api/v2")),
            ("MSGRAPH_BASE_URL", format!("{url}/graph/v1.0")),
            ("MSGRAPH_LOGIN_URL", format!("{url}/login")),
            ("ROBOCORP_BASE_URL", format!("{url}/robocorp/api/v1")),
        ]
    }

    /// The job's command with the environment the task definition gives it, pointed
    /// at moto and the fakes.
    fn job(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_qbo-invoice-processor"));
        c.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.job_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str]) -> Run {
        let child = self.job(args).spawn().expect("the job starts");
        finish(child).await
    }

    /// Everything the fakes hold, as `/_fakes/state` shows it.
    async fn state(&self) -> Value {
        reqwest::get(format!("{}/_fakes/state", self.fakes.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Changes the fakes' company settings and adversarial modes.
    async fn settings(&self, change: Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/_fakes/settings", self.fakes.url()))
            .json(&change)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
    }

    /// Adds faults, after clearing those there were.
    fn faults(&self, faults: impl IntoIterator<Item = fakes::control::Fault>) {
        let mut c = self.fakes.control.0.lock().unwrap();
        c.faults.clear();
        for f in faults {
            c.add_fault(f);
        }
    }

    /// Starts the job, waits until a fault holds one of its calls, then kills it (-9).
    async fn kill_when_held(&self, args: &[&str], what: &str) {
        let before = self.fakes.control.0.lock().unwrap().hung;
        let mut child = self.job(args).spawn().unwrap();
        wait_until(what, || self.fakes.control.0.lock().unwrap().hung > before).await;
        child.start_kill().unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }

    /// The QBO secret as stored now.
    async fn qbo_secret(&self) -> Value {
        let sm = aws_sdk_secretsmanager::Client::new(&self.sdk);
        let s = sm
            .get_secret_value()
            .secret_id(SECRET_NAMES[0])
            .send()
            .await
            .unwrap();
        serde_json::from_str(s.secret_string().unwrap()).unwrap()
    }
}

/// Polls `done` every 5 ms for up to a minute.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_mins(1);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: never happened"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends SIGTERM, as ECS does on StopTask and at scale-in.
fn terminate(child: &Child) {
    let pid = child.id().expect("the job is running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn finish(mut child: Child) -> Run {
    use tokio::io::AsyncReadExt as _;
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let stdout = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf).await;
        buf
    });
    let stderr = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf).await;
        buf
    });
    let Ok(status) = tokio::time::timeout(Duration::from_mins(3), child.wait()).await else {
        child.start_kill().unwrap();
        let _ = child.wait().await;
        let out = String::from_utf8_lossy(&stdout.await.unwrap()).into_owned();
        let tail: Vec<&str> = out.lines().rev().take(40).collect();
        panic!(
            "the job did not end within 3 minutes; its last lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    };
    let status = status.expect("the job runs");
    let out = std::process::Output {
        status,
        stdout: stdout.await.unwrap(),
        stderr: stderr.await.unwrap(),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        lines,
    }
}

/// An amount of `cents` as the bookkeeper's emails show it: `56,560.14 USD`.
fn shown(cents: i64, currency: &str) -> String {
    let units = (cents.abs() / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in units.chars().enumerate() {
        if i > 0 && (units.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{grouped}.{:02} {currency}", cents.abs() % 100)
}

/// docs/reference/qbo-invoice-processor.md is `qbo-invoice-processor --markdown-help`,
/// with every flag `--help` shows.
#[test]
fn the_command_reference_is_generated_from_the_cli_and_current() {
    let reference = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/reference/qbo-invoice-processor.md");
    fakes::cli_reference::check(
        std::path::Path::new(env!("CARGO_BIN_EXE_qbo-invoice-processor")),
        &reference,
    )
    .unwrap_or_else(|e| panic!("{e}"));
}
