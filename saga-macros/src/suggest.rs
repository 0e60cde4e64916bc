//! "Did you mean ..?" for misspelt option and parameter names.

/// The candidate closest to `typo`, if one is close enough to be what the
/// user meant.
pub fn closest<'a>(typo: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    if let Some(swapped) = candidates.iter().find(|c| same_words(typo, c)) {
        return Some(swapped);
    }
    candidates
        .into_iter()
        .filter(|c| *c != typo)
        .map(|c| (distance(typo, c), c))
        .filter(|(d, c)| *d <= (typo.len().max(c.len()) / 3).max(1) || shares_stem(typo, c))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `" (did you mean `x`?)"`, or nothing.
pub fn hint<'a>(typo: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(typo, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// Whether both start with the same four or more characters, and one is
/// the other plus a suffix (`retries` and `retry`, `compensation` and
/// `compensate`).
fn shares_stem(a: &str, b: &str) -> bool {
    let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    common >= 4 && common + 3 >= a.chars().count().min(b.chars().count())
}

/// Whether both are the same words joined by `_` in another order
/// (`retry_compensate` and `compensate_retry`).
fn same_words(a: &str, b: &str) -> bool {
    a != b && a.contains('_') && words(a) == words(b)
}

fn words(s: &str) -> Vec<&str> {
    let mut words: Vec<&str> = s.split('_').filter(|w| !w.is_empty()).collect();
    words.sort_unstable();
    words
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos() {
        let step = [
            "compensate",
            "retry",
            "compensate_retry",
            "timeout",
            "pivot",
        ];
        assert_eq!(closest("compensation", step), Some("compensate"));
        assert_eq!(closest("retries", step), Some("retry"));
        assert_eq!(closest("timout", step), Some("timeout"));
        assert_eq!(closest("privot", step), Some("pivot"));
        assert_eq!(closest("retry_compensate", step), Some("compensate_retry"));
        assert_eq!(
            closest("compensate_retries", step),
            Some("compensate_retry")
        );
        assert_eq!(closest("version", step), None);
        assert_eq!(closest("delay", ["attempts", "backoff", "jitter"]), None);
        assert_eq!(closest("holds", ["input", "cx", "hold"]), Some("hold"));
        assert_eq!(closest("amount", ["input", "cx", "hold"]), None);
    }
}
