//! The police partner's exports: incidents, the wanted list, the mental-health registry.

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::city::{ROADS_PER_STATION, STATIONS};
use crate::dates::WINDOW;
use crate::error::SynthError;
use crate::ledger::{Draft, Ledger};
use crate::mess::{Field, FieldKind, Mess, Outcome};
use crate::people::{PUBLIC_NUMBERS, Person};
use crate::plan::{PlannedIncident, time_of_day};
use crate::rng::{pick, poisson, stream};
use crate::vocab::Category;
use crate::write::{CsvOut, Encoding};
use crate::{Ctx, FileOut};

/// Incidents called in per resident per year.
pub const INCIDENTS_PER_PERSON: f64 = 0.1;
/// Weights in the order of [`Category::ALL`]: dispute, domestic_violence, theft, fraud,
/// noise, traffic, other.
pub const CATEGORY_WEIGHTS: [u32; 7] = [22, 5, 18, 10, 18, 12, 15];

pub const INCIDENT_COLUMNS: [&str; 11] = [
    "incident_id",
    "reported_at",
    "station",
    "category",
    "caller_id_number",
    "caller_name",
    "caller_phone",
    "party_id_number",
    "address",
    "suspect_phone",
    "description",
];
pub const WANTED_COLUMNS: [&str; 7] = [
    "wanted_id",
    "id_number",
    "name",
    "station",
    "wanted_since",
    "offence",
    "danger_level",
];
pub const REGISTRY_COLUMNS: [&str; 6] = [
    "id_number",
    "name",
    "station",
    "risk_level",
    "registered_on",
    "guardian_phone",
];

fn description(rng: &mut impl Rng, c: Category) -> &'static str {
    let pool: &[&str] = match c {
        Category::Dispute => &[
            "邻里纠纷，双方发生口角",
            "因停车问题发生纠纷",
            "经济纠纷，要求民警调解",
            "因琐事发生争执",
        ],
        Category::DomesticViolence => &[
            "家庭纠纷，报警人称被殴打",
            "夫妻争吵，有肢体冲突",
            "家暴求助",
        ],
        Category::Theft => &["电动车被盗", "手机被盗", "入室盗窃", "店内财物被盗"],
        Category::Fraud => &[
            "接到冒充客服电话被骗",
            "网络刷单被骗",
            "冒充公检法诈骗",
            "投资理财诈骗",
        ],
        Category::Noise => &["楼上装修噪音扰民", "夜间噪音扰民", "广场舞音响扰民"],
        Category::Traffic => &["两车刮擦", "电动车与行人相撞", "车辆违停堵路"],
        Category::Other => &["求助开锁", "寻找走失老人", "醉酒人员求助", "咨询户籍业务"],
    };
    pool[rng.gen_range(0..pool.len())]
}

struct Incident<'a> {
    ago: u32,
    seconds: u32,
    station: u8,
    category: Category,
    caller: &'a Person,
    party: Option<&'a Person>,
    address: &'a str,
    suspect: Option<&'a str>,
    harmful_ok: bool,
}

struct IncidentWriter<'a> {
    ctx: &'a Ctx<'a>,
    out: CsvOut,
    mess: Mess,
    rng: ChaCha8Rng,
    next_id: u64,
}

impl IncidentWriter<'_> {
    fn write(&mut self, inc: &Incident<'_>) -> Result<(), SynthError> {
        self.next_id += 1;
        let party_id = inc.party.map_or("", |p| p.id.as_str());
        let fields = [
            Field {
                kind: FieldKind::Id {
                    birth_year: inc.caller.birth_year,
                    required: true,
                },
                value: &inc.caller.id,
            },
            Field {
                kind: FieldKind::Name,
                value: &inc.caller.name,
            },
            Field {
                kind: FieldKind::Phone { required: true },
                value: &inc.caller.phone,
            },
            Field {
                kind: FieldKind::Id {
                    birth_year: inc.party.map_or(2000, |p| p.birth_year),
                    required: false,
                },
                value: party_id,
            },
            Field {
                kind: FieldKind::Address,
                value: inc.address,
            },
            Field {
                kind: FieldKind::Phone { required: false },
                value: inc.suspect.unwrap_or(""),
            },
        ];
        let outcome = self.mess.draw(&fields, inc.harmful_ok);
        let value = |i: usize| match &outcome {
            Outcome::Replace { field, value } if *field == i => value.as_str(),
            _ => fields[i].value,
        };
        let (h, m, s) = (inc.seconds / 3600, inc.seconds / 60 % 60, inc.seconds % 60);
        let out = &mut self.out;
        out.field_fmt(format_args!("JQ{:010}", self.next_id));
        out.field_fmt(format_args!(
            "{} {h:02}:{m:02}:{s:02}",
            self.ctx.cal.date(inc.ago)
        ));
        out.field(STATIONS[usize::from(inc.station)].code);
        out.field(inc.category.as_str());
        for i in 0..6 {
            out.field(value(i));
        }
        out.field(description(&mut self.rng, inc.category));
        let dup = match outcome {
            Outcome::Duplicate { delay } => Some(delay),
            _ => None,
        };
        out.end_row(dup)
    }
}

