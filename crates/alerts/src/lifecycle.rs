//! The alert lifecycle's decisions for one model run, without a database: given what the
//! store holds for a subject and what the run found, what happens. `AlertStore::apply_run`
//! reads the state, asks these functions, and writes what they decide.
//!
//! Hysteresis: an open alert is lowered, or resolved, only after `keep_for` consecutive
//! runs below its tier (or without the subject); raised at once. A subject whose alert an
//! officer closed opens no new alert while found at the closed tier or lower; found above
//! it, a new alert is opened from it; absent for `keep_for` runs, it may alert again.

use crate::store::Change;
use crate::{Tier, tier_rank};

/// An open alert of the run's model for the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Open {
    pub tier: Tier,
    /// Consecutive runs that found the subject below `tier`, or not at all.
    pub below_runs: u32,
}

/// An alert an officer closed that still holds back new alerts for the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OfficerClosed {
    pub tier: Tier,
    /// Consecutive runs that did not find the subject.
    pub absent_runs: u32,
}

/// The run found the subject and it has an open alert: the alert's new tier and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Update {
    pub tier: Tier,
    pub below_runs: u32,
    /// `Raised`, `Lowered`, or None (unchanged).
    pub change: Option<Change>,
}

/// The run found the subject, which has no open alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoOpenAlert {
    /// A new alert.
    Open,
    /// Still the condition an officer closed: no alert; the closed alert saw it again.
    Suppressed,
    /// Above what the officer closed: a new alert, reopened from the closed one, which no
    /// longer holds anything back.
    Reopen,
}

/// The run did not find a subject that has an open alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Absent {
    /// The condition ended: the alert is resolved.
    Resolve,
    /// Not yet: one more run below.
    Hold { below_runs: u32 },
}

/// The run did not find a subject an officer's close holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lift {
    /// Absent for `keep_for` runs: a new finding opens a new alert.
    Lift { absent_runs: u32 },
    /// Not yet: one more run absent.
    Wait { absent_runs: u32 },
}

/// Runs needed for a lower tier or an end to count (at least one).
fn runs(keep_for: u32) -> u32 {
    keep_for.max(1)
}

pub(crate) fn found_open(open: Open, found: Tier, keep_for: u32) -> Update {
    let (now, was) = (tier_rank(found), tier_rank(open.tier));
    if now > was {
        Update {
            tier: found,
            below_runs: 0,
            change: Some(Change::Raised),
        }
    } else if now == was {
        Update {
            tier: open.tier,
            below_runs: 0,
            change: None,
        }
    } else if open.below_runs + 1 >= runs(keep_for) {
        Update {
            tier: found,
            below_runs: 0,
            change: Some(Change::Lowered),
        }
    } else {
        Update {
            tier: open.tier,
            below_runs: open.below_runs + 1,
            change: None,
        }
    }
}

pub(crate) fn found_without_open(closed: Option<OfficerClosed>, found: Tier) -> NoOpenAlert {
    match closed {
        None => NoOpenAlert::Open,
        Some(c) if tier_rank(found) <= tier_rank(c.tier) => NoOpenAlert::Suppressed,
        Some(_) => NoOpenAlert::Reopen,
    }
}

pub(crate) fn open_absent(open: Open, keep_for: u32) -> Absent {
    if open.below_runs + 1 >= runs(keep_for) {
        Absent::Resolve
    } else {
        Absent::Hold {
            below_runs: open.below_runs + 1,
        }
    }
}

