//! Names the stack gives its own resources (the rest come from the environment file).

pub fn task_failed_rule(app: &str) -> String {
    format!("{app}-task-failed")
}
/// The rule writing every stopped task of the cluster to [`task_events_group`].
pub fn task_events_rule(app: &str) -> String {
    format!("{app}-task-events")
}
/// Where stopped tasks are remembered after ECS forgets them (about an hour).
pub fn task_events_group(app: &str) -> String {
    format!("/aws/events/{app}-tasks")
}
pub fn runs_failed_filter(app: &str) -> String {
    format!("{app}-runs-failed")
}
pub fn job_succeeded_filter(app: &str, job: &str) -> String {
    format!("{app}-{job}-succeeded")
}
pub fn run_failed_alarm(app: &str) -> String {
    format!("{app}-run-failed")
}
pub fn heartbeat_alarm(app: &str, job: &str) -> String {
    format!("{app}-{job}-success-missing")
}
pub fn invocation_alarm(app: &str, schedule: &str) -> String {
    format!("{app}-{schedule}-invocation-errors")
}
