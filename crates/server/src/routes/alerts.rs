//! Officers' alert routes: list, one alert, the workflow actions, subject cards, silences
//! and reveal. Every alert is checked against the access policies before anything of it is
//! returned; a refusal's body says nothing about the alert.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use blindwatch_access::{Action, Context, Resource};
use blindwatch_alerts::{
    Alert, AlertOrder, AlertPage, AlertQuery, AlertStoreError, HistoryEntry,
    MAX_JUSTIFICATION_CHARS, Outcome, Pseudonym, Silence, SilenceMatchers, State as AlertState,
    StationScope, StoredSilence, SubjectCard, check_text, parse_tier, tier_rank,
};
use blindwatch_audit::{
    AlertId, AuditEvent, AuditRecord, Principal, ReasonCode, SilenceId, StationId,
};
use blindwatch_models::Category;
use chrono::{DateTime, Utc};

use crate::auth::{Caller, audit_principal};
use crate::problem::{ApiJson, Problem};
use crate::reveal::{RevealPlan, RevealedField};
use crate::state::AppState;
use crate::users::User;

/// An alert that does not exist and one the caller may not read answer alike (same status,
/// same body), so that alert ids cannot be enumerated.
fn no_such_alert() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such alert among those you may read",
    )
    .with_rule("unknown-alert")
}

fn store_problem(e: AlertStoreError) -> Problem {
    match e {
        AlertStoreError::UnknownAlert(_) => no_such_alert(),
        AlertStoreError::UnknownSilence(_) => Problem::not_found("silence"),
        AlertStoreError::Db(_)
        | AlertStoreError::Database(_)
        | AlertStoreError::Damaged(_)
        | AlertStoreError::Aborted(_) => Problem::internal(&e),
        AlertStoreError::AlertClosed { .. }
        | AlertStoreError::AlreadyAcknowledged { .. }
        | AlertStoreError::AlreadyAssigned { .. }
        | AlertStoreError::SilenceEnded { .. } => Problem::conflict(e.to_string()),
        other => Problem::unprocessable("invalid", other.to_string()),
    }
}

fn alert_id(id: &str) -> Result<AlertId, Problem> {
    AlertId::new(id).map_err(|_| no_such_alert())
}

/// The alert, if the policies let `user` do `action` on it: as unknown when `user` may not
/// read it, 403 when they may read it but not do `action`.
async fn authorized_alert(
    state: &AppState,
    user: &User,
    id: &str,
    action: Action,
    context: &Context,
) -> Result<(AlertId, Alert), Problem> {
    let id = alert_id(id)?;
    let alert = state.alerts.get(&id).await.map_err(store_problem)?;
    if !state.may_read_alert(user, &alert) {
        return Err(no_such_alert());
    }
    let resource = state
        .alert_resource(&alert)
        .ok_or_else(Problem::forbidden)?;
    state.authorize(user, action, &resource, context)?;
    Ok((id, alert))
}

/// The stations whose alerts `user` may read some of: their own, and for a county duty
/// officer the county's (red only, which the policies enforce alert by alert).
fn scope(state: &AppState, user: &User) -> Result<StationScope, Problem> {
    let station = user.station.as_deref().ok_or_else(Problem::forbidden)?;
    let county = state
        .org
        .county_of(station)
        .ok_or_else(Problem::forbidden)?;
    Ok(StationScope::Only(if user.duty {
        state.org.stations_in(county)
    } else {
        vec![station.to_owned()]
    }))
}

/// The largest page of `GET /v1/alerts` (as documented).
const MAX_LIST_LIMIT: u32 = 500;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    tier: Option<String>,
    status: Option<String>,
    model: Option<String>,
    station: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
    /// `urgency` (tier, then most recently seen; default) or `newest`.
    order: Option<String>,
}

