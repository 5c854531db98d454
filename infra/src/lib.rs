//! The invoice processor's AWS stack as typed Rust. An environment file
//! (`infra/envs/NAME.toml`) plus context resolved from the account become a desired
//! state: a graph of typed resources. No I/O besides reading the file.

pub mod constructs;
pub mod context;
pub mod cost;
pub mod cron;
pub mod env;
pub mod env_reference;
mod error;
pub mod graph;
mod load;
pub mod names;
pub mod policy;
pub mod resources;
pub mod stack;
pub mod validate;

pub use context::Context;
pub use env::Environment;
pub use error::{Error, Problem, Result};
pub use stack::{Stack, synthesize};
