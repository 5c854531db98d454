//! Writing results to stdout: JSON for scripts, text for people.

use std::fmt::Write as _;
use std::io::Write as _;

use infra::Stack;
use serde::Serialize;

use crate::error::Result;

pub fn json(value: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

pub fn text(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The stack as a person reads it: a header, the placeholders, then each resource in
/// dependency order with its properties.
pub fn stack_text(stack: &Stack) -> String {
    let waves = stack.waves();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} · env {} · {} · account {}",
        stack.app, stack.environment, stack.region, stack.account
    );
    let _ = writeln!(
        s,
        "{} resources in {} dependency waves",
        stack.resources.len(),
        waves.len()
    );
    if !stack.placeholders.is_empty() {
        let _ = writeln!(s, "\nPlaceholders, resolved at deploy time:");
        let width = stack
            .placeholders
            .iter()
            .map(|p| p.placeholder.len())
            .max()
            .unwrap_or(0);
        for p in &stack.placeholders {
            let _ = writeln!(s, "  {:width$}  {}", p.placeholder, p.resolved_by);
        }
    }
    for (i, wave) in waves.iter().enumerate() {
        let _ = writeln!(s, "\nWave {}:", i + 1);
        for r in wave {
            let _ = writeln!(s, "\n  {} {}", r.kind, r.name);
            if let Some(arn) = &r.arn {
                let _ = writeln!(s, "    arn: {arn}");
            }
            if !r.depends_on.is_empty() {
                let deps: Vec<String> = r.depends_on.iter().map(ToString::to_string).collect();
                let _ = writeln!(s, "    after: {}", deps.join(", "));
            }
            if !r.tags.is_empty() {
                let tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(s, "    tags: {}", tags.join(" "));
            }
            let props = serde_json::to_string_pretty(&r.properties).unwrap_or_default();
            let _ = writeln!(s, "    properties:");
            for line in props.lines() {
                let _ = writeln!(s, "      {line}");
            }
        }
    }
    s
}
