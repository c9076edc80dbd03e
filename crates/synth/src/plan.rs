//! Scenario planning: picks the planted subjects of every model and tier (and the near
//! misses), plans every row they depend on, picks the background watch-list members, and
//! records the ground truth.
//!
//! Order matters and is fixed: first every subject is chosen and its feature keys are
//! owned in the [`Ledger`]; only then are planted incidents drawn (their callers, victims
//! and counterparts are ordinary residents, checked against the ledger like background).

use std::collections::{BTreeMap, HashSet};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::SynthConfig;
use crate::city::{
    HOSPITAL_CHILDREN, HOSPITAL_PSYCHIATRIC, HOSPITALS, PHARMACY_PSYCHIATRIC, STATIONS,
};
use crate::error::SynthError;
use crate::ledger::{Draft, Key, Ledger};
use crate::people::{PUBLIC_NUMBERS, Place, Population};
use crate::rng::{pick, stream};
use crate::vocab::{Category, Department, Diagnosis, Drug, Model, Offence, Tier};

/// Background rates per resident (documented in the README).
pub const WANTED_RATE: f64 = 0.001;
pub const REGISTERED_RATE: f64 = 0.004;
/// Planted subjects per (model, tier), and near misses per model: max(2, persons / 20,000).
pub const PERSONS_PER_PLANT: u64 = 20_000;

/// A planted hospital visit.
#[derive(Debug, Clone, Copy)]
pub struct PlannedVisit {
    pub ago: u32,
    pub hospital: u8,
    pub department: Department,
    pub diagnosis: Diagnosis,
}

/// A planted insurance claim.
#[derive(Debug, Clone, Copy)]
pub struct PlannedClaim {
    pub ago: u32,
    pub drug: Drug,
    pub cents: u64,
    pub pharmacy: u8,
}

#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub since_ago: u32,
    pub offence: Offence,
    pub danger: u8,
    pub station: u8,
}

#[derive(Debug, Clone, Copy)]
pub struct Registered {
    pub registered_ago: u32,
    pub risk: u8,
    pub station: u8,
    pub guardian_phone: u64,
    /// Background registered persons get regular care (so `L` < 60 always).
    pub care_schedule: bool,
}

/// What the generators must know about a special resident.
#[derive(Debug, Clone, Default)]
pub struct Role {
    /// A planted subject or near miss (person models): no background incidents at all.
    pub subject: bool,
    /// No background injury diagnoses (escalating-dispute subjects: `I` is planted).
    pub no_injury: bool,
    /// No background psychiatry visits or antipsychotic claims (care-lapse subjects).
    pub no_psych_care: bool,
    /// No background hospital visits or claims at all (wanted persons).
    pub no_medical: bool,
    pub wanted: Option<Wanted>,
    pub registered: Option<Registered>,
    pub visits: Vec<PlannedVisit>,
    pub claims: Vec<PlannedClaim>,
}

/// A planted police incident, written when the incident stream reaches `emit_at`.
#[derive(Debug, Clone)]
pub struct PlannedIncident {
    pub emit_at: u64,
    pub order: u32,
    pub ago: u32,
    pub seconds: u32,
    pub category: Category,
    pub station: u8,
    pub caller: u64,
    pub party: Option<u64>,
    pub address: String,
    pub suspect: Option<u64>,
}

/// One ground-truth entry (an expected alert, or a near miss without tier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TruthEntry {
    pub model: &'static str,
    pub subject_kind: &'static str,
    /// The normalised identifier: 18-digit ID, 11-digit mobile or address.
    pub subject: String,
    /// Routing station code.
    pub station: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<&'static str>,
    pub features: BTreeMap<&'static str, i64>,
}

pub struct Plan {
    pub roles: BTreeMap<u64, Role>,
    /// Sorted by (`emit_at`, `order`).
    pub incidents: Vec<PlannedIncident>,
    pub ledger: Ledger,
    /// First free non-resident phone index.
    pub next_phone: u64,
    pub alerts: Vec<TruthEntry>,
    pub near_misses: Vec<TruthEntry>,
}

