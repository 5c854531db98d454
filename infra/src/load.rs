//! Reading an environment file: parsed (`env`), then validated (`validate`), every
//! problem reported at once.

use std::path::Path;

use crate::env::{EnvFile, Environment, add_billing_check, parse_toml};
use crate::error::{Error, Result};
use crate::validate;

impl Environment {
    /// Reads, parses and validates an environment file. Every problem found is reported
    /// at once, each with the key and the fix.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates file contents; `path` names the file in messages and gives
    /// the environment its name.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let invalid = |problems| Error::Invalid {
            path: path.to_path_buf(),
            problems,
        };
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let mut file: EnvFile = parse_toml(text).map_err(|p| invalid(vec![p]))?;
        add_billing_check(&mut file);
        let mut problems = validate::environment_name(&name);
        problems.extend(validate::env_file(&file));
        if problems.is_empty() {
            Ok(Self {
                name,
                path: path.to_path_buf(),
                file,
            })
        } else {
            Err(invalid(problems))
        }
    }
}
