//! The hospital's visits (GBK) and the medical-insurance bureau's claims (UTF-8).

use rand::Rng;

use crate::city::{HOSPITALS, PHARMACIES, PHARMACY_PSYCHIATRIC};
use crate::dates::WINDOW;
use crate::error::SynthError;
use crate::mess::{Field, FieldKind, Mess, Outcome};
use crate::plan::{PlannedClaim, PlannedVisit, claim_cents, hospital_for};
use crate::rng::{pick, poisson, stream};
use crate::vocab::{Department, Diagnosis, Drug};
use crate::write::{CsvOut, Encoding};
use crate::{Ctx, FileOut};

/// Hospital visits per resident per year.
pub const VISITS_PER_PERSON: f64 = 2.0;
/// Insurance claims per resident per year.
pub const CLAIMS_PER_PERSON: f64 = 3.0;
/// Weights in the order of [`Department::ALL`]: psychiatry, emergency, surgery,
/// orthopedics, internal, pediatrics, other.
pub const DEPARTMENT_WEIGHTS: [u32; 7] = [3, 12, 10, 8, 30, 4, 33];
/// Weights in the order of [`Drug::ALL`]: antipsychotic, analgesic, antibiotic, chronic, other.
pub const DRUG_WEIGHTS: [u32; 5] = [1, 20, 20, 30, 29];

pub const VISIT_COLUMNS: [&str; 8] = [
    "visit_id",
    "id_number",
    "patient_name",
    "phone",
    "hospital",
    "department",
    "diagnosis_group",
    "visit_date",
];
pub const CLAIM_COLUMNS: [&str; 7] = [
    "claim_id",
    "id_number",
    "insured_name",
    "claim_date",
    "drug_category",
    "amount",
    "pharmacy",
];

/// Diagnosis weights per department, in the order of [`Diagnosis::ALL`]: injury,
/// psychiatric, respiratory, cardio, chronic, other.
fn diagnosis(rng: &mut impl Rng, d: Department) -> Diagnosis {
    let w: [u32; 6] = match d {
        Department::Emergency => [40, 0, 15, 15, 0, 30],
        Department::Orthopedics => [60, 0, 0, 0, 25, 15],
        Department::Surgery => [25, 0, 0, 0, 20, 55],
        Department::Internal => [0, 0, 30, 25, 35, 10],
        Department::Pediatrics => [5, 0, 60, 0, 0, 35],
        Department::Psychiatry => [0, 90, 0, 0, 0, 10],
        Department::Other => [5, 5, 20, 0, 20, 50],
    };
    Diagnosis::ALL[pick(rng, &w)]
}

/// Writes `hospital.visits.csv`.
pub fn visits(ctx: &Ctx<'_>) -> Result<FileOut, SynthError> {
    let seed = ctx.cfg.seed;
    let mut out = CsvOut::create(
        ctx.out_dir,
        "hospital.visits",
        Encoding::Gbk,
        &VISIT_COLUMNS,
    )?;
    let mut mess = Mess::new(seed, "hospital.visits", ctx.cfg.messy_rate);
    let mut rng = stream(seed, "hospital.visits");
    let mut rows: Vec<PlannedVisit> = Vec::new();
    let mut next_id = 0u64;
    for i in 0..ctx.cfg.persons {
        let role = ctx.roles.get(&i);
        rows.clear();
        if !role.is_some_and(|r| r.no_medical) {
            let k = poisson(&mut rng, VISITS_PER_PERSON);
            if k > 0 || role.is_some() {
                let station = ctx.pop.station(i);
                for _ in 0..k {
                    let mut department = Department::ALL[pick(&mut rng, &DEPARTMENT_WEIGHTS)];
                    let mut dx = diagnosis(&mut rng, department);
                    if role.is_some_and(|r| r.no_psych_care) {
                        if department == Department::Psychiatry {
                            department = Department::Internal;
                        }
                        if dx == Diagnosis::Psychiatric {
                            dx = Diagnosis::Other;
                        }
                    }
                    if dx == Diagnosis::Injury && role.is_some_and(|r| r.no_injury) {
                        dx = Diagnosis::Other;
                    }
                    rows.push(PlannedVisit {
                        ago: rng.gen_range(0..WINDOW),
                        hospital: hospital_for(&mut rng, department, station),
                        department,
                        diagnosis: dx,
                    });
                }
                if let Some(reg) = role.and_then(|r| r.registered).filter(|r| r.care_schedule) {
                    // Psychiatric follow-up every two to four months.
                    let mut ago = reg.registered_ago.saturating_sub(rng.gen_range(0..=20));
                    loop {
                        rows.push(PlannedVisit {
                            ago,
                            hospital: hospital_for(&mut rng, Department::Psychiatry, station),
                            department: Department::Psychiatry,
                            diagnosis: Diagnosis::Psychiatric,
                        });
                        let step = rng.gen_range(60..=120);
                        if ago < step {
                            break;
                        }
                        ago -= step;
                    }
                }
            }
        }
        let planted = role.map_or(&[][..], |r| r.visits.as_slice());
        if rows.is_empty() && planted.is_empty() {
            continue;
        }
        let background = rows.len();
        rows.extend_from_slice(planted);
        let p = ctx.pop.person(i);
        // Chronological per person; planted rows are never touched by harmful mess.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&k| std::cmp::Reverse(rows[k].ago));
        for k in order {
            let v = rows[k];
            next_id += 1;
            let fields = [
                Field {
                    kind: FieldKind::Id {
                        birth_year: p.birth_year,
                        required: true,
                    },
                    value: &p.id,
                },
                Field {
                    kind: FieldKind::Name,
                    value: &p.name,
                },
                Field {
                    kind: FieldKind::Phone { required: true },
                    value: &p.phone,
                },
            ];
            let outcome = mess.draw(&fields, role.is_none() && k < background);
            let value = |f: usize| match &outcome {
                Outcome::Replace { field, value } if *field == f => value.as_str(),
                _ => fields[f].value,
            };
            out.field_fmt(format_args!("V{next_id:010}"));
            out.field(value(0));
            out.field(value(1));
            out.field(value(2));
            out.field(HOSPITALS[usize::from(v.hospital)].0);
            out.field(v.department.as_str());
            out.field(v.diagnosis.as_str());
            out.field(ctx.cal.date(v.ago));
            out.end_row(match outcome {
                Outcome::Duplicate { delay } => Some(delay),
                _ => None,
            })?;
        }
    }
    FileOut::finish(out, &mess)
}

