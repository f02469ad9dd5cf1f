//! Debian version ordering, as Debian Policy (section 5.6.12) defines it
//! and `dpkg --compare-versions` applies it: `[epoch:]upstream[-revision]`,
//! the epoch compared as a number, then the upstream version, then the
//! revision, each as alternating runs of non-digits (compared character by
//! character: `~` before the end of the run, the end before letters,
//! letters before every other character) and digits (compared as
//! numbers). Written here rather than run as `dpkg` once per pair: `lock
//! --check` compares every locked package the security suite also has,
//! and a function needs no process per comparison. The tests check it
//! against `dpkg --compare-versions`.

use std::cmp::Ordering;

/// Compare two Debian version strings.
pub(crate) fn compare(a: &str, b: &str) -> Ordering {
    let (a, b) = (Parts::of(a), Parts::of(b));
    a.epoch
        .cmp(&b.epoch)
        .then_with(|| compare_part(a.upstream, b.upstream))
        .then_with(|| compare_part(a.revision, b.revision))
}

/// A version split at its first `:` (after a numeric epoch) and its last `-`.
struct Parts<'a> {
    epoch: u64,
    upstream: &'a str,
    revision: &'a str,
}

impl<'a> Parts<'a> {
    fn of(v: &'a str) -> Parts<'a> {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, rest)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => {
                (e.parse().unwrap_or(u64::MAX), rest)
            }
            _ => (0, v),
        };
        // No revision compares like an empty one (and like `-0`).
        let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, ""));
        Parts {
            epoch,
            upstream,
            revision,
        }
    }
}

/// Compare an upstream version or a revision: non-digit run, digit run, and
/// so on, until both are used up.
fn compare_part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        let (a_text, a_rest) = split_run(a, false);
        let (b_text, b_rest) = split_run(b, false);
        let o = compare_text(a_text, b_text);
        if o != Ordering::Equal {
            return o;
        }
        let (a_num, a_rest) = split_run(a_rest, true);
        let (b_num, b_rest) = split_run(b_rest, true);
        let o = compare_number(a_num, b_num);
        if o != Ordering::Equal {
            return o;
        }
        (a, b) = (a_rest, b_rest);
    }
    Ordering::Equal
}

/// The leading run of digits (or of non-digits) of `s`, and what follows.
fn split_run(s: &[u8], digits: bool) -> (&[u8], &[u8]) {
    let n = s
        .iter()
        .take_while(|c| c.is_ascii_digit() == digits)
        .count();
    s.split_at(n)
}

/// Where a character of a non-digit run sorts; `None` is the run's end.
fn weight(c: Option<&u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(*c),
        Some(c) => i32::from(*c) + 256,
    }
}

fn compare_text(a: &[u8], b: &[u8]) -> Ordering {
    (0..a.len().max(b.len()))
        .map(|i| weight(a.get(i)).cmp(&weight(b.get(i))))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// Compare two runs of digits as numbers of any length (an empty run is 0).
fn compare_number(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |s: &[u8]| -> usize { s.iter().take_while(|c| **c == b'0').count() };
    let (a, b) = (&a[strip(a)..], &b[strip(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    /// (a, b, how a compares to b).
    const PAIRS: &[(&str, &str, Ordering)] = &[
        ("1.0", "1.1", Less),
        ("1.10", "1.9", Greater),
        ("1.0", "1.0", Equal),
        ("1.01", "1.1", Equal),
        ("1.0", "1.0-0", Equal),
        ("1.0~rc1", "1.0", Less),
        ("1.0~~", "1.0~", Less),
        ("1.0~rc1", "1.0~rc2", Less),
        ("1.0", "1.0a", Less),
        ("1.0a", "1.0+", Less),
        ("1.0", "1.0+b1", Less),
        ("1.0+b1", "1.0.1", Less),
        ("1:0.1", "2.0", Greater),
        ("2:1.0", "10:0.1", Less),
        ("0:1.0", "1.0", Equal),
        ("0.7.17-7+b2", "0.7.17-8", Less),
        ("0.7.17-7", "0.7.17-7+b2", Less),
        ("1.0-1", "1.0-1.1", Less),
        ("1.0-beta-1", "1.0-beta-2", Less),
        ("1.0-beta-1", "1.0-1", Greater),
        ("2.36-9+deb12u4", "2.36-9+deb12u10", Less),
        ("3.0.15-1~deb12u1", "3.0.17-1~deb12u1", Less),
        ("3.0.17-1~deb12u1", "3.0.17-1", Less),
        ("252.30-1~deb12u2", "252.33-1~deb12u1", Less),
        ("6.1.0-28", "6.1.0-28", Equal),
        (
            "20240101000000000000000000001",
            "20240101000000000000000000002",
            Less,
        ),
        ("1.2.3", "1.2.3.0", Less),
        ("a", "b", Less),
        ("1.0.", "1.0", Greater),
    ];

    #[test]
    fn orders_versions_like_debian_policy() {
        for (a, b, want) in PAIRS {
            assert_eq!(compare(a, b), *want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn agrees_with_dpkg() {
        for (a, b, want) in PAIRS {
            let op = match want {
                Less => "lt",
                Equal => "eq",
                Greater => "gt",
            };
            let r = crate::cmd::Cmd::new("dpkg")
                .args(["--compare-versions", a, op, b])
                .run();
            assert!(r.is_ok(), "dpkg says {a} is not {op} {b}: {r:?}");
        }
    }
}