#[derive(serde::Serialize)]
pub struct ListResponse {
    alerts: Vec<Alert>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

fn csv<T>(
    value: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
    what: &str,
) -> Result<Vec<T>, Problem> {
    value
        .into_iter()
        .flat_map(|v| v.split(','))
        .filter(|v| !v.is_empty())
        .map(|v| parse(v).ok_or_else(|| Problem::bad_request(format!("unknown {what} `{v}`"))))
        .collect()
}

/// `GET /v1/alerts`
pub async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
    Query(p): Query<ListParams>,
) -> Result<Json<ListResponse>, Problem> {
    let mut scope = scope(&state, &user)?;
    if let (Some(only), StationScope::Only(stations)) = (&p.station, &mut scope) {
        // Narrowing only: a station outside the caller's scope gives an empty list.
        stations.retain(|s| s == only);
    }
    let mut q = AlertQuery::new(scope);
    q.tiers = csv(
        p.tier.as_deref(),
        parse_tier,
        "tier (use red, orange, yellow, blue)",
    )?;
    q.states = csv(
        p.status.as_deref(),
        |s| match s {
            "open" => Some(AlertState::Open),
            "acknowledged" => Some(AlertState::Acknowledged),
            "closed" => Some(AlertState::Closed),
            _ => None,
        },
        "status (use open, acknowledged, closed)",
    )?;
    q.models = csv(p.model.as_deref(), |m| Some(m.to_owned()), "model")?;
    q.order = match p.order.as_deref() {
        None | Some("urgency") => AlertOrder::Urgency,
        Some("newest") => AlertOrder::Newest,
        Some(_) => return Err(Problem::bad_request("order is `urgency` or `newest`")),
    };
    if let Some(limit) = p.limit {
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(Problem::bad_request(format!(
                "limit is 1 to {MAX_LIST_LIMIT}"
            )));
        }
        q.limit = limit;
    }
    if let Some(after) = &p.after {
        // Well-formed text, but not a cursor this server gave out.
        q.after = Some(after.parse().map_err(|_| {
            Problem::unprocessable(
                "bad-cursor",
                "`after` is not a cursor this listing gave out; start from the first page",
            )
        })?);
    }
    let AlertPage { alerts, next } = state.alerts.query(&q).await.map_err(store_problem)?;
    // The policies decide alert by alert (a duty officer's county scope holds only red).
    let alerts: Vec<Alert> = alerts
        .into_iter()
        .filter(|a| state.may_read_alert(&user, a))
        .collect();
    state
        .metrics
        .alerts_listed
        .fetch_add(alerts.len() as u64, Ordering::Relaxed);
    Ok(Json(ListResponse {
        alerts,
        next: next.map(|c| c.to_string()),
    }))
}

#[derive(serde::Serialize)]
pub struct AlertDetail {
    alert: Alert,
    history: Vec<HistoryEntry>,
}