/// Hour-of-day weights of police calls (evenings busiest).
const HOUR_WEIGHTS: [u32; 24] = [
    3, 2, 2, 1, 1, 1, 2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 6, 6, 7, 8, 9, 9, 7, 5,
];

pub fn time_of_day(rng: &mut impl Rng) -> u32 {
    let hour = pick(rng, &HOUR_WEIGHTS) as u32;
    hour * 3600 + rng.gen_range(0..3600)
}

/// A hospital for a visit to `department` by a resident of `station`.
pub fn hospital_for(rng: &mut impl Rng, department: Department, station: u8) -> u8 {
    match department {
        Department::Psychiatry if rng.gen_bool(0.9) => HOSPITAL_PSYCHIATRIC as u8,
        Department::Pediatrics if rng.gen_bool(0.7) => HOSPITAL_CHILDREN as u8,
        _ => {
            if rng.gen_bool(0.5) {
                rng.gen_range(0..3)
            } else if usize::from(station) < 4 {
                5
            } else {
                rng.gen_range(6..HOSPITALS.len() as u8)
            }
        }
    }
}

/// A claim amount in cents for `drug`.
pub fn claim_cents(rng: &mut impl Rng, drug: Drug) -> u64 {
    let (lo, hi) = match drug {
        Drug::Antipsychotic => (150, 900),
        Drug::Analgesic => (15, 120),
        Drug::Antibiotic => (20, 200),
        Drug::Chronic => (80, 600),
        Drug::Other => (10, 300),
    };
    rng.gen_range(lo * 100..=hi * 100)
}

/// What one planted subject is, before its rows are drawn.
enum Spec {
    RepeatAddress {
        place: Place,
        inside: u32,
    },
    RepeatCaller {
        person: u64,
        inside: u32,
    },
    Escalating {
        person: u64,
        disputes: u32,
        injuries: u32,
    },
    CareLapse {
        person: u64,
        lapse: Option<u32>,
        recent: u32,
        registered_ago: u32,
    },
    Fugitive {
        person: u64,
        seen: u32,
    },
    CaseLinkage {
        phone: u64,
        stations: Vec<u8>,
        older: Vec<u8>,
    },
}

struct Subject {
    model: Model,
    tier: Option<Tier>,
    owner: u32,
    /// First subject of its (model, tier): uses the boundary values of the rule.
    edge: bool,
    spec: Spec,
}

struct Planner<'a> {
    pop: &'a Population,
    n: u64,
    rng: ChaCha8Rng,
    reserved: HashSet<u64>,
    places: HashSet<u64>,
    ledger: Ledger,
    roles: BTreeMap<u64, Role>,
    incidents: Vec<PlannedIncident>,
    next_phone: u64,
    alerts: Vec<TruthEntry>,
    near_misses: Vec<TruthEntry>,
}

const TRIES: u32 = 2_000;

impl<'a> Planner<'a> {
    fn days(&mut self, lo: u32, hi: u32) -> u32 {
        self.rng.gen_range(lo..=hi.max(lo))
    }

    /// A resident not yet reserved as a subject; with `station`, preferably living there.
    fn resident(&mut self, station: Option<u8>) -> Option<u64> {
        let mut fallback = None;
        for _ in 0..256 {
            let i = self.rng.gen_range(0..self.n);
            if self.reserved.contains(&i) {
                continue;
            }
            match station {
                Some(s) if self.pop.station(i) != s => fallback = fallback.or(Some(i)),
                _ => return Some(i),
            }
        }
        fallback
    }

    fn reserve(&mut self, model: Model) -> Result<u64, SynthError> {
        for _ in 0..TRIES {
            let i = self.rng.gen_range(0..self.n);
            if self.reserved.insert(i) {
                return Ok(i);
            }
        }
        Err(SynthError::Planting {
            model: model.as_str(),
        })
    }

    fn public_place(&mut self, station: u8) -> Place {
        let road = self.rng.gen_range(0..crate::city::ROADS_PER_STATION as u8);
        let number = self.rng.gen_range(1..=PUBLIC_NUMBERS);
        self.pop.public_place(station, road, number)
    }

