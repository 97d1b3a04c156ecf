//! "Did you mean ...?": the closest known name to a misspelt one.

/// The candidate closest to `input` by edit distance, when it is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (input.chars().count() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        if candidate == input {
            continue;
        }
        // A length difference above the limit can never be within it; skip the quadratic work.
        if candidate.len().abs_diff(input.len()) > limit + 2 {
            continue;
        }
        let distance = edit_distance(input, candidate);
        let close = distance <= limit || candidate.eq_ignore_ascii_case(input);
        if close && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, name)| name)
}

/// "did you mean `x`?" when a close candidate exists.
pub(crate) fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(input, candidates).map(|name| format!("did you mean `{name}`?"))
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions, which are the most common typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut before_previous = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut value = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                value = value.min(before_previous[j - 2] + 1);
            }
            current[j] = value;
        }
        std::mem::swap(&mut before_previous, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_and_transpositions() {
        assert_eq!(closest("biuld", ["build", "test", "lint"]), Some("build"));
        assert_eq!(closest("tset", ["build", "test"]), Some("test"));
        assert_eq!(closest("imgae", ["image", "run"]), Some("image"));
        assert_eq!(closest("Build", ["build"]), Some("build"));
    }

    #[test]
    fn refuses_distant_names() {
        assert_eq!(closest("deploy", ["build", "test", "lint"]), None);
        assert_eq!(closest("x", ["build"]), None);
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("ab", "ba"), 1);
    }
}
