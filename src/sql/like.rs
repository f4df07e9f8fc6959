//! `SHOW … LIKE 'pattern'` as MySQL filters SHOW STATUS and SHOW VARIABLES: the pattern of a
//! statement, and whether a name matches it (`%` any run, `_` one character, `\` escapes,
//! letters compared without case).
//!
//! Owns: LIKE matching for the proxy's own tables. May import: sql::lexer.

use super::lexer::{str_contents, Lexer, Tok};

/// The pattern of a statement ending in `LIKE '<pattern>'` (a final `;` allowed).
pub fn trailing_pattern(sql: &str) -> Option<String> {
    let mut toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    while toks.last() == Some(&Tok::Punct(';')) {
        toks.pop();
    }
    match toks.as_slice() {
        [.., like, Tok::Str(s)] if like.is_word("LIKE") => {
            let quote = &s[..1];
            Some(str_contents(s)?.replace(&quote.repeat(2), quote))
        }
        _ => None,
    }
}

/// Whether `text` matches the LIKE `pattern`.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let t: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    // reachable[j]: the pattern so far can match text[..j].
    let mut reachable = vec![false; t.len() + 1];
    reachable[0] = true;
    let mut i = 0;
    while i < p.len() {
        let next: Vec<bool> = match p[i] {
            '%' => {
                let mut seen = false;
                reachable
                    .iter()
                    .map(|&r| {
                        seen |= r;
                        seen
                    })
                    .collect()
            }
            c => {
                let (literal, any) = match c {
                    '\\' if i + 1 < p.len() => {
                        i += 1;
                        (p[i], false)
                    }
                    '_' => (c, true),
                    _ => (c, false),
                };
                let mut next = vec![false; t.len() + 1];
                for j in 0..t.len() {
                    next[j + 1] = reachable[j] && (any || t[j] == literal);
                }
                next
            }
        };
        reachable = next;
        i += 1;
    }
    reachable[t.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_show_status_like_does() {
        assert!(matches("conn%", "connections_active"));
        assert!(matches("CONN%", "connections_active"));
        assert!(matches("%_reads", "replica_reads"));
        assert!(matches("replica\\_reads", "replica_reads"));
        assert!(!matches("replica\\_reads", "replicaXreads"));
        assert!(matches("replica_reads", "replicaXreads"));
        assert!(matches("%", ""));
        assert!(!matches("_", ""));
        assert!(matches("a%b%c", "axxbyyc"));
        assert!(!matches("a%b%c", "axxbyy"));
        assert!(matches("elections", "elections"));
        assert!(!matches("election", "elections"));
    }

    #[test]
    fn the_pattern_is_the_final_string_after_like() {
        assert_eq!(
            trailing_pattern("SHOW PROXY STATUS LIKE 'conn%';").as_deref(),
            Some("conn%")
        );
        assert_eq!(
            trailing_pattern("show proxy queries like \"%it''s\"").as_deref(),
            Some("%it''s")
        );
        assert_eq!(
            trailing_pattern("SHOW PROXY STATUS LIKE 'it''s'").as_deref(),
            Some("it's")
        );
        assert_eq!(trailing_pattern("SHOW PROXY STATUS"), None);
        assert_eq!(trailing_pattern("SHOW PROXY STATUS LIKE conn"), None);
    }
}
