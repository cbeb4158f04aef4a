//! strata-import-cycles: a test helper that checks a crate's source files import each other
//! without cycles, and fails naming the files of each cycle. A cycle means files that cannot be
//! understood one before the other; each crate keeps its imports one way.
//!
//! Every crate of the workspace runs it from a one-test file, `tests/import_cycles.rs`:
//!
//! ```no_run
//! #[test]
//! fn the_files_of_this_crate_import_each_other_without_cycles() {
//!     strata_import_cycles::assert_no_cycles(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
//! }
//! ```
//!
//! What counts as file A importing from file B:
//!
//! - The files are the crate's modules that have a file, found from `lib.rs` (else `main.rs`)
//!   by their `mod` declarations, `#[path = "…"]` included; a module declared under
//!   `#[cfg(test)]` (`mod tests;`) is left out, as is every item under `#[cfg(test)]`.
//! - A's `use` statements and the paths its code names inline (`crate::b::f()`,
//!   `super::b::T`, `self::b::x`, `$crate::b::T` in a macro, and `alias::x` after
//!   `use crate::b as alias`) that lead into B. Comments and string literals are not read,
//!   doc-comment links included.
//! - A path leads to the file that defines its item: through a re-export or an import on the way
//!   (`crate::Tensor`, re-exported by `lib.rs` from `tensor.rs`, leads to `tensor.rs`;
//!   `super::Result` in a file whose parent imports `Result` leads to where `Result` is
//!   defined). A path into an inline `mod x { … }` leads to its file.
//! - A module's own parts do not count: `ops/conv/mod.rs` (or `conv.rs`) declaring and using or
//!   re-exporting `ops/conv/cpu.rs` is the folder's public face, not a dependency of the folder
//!   on its part; the parts import from it (`use super::ConvGeom`) one way. `lib.rs` (or
//!   `main.rs`) likewise imports from nothing.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod lex;
mod scan;

use scan::{Scan, scan};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// A crate's files and what each imports from the others.
#[derive(Debug)]
pub struct Graph {
    /// Each module that has a file of its own (`ops::conv::cpu`; the crate root is ``), with its
    /// file relative to `src/` (`ops/conv/cpu.rs`).
    pub files: BTreeMap<String, PathBuf>,
    /// For each file's module, the files' modules it imports from, each with the first path that
    /// does, as written (`use super::winograd::Plan`, `crate::tensor::Tensor::zeros`).
    pub edges: BTreeMap<String, BTreeMap<String, String>>,
}

/// Checks the crate whose sources are in `src` (its `src/` folder) and panics naming the files
/// of every import cycle; returns the graph for further checks.
pub fn assert_no_cycles(src: impl AsRef<Path>) -> Graph {
    let graph = Graph::of(src);
    let cycles = graph.cycles();
    if !cycles.is_empty() {
        panic!("{}", graph.describe(&cycles));
    }
    graph
}

/// The paths a `use` tree names: `a::{b, c::{d, e as f}}` → `a::b`, `a::c::d`, `a::c::e as f`.
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

/// `a::b` from `a` and `b`, `b` from `` and `b`.
fn child(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_string() } else { format!("{parent}::{name}") }
}

