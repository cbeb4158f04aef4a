//! "Did you mean": the known word closest to a misspelt one.

/// The allowed word closest to `word` by edit distance, if it is close enough to be a typo.
pub fn closest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_lowercase();
    allowed
        .iter()
        .map(|a| (edit_distance(&lower, &a.to_lowercase()), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

/// Levenshtein distance between `a` and `b`, in characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
