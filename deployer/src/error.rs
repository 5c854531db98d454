//! The deployer's errors, each with an exit code and, where it helps, what to do next.

use serde::Serialize;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `diff --exit-code` found changes: apart from 0 (none), 1 (an error) and 2 (bad
/// input), so a script can tell "changes" from "could not tell".
pub const CHANGES_PENDING: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Environment(#[from] infra::Error),
    #[error("no environment directory: infra/envs was not found in {} or any parent", .cwd.display())]
    NoEnvDir { cwd: std::path::PathBuf },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("cannot {action} {resource}: {message}")]
    Aws {
        action: &'static str,
        resource: String,
        code: Option<String>,
        message: String,
    },
    #[error("the credentials are for account {actual}, but {env} is for account {expected}")]
    WrongAccount {
        env: String,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    Prerequisite(String, String),
    /// A change the deployer will not make by itself: what and why, then the fix.
    #[error("{0}")]
    Refused(String, String),
    #[error("the plan widens IAM or network access and there is no terminal to confirm it")]
    NeedsConfirmation,
    #[error("nothing was changed: not confirmed")]
    Declined,
    #[error("{cause}\n(before it stopped: {} created, {} updated, {} replaced, {} deleted; run the same command again to finish)", summary.created, summary.updated, summary.replaced, summary.deleted)]
    Apply {
        summary: Box<Summary>,
        cause: Box<Error>,
    },
    #[error("cannot {action} {target}: {message}")]
    Registry {
        action: &'static str,
        target: String,
        message: String,
    },
    #[error("{message}")]
    TaskExit { code: u8, message: String },
    #[error("the plan has changes")]
    ChangesPending,
    #[error("interrupted")]
    Interrupted,
    #[error("{0} check(s) failed")]
    ChecksFailed(usize),
    #[error("the account still differs from the stack after applying: {}", .0.join(", "))]
    NotConverged(Vec<String>),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// 2 for bad input (usage, environment files, missing prerequisites), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Environment(_)
            | Self::NoEnvDir { .. }
            | Self::WrongAccount { .. }
            | Self::Prerequisite(..)
            | Self::NeedsConfirmation => 2,
            Self::ChangesPending => CHANGES_PENDING,
            Self::Interrupted => 130,
            Self::Apply { cause, .. } => cause.exit_code().max(1),
            Self::TaskExit { code, .. } => *code,
            _ => 1,
        }
    }

    pub fn help(&self) -> Option<String> {
        match self {
            Self::Environment(e) => e.help(),
            Self::NoEnvDir { .. } => Some(
                "run from the project checkout, or pass --env-dir DIR (or set DEPLOYER_ENV_DIR)"
                    .into(),
            ),
            Self::WrongAccount { .. } => Some(
                "use credentials for the environment's account (--profile or AWS_PROFILE), or fix `account` in the environment file".into(),
            ),
            Self::Prerequisite(_, help) | Self::Refused(_, help) => Some(help.clone()),
            Self::NeedsConfirmation => Some("review the plan with `deployer diff`, then pass --yes".into()),
            Self::Aws { code: Some(code), .. } if code.contains("AccessDenied") || code == "UnauthorizedOperation" => {
                Some("the deploying identity lacks this permission; `deployer policy --env NAME` prints the policy it needs".into())
            }
            Self::Apply { cause, .. } => cause.help(),
            Self::Registry { message, .. } if message.contains("error sending request") => Some(
                "check that the registry is running and reachable; a local one's address is --registry HOST:PORT (or DEPLOYER_REGISTRY)".into(),
            ),
            _ => None,
        }
    }

    /// A closed pipe (`deployer synth | head`) is how the reader says it has enough.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// The AWS error code, for a failed AWS call.
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            Self::Aws { code, .. } => code.as_deref(),
            Self::Apply { cause, .. } => cause.aws_code(),
            _ => None,
        }
    }

    /// A failed AWS call's error code and message.
    fn aws_refusal(&self) -> Option<(&str, &str)> {
        match self {
            Self::Aws {
                code: Some(code),
                message,
                ..
            } => Some((code, message)),
            _ => None,
        }
    }

    /// ECS's refusal to start a task in a security group it cannot see yet (one `up`
    /// made a moment ago): InvalidParameterException, relaying EC2's
    /// `InvalidGroup.NotFound`.
    pub fn is_group_not_yet_visible(&self) -> bool {
        let Some((code, message)) = self.aws_refusal() else {
            return false;
        };
        code == "InvalidParameterException"
            && message.contains("security group")
            && message.contains("does not exist")
    }

    /// The errors ECS, Scheduler and EventBridge give while a new role propagates:
    /// the only ones `up` retries.
    pub fn is_iam_propagation(&self) -> bool {
        let Some((code, message)) = self.aws_refusal() else {
            return false;
        };
        let message = message.to_ascii_lowercase();
        // An AccessDeniedException is the caller's own missing permission: never retried.
        matches!(
            code,
            "ClientException" | "ValidationException" | "InvalidParameterException"
        ) && message.contains("role")
            && [
                "assume",
                "not valid",
                "is invalid",
                "does not exist",
                "passrole",
            ]
            .iter()
            .any(|m| message.contains(m))
    }
}

/// What an `up` or `destroy` did, counted: what it made, changed, replaced, deleted,
/// kept, and what failed (also carried by a failed apply's error).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub created: usize,
    pub updated: usize,
    pub replaced: usize,
    pub deleted: usize,
    pub kept: usize,
    pub failed: usize,
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(code: &str, message: &str) -> Error {
        Error::Aws {
            action: "create",
            resource: "x".into(),
            code: Some(code.into()),
            message: message.into(),
        }
    }

    #[test]
    fn only_a_security_group_not_yet_visible_is_retried_by_run_task() {
        assert!(aws("InvalidParameterException", "Error retrieving security group information for [sg-1]: The security group 'sg-1' does not exist (Service: AmazonEC2; Status Code: 400; Error Code: InvalidGroup.NotFound)").is_group_not_yet_visible());
        assert!(!aws("InvalidParameterException", "Unable to assume the service linked role. Please verify that the ECS service linked role exists.").is_group_not_yet_visible());
        assert!(
            !aws(
                "AccessDeniedException",
                "not authorized to perform: ecs:RunTask on security group"
            )
            .is_group_not_yet_visible()
        );
    }

    #[test]
    fn only_role_propagation_errors_are_retried() {
        assert!(aws("ValidationException", "The execution role you provide must allow AWS EventBridge Scheduler to assume the role.").is_iam_propagation());
        assert!(aws("ClientException", "Role is not valid").is_iam_propagation());
        assert!(!aws("ValidationException", "Invalid cron expression").is_iam_propagation());
        assert!(!aws("AccessDeniedException", "User: arn:aws:sts::1:assumed-role/ci/x is not authorized to perform: ecs:RegisterTaskDefinition").is_iam_propagation());
        assert!(!Error::Internal("role".into()).is_iam_propagation());
    }
}