/// What the crate's files declare and import, before the paths are followed to files.
struct Crate {
    files: BTreeMap<String, (PathBuf, Scan)>,
    /// Every module, inline ones too.
    modules: BTreeSet<String>,
    /// For each module, the names its `use` statements bring in, each with the absolute path it
    /// names (`Tensor` → `tensor::Tensor`).
    names: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Crate {
    /// Reads the crate from its root file in `src`, following its `mod` declarations.
    fn read(src: &Path, read: &dyn Fn(&Path) -> Option<String>) -> Crate {
        let root = ["lib.rs", "main.rs"]
            .iter()
            .map(|f| src.join(f))
            .find(|p| read(p).is_some())
            .unwrap_or_else(|| panic!("{} has neither lib.rs nor main.rs", src.display()));
        let mut files = BTreeMap::new();
        // (module, file, the folder of its submodules' files)
        let mut queue = vec![(String::new(), root, src.to_path_buf())];
        while let Some((module, file, dir)) = queue.pop() {
            let text = read(&file).unwrap_or_else(|| panic!("cannot read {}", file.display()));
            let scanned = scan(&text, &module);
            for m in &scanned.mods {
                let name = m.inline.iter().chain([&m.name]).fold(module.clone(), |p, n| child(&p, n));
                let inline_dir = m.inline.iter().fold(dir.clone(), |d, n| d.join(n));
                let (file_of, dir_of) = match &m.path {
                    // Outside inline modules, relative to the declaring file's folder; its own
                    // submodules go beside it, as for a `mod.rs`.
                    Some(p) => {
                        let base =
                            if m.inline.is_empty() { file.parent().unwrap_or(src).to_path_buf() } else { inline_dir };
                        let f = base.join(p);
                        let d = f.parent().unwrap_or(src).to_path_buf();
                        (f, d)
                    }
                    None => {
                        let flat = inline_dir.join(format!("{}.rs", m.name));
                        let folder = inline_dir.join(&m.name);
                        if read(&flat).is_some() { (flat, folder) } else { (folder.join("mod.rs"), folder) }
                    }
                };
                queue.push((name, file_of, dir_of));
            }
            let rel = file.strip_prefix(src).unwrap_or(&file).to_path_buf();
            files.insert(module, (rel, scanned));
        }
        let mut modules: BTreeSet<String> = files.keys().cloned().collect();
        modules.extend(files.values().flat_map(|(_, s)| s.references.iter().map(|r| r.module.clone())));
        let mut krate = Crate { files, modules, names: BTreeMap::new() };
        let mut names: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for (_, scanned) in krate.files.values() {
            for r in scanned.references.iter().filter(|r| r.is_use) {
                for leaf in expand(&r.text) {
                    let (path, alias) = match leaf.split_once(" as ") {
                        Some((p, a)) => (p.to_string(), Some(a.to_string())),
                        None => (leaf.clone(), None),
                    };
                    let mut segs: Vec<String> = path.split("::").map(String::from).collect();
                    if segs.len() > 1 && segs.last().is_some_and(|s| s == "self") {
                        segs.pop();
                    }
                    let Some(name) = alias.or_else(|| segs.last().cloned()) else { continue };
                    if name == "*" || name == "_" {
                        continue;
                    }
                    if let Some(abs) = krate.absolute(&r.module, &segs, false) {
                        names.entry(r.module.clone()).or_default().insert(name, abs);
                    }
                }
            }
        }
        // `#[macro_export]` macros are items of the crate root, defined in their file.
        for (module, (_, scanned)) in &krate.files {
            for name in &scanned.exported_macros {
                let to =
                    module.split("::").filter(|s| !s.is_empty()).chain([name.as_str()]).map(String::from).collect();
                names.entry(String::new()).or_default().insert(name.clone(), to);
            }
        }
        krate.names = names;
        krate
    }

    /// The absolute path (from the crate root) of `segs` written in `module`, if it is in this
    /// crate; `aliases`: a first segment may be a name a `use` brought in.
    fn absolute(&self, module: &str, segs: &[String], aliases: bool) -> Option<Vec<String>> {
        let mut base: Vec<String> =
            if module.is_empty() { vec![] } else { module.split("::").map(String::from).collect() };
        let first = segs.first()?.as_str();
        match first {
            "crate" => Some(segs[1..].to_vec()),
            "self" => Some(base.into_iter().chain(segs[1..].iter().cloned()).collect()),
            "super" => {
                let supers = segs.iter().take_while(|s| *s == "super").count();
                for _ in 0..supers {
                    base.pop()?;
                }
                Some(base.into_iter().chain(segs[supers..].iter().cloned()).collect())
            }
            _ if self.modules.contains(&child(module, first)) => {
                Some(base.into_iter().chain(segs.iter().cloned()).collect())
            }
            _ if aliases => {
                let to = self.names.get(module)?.get(first)?;
                Some(to.iter().chain(&segs[1..]).cloned().collect())
            }
            _ => None,
        }
    }

    /// The file (its module) that defines what the absolute path `abs` names: the longest
    /// prefix that is a file, through the names that file imports.
    fn target(&self, abs: &[String], hops: usize) -> String {
        for n in (0..=abs.len()).rev() {
            let m = abs[..n].join("::");
            if !self.files.contains_key(&m) {
                continue;
            }
            if n < abs.len()
                && hops < 16
                && let Some(to) = self.names.get(&m).and_then(|names| names.get(&abs[n]))
            {
                let next: Vec<String> = to.iter().chain(&abs[n + 1..]).cloned().collect();
                if next != abs {
                    return self.target(&next, hops + 1);
                }
            }
            return m;
        }
        String::new()
    }
}

impl Graph {
    /// The graph of the crate whose sources are in `src` (its `src/` folder).
    pub fn of(src: impl AsRef<Path>) -> Graph {
        Graph::build(src.as_ref(), &|p| std::fs::read_to_string(p).ok())
    }

