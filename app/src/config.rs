//! The job's configuration, read from environment variables (names from the original
//! deployment) and checked all at once, so one run lists every problem with its fix.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::tz::TimeZone;

/// Where each service is reached: the real endpoints unless a `*_URL` variable points
/// at a stand-in.
#[derive(Debug, Clone)]
pub struct Urls {
    /// `.../v3/company/{realm}` is appended; `None` picks production or sandbox from
    /// the QBO secret's `environment`.
    pub qbo_api: Option<String>,
    pub qbo_token: String,
    pub clickup: String,
    pub graph: String,
    /// `/{tenant}/oauth2/v2.0/token` is appended.
    pub login: String,
    pub robocorp: String,
}

#[derive(Debug, Clone)]
pub struct SecretNames {
    pub qbo: String,
    pub msgraph: String,
    pub clickup: String,
    pub robocorp: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub secrets: SecretNames,
    pub table: String,
    pub bookkeeper_email: Option<String>,
    pub sender_email: Option<String>,
    /// QBO customer display names never invoiced or sent to, e.g. `10001 - AICPA`.
    pub excluded: BTreeSet<String>,
    pub ms_graph_hostname: Option<String>,
    /// With it set, each sent invoice's PDF is archived to this SharePoint site.
    pub sharepoint_site_path: Option<String>,
    /// `LOWER_CLIENT_ID..=UPPER_CLIENT_ID`, either end optional.
    pub client_range: (Option<u64>, Option<u64>),
    pub timezone: TimeZone,
    pub item_name: String,
    pub urls: Urls,
    /// The job's own state (the summary email's ledger), in DynamoDB.
    pub state_table: String,
    /// How long a service may still be working on a request after the job stopped
    /// waiting for it: QBO ends requests after 120 s (Intuit, "API call limits and
    /// throttles"), plus a margin. A write whose answer was lost is looked up again
    /// this long after it was sent before it is sent again; QBO calls time out then.
    pub settle: Duration,
    /// How many runs share the realm's and the token's budgets: `--shard K/N` runs N
    /// at once, and each keeps to its Nth.
    pub share: u32,
    /// The runs started together as one (`deployer run-task --shards` sets it), for the
    /// logs.
    pub run_group: Option<String>,
}

/// QBO's own request timeout, plus 10 s.
pub const SETTLE_DEFAULT_SECS: u64 = 130;

/// One thing wrong with the environment: the variable, what is wrong, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::struct_field_names)] // `problem` reads best in messages.
pub struct Problem {
    pub var: &'static str,
    pub problem: String,
    pub fix: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}\n  fix: {}", self.var, self.problem, self.fix)
    }
}

