//! The id rule of the contracts: task and worker ids become NATS subject
//! tokens and KV keys, so every service checks them the same way.

/// Longest task id a producer may choose.
const MAX_PRODUCER_ID: usize = 128;
/// Room after it for the suffix of a shard or replica (`--s255`).
const PART_SUFFIX: usize = 16;

/// True for a valid task or worker id: 1..=144 of `[A-Za-z0-9_-]` (it becomes a
/// subject token and a KV key). Producers' task ids are at most 128 characters;
/// the rest is room for the suffix of a shard or replica (`--s255`).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_PRODUCER_ID + PART_SUFFIX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The prefix of every content digest in the contracts (bundles, artifacts).
pub const DIGEST_PREFIX: &str = "sha256:";

/// True for a content digest as the contracts write it: `sha256:` and 64
/// lower-case hex digits (it becomes an Object Store name and a file name).
pub fn is_valid_digest(d: &str) -> bool {
    d.strip_prefix(DIGEST_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_in_lower_case_hex() {
        assert!(is_valid_digest(&format!("sha256:{}", "0a".repeat(32))));
        for bad in [
            "",
            "sha256:",
            &format!("sha256:{}", "0A".repeat(32)),
            &format!("sha1:{}", "0".repeat(64)),
            &format!("sha256:{}", "0".repeat(63)),
            &format!("sha256:{}/..", "0".repeat(64)),
        ] {
            assert!(!is_valid_digest(bad), "{bad:?}");
        }
    }

    #[test]
    fn ids_are_short_tokens_of_letters_digits_dashes_and_underscores() {
        for ok in ["t-1", "gpu_box-07", "suite--s255", "A", &"x".repeat(144)] {
            assert!(is_valid_id(ok), "{ok:?}");
        }
        for bad in ["", "a.b", "a b", "a/b", "a*", "a>", "é", &"x".repeat(145)] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }
}
