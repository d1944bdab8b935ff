//! The checkpoint protocol: pure decisions over facts listed from a store, no I/O.
//!
//! The store gathers a [`Listing`] (which checkpoint directories exist, what their manifest looks
//! like, which objects they hold); the functions here decide which checkpoint to restore
//! ([`select_restore`]), whether a checkpoint has all its parts ([`is_complete`]), what may be
//! deleted ([`plan_gc`]), the next id ([`next_id`]) and who wins a race to commit
//! ([`claim_outcome`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::{CheckpointId, MANIFEST_VERSION, Manifest, PartEntry, layout};

/// Everything a store holds, as facts for the protocol. Checkpoints may be in any order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listing {
    /// One entry per checkpoint directory.
    pub checkpoints: Vec<ListedCheckpoint>,
}

/// One checkpoint directory.
#[derive(Clone, Debug, PartialEq)]
pub struct ListedCheckpoint {
    /// The checkpoint id (from the directory name).
    pub id: CheckpointId,
    /// The state of its manifest.
    pub manifest: ManifestState,
    /// Every object under the directory, including the manifest and claims.
    pub objects: Vec<ListedObject>,
}

/// One object in a checkpoint directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    /// Path relative to the store root.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// What the manifest object of a checkpoint looks like.
#[derive(Clone, Debug, PartialEq)]
pub enum ManifestState {
    /// There is no manifest: the checkpoint was never committed (or is still being written).
    Missing,
    /// A manifest object exists but cannot be parsed.
    Torn {
        /// Why it could not be parsed.
        reason: String,
    },
    /// A parsed manifest (not yet checked against the directory it is in, see
    /// [`validate_manifest`]).
    Valid(Manifest),
}

/// Why a checkpoint cannot be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// It has no manifest: it was never committed, or is still being written.
    NoManifest,
    /// Its manifest cannot be parsed.
    TornManifest(String),
    /// Its manifest parses but breaks the protocol's rules.
    InvalidManifest(String),
    /// Parts listed in the manifest do not exist.
    MissingParts(Vec<String>),
    /// A part exists but its size differs from the manifest (a torn or replaced write).
    WrongPartSize {
        /// The part path.
        path: String,
        /// The size the manifest records.
        expected: u64,
        /// The size in storage.
        actual: u64,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NoManifest => f.write_str("no manifest (never committed, or still being written)"),
            SkipReason::TornManifest(reason) => write!(f, "manifest cannot be parsed: {reason}"),
            SkipReason::InvalidManifest(reason) => write!(f, "manifest is invalid: {reason}"),
            SkipReason::MissingParts(paths) => {
                write!(f, "{} part(s) listed in the manifest are missing: {}", paths.len(), paths.join(", "))
            }
            SkipReason::WrongPartSize { path, expected, actual } => {
                write!(f, "part '{path}' has {actual} bytes but the manifest records {expected}")
            }
        }
    }
}

/// A checkpoint that [`select_restore`] passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The checkpoint id.
    pub checkpoint: CheckpointId,
    /// Why it cannot be restored.
    pub reason: SkipReason,
}

/// The result of [`select_restore`].
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreChoice<'a> {
    /// The newest restorable checkpoint's manifest, if any.
    pub manifest: Option<&'a Manifest>,
    /// Newer checkpoints that were passed over, newest first.
    pub skipped: Vec<Skipped>,
}

/// Checks a manifest against the rules of the protocol: a supported version, stored in the
/// directory of its own id, every part inside that directory (so deleting one checkpoint never
/// breaks another, and a manifest never adopts another writer's objects), no part listed twice,
/// and worker indexes below `workers`.
pub fn validate_manifest(manifest: &Manifest, stored_as: CheckpointId) -> Result<(), String> {
    if manifest.version == 0 || manifest.version > MANIFEST_VERSION {
        return Err(format!(
            "format version {} is not supported (this Sluice reads versions 1 to {MANIFEST_VERSION}; \
             a newer Sluice may have written it)",
            manifest.version
        ));
    }
    if manifest.checkpoint != stored_as {
        return Err(format!(
            "it names checkpoint {} but is stored as the manifest of checkpoint {stored_as}",
            manifest.checkpoint
        ));
    }
    let dir = format!("{}/", layout::checkpoint_dir(stored_as));
    let mut paths = BTreeSet::new();
    let mut slots = BTreeSet::new();
    for part in &manifest.parts {
        let inside = part.path.strip_prefix(&dir).is_some_and(|rest| rest.contains('/'));
        if !inside {
            return Err(format!("part '{}' is outside the checkpoint's node directories '{dir}'", part.path));
        }
        if !paths.insert(part.path.as_str()) {
            return Err(format!("part '{}' is listed twice", part.path));
        }
        if !slots.insert((part.node.as_str(), part.worker)) {
            return Err(format!("node '{}' worker {} has two parts", part.node, part.worker));
        }
        if part.worker >= manifest.workers {
            return Err(format!(
                "part '{}' is for worker {} but the checkpoint has {} worker(s)",
                part.path, part.worker, manifest.workers
            ));
        }
    }
    Ok(())
}

