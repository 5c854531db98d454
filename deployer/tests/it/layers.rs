//! The code's shape, held: the modules of `deployer` and `infra` form no import circle
//! (arguments, shared types and errors live below the modules that use them, so each
//! module can be read knowing only what is below it), and no function of `infra` or of
//! the jobs outgrows a reader's view (150 lines).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every `.rs` file under `src`.
fn rs_files(src: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// Each module of the crate at `src` (`resources::ecs`, `cli`...) and the modules of the
/// same crate it names: `crate::a::b` and `super::b` paths (`use` lists included) and its
/// own children's paths (`child::item`), outside its `#[cfg(test)]` module.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = BTreeMap::new();
    for path in rs_files(src) {
        let rel = path.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        files.insert(parts.join("::"), std::fs::read_to_string(&path).unwrap());
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    // The longest module that `path` (a::b::Item) names.
    let resolve = |path: &[&str]| -> Option<String> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|m| modules.contains(m))
    };
    let mut edges = BTreeMap::new();
    for (module, text) in &files {
        // Up to the first test-only module (`mod tests`, a `pub(crate) mod fixture`).
        let code = ["#[cfg(test)]\nmod ", "#[cfg(test)]\npub(crate) mod "]
            .iter()
            .filter_map(|m| text.find(m))
            .min()
            .map_or(text.as_str(), |at| &text[..at]);
        let parent: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        let parent = &parent[..parent.len().saturating_sub(1)];
        let mut named = BTreeSet::new();
        for (prefix, base) in [("crate::", &[][..]), ("super::", parent)] {
            for (at, _) in code.match_indices(prefix) {
                if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let rest = &code[at + prefix.len()..];
                let spelled: &str = rest
                    .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap_or_default();
                let path: Vec<&str> = spelled
                    .split("::")
                    .take_while(|w| w.chars().next().is_some_and(char::is_lowercase))
                    .collect();
                let full: Vec<&str> = base.iter().copied().chain(path).collect();
                let target = resolve(&full).unwrap_or_else(|| base.join("::"));
                if &target != module {
                    named.insert(target);
                }
            }
        }
        // A parent's use of its own child (`ecs::read(...)` in `resources/mod.rs`).
        let prefix = if module.is_empty() {
            String::new()
        } else {
            format!("{module}::")
        };
        for child in modules.iter().filter_map(|m| m.strip_prefix(&prefix)) {
            if child.contains("::") || child.is_empty() {
                continue;
            }
            let used = code.match_indices(&format!("{child}::")).any(|(at, _)| {
                !code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
            });
            if used {
                named.insert(format!("{prefix}{child}"));
            }
        }
        edges.insert(module.clone(), named);
    }
    edges
}

/// The import circles among `edges`: each as the modules in it.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    // Modules that reach one another are in one circle (Tarjan's components, by
    // reachability: the graphs are small).
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(m) = todo.pop() {
            for n in edges.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    todo.push(n.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|m| (m, reach(m))).collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for (m, r) in &reaches {
        if !r.contains(*m) {
            continue;
        }
        let circle: BTreeSet<String> = r
            .iter()
            .filter(|n| reaches.get(n).is_some_and(|back| back.contains(*m)))
            .cloned()
            .collect();
        if !found.contains(&circle) {
            found.push(circle);
        }
    }
    found
}

#[test]
fn no_module_of_deployer_or_infra_imports_one_that_imports_it_back() {
    let root = super::root();
    for krate in ["deployer", "infra"] {
        let edges = imports(&root.join(krate).join("src"));
        assert!(edges.len() > 5, "{krate}: {edges:?}");
        let found = circles(&edges);
        assert!(
            found.is_empty(),
            "{krate}: import circles {found:?}; move the shared types below both"
        );
    }
}

#[test]
fn a_circle_is_found_where_there_is_one() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("cli", &["commands"][..]),
        ("commands", &["cli", "error"]),
        ("error", &[]),
    ]
    .into_iter()
    .map(|(m, to)| (m.to_owned(), to.iter().map(|s| (*s).to_owned()).collect()))
    .collect();
    assert_eq!(
        circles(&edges),
        vec![BTreeSet::from(["cli".to_owned(), "commands".to_owned()])]
    );
}

/// Each function of `src` (every `.rs` under it) longer than `limit` lines, as
/// `path:name (lines)`: from its `fn` line to the brace that closes its body.
fn longer_than(src: &Path, limit: usize) -> Vec<String> {
    let mut long = Vec::new();
    for path in rs_files(src) {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(at) = words.iter().position(|w| *w == "fn") else {
                continue;
            };
            if !words[..at]
                .iter()
                .all(|w| ["pub", "pub(crate)", "async", "const"].contains(w))
            {
                continue;
            }
            let name = words
                .get(at + 1)
                .map_or("", |w| w.split('(').next().unwrap_or(w));
            let (mut depth, mut opened) = (0i32, false);
            for (j, body) in lines.iter().enumerate().skip(i) {
                if !opened && body.trim_end().ends_with(';') {
                    break;
                }
                for c in body.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if opened && depth == 0 {
                    if j - i + 1 > limit {
                        long.push(format!("{}:{name} ({})", path.display(), j - i + 1));
                    }
                    break;
                }
            }
        }
    }
    long
}

#[test]
fn no_function_of_infra_or_the_jobs_is_over_150_lines() {
    let root = super::root();
    let long: Vec<String> = ["infra/src", "app/src/jobs"]
        .iter()
        .flat_map(|dir| longer_than(&root.join(dir), 150))
        .collect();
    assert_eq!(long, Vec::<String>::new(), "split them into named steps");
    // The count is real: the deployer has long functions of its own (its tests).
    assert!(!longer_than(&root.join("deployer/tests"), 150).is_empty());
}
