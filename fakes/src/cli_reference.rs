//! The command references in `docs/reference/` are generated from each binary's clap
//! definitions (`BIN --markdown-help`, through `clap-markdown`). [`check`] holds a
//! checked-in copy to its binary: the same text, and every subcommand and long flag
//! that `--help` shows has its place in it.

use std::path::Path;
use std::process::Command;

/// Runs `bin args` and returns what it printed, or why it could not.
fn output(bin: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {}: {}\n{}",
            bin.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Checks `reference` against what `bin --markdown-help` generates, and that every
/// subcommand and long flag of `bin`'s `--help` (walked down every subcommand) is in
/// it: `Err` names what differs and the fix. With `UPDATE_REFERENCE` set, it writes
/// the generated text to `reference` first (`make reference` does).
pub fn check(bin: &Path, reference: &Path) -> Result<(), String> {
    let generated = output(bin, &["--markdown-help"])?;
    if std::env::var_os("UPDATE_REFERENCE").is_some() {
        std::fs::write(reference, &generated).map_err(|e| e.to_string())?;
    }
    let checked_in = std::fs::read_to_string(reference).unwrap_or_default();
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut problems = Vec::new();
    let mut missing = Vec::new();
    walk(bin, &name, &[], &checked_in, &mut missing)?;
    if !missing.is_empty() {
        problems.push(format!(
            "{} lacks what --help shows: {}",
            reference.display(),
            missing.join(", ")
        ));
    }
    if checked_in != generated {
        let first = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| checked_in.lines().count().min(generated.lines().count()));
        problems.push(format!(
            "{} is stale (it first differs at line {}): run `make reference` and commit it",
            reference.display(),
            first + 1
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// The reference's section of one command: from its heading to the next.
fn section<'a>(reference: &'a str, command: &str) -> Option<&'a str> {
    let heading = format!("## `{command}`\n");
    let start = reference.find(&heading)? + heading.len();
    let rest = &reference[start..];
    Some(rest.find("\n## `").map_or(rest, |end| &rest[..end]))
}

fn walk(
    bin: &Path,
    name: &str,
    path: &[String],
    reference: &str,
    missing: &mut Vec<String>,
) -> Result<(), String> {
    let command: Vec<&str> = std::iter::once(name)
        .chain(path.iter().map(String::as_str))
        .collect();
    let command = command.join(" ");
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let help = output(bin, &args)?;
    let Some(own) = section(reference, &command) else {
        missing.push(format!("the command `{command}`"));
        return Ok(());
    };
    // Global options are listed once, under the program itself.
    let root = section(reference, name).unwrap_or_default();
    let mut in_commands = false;
    for line in help.lines() {
        let trimmed = line.trim_start();
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            match trimmed.split_whitespace().next() {
                Some(sub) if line.starts_with("  ") && !line.starts_with("   ") => {
                    if sub != "help" {
                        let mut deeper = path.to_vec();
                        deeper.push(sub.to_owned());
                        walk(bin, name, &deeper, reference, missing)?;
                    }
                }
                Some(_) => {}
                None => in_commands = false,
            }
            continue;
        }
        // An option's own line (`  -e, --env <NAME>  ...`), not its description's.
        if !(2..=6).contains(&(line.len() - trimmed.len())) || !trimmed.starts_with('-') {
            continue;
        }
        let names = trimmed.split("  ").next().unwrap_or_default();
        for flag in names
            .split([',', ' ', '='])
            .filter(|w| w.starts_with("--") && w.len() > 2)
        {
            if flag == "--help" || flag == "--version" {
                continue;
            }
            let listed = |text: &str| {
                text.contains(&format!("`{flag}`")) || text.contains(&format!("`{flag} <"))
            };
            if !listed(own) && !listed(root) {
                missing.push(format!("`{command} {flag}`"));
            }
        }
    }
    Ok(())
}
