//! The server's alert listing: scoped to stations, filtered, paginated with a cursor.

use std::fmt;
use std::str::FromStr;

use blindwatch_audit::Tier;
use sqlx::Row;

use crate::store::{
    ALERT_COLUMNS, Alert, AlertStore, AlertStoreError, State, TIER_RANK_SQL, alert_from_row,
};
use crate::{tier_name, tier_rank};

/// Default page size of [`AlertQuery`].
pub const DEFAULT_PAGE: u32 = 50;
/// Largest page size; larger limits are cut to it.
pub const MAX_PAGE: u32 = 500;

/// Which stations' alerts a listing may show. There is deliberately no "empty list means
/// all": `Only(vec![])` shows nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StationScope {
    /// Every station (e.g. the platform administrator).
    All,
    /// These stations only (an officer's station; a county duty officer's stations).
    Only(Vec<String>),
}

/// The order of a listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AlertOrder {
    /// Highest tier first, then most recently seen, then oldest alert first (as
    /// [`AlertStore::list`]). Tier and last-seen change with runs: an alert a run changes
    /// between two pages may be listed twice or not at all.
    #[default]
    Urgency,
    /// Most recently opened first. Pages never repeat or skip an alert (the order never
    /// changes); alerts opened after the first page appear only on a new listing.
    Newest,
}

/// Where the next page starts: opaque, given out by [`AlertStore::query`], valid only with
/// the same order (and meant for the same filters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(String);

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Cursor {
    type Err = AlertStoreError;
    fn from_str(s: &str) -> Result<Cursor, AlertStoreError> {
        let c = Cursor(s.to_owned());
        c.position()?;
        Ok(c)
    }
}

impl serde::Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The position after an alert, in one order.
#[derive(Debug, PartialEq, Eq)]
enum Position {
    Urgency {
        rank: i64,
        last_seen: String,
        seq: i64,
    },
    Newest {
        seq: i64,
    },
}

impl Cursor {
    fn of(p: &Position) -> Cursor {
        let plain = match p {
            Position::Urgency {
                rank,
                last_seen,
                seq,
            } => format!("u|{rank}|{last_seen}|{seq}"),
            Position::Newest { seq } => format!("n|{seq}"),
        };
        Cursor(hex::encode(plain))
    }

    fn position(&self) -> Result<Position, AlertStoreError> {
        let bytes = hex::decode(&self.0).map_err(|_| AlertStoreError::InvalidCursor)?;
        let plain = String::from_utf8(bytes).map_err(|_| AlertStoreError::InvalidCursor)?;
        let parts: Vec<&str> = plain.split('|').collect();
        let int = |s: &str| s.parse::<i64>().map_err(|_| AlertStoreError::InvalidCursor);
        match parts.as_slice() {
            ["u", rank, last_seen, seq] => {
                let rank = int(rank)?;
                let seq = int(seq)?;
                if !(1..=4).contains(&rank) || seq < 1 || last_seen.is_empty() {
                    return Err(AlertStoreError::InvalidCursor);
                }
                Ok(Position::Urgency {
                    rank,
                    last_seen: (*last_seen).to_owned(),
                    seq,
                })
            }
            ["n", seq] => match int(seq)? {
                seq if seq >= 1 => Ok(Position::Newest { seq }),
                _ => Err(AlertStoreError::InvalidCursor),
            },
            _ => Err(AlertStoreError::InvalidCursor),
        }
    }
}

/// A listing: stations in scope, then optional filters (an empty list does not filter).
#[derive(Debug, Clone)]
pub struct AlertQuery {
    pub stations: StationScope,
    /// Any of these tiers.
    pub tiers: Vec<Tier>,
    /// Any of these workflow states.
    pub states: Vec<State>,
    /// Any of these models.
    pub models: Vec<String>,
    /// Only alerts assigned to this principal.
    pub assignee: Option<String>,
    pub order: AlertOrder,
    /// Page size, 1..=[`MAX_PAGE`] (0 is taken as 1).
    pub limit: u32,
    /// The `next` cursor of the previous page.
    pub after: Option<Cursor>,
}

