//! docs/reference/environment.md, written from the environment file's types: every key
//! has a meaning, the checked-in copy is current, and every key prod.toml sets is in it.

use std::path::Path;

fn reference_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference/environment.md")
}

#[test]
fn every_key_of_the_environment_file_has_a_meaning() {
    let missing = infra::env_reference::undocumented();
    assert!(
        missing.is_empty(),
        "keys without a doc comment in infra/src/env.rs: {missing:?}"
    );
}

#[test]
fn the_environment_reference_is_written_from_the_types_and_current() {
    let generated = infra::env_reference::markdown();
    let path = reference_path();
    if std::env::var_os("UPDATE_REFERENCE").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} is stale: run `make reference` and commit it",
        path.display()
    );
}

/// Every key prod.toml spells out has its row, in its table's section.
#[test]
fn every_key_prod_toml_sets_is_in_the_reference() {
    let reference = infra::env_reference::markdown();
    let text = std::fs::read_to_string(super::envs_dir().join("prod.toml")).unwrap();
    let prod: toml::Table = toml::from_str(&text).unwrap();
    let mut missing = Vec::new();
    let mut seen = 0;
    let mut check = |header: &str, table: &toml::Table| {
        let title = if header.is_empty() {
            "## Top level\n".to_owned()
        } else {
            format!("## `{header}`\n")
        };
        let Some(start) = reference.find(&title) else {
            missing.push(header.to_owned());
            return;
        };
        let section = &reference[start + title.len()..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        for (key, value) in table {
            if value.is_table() {
                continue;
            }
            seen += 1;
            if !section.contains(&format!("| `{key}` |")) {
                missing.push(format!("{header} {key}"));
            }
        }
    };
    check("", &prod);
    for (name, value) in &prod {
        if let Some(table) = value.as_table() {
            check(&format!("[{name}]"), table);
            if let Some(jobs) = table.get("job").and_then(toml::Value::as_array) {
                for job in jobs.iter().filter_map(toml::Value::as_table) {
                    check(&format!("[[{name}.job]]"), job);
                }
            }
        }
    }
    assert!(seen > 40, "prod.toml's keys were read: {seen}");
    assert!(missing.is_empty(), "not in the reference: {missing:?}");
}
