//! One module per command, each with `run`; shared steps (finding and loading the
//! environment) live here.

use std::path::{Path, PathBuf};

use infra::Environment;

use crate::cli::{Cli, Command, EnvArg};
use crate::error::{Error, Result};

pub mod synth;

pub fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Synth(args) => synth::run(cli, args),
    }
}

/// Loads and validates the environment named on the command line.
pub fn load_environment(cli: &Cli, arg: &EnvArg) -> Result<Environment> {
    let dir = match (&cli.env_dir, infra::env::is_path(&arg.env)) {
        (Some(dir), _) => dir.clone(),
        (None, true) => PathBuf::from("."),
        (None, false) => find_env_dir()?,
    };
    let path = Environment::locate(&arg.env, &dir)?;
    Ok(Environment::load(&path)?)
}

/// `infra/envs` in the current directory or the nearest parent that has one.
fn find_env_dir() -> Result<PathBuf> {
    let cwd = std::env::current_dir()?;
    cwd.ancestors()
        .map(|d| d.join("infra/envs"))
        .find(|d| d.is_dir())
        .map(|d| relative_to(&d, &cwd))
        .ok_or(Error::NoEnvDir { cwd })
}

/// Shorter paths in messages when the directory is below the current one.
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    path.strip_prefix(base)
        .map_or_else(|_| path.to_path_buf(), Path::to_path_buf)
}
