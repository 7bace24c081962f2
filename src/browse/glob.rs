//! Glob patterns on member paths, for `restore --include/--exclude`.
//!
//! A pattern is matched against the whole normalized member path (anchored at the stream's top):
//! `*` matches any bytes except `/`, `?` one byte except `/`, `**` any bytes including `/`, and
//! `**/` zero or more whole directories (so `a/**/b` matches `a/b` and `a/x/y/b`). Everything
//! else is literal. A pattern that matches a directory also matches everything below it.

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(u8),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**` not followed by `/`
    Any,
    /// `**/`
    AnyDirs,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    tokens: Vec<Token>,
}

impl Pattern {
    pub fn new(text: &str) -> Result<Pattern> {
        let normalized = super::normalize_path(text.as_bytes());
        if normalized.is_empty() {
            return Err(Error::Invalid(format!(
                "pattern {text:?} matches nothing (it names the top directory)"
            )));
        }
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < normalized.len() {
            let b = normalized[i];
            if b == b'*' && normalized.get(i + 1) == Some(&b'*') {
                if normalized.get(i + 2) == Some(&b'/') {
                    tokens.push(Token::AnyDirs);
                    i += 3;
                } else {
                    tokens.push(Token::Any);
                    i += 2;
                    // `***` means no more than `**`.
                    while normalized.get(i) == Some(&b'*') {
                        i += 1;
                    }
                }
                continue;
            }
            tokens.push(match b {
                b'*' => Token::Star,
                b'?' => Token::One,
                other => Token::Literal(other),
            });
            i += 1;
        }
        Ok(Pattern {
            text: text.to_string(),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the pattern matches exactly `path` (normalized).
    pub fn matches_exactly(&self, path: &[u8]) -> bool {
        // matched[j]: the tokens from i on match path[j..]; computed from the last token back.
        let n = path.len();
        let mut next = vec![false; n + 1];
        next[n] = true;
        for token in self.tokens.iter().rev() {
            let mut cur = vec![false; n + 1];
            for j in (0..=n).rev() {
                cur[j] = match token {
                    Token::Literal(c) => j < n && path[j] == *c && next[j + 1],
                    Token::One => j < n && path[j] != b'/' && next[j + 1],
                    Token::Star => next[j] || (j < n && path[j] != b'/' && cur[j + 1]),
                    Token::Any => next[j] || (j < n && cur[j + 1]),
                    // Zero directories, or one component and its slash and then more.
                    Token::AnyDirs => {
                        next[j] || {
                            let slash = path[j..].iter().position(|&b| b == b'/');
                            slash.is_some_and(|s| s > 0 && cur[j + s + 1])
                        }
                    }
                };
            }
            next = cur;
        }
        next[0]
    }

    /// True when the pattern matches `path` or one of its parent directories.
    pub fn matches(&self, path: &[u8]) -> bool {
        if self.matches_exactly(path) {
            return true;
        }
        path.iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'/')
            .any(|(i, _)| self.matches_exactly(&path[..i]))
    }
}

/// `--include` and `--exclude` together: a path is selected when no include was given or one
/// matches, and no exclude matches.
#[derive(Clone, Debug, Default)]
pub struct PathFilter {
    includes: Vec<Pattern>,
    excludes: Vec<Pattern>,
}

impl PathFilter {
    pub fn new(includes: &[String], excludes: &[String]) -> Result<PathFilter> {
        Ok(PathFilter {
            includes: includes
                .iter()
                .map(|p| Pattern::new(p))
                .collect::<Result<_>>()?,
            excludes: excludes
                .iter()
                .map(|p| Pattern::new(p))
                .collect::<Result<_>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.includes.is_empty() && self.excludes.is_empty()
    }

    /// Decides for a normalized member path.
    pub fn selects(&self, path: &[u8]) -> bool {
        let included = self.includes.is_empty() || self.includes.iter().any(|p| p.matches(path));
        included && !self.excludes.iter().any(|p| p.matches(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(pattern: &str, path: &str) -> bool {
        Pattern::new(pattern).unwrap().matches(path.as_bytes())
    }

    #[test]
    fn star_stays_within_a_component() {
        assert!(m("*.conf", "a.conf"));
        assert!(!m("*.conf", "etc/a.conf"));
        assert!(m("etc/*.conf", "etc/a.conf"));
        assert!(!m("etc/*.conf", "etc/x/a.conf"));
        assert!(m("e?c/a.conf", "etc/a.conf"));
        assert!(!m("etc?a.conf", "etc/a.conf"));
    }

    #[test]
    fn double_star_crosses_directories() {
        assert!(m("**/*.conf", "a.conf"));
        assert!(m("**/*.conf", "etc/x/a.conf"));
        assert!(m("etc/**/a.conf", "etc/a.conf"));
        assert!(m("etc/**/a.conf", "etc/x/y/a.conf"));
        assert!(!m("etc/**/a.conf", "etcx/a.conf"));
        assert!(m("etc/**", "etc/x/y"));
        assert!(m("e**f", "e/x/f"));
    }

    #[test]
    fn a_directory_pattern_covers_its_contents() {
        assert!(m("etc", "etc/nginx/nginx.conf"));
        assert!(m("./etc/", "etc/nginx"));
        assert!(!m("etc", "etcetera/x"));
        assert!(m("var/*/cache", "var/lib/cache/x/y"));
    }

    #[test]
    fn filter_combines_includes_and_excludes() {
        let f = PathFilter::new(&["etc".into()], &["etc/secret*".into()]).unwrap();
        assert!(f.selects(b"etc/passwd"));
        assert!(!f.selects(b"etc/secret.key"));
        assert!(!f.selects(b"usr/bin/sh"));
        let only_exclude = PathFilter::new(&[], &["tmp".into()]).unwrap();
        assert!(only_exclude.selects(b"etc/passwd"));
        assert!(!only_exclude.selects(b"tmp/x"));
        assert!(PathFilter::new(&["./".into()], &[]).is_err());
    }

    proptest! {
        #[test]
        fn literal_patterns_match_themselves_and_children(
            parts in proptest::collection::vec("[a-z .]{1,6}", 1..4),
            child in "[a-z]{1,5}",
        ) {
            let path = parts.join("/");
            let normalized = String::from_utf8(crate::browse::normalize_path(path.as_bytes())).unwrap();
            prop_assume!(!normalized.is_empty());
            let p = Pattern::new(&normalized).unwrap();
            prop_assert!(p.matches(normalized.as_bytes()));
            let below = format!("{normalized}/{child}");
            prop_assert!(p.matches(below.as_bytes()));
            let beside = format!("{normalized}x");
            prop_assert!(!p.matches_exactly(beside.as_bytes()));
        }
    }
}