/// Writes `police.incidents.csv`: planted incidents interleaved with background ones,
/// every one admitted by the ledger.
pub fn incidents(
    ctx: &Ctx<'_>,
    planted: &[PlannedIncident],
    mut ledger: Ledger,
    mut next_phone: u64,
) -> Result<FileOut, SynthError> {
    let seed = ctx.cfg.seed;
    let mut w = IncidentWriter {
        ctx,
        out: CsvOut::create(
            ctx.out_dir,
            "police.incidents",
            Encoding::Utf8Bom,
            &INCIDENT_COLUMNS,
        )?,
        mess: Mess::new(seed, "police.incidents", ctx.cfg.messy_rate),
        rng: stream(seed, "police.incidents/text"),
        next_id: 0,
    };
    let mut rng = stream(seed, "police.incidents");
    let pop = ctx.pop;
    let n = ctx.cfg.persons;
    let mut planted = planted.iter().peekable();
    let mut single_report_suspects: Vec<Vec<u64>> = vec![Vec::new(); STATIONS.len()];
    let mut dropped = 0u64;
    for i in 0..n {
        while let Some(p) = planted.next_if(|p| p.emit_at <= i) {
            let caller = pop.person(p.caller);
            let party = p.party.map(|j| pop.person(j));
            let suspect = p.suspect.map(|k| pop.phone(k));
            w.write(&Incident {
                ago: p.ago,
                seconds: p.seconds,
                station: p.station,
                category: p.category,
                caller: &caller,
                party: party.as_ref(),
                address: &p.address,
                suspect: suspect.as_deref(),
                harmful_ok: false,
            })?;
        }
        if ctx.roles.get(&i).is_some_and(|r| r.subject) {
            continue;
        }
        let k = poisson(&mut rng, INCIDENTS_PER_PERSON);
        if k == 0 {
            continue;
        }
        let caller = pop.person(i);
        let home = pop.home(i);
        for _ in 0..k {
            let mut written = false;
            for _attempt in 0..4 {
                let category = Category::ALL[pick(&mut rng, &CATEGORY_WEIGHTS)];
                let ago = rng.gen_range(0..WINDOW);
                let at_home = match category {
                    Category::Dispute | Category::Noise | Category::DomesticViolence => {
                        rng.gen_bool(0.85)
                    }
                    Category::Theft => rng.gen_bool(0.25),
                    Category::Fraud => true,
                    Category::Traffic => false,
                    Category::Other => rng.gen_bool(0.5),
                };
                let place = if at_home {
                    home.clone()
                } else {
                    let s = if rng.gen_bool(0.9) {
                        caller.station
                    } else {
                        rng.gen_range(0..STATIONS.len() as u8)
                    };
                    pop.public_place(
                        s,
                        rng.gen_range(0..ROADS_PER_STATION as u8),
                        rng.gen_range(1..=PUBLIC_NUMBERS),
                    )
                };
                let party = match category {
                    Category::Dispute if rng.gen_bool(0.45) => {
                        let mut j = rng.gen_range(0..n);
                        for _ in 0..8 {
                            if pop.station(j) == caller.station {
                                break;
                            }
                            j = rng.gen_range(0..n);
                        }
                        (j != i).then_some(j)
                    }
                    Category::DomesticViolence if rng.gen_bool(0.7) => pop.mate(i),
                    _ => None,
                };
                let mut reused = false;
                let suspect = if category == Category::Fraud && rng.gen_bool(0.85) {
                    let list = &mut single_report_suspects[usize::from(place.station)];
                    if !list.is_empty() && rng.gen_bool(0.3) {
                        reused = true;
                        list.pop()
                    } else {
                        next_phone += 1;
                        Some(next_phone - 1)
                    }
                } else {
                    None
                };
                let mut d = Draft {
                    ago,
                    category,
                    station: place.station,
                    addr: place.key,
                    caller: i,
                    caller_phone: i,
                    party,
                    suspect,
                };
                let admitted = ledger.admit(&d, None) || {
                    d.party.is_some() && {
                        d.party = None;
                        ledger.admit(&d, None)
                    }
                };
                if !admitted {
                    continue;
                }
                if let (Some(phone), false) = (d.suspect, reused) {
                    single_report_suspects[usize::from(place.station)].push(phone);
                }
                let party = d.party.map(|j| pop.person(j));
                let suspect = d.suspect.map(|k| pop.phone(k));
                let seconds = time_of_day(&mut rng);
                w.write(&Incident {
                    ago,
                    seconds,
                    station: place.station,
                    category,
                    caller: &caller,
                    party: party.as_ref(),
                    address: &place.address,
                    suspect: suspect.as_deref(),
                    harmful_ok: true,
                })?;
                written = true;
                break;
            }
            dropped += u64::from(!written);
        }
    }
    // Every planted incident has emit_at < n, so none is left; write any just in case.
    for p in planted {
        let caller = pop.person(p.caller);
        let party = p.party.map(|j| pop.person(j));
        let suspect = p.suspect.map(|k| pop.phone(k));
        w.write(&Incident {
            ago: p.ago,
            seconds: p.seconds,
            station: p.station,
            category: p.category,
            caller: &caller,
            party: party.as_ref(),
            address: &p.address,
            suspect: suspect.as_deref(),
            harmful_ok: false,
        })?;
    }
    tracing::debug!(dropped, "background incidents dropped by the bookkeeping");
    FileOut::finish(w.out, &w.mess)
}

