//! The tax bureau's employment records (GBK): three monthly periods per employed resident.

use rand::Rng;

use crate::error::SynthError;
use crate::mess::{Field, FieldKind, Mess, Outcome};
use crate::rng::{mix, splitmix64, stream, subkey, unit};
use crate::write::{CsvOut, Encoding};
use crate::{Ctx, FileOut};

/// Share of residents aged 18–65 with employment records (≈ 60 % of all residents).
pub const WORKING_AGE_RECORD_RATE: f64 = 0.85;
/// Share of record holders unemployed in all three periods.
pub const UNEMPLOYED_RATE: f64 = 0.07;
/// Share of record holders who lose their job in the last period.
pub const JOB_LOSS_RATE: f64 = 0.03;
/// Monthly unemployment benefit, in cents.
pub const BENEFIT_CENTS: u64 = 1_850 * 100;

pub const COLUMNS: [&str; 6] = [
    "id_number",
    "name",
    "employer_code",
    "period",
    "status",
    "income",
];

/// Unified social credit code characters (no I, O, Z, S, V).
const USCC: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";

fn employer_code(key: u64, employer: u64) -> String {
    let mut h = mix(key, employer);
    let admin = if employer.is_multiple_of(2) {
        "421002"
    } else {
        "421022"
    };
    let mut s = String::with_capacity(18);
    s.push_str("91");
    s.push_str(admin);
    for _ in 0..10 {
        h = splitmix64(h);
        s.push(char::from(USCC[(h % USCC.len() as u64) as usize]));
    }
    s
}

/// Writes `tax.employment.csv`.
pub fn employment(ctx: &Ctx<'_>) -> Result<FileOut, SynthError> {
    let seed = ctx.cfg.seed;
    let mut out = CsvOut::create(ctx.out_dir, "tax.employment", Encoding::Gbk, &COLUMNS)?;
    let mut mess = Mess::new(seed, "tax.employment", ctx.cfg.messy_rate);
    let mut rng = stream(seed, "tax.employment");
    let key = subkey(seed, "employers");
    let employers = (ctx.cfg.persons / 40).max(50);
    for i in 0..ctx.cfg.persons {
        if unit(mix(key, i)) >= WORKING_AGE_RECORD_RATE {
            continue;
        }
        let p = ctx.pop.person(i);
        let age = ctx.cal.as_of_year - p.birth_year;
        if !(18..=65).contains(&age) {
            continue;
        }
        let employer = employer_code(key, rng.gen_range(0..employers));
        let unemployed = rng.gen_bool(UNEMPLOYED_RATE);
        let loses_job = !unemployed && rng.gen_bool(JOB_LOSS_RATE);
        let base = (rng.gen_range(2_500f64.ln()..40_000f64.ln())).exp();
        let on_benefit = rng.gen_bool(0.5);
        for (m, period) in ctx.cal.periods.iter().enumerate() {
            let employed = !(unemployed || (loses_job && m == 2));
            let cents = if employed {
                (base * rng.gen_range(0.92..1.08) * 100.0).round() as u64
            } else if on_benefit {
                BENEFIT_CENTS
            } else {
                0
            };
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
            let outcome = mess.draw(&fields, true);
            let value = |f: usize| match &outcome {
                Outcome::Replace { field, value } if *field == f => value.as_str(),
                _ => fields[f].value,
            };
            out.field(value(0));
            out.field(value(1));
            out.field(if employed { &employer } else { "" });
            out.field(period);
            out.field(if employed { "employed" } else { "unemployed" });
            out.field_money(cents);
            out.end_row(match outcome {
                Outcome::Duplicate { delay } => Some(delay),
                _ => None,
            })?;
        }
    }
    FileOut::finish(out, &mess)
}
