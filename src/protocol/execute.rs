//! COM_STMT_EXECUTE parameters: where each value lies in a body, putting values a client
//! sent ahead with COM_STMT_SEND_LONG_DATA back inline, so the execute stands alone — it can
//! go to any connection, be recorded in the log and be replayed on every follower — and
//! adding the parameters the proxy put in place of non-deterministic calls.
//!
//! Pure: no I/O. May import: protocol::message (length-encoded values).

use super::message::{put_lenenc_str, read_lenenc_int};
use std::collections::BTreeMap;

/// The size of one binary-protocol value of type `ty` at the start of `rest` (None when the
/// bytes are cut short).
fn value_len(ty: u8, rest: &[u8]) -> Option<usize> {
    Some(match ty {
        // NULL
        6 => 0,
        // TINY
        1 => 1,
        // SHORT, YEAR
        2 | 13 => 2,
        // LONG, INT24, FLOAT
        3 | 9 | 4 => 4,
        // LONGLONG, DOUBLE
        8 | 5 => 8,
        // DATE, DATETIME, TIMESTAMP, TIME: a length byte, then that many bytes.
        10 | 7 | 12 | 11 => 1 + usize::from(*rest.first()?),
        // Strings, blobs, decimals, JSON, BIT, ENUM, SET, GEOMETRY: length-encoded.
        _ => {
            let mut after = rest;
            let n = read_lenenc_int(&mut after)?;
            // A length prefix near 2^64 from a client must not wrap around.
            (rest.len() - after.len()).checked_add(usize::try_from(n).ok()?)?
        }
    })
}

/// Why long data cannot be put inline.
#[derive(Debug, PartialEq, Eq)]
pub enum InlineError {
    /// The body does not parse with its types.
    Malformed,
    /// Long data was sent for a parameter whose declared type is not a string or blob.
    NotAString(u16),
}

/// `body` is a normalized execute body (after the statement id: flags, iterations, null
/// bitmap, `new_params_bound = 1`, two type bytes per parameter, values — see
/// `executor::write::normalize_execute`), in which the parameters in `long_data` have no
/// value, as the client sent them. Returns the body with those values in place, as
/// length-encoded strings.
pub fn inline_long_data(
    body: &[u8],
    num_params: u16,
    long_data: &BTreeMap<u16, Vec<u8>>,
) -> Result<Vec<u8>, InlineError> {
    let n = usize::from(num_params);
    let bitmap_len = n.div_ceil(8);
    let head_len = 5 + bitmap_len + 1 + 2 * n;
    let head = body.get(..head_len).ok_or(InlineError::Malformed)?;
    let bitmap = &head[5..5 + bitmap_len];
    let types = &head[5 + bitmap_len + 1..];
    let extra: usize = long_data.values().map(|v| v.len() + 9).sum();
    let mut out = Vec::with_capacity(body.len() + extra);
    out.extend_from_slice(head);
    let mut rest = &body[head_len..];
    for i in 0..n {
        let ty = types[2 * i];
        // Long data wins over the null bit, as on the server (mysqli binds a NULL variable
        // to a 'b' parameter and sends its value as long data).
        if let Some(data) = long_data.get(&(i as u16)) {
            if matches!(ty, 1..=13) {
                return Err(InlineError::NotAString(i as u16));
            }
            out[5 + i / 8] &= !(1 << (i % 8));
            put_lenenc_str(&mut out, data);
            continue;
        }
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            continue;
        }
        let len = value_len(ty, rest).ok_or(InlineError::Malformed)?;
        let value = rest.get(..len).ok_or(InlineError::Malformed)?;
        out.extend_from_slice(value);
        rest = &rest[len..];
    }
    if !rest.is_empty() {
        return Err(InlineError::Malformed);
    }
    Ok(out)
}