/// Writes `police.wanted.csv` and `police.mental_health_registry.csv`.
pub fn watchlists(ctx: &Ctx<'_>) -> Result<[FileOut; 2], SynthError> {
    let seed = ctx.cfg.seed;
    let mut wanted = CsvOut::create(
        ctx.out_dir,
        "police.wanted",
        Encoding::Utf8,
        &WANTED_COLUMNS,
    )?;
    let mut wanted_mess = Mess::new(seed, "police.wanted", ctx.cfg.messy_rate);
    let mut registry = CsvOut::create(
        ctx.out_dir,
        "police.mental_health_registry",
        Encoding::Utf8,
        &REGISTRY_COLUMNS,
    )?;
    let mut registry_mess = Mess::new(seed, "police.mental_health_registry", ctx.cfg.messy_rate);
    let mut wanted_no = 0u32;
    let roles: &BTreeMap<u64, crate::plan::Role> = ctx.roles;
    for (&i, role) in roles {
        if role.wanted.is_none() && role.registered.is_none() {
            continue;
        }
        let p = ctx.pop.person(i);
        let id_field = Field {
            kind: FieldKind::Id {
                birth_year: p.birth_year,
                required: true,
            },
            value: &p.id,
        };
        let name_field = Field {
            kind: FieldKind::Name,
            value: &p.name,
        };
        if let Some(wd) = role.wanted {
            wanted_no += 1;
            let fields = [id_field, name_field];
            let outcome = wanted_mess.draw(&fields, false);
            let value = |k: usize| match &outcome {
                Outcome::Replace { field, value } if *field == k => value.as_str(),
                _ => fields[k].value,
            };
            wanted.field_fmt(format_args!("W{wanted_no:06}"));
            wanted.field(value(0));
            wanted.field(value(1));
            wanted.field(STATIONS[usize::from(wd.station)].code);
            wanted.field(ctx.cal.date(wd.since_ago));
            wanted.field(wd.offence.as_str());
            wanted.field_fmt(format_args!("{}", wd.danger));
            wanted.end_row(match outcome {
                Outcome::Duplicate { delay } => Some(delay),
                _ => None,
            })?;
        }
        if let Some(reg) = role.registered {
            let guardian = ctx.pop.phone(reg.guardian_phone);
            let fields = [
                id_field,
                name_field,
                Field {
                    kind: FieldKind::Phone { required: true },
                    value: &guardian,
                },
            ];
            let outcome = registry_mess.draw(&fields, false);
            let value = |k: usize| match &outcome {
                Outcome::Replace { field, value } if *field == k => value.as_str(),
                _ => fields[k].value,
            };
            registry.field(value(0));
            registry.field(value(1));
            registry.field(STATIONS[usize::from(reg.station)].code);
            registry.field_fmt(format_args!("{}", reg.risk));
            registry.field(ctx.cal.date(reg.registered_ago));
            registry.field(value(2));
            registry.end_row(match outcome {
                Outcome::Duplicate { delay } => Some(delay),
                _ => None,
            })?;
        }
    }
    Ok([
        FileOut::finish(wanted, &wanted_mess)?,
        FileOut::finish(registry, &registry_mess)?,
    ])
}