    fn new_phone(&mut self) -> u64 {
        let k = self.next_phone;
        self.next_phone += 1;
        k
    }

    /// Records a planted incident if the ledger admits it.
    fn incident(&mut self, d: Draft, address: &str, owner: u32) -> bool {
        if !self.ledger.admit(&d, Some(owner)) {
            return false;
        }
        let seconds = time_of_day(&mut self.rng);
        let emit_at = self.rng.gen_range(0..self.n);
        let order = self.incidents.len() as u32;
        self.incidents.push(PlannedIncident {
            emit_at,
            order,
            ago: d.ago,
            seconds,
            category: d.category,
            station: d.station,
            caller: d.caller,
            party: d.party,
            address: address.to_owned(),
            suspect: d.suspect,
        });
        true
    }

    fn role(&mut self, i: u64) -> &mut Role {
        self.roles.entry(i).or_default()
    }

    fn visit(&mut self, person: u64, ago: u32, department: Department, diagnosis: Diagnosis) {
        let station = self.pop.station(person);
        let hospital = hospital_for(&mut self.rng, department, station);
        self.role(person).visits.push(PlannedVisit {
            ago,
            hospital,
            department,
            diagnosis,
        });
    }

    fn claim(&mut self, person: u64, ago: u32, drug: Drug) {
        let cents = claim_cents(&mut self.rng, drug);
        let pharmacy = if drug == Drug::Antipsychotic {
            PHARMACY_PSYCHIATRIC as u8
        } else {
            self.rng.gen_range(0..PHARMACY_PSYCHIATRIC as u8)
        };
        self.role(person).claims.push(PlannedClaim {
            ago,
            drug,
            cents,
            pharmacy,
        });
    }

    /// Any visit or claim that is not psychiatric care and not an injury.
    fn medical_sighting(&mut self, person: u64, ago: u32) {
        if self.rng.gen_bool(0.5) {
            let (dep, diag) = [
                (Department::Internal, Diagnosis::Respiratory),
                (Department::Emergency, Diagnosis::Cardio),
                (Department::Other, Diagnosis::Chronic),
                (Department::Surgery, Diagnosis::Other),
            ][self.rng.gen_range(0..4)];
            self.visit(person, ago, dep, diag);
        } else {
            let drug = [
                Drug::Analgesic,
                Drug::Antibiotic,
                Drug::Chronic,
                Drug::Other,
            ][self.rng.gen_range(0..4)];
            self.claim(person, ago, drug);
        }
    }

    // ---- choosing subjects -------------------------------------------------------

