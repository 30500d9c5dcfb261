//! LEB128 integers and zigzag signs, for the store's compact rows: a counter's next value, or
//! a timestamp a few milliseconds on, takes an octet or two instead of eight.

/// Maps a signed difference to an unsigned one with small magnitudes small (0, -1, 1, -2 …).
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends `v` as LEB128: seven bits an octet, low first, the high bit set on all but the last.
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 value off the front of `bytes`; `None` when `bytes` ends inside it or it
/// runs past ten octets.
pub fn take(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_small_ones_small() {
        for v in [0i64, 1, -1, 63, -64, 64, 1 << 40, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put(&mut out, zigzag(v));
            assert_eq!(take(&out), Some((zigzag(v), &[][..])), "{v}");
            assert_eq!(unzigzag(zigzag(v)), v);
            if (-64..64).contains(&v) {
                assert_eq!(out.len(), 1, "{v}");
            }
            assert_eq!(take(&out[..out.len() - 1]).map(|(v, _)| v), None, "cut");
        }
        assert_eq!(take(&[0xff; 11]), None, "too long");
    }
}
