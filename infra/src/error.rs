//! The errors of `infra`: a file that cannot be read or found, or one that is not a
//! valid environment (every problem listed, each with its key and the fix).

use std::fmt;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read environment file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid environment file:\n{}", path.display(), list(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    #[error(
        "no environment named `{name}` in {}{}",
        dir.display(),
        if available.is_empty() { String::from(" (it has no .toml files)") }
        else { format!("; available: {}", available.join(", ")) }
    )]
    UnknownEnvironment {
        name: String,
        dir: PathBuf,
        available: Vec<String>,
    },
}

impl Error {
    /// What the user can do about it, for the CLI's `help:` line.
    pub fn help(&self) -> Option<String> {
        match self {
            Self::Read { .. } => Some("check the path given to --env".into()),
            Self::Invalid { .. } => None,
            Self::UnknownEnvironment { dir, .. } => Some(format!(
                "pass one of the names listed, a path to a .toml file, or add {}/NAME.toml",
                dir.display()
            )),
        }
    }
}

/// One thing wrong in an environment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `task.cpu` or `schedules.job[1].cron`; empty for the file.
    pub key: String,
    /// 1-based line, when the parser knows it.
    pub line: Option<usize>,
    pub message: String,
    pub help: String,
}

impl Problem {
    pub fn new(
        key: impl Into<String>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Self {
        Self {
            key: key.into(),
            line: None,
            message: message.into(),
            help: help.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("  - ")?;
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}\n    fix: {}", self.message, self.help)
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