    fn choose(
        &mut self,
        model: Model,
        tier: Option<Tier>,
        owner: u32,
        edge: bool,
    ) -> Result<Spec, SynthError> {
        let r = &mut self.rng;
        let spec = match model {
            Model::RepeatAddress => {
                let inside = match tier {
                    Some(Tier::Red) => {
                        if edge {
                            8
                        } else {
                            r.gen_range(8..=11)
                        }
                    }
                    Some(Tier::Orange) => {
                        if edge {
                            5
                        } else {
                            r.gen_range(5..=7)
                        }
                    }
                    Some(Tier::Yellow) => 4,
                    Some(Tier::Blue) => 3,
                    None => 2,
                };
                let place = loop {
                    let place = if self.rng.gen_bool(0.5) {
                        let i = self.rng.gen_range(0..self.n);
                        self.pop.home(i)
                    } else {
                        let s = self.rng.gen_range(0..STATIONS.len() as u8);
                        self.public_place(s)
                    };
                    if self.places.insert(place.key) {
                        break place;
                    }
                };
                if !self.ledger.own(Key::Addr(place.key), owner) {
                    return Err(SynthError::Planting {
                        model: model.as_str(),
                    });
                }
                Spec::RepeatAddress { place, inside }
            }
            Model::RepeatCaller => {
                let inside = match tier {
                    Some(Tier::Red) => {
                        if edge {
                            10
                        } else {
                            r.gen_range(10..=13)
                        }
                    }
                    Some(Tier::Orange) => {
                        if edge {
                            6
                        } else {
                            r.gen_range(6..=9)
                        }
                    }
                    Some(Tier::Yellow) => {
                        if edge {
                            4
                        } else {
                            r.gen_range(4..=5)
                        }
                    }
                    Some(Tier::Blue) => 3,
                    None => 2,
                };
                let person = self.reserve(model)?;
                self.role(person).subject = true;
                self.ledger.own(Key::Calls(person), owner);
                Spec::RepeatCaller { person, inside }
            }
            Model::EscalatingDispute => {
                let (disputes, injuries) = match tier {
                    Some(Tier::Red) => (r.gen_range(3..=4), r.gen_range(1..=2)),
                    Some(Tier::Orange) => (2, r.gen_range(1..=2)),
                    Some(Tier::Yellow) => (r.gen_range(3..=4), 0),
                    Some(Tier::Blue) => (2, 0),
                    None => (1, r.gen_range(1..=2)),
                };
                let person = self.reserve(model)?;
                let role = self.role(person);
                role.subject = true;
                role.no_injury = true;
                self.ledger.own(Key::Disp(person), owner);
                Spec::Escalating {
                    person,
                    disputes,
                    injuries,
                }
            }
            Model::CareLapse => {
                let registered_ago = r.gen_range(200..=364);
                let (lapse, recent) = match tier {
                    Some(Tier::Red) => {
                        let l = if edge {
                            60
                        } else {
                            r.gen_range(60..=registered_ago)
                        };
                        (Some(l), r.gen_range(1..=2))
                    }
                    Some(Tier::Orange) => {
                        if edge {
                            (Some(180), 0)
                        } else if r.gen_bool(0.5) {
                            (None, 0)
                        } else {
                            (Some(r.gen_range(180..=registered_ago)), 0)
                        }
                    }
                    Some(Tier::Yellow) => {
                        (Some(if edge { 179 } else { r.gen_range(120..=179) }), 0)
                    }
                    Some(Tier::Blue) => (Some(if edge { 90 } else { r.gen_range(90..=119) }), 0),
                    None => {
                        if edge || r.gen_bool(0.5) {
                            (Some(if edge { 89 } else { r.gen_range(60..=89) }), 0)
                        } else {
                            (Some(r.gen_range(0..=59)), r.gen_range(1..=2))
                        }
                    }
                };
                let person = self.reserve(model)?;
                let station = self.pop.station(person);
                let guardian_phone = match self.pop.mate(person) {
                    Some(m) => m,
                    None => self.new_phone(),
                };
                let risk = self.rng.gen_range(1..=5);
                let role = self.role(person);
                role.subject = true;
                role.no_psych_care = true;
                role.registered = Some(Registered {
                    registered_ago,
                    risk,
                    station,
                    guardian_phone,
                    care_schedule: false,
                });
                self.ledger.own(Key::Any(person), owner);
                Spec::CareLapse {
                    person,
                    lapse,
                    recent,
                    registered_ago,
                }
            }
            Model::FugitiveMedical => {
                let seen = match tier {
                    Some(Tier::Red) => {
                        if edge {
                            1
                        } else {
                            r.gen_range(0..=1)
                        }
                    }
                    Some(Tier::Orange) => {
                        if edge {
                            7
                        } else {
                            r.gen_range(2..=7)
                        }
                    }
                    Some(Tier::Yellow) => {
                        if edge {
                            30
                        } else {
                            r.gen_range(8..=30)
                        }
                    }
                    Some(Tier::Blue) => {
                        if edge {
                            90
                        } else {
                            r.gen_range(31..=90)
                        }
                    }
                    None => {
                        if edge {
                            91
                        } else {
                            r.gen_range(91..=150)
                        }
                    }
                };
                let person = self.reserve(model)?;
                let station = self.pop.station(person);
                let since_ago = self.days((seen + 1).max(30), 364);
                let offence = Offence::ALL[pick(&mut self.rng, &[25, 30, 20, 15, 10])];
                let danger = self.rng.gen_range(1..=3);
                let role = self.role(person);
                role.subject = true;
                role.no_medical = true;
                role.wanted = Some(Wanted {
                    since_ago,
                    offence,
                    danger,
                    station,
                });
                Spec::Fugitive { person, seen }
            }
            Model::CaseLinkage => {
                let (distinct, reports) = match tier {
                    Some(Tier::Red) => {
                        let st = if edge { 4 } else { r.gen_range(4..=6) };
                        (st, st + r.gen_range(0..=2))
                    }
                    Some(Tier::Orange) => (3, r.gen_range(3..=5)),
                    Some(Tier::Yellow) => (2, r.gen_range(2..=4)),
                    Some(Tier::Blue) => (1, if edge { 3 } else { r.gen_range(3..=5) }),
                    None => (1, 2),
                };
                let mut all: Vec<u8> = (0..STATIONS.len() as u8).collect();
                for i in (1..all.len()).rev() {
                    all.swap(i, self.rng.gen_range(0..=i));
                }
                let chosen = &all[..distinct];
                let mut stations: Vec<u8> = chosen.to_vec();
                while stations.len() < reports {
                    stations.push(chosen[self.rng.gen_range(0..chosen.len())]);
                }
                let older = if tier.is_none() || self.rng.gen_bool(0.3) {
                    let extra = self.rng.gen_range(1..=2);
                    all[distinct..distinct + extra].to_vec()
                } else {
                    Vec::new()
                };
                let phone = self.new_phone();
                self.ledger.own(Key::Suspect(phone), owner);
                Spec::CaseLinkage {
                    phone,
                    stations,
                    older,
                }
            }
        };
        Ok(spec)
    }

