//! A small MySQL lexer: enough to split a multi-statement text, find keywords, user
//! variables and function calls outside strings and comments, and parse SET. It allocates
//! nothing: tokens borrow the input.
//!
//! Owns: MySQL's lexical rules (quotes, escapes, comments, `/*! … */` and which of them the
//! backends' version runs). May import: std only.

use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok<'a> {
    /// Unquoted word: keyword or identifier.
    Word(&'a str),
    /// `quoted` identifier, without the backquotes.
    Quoted(&'a str),
    /// String literal including its quotes (kept verbatim for replay).
    Str(&'a str),
    Number(&'a str),
    /// `@name` or `@'name'`.
    UserVar(&'a str),
    /// `@@name`, `@@session.name`, …
    SysVar(&'a str),
    Punct(char),
    /// `?` placeholder.
    Param,
}

impl<'a> Tok<'a> {
    pub fn is_word(&self, kw: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

/// A token and the byte offset where it starts.
#[derive(Debug, Clone, Copy)]
pub struct Spanned<'a> {
    pub tok: Tok<'a>,
    pub start: usize,
    pub end: usize,
}

/// Whether `cur` is the host part of an account name (`'app'@'%'`, `root@localhost`,
/// `` `u`@`h` ``) rather than a user variable: its `@` follows the user name directly.
/// The text between a string literal token's quotes, escapes as written (None when the
/// literal is unterminated: its last byte may be inside a character).
pub fn str_contents(literal: &str) -> Option<&str> {
    let quote = literal.chars().next().filter(|q| matches!(q, '\'' | '"'))?;
    let inner = literal[1..].strip_suffix(quote)?;
    Some(inner)
}

pub fn is_account_host(prev: &Spanned<'_>, cur: &Spanned<'_>) -> bool {
    matches!(cur.tok, Tok::UserVar(_))
        && prev.end == cur.start
        && matches!(prev.tok, Tok::Word(_) | Tok::Quoted(_) | Tok::Str(_))
}

pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    /// NO_BACKSLASH_ESCAPES: a backslash in a string is a plain character.
    no_backslash_escapes: bool,
}

/// The backends' version as MariaDB writes it in comments (10.11.14 is 101114): decides
/// which `/*!NNNNNN … */` comments the servers run. Until a backend was reached, 10.11.0.
static SERVER_VERSION_ID: AtomicU32 = AtomicU32::new(101_100);

/// Notes a backend's version string (`10.11.14-MariaDB-0+deb12u2`), for
/// `versioned_comment_runs`. Replicas of one shard are expected to run one version.
pub fn note_server_version(version: &str) {
    if let Some(id) = version_id(version) {
        SERVER_VERSION_ID.store(id, Ordering::Relaxed);
    }
}

/// `10.11.14-…` as 101114 (MariaDB's handshake says `5.5.5-10.11.14-…`, for old clients).
fn version_id(version: &str) -> Option<u32> {
    let version = version.strip_prefix("5.5.5-").unwrap_or(version);
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    let (major, minor, patch) = (parts.next()??, parts.next()??, parts.next()??);
    Some(major.min(99) * 10_000 + minor.min(99) * 100 + patch.min(99))
}

/// Whether MariaDB runs the content of `/*!<version> … */` (`/*M!<version> … */` when
/// `mariadb_only`), as measured on 10.11: five digits are a MySQL version, run below 5.7
/// (50700) only, as MariaDB skips MySQL-5.7-and-later syntax, except after `M!`; six digits
/// run up to the server's own version; none, or another count, is read as SQL (the digits
/// then make the server's syntax error). A comment the server skips must be skipped here
/// too: `/*!99999 x */ DROP TABLE t` drops the table.
fn versioned_comment_runs(mariadb_only: bool, version: &[u8]) -> bool {
    let Some(v) = std::str::from_utf8(version)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return true;
    };
    match version.len() {
        5 => mariadb_only || v < 50_700,
        6 => v <= SERVER_VERSION_ID.load(Ordering::Relaxed),
        _ => true,
    }
}

/// Whether `rest` starts a `-- ` comment: two dashes and then the end, a space or a control
/// character (MariaDB 10.11 takes `--\x01` and `--\x7f` for a comment too, measured; `--x`
/// is two minus signs). `--\x01\nDROP TABLE t` drops the table.
fn starts_dash_comment(rest: &[u8]) -> bool {
    rest.starts_with(b"--")
        && rest
            .get(2)
            .is_none_or(|&c| is_space(c) || c < 0x20 || c == 0x7F)
}

/// Whitespace as MariaDB's lexer sees it: vertical tab (0x0B) too, which Rust's
/// `is_ascii_whitespace` leaves out. `CREATE\x0bTEMPORARY TABLE t …` is a temporary
/// table to the server; read as something else here, it was logged and replayed.
pub fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer {
            src,
            pos: 0,
            no_backslash_escapes: false,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    fn skip_space_and_comments(&mut self) {
        let b = self.bytes();
        loop {
            while self.pos < b.len() && is_space(b[self.pos]) {
                self.pos += 1;
            }
            let rest = &b[self.pos..];
            if rest.starts_with(b"/*!") || rest.starts_with(b"/*M!") {
                let marker = if rest[2] == b'M' { 4 } else { 3 };
                let digits = rest[marker..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                let version = &rest[marker..marker + digits];
                if versioned_comment_runs(marker == 4, version) {
                    // Executable comment: its content is SQL; skip the marker and version.
                    self.pos += marker + digits;
                } else {
                    // The server skips it whole, like any comment.
                    match find(&rest[2..], b"*/") {
                        Some(i) => self.pos += 2 + i + 2,
                        None => self.pos = b.len(),
                    }
                }
            } else if rest.starts_with(b"*/") {
                self.pos += 2;
            } else if rest.starts_with(b"/*") {
                match find(&rest[2..], b"*/") {
                    Some(i) => self.pos += 2 + i + 2,
                    None => self.pos = b.len(),
                }
            } else if rest.starts_with(b"#") || starts_dash_comment(rest) {
                match rest.iter().position(|&c| c == b'\n') {
                    Some(i) => self.pos += i + 1,
                    None => self.pos = b.len(),
                }
            } else {
                return;
            }
        }
    }

    fn quoted_end(&self, start: usize, q: u8) -> usize {
        let b = self.bytes();
        let mut i = start + 1;
        while i < b.len() {
            if b[i] == b'\\' && q != b'`' && !self.no_backslash_escapes {
                i += 2;
                continue;
            }
            if b[i] == q {
                if b.get(i + 1) == Some(&q) {
                    i += 2;
                    continue;
                }
                return i + 1;
            }
            i += 1;
        }
        b.len()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Spanned<'a>;

    fn next(&mut self) -> Option<Spanned<'a>> {
        self.skip_space_and_comments();
        let b = self.bytes();
        let start = self.pos;
        let c = *b.get(start)?;
        let src = self.src;
        let tok = match c {
            b'\'' | b'"' => {
                let end = self.quoted_end(start, c);
                self.pos = end;
                Tok::Str(&src[start..end])
            }
            b'`' => {
                let end = self.quoted_end(start, c);
                self.pos = end;
                // Unterminated, the name runs to the end (whose last byte may be inside a
                // character).
                let closed = end > start + 1 && b[end - 1] == b'`';
                Tok::Quoted(&src[start + 1..if closed { end - 1 } else { end }])
            }
            b'@' => {
                let sys = b.get(start + 1) == Some(&b'@');
                let mut i = start + if sys { 2 } else { 1 };
                if !sys && matches!(b.get(i), Some(b'\'' | b'"' | b'`')) {
                    let end = self.quoted_end(i, b[i]);
                    self.pos = end;
                    return Some(Spanned {
                        tok: Tok::UserVar(&src[i..end]),
                        start,
                        end,
                    });
                }
                let name_start = i;
                while i < b.len() && (is_ident_byte(b[i]) || b[i] == b'.') {
                    i += 1;
                }
                self.pos = i;
                if sys {
                    Tok::SysVar(&src[name_start..i])
                } else {
                    Tok::UserVar(&src[name_start..i])
                }
            }
            b'0'..=b'9' => {
                let mut i = start;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                self.pos = i;
                Tok::Number(&src[start..i])
            }
            b'?' => {
                self.pos += 1;
                Tok::Param
            }
            c if is_ident_byte(c) => {
                let mut i = start;
                while i < b.len() && is_ident_byte(b[i]) {
                    i += 1;
                }
                self.pos = i;
                Tok::Word(&src[start..i])
            }
            _ => {
                // Multi-byte UTF-8 punctuation cannot occur here (>= 0x80 is an ident byte).
                self.pos += 1;
                Tok::Punct(c as char)
            }
        };
        Some(Spanned {
            tok,
            start,
            end: self.pos,
        })
    }
}

/// Byte ranges of the statements in a multi-statement text (split at top-level `;`),
/// ignoring empty ones. Semicolons inside the body of CREATE PROCEDURE / FUNCTION / TRIGGER /
/// EVENT (BEGIN … END, IF … END IF, loops, CASE) do not split, as the server's parser sees it.
/// A statement's bytes as text with the same byte offsets: bytes that are not valid UTF-8
/// (a latin1 or binary literal sent as raw bytes) become `x`, so lexing and splitting work
/// on the text while whatever is executed or logged is cut from the original bytes. The
/// two such bytes that some of the server's 8-bit character sets take for a space between
/// words (`SERVER_SPACE_BYTES`) become a space: `DROP\xA0TRIGGER …` from a latin1 client
/// is a DROP TRIGGER to the server, and the proxy must see it so.
pub fn offset_preserving_text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => {
            let mut out = String::with_capacity(bytes.len());
            for chunk in bytes.utf8_chunks() {
                out.push_str(chunk.valid());
                out.extend(chunk.invalid().iter().map(|b| match b {
                    b if SERVER_SPACE_BYTES.contains(b) => ' ',
                    _ => 'x',
                }));
            }
            std::borrow::Cow::Owned(out)
        }
    }
}

/// `text` as the lexer must see it when the session's sql_mode has NO_BACKSLASH_ESCAPES: a
/// backslash in a string literal is a plain character there, so each one inside a quoted
/// string becomes `/` (same offsets; strings end where the server ends them). Without it,
/// `'C:\temp\', UUID()` was one unterminated string to the proxy, and `SELECT '\'; DROP
/// TABLE t; -- '` a single read. None when nothing changes.
pub fn without_backslash_escapes(text: &str) -> Option<String> {
    let mut lexer = Lexer::new(text);
    lexer.no_backslash_escapes = true;
    let mut out: Option<Vec<u8>> = None;
    for t in lexer {
        if let Tok::Str(literal) = t.tok {
            for (at, _) in literal.match_indices('\\') {
                out.get_or_insert_with(|| text.as_bytes().to_vec())[t.start + at] = b'/';
            }
        }
    }
    // Only ASCII backslashes were replaced by ASCII: still UTF-8.
    out.and_then(|v| String::from_utf8(v).ok())
}

/// Whether `text` splits into other tokens under NO_BACKSLASH_ESCAPES than with backslash
/// escapes (a string that ends elsewhere): only then does the mode change what it is.
pub fn backslashes_move_tokens(text: &str) -> bool {
    let mut plain = Lexer::new(text);
    plain.no_backslash_escapes = true;
    !Lexer::new(text)
        .map(|t| (t.start, t.end))
        .eq(plain.map(|t| (t.start, t.end)))
}

/// Bytes above ASCII that MariaDB 10.11's lexer skips as whitespace in some client
/// character sets (measured with `SET NAMES cs` and `SELECT<byte>1` for every 8-bit one):
/// 0xA0 (no-break space) in latin1, latin2, latin5, latin7, cp1250, dec8, greek, hebrew,
/// armscii8 and geostd8; 0xFF in cp852, cp866 and keybcs2. Neither is valid UTF-8 alone. In
/// the other character sets they are letters or invalid, so a statement that splits there
/// for the proxy alone is one the server refuses or reads as the same kind.
const SERVER_SPACE_BYTES: [u8; 2] = [0xA0, 0xFF];

/// `BEGIN NOT ATOMIC …` (a compound statement outside a routine), not a transaction.
pub fn is_begin_not_atomic(toks: &[Spanned<'_>]) -> bool {
    matches!(toks, [b, n, a, ..] if b.tok.is_word("BEGIN") && n.tok.is_word("NOT") && a.tok.is_word("ATOMIC"))
}

/// A compound statement outside a stored program, one statement up to its END: `BEGIN NOT
/// ATOMIC … END`, or (as MariaDB 10.11 runs them at the top level, measured) `IF … END IF`,
/// `CASE … END CASE`, `WHILE … END WHILE`, `REPEAT … END REPEAT`, `LOOP … END LOOP` and
/// `FOR … END FOR`. (The server takes no label before them there.)
pub fn is_compound_statement(toks: &[Spanned<'_>]) -> bool {
    is_begin_not_atomic(toks)
        || toks.first().is_some_and(|t| {
            ["IF", "CASE", "WHILE", "REPEAT", "LOOP", "FOR"]
                .iter()
                .any(|k| t.tok.is_word(k))
        })
}

/// Whether the word at `toks[i]` opens a block of a stored program's body that an END
/// closes. IF, REPEAT and FOR are also a function, a function and a clause, so they open
/// one only in their statement form: IF when a THEN follows its condition (not `IF(a, b,
/// c)`, not `DROP TABLE IF EXISTS`), REPEAT when no `(` follows (not `REPEAT('a', 3)`),
/// FOR when `name IN` follows (not `FOR UPDATE`, `CURSOR FOR`, `FOR EACH ROW`). A CASE
/// expression ends with END as the statement does.
fn opens_block(toks: &[Spanned<'_>], i: usize) -> bool {
    let Tok::Word(w) = toks[i].tok else {
        return false;
    };
    let is = |k: &str| w.eq_ignore_ascii_case(k);
    let tok = |k: usize| toks.get(i + k).map(|t| t.tok);
    if is("BEGIN") || is("LOOP") || is("WHILE") || is("CASE") {
        true
    } else if is("REPEAT") {
        tok(1) != Some(Tok::Punct('('))
    } else if is("FOR") {
        matches!(tok(1), Some(Tok::Word(_) | Tok::Quoted(_)))
            && tok(2).is_some_and(|t| t.is_word("IN"))
    } else if is("IF") {
        condition_then_follows(&toks[i + 1..])
    } else {
        false
    }
}

/// Whether a compound statement's tokens hold a loop (WHILE, LOOP, REPEAT or FOR), whose
/// statements the server runs again on each pass.
pub fn holds_a_loop(toks: &[Spanned<'_>]) -> bool {
    let mut after_end = false;
    toks.iter().enumerate().any(|(i, t)| {
        let loops = !after_end
            && ["WHILE", "LOOP", "REPEAT", "FOR"]
                .iter()
                .any(|k| t.tok.is_word(k))
            && opens_block(toks, i);
        after_end = t.tok.is_word("END");
        loops
    })
}

/// The range of `toks` (start, end) holding the statement of a compound statement that
/// `toks[i]` sits in: from after the word or `;` that starts a statement there (THEN, ELSE,
/// DO, BEGIN, ATOMIC, LOOP, REPEAT) to before the next `;`.
pub fn inner_statement(toks: &[Spanned<'_>], i: usize) -> (usize, usize) {
    let starts_after = |t: &Spanned<'_>| {
        t.tok == Tok::Punct(';')
            || ["THEN", "ELSE", "DO", "BEGIN", "ATOMIC", "LOOP", "REPEAT"]
                .iter()
                .any(|k| t.tok.is_word(k))
    };
    let start = toks[..i]
        .iter()
        .rposition(starts_after)
        .map_or(0, |p| p + 1);
    let end = toks[i..]
        .iter()
        .position(|t| t.tok == Tok::Punct(';'))
        .map_or(toks.len(), |p| i + p);
    (start, end)
}

/// Whether THEN ends the condition that starts `toks`, before the statement ends:
/// parenthesized groups and CASE … END expressions are skipped whole.
fn condition_then_follows(toks: &[Spanned<'_>]) -> bool {
    let (mut parens, mut cases) = (0i32, 0i32);
    for t in toks {
        match t.tok {
            Tok::Punct('(') => parens += 1,
            Tok::Punct(')') => parens -= 1,
            Tok::Punct(';') if parens <= 0 => return false,
            Tok::Word(w) if parens <= 0 => {
                if w.eq_ignore_ascii_case("CASE") {
                    cases += 1;
                } else if w.eq_ignore_ascii_case("END") {
                    if cases == 0 {
                        return false;
                    }
                    cases -= 1;
                } else if cases == 0 && w.eq_ignore_ascii_case("THEN") {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

pub fn split_statements(src: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut last_end = 0;
    let mut first_is_create = false;
    let mut routine = false;
    let mut depth = 0i32;
    let mut prev_end = false;
    let toks: Vec<Spanned<'_>> = Lexer::new(src).collect();
    for (i, &t) in toks.iter().enumerate() {
        if t.tok == Tok::Punct(';') && depth <= 0 {
            if let Some(s) = start.take() {
                out.push((s, last_end));
            }
            first_is_create = false;
            routine = false;
            depth = 0;
            prev_end = false;
            continue;
        }
        if start.is_none() {
            first_is_create = t.tok.is_word("CREATE");
            if is_compound_statement(&toks[i..]) {
                first_is_create = true;
                routine = true;
            }
        }
        start.get_or_insert(t.start);
        last_end = t.end;
        if first_is_create {
            if let Tok::Word(w) = t.tok {
                let is = |k: &str| w.eq_ignore_ascii_case(k);
                if is("PROCEDURE") || is("FUNCTION") || is("TRIGGER") || is("EVENT") {
                    routine = true;
                }
                if routine {
                    // `END IF`, `END LOOP`, …: the word after END closes, it does not open.
                    if is("END") {
                        depth -= 1;
                        prev_end = true;
                    } else {
                        if !prev_end && opens_block(&toks, i) {
                            depth += 1;
                        }
                        prev_end = false;
                    }
                }
            } else {
                prev_end = false;
            }
        }
    }
    if let Some(s) = start {
        out.push((s, last_end));
    }
    out
}

/// `sql` without a final `;` and what follows it when that is only comments and blanks. A
/// server with multi-statements on answers such a tail as one more (empty) statement, so the
/// last OK would no longer be the statement's own; the proxy runs the statement alone.
pub fn without_final_semicolon(sql: &str) -> &str {
    let mut toks = Lexer::new(sql);
    while let Some(t) = toks.next() {
        if t.tok == Tok::Punct(';') {
            return match toks.next() {
                None => &sql[..t.start],
                Some(_) => sql,
            };
        }
    }
    sql
}

/// The text of every plain comment in `sql` (`/* … */`, `/*+ … */`, `# …`, `-- …`), not of
/// executable ones (`/*! … */`, whose content is SQL) nor anything inside strings or quoted
/// names.
pub fn comments(sql: &str) -> Vec<&str> {
    let lexer = Lexer::new(sql);
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        match b[i] {
            b'\'' | b'"' | b'`' => i = lexer.quoted_end(i, b[i]),
            b'/' if rest.starts_with(b"/*!") || rest.starts_with(b"/*M!") => i += 3,
            b'/' if rest.starts_with(b"/*") => {
                let end = find(&rest[2..], b"*/").map_or(b.len(), |e| i + 2 + e);
                out.push(&sql[i + 2..end]);
                i = end + 2;
            }
            b'#' | b'-' if b[i] == b'#' || starts_dash_comment(rest) => {
                let start = if b[i] == b'#' { i + 1 } else { i + 2 };
                let end = rest
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |e| i + e);
                out.push(&sql[start..end]);
                i = end;
            }
            _ => i += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_found_outside_strings_only() {
        let sql = "SELECT /*+ a */ 'x /* no */' , `b -- no`, /*!50000 1 */ 2 # c\n-- d\n--e";
        assert_eq!(comments(sql), ["+ a ", " c", " d"]);
        assert_eq!(comments("SELECT 1 /* open"), [" open"]);
        assert!(comments("SELECT 'it''s /* x */'").is_empty());
    }

    #[test]
    fn a_compound_statement_is_one_statement() {
        let sql = "BEGIN NOT ATOMIC DECLARE i INT DEFAULT 0; WHILE i < 3 DO \
                   INSERT INTO t VALUES (i); SET i = i + 1; END WHILE; END; SELECT 1";
        let pieces = split_statements(sql);
        assert_eq!(pieces.len(), 2);
        assert!(sql[pieces[0].0..pieces[0].1].ends_with("END WHILE; END"));
        assert_eq!(split_statements("BEGIN; INSERT INTO t VALUES (1)").len(), 2);
    }

    #[test]
    fn backslashes_move_tokens_only_where_a_string_ends_elsewhere() {
        assert!(!backslashes_move_tokens("SELECT 'a\\\\b', ?"));
        assert!(!backslashes_move_tokens("INSERT INTO t VALUES (?, 'x')"));
        assert!(backslashes_move_tokens(
            "INSERT INTO t VALUES ('C:\\temp\\', ?)"
        ));
        assert!(backslashes_move_tokens("SELECT '\\'; DELETE FROM t; -- '"));
    }

    #[test]
    fn blocks_of_a_program_end_where_the_server_ends_them() {
        let one = |sql: &str| assert_eq!(split_statements(sql), [(0, sql.len())], "{sql}");
        // Top-level compound statements (MariaDB runs them without multi-statements).
        one("IF 1 THEN INSERT INTO t VALUES (1); END IF");
        one("IF (SELECT 1) THEN DO 1; ELSEIF 0 THEN DO 2; ELSE DO 3; END IF");
        one("CASE WHEN 1 THEN INSERT INTO t VALUES (1); ELSE BEGIN END; END CASE");
        one("WHILE (SELECT COUNT(*) FROM t) < 3 DO INSERT INTO t VALUES (1); END WHILE");
        one("REPEAT INSERT INTO t VALUES (1); UNTIL 1 END REPEAT");
        one("LOOP INSERT INTO t VALUES (1); END LOOP");
        one("FOR i IN 1..2 DO INSERT INTO t VALUES (i); END FOR");
        // Bodies of routines: an IF with a parenthesized condition, IF [NOT] EXISTS, the
        // IF() and REPEAT() functions, FOR loops beside FOR UPDATE and cursors.
        one("CREATE PROCEDURE p() BEGIN IF (1) THEN SELECT 1; END IF; SELECT 2; END");
        one(
            "CREATE PROCEDURE p() BEGIN IF EXISTS (SELECT 1 FROM t) THEN DELETE FROM t; \
             END IF; DROP TABLE IF EXISTS u; CREATE TABLE IF NOT EXISTS u (a INT); END",
        );
        one(
            "CREATE FUNCTION f(a INT) RETURNS INT BEGIN SET a = IF(a > 1, 2, 3); \
             RETURN REPEAT('a', a) + CASE WHEN a THEN 1 END; END",
        );
        one(
            "CREATE PROCEDURE p() BEGIN DECLARE c CURSOR FOR SELECT a FROM t FOR UPDATE; \
             FOR r IN c DO SELECT r.a; END FOR; lbl: FOR i IN 1..3 DO ITERATE lbl; END FOR lbl; \
             END",
        );
        one(
            "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW IF NEW.a > 1 THEN \
             SET NEW.a = 1; END IF",
        );
        one("CREATE PROCEDURE p() IF CASE WHEN 1 THEN 1 END THEN SELECT 1; END IF");
        assert_eq!(
            split_statements(
                "IF 1 THEN DO 1; END IF; SELECT IF(1, 2, 3); REPEAT SELECT 1; \
                 UNTIL 1 END REPEAT"
            )
            .len(),
            3
        );
        assert_eq!(
            split_statements("DROP TABLE IF EXISTS t; SELECT 1").len(),
            2
        );
    }

    #[test]
    fn text_of_non_utf8_bytes_keeps_every_offset() {
        let latin1 = b"INSERT INTO t VALUES ('caf\xe9'); SELECT '\xef\xbf'";
        let text = offset_preserving_text(latin1);
        assert_eq!(text.len(), latin1.len());
        assert_eq!(text, "INSERT INTO t VALUES ('cafx'); SELECT 'xx'");
        let pieces = split_statements(&text);
        assert_eq!(
            &latin1[pieces[0].0..pieces[0].1],
            b"INSERT INTO t VALUES ('caf\xe9')"
        );
        assert!(matches!(
            offset_preserving_text("naïve".as_bytes()),
            std::borrow::Cow::Borrowed("naïve")
        ));
        // The bytes a latin1 (0xA0) or cp852 (0xFF) server skips as spaces stay spaces.
        assert_eq!(
            offset_preserving_text(b"\xa0DROP\xa0TRIGGER\xffIF EXISTS f.tr\xe9"),
            " DROP TRIGGER IF EXISTS f.trx"
        );
    }

    #[test]
    fn strings_comments_and_variables() {
        let toks: Vec<_> = Lexer::new(
            "SELECT 'a;b', \"c\\\"d\" /* x; */ -- y;\n, @v, @@session.sql_mode, `t``q`#z",
        )
        .map(|t| t.tok)
        .collect();
        assert_eq!(
            toks,
            vec![
                Tok::Word("SELECT"),
                Tok::Str("'a;b'"),
                Tok::Punct(','),
                Tok::Str("\"c\\\"d\""),
                Tok::Punct(','),
                Tok::UserVar("v"),
                Tok::Punct(','),
                Tok::SysVar("session.sql_mode"),
                Tok::Punct(','),
                Tok::Quoted("t``q"),
            ]
        );
    }

    #[test]
    fn without_backslash_escapes_strings_end_where_the_server_ends_them() {
        let sql = "SELECT '\\'; DROP TABLE t; -- '";
        let view = without_backslash_escapes(sql).unwrap();
        assert_eq!(view, "SELECT '/'; DROP TABLE t; -- '");
        assert_eq!(split_statements(&view).len(), 2);
        let sql = "INSERT INTO t VALUES ('C:\\temp\\', \"a\\\", UUID()) -- x\\";
        assert_eq!(
            without_backslash_escapes(sql).unwrap(),
            "INSERT INTO t VALUES ('C:/temp/', \"a/\", UUID()) -- x\\"
        );
        // Outside strings, and in names and comments, backslashes stay.
        assert_eq!(without_backslash_escapes("SELECT `a\\` /* \\' */ 1"), None);
        assert_eq!(without_backslash_escapes("SELECT 'a''b'"), None);
    }

    #[test]
    fn dash_comments_start_at_a_control_character_too() {
        let words = |sql| -> Vec<&str> {
            Lexer::new(sql)
                .filter_map(|t| match t.tok {
                    Tok::Word(w) => Some(w),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(words("--\x01 c\nDROP TABLE t"), ["DROP", "TABLE", "t"]);
        assert_eq!(words("--\x7f\nDROP t"), ["DROP", "t"]);
        assert_eq!(words("-- c\nDROP t"), ["DROP", "t"]);
        assert_eq!(words("SELECT 1 --x"), ["SELECT", "x"]);
        assert_eq!(comments("SELECT 1 --\x1fnote"), ["\x1fnote"]);
    }

    #[test]
    fn versioned_comments_the_server_skips_are_skipped() {
        let words = |sql| -> Vec<String> {
            Lexer::new(sql)
                .map(|t| match t.tok {
                    Tok::Word(w) | Tok::Number(w) => w.to_string(),
                    other => format!("{other:?}"),
                })
                .collect()
        };
        // MySQL 5.7-and-later comments are skipped; older ones and MariaDB's run.
        assert_eq!(words("/*!99999 x */ DROP TABLE t"), ["DROP", "TABLE", "t"]);
        assert_eq!(words("/*!50700 SELECT */ DROP t"), ["DROP", "t"]);
        assert_eq!(words("/*!50699 DROP */ t"), ["DROP", "t"]);
        assert_eq!(
            words("/*!40101 SET x=1 */"),
            ["SET", "x", "Punct('=')", "1"]
        );
        assert_eq!(words("/*M!99999 DROP */ t"), ["DROP", "t"]);
        assert_eq!(words("/*!DROP*/ t"), ["DROP", "t"]);
        // Six digits run up to the servers' version (10.11.0 until one was reached).
        assert_eq!(words("/*!100000 DROP */ t"), ["DROP", "t"]);
        assert_eq!(words("/*M!999999\\- sandbox */ SELECT 1"), ["SELECT", "1"]);
        assert_eq!(words("/*!999999 DROP */ SELECT 1"), ["SELECT", "1"]);
        assert_eq!(version_id("10.11.14-MariaDB-0+deb12u2"), Some(101_114));
        assert_eq!(version_id("5.5.5-10.11.14-MariaDB"), Some(101_114));
        assert_eq!(version_id("8.0.35"), Some(80_035));
        assert_eq!(version_id("garbage"), None);
    }

    #[test]
    fn splits_statements_outside_quotes() {
        let s = "SELECT ';'; INSERT INTO t VALUES (1) ;; /*!40101 SET x=1 */;";
        let parts: Vec<_> = split_statements(s)
            .into_iter()
            .map(|(a, b)| &s[a..b])
            .collect();
        assert_eq!(
            parts,
            vec!["SELECT ';'", "INSERT INTO t VALUES (1)", "SET x=1"]
        );
        let s = "CREATE PROCEDURE p() BEGIN IF 1 THEN SELECT 1; END IF; WHILE 0 DO SELECT IF(1,2,3); END WHILE; END; SELECT 2";
        let parts: Vec<_> = split_statements(s)
            .into_iter()
            .map(|(a, b)| &s[a..b])
            .collect();
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert_eq!(parts[1], "SELECT 2");
    }

    #[test]
    fn a_final_semicolon_and_trailing_comments_are_cut() {
        assert_eq!(
            without_final_semicolon("UPDATE t SET a=';' ; -- done"),
            "UPDATE t SET a=';' "
        );
        assert_eq!(
            without_final_semicolon("DELETE FROM t;\n/* x */ "),
            "DELETE FROM t"
        );
        assert_eq!(without_final_semicolon("DELETE FROM t"), "DELETE FROM t");
        assert_eq!(without_final_semicolon("DO 1; DO 2"), "DO 1; DO 2");
    }
}