impl AlertQuery {
    /// A first page of [`DEFAULT_PAGE`] alerts of `stations`, by urgency, unfiltered.
    pub fn new(stations: StationScope) -> AlertQuery {
        AlertQuery {
            stations,
            tiers: Vec::new(),
            states: Vec::new(),
            models: Vec::new(),
            assignee: None,
            order: AlertOrder::Urgency,
            limit: DEFAULT_PAGE,
            after: None,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertPage {
    pub alerts: Vec<Alert>,
    /// Where the next page starts; None on the last page.
    pub next: Option<Cursor>,
}

enum Bind {
    Text(String),
    Int(i64),
}

/// `$k, $k+1, ...` for `n` values bound after the `bound` values already bound.
fn placeholders(bound: usize, n: usize) -> String {
    (bound + 1..=bound + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl AlertStore {
    /// One page of alerts matching `q`, in `q.order`.
    pub async fn query(&self, q: &AlertQuery) -> Result<AlertPage, AlertStoreError> {
        let mut sql = format!("SELECT {ALERT_COLUMNS}, seq FROM alerts WHERE 1 = 1");
        let mut binds: Vec<Bind> = Vec::new();
        match &q.stations {
            StationScope::All => {}
            StationScope::Only(s) if s.is_empty() => {
                return Ok(AlertPage {
                    alerts: Vec::new(),
                    next: None,
                });
            }
            StationScope::Only(s) => {
                sql.push_str(&format!(
                    " AND station IN ({})",
                    placeholders(binds.len(), s.len())
                ));
                binds.extend(s.iter().cloned().map(Bind::Text));
            }
        }
        if !q.tiers.is_empty() {
            sql.push_str(&format!(
                " AND tier IN ({})",
                placeholders(binds.len(), q.tiers.len())
            ));
            binds.extend(q.tiers.iter().map(|t| Bind::Text(tier_name(*t).to_owned())));
        }
        if !q.states.is_empty() {
            let states: Vec<&str> = q
                .states
                .iter()
                .map(|s| match s {
                    State::Open => "(status = 'open' AND acknowledged_at IS NULL)",
                    State::Acknowledged => "(status = 'open' AND acknowledged_at IS NOT NULL)",
                    State::Closed => "status = 'closed'",
                })
                .collect();
            sql.push_str(&format!(" AND ({})", states.join(" OR ")));
        }
        if !q.models.is_empty() {
            sql.push_str(&format!(
                " AND model IN ({})",
                placeholders(binds.len(), q.models.len())
            ));
            binds.extend(q.models.iter().cloned().map(Bind::Text));
        }
        if let Some(a) = &q.assignee {
            binds.push(Bind::Text(a.clone()));
            sql.push_str(&format!(" AND assignee = ${}", binds.len()));
        }
        match (q.order, q.after.as_ref().map(Cursor::position).transpose()?) {
            (_, None) => {}
            (
                AlertOrder::Urgency,
                Some(Position::Urgency {
                    rank,
                    last_seen,
                    seq,
                }),
            ) => {
                let (k, t, s) = (binds.len() + 1, binds.len() + 2, binds.len() + 3);
                sql.push_str(&format!(
                    " AND ({r} < ${k} OR ({r} = ${k} AND last_seen < ${t}) OR ({r} = ${k} AND last_seen = ${t} AND seq > ${s}))",
                    r = TIER_RANK_SQL
                ));
                binds.extend([Bind::Int(rank), Bind::Text(last_seen), Bind::Int(seq)]);
            }
            (AlertOrder::Newest, Some(Position::Newest { seq })) => {
                binds.push(Bind::Int(seq));
                sql.push_str(&format!(" AND seq < ${}", binds.len()));
            }
            _ => return Err(AlertStoreError::InvalidCursor),
        }
        sql.push_str(&match q.order {
            AlertOrder::Urgency => format!(" ORDER BY {TIER_RANK_SQL} DESC, last_seen DESC, seq"),
            AlertOrder::Newest => " ORDER BY seq DESC".to_owned(),
        });
        let limit = q.limit.clamp(1, MAX_PAGE);
        binds.push(Bind::Int(i64::from(limit) + 1));
        sql.push_str(&format!(" LIMIT ${}", binds.len()));

        let mut query = sqlx::query(&sql);
        for b in binds {
            query = match b {
                Bind::Text(s) => query.bind(s),
                Bind::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        let more = rows.len() > limit as usize;
        let mut alerts = Vec::with_capacity(rows.len().min(limit as usize));
        let mut last = None;
        for r in rows.iter().take(limit as usize) {
            let a = alert_from_row(r)?;
            let seq: i64 = r.try_get("seq")?;
            last = Some(match q.order {
                AlertOrder::Urgency => Position::Urgency {
                    rank: i64::from(tier_rank(a.tier)),
                    last_seen: a.last_seen.clone(),
                    seq,
                },
                AlertOrder::Newest => Position::Newest { seq },
            });
            alerts.push(a);
        }
        let next = match (more, last) {
            (true, Some(p)) => Some(Cursor::of(&p)),
            _ => None,
        };
        Ok(AlertPage { alerts, next })
    }
}