    // ---- drawing planted rows ----------------------------------------------------

    /// Plants one incident, retrying callers/places until the ledger admits it.
    fn plant<F>(&mut self, model: Model, owner: u32, mut draw: F) -> Result<(), SynthError>
    where
        F: FnMut(&mut Self) -> Option<(Draft, String)>,
    {
        for _ in 0..TRIES {
            if let Some((d, address)) = draw(self)
                && self.incident(d, &address, owner)
            {
                return Ok(());
            }
        }
        Err(SynthError::Planting {
            model: model.as_str(),
        })
    }

    fn draw_rows(&mut self, sub: &Subject) -> Result<TruthEntry, SynthError> {
        let (model, owner, edge) = (sub.model, sub.owner, sub.edge);
        let entry = |subject: String, station: u8, features: &[(&'static str, i64)]| TruthEntry {
            model: model.as_str(),
            subject_kind: model.subject_kind(),
            subject,
            station: STATIONS[usize::from(station)].code,
            tier: sub.tier.map(Tier::as_str),
            features: features.iter().copied().collect(),
        };
        match &sub.spec {
            Spec::RepeatAddress { place, inside } => {
                let home = place.key & 1 == 0;
                let cats: &[Category] = if home {
                    &[
                        Category::Noise,
                        Category::Dispute,
                        Category::DomesticViolence,
                        Category::Other,
                    ]
                } else {
                    &[
                        Category::Theft,
                        Category::Dispute,
                        Category::Noise,
                        Category::Traffic,
                        Category::Other,
                    ]
                };
                let outside = self.rng.gen_range(0..=2);
                for k in 0..inside + outside {
                    let ago = match (k, k < *inside) {
                        (0, _) if edge => 30,
                        (_, true) => self.days(0, 30),
                        _ if k == *inside && edge => 31,
                        _ => self.days(31, 60),
                    };
                    self.plant(model, owner, |p| {
                        let caller = p.resident(Some(place.station))?;
                        let category = cats[p.rng.gen_range(0..cats.len())];
                        Some((
                            Draft {
                                ago,
                                category,
                                station: place.station,
                                addr: place.key,
                                caller,
                                caller_phone: caller,
                                party: None,
                                suspect: None,
                            },
                            place.address.clone(),
                        ))
                    })?;
                }
                Ok(entry(
                    place.address.clone(),
                    place.station,
                    &[("incidents_30d", i64::from(*inside))],
                ))
            }
            Spec::RepeatCaller { person, inside } => {
                let person = *person;
                let home = self.pop.home(person);
                let station = home.station;
                let outside = self.rng.gen_range(0..=2);
                let other_kinds = self.rng.gen_range(0..=2);
                for k in 0..inside + outside + other_kinds {
                    let (ago, counted) = if k < *inside {
                        (if k == 0 && edge { 30 } else { self.days(0, 30) }, true)
                    } else if k < inside + outside {
                        (
                            if k == *inside && edge {
                                31
                            } else {
                                self.days(31, 45)
                            },
                            true,
                        )
                    } else {
                        (self.days(0, 30), false)
                    };
                    self.plant(model, owner, |p| {
                        let category = if !counted {
                            [Category::Theft, Category::Traffic, Category::Other]
                                [p.rng.gen_range(0..3)]
                        } else if p.rng.gen_bool(0.1) {
                            Category::Dispute
                        } else {
                            Category::Noise
                        };
                        let place = if p.rng.gen_bool(0.2) {
                            home.clone()
                        } else {
                            p.public_place(station)
                        };
                        Some((
                            Draft {
                                ago,
                                category,
                                station,
                                addr: place.key,
                                caller: person,
                                caller_phone: person,
                                party: None,
                                suspect: None,
                            },
                            place.address,
                        ))
                    })?;
                }
                Ok(entry(
                    self.pop.phone(person),
                    station,
                    &[("calls_30d", i64::from(*inside))],
                ))
            }
            Spec::Escalating {
                person,
                disputes,
                injuries,
            } => {
                let person = *person;
                let home = self.pop.home(person);
                let station = home.station;
                let older = u32::from(self.rng.gen_bool(0.4));
                for k in 0..disputes + older {
                    let ago = if k < *disputes {
                        if k == 0 && edge { 90 } else { self.days(0, 90) }
                    } else {
                        self.days(91, 150)
                    };
                    self.plant(model, owner, |p| {
                        let category = if p.rng.gen_bool(0.5) {
                            Category::Dispute
                        } else {
                            Category::DomesticViolence
                        };
                        let (caller, party) = if p.rng.gen_bool(0.6) {
                            let party = if p.rng.gen_bool(0.4) {
                                p.resident(Some(station))
                            } else {
                                None
                            };
                            (person, party)
                        } else {
                            (p.resident(Some(station))?, Some(person))
                        };
                        let place = if p.rng.gen_bool(0.5) {
                            home.clone()
                        } else {
                            p.public_place(station)
                        };
                        Some((
                            Draft {
                                ago,
                                category,
                                station: place.station,
                                addr: place.key,
                                caller,
                                caller_phone: caller,
                                party,
                                suspect: None,
                            },
                            place.address,
                        ))
                    })?;
                }
                let injury_dep = [
                    Department::Emergency,
                    Department::Orthopedics,
                    Department::Surgery,
                ];
                for k in 0..*injuries {
                    let ago = if k == 0 && edge { 30 } else { self.days(0, 30) };
                    let dep = injury_dep[self.rng.gen_range(0..3)];
                    self.visit(person, ago, dep, Diagnosis::Injury);
                }
                if *injuries == 0 && self.rng.gen_bool(0.5) {
                    let ago = if edge { 31 } else { self.days(31, 60) };
                    self.visit(person, ago, Department::Emergency, Diagnosis::Injury);
                }
                let id = self.pop.person(person).id;
                Ok(entry(
                    id,
                    station,
                    &[
                        ("disputes_90d", i64::from(*disputes)),
                        ("injury_visits_30d", i64::from(*injuries)),
                    ],
                ))
            }
            Spec::CareLapse {
                person,
                lapse,
                recent,
                registered_ago,
            } => {
                let person = *person;
                let home = self.pop.home(person);
                let station = home.station;
                if let Some(l) = *lapse {
                    let earlier = if l < *registered_ago {
                        self.rng.gen_range(0..=3)
                    } else {
                        0
                    };
                    for k in 0..=earlier {
                        let ago = if k == 0 {
                            l
                        } else {
                            self.days(l + 1, *registered_ago)
                        };
                        if self.rng.gen_bool(0.5) {
                            self.visit(person, ago, Department::Psychiatry, Diagnosis::Psychiatric);
                        } else {
                            self.claim(person, ago, Drug::Antipsychotic);
                        }
                    }
                }
                let outside = u32::from(*recent == 0 && self.rng.gen_bool(0.5));
                for k in 0..recent + outside {
                    let ago = if k < *recent {
                        if k == 0 && edge { 30 } else { self.days(0, 30) }
                    } else if edge {
                        31
                    } else {
                        self.days(31, 60)
                    };
                    self.plant(model, owner, |p| {
                        let (caller, party, category) = if p.rng.gen_bool(0.7) {
                            let c = [
                                Category::Noise,
                                Category::Other,
                                Category::Theft,
                                Category::Dispute,
                            ][p.rng.gen_range(0..4)];
                            (person, None, c)
                        } else {
                            (p.resident(Some(station))?, Some(person), Category::Dispute)
                        };
                        let place = if p.rng.gen_bool(0.5) {
                            home.clone()
                        } else {
                            p.public_place(station)
                        };
                        Some((
                            Draft {
                                ago,
                                category,
                                station: place.station,
                                addr: place.key,
                                caller,
                                caller_phone: caller,
                                party,
                                suspect: None,
                            },
                            place.address,
                        ))
                    })?;
                }
                // Ordinary medical activity that is not psychiatric care.
                let other = self.rng.gen_range(0..=2);
                for _ in 0..other {
                    let ago = self.days(0, 364);
                    self.medical_sighting(person, ago);
                }
                let id = self.pop.person(person).id;
                Ok(entry(
                    id,
                    station,
                    &[
                        (
                            "days_since_care",
                            i64::from(lapse.unwrap_or(*registered_ago)),
                        ),
                        ("incidents_30d", i64::from(*recent)),
                    ],
                ))
            }
            Spec::Fugitive { person, seen } => {
                let person = *person;
                let station = self.pop.station(person);
                self.medical_sighting(person, *seen);
                let earlier = self.rng.gen_range(0..=2);
                for _ in 0..earlier {
                    let ago = self.days(seen + 1, 364);
                    self.medical_sighting(person, ago);
                }
                let id = self.pop.person(person).id;
                Ok(entry(id, station, &[("days_since_seen", i64::from(*seen))]))
            }
            Spec::CaseLinkage {
                phone,
                stations,
                older,
            } => {
                let phone = *phone;
                let mut per_station = [0i64; STATIONS.len()];
                let all: Vec<(u8, bool)> = stations
                    .iter()
                    .map(|s| (*s, true))
                    .chain(older.iter().map(|s| (*s, false)))
                    .collect();
                for (k, (st, inside)) in all.iter().copied().enumerate() {
                    let ago = match (inside, k == 0 && edge) {
                        (true, true) => 90,
                        (true, false) => self.days(0, 90),
                        (false, _) => self.days(91, 200),
                    };
                    if inside {
                        per_station[usize::from(st)] += 1;
                    }
                    self.plant(model, owner, |p| {
                        let victim = p.resident(Some(st))?;
                        let home = p.pop.home(victim);
                        if home.station != st {
                            return None;
                        }
                        Some((
                            Draft {
                                ago,
                                category: Category::Fraud,
                                station: st,
                                addr: home.key,
                                caller: victim,
                                caller_phone: victim,
                                party: None,
                                suspect: Some(phone),
                            },
                            home.address,
                        ))
                    })?;
                }
                let top = (0..STATIONS.len())
                    .max_by_key(|s| (per_station[*s], std::cmp::Reverse(*s)))
                    .unwrap_or(0);
                let distinct = per_station.iter().filter(|c| **c > 0).count() as i64;
                Ok(entry(
                    self.pop.phone(phone),
                    top as u8,
                    &[
                        ("stations_90d", distinct),
                        ("reports_90d", stations.len() as i64),
                    ],
                ))
            }
        }
    }

    fn background_watchlists(&mut self) -> Result<(), SynthError> {
        let wanted = (self.n as f64 * WANTED_RATE).round() as u64;
        let registered = (self.n as f64 * REGISTERED_RATE).round() as u64;
        for _ in 0..wanted {
            let person = self.reserve(Model::FugitiveMedical)?;
            let since_ago = self.days(0, 364);
            let offence = Offence::ALL[pick(&mut self.rng, &[25, 30, 20, 15, 10])];
            let danger = self.rng.gen_range(1..=3);
            let station = self.pop.station(person);
            let role = self.role(person);
            role.no_medical = true;
            role.wanted = Some(Wanted {
                since_ago,
                offence,
                danger,
                station,
            });
        }
        for _ in 0..registered {
            let person = self.reserve(Model::CareLapse)?;
            let registered_ago = self.days(30, 364);
            let risk = pick(&mut self.rng, &[10, 20, 25, 25, 12, 8]) as u8;
            let guardian_phone = match self.pop.mate(person) {
                Some(m) => m,
                None => self.new_phone(),
            };
            let station = self.pop.station(person);
            self.role(person).registered = Some(Registered {
                registered_ago,
                risk,
                station,
                guardian_phone,
                care_schedule: true,
            });
        }
        // Watch-list members are not subjects: residents drawn later may include them.
        let members: Vec<u64> = self
            .roles
            .iter()
            .filter(|(_, r)| !r.subject)
            .map(|(i, _)| *i)
            .collect();
        for i in members {
            self.reserved.remove(&i);
        }
        Ok(())
    }
}

/// Number of planted subjects per (model, tier) and of near misses per model.
pub fn per_tier(persons: u64) -> u64 {
    (persons / PERSONS_PER_PLANT).max(2)
}

pub fn build(cfg: &SynthConfig, pop: &Population) -> Result<Plan, SynthError> {
    let mut p = Planner {
        pop,
        n: cfg.persons,
        rng: stream(cfg.seed, "plan"),
        reserved: HashSet::new(),
        places: HashSet::new(),
        ledger: Ledger::default(),
        roles: BTreeMap::new(),
        incidents: Vec::new(),
        next_phone: cfg.persons,
        alerts: Vec::new(),
        near_misses: Vec::new(),
    };
    let k = per_tier(cfg.persons);
    let mut subjects = Vec::new();
    let mut owner = 0u32;
    for model in Model::ALL.iter().copied() {
        let tiers = Tier::ALL.iter().copied().map(Some).chain([None]);
        for tier in tiers {
            for j in 0..k {
                owner += 1;
                let spec = p.choose(model, tier, owner, j == 0)?;
                subjects.push(Subject {
                    model,
                    tier,
                    owner,
                    edge: j == 0,
                    spec,
                });
            }
        }
    }
    p.background_watchlists()?;
    // Subjects stay reserved: planted callers, victims and counterparts are others.
    for sub in &subjects {
        let e = p.draw_rows(sub)?;
        if e.tier.is_some() {
            p.alerts.push(e);
        } else {
            p.near_misses.push(e);
        }
    }
    let model_rank = |m: &str| Model::ALL.iter().position(|x| x.as_str() == m);
    let tier_rank =
        |t: Option<&str>| t.and_then(|t| Tier::ALL.iter().position(|x| x.as_str() == t));
    let key = |e: &TruthEntry| {
        (
            model_rank(e.model),
            tier_rank(e.tier),
            e.station,
            e.subject.clone(),
        )
    };
    p.alerts.sort_by_key(key);
    p.near_misses.sort_by_key(key);
    p.incidents.sort_by_key(|i| (i.emit_at, i.order));
    for role in p.roles.values_mut() {
        role.visits.sort_by_key(|v| std::cmp::Reverse(v.ago));
        role.claims.sort_by_key(|c| std::cmp::Reverse(c.ago));
    }
    Ok(Plan {
        roles: p.roles,
        incidents: p.incidents,
        ledger: p.ledger,
        next_phone: p.next_phone,
        alerts: p.alerts,
        near_misses: p.near_misses,
    })
}
