//! What one file says about other modules: its `mod` declarations, its `use` statements and the
//! paths it names inline (`crate::a::b`, `super::x`, `self::y`, `$crate::z`, `alias::w`), each
//! with the module it is written in (a file's inline `mod x { … }` is a module of its own).
//! Items under `#[cfg(test)]` are left out, `mod tests;` files included.

use crate::lex::{Tok, tokens};

/// A `mod name;` declaration: the file it names is one of the crate's files.
#[derive(Debug)]
pub(crate) struct ModDecl {
    /// The module's name.
    pub name: String,
    /// Its `#[path = "…"]`, if any.
    pub path: Option<String>,
    /// The inline modules it is declared in, outermost first (empty at the file's top level).
    pub inline: Vec<String>,
}

/// A path to another module: a `use` tree or a path written inline.
#[derive(Debug)]
pub(crate) struct Reference {
    /// The module it is written in (the file's, or an inline module's within it).
    pub module: String,
    /// The path as written, tokens joined: `crate::a::{b,c as d}`, `super::x::y`.
    pub text: String,
    /// A `use` tree (true) or a path in code (false).
    pub is_use: bool,
}

/// What a file declares and names.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub mods: Vec<ModDecl>,
    pub references: Vec<Reference>,
    /// The `#[macro_export]` macros it defines: they are items of the crate root.
    pub exported_macros: Vec<String>,
}

/// A token as written, for `use` trees and attributes.
fn text(t: &Tok) -> String {
    match t {
        Tok::Ident(w) => w.clone(),
        Tok::PathSep => "::".into(),
        Tok::Str(s) => format!("{s:?}"),
        Tok::Lit => "0".into(),
        Tok::Punct(c) => c.to_string(),
    }
}

/// Tokens joined, with a space only between two words (`a as b`).
fn join(toks: &[Tok]) -> String {
    let mut out = String::new();
    for (i, t) in toks.iter().enumerate() {
        if i > 0 && matches!(t, Tok::Ident(_)) && matches!(toks[i - 1], Tok::Ident(_)) {
            out.push(' ');
        }
        out.push_str(&text(t));
    }
    out
}

/// The index past the item that starts at `i`: past its `;` or its `{ … }` block, whichever
/// closes first, or at a closing bracket of the code around it.
fn skip_item(toks: &[Tok], i: usize) -> usize {
    let mut depth = 0i32;
    for (j, t) in toks.iter().enumerate().skip(i) {
        match t {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth < 0 {
                    return j;
                }
                if depth == 0 && *t == Tok::Punct('}') {
                    return j + 1;
                }
            }
            Tok::Punct(';') if depth == 0 => return j + 1,
            _ => {}
        }
    }
    toks.len()
}

/// The end of the path that starts at `i`, if one does: a word, then `::` and a word, and more
/// (not a later segment of a path, not a macro's `$var::`, but `$crate::`).
fn path_at(toks: &[Tok], i: usize) -> Option<usize> {
    let is_ident = |j: usize| matches!(toks.get(j), Some(Tok::Ident(_)));
    let Some(Tok::Ident(w)) = toks.get(i) else { return None };
    if toks.get(i + 1) != Some(&Tok::PathSep) || !is_ident(i + 2) {
        return None;
    }
    let before = i.checked_sub(1).map(|b| &toks[b]);
    if before == Some(&Tok::PathSep) || (before == Some(&Tok::Punct('$')) && w != "crate") {
        return None;
    }
    let mut end = i + 1;
    while toks.get(end) == Some(&Tok::PathSep) && is_ident(end + 1) {
        end += 2;
    }
    Some(end)
}

