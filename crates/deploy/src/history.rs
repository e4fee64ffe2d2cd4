//! Reading an environment's history: which releases are known good, what a rollback
//! returns to, and whether a deploy was interrupted. Pure functions over entries.

use jiff::Timestamp;
use predict_buy_registry::{HistoryEntry, Lease, Outcome, ReleaseTag};

/// Releases whose latest *verdict* in `history` is `verified` or `rolled_back` (a
/// release returned to and verified), newest first. A release whose latest verdict is
/// `failed` is not good, whatever happened to it before. `unverified` (the environment
/// could not be checked), `started` and `interrupted` are no verdict on the release:
/// they leave its standing as the entries before them set it.
pub fn good_releases(history: &[HistoryEntry]) -> Vec<ReleaseTag> {
    let mut seen: Vec<&ReleaseTag> = Vec::new();
    let mut good = Vec::new();
    for entry in history.iter().rev() {
        let Some(release) = &entry.release else {
            continue;
        };
        let finished = matches!(
            entry.outcome,
            Outcome::Verified | Outcome::RolledBack | Outcome::Failed
        );
        if !finished || seen.contains(&release) {
            continue;
        }
        seen.push(release);
        if entry.outcome != Outcome::Failed {
            good.push(release.clone());
        }
    }
    good
}

/// Whether `tag` is currently good in `history` (see [`good_releases`]).
pub fn is_good(history: &[HistoryEntry], tag: &ReleaseTag) -> bool {
    good_releases(history).contains(tag)
}

/// What `rollback` returns to by default: the newest good release that is not
/// `current`.
pub fn rollback_candidate(
    history: &[HistoryEntry],
    current: Option<&ReleaseTag>,
) -> Option<ReleaseTag> {
    good_releases(history)
        .into_iter()
        .find(|r| Some(r) != current)
}

/// The `started` entry of a deploy that never finished: the last entry is `started`
/// and nobody holds the lease any more (the deployer crashed or was killed).
pub fn interrupted<'h>(
    history: &'h [HistoryEntry],
    lease: Option<&Lease>,
    now: Timestamp,
) -> Option<&'h HistoryEntry> {
    let last = history.last()?;
    let lease_active = lease.is_some_and(|l| l.is_active(now));
    (last.outcome == Outcome::Started && !lease_active).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> ReleaseTag {
        ReleaseTag::parse(s).unwrap()
    }

    fn h(entries: &[(&str, Outcome)]) -> Vec<HistoryEntry> {
        entries
            .iter()
            .enumerate()
            .map(|(i, (r, o))| HistoryEntry {
                seq: i as u64 + 1,
                release: Some(tag(r)),
                previous: None,
                time: Timestamp::UNIX_EPOCH,
                actor: "t".into(),
                outcome: *o,
                message: String::new(),
            })
            .collect()
    }

    use Outcome::*;

    #[test]
    fn rollback_skips_current_and_failed_releases() {
        let history = h(&[
            ("v0.1.0", Started),
            ("v0.1.0", Verified),
            ("v0.2.0", Started),
            ("v0.2.0", Verified),
            ("v0.3.0", Started),
            ("v0.3.0", Failed),
            ("v0.2.0", RolledBack),
        ]);
        assert_eq!(good_releases(&history), vec![tag("v0.2.0"), tag("v0.1.0")]);
        assert_eq!(
            rollback_candidate(&history, Some(&tag("v0.2.0"))),
            Some(tag("v0.1.0"))
        );
        assert!(!is_good(&history, &tag("v0.3.0")));
    }

    #[test]
    fn a_release_that_failed_later_is_no_longer_good() {
        let history = h(&[
            ("v0.1.0", Verified),
            ("v0.2.0", Verified),
            ("v0.1.0", Started),
            ("v0.1.0", Failed),
            ("v0.2.0", RolledBack),
        ]);
        assert_eq!(rollback_candidate(&history, Some(&tag("v0.2.0"))), None);
    }

    #[test]
    fn an_environment_that_cannot_be_checked_blames_no_release() {
        // The reproduction: v1.1.0 verified; one server down; v1.0.1 and the
        // rollback to v1.1.0 cannot be checked.
        let history = h(&[
            ("v1.1.0", Started),
            ("v1.1.0", Verified),
            ("v1.0.1", Started),
            ("v1.0.1", Unverified),
            ("v1.1.0", Unverified),
        ]);
        assert_eq!(good_releases(&history), vec![tag("v1.1.0")]);
        assert!(is_good(&history, &tag("v1.1.0")));
        assert!(!is_good(&history, &tag("v1.0.1")));
        assert_eq!(
            rollback_candidate(&history, Some(&tag("v1.0.1"))),
            Some(tag("v1.1.0"))
        );
        // Verified before and unverified since: still good.
        let later = h(&[("v1.0.1", Verified), ("v1.0.1", Unverified)]);
        assert!(is_good(&later, &tag("v1.0.1")));
    }

    #[test]
    fn started_without_lease_is_interrupted() {
        let history = h(&[("v0.1.0", Verified), ("v0.2.0", Started)]);
        let now = Timestamp::now();
        assert_eq!(interrupted(&history, None, now).unwrap().seq, 2);
        let lease = Lease {
            env: predict_buy_registry::EnvName::parse("nonprod").unwrap(),
            holder: "a".into(),
            operation: "deploy".into(),
            token: "t".into(),
            acquired_at: now,
            expires_at: now + jiff::SignedDuration::from_secs(60),
            released_at: None,
        };
        assert!(interrupted(&history, Some(&lease), now).is_none());
        let later = now + jiff::SignedDuration::from_secs(61);
        assert!(interrupted(&history, Some(&lease), later).is_some());
        assert!(interrupted(&h(&[("v0.1.0", Verified)]), None, now).is_none());
    }
}
