//! A monthly cost estimate of an environment's stack: Fargate time from the schedules
//! (runs in an average month, counted with the same cron engine the status command
//! uses) and the task size, plus the fixed monthly items (secrets, alarms, custom
//! metrics, image storage, logs). Pure: the prices are public list prices, below.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::cron::Cron;
use crate::resources::Kind;
use crate::{Context, Environment, synthesize};

/// Public list prices in USD for us-east-1 and us-west-2 (Linux, on demand), as
/// published on the AWS pricing pages in November 2026. Other regions differ by a few
/// percent; the estimate says so.
pub mod price {
    /// Fargate, per vCPU-hour (x86_64; ARM64 is about 20% less).
    pub const FARGATE_VCPU_HOUR: f64 = 0.040_48;
    /// Fargate, per GB-hour of memory (x86_64).
    pub const FARGATE_GB_HOUR: f64 = 0.004_445;
    /// Fargate on Graviton (ARM64), per vCPU-hour and GB-hour.
    pub const FARGATE_ARM_VCPU_HOUR: f64 = 0.032_38;
    pub const FARGATE_ARM_GB_HOUR: f64 = 0.003_56;
    /// Secrets Manager, per secret-month.
    pub const SECRET_MONTH: f64 = 0.40;
    /// CloudWatch, per standard-resolution alarm-month.
    pub const ALARM_MONTH: f64 = 0.10;
    /// CloudWatch, per custom metric-month (a metric filter's metric).
    pub const METRIC_MONTH: f64 = 0.30;
    /// CloudWatch Logs, per GB ingested, and per GB-month stored.
    pub const LOG_INGEST_GB: f64 = 0.50;
    pub const LOG_STORE_GB_MONTH: f64 = 0.03;
    /// ECR, per GB-month of image storage.
    pub const ECR_GB_MONTH: f64 = 0.10;
    /// The regions the prices above are for.
    pub const REGIONS: [&str; 2] = ["us-east-1", "us-west-2"];
}

/// What a run costs besides its schedule: how long each job runs, its log volume,
/// and the compressed image size.
#[derive(Debug, Clone, Copy)]
pub struct Assumptions {
    pub create_minutes: f64,
    pub send_minutes: f64,
    /// `--check-billed` reads one item; Fargate bills a minute at least.
    pub check_minutes: f64,
    pub log_mb_per_run: f64,
    pub image_mb: f64,
}

impl Default for Assumptions {
    fn default() -> Self {
        Self {
            create_minutes: 30.0,
            send_minutes: 5.0,
            check_minutes: 1.0,
            log_mb_per_run: 1.0,
            image_mb: 40.0,
        }
    }
}

/// One line of the estimate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Line {
    pub item: String,
    pub quantity: String,
    pub unit_price: String,
    pub monthly: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Estimate {
    pub lines: Vec<Line>,
    pub total: f64,
    /// Caveats to print under the table.
    pub notes: Vec<String>,
}

/// Runs of `cron` in an average month: the runs in 2027 divided by 12.
pub fn runs_per_month(cron: &Cron, tz: &TimeZone) -> f64 {
    let start: Timestamp = "2027-01-01T00:00:00Z".parse().expect("a timestamp");
    let end: Timestamp = "2028-01-01T00:00:00Z".parse().expect("a timestamp");
    let runs = cron
        .next_runs(tz, start, 800)
        .into_iter()
        .filter(|z| z.timestamp() < end)
        .count();
    #[allow(clippy::cast_precision_loss)]
    let runs = runs as f64;
    runs / 12.0
}

