//! The job's errors, each with the exit code design.md gives it: 2 for configuration or
//! usage a person must fix, 3 for fatal ones (auth, an unreachable AWS or API).

use crate::config::Problem;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the environment is not valid:\n{}", list(.0))]
    Config(Vec<Problem>),
    #[error("{0}\n  fix: {1}")]
    Usage(String, String),
    #[error("secret {name} {problem}\n  fix: {fix}")]
    Secret {
        name: String,
        problem: String,
        fix: String,
    },
    #[error("{context}: {message}")]
    Aws { context: String, message: String },
    #[error("{0}")]
    Api(#[from] crate::api::ApiError),
    #[error("{0}\n  fix: {1}")]
    Fatal(String, String),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("- {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    pub fn aws(context: impl Into<String>, e: &(dyn std::error::Error + 'static)) -> Self {
        Self::Aws {
            context: context.into(),
            message: aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Usage(..) | Self::Secret { .. } => 2,
            Self::Aws { .. } | Self::Api(_) | Self::Fatal(..) => 3,
        }
    }
}