/// The index of the bracket that closes the one at `i`.
fn closing(toks: &[Tok], i: usize) -> usize {
    let mut depth = 0;
    for (j, t) in toks.iter().enumerate().skip(i) {
        match t {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// Scans the file of module `module` (`ops::conv`; the crate root is ``).
pub(crate) fn scan(src: &str, module: &str) -> Scan {
    let toks = tokens(src);
    let ident = |i: usize| match toks.get(i) {
        Some(Tok::Ident(w)) => Some(w.as_str()),
        _ => None,
    };
    let punct = |i: usize, c: char| toks.get(i) == Some(&Tok::Punct(c));
    let mut out = Scan::default();
    // The inline modules open at this point, with the brace depth inside each.
    let mut inline: Vec<(String, usize)> = vec![];
    let current = |inline: &[(String, usize)]| {
        inline
            .iter()
            .fold(module.to_string(), |m, (name, _)| if m.is_empty() { name.clone() } else { format!("{m}::{name}") })
    };
    let mut depth = 0;
    let mut attrs: Vec<String> = vec![];
    let mut i = 0;
    while i < toks.len() {
        // Attributes: collected for the item they are on.
        if punct(i, '#') {
            let inner = punct(i + 1, '!');
            let open = i + 1 + usize::from(inner);
            if punct(open, '[') {
                let close = closing(&toks, open);
                let attr = join(&toks[open + 1..close.min(toks.len())]);
                if inner && attr == "cfg(test)" {
                    return Scan::default(); // the whole file is a test module
                }
                if !inner {
                    attrs.push(attr);
                }
                // Paths in an attribute's arguments: `#[error("…", max = crate::idx::MAX_DIMS)]`.
                let mut j = open + 1;
                while j < close {
                    match path_at(&toks, j) {
                        Some(end) => {
                            let text = join(&toks[j..end]);
                            out.references.push(Reference { module: current(&inline), text, is_use: false });
                            j = end;
                        }
                        None => j += 1,
                    }
                }
                i = close + 1;
                continue;
            }
        }
        if attrs.iter().any(|a| a == "cfg(test)") {
            attrs.clear();
            i = skip_item(&toks, i);
            continue;
        }
        match &toks[i] {
            Tok::Ident(w) if w == "mod" && ident(i + 1).is_some() => {
                let name = ident(i + 1).unwrap_or_default().to_string();
                if punct(i + 2, ';') {
                    let path = attrs.iter().find_map(|a| {
                        let v = a.strip_prefix("path=")?;
                        Some(v.trim_matches('"').to_string())
                    });
                    let inline = inline.iter().map(|(n, _)| n.clone()).collect();
                    out.mods.push(ModDecl { name, path, inline });
                    i += 3;
                } else if punct(i + 2, '{') {
                    depth += 1;
                    inline.push((name, depth));
                    i += 3;
                } else {
                    i += 1;
                }
                attrs.clear();
                continue;
            }
            Tok::Ident(w) if w == "macro_rules" && punct(i + 1, '!') && ident(i + 2).is_some() => {
                if attrs.iter().any(|a| a == "macro_export") {
                    out.exported_macros.push(ident(i + 2).unwrap_or_default().to_string());
                }
                attrs.clear();
                i += 3;
                continue;
            }
            // `use<'a>` (precise capturing in `impl Trait + use<'a>`) is no import.
            Tok::Ident(w) if w == "use" && !punct(i + 1, '<') => {
                let end = toks[i..].iter().position(|t| *t == Tok::Punct(';')).map_or(toks.len(), |p| i + p);
                let text = join(&toks[i + 1..end]);
                out.references.push(Reference { module: current(&inline), text, is_use: true });
                attrs.clear();
                i = end + 1;
                continue;
            }
            Tok::Ident(_) if let Some(end) = path_at(&toks, i) => {
                out.references.push(Reference { module: current(&inline), text: join(&toks[i..end]), is_use: false });
                i = end;
                continue;
            }
            Tok::Punct('{') => {
                depth += 1;
                attrs.clear();
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                attrs.clear();
            }
            Tok::Punct(';') => attrs.clear(),
            _ => {}
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::scan;

    #[test]
    fn uses_inline_paths_mods_and_tests() {
        let src = r#"
            //! A file.
            use crate::a::{b, c as d};
            pub(crate) use super::e;
            #[cfg(target_arch = "x86_64")]
            #[path = "f_x86.rs"]
            mod f;
            mod g;
            #[cfg(test)]
            mod tests;
            #[cfg(test)]
            mod more_tests {
                use crate::test_only::x;
            }
            fn h<'a>(x: &'a u8) -> impl Sized + use<'a> {
                let y = crate::i::j::K::new(super::super::l::m(x));
                macro_rules! n { () => { $crate::o::p } }
                Vec::<u8>::new();
                y.q::<u8>()
            }
            mod inner {
                use super::r;
                fn s() { self::t::u(); }
            }
            fn v() { crate::w::x(); }
            #[error("{max}", max = crate::y::MAX)]
            struct Z;
            #[macro_export]
            macro_rules! bail { () => {} }
        "#;
        let s = scan(src, "top::file");
        let mods: Vec<_> = s.mods.iter().map(|m| (m.name.as_str(), m.path.as_deref())).collect();
        assert_eq!(mods, [("f", Some("f_x86.rs")), ("g", None)]);
        assert_eq!(s.exported_macros, ["bail"]);
        let refs: Vec<_> = s.references.iter().map(|r| (r.module.as_str(), r.text.as_str(), r.is_use)).collect();
        assert_eq!(
            refs,
            [
                ("top::file", "crate::a::{b,c as d}", true),
                ("top::file", "super::e", true),
                ("top::file", "crate::i::j::K::new", false),
                ("top::file", "super::super::l::m", false),
                ("top::file", "crate::o::p", false),
                ("top::file::inner", "super::r", true),
                ("top::file::inner", "self::t::u", false),
                ("top::file", "crate::w::x", false),
                ("top::file", "crate::y::MAX", false),
            ]
        );
        assert!(scan("#![cfg(test)]\nuse crate::a;", "x").references.is_empty());
    }
}