/// Whether the values of a normalized execute body (see `inline_long_data`) are exactly what
/// its types and null bitmap say: none cut short, nothing after the last. MariaDB reads a
/// string whose length prefix runs past the packet's end from whatever its buffer held
/// before (the tail of an earlier statement), so each server would store other bytes.
pub fn values_fit(body: &[u8], num_params: u16) -> bool {
    if num_params == 0 {
        // Flags and iterations only (clients send no bitmap or types then).
        return true;
    }
    let n = usize::from(num_params);
    let bitmap_len = n.div_ceil(8);
    let head_len = 5 + bitmap_len + 1 + 2 * n;
    let Some(head) = body.get(..head_len) else {
        return false;
    };
    let bitmap = &head[5..5 + bitmap_len];
    let types = &head[5 + bitmap_len + 1..];
    let mut rest = &body[head_len..];
    for i in 0..n {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            continue;
        }
        match value_len(types[2 * i], rest).and_then(|len| rest.get(len..)) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    rest.is_empty()
}

/// A parameter the proxy adds to an execute: its place among the statement's parameters
/// (as the server numbers them), its two type bytes and its binary value (None: NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedParam {
    pub at: u16,
    pub type_bytes: [u8; 2],
    pub value: Option<Vec<u8>>,
}

impl AddedParam {
    /// A VAR_STRING.
    pub fn string(at: u16, s: &str) -> AddedParam {
        let mut value = Vec::with_capacity(s.len() + 1);
        put_lenenc_str(&mut value, s.as_bytes());
        AddedParam {
            at,
            type_bytes: [253, 0],
            value: Some(value),
        }
    }

    /// A NULL.
    pub fn null(at: u16) -> AddedParam {
        AddedParam {
            at,
            type_bytes: [6, 0],
            value: None,
        }
    }

    /// An unsigned LONGLONG.
    pub fn unsigned(at: u16, n: u64) -> AddedParam {
        AddedParam {
            at,
            type_bytes: [8, 0x80],
            value: Some(n.to_le_bytes().to_vec()),
        }
    }

    /// A signed LONGLONG.
    pub fn signed(at: u16, n: i64) -> AddedParam {
        AddedParam {
            at,
            type_bytes: [8, 0],
            value: Some(n.to_le_bytes().to_vec()),
        }
    }
}