/// Checks that every part of `manifest` is among `objects` with the recorded size.
pub fn check_parts(manifest: &Manifest, objects: &[ListedObject]) -> Result<(), SkipReason> {
    let sizes: BTreeMap<&str, u64> = objects.iter().map(|o| (o.path.as_str(), o.bytes)).collect();
    let mut missing = Vec::new();
    for part in &manifest.parts {
        match sizes.get(part.path.as_str()) {
            None => missing.push(part.path.clone()),
            Some(&actual) if actual != part.bytes => {
                return Err(SkipReason::WrongPartSize {
                    path: part.path.clone(),
                    expected: part.bytes,
                    actual,
                });
            }
            Some(_) => {}
        }
    }
    if missing.is_empty() { Ok(()) } else { Err(SkipReason::MissingParts(missing)) }
}

/// The manifest of `checkpoint` if it can be restored: a valid manifest all of whose parts exist.
pub fn restorable(checkpoint: &ListedCheckpoint) -> Result<&Manifest, SkipReason> {
    let manifest = match &checkpoint.manifest {
        ManifestState::Missing => return Err(SkipReason::NoManifest),
        ManifestState::Torn { reason } => return Err(SkipReason::TornManifest(reason.clone())),
        ManifestState::Valid(manifest) => manifest,
    };
    validate_manifest(manifest, checkpoint.id).map_err(SkipReason::InvalidManifest)?;
    check_parts(manifest, &checkpoint.objects)?;
    Ok(manifest)
}

/// Chooses the checkpoint to restore: the newest one that is [`restorable`]. Newer ones that are
/// not are returned in [`RestoreChoice::skipped`] with the reason.
pub fn select_restore(listing: &Listing) -> RestoreChoice<'_> {
    let mut skipped = Vec::new();
    for checkpoint in newest_first(listing) {
        match restorable(checkpoint) {
            Ok(manifest) => return RestoreChoice { manifest: Some(manifest), skipped },
            Err(reason) => skipped.push(Skipped { checkpoint: checkpoint.id, reason }),
        }
    }
    RestoreChoice { manifest: None, skipped }
}

/// The id for the next checkpoint: strictly greater than every id in the listing, complete or
/// not, and 1 for an empty store. Saturates at `u64::MAX` (which a store never reaches in practice;
/// [`CheckpointStore::next_checkpoint_id`](crate::CheckpointStore::next_checkpoint_id) reports it
/// as an error).
pub fn next_id(listing: &Listing) -> CheckpointId {
    listing.checkpoints.iter().map(|c| c.id).max().map_or(1, |max| max.saturating_add(1))
}

/// How the parts written for a checkpoint differ from the expected `(node, worker)` slots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Missing {
    /// Expected slots without a part.
    pub missing: Vec<(String, usize)>,
    /// Parts for slots that were not expected.
    pub unexpected: Vec<(String, usize)>,
    /// Slots with more than one part.
    pub duplicated: Vec<(String, usize)>,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |slots: &[(String, usize)]| {
            slots.iter().map(|(node, worker)| format!("{node}[{worker}]")).collect::<Vec<_>>().join(", ")
        };
        let mut problems = Vec::new();
        if !self.missing.is_empty() {
            problems.push(format!("missing parts: {}", list(&self.missing)));
        }
        if !self.unexpected.is_empty() {
            problems.push(format!("unexpected parts: {}", list(&self.unexpected)));
        }
        if !self.duplicated.is_empty() {
            problems.push(format!("duplicated parts: {}", list(&self.duplicated)));
        }
        write!(f, "checkpoint is incomplete: {}", problems.join("; "))
    }
}

impl std::error::Error for Missing {}

/// Checks that `parts` has exactly one part for each expected `(node, worker)` slot. The runtime
/// calls this before [`CheckpointStore::commit_manifest`](crate::CheckpointStore::commit_manifest).
pub fn is_complete<N: AsRef<str>>(expected: &[(N, usize)], parts: &[PartEntry]) -> Result<(), Missing> {
    let expected: BTreeSet<(&str, usize)> = expected.iter().map(|(n, w)| (n.as_ref(), *w)).collect();
    let mut written: BTreeMap<(&str, usize), usize> = BTreeMap::new();
    for part in parts {
        *written.entry((part.node.as_str(), part.worker)).or_default() += 1;
    }
    let owned = |(node, worker): (&str, usize)| (node.to_owned(), worker);
    let result = Missing {
        missing: expected.iter().filter(|slot| !written.contains_key(*slot)).map(|s| owned(*s)).collect(),
        unexpected: written.keys().filter(|slot| !expected.contains(*slot)).map(|s| owned(*s)).collect(),
        duplicated: written.iter().filter(|(_, count)| **count > 1).map(|(s, _)| owned(*s)).collect(),
    };
    if result == Missing::default() { Ok(()) } else { Err(result) }
}