pub(crate) fn closed_absent(closed: OfficerClosed, keep_for: u32) -> Lift {
    let absent_runs = closed.absent_runs + 1;
    if absent_runs >= runs(keep_for) {
        Lift::Lift { absent_runs }
    } else {
        Lift::Wait { absent_runs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIERS: [Tier; 4] = [Tier::Blue, Tier::Yellow, Tier::Orange, Tier::Red];

    fn open(tier: Tier, below_runs: u32) -> Open {
        Open { tier, below_runs }
    }

    #[test]
    fn same_tier_is_unchanged_and_resets_the_count() {
        for t in TIERS {
            for below in 0..3 {
                assert_eq!(
                    found_open(open(t, below), t, 3),
                    Update {
                        tier: t,
                        below_runs: 0,
                        change: None
                    }
                );
            }
        }
    }

    #[test]
    fn a_higher_tier_raises_at_once() {
        for (i, from) in TIERS.iter().enumerate() {
            for to in &TIERS[i + 1..] {
                for keep_for in [0, 1, 5] {
                    assert_eq!(
                        found_open(open(*from, 2), *to, keep_for),
                        Update {
                            tier: *to,
                            below_runs: 0,
                            change: Some(Change::Raised)
                        }
                    );
                }
            }
        }
    }

    #[test]
    fn a_lower_tier_lowers_only_after_keep_for_runs() {
        for (i, to) in TIERS.iter().enumerate() {
            for from in &TIERS[i + 1..] {
                let keep_for = 3;
                let mut state = open(*from, 0);
                for run in 1..keep_for {
                    let u = found_open(state, *to, keep_for);
                    assert_eq!(u.change, None, "run {run} below keeps the tier");
                    assert_eq!((u.tier, u.below_runs), (*from, run));
                    state = open(u.tier, u.below_runs);
                }
                assert_eq!(
                    found_open(state, *to, keep_for),
                    Update {
                        tier: *to,
                        below_runs: 0,
                        change: Some(Change::Lowered)
                    }
                );
                // keep_for 0 or 1: the first run below lowers.
                for keep_for in [0, 1] {
                    assert_eq!(
                        found_open(open(*from, 0), *to, keep_for).change,
                        Some(Change::Lowered)
                    );
                }
            }
        }
    }

    #[test]
    fn an_absent_subject_resolves_after_keep_for_runs() {
        let keep_for = 3;
        let mut state = open(Tier::Orange, 0);
        for run in 1..keep_for {
            match open_absent(state, keep_for) {
                Absent::Hold { below_runs } => {
                    assert_eq!(below_runs, run);
                    state.below_runs = below_runs;
                }
                Absent::Resolve => panic!("resolved after {run} run(s) of {keep_for}"),
            }
        }
        assert_eq!(open_absent(state, keep_for), Absent::Resolve);
        for keep_for in [0, 1] {
            assert_eq!(open_absent(open(Tier::Red, 0), keep_for), Absent::Resolve);
        }
        // Runs below and runs without the subject count together.
        let below = found_open(open(Tier::Red, 0), Tier::Blue, 2);
        assert_eq!(
            open_absent(open(below.tier, below.below_runs), 2),
            Absent::Resolve
        );
    }

    #[test]
    fn a_new_subject_opens() {
        for t in TIERS {
            assert_eq!(found_without_open(None, t), NoOpenAlert::Open);
        }
    }

    #[test]
    fn an_officers_close_holds_back_the_same_or_lower_tier_and_reopens_above() {
        for (i, closed) in TIERS.iter().enumerate() {
            let c = OfficerClosed {
                tier: *closed,
                absent_runs: 1,
            };
            for found in &TIERS[..=i] {
                assert_eq!(found_without_open(Some(c), *found), NoOpenAlert::Suppressed);
            }
            for found in &TIERS[i + 1..] {
                assert_eq!(found_without_open(Some(c), *found), NoOpenAlert::Reopen);
            }
        }
    }

    #[test]
    fn an_officers_close_is_lifted_after_keep_for_absent_runs() {
        let keep_for = 3;
        let mut c = OfficerClosed {
            tier: Tier::Yellow,
            absent_runs: 0,
        };
        for run in 1..keep_for {
            assert_eq!(closed_absent(c, keep_for), Lift::Wait { absent_runs: run });
            c.absent_runs = run;
        }
        assert_eq!(
            closed_absent(c, keep_for),
            Lift::Lift {
                absent_runs: keep_for
            }
        );
        for keep_for in [0, 1] {
            let fresh = OfficerClosed {
                tier: Tier::Red,
                absent_runs: 0,
            };
            assert_eq!(
                closed_absent(fresh, keep_for),
                Lift::Lift { absent_runs: 1 }
            );
        }
    }
}