    fn build(src: &Path, read: &dyn Fn(&Path) -> Option<String>) -> Graph {
        let krate = Crate::read(src, read);
        let mut edges = BTreeMap::new();
        for (module, (_, scanned)) in &krate.files {
            let mut to: BTreeMap<String, String> = BTreeMap::new();
            for r in &scanned.references {
                let leaves = if r.is_use { expand(&r.text) } else { vec![r.text.clone()] };
                for leaf in leaves {
                    let path = leaf.split(" as ").next().unwrap_or("");
                    let mut segs: Vec<String> = path.split("::").map(String::from).collect();
                    if segs.len() > 1 && segs.last().is_some_and(|s| s == "self" || s == "*") {
                        segs.pop();
                    }
                    let Some(abs) = krate.absolute(&r.module, &segs, !r.is_use) else { continue };
                    let target = krate.target(&abs, 0);
                    // A module's own parts (and everything, for the root) are its public face.
                    let own_part = module.is_empty() || target.starts_with(&format!("{module}::"));
                    if target != *module && !own_part {
                        let leaf = leaf.strip_suffix("::self").unwrap_or(&leaf);
                        let why = if r.is_use { format!("use {leaf}") } else { leaf.to_string() };
                        to.entry(target).or_insert(why);
                    }
                }
            }
            edges.insert(module.clone(), to);
        }
        let files = krate.files.into_iter().map(|(m, (file, _))| (m, file)).collect();
        Graph { files, edges }
    }

    /// The modules (files) that `module`'s file imports from.
    pub fn imports(&self, module: &str) -> BTreeSet<&str> {
        self.edges.get(module).into_iter().flat_map(|to| to.keys().map(String::as_str)).collect()
    }

    /// `module`'s file, as written in messages: `ops/conv/cpu.rs`.
    pub fn file(&self, module: &str) -> String {
        let path = self.files.get(module).map_or_else(|| PathBuf::from(module), PathBuf::clone);
        path.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
    }

    /// The groups of files that import each other in a circle (the strongly connected components
    /// of more than one file), each with its files in order.
    pub fn tangles(&self) -> Vec<Vec<String>> {
        // Tarjan's algorithm.
        struct State<'a> {
            edges: &'a BTreeMap<String, BTreeMap<String, String>>,
            index: BTreeMap<&'a str, usize>,
            low: BTreeMap<&'a str, usize>,
            stack: Vec<&'a str>,
            on_stack: BTreeSet<&'a str>,
            out: Vec<Vec<String>>,
        }
        fn visit<'a>(v: &'a str, s: &mut State<'a>) {
            let i = s.index.len();
            s.index.insert(v, i);
            s.low.insert(v, i);
            s.stack.push(v);
            s.on_stack.insert(v);
            for w in s.edges.get(v).into_iter().flat_map(|to| to.keys()) {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(w, s);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
            if s.low[v] == s.index[v] {
                let mut component = vec![];
                while let Some(w) = s.stack.pop() {
                    s.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    s.out.push(component);
                }
            }
        }
        let mut s = State {
            edges: &self.edges,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: vec![],
            on_stack: BTreeSet::new(),
            out: vec![],
        };
        for v in self.edges.keys() {
            if !s.index.contains_key(v.as_str()) {
                visit(v, &mut s);
            }
        }
        s.out.sort();
        s.out
    }

