//! The `deployer` binary as a user runs it, and the local emulators it deploys to.

mod cli;
mod emulators;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (where `infra/envs` lives).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `deployer ARGS` in `dir` with no AWS configuration from the machine.
fn deployer_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args(args)
        .current_dir(dir)
        .env_remove("DEPLOYER_ENV_DIR")
        .env("NO_COLOR", "1")
        .output()
        .expect("deployer runs")
}

fn deployer(args: &[&str]) -> Output {
    deployer_in(&root(), args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
