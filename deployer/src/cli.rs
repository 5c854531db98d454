//! The command line: global options and one subcommand per operation.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Deploys the QBO invoice processor to AWS ECS Fargate from an environment file.
///
/// Environments are TOML files in infra/envs/ (prod.toml, local.toml): `--env prod`
/// reads infra/envs/prod.toml, found from the current directory upwards.
#[derive(Debug, Parser)]
#[command(
    name = "deployer",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Directory holding the environment files [default: infra/envs, searched upwards]
    #[arg(long, global = true, env = "DEPLOYER_ENV_DIR", value_name = "DIR")]
    pub env_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the desired state of an environment, without touching AWS
    ///
    /// Lists every resource with its kind, name, ARN, dependencies, tags and properties,
    /// IAM policy documents in full. Values only the live account can tell (account id,
    /// default-VPC subnets, the image digest) appear as ${...} placeholders.
    Synth(SynthArgs),
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    #[command(flatten)]
    pub env: EnvArg,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct EnvArg {
    /// Environment name (a file in the environment directory) or path to a .toml file
    #[arg(long, short = 'e', value_name = "NAME")]
    pub env: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Readable text
    Text,
    /// JSON, for scripts
    Json,
}