impl Config {
    /// Reads the variables through `var` (the process environment in production).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let or = |name: &str, default: &str| get(name).unwrap_or_else(|| default.to_owned());
        let mut email = |name: &'static str| {
            let v = get(name)?;
            if is_email(&v) {
                Some(v)
            } else {
                problems.push(Problem {
                    var: name,
                    problem: format!("{v:?} is not an email address"),
                    fix: format!("set {name} to one address, e.g. billing@example.com"),
                });
                None
            }
        };
        let bookkeeper_email = email("BOOKKEEPER_EMAIL");
        let sender_email = email("SENDER_EMAIL");
        let mut id = |name: &'static str| {
            let v = get(name)?;
            let n = v.parse::<u64>().ok();
            if n.is_none() {
                problems.push(Problem {
                    var: name,
                    problem: format!("{v:?} is not a client id"),
                    fix: format!("set {name} to a number such as 10001, or unset it"),
                });
            }
            n
        };
        let client_range = (id("LOWER_CLIENT_ID"), id("UPPER_CLIENT_ID"));
        if let (Some(lo), Some(hi)) = client_range
            && lo > hi
        {
            problems.push(Problem {
                var: "LOWER_CLIENT_ID",
                problem: format!("{lo} is above UPPER_CLIENT_ID {hi}"),
                fix: "swap the two, or unset one".into(),
            });
        }
        let settle = match get("WRITE_SETTLE_SECONDS").map(|v| (v.parse::<u64>(), v)) {
            None => Duration::from_secs(SETTLE_DEFAULT_SECS),
            Some((Ok(n), _)) if (1..=600).contains(&n) => Duration::from_secs(n),
            Some((_, v)) => {
                problems.push(Problem {
                    var: "WRITE_SETTLE_SECONDS",
                    problem: format!("{v:?} is not a number of seconds from 1 to 600"),
                    fix: format!("unset it (the default, {SETTLE_DEFAULT_SECS}, covers QBO's 120 s request timeout)"),
                });
                Duration::from_secs(SETTLE_DEFAULT_SECS)
            }
        };
        let timezone_name = or("BILLING_TIMEZONE", "America/Los_Angeles");
        let timezone = TimeZone::get(&timezone_name).unwrap_or_else(|_| {
            problems.push(Problem {
                var: "BILLING_TIMEZONE",
                problem: format!("{timezone_name:?} is not an IANA time zone"),
                fix: "use a name such as America/Los_Angeles or UTC".into(),
            });
            TimeZone::UTC
        });
        let mut url = |name: &'static str, default: &str| {
            let v = or(name, default);
            if v.starts_with("https://")
                || v.starts_with("http://127.0.0.1")
                || v.starts_with("http://localhost")
            {
                v.trim_end_matches('/').to_owned()
            } else {
                problems.push(Problem {
                    var: name,
                    problem: format!("{v:?} is not an https URL"),
                    fix: format!("unset {name} to use the real service, or give an https:// URL (http only on loopback)"),
                });
                String::new()
            }
        };
        let urls = Urls {
            qbo_api: get("QBO_BASE_URL").map(|_| url("QBO_BASE_URL", "")),
            qbo_token: url(
                "QBO_TOKEN_URL",
                "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
            ),
            clickup: url("CLICKUP_BASE_URL", "https://api.clickup.com/api/v2"),
            graph: url("MSGRAPH_BASE_URL", "https://graph.microsoft.com/v1.0"),
            login: url("MSGRAPH_LOGIN_URL", "https://login.microsoftonline.com"),
            robocorp: url("ROBOCORP_BASE_URL", "https://cloud.robocorp.com/api/v1"),
        };
        let config = Self {
            secrets: SecretNames {
                qbo: or("QBO_SECRET_NAME", "QBO/10000"),
                msgraph: or("MSGRAPH_SECRET_NAME", "MsGraph/10000"),
                clickup: or("CLICKUP_SECRET_NAME", "ClickUp/10000"),
                robocorp: or("ROBOCORP_API_SECRET_NAME", "RoboCorp/10000/ClientAPIKeys"),
            },
            table: or(
                "DYNAMODB_TABLE_ROBOCORP_CLIENTS",
                "Robocorp_Client_Org_Workspace_IDs",
            ),
            bookkeeper_email,
            sender_email,
            excluded: get("EXCLUDED_CUSTOMERS")
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            ms_graph_hostname: get("MS_GRAPH_HOSTNAME"),
            sharepoint_site_path: get("SHAREPOINT_SITE_PATH"),
            client_range,
            timezone,
            item_name: or("QBO_ITEM_NAME", "Robot Minutes"),
            urls,
            state_table: or("JOB_STATE_TABLE", "qbo-invoice-processor-job-state"),
            settle,
            share: 1,
            run_group: get("RUN_GROUP"),
        };
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// What the send job needs beyond the common settings.
    pub fn check_send(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        for (var, v) in [
            ("BOOKKEEPER_EMAIL", &self.bookkeeper_email),
            ("SENDER_EMAIL", &self.sender_email),
        ] {
            if v.is_none() {
                problems.push(Problem {
                    var,
                    problem: "is not set; the send job emails its summary".into(),
                    fix: format!("set {var} to an address, e.g. billing@example.com"),
                });
            }
        }
        if self.sharepoint_site_path.is_some() && self.ms_graph_hostname.is_none() {
            problems.push(Problem {
                var: "MS_GRAPH_HOSTNAME",
                problem: "is not set, but SHAREPOINT_SITE_PATH is".into(),
                fix: "set MS_GRAPH_HOSTNAME to the SharePoint host, e.g. example.sharepoint.com"
                    .into(),
            });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn is_email(v: &str) -> bool {
    v.split_once('@').is_some_and(|(user, host)| {
        !user.is_empty()
            && host.contains('.')
            && !v.contains(char::is_whitespace)
            && !host.contains('@')
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Config, Vec<Problem>> {
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_original_names_and_real_endpoints() {
        let c = read(&[]).unwrap();
        assert_eq!(c.secrets.qbo, "QBO/10000");
        assert_eq!(c.secrets.robocorp, "RoboCorp/10000/ClientAPIKeys");
        assert_eq!(c.table, "Robocorp_Client_Org_Workspace_IDs");
        assert_eq!(c.timezone.iana_name(), Some("America/Los_Angeles"));
        assert_eq!(c.urls.clickup, "https://api.clickup.com/api/v2");
        assert!(c.urls.qbo_api.is_none());
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_fix() {
        let problems = read(&[
            ("BOOKKEEPER_EMAIL", "bookkeeper"),
            ("LOWER_CLIENT_ID", "ten"),
            ("BILLING_TIMEZONE", "Pacific"),
            ("CLICKUP_BASE_URL", "http://api.example.com"),
        ])
        .unwrap_err();
        let vars: Vec<&str> = problems.iter().map(|p| p.var).collect();
        assert_eq!(
            vars,
            [
                "BOOKKEEPER_EMAIL",
                "LOWER_CLIENT_ID",
                "BILLING_TIMEZONE",
                "CLICKUP_BASE_URL"
            ]
        );
        assert!(problems[2].fix.contains("America/Los_Angeles"));
        let swapped =
            read(&[("LOWER_CLIENT_ID", "10050"), ("UPPER_CLIENT_ID", "10001")]).unwrap_err();
        assert!(swapped[0].problem.contains("above"));
    }

    #[test]
    fn the_send_job_needs_both_addresses() {
        let c = read(&[("SENDER_EMAIL", "billing@example.com")]).unwrap();
        let problems = c.check_send().unwrap_err();
        assert_eq!(problems[0].var, "BOOKKEEPER_EMAIL");
        assert_eq!(problems.len(), 1);
    }
}
