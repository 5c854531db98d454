//! The stack synthesized from the real environment files, and every way an
//! environment file can be wrong.

mod bad_env;
mod reference;
mod synth;

use std::path::{Path, PathBuf};

use infra::Environment;

fn envs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("envs")
}

fn load(name: &str) -> Environment {
    Environment::load(&envs_dir().join(format!("{name}.toml"))).expect("valid environment")
}
