//! A tokenizer for Rust source, just enough to find paths in it: comments are dropped (doc
//! comments too: their links are not imports), string literals keep their text (for
//! `#[path = "…"]`), char and number literals become one token each, lifetimes are dropped.

/// One token of Rust source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    /// An identifier or keyword (`r#type` as `type`).
    Ident(String),
    /// `::`.
    PathSep,
    /// A string literal (raw, byte and C strings too): its text between the quotes.
    Str(String),
    /// A char, byte or number literal.
    Lit,
    /// Any other punctuation character.
    Punct(char),
}

fn ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// The tokens of `src`.
pub(crate) fn tokens(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied();
    let mut out = vec![];
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let next = at(i + 1);
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            // Block comments nest.
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == Some('*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == Some('/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            let (text, end) = string(&c, i + 1, None);
            out.push(Tok::Str(text));
            i = end;
        } else if ch == '\'' {
            if next == Some('\\') {
                // '\n', '\'', '\u{…}': past the escaped character, then to the closing quote.
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push(Tok::Lit);
            } else if at(i + 2) == Some('\'') {
                i += 3;
                out.push(Tok::Lit);
            } else {
                // A lifetime or a loop label.
                i += 1;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && (ident_char(c[i]) || (c[i] == '.' && at(i + 1).is_some_and(|d| d.is_ascii_digit()))) {
                i += 1;
            }
            out.push(Tok::Lit);
        } else if ident_start(ch) {
            let start = i;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let hashes = c[i..].iter().take_while(|&&h| h == '#').count();
            match (word.as_str(), at(i)) {
                ("r" | "br" | "cr", Some('#' | '"')) if at(i + hashes) == Some('"') => {
                    let (text, end) = string(&c, i + hashes + 1, Some(hashes));
                    out.push(Tok::Str(text));
                    i = end;
                }
                ("r", Some('#')) if hashes == 1 && at(i + 1).is_some_and(ident_start) => {
                    // A raw identifier: `r#type`.
                    let start = i + 1;
                    i = start;
                    while i < c.len() && ident_char(c[i]) {
                        i += 1;
                    }
                    out.push(Tok::Ident(c[start..i].iter().collect()));
                }
                ("b" | "c", Some('"')) => {
                    let (text, end) = string(&c, i + 1, None);
                    out.push(Tok::Str(text));
                    i = end;
                }
                // A byte literal `b'x'`: the quote is read next, as a char literal.
                ("b", Some('\'')) => {}
                _ => out.push(Tok::Ident(word)),
            }
        } else if ch == ':' && next == Some(':') {
            out.push(Tok::PathSep);
            i += 2;
        } else {
            out.push(Tok::Punct(ch));
            i += 1;
        }
    }
    out
}

/// A string literal's text from `i` (just past the opening quote) and the index past its end;
/// `raw` is the number of `#` of a raw string (`None`: an ordinary string, with escapes).
fn string(c: &[char], mut i: usize, raw: Option<usize>) -> (String, usize) {
    let start = i;
    while i < c.len() {
        match raw {
            None if c[i] == '\\' => i += 2,
            None if c[i] == '"' => return (c[start..i].iter().collect(), i + 1),
            Some(n) if c[i] == '"' && c[i + 1..].iter().take(n).filter(|&&h| h == '#').count() == n => {
                return (c[start..i].iter().collect(), i + 1 + n);
            }
            _ => i += 1,
        }
    }
    (c[start..].iter().collect(), c.len())
}

#[cfg(test)]
mod tests {
    use super::{Tok, tokens};

    fn idents(src: &str) -> Vec<String> {
        tokens(src)
            .into_iter()
            .filter_map(|t| match t {
                Tok::Ident(w) => Some(w),
                Tok::PathSep => Some("::".into()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn comments_strings_chars_and_lifetimes_hide_no_paths() {
        let src = r###"
            // crate::a::b in a comment
            /* crate::c /* nested crate::d */ crate::e */
            /// [`crate::f`]
            let s = "crate::g \" crate::h";
            let r = r#"crate::i " crate::j"#;
            let q = '"'; let e = '\''; let b = b'x';
            fn f<'a>(x: &'a str) -> &'a str { x }
            crate::k::l
        "###;
        let words = idents(src);
        assert_eq!(words.iter().filter(|w| *w == "crate").count(), 1, "{words:?}");
        assert!(words.ends_with(&["crate".into(), "::".into(), "k".into(), "::".into(), "l".into()]), "{words:?}");
        assert!(tokens(r#"#[path = "cpu_x86.rs"]"#).contains(&Tok::Str("cpu_x86.rs".into())));
        assert_eq!(idents("r#type::x"), ["type", "::", "x"]);
        assert_eq!(
            tokens("1.5e-3..2"),
            [Tok::Lit, Tok::Punct('-'), Tok::Lit, Tok::Punct('.'), Tok::Punct('.'), Tok::Lit]
        );
    }
}
