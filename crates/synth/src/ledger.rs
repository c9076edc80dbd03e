//! Per-subject bookkeeping of police incidents, so that background data never crosses a
//! model's lowest tier and planted subjects get exactly the counts planned for them.
//!
//! Every incident, planted or background, passes [`Ledger::admit`]. Each key it touches
//! (its address, its caller's phone, its people, its fraud suspect) is either *owned* by a
//! planted subject — then only that subject's planted incidents may touch it, with no
//! limit — or free, and then the background limit holds in **every** sliding window (not
//! only the one ending at `as_of`), so backtests at earlier dates stay quiet too.

use std::collections::HashMap;

use crate::vocab::Category;

/// What an incident touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// All incidents at an address (repeat-address).
    Addr(u64),
    /// Dispute and noise calls from a phone (repeat-caller).
    Calls(u64),
    /// Dispute / domestic-violence involvement of a person (escalating-dispute).
    Disp(u64),
    /// Any involvement of a person (care-lapse `R`).
    Any(u64),
    /// Fraud reports naming a suspect phone (case-linkage).
    Suspect(u64),
}

/// An incident as the ledger sees it. Days are counted back from `as_of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draft {
    pub ago: u32,
    pub category: Category,
    pub station: u8,
    pub addr: u64,
    /// Caller's person index.
    pub caller: u64,
    /// Caller's phone index (equals `caller`: a person calls from their own phone).
    pub caller_phone: u64,
    pub party: Option<u64>,
    pub suspect: Option<u64>,
}

/// Background limits: at most `max` events in any window of `width` days (the model's
/// "within N days" spans N + 1 calendar days).
const ADDR_LIMIT: (u32, usize) = (31, 2);
const CALLS_LIMIT: (u32, usize) = (31, 2);
const DISP_LIMIT: (u32, usize) = (91, 1);
const SUSPECT_MAX: usize = 2;

#[derive(Debug, Default)]
pub struct Ledger {
    events: HashMap<Key, Vec<u32>>,
    owners: HashMap<Key, u32>,
    suspect_station: HashMap<u64, u8>,
}

fn fits(existing: &[u32], ago: u32, (width, max): (u32, usize)) -> bool {
    let mut near: Vec<u32> = existing
        .iter()
        .copied()
        .filter(|e| e.abs_diff(ago) < width)
        .collect();
    if near.len() < max {
        return true;
    }
    near.push(ago);
    near.sort_unstable();
    let mut lo = 0;
    for hi in 0..near.len() {
        while near[hi] - near[lo] >= width {
            lo += 1;
        }
        if hi - lo + 1 > max {
            return false;
        }
    }
    true
}

impl Ledger {
    /// Gives `key` to planted subject `owner`. False if someone else owns it already.
    pub fn own(&mut self, key: Key, owner: u32) -> bool {
        match self.owners.get(&key) {
            Some(o) => *o == owner,
            None => {
                self.owners.insert(key, owner);
                true
            }
        }
    }

    fn keys(d: &Draft) -> impl Iterator<Item = Key> {
        let dispute = d.category.is_dispute();
        [
            Some(Key::Addr(d.addr)),
            d.category
                .is_repeat_call()
                .then_some(Key::Calls(d.caller_phone)),
            Some(Key::Any(d.caller)),
            dispute.then_some(Key::Disp(d.caller)),
            d.party.map(Key::Any),
            d.party.filter(|_| dispute).map(Key::Disp),
            d.suspect
                .filter(|_| d.category == Category::Fraud)
                .map(Key::Suspect),
        ]
        .into_iter()
        .flatten()
    }

    fn key_ok(&self, key: Key, d: &Draft, owner: Option<u32>) -> bool {
        if let Some(o) = self.owners.get(&key) {
            return owner == Some(*o);
        }
        let existing = self.events.get(&key).map_or(&[][..], Vec::as_slice);
        match key {
            Key::Addr(_) => fits(existing, d.ago, ADDR_LIMIT),
            Key::Calls(_) => fits(existing, d.ago, CALLS_LIMIT),
            Key::Disp(_) => fits(existing, d.ago, DISP_LIMIT),
            Key::Any(_) => true,
            Key::Suspect(phone) => {
                existing.len() < SUSPECT_MAX
                    && self
                        .suspect_station
                        .get(&phone)
                        .is_none_or(|s| *s == d.station)
            }
        }
    }

    /// Would the incident keep every touched key within its limit (or its owner's)?
    pub fn check(&self, d: &Draft, owner: Option<u32>) -> bool {
        if d.party == Some(d.caller) {
            return false;
        }
        Self::keys(d).all(|k| self.key_ok(k, d, owner))
    }

    /// Records the incident if [`Ledger::check`] passes.
    pub fn admit(&mut self, d: &Draft, owner: Option<u32>) -> bool {
        if !self.check(d, owner) {
            return false;
        }
        for key in Self::keys(d) {
            if !matches!(key, Key::Any(_)) {
                self.events.entry(key).or_default().push(d.ago);
            }
            if let Key::Suspect(phone) = key {
                self.suspect_station.entry(phone).or_insert(d.station);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(ago: u32, category: Category, addr: u64, caller: u64) -> Draft {
        Draft {
            ago,
            category,
            station: 0,
            addr,
            caller,
            caller_phone: caller,
            party: None,
            suspect: None,
        }
    }

    #[test]
    fn sliding_windows() {
        assert!(fits(&[0, 40], 20, (31, 2)));
        assert!(!fits(&[0, 30], 15, (31, 2)));
        assert!(!fits(&[0, 31], 15, (31, 1)));
        assert!(fits(&[0], 31, (31, 1)));
        assert!(!fits(&[0], 30, (31, 1)));
        assert!(fits(&[0], 91, (91, 1)));
        assert!(!fits(&[0], 90, (91, 1)));
    }

    #[test]
    fn address_limit_and_ownership() {
        let mut l = Ledger::default();
        assert!(l.admit(&draft(0, Category::Theft, 7, 1), None));
        assert!(l.admit(&draft(10, Category::Theft, 7, 2), None));
        assert!(!l.admit(&draft(20, Category::Theft, 7, 3), None));
        assert!(l.admit(&draft(45, Category::Theft, 7, 3), None));
        assert!(l.own(Key::Addr(9), 1));
        assert!(!l.own(Key::Addr(9), 2));
        assert!(!l.admit(&draft(0, Category::Theft, 9, 4), None));
        for ago in 0..10 {
            assert!(l.admit(
                &draft(ago, Category::Theft, 9, 10 + u64::from(ago)),
                Some(1)
            ));
        }
        assert!(!l.admit(&draft(0, Category::Theft, 9, 30), Some(2)));
    }

    #[test]
    fn disputes_per_person() {
        let mut l = Ledger::default();
        let mut d = draft(5, Category::Dispute, 1, 1);
        d.party = Some(2);
        assert!(l.admit(&d, None));
        let mut e = draft(50, Category::DomesticViolence, 2, 3);
        e.party = Some(2);
        assert!(!l.admit(&e, None));
        e.party = None;
        assert!(l.admit(&e, None));
        assert!(l.admit(&draft(6, Category::Noise, 3, 2), None));
    }
}
