//! Layers only point down: every `crate::MODULE` a source file names (in
//! code, not comments or its test modules) is in the file's own layer or a
//! lower one, and the top-level modules import each other without a
//! cycle. The layers are those of `docs/ARCHITECTURE.md` and `src/lib.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, highest first.
const LAYERS: &[(&str, &[&str])] = &[
    ("front ends", &["cli", "command", "share", "bench"]),
    (
        "the VM",
        &["vm", "event_loop", "stdin", "terminal", "device_manager"],
    ),
    ("machine parts", &["devices", "boot", "acpi", "vcpu"]),
    ("facts", &["plan", "config"]),
    (
        "base",
        &["memory", "layout", "kvm", "exit", "signal", "timeline"],
    ),
];

fn rank(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, mods)| mods.contains(&module))
        .map(|i| LAYERS.len() - i)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`None` for the crate root).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// The code of a file without comments and without its test modules
/// (`#[cfg(test)]` to the end: ember keeps test modules last).
fn production_code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifier `text` starts with.
fn ident(text: &str) -> String {
    text.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// Every `crate::NAME` in `code`, `use crate::{a, b::c}` groups included.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let after = &code[at + 7..];
        match after.strip_prefix('{') {
            Some(group) => {
                let end = group.find('}').unwrap_or(group.len());
                out.extend(group[..end].split(',').map(ident));
            }
            None => {
                out.insert(ident(after));
            }
        }
    }
    out.remove("");
    out
}

#[test]
fn modules_only_import_from_their_layer_or_below_and_never_in_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let name = file.file_name().unwrap().to_str().unwrap();
        if name == "tests.rs" || name.ends_with("_tests.rs") || name == "test_utils.rs" {
            continue;
        }
        let Some(own) = rank(&module) else {
            problems.push(format!(
                "{module} (in {}) has no layer in tests/layers.rs",
                file.display()
            ));
            continue;
        };
        let code = production_code(&std::fs::read_to_string(file).unwrap());
        for used in crate_refs(&code) {
            let Some(r) = rank(&used) else {
                continue; // a crate-root item (`crate::run`, `crate::Outcome`)
            };
            if used == module {
                continue;
            }
            if r > own {
                problems.push(format!(
                    "{} ({module}) imports {used}, a layer above it",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
            graph.entry(module.clone()).or_default().insert(used);
        }
    }
    // Cycles among top-level modules (depth-first, with the path).
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            cycles.push(format!("{} -> {m}", path[at..].join(" -> ")));
            return;
        }
        if done.contains(m) {
            return;
        }
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done, cycles);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    let mut cycles = Vec::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done, &mut cycles);
    }
    problems.extend(cycles.into_iter().map(|c| format!("import cycle: {c}")));
    assert!(problems.is_empty(), "layering:\n{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_what_it_must() {
    let code = production_code(
        "use crate::vm::Vm; // crate::cli\nuse crate::{exit, plan::Topology};\n#[cfg(test)]\nuse crate::bench;",
    );
    let refs = crate_refs(&code);
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["exit", "plan", "vm"],
        "comments and test modules are skipped, groups are read"
    );
    assert!(rank("cli") > rank("vm") && rank("vm") > rank("devices"));
    assert!(rank("devices") > rank("plan") && rank("plan") > rank("exit"));
}
