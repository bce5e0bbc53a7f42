//! The architecture, checked: every folder of `src/` is a layer and may only
//! use the layers before it, sibling files inside a folder never depend on
//! each other in a circle, and no file grows past what fits in a head.
//! Run it alone with `cargo test --lib layering -- --nocapture` (it prints
//! the dependency graph it checked).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, innermost first. A module may use its own layer and the
/// ones before it; two folders of one rank may not use each other.
const LAYERS: &[(&str, u8)] = &[
    ("model", 0),
    ("config", 1),
    ("runtime", 2),
    ("postgres", 3),
    ("kafka", 3),
    ("source", 4),
    ("applier", 5),
    ("consistency", 6),
    ("replay", 6),
    ("service", 7),
    ("cli", 8),
];

/// Longest file allowed (lines); "a few hundred" is the aim.
const MAX_LINES: usize = 550;

fn rank(layer: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == layer)
        .map(|(_, r)| *r)
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `source/changes/mod.rs` -> `["source", "changes"]`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The `crate::…` and `super::…` paths a file names (outside comments),
/// as absolute module paths (braced groups expanded one level).
fn referenced_paths(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (prefix, base) in [
            ("crate::", Vec::new()),
            ("super::", module[..module.len().saturating_sub(1)].to_vec()),
        ] {
            let mut rest = code;
            while let Some(at) = rest.find(prefix) {
                let preceded_by_ident = rest[..at]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
                rest = &rest[at + prefix.len()..];
                if preceded_by_ident {
                    continue;
                }
                for path in expand(rest) {
                    let mut full = base.clone();
                    full.extend(path);
                    found.push(full);
                }
            }
        }
    }
    found
}

/// `source::changes::{A, B}` -> [[source, changes]]; `{a::X, b}` -> [[a], [b]].
fn expand(rest: &str) -> Vec<Vec<String>> {
    let segment = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|p| {
                p.trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|p| !p.is_empty())
            .collect()
    };
    if let Some(group) = rest.strip_prefix('{') {
        let inner = group.split('}').next().unwrap_or("");
        return inner.split(',').map(segment).collect();
    }
    // `a::b::{…}` keeps a::b: the module is what matters, not its items.
    let head = rest
        .split(['{', ';', ' ', ',', ')', '(', '<', '>'])
        .next()
        .unwrap_or("");
    vec![segment(head)]
}

struct Tree {
    /// Module path -> (file path under src/, text).
    files: BTreeMap<Vec<String>, (PathBuf, String)>,
}

impl Tree {
    fn load() -> Tree {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut paths = Vec::new();
        rust_files(&src, &mut paths);
        let mut files = BTreeMap::new();
        for path in paths {
            let relative = path.strip_prefix(&src).expect("under src").to_path_buf();
            let text = std::fs::read_to_string(&path).expect("readable source file");
            files.insert(module_of(&relative), (relative, text));
        }
        Tree { files }
    }

    /// The longest known module that `path` starts with.
    fn resolve(&self, path: &[String]) -> Option<Vec<String>> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|candidate| self.files.contains_key(candidate))
    }

    /// Module -> modules it uses (resolved, self excluded).
    fn graph(&self) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
        let mut graph = BTreeMap::new();
        for (module, (_, text)) in &self.files {
            let uses: BTreeSet<Vec<String>> = referenced_paths(text, module)
                .iter()
                .filter_map(|p| self.resolve(p))
                .filter(|target| target != module)
                .collect();
            graph.insert(module.clone(), uses);
        }
        graph
    }
}

#[test]
fn every_layer_uses_only_the_layers_before_it() {
    let tree = Tree::load();
    let mut violations = Vec::new();
    for (module, uses) in tree.graph() {
        let Some(from) = module.first().and_then(|l| rank(l)) else {
            continue;
        };
        for target in uses {
            let Some(to) = target.first().and_then(|l| rank(l)) else {
                continue;
            };
            let same_folder = module.first() == target.first();
            if to > from || (to == from && !same_folder) {
                violations.push(format!("{} uses {}", module.join("::"), target.join("::")));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependencies must point inward (see LAYERS):\n{}",
        violations.join("\n")
    );
}

#[test]
fn sibling_modules_have_no_dependency_cycle() {
    let tree = Tree::load();
    let graph = tree.graph();
    // Only edges between siblings (same parent, neither is the parent's
    // mod.rs): a folder's mod.rs is its face and naturally meets both ways.
    let sibling_edges = |module: &Vec<String>| -> Vec<Vec<String>> {
        graph[module]
            .iter()
            .filter(|t| {
                t.len() >= module.len() && t[..module.len() - 1] == module[..module.len() - 1]
            })
            .map(|t| t[..module.len()].to_vec())
            .filter(|t| t != module && graph.contains_key(t))
            .collect()
    };
    let mut cycles = Vec::new();
    for start in graph.keys().filter(|m| !m.is_empty()) {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in sibling_edges(&node) {
                if next == *start {
                    let names: Vec<String> = path.iter().map(|m| m.join("::")).collect();
                    cycles.push(format!("{} -> {}", names.join(" -> "), start.join("::")));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next, longer));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
    for (module, uses) in &graph {
        let names: Vec<String> = uses.iter().map(|m| m.join("::")).collect();
        println!("{:<28} -> {}", module.join("::"), names.join(", "));
    }
}

#[test]
fn no_source_file_outgrows_a_head() {
    let tree = Tree::load();
    let long: Vec<String> = tree
        .files
        .values()
        .filter(|(_, text)| text.lines().count() > MAX_LINES)
        .map(|(path, text)| format!("{} ({} lines)", path.display(), text.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these files: {}", long.join(", "));
}

#[test]
fn the_checker_sees_uses_of_both_forms() {
    let module = vec!["source".to_string(), "stream".to_string()];
    let found = referenced_paths(
        "use super::changes::{Changes, TypeNames};\nuse crate::{model::Lsn, postgres};\n// crate::cli in a comment",
        &module,
    );
    let names: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert!(names.contains(&"source::changes".to_string()), "{names:?}");
    assert!(names.contains(&"model::Lsn".to_string()), "{names:?}");
    assert!(names.contains(&"postgres".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("cli")), "{names:?}");
}
