//! `deployer synth`: the desired state of an environment, offline.

use infra::{Context, synthesize};

use crate::cli::{Cli, Format, SynthArgs};
use crate::error::Result;
use crate::output;

pub fn run(cli: &Cli, args: &SynthArgs) -> Result<()> {
    let env = super::shared::load_environment(cli, &args.env)?;
    let stack = synthesize(&env, &Context::offline(&env));
    match args.output {
        Format::Json => output::json(&stack),
        Format::Text => output::text(&output::stack_text(&stack)),
    }
}