/// `GET /v1/alerts/{id}`: the alert and its history (audited).
pub async fn one(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<AlertDetail>, Problem> {
    let (id, alert) =
        authorized_alert(&state, &user, &id, Action::ReadAlert, &Context::default()).await?;
    let history = state.alerts.history(&id).await.map_err(store_problem)?;
    state
        .audit(vec![AuditRecord::now(
            audit_principal(&user)?,
            AuditEvent::AlertRead {
                alert: id,
                principal: audit_principal(&user)?,
            },
        )])
        .await?;
    Ok(Json(AlertDetail { alert, history }))
}

async fn act(
    state: &AppState,
    user: &User,
    id: &str,
    action: blindwatch_alerts::Action<'_>,
    code: &str,
) -> Result<Json<Alert>, Problem> {
    let (id, _) =
        authorized_alert(state, user, id, Action::ActOnAlert, &Context::default()).await?;
    let principal = audit_principal(user)?;
    let code = ReasonCode::new(code).map_err(|e| Problem::internal(&e))?;
    let mut audit = state.audit.lock().await;
    let updated = state
        .alerts
        .act(&id, &principal, action, Utc::now(), |alert| {
            let mut records = vec![AuditRecord::now(
                principal.clone(),
                AuditEvent::AlertActed {
                    alert: id.clone(),
                    principal: principal.clone(),
                    action: code.clone(),
                },
            )];
            if alert.state == AlertState::Closed {
                let model = blindwatch_audit::ModelId::new(&alert.model);
                let station = StationId::new(&alert.station);
                if let (Ok(model), Ok(station)) = (model, station) {
                    records.push(AuditRecord::now(
                        principal.clone(),
                        AuditEvent::AlertClosed {
                            alert: id.clone(),
                            model,
                            tier: alert.tier,
                            station,
                        },
                    ));
                }
            }
            for r in &records {
                audit.append(r)?;
            }
            audit.checkpoint().map(|_| ())
        })
        .await
        .map_err(store_problem)?;
    drop(audit);
    state.fanout.publish(&state.alerts).await;
    Ok(Json(updated))
}

/// `POST /v1/alerts/{id}/acknowledge`
pub async fn acknowledge(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<Alert>, Problem> {
    act(
        &state,
        &user,
        &id,
        blindwatch_alerts::Action::Acknowledge,
        "acknowledge",
    )
    .await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// The officer's user name at the alert's station.
    assignee: String,
}

/// `POST /v1/alerts/{id}/assign`
pub async fn assign(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AssignBody>,
) -> Result<Json<Alert>, Problem> {
    let station = user.station.clone().unwrap_or_default();
    let bad_name = || {
        Problem::bad_request(
            "the assignee is an officer's user name: 1-64 letters, digits, `-`, `_`, `.`, never 11 or more digits in a row",
        )
    };
    let name = &body.assignee;
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(bad_name());
    }
    let assignee = blindwatch_audit::Principal::new(format!("officer:{name}@{station}"))
        .map_err(|_| bad_name())?;
    act(
        &state,
        &user,
        &id,
        blindwatch_alerts::Action::Assign {
            assignee: &assignee,
        },
        "assign",
    )
    .await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    text: String,
}

/// `POST /v1/alerts/{id}/comment`
pub async fn comment(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CommentBody>,
) -> Result<Json<Alert>, Problem> {
    act(
        &state,
        &user,
        &id,
        blindwatch_alerts::Action::Comment { text: &body.text },
        "comment",
    )
    .await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    outcome: Outcome,
    note: Option<String>,
}

/// `POST /v1/alerts/{id}/close`
pub async fn close(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CloseBody>,
) -> Result<Json<Alert>, Problem> {
    let code = format!("close-{}", body.outcome.as_str().replace('_', "-"));
    act(
        &state,
        &user,
        &id,
        blindwatch_alerts::Action::Close {
            outcome: body.outcome,
            note: body.note.as_deref(),
        },
        &code,
    )
    .await
}

/// `GET /v1/subjects/{pseudonym}`: one subject's alerts across models — those the caller
/// may read — with their histories.
pub async fn subject(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(pseudonym): Path<String>,
) -> Result<Json<SubjectCard>, Problem> {
    let pseudonym = Pseudonym::parse(&pseudonym).ok_or_else(|| Problem::not_found("subject"))?;
    let mut card = state
        .alerts
        .subject_card(&pseudonym)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| Problem::not_found("subject"))?;
    card.alerts.retain(|a| state.may_read_alert(&user, a));
    if card.alerts.is_empty() {
        // Same answer whether the subject exists elsewhere or not at all.
        return Err(Problem::not_found("subject"));
    }
    let visible: Vec<String> = card.alerts.iter().map(|a| a.id.clone()).collect();
    card.history.retain(|id, _| visible.contains(id));
    card.stations
        .retain(|s| card.alerts.iter().any(|a| &a.station == s));
    card.highest_tier = card
        .alerts
        .iter()
        .filter(|a| a.state != AlertState::Closed)
        .map(|a| a.tier)
        .max_by_key(|t| tier_rank(*t));
    let principal = audit_principal(&user)?;
    let mut records = Vec::new();
    for a in &card.alerts {
        records.push(AuditRecord::now(
            principal.clone(),
            AuditEvent::AlertRead {
                alert: alert_id(&a.id)?,
                principal: principal.clone(),
            },
        ));
    }
    state.audit(records).await?;
    Ok(Json(card))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevealBody {
    /// Why the officer needs the identity (kept in the alert's history; required).
    justification: String,
}

#[derive(serde::Serialize)]
pub struct RevealResponse {
    alert: String,
    /// Revealable fields of the police's own records for this subject; empty when the police
    /// hold no record of them.
    fields: Vec<RevealedField>,
}

fn code(c: &str) -> Result<ReasonCode, Problem> {
    ReasonCode::new(c).map_err(|e| Problem::internal(&e))
}

/// A refused request's problem, naming the rule it broke.
fn refusal(status: StatusCode, rule: &str, detail: impl Into<String>) -> Problem {
    Problem::new(status, rule, detail).with_rule(rule)
}

/// The problem of a store refusal, with its rule.
fn store_refusal(e: AlertStoreError) -> (Problem, &'static str) {
    match e.rule() {
        Some(rule) => (store_problem(e).with_rule(rule), rule),
        None => (store_problem(e), "internal"),
    }
}

/// `POST /v1/alerts/{id}/reveal`. Every request is audited, granted or refused, at every
/// status: the request, then the grant or the refusal with the rule that refused it.
pub async fn reveal(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    body: Result<ApiJson<RevealBody>, Problem>,
) -> Result<Json<RevealResponse>, Problem> {
    let principal = audit_principal(&user)?;
    let Ok(id) = AlertId::new(&id) else {
        // Not even an id the log can hold: the request is logged without it.
        state
            .audit(vec![AuditRecord::now(
                principal.clone(),
                AuditEvent::RequestRefused {
                    principal,
                    action: code("reveal")?,
                    rule: code("unknown-alert")?,
                },
            )])
            .await?;
        return Err(no_such_alert());
    };
    let justification = body
        .as_ref()
        .ok()
        .map(|ApiJson(b)| b.justification.trim().to_owned());
    let given = justification.as_deref().is_some_and(|j| !j.is_empty());
    let requested = AuditRecord::now(
        principal.clone(),
        AuditEvent::RevealRequested {
            alert: id.clone(),
            principal: principal.clone(),
            reason: code(match &justification {
                None => "bad-body",
                Some(_) if given => "justified",
                Some(_) => "no-justification",
            })?,
        },
    );
    let refuse = |problem: Problem, rule: &str| {
        let records = code(rule).map(|reason| {
            vec![
                requested.clone(),
                AuditRecord::now(
                    principal.clone(),
                    AuditEvent::RevealRefused {
                        alert: id.clone(),
                        principal: principal.clone(),
                        reason,
                    },
                ),
            ]
        });
        let state = state.clone();
        async move {
            state
                .metrics
                .reveals_refused
                .fetch_add(1, Ordering::Relaxed);
            state.audit(records?).await?;
            Err::<Json<RevealResponse>, Problem>(problem)
        }
    };

    let body = match body {
        Ok(ApiJson(b)) => b,
        Err(p) => return refuse(p.with_rule("bad-body"), "bad-body").await,
    };
    let alert = match state.alerts.get(&id).await {
        Ok(a) => a,
        Err(AlertStoreError::UnknownAlert(_)) => {
            return refuse(no_such_alert(), "unknown-alert").await;
        }
        Err(e) => return refuse(store_problem(e), "internal").await,
    };
    // An alert the caller may not read answers as an unknown one (the log says which).
    if !state.may_read_alert(&user, &alert) {
        return refuse(no_such_alert(), "access-policy").await;
    }
    // The policies first: another station's officer learns nothing more of the alert.
    let context = Context {
        justification_given: given,
    };
    let allowed = state
        .alert_resource(&alert)
        .is_some_and(|r| state.authorize(&user, Action::Reveal, &r, &context).is_ok());
    if !allowed {
        return if given {
            refuse(Problem::forbidden(), "access-policy").await
        } else {
            refuse(
                Problem::forbidden().with_rule("justification-required"),
                "justification-required",
            )
            .await
        };
    }
    if alert.state == AlertState::Closed {
        return refuse(
            refusal(
                StatusCode::CONFLICT,
                "alert-closed",
                "the alert is closed; a reveal is for an alert being worked",
            ),
            "alert-closed",
        )
        .await;
    }
    let justification = match check_text(
        "justification",
        &body.justification,
        MAX_JUSTIFICATION_CHARS,
    ) {
        Ok(j) => j,
        Err(e) => {
            let (problem, rule) = store_refusal(e);
            return refuse(problem, rule).await;
        }
    };
    // Where the subject comes from, before anything revealable is read.
    let engine = match state.engine().await {
        Ok(e) => e,
        Err(e) => return refuse(Problem::internal(&e), "internal").await,
    };
    let plan =
        match RevealPlan::resolve(&state.dir, engine, state.org.police_partner(), &alert).await {
            Ok(p) => p,
            Err(e) => {
                return match e.rule() {
                    Some(rule) => {
                        let status = if rule == "model-changed" {
                            StatusCode::CONFLICT
                        } else {
                            StatusCode::UNPROCESSABLE_ENTITY
                        };
                        refuse(refusal(status, rule, e.to_string()), rule).await
                    }
                    None => refuse(Problem::internal(&e), "internal").await,
                };
            }
        };
    // The request is on record before anything is read; the justification goes into the
    // alert's history (the audit log holds codes only).
    state.audit(vec![requested.clone()]).await?;
    let read = async {
        state
            .alerts
            .comment(
                &id,
                &principal,
                &format!("reveal requested: {justification}"),
                Utc::now(),
            )
            .await
            .map_err(store_refusal)?;
        let (kind, key) = state
            .alerts
            .subject_key_of(&id)
            .await
            .map_err(store_refusal)?;
        plan.read(&state.pseudonyms, &kind, key.as_str())
            .await
            .map_err(|e| (Problem::internal(&e), "internal"))
    };
    let fields = match read.await {
        Ok(f) => f,
        Err((problem, rule)) => {
            state
                .metrics
                .reveals_refused
                .fetch_add(1, Ordering::Relaxed);
            state
                .audit(vec![AuditRecord::now(
                    principal.clone(),
                    AuditEvent::RevealRefused {
                        alert: id,
                        principal,
                        reason: code(rule)?,
                    },
                )])
                .await?;
            return Err(problem);
        }
    };
    state
        .audit(vec![AuditRecord::now(
            principal.clone(),
            AuditEvent::RevealGranted {
                alert: id,
                principal,
                reason: code(if fields.is_empty() {
                    "no-police-record"
                } else {
                    "granted"
                })?,
            },
        )])
        .await?;
    state
        .metrics
        .reveals_granted
        .fetch_add(1, Ordering::Relaxed);
    state.fanout.publish(&state.alerts).await;
    Ok(Json(RevealResponse {
        alert: alert.id,
        fields,
    }))
}

/// The caller's own station, if the policies let them manage its silences.
fn silence_station(state: &AppState, user: &User) -> Result<String, Problem> {
    let station = user.station.clone().ok_or_else(Problem::forbidden)?;
    let county = state
        .org
        .county_of(&station)
        .ok_or_else(Problem::forbidden)?;
    let resource = Resource::Station {
        id: station.clone(),
        county: county.to_owned(),
    };
    state.authorize(user, Action::ManageSilence, &resource, &Context::default())?;
    Ok(station)
}

/// Audits a refused silence request and returns its problem.
async fn silence_refused(
    state: &AppState,
    principal: &Principal,
    silence: Option<SilenceId>,
    action: &str,
    problem: Problem,
) -> Problem {
    let rule = problem.rule.clone().unwrap_or_else(|| "internal".into());
    let record = code(action).and_then(|action| {
        Ok(AuditRecord::now(
            principal.clone(),
            AuditEvent::SilenceRefused {
                principal: principal.clone(),
                silence,
                action,
                rule: code(&rule)?,
            },
        ))
    });
    match record {
        Ok(r) => match state.audit(vec![r]).await {
            Ok(()) => problem,
            Err(p) => p,
        },
        Err(p) => p,
    }
}

/// `GET /v1/silences`: the silences of the caller's station.
pub async fn silences(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> Result<Json<Vec<StoredSilence>>, Problem> {
    let station = silence_station(&state, &user)?;
    let all = state
        .alerts
        .list_silences(None)
        .await
        .map_err(store_problem)?;
    Ok(Json(
        all.into_iter()
            .filter(|s| s.matchers.station.as_deref() == Some(station.as_str()))
            .collect(),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceBody {
    model: Option<String>,
    tier: Option<String>,
    category: Option<String>,
    subject: Option<String>,
    /// Default: now.
    starts_at: Option<DateTime<Utc>>,
    ends_at: DateTime<Utc>,
    reason: String,
}

/// The matchers of a silence request, each a known value: a registered model, a model
/// category, a tier, a pseudonym; the station is always the caller's own.
fn silence_matchers(
    state: &AppState,
    body: &SilenceBody,
    station: String,
) -> Result<SilenceMatchers, Problem> {
    let bad = |rule: &str, detail: &str| refusal(StatusCode::UNPROCESSABLE_ENTITY, rule, detail);
    let matchers = SilenceMatchers {
        model: body.model.clone(),
        station: Some(station),
        tier: match body.tier.as_deref() {
            None => None,
            Some(t) => Some(
                parse_tier(t)
                    .ok_or_else(|| bad("bad-matcher", "tier is red, orange, yellow or blue"))?,
            ),
        },
        category: body.category.clone(),
        subject: match body.subject.as_deref() {
            None => None,
            // Only the canonical form, as documented.
            Some(p) => Some(
                Pseudonym::parse(p)
                    .filter(|parsed| parsed.as_str() == p)
                    .ok_or_else(|| {
                        Problem::bad_request("subject is a pseudonym such as P-7K3Q9-XD2MB")
                            .with_rule("bad-matcher")
                    })?,
            ),
        },
    };
    matchers.check().map_err(|e| store_refusal(e).0)?;
    if let Some(model) = &matchers.model
        && !state
            .dir
            .models_dir()
            .join(format!("{model}.toml"))
            .is_file()
    {
        return Err(bad(
            "unknown-model",
            "model is the id of a registered model (GET /v1/me lists them)",
        ));
    }
    if let Some(category) = &matchers.category {
        use serde::de::IntoDeserializer;
        let known: Result<Category, serde::de::value::Error> =
            serde::Deserialize::deserialize(category.as_str().into_deserializer());
        if known.is_err() {
            return Err(bad(
                "unknown-category",
                "category is one of dispute, mental-health, fugitive, public-order, fraud, other",
            ));
        }
    }
    Ok(matchers)
}

/// `POST /v1/silences`: a silence of the caller's own station (the station matcher is
/// always set to it), audited before it is stored; a refusal is audited with its rule.
pub async fn add_silence(
    State(state): State<AppState>,
    Caller(user): Caller,
    body: Result<ApiJson<SilenceBody>, Problem>,
) -> Result<(StatusCode, Json<StoredSilence>), Problem> {
    let principal = audit_principal(&user)?;
    let action = "create-silence";
    let prepared = async {
        let station = silence_station(&state, &user)?;
        let ApiJson(body) = body.map_err(|p| p.with_rule("bad-body"))?;
        let matchers = silence_matchers(&state, &body, station)?;
        Ok::<_, Problem>(Silence {
            matchers,
            starts_at: body.starts_at.unwrap_or_else(Utc::now),
            ends_at: body.ends_at,
            created_by: principal.clone(),
            reason: body.reason,
        })
    };
    let silence = match prepared.await {
        Ok(s) => s,
        Err(p) => return Err(silence_refused(&state, &principal, None, action, p).await),
    };
    let mut audit = state.audit.lock().await;
    let stored = state
        .alerts
        .add_silence_audited(silence, |stored| {
            audit.append(&AuditRecord::now(
                principal.clone(),
                AuditEvent::SilenceCreated {
                    silence: stored.id.clone(),
                    creator: principal.clone(),
                },
            ))?;
            audit.checkpoint().map(|_| ())
        })
        .await;
    drop(audit);
    match stored {
        Ok(s) => Ok((StatusCode::CREATED, Json(s))),
        Err(e) => {
            let (problem, _) = store_refusal(e);
            Err(silence_refused(&state, &principal, None, action, problem).await)
        }
    }
}

/// `POST /v1/silences/{id}/expire`: audited, granted or refused.
pub async fn expire_silence(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<StoredSilence>, Problem> {
    let principal = audit_principal(&user)?;
    let action = "expire-silence";
    let id = SilenceId::new(id).ok();
    let not_found = || Problem::not_found("silence").with_rule("unknown-silence");
    let checked = async {
        let station = silence_station(&state, &user)?;
        let id = id.clone().ok_or_else(not_found)?;
        let existing = state
            .alerts
            .list_silences(None)
            .await
            .map_err(store_problem)?;
        // Another station's silence is as unknown as a missing one.
        if !existing
            .iter()
            .any(|s| s.id == id && s.matchers.station.as_deref() == Some(station.as_str()))
        {
            return Err(not_found());
        }
        Ok(id)
    };
    let silence = match checked.await {
        Ok(s) => s,
        Err(p) => return Err(silence_refused(&state, &principal, id, action, p).await),
    };
    let mut audit = state.audit.lock().await;
    let expired = state
        .alerts
        .expire_silence_audited(&silence, &principal, Utc::now(), |s| {
            audit.append(&AuditRecord::now(
                principal.clone(),
                AuditEvent::SilenceExpired {
                    silence: s.id.clone(),
                    principal: principal.clone(),
                },
            ))?;
            audit.checkpoint().map(|_| ())
        })
        .await;
    drop(audit);
    match expired {
        Ok(s) => Ok(Json(s)),
        Err(e) => {
            let (problem, _) = store_refusal(e);
            Err(silence_refused(&state, &principal, Some(silence), action, problem).await)
        }
    }
}
