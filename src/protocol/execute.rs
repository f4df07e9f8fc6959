//! COM_STMT_EXECUTE parameters: where each value lies in a body, and putting values a client
//! sent ahead with COM_STMT_SEND_LONG_DATA back inline, so the execute stands alone — it can
//! go to any connection, be recorded in the log and be replayed on every follower.
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
            (rest.len() - after.len()) + usize::try_from(n).ok()?
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
    fn bodies_that_do_not_parse_or_numeric_long_data_are_refused() {
        // A VAR_STRING that claims 5 bytes and has 2.
        let mut body = head(&[0], &[253, 0]);
        body.extend_from_slice(&[5, b'a', b'b']);
        assert_eq!(
            inline_long_data(&body, 1, &BTreeMap::new()),
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
