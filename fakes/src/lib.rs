//! Local stand-ins for tests, benches and the demo: launchers for moto and the
//! reference registry, a fault-injecting proxy for AWS calls, and stateful fakes of the
//! SaaS APIs the jobs call (QuickBooks Online, Control Room, ClickUp, Microsoft Graph).

// The fakes' helpers return an axum error response itself; boxing it would add noise.
#![allow(clippy::result_large_err)]

pub mod aws_seed;
pub mod cli_reference;
pub mod clickup;
pub mod cloudwatch;
pub mod consistency;
pub mod control;
pub mod control_room;
pub mod emulators;
pub mod fargate;
pub mod fault_proxy;
pub mod generate;
pub mod graph;
pub mod iam_actions;
pub mod iam_auth;
pub mod iam_policy;
pub mod qbo;
pub mod quotas;
pub mod server;
pub mod service_model;

/// Whether `text` is `pattern`, where `any` in the pattern stands for any run of
/// characters (QBO's `LIKE` with `%`, a resource policy's ARN with `*`).
pub(crate) fn wildcard(pattern: &str, text: &str, any: char) -> bool {
    let parts: Vec<&str> = pattern.split(any).collect();
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    rest.is_empty()
}
