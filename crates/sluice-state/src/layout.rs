//! Object layout of a checkpoint store (pure string functions, no I/O).
//!
//! ```text
//! <root>/chk-0000000042/_manifest.json               the commit record
//! <root>/chk-0000000042/_claim-<nonce>.json          a writer's claim to commit the manifest
//! <root>/chk-0000000042/<node>/<worker>-<nonce>.part  one part per operator and worker
//! ```
//!
//! Paths are relative to the store root and use `/`. Node names are escaped so that any string is
//! a safe single path segment: `[a-z0-9_-]` are kept, every other byte becomes `.xx` (lower-case
//! hex), which also keeps names distinct on case-insensitive file systems and never yields `.` or
//! `..`.

use crate::CheckpointId;

const CHECKPOINT_PREFIX: &str = "chk-";
const MANIFEST_FILE: &str = "_manifest.json";
const CLAIM_PREFIX: &str = "_claim-";
const CLAIM_SUFFIX: &str = ".json";

/// The directory of a checkpoint, e.g. `chk-0000000042`.
pub fn checkpoint_dir(checkpoint: CheckpointId) -> String {
    format!("{CHECKPOINT_PREFIX}{checkpoint:010}")
}

/// Parses a checkpoint directory name; `None` for anything that [`checkpoint_dir`] would not
/// produce (so `chk-42` and `chk-0000000042` cannot both name checkpoint 42).
pub fn parse_checkpoint_dir(name: &str) -> Option<CheckpointId> {
    let digits = name.strip_prefix(CHECKPOINT_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id = digits.parse().ok()?;
    (checkpoint_dir(id) == name).then_some(id)
}

/// The checkpoint an object path belongs to, if it is inside a checkpoint directory.
pub fn checkpoint_of(path: &str) -> Option<CheckpointId> {
    let (dir, rest) = path.split_once('/')?;
    if rest.is_empty() {
        return None;
    }
    parse_checkpoint_dir(dir)
}

/// The manifest path of a checkpoint.
pub fn manifest_path(checkpoint: CheckpointId) -> String {
    format!("{}/{MANIFEST_FILE}", checkpoint_dir(checkpoint))
}

/// The path of a writer's claim to commit a checkpoint's manifest.
pub fn claim_path(checkpoint: CheckpointId, nonce: &str) -> String {
    format!("{}/{CLAIM_PREFIX}{nonce}{CLAIM_SUFFIX}", checkpoint_dir(checkpoint))
}

/// The writer nonce of a claim path of `checkpoint`, or `None` if `path` is not a claim.
pub fn parse_claim(checkpoint: CheckpointId, path: &str) -> Option<&str> {
    let name = path.strip_prefix(&checkpoint_dir(checkpoint))?.strip_prefix('/')?;
    let nonce = name.strip_prefix(CLAIM_PREFIX)?.strip_suffix(CLAIM_SUFFIX)?;
    (!nonce.is_empty() && !nonce.contains('/')).then_some(nonce)
}

/// The path of one part: `chk-<id>/<escaped node>/<worker>-<nonce>.part`.
pub fn part_path(checkpoint: CheckpointId, node: &str, worker: usize, nonce: &str) -> String {
    format!("{}/{}/{worker}-{nonce}.part", checkpoint_dir(checkpoint), escape_node(node))
}

/// Escapes a node name into one safe path segment (see the module docs).
pub fn escape_node(node: &str) -> String {
    let mut escaped = String::with_capacity(node.len());
    for byte in node.bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => escaped.push(char::from(byte)),
            _ => escaped.push_str(&format!(".{byte:02x}")),
        }
    }
    escaped
}

/// Whether `nonce` is a valid writer nonce: 1 to 64 characters of `[a-z0-9]`.
pub fn is_valid_nonce(nonce: &str) -> bool {
    (1..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_dirs_round_trip_and_reject_non_canonical_names() {
        assert_eq!(checkpoint_dir(42), "chk-0000000042");
        assert_eq!(parse_checkpoint_dir("chk-0000000042"), Some(42));
        assert_eq!(parse_checkpoint_dir(&checkpoint_dir(u64::MAX)), Some(u64::MAX));
        for bad in [
            "chk-42",
            "chk-",
            "chk-00000000x1",
            "chk-+000000042",
            "xyz-0000000042",
            "chk-99999999999999999999",
        ] {
            assert_eq!(parse_checkpoint_dir(bad), None, "{bad}");
        }
    }

    #[test]
    fn objects_are_attributed_to_their_checkpoint() {
        assert_eq!(checkpoint_of("chk-0000000007/_manifest.json"), Some(7));
        assert_eq!(checkpoint_of("chk-0000000007/agg/0-ab.part"), Some(7));
        assert_eq!(checkpoint_of("chk-0000000007"), None);
        assert_eq!(checkpoint_of("other/chk-0000000007/x"), None);
    }

    #[test]
    fn claims_round_trip() {
        let path = claim_path(3, "abc123");
        assert_eq!(parse_claim(3, &path), Some("abc123"));
        assert_eq!(parse_claim(4, &path), None);
        assert_eq!(parse_claim(3, &manifest_path(3)), None);
        assert_eq!(parse_claim(3, "chk-0000000003/_claim-x/y.json"), None);
    }

    #[test]
    fn node_names_escape_to_one_distinct_segment() {
        assert_eq!(escape_node("word_count-1"), "word_count-1");
        assert_eq!(escape_node("A/b.c"), ".41.2fb.2ec");
        assert_eq!(escape_node("é"), ".c3.a9");
        assert_ne!(escape_node("A"), escape_node("a"));
        assert_eq!(part_path(1, "../x", 2, "n0"), "chk-0000000001/.2e.2e.2fx/2-n0.part");
    }
}