    /// One shortest cycle per tangle: its files in order, the first repeated at the end.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        self.tangles()
            .iter()
            .map(|tangle| {
                let start = &tangle[0];
                let inside: BTreeSet<&String> = tangle.iter().collect();
                // Breadth first from `start` until an edge leads back to it.
                let mut came_from: BTreeMap<&String, &String> = BTreeMap::new();
                let mut queue = VecDeque::from([start]);
                while let Some(v) = queue.pop_front() {
                    for w in self.edges[v].keys().filter(|w| inside.contains(w)) {
                        if w == start {
                            let mut cycle = vec![start.clone()];
                            let mut at = v;
                            while at != start {
                                cycle.push(at.clone());
                                at = came_from[at];
                            }
                            cycle.push(start.clone());
                            cycle.reverse();
                            return cycle;
                        }
                        if !came_from.contains_key(w) {
                            came_from.insert(w, v);
                            queue.push_back(w);
                        }
                    }
                }
                unreachable!("a tangle is strongly connected")
            })
            .collect()
    }

    /// A message naming the files of each of `cycles` and the import behind each step.
    pub fn describe(&self, cycles: &[Vec<String>]) -> String {
        let mut out = String::from("these files import each other in a circle:");
        for (cycle, tangle) in cycles.iter().zip(self.tangles()) {
            let names: Vec<String> = cycle.iter().map(|m| self.file(m)).collect();
            out += &format!("\n  {}", names.join(" → "));
            for pair in cycle.windows(2) {
                out += &format!("\n    {}: {}", self.file(&pair[0]), self.edges[&pair[0]][&pair[1]]);
            }
            if tangle.len() + 1 > cycle.len() {
                let all: Vec<String> = tangle.iter().map(|m| self.file(m)).collect();
                out += &format!("\n    (all in one circle: {})", all.join(", "));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{Graph, expand};
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    fn graph(files: &[(&str, &str)]) -> Graph {
        let files: BTreeMap<PathBuf, String> =
            files.iter().map(|(p, t)| (Path::new("src").join(p), t.to_string())).collect();
        Graph::build(Path::new("src"), &|p| files.get(p).cloned())
    }

    #[test]
    fn use_trees_expand() {
        assert_eq!(
            expand("check::{shape::{Dim, SymShape}, fix::Fix as F, self}"),
            ["check::shape::Dim", "check::shape::SymShape", "check::fix::Fix as F", "check::self"]
        );
    }

    #[test]
    fn a_cycle_is_found_and_named() {
        let g = graph(&[
            ("lib.rs", "mod a; mod b; mod c; pub use c::C;"),
            ("a.rs", "use crate::b::B; pub struct A;"),
            ("b.rs", "pub struct B; fn f() { crate::C::new(); }"),
            ("c.rs", "pub struct C; fn g() -> super::a::A { todo!() }"),
        ]);
        assert_eq!(g.cycles(), [["a", "b", "c", "a"]]);
        let message = g.describe(&g.cycles());
        assert!(message.contains("a.rs → b.rs → c.rs → a.rs"), "{message}");
        assert!(message.contains("b.rs: crate::C::new"), "{message}");
    }

    #[test]
    fn a_folder_importing_its_parts_is_no_cycle() {
        let g = graph(&[
            ("lib.rs", "pub mod ops; pub use ops::conv::conv2d;"),
            ("ops/mod.rs", "pub mod conv; pub(crate) fn with_float() {}"),
            ("ops/conv/mod.rs", "mod cpu; pub use cpu::Kernel; pub fn conv2d() { cpu::run(); self::cpu::run(); }"),
            (
                "ops/conv/cpu.rs",
                "#[path = \"cpu_x86.rs\"] mod x86; use super::super::with_float; pub fn run() { x86::go() }",
            ),
            ("ops/conv/cpu_x86.rs", "pub fn go() { super::super::conv2d(); }"),
        ]);
        assert_eq!(g.file("ops::conv::cpu::x86"), "ops/conv/cpu_x86.rs");
        assert!(g.imports("ops::conv").is_empty());
        assert_eq!(g.imports("ops::conv::cpu").into_iter().collect::<Vec<_>>(), ["ops"]);
        assert_eq!(g.imports("ops::conv::cpu::x86").into_iter().collect::<Vec<_>>(), ["ops::conv"]);
        assert!(g.cycles().is_empty());
    }

    #[test]
    fn re_exports_and_aliases_lead_to_the_defining_file() {
        let g = graph(&[
            (
                "lib.rs",
                "mod error; mod shape; mod tensor; mod views; pub use error::{Error, Result}; pub use tensor::Tensor;",
            ),
            (
                "error.rs",
                "use crate::shape as s; pub enum Error { Shape(s::Shape) }\n#[macro_export]\nmacro_rules! bail { () => {} }",
            ),
            ("shape.rs", "use crate::Result; pub struct Shape;"),
            ("views.rs", "fn f() { crate::bail!(); }"),
            (
                "tensor.rs",
                "#[cfg(test)]\nmod tests { use crate::shape::Shape; }\nuse crate::error; fn f() -> error::Result<()> {}",
            ),
        ]);
        assert_eq!(g.imports("shape").into_iter().collect::<Vec<_>>(), ["error"]);
        assert_eq!(g.imports("tensor").into_iter().collect::<Vec<_>>(), ["error"]);
        assert_eq!(g.imports("views").into_iter().collect::<Vec<_>>(), ["error"]);
        assert_eq!(g.cycles(), [["error", "shape", "error"]]);
        assert!(g.describe(&g.cycles()).contains("error.rs: use crate::shape as s"));
    }

    #[test]
    fn this_crate_has_no_cycles() {
        let g = super::assert_no_cycles(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
        assert!(g.imports("scan").contains("lex"), "{g:?}");
    }
}
