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

#[cfg(test)]
mod tests {
    use super::*;

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
