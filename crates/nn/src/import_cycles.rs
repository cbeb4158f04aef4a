//! A test that this crate's files import each other without cycles: it reads the `use`
//! statements (`crate::`, `super::`, `self::`) of every file under `src/` (tests excluded) and
//! fails naming the files of any cycle. A folder's `mod.rs` re-exporting its own parts is not a
//! dependency on them. A cycle means two files that cannot be understood one before the other; the layout
//! (`crates/nn/README.md`) keeps imports one way: data, then the layer trait, then the kinds,
//! then the registry, then the machinery.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every `.rs` file under `dir` as `(module path, text)`: `check/walker.rs` is `check::walker`,
/// `check/mod.rs` is `check`, `lib.rs` is ``.
fn modules(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        let name = if prefix.is_empty() { stem.clone() } else { format!("{prefix}::{stem}") };
        if p.is_dir() {
            modules(&p, &name, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let module = match stem.as_str() {
                "lib" => String::new(),
                "mod" => prefix.to_string(),
                _ => name,
            };
            out.insert(module, std::fs::read_to_string(&p).unwrap());
        }
    }
}

/// The paths a `use` tree names: `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else { return vec![tree.to_string()] };
    let base = tree[..open].trim_end_matches("::");
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut items, mut depth, mut start) = (vec![], 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    let join = |s: &str| if base.is_empty() { s.to_string() } else { format!("{base}::{s}") };
    items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).flat_map(|s| expand(&join(s))).collect()
}

/// The `use` statements of `code` (outside its tests), each on one line without spaces:
/// `crate::check::shape::{Dim,SymShape}`.
fn use_trees(code: &str) -> Vec<String> {
    let mut out = vec![];
    let mut current: Option<String> = None;
    for line in code.lines() {
        let line = line.trim();
        if current.is_none() {
            let rest =
                ["use ", "pub use ", "pub(crate) use ", "pub(super) use "].iter().find_map(|p| line.strip_prefix(p));
            current = rest.map(String::from);
        } else if let Some(c) = current.as_mut() {
            c.push_str(line);
        }
        if let Some(c) = current.take_if(|c| c.ends_with(';')) {
            out.push(c.trim_end_matches(';').chars().filter(|c| !c.is_whitespace()).collect());
        }
    }
    out
}

/// The files each file imports from: `use crate::…`, `use super::…`, `use self::…` and its own
/// submodules (`pub use walker::check_spec` in `check/mod.rs`), outside its tests.
fn imports(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let join = |a: &str, b: &str| if a.is_empty() { b.to_string() } else { format!("{a}::{b}") };
    let mut graph = BTreeMap::new();
    for (module, text) in files {
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut to = BTreeSet::new();
        for tree in use_trees(code) {
            for path in expand(&tree) {
                let path = path.split(" as ").next().unwrap_or("").to_string();
                let absolute = if let Some(rest) = path.strip_prefix("crate::") {
                    rest.to_string()
                } else if let Some(rest) = path.strip_prefix("super::") {
                    join(parent, rest)
                } else if let Some(rest) = path.strip_prefix("self::") {
                    join(module, rest)
                } else if files.contains_key(&join(module, path.split("::").next().unwrap_or(""))) {
                    join(module, &path)
                } else {
                    continue; // another crate
                };
                let parts: Vec<&str> = absolute.split("::").collect();
                // The longest prefix that is a file is the file imported from.
                let target = (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|m| files.contains_key(m));
                // A folder's `mod.rs` (and `lib.rs`) declares and re-exports its parts: its
                // imports from them are its public face, not a dependency.
                let own_part = |t: &str| module.is_empty() || t.starts_with(&format!("{module}::"));
                if let Some(t) = target.filter(|t| t != module && !t.is_empty() && !own_part(t)) {
                    to.insert(t);
                }
            }
        }
        graph.insert(module.clone(), to);
    }
    graph
}

/// A cycle through `graph`, as the files in order, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        v: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(v.to_string(), 1);
        stack.push(v.to_string());
        for w in graph.get(v).into_iter().flatten() {
            match state.get(w.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|s| s == w).unwrap_or(0);
                    return Some(stack[from..].iter().cloned().chain([w.clone()]).collect());
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(w, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(v.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for v in graph.keys() {
        if !state.contains_key(v.as_str())
            && let Some(c) = visit(v, graph, &mut state, &mut vec![])
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_files_of_this_crate_import_each_other_without_cycles() {
    let mut files = BTreeMap::new();
    modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), "", &mut files);
    let graph = imports(&files);
    assert!(graph["linear"].contains("layer") && graph["check::walker"].contains("check::merge"), "{graph:?}");
    assert!(graph["optim::adam"].contains("optim"), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        let names: Vec<String> = cycle.iter().map(|m| if m.is_empty() { "lib".into() } else { m.clone() }).collect();
        panic!("these files import each other in a circle: {}", names.join(" → "));
    }
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert_eq!(find_cycle(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    assert_eq!(
        expand("check::{shape::{Dim, SymShape}, fix::Fix}"),
        ["check::shape::Dim", "check::shape::SymShape", "check::fix::Fix"]
    );
}
