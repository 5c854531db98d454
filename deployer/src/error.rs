//! The deployer's errors, each with an exit code and, where it helps, what to do next.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Environment(#[from] infra::Error),
    #[error("no environment directory: infra/envs was not found in {} or any parent", .cwd.display())]
    NoEnvDir { cwd: std::path::PathBuf },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl Error {
    /// 2 for bad input (usage, environment files), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Environment(_) | Self::NoEnvDir { .. } => 2,
            Self::Output(_) => 1,
        }
    }

    pub fn help(&self) -> Option<String> {
        match self {
            Self::Environment(e) => e.help(),
            Self::NoEnvDir { .. } => Some(
                "run from the project checkout, or pass --env-dir DIR (or set DEPLOYER_ENV_DIR)"
                    .into(),
            ),
            Self::Output(_) => None,
        }
    }

    /// A closed pipe (`deployer synth | head`) is how the reader says it has enough.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}
