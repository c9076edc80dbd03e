//! The population: person `i` (0 ≤ i < persons) is a pure function of the seed and `i`.
//!
//! ID numbers, phone numbers and homes come from keyed permutations of their value
//! spaces, so they are unique by construction and nothing is kept in memory.

use blindwatch_common::idcard::check_digit;

use crate::city::{self, PHONE_PREFIXES, REGION_CODES, STATIONS};
use crate::rng::{Permutation, mix, splitmix64, subkey, unit};

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub const fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = (if y >= 0 { y } else { y - 399 }) / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `z` days after 1970-01-01, as (year, month, day).
pub const fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = (if z >= 0 { z } else { z - 146_096 }) / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const BIRTH_FIRST: i64 = days_from_civil(1940, 1, 1);
const BIRTH_DAYS: u64 = (days_from_civil(2009, 1, 1) - BIRTH_FIRST) as u64;
const SEQUENCES: u64 = 999;
/// Distinct (region, birth date, sequence) triples.
pub const ID_SPACE: u64 = REGION_CODES.len() as u64 * BIRTH_DAYS * SEQUENCES;
/// Distinct mobile numbers.
pub const PHONE_SPACE: u64 = PHONE_PREFIXES.len() as u64 * 100_000_000;

const NUMBERS: u64 = 300;
const BUILDINGS: u64 = 20;
const UNITS: u64 = 6;
const FLOORS: u64 = 30;
const ROOMS: u64 = 4;
/// Distinct homes (households).
pub const HOME_SPACE: u64 =
    STATIONS.len() as u64 * city::ROADS_PER_STATION * NUMBERS * BUILDINGS * UNITS * FLOORS * ROOMS;
/// House numbers of public places (shops, streets) along each road.
pub const PUBLIC_NUMBERS: u64 = 999;

/// One resident, as far as the partner files need them.
#[derive(Debug, Clone)]
pub struct Person {
    /// Canonical 18-character ID number.
    pub id: String,
    pub birth_year: i32,
    pub name: String,
    pub phone: String,
    /// Home station, 0..8.
    pub station: u8,
}

/// A place where an incident can happen: a home or a public place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// Unique key: home slot × 2, or public place id × 2 + 1.
    pub key: u64,
    pub station: u8,
    /// Already in normalised form (single inner spaces, no padding).
    pub address: String,
}

#[derive(Debug, Clone)]
pub struct Population {
    pub n: u64,
    id_perm: Permutation,
    phone_perm: Permutation,
    home_perm: Permutation,
    name_key: u64,
}

impl Population {
    pub fn new(n: u64, seed: u64) -> Self {
        Population {
            n,
            id_perm: Permutation::new(ID_SPACE, subkey(seed, "id-numbers")),
            phone_perm: Permutation::new(PHONE_SPACE, subkey(seed, "phones")),
            home_perm: Permutation::new(HOME_SPACE, subkey(seed, "homes")),
            name_key: subkey(seed, "names"),
        }
    }

    /// Household of person `i`: persons 2k and 2k+1 share a home.
    pub fn mate(&self, i: u64) -> Option<u64> {
        let j = i ^ 1;
        (j < self.n).then_some(j)
    }

    fn home_slot(&self, i: u64) -> u64 {
        self.home_perm.apply(i / 2)
    }

    /// Home station of person `i` (cheap: no strings).
    pub fn station(&self, i: u64) -> u8 {
        (self.home_slot(i) % STATIONS.len() as u64) as u8
    }

    /// The phone number with index `k`: persons own `0..n`, other numbers (fraud
    /// suspects, guardians outside the city) use indices from `n` on.
    pub fn phone(&self, k: u64) -> String {
        let slot = self.phone_perm.apply(k % PHONE_SPACE);
        let prefix = PHONE_PREFIXES[(slot % PHONE_PREFIXES.len() as u64) as usize];
        format!("{prefix}{:08}", slot / PHONE_PREFIXES.len() as u64)
    }

    pub fn person(&self, i: u64) -> Person {
        let slot = self.id_perm.apply(i);
        let region = REGION_CODES[(slot % REGION_CODES.len() as u64) as usize];
        let rest = slot / REGION_CODES.len() as u64;
        let day = rest % BIRTH_DAYS;
        let seq = rest / BIRTH_DAYS + 1;
        let (y, m, d) = civil_from_days(BIRTH_FIRST + day as i64);
        let mut id = format!("{region}{y:04}{m:02}{d:02}{seq:03}");
        let check = check_digit(id.as_bytes()).unwrap_or(b'0');
        id.push(char::from(check));
        let male = seq % 2 == 1;
        Person {
            id,
            birth_year: y as i32,
            name: self.name(i, male),
            phone: self.phone(i),
            station: self.station(i),
        }
    }