/// Writes `insurance.claims.csv`.
pub fn claims(ctx: &Ctx<'_>) -> Result<FileOut, SynthError> {
    let seed = ctx.cfg.seed;
    let mut out = CsvOut::create(
        ctx.out_dir,
        "insurance.claims",
        Encoding::Utf8,
        &CLAIM_COLUMNS,
    )?;
    let mut mess = Mess::new(seed, "insurance.claims", ctx.cfg.messy_rate);
    let mut rng = stream(seed, "insurance.claims");
    let mut rows: Vec<PlannedClaim> = Vec::new();
    let mut next_id = 0u64;
    for i in 0..ctx.cfg.persons {
        let role = ctx.roles.get(&i);
        rows.clear();
        if !role.is_some_and(|r| r.no_medical) {
            let k = poisson(&mut rng, CLAIMS_PER_PERSON);
            for _ in 0..k {
                let mut drug = Drug::ALL[pick(&mut rng, &DRUG_WEIGHTS)];
                if drug == Drug::Antipsychotic && role.is_some_and(|r| r.no_psych_care) {
                    drug = Drug::Other;
                }
                let pharmacy = if drug == Drug::Antipsychotic && rng.gen_bool(0.6) {
                    PHARMACY_PSYCHIATRIC as u8
                } else {
                    rng.gen_range(0..PHARMACY_PSYCHIATRIC as u8)
                };
                rows.push(PlannedClaim {
                    ago: rng.gen_range(0..WINDOW),
                    drug,
                    cents: claim_cents(&mut rng, drug),
                    pharmacy,
                });
            }
            if let Some(reg) = role.and_then(|r| r.registered).filter(|r| r.care_schedule) {
                // Monthly antipsychotic refills from registration on: the last one is
                // never more than 40 days old, so `L` stays below 60.
                let mut ago = reg.registered_ago.saturating_sub(rng.gen_range(0..=10));
                loop {
                    let pharmacy = if rng.gen_bool(0.7) {
                        PHARMACY_PSYCHIATRIC as u8
                    } else {
                        rng.gen_range(0..PHARMACY_PSYCHIATRIC as u8)
                    };
                    rows.push(PlannedClaim {
                        ago,
                        drug: Drug::Antipsychotic,
                        cents: claim_cents(&mut rng, Drug::Antipsychotic),
                        pharmacy,
                    });
                    let step = rng.gen_range(20..=40);
                    if ago < step {
                        break;
                    }
                    ago -= step;
                }
            }
        }
        let planted = role.map_or(&[][..], |r| r.claims.as_slice());
        if rows.is_empty() && planted.is_empty() {
            continue;
        }
        let background = rows.len();
        rows.extend_from_slice(planted);
        let p = ctx.pop.person(i);
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&k| std::cmp::Reverse(rows[k].ago));
        for k in order {
            let c = rows[k];
            next_id += 1;
            let fields = [
                Field {
                    kind: FieldKind::Id {
                        birth_year: p.birth_year,
                        required: true,
                    },
                    value: &p.id,
                },
                Field {
                    kind: FieldKind::Name,
                    value: &p.name,
                },
            ];
            let outcome = mess.draw(&fields, role.is_none() && k < background);
            let value = |f: usize| match &outcome {
                Outcome::Replace { field, value } if *field == f => value.as_str(),
                _ => fields[f].value,
            };
            out.field_fmt(format_args!("C{next_id:010}"));
            out.field(value(0));
            out.field(value(1));
            out.field(ctx.cal.date(c.ago));
            out.field(c.drug.as_str());
            out.field_money(c.cents);
            out.field(PHARMACIES[usize::from(c.pharmacy)]);
            out.end_row(match outcome {
                Outcome::Duplicate { delay } => Some(delay),
                _ => None,
            })?;
        }
    }
    FileOut::finish(out, &mess)
}