pub fn estimate(env: &Environment, a: &Assumptions) -> Estimate {
    let f = &env.file;
    let mut lines = Vec::new();
    let mut notes = Vec::new();
    // vCPU-hours and GB-hours: each schedule at its own size.
    let (mut vcpu_hours, mut gb_hours) = (0.0, 0.0);
    let mut runs = 0.0;
    for s in f.schedules.job.iter().filter(|s| s.enabled) {
        let (Ok(cron), Ok(tz)) = (Cron::parse(&s.cron), TimeZone::get(&s.timezone)) else {
            continue;
        };
        let per_month = runs_per_month(&cron, &tz);
        let minutes = if s.command.iter().any(|c| c == "--create-invoices") {
            a.create_minutes
        } else if s.command.iter().any(|c| c == "--check-billed") {
            a.check_minutes
        } else {
            a.send_minutes
        };
        runs += per_month;
        let (cpu, memory) = s.size(&f.task);
        let (vcpu, gb) = (f64::from(cpu) / 1024.0, f64::from(memory) / 1024.0);
        vcpu_hours += per_month * minutes / 60.0 * vcpu;
        gb_hours += per_month * minutes / 60.0 * gb;
        notes.push(format!(
            "{}: {per_month:.1} runs a month of {minutes} min each, {vcpu} vCPU / {gb} GB",
            s.name
        ));
    }
    let arm = f.task.architecture == crate::env::Architecture::ARM64;
    let (cpu_price, gb_price) = if arm {
        (price::FARGATE_ARM_VCPU_HOUR, price::FARGATE_ARM_GB_HOUR)
    } else {
        (price::FARGATE_VCPU_HOUR, price::FARGATE_GB_HOUR)
    };
    lines.push(Line {
        item: "Fargate vCPU".into(),
        quantity: format!("{vcpu_hours:.1} vCPU-h"),
        unit_price: format!("${cpu_price}/vCPU-h"),
        monthly: vcpu_hours * cpu_price,
    });
    lines.push(Line {
        item: "Fargate memory".into(),
        quantity: format!("{gb_hours:.1} GB-h"),
        unit_price: format!("${gb_price}/GB-h"),
        monthly: gb_hours * gb_price,
    });
    lines.push(Line {
        item: "Secrets Manager secrets".into(),
        quantity: "4 secrets".into(),
        unit_price: format!("${:.2}/secret", price::SECRET_MONTH),
        monthly: 4.0 * price::SECRET_MONTH,
    });
    let stack = synthesize(env, &Context::offline(env));
    #[allow(clippy::cast_precision_loss)]
    let alarms = stack.of_kind(Kind::Alarm).count() as f64;
    #[allow(clippy::cast_precision_loss)]
    let metrics = stack.of_kind(Kind::MetricFilter).count() as f64;
    lines.push(Line {
        item: "CloudWatch alarms".into(),
        quantity: format!("{alarms} alarms"),
        unit_price: format!("${:.2}/alarm", price::ALARM_MONTH),
        monthly: alarms * price::ALARM_MONTH,
    });
    lines.push(Line {
        item: "CloudWatch custom metrics (log filters)".into(),
        quantity: format!("{metrics} metrics"),
        unit_price: format!("${:.2}/metric", price::METRIC_MONTH),
        monthly: metrics * price::METRIC_MONTH,
    });
    let log_gb = runs * a.log_mb_per_run / 1024.0;
    let kept_months = f64::from(f.logs.retention_days.max(1)) / 30.4;
    lines.push(Line {
        item: format!("CloudWatch Logs ({} days kept)", f.logs.retention_days),
        quantity: format!("{log_gb:.3} GB in"),
        unit_price: format!(
            "${:.2}/GB in + ${:.2}/GB-mo",
            price::LOG_INGEST_GB,
            price::LOG_STORE_GB_MONTH
        ),
        monthly: log_gb * price::LOG_INGEST_GB
            + log_gb * kept_months.min(1.0) * price::LOG_STORE_GB_MONTH,
    });
    let kept_images = f64::from(f.repository.keep_last_images);
    let image_gb = kept_images * a.image_mb / 1024.0;
    lines.push(Line {
        item: format!("ECR image storage (last {kept_images} kept)"),
        quantity: format!("{image_gb:.2} GB"),
        unit_price: format!("${:.2}/GB-mo", price::ECR_GB_MONTH),
        monthly: image_gb * price::ECR_GB_MONTH,
    });
    lines.push(Line {
        item: "Scheduler, rule, SNS email, DynamoDB".into(),
        quantity: format!("{runs:.0} runs"),
        unit_price: "free tier or < $0.01".into(),
        monthly: 0.0,
    });
    let total = lines.iter().map(|l| l.monthly).sum();
    if !price::REGIONS.contains(&f.region.as_str()) {
        notes.push(format!(
            "prices are us-east-1's and us-west-2's; {} differs by a few percent",
            f.region
        ));
    }
    notes.push("list prices before tax, credits and the free tier; data transfer (a few MB of API calls) is left out".into());
    Estimate {
        lines,
        total,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daily_schedule_runs_about_30_times_a_month_and_a_monthly_one_once() {
        let la = TimeZone::get("America/Los_Angeles").unwrap();
        let daily = Cron::parse("0 5 * * ? *").unwrap();
        let monthly = Cron::parse("0 9 4 * ? *").unwrap();
        assert!((runs_per_month(&daily, &la) - 365.0 / 12.0).abs() < 1e-9);
        assert!((runs_per_month(&monthly, &la) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn the_prod_estimate_follows_each_schedules_size() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("envs/prod.toml");
        let env = Environment::load(&path).unwrap();
        let e = estimate(&env, &Assumptions::default());
        // 30.4 daily runs of 5 min at the send schedule's 0.5 vCPU and 1 GB, one of
        // 30 min at the task's 2 vCPU and 4 GB, the 1-min billing check at 0.25 / 0.5.
        let at = |hours: f64, vcpu: f64, gb: f64| {
            hours * (vcpu * price::FARGATE_VCPU_HOUR + gb * price::FARGATE_GB_HOUR)
        };
        let fargate =
            at(365.0 / 12.0 * 5.0 / 60.0, 0.5, 1.0) + at(0.5, 2.0, 4.0) + at(1.0 / 60.0, 0.25, 0.5);
        let got: f64 = e.lines[..2].iter().map(|l| l.monthly).sum();
        assert!((got - fargate).abs() < 1e-9, "{got} vs {fargate}");
        assert!(e.total > 1.0 && e.total < 5.0, "{}", e.total);
    }
}