/// What garbage collection should delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcPlan {
    /// Whole checkpoints to delete (manifest first, then every other object), oldest first.
    pub delete_checkpoints: Vec<CheckpointId>,
    /// Single objects to delete: objects inside kept checkpoints that their manifest does not
    /// reference (a stale writer's parts, leftover claims).
    pub delete_objects: Vec<String>,
    /// The restorable checkpoints that are kept, newest first.
    pub kept: Vec<CheckpointId>,
}

/// Plans garbage collection: keep the newest `retain` restorable checkpoints (at least one, so the
/// newest restorable checkpoint is never deleted), delete older restorable ones, delete
/// checkpoints that are not restorable and older than the newest restorable one, and delete
/// unreferenced objects inside kept checkpoints. Checkpoints with ids `>= in_flight_from` are
/// never touched: the current run may still be writing them.
pub fn plan_gc(listing: &Listing, retain: usize, in_flight_from: CheckpointId) -> GcPlan {
    let restorable: Vec<(&ListedCheckpoint, &Manifest)> =
        newest_first(listing).filter_map(|c| restorable(c).ok().map(|m| (c, m))).collect();
    let kept: BTreeSet<CheckpointId> = restorable.iter().take(retain.max(1)).map(|(c, _)| c.id).collect();
    let newest_restorable = restorable.first().map(|(c, _)| c.id);
    let mut plan = GcPlan { kept: kept.iter().rev().copied().collect(), ..GcPlan::default() };
    let mut oldest_first: Vec<&ListedCheckpoint> = newest_first(listing).collect();
    oldest_first.reverse();
    for checkpoint in oldest_first.into_iter().filter(|c| c.id < in_flight_from) {
        let manifest = restorable.iter().find(|(c, _)| c.id == checkpoint.id).map(|(_, m)| *m);
        match manifest {
            Some(manifest) if kept.contains(&checkpoint.id) => {
                plan.delete_objects.extend(unreferenced(checkpoint, manifest));
            }
            Some(_) => plan.delete_checkpoints.push(checkpoint.id),
            None if newest_restorable.is_some_and(|newest| checkpoint.id < newest) => {
                plan.delete_checkpoints.push(checkpoint.id);
            }
            None => {}
        }
    }
    plan
}

fn unreferenced(checkpoint: &ListedCheckpoint, manifest: &Manifest) -> Vec<String> {
    let manifest_path = layout::manifest_path(checkpoint.id);
    let referenced: BTreeSet<&str> = manifest.parts.iter().map(|p| p.path.as_str()).collect();
    checkpoint
        .objects
        .iter()
        .filter(|o| o.path != manifest_path && !referenced.contains(o.path.as_str()))
        .map(|o| o.path.clone())
        .collect()
}

fn newest_first(listing: &Listing) -> impl Iterator<Item = &ListedCheckpoint> {
    let mut checkpoints: Vec<&ListedCheckpoint> = listing.checkpoints.iter().collect();
    checkpoints.sort_by_key(|c| std::cmp::Reverse(c.id));
    checkpoints.into_iter()
}

/// The outcome of a writer's claim to commit a checkpoint's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The writer's claim is the only one: it may write the manifest.
    Won,
    /// Other writers claimed the checkpoint too: nobody among the racers may assume it won, so this
    /// writer backs off (withdraws its claim and reports a conflict).
    Lost {
        /// The other writers' nonces.
        others: Vec<String>,
    },
    /// The writer's own claim is not listed (deleted by someone else): back off.
    Vanished,
}

/// Decides a claim, given the objects listed under the checkpoint after this writer's claim was
/// written. A writer wins only if its own claim is the only one.
///
/// Why at most one writer wins: writer A lists after writing its claim; if A's listing does not
/// show B's claim, B's claim was written after A's listing, so B's listing (later still) shows A's
/// claim, which a winner never withdraws. This needs list-after-write consistency, not atomic
/// create-only puts. Racing writers may both lose; that only delays completion to the next id.
pub fn claim_outcome(checkpoint: CheckpointId, objects: &[ListedObject], nonce: &str) -> ClaimOutcome {
    let claims: Vec<&str> = objects.iter().filter_map(|o| layout::parse_claim(checkpoint, &o.path)).collect();
    if !claims.contains(&nonce) {
        return ClaimOutcome::Vanished;
    }
    let others: Vec<String> = claims.iter().filter(|c| **c != nonce).map(|c| (*c).to_owned()).collect();
    if others.is_empty() { ClaimOutcome::Won } else { ClaimOutcome::Lost { others } }
}

#[cfg(test)]
mod tests;
