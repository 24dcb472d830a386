//! Shell-style globs over bytes: `*` matches any run, and (where the caller's
//! syntax has one) a single-byte wildcard matches one byte. Iterative, so a
//! hostile pattern cannot make matching blow up by backtracking.

/// Whether `text` matches all of `pattern`; `any_one` is the single-byte wildcard, if any.
pub fn matches(pattern: &[u8], text: &[u8], any_one: Option<u8>) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && (Some(pattern[p]) == any_one || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_and_single_wildcards() {
        assert!(matches(b"registry.example.org/*", b"registry.example.org/team/app:1", None));
        assert!(!matches(b"registry.example.org/*", b"registry.example.com/x", None));
        assert!(matches(b"a?c", b"abc", Some(b'?')));
        assert!(!matches(b"a?c", b"abc", None), "`?` is literal without a single-byte wildcard");
        assert!(matches(b"*.example.org", b"eu.example.org", Some(b'?')));
        let hostile = [b'*', b'a'].repeat(30);
        assert!(!matches(&hostile, &[b'a'; 200].iter().chain(b"b").copied().collect::<Vec<_>>(), None));
    }
}
