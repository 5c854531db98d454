//! The environment file's reference, `docs/reference/environment.md`, written from the
//! types of [`crate::env`]: each key's meaning is its field's doc comment, its default
//! the type's own (through their JSON Schema, `schemars`). A key without a doc comment
//! is named by [`undocumented`], which a test holds empty, so a new key cannot go
//! undocumented; another test keeps the checked-in copy current.

use std::fmt::Write as _;

use serde_json::Value;

use crate::env::EnvFile;

/// One table of the file: its TOML header (`""` for the top level), what it is for,
/// and its keys as `(key, default, meaning)`.
struct Table {
    header: String,
    about: String,
    rows: Vec<(String, String, String)>,
}

/// The schema of the environment file.
fn schema() -> Value {
    schemars::schema_for!(EnvFile).to_value()
}

/// `schema` with a `$ref` (alone, or under `allOf`/`anyOf` beside `null`) followed.
fn resolve<'a>(schema: &'a Value, defs: &'a Value) -> &'a Value {
    if let Some(name) = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        return resolve(&defs[name], defs);
    }
    for list in ["allOf", "anyOf"] {
        if let Some(inner) = schema[list].as_array().and_then(|all| {
            all.iter()
                .find(|s| s["type"] != "null" && s.get("$ref").is_some())
        }) {
            return resolve(inner, defs);
        }
    }
    schema
}

/// A default as it would be written in the file.
fn toml_value(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => format!("`\"{s}\"`"),
        Value::Array(items) if items.iter().all(|i| !i.is_object()) => {
            let inner: Vec<String> = items
                .iter()
                .map(|i| toml_value(i).trim_matches('`').to_owned())
                .collect();
            format!("`[{}]`", inner.join(", "))
        }
        Value::Object(map) if map.is_empty() => "`{}`".into(),
        Value::Array(_) | Value::Object(_) => "see meaning".into(),
        other => format!("`{other}`"),
    }
}

/// A text on one line, safe in a table cell.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The values an enum schema allows, with their meanings.
fn values(schema: &Value) -> Option<String> {
    let variants = schema["oneOf"].as_array()?;
    let described: Vec<String> = variants
        .iter()
        .filter_map(|v| {
            let name = v["const"].as_str().or_else(|| v["enum"][0].as_str())?;
            let about = v["description"].as_str().unwrap_or_default();
            Some(if about.is_empty() {
                format!("`\"{name}\"`")
            } else {
                format!("`\"{name}\"`: {}", about.trim_end_matches('.'))
            })
        })
        .collect();
    (!described.is_empty()).then(|| format!("One of {}.", described.join("; ")))
}