/// `body`, a normalized execute body with `num_params` parameters (see `inline_long_data`;
/// with none it is only flags and iterations), with `added` (in ascending `at`) placed
/// among them: the body of the same execute for the statement that has those placeholders
/// too.
pub fn add_params(
    body: &[u8],
    num_params: u16,
    added: &[AddedParam],
) -> Result<Vec<u8>, InlineError> {
    if added.is_empty() {
        return Ok(body.to_vec());
    }
    let n = usize::from(num_params);
    let total = n + added.len();
    let (flags, bitmap, types, mut rest) = if n == 0 {
        (
            body.get(..5).ok_or(InlineError::Malformed)?,
            &[][..],
            &[][..],
            &[][..],
        )
    } else {
        let bitmap_len = n.div_ceil(8);
        let head_len = 5 + bitmap_len + 1 + 2 * n;
        let head = body.get(..head_len).ok_or(InlineError::Malformed)?;
        (
            &head[..5],
            &head[5..5 + bitmap_len],
            &head[5 + bitmap_len + 1..],
            &body[head_len..],
        )
    };
    let extra: usize = added
        .iter()
        .map(|a| a.value.as_ref().map_or(2, |v| v.len() + 3))
        .sum();
    let mut out = Vec::with_capacity(body.len() + extra + 2);
    out.extend_from_slice(flags);
    let bitmap_at = out.len();
    out.resize(bitmap_at + total.div_ceil(8), 0);
    out.push(1);
    let mut values = Vec::with_capacity(rest.len() + extra);
    let (mut next_added, mut original) = (added.iter().peekable(), 0usize);
    for i in 0..total {
        if let Some(a) = next_added.next_if(|a| usize::from(a.at) == i) {
            out.extend_from_slice(&a.type_bytes);
            match &a.value {
                Some(v) => values.extend_from_slice(v),
                None => out[bitmap_at + i / 8] |= 1 << (i % 8),
            }
            continue;
        }
        let o = original;
        original += 1;
        let ty = *types.get(2 * o).ok_or(InlineError::Malformed)?;
        out.extend_from_slice(&types[2 * o..2 * o + 2]);
        if bitmap[o / 8] & (1 << (o % 8)) != 0 {
            out[bitmap_at + i / 8] |= 1 << (i % 8);
            continue;
        }
        let len = value_len(ty, rest).ok_or(InlineError::Malformed)?;
        values.extend_from_slice(rest.get(..len).ok_or(InlineError::Malformed)?);
        rest = &rest[len..];
    }
    if !rest.is_empty() || original != n || next_added.next().is_some() {
        return Err(InlineError::Malformed);
    }
    out.extend_from_slice(&values);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// flags, iterations, bitmap, bound, types.
    fn head(bitmap: &[u8], types: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 1, 0, 0, 0];
        b.extend_from_slice(bitmap);
        b.push(1);
        b.extend_from_slice(types);
        b
    }

    #[test]
    fn long_data_goes_inline_between_the_other_values() {
        // (LONGLONG 7, BLOB from long data, VAR_STRING "ab", DATETIME 2024-01-02, NULL)
        let mut body = head(&[0b1_0000], &[8, 0, 252, 0, 253, 0, 12, 0, 253, 0]);
        body.extend_from_slice(&7u64.to_le_bytes());
        body.extend_from_slice(&[2, b'a', b'b']);
        body.extend_from_slice(&[4, 0xE8, 0x07, 1, 2]);
        let blob = vec![0xAB; 300];
        let long = BTreeMap::from([(1u16, blob.clone())]);
        let out = inline_long_data(&body, 5, &long).unwrap();
        let mut want = head(&[0b1_0000], &[8, 0, 252, 0, 253, 0, 12, 0, 253, 0]);
        want.extend_from_slice(&7u64.to_le_bytes());
        want.extend_from_slice(&[0xFC, 44, 1]);
        want.extend_from_slice(&blob);
        want.extend_from_slice(&[2, b'a', b'b']);
        want.extend_from_slice(&[4, 0xE8, 0x07, 1, 2]);
        assert_eq!(out, want);
    }

    #[test]
    fn added_parameters_go_between_the_clients() {
        // The client's (NULL, VAR_STRING "ab", TINY 5); added: a string first and an
        // unsigned after "ab".
        let mut body = head(&[0b001], &[253, 0, 253, 0, 1, 0]);
        body.extend_from_slice(&[2, b'a', b'b', 5]);
        let added = [
            AddedParam::string(0, "u-1"),
            AddedParam::unsigned(3, 42),
            AddedParam::null(5),
        ];
        let out = add_params(&body, 3, &added).unwrap();
        let mut want = head(&[0b100010], &[253, 0, 253, 0, 253, 0, 8, 0x80, 1, 0, 6, 0]);
        want.extend_from_slice(&[3, b'u', b'-', b'1', 2, b'a', b'b']);
        want.extend_from_slice(&42u64.to_le_bytes());
        want.push(5);
        assert_eq!(out, want);
        // Nine parameters: the bitmap grows to two bytes; the client's NULL keeps its bit.
        let body = head(&[0xFF], &[6, 0].repeat(8));
        let out = add_params(&body, 8, &[AddedParam::string(8, "x")]).unwrap();
        let mut want = head(&[0xFF, 0], &[[6, 0].repeat(8), vec![253, 0]].concat());
        want.extend_from_slice(&[1, b'x']);
        assert_eq!(out, want);
    }

    #[test]
    fn a_statement_without_parameters_gets_a_parameter_block() {
        let out = add_params(&[0, 1, 0, 0, 0], 0, &[AddedParam::unsigned(0, 7)]).unwrap();
        let mut want = head(&[0], &[8, 0x80]);
        want.extend_from_slice(&7u64.to_le_bytes());
        assert_eq!(out, want);
        // An added place past the end, or a body cut short, does not parse.
        assert!(add_params(&[0, 1, 0, 0, 0], 0, &[AddedParam::unsigned(1, 7)]).is_err());
        assert!(add_params(&head(&[0], &[1, 0]), 1, &[AddedParam::unsigned(0, 7)]).is_err());
        // Nothing added (SYSDATE() became NOW()): the body as it was.
        assert_eq!(
            add_params(&[0, 1, 0, 0, 0], 0, &[]).unwrap(),
            [0, 1, 0, 0, 0]
        );
    }

    #[test]
    fn long_data_wins_over_the_null_bit() {
        let mut body = head(&[0b10], &[253, 0, 252, 0]);
        body.extend_from_slice(&[1, b'n']);
        let out = inline_long_data(&body, 2, &BTreeMap::from([(1, b"xyz".to_vec())])).unwrap();
        let mut want = head(&[0], &[253, 0, 252, 0]);
        want.extend_from_slice(&[1, b'n', 3, b'x', b'y', b'z']);
        assert_eq!(out, want);
    }

    #[test]
    fn large_values_get_the_long_length_forms() {
        let body = head(&[0], &[251, 0]);
        for (len, prefix) in [
            (250usize, vec![250u8]),
            (70_000, vec![0xFD, 0x70, 0x11, 0x01]),
            (17_000_000, vec![0xFE, 0x40, 0x66, 0x03, 0x01, 0, 0, 0, 0]),
        ] {
            let out = inline_long_data(&body, 1, &BTreeMap::from([(0, vec![1; len])])).unwrap();
            assert_eq!(
                &out[body.len()..body.len() + prefix.len()],
                &prefix[..],
                "{len}"
            );
            assert_eq!(out.len(), body.len() + prefix.len() + len);
        }
    }

    #[test]
    fn values_must_fill_the_body_exactly() {
        // Two parameters: a LONG and a VAR_STRING.
        let h = head(&[0], &[3, 0, 253, 0]);
        let whole = [&h[..], &[7, 0, 0, 0], &[2, b'x', b'y']].concat();
        assert!(values_fit(&whole, 2));
        // The string's length runs past the end (the fuzzed execute of seed 75).
        let cut = [&h[..], &[7, 0, 0, 0], &[9, b'x', b'y']].concat();
        assert!(!values_fit(&cut, 2));
        let trailing = [&whole[..], &[0]].concat();
        assert!(!values_fit(&trailing, 2));
        // NULL takes no bytes.
        let null = [&head(&[2], &[3, 0, 253, 0])[..], &[7, 0, 0, 0]].concat();
        assert!(values_fit(&null, 2));
        assert!(!values_fit(&h[..4], 2));
        // No parameters: flags and iterations, nothing else to read.
        assert!(values_fit(&[0, 1, 0, 0, 0], 0));
    }

    #[test]
    fn bodies_that_do_not_parse_or_numeric_long_data_are_refused() {
        // A VAR_STRING that claims 5 bytes and has 2.
        let mut body = head(&[0], &[253, 0]);
        body.extend_from_slice(&[5, b'a', b'b']);
        assert_eq!(
            inline_long_data(&body, 1, &BTreeMap::new()),
            Err(InlineError::Malformed)
        );
        // A length prefix of 2^64 - 9 (a client's): the size must not wrap around to 0.
        let mut body = head(&[0], &[253, 0]);
        body.extend_from_slice(&[0xfe, 0xf7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            inline_long_data(&body, 1, &BTreeMap::new()),
            Err(InlineError::Malformed)
        );
        assert_eq!(
            add_params(&body, 1, &[AddedParam::null(1)]),
            Err(InlineError::Malformed)
        );
        // Trailing bytes after the last value.
        let mut body = head(&[0], &[1, 0]);
        body.extend_from_slice(&[9, 9]);
        assert_eq!(
            inline_long_data(&body, 1, &BTreeMap::new()),
            Err(InlineError::Malformed)
        );
        let body = head(&[0], &[8, 0]);
        assert_eq!(
            inline_long_data(&body, 1, &BTreeMap::from([(0, vec![1])])),
            Err(InlineError::NotAString(0))
        );
    }
}