    fn name(&self, i: u64, male: bool) -> String {
        let h = mix(self.name_key, i);
        if h % 1000 < 3 {
            return city::MINORITY_NAMES[((h >> 12) % city::MINORITY_NAMES.len() as u64) as usize]
                .to_owned();
        }
        let u = unit(splitmix64(h));
        let surname = city::SURNAMES
            [((u * u * city::SURNAMES.len() as f64) as usize).min(city::SURNAMES.len() - 1)];
        let pool: &[&str] = if male {
            &city::GIVEN_MALE
        } else {
            &city::GIVEN_FEMALE
        };
        let h2 = splitmix64(h ^ 0xA5A5);
        let first = pool[(h2 % pool.len() as u64) as usize];
        let mut name = String::with_capacity(12);
        name.push_str(surname);
        name.push_str(first);
        if (h2 >> 20) % 10 >= 3 {
            name.push_str(pool[((h2 >> 32) % pool.len() as u64) as usize]);
        }
        name
    }

    /// The home of person `i`.
    pub fn home(&self, i: u64) -> Place {
        let slot = self.home_slot(i);
        let s = (slot % STATIONS.len() as u64) as usize;
        let mut rest = slot / STATIONS.len() as u64;
        let r = (rest % city::ROADS_PER_STATION) as usize;
        rest /= city::ROADS_PER_STATION;
        let number = rest % NUMBERS + 1;
        rest /= NUMBERS;
        let building = rest % BUILDINGS + 1;
        rest /= BUILDINGS;
        let unit_no = rest % UNITS + 1;
        rest /= UNITS;
        let floor = rest % FLOORS + 1;
        rest /= FLOORS;
        let room = rest % ROOMS + 1;
        let st = &STATIONS[s];
        let (road, suffix) = city::road(s, r);
        Place {
            key: slot << 1,
            station: s as u8,
            address: format!(
                "{}{} {road}{suffix}{number}号 {building}栋{unit_no}单元{floor}{room:02}室",
                st.county_zh, st.area_zh
            ),
        }
    }

    /// Public place `number` (1..=999) on road `r` of station `s`.
    pub fn public_place(&self, s: u8, r: u8, number: u64) -> Place {
        let st = &STATIONS[usize::from(s)];
        let (road, suffix) = city::road(usize::from(s), usize::from(r));
        let id =
            (u64::from(s) * city::ROADS_PER_STATION + u64::from(r)) * (PUBLIC_NUMBERS + 1) + number;
        Place {
            key: (id << 1) | 1,
            station: s,
            address: format!("{}{} {road}{suffix}{number}号", st.county_zh, st.area_zh),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blindwatch_common::{IdentifierKind, normalise};
    use std::collections::HashSet;

    #[test]
    fn civil_round_trip() {
        for z in [-10_958i64, -1, 0, 59, 10_000, 20_000, 30_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(BIRTH_FIRST), (1940, 1, 1));
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }

    #[test]
    fn persons_are_valid_and_unique() {
        let pop = Population::new(5_000, 7);
        let mut ids = HashSet::new();
        let mut phones = HashSet::new();
        for i in 0..5_000 {
            let p = pop.person(i);
            let id = normalise(IdentifierKind::Person, &p.id).unwrap();
            assert_eq!(id.reveal_value(), p.id);
            assert!((1940..=2008).contains(&p.birth_year));
            let ph = normalise(IdentifierKind::Phone, &p.phone).unwrap();
            assert_eq!(ph.reveal_value(), p.phone);
            let home = pop.home(i);
            assert_eq!(home.station, p.station);
            let addr = normalise(IdentifierKind::Address, &home.address).unwrap();
            assert_eq!(addr.reveal_value(), home.address);
            assert!(ids.insert(p.id));
            assert!(phones.insert(p.phone));
        }
        assert_eq!(pop.home(10).address, pop.home(11).address);
        assert_ne!(pop.home(10).key, pop.public_place(0, 0, 1).key);
    }
}