/// Walks one table of the schema into `tables`, and every table below it; each key
/// without a meaning goes to `missing`.
fn walk(
    object: &Value,
    defs: &Value,
    header: &str,
    about: &str,
    tables: &mut Vec<Table>,
    missing: &mut Vec<String>,
) {
    let required: Vec<&str> = object["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let at = tables.len();
    let mut table = Table {
        header: header.to_owned(),
        about: about.to_owned(),
        rows: Vec::new(),
    };
    let mut below = Vec::new();
    for (key, property) in object["properties"].as_object().into_iter().flatten() {
        let resolved = resolve(property, defs);
        let meaning = property["description"]
            .as_str()
            .or_else(|| resolved["description"].as_str())
            .unwrap_or_default()
            .to_owned();
        let path = if header.is_empty() {
            key.clone()
        } else {
            format!("{}.{key}", header.trim_matches(['[', ']']))
        };
        if meaning.is_empty() {
            missing.push(path.clone());
        }
        let items = resolve(&resolved["items"], defs);
        if resolved.get("properties").is_some() {
            below.push((format!("[{path}]"), meaning, resolved.clone()));
        } else if items.get("properties").is_some() {
            table.rows.push((
                key.clone(),
                toml_value(&property["default"]),
                meaning.clone(),
            ));
            below.push((format!("[[{path}]]"), meaning, items.clone()));
        } else if let Some(variants) = resolved["oneOf"]
            .as_array()
            .filter(|v| v.iter().any(|v| v["properties"].is_object()))
        {
            tables.push(tagged_table(
                &path,
                meaning,
                variants,
                &property["default"],
                missing,
            ));
        } else {
            let default = if required.contains(&key.as_str()) {
                "required".to_owned()
            } else {
                toml_value(&property["default"])
            };
            let meaning = match values(resolved) {
                Some(values) => format!("{meaning} {values}"),
                None => meaning,
            };
            table.rows.push((key.clone(), default, meaning));
        }
    }
    tables.insert(at, table);
    for (header, about, schema) in below {
        walk(&schema, defs, &header, &about, tables, missing);
    }
}

/// The table of a tagged enum (the registry): its tag, with each variant's meaning,
/// then each variant's own keys.
fn tagged_table(
    path: &str,
    about: String,
    variants: &[Value],
    default: &Value,
    missing: &mut Vec<String>,
) -> Table {
    let tag = variants
        .iter()
        .find_map(|v| {
            v["properties"]
                .as_object()?
                .iter()
                .find(|(_, p)| p.get("const").is_some())
                .map(|(k, _)| k.clone())
        })
        .unwrap_or_default();
    let mut rows = Vec::new();
    let mut kinds = Vec::new();
    for variant in variants {
        let kind = variant["properties"][&tag]["const"]
            .as_str()
            .unwrap_or_default();
        let meaning = variant["description"].as_str().unwrap_or_default();
        if meaning.is_empty() {
            missing.push(format!("{path}.{tag} = \"{kind}\""));
        }
        kinds.push(format!("`\"{kind}\"`: {}", meaning.trim_end_matches('.')));
        for (field, schema) in variant["properties"].as_object().into_iter().flatten() {
            if field == &tag {
                continue;
            }
            let meaning = schema["description"].as_str().unwrap_or_default();
            if meaning.is_empty() {
                missing.push(format!("{path}.{field}"));
            }
            rows.push((
                field.clone(),
                String::new(),
                format!("with `{tag} = \"{kind}\"`: {meaning}"),
            ));
        }
    }
    let default = default[&tag]
        .as_str()
        .map_or(String::new(), |k| format!("`\"{k}\"`"));
    rows.insert(0, (tag, default, format!("One of {}.", kinds.join("; "))));
    Table {
        header: format!("[{path}]"),
        about,
        rows,
    }
}

fn tables() -> (Vec<Table>, Vec<String>) {
    let schema = schema();
    let defs = schema["$defs"].clone();
    let mut tables = Vec::new();
    let mut missing = Vec::new();
    walk(&schema, &defs, "", "", &mut tables, &mut missing);
    (tables, missing)
}

/// The keys with no meaning (no doc comment on their field, or variant).
pub fn undocumented() -> Vec<String> {
    tables().1
}

/// `docs/reference/environment.md`.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Environment file reference\n\n\
         Every key of an environment file (`infra/envs/NAME.toml`), with its default and \
         meaning, written from the deployer's own types (`infra/src/env.rs`; `make \
         reference` writes it again). [docs/environment.md](../environment.md) explains \
         the checks made on a file and the container environment derived from it.\n",
    );
    for table in tables().0 {
        if table.rows.is_empty() {
            continue;
        }
        let title = if table.header.is_empty() {
            "Top level".to_owned()
        } else {
            format!("`{}`", table.header)
        };
        let _ = write!(out, "\n## {title}\n\n");
        if !table.about.is_empty() {
            let _ = write!(out, "{}\n\n", cell(&table.about));
        }
        out.push_str("| key | default | meaning |\n|---|---|---|\n");
        for (key, default, meaning) in &table.rows {
            let _ = writeln!(out, "| `{key}` | {default} | {} |", cell(meaning));
        }
    }
    out
}
