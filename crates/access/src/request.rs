//! Typed requests and their translation into Cedar entities and a schema-checked request.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression, Schema,
};

const NAMESPACE: &str = "Blindwatch";
/// Id of the `Platform` singleton (the shipped policies name it).
const PLATFORM_ID: &str = "platform";

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A frontline officer of `station` (in `county`); `duty` marks a county duty officer.
    Officer {
        name: String,
        station: String,
        county: String,
        duty: bool,
    },
    Specialist {
        name: String,
    },
    Auditor {
        name: String,
    },
    Partner {
        name: String,
    },
}

/// What is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    ReadAlert,
    /// Acknowledge, assign, comment, close.
    ActOnAlert,
    Reveal,
    CheckModel,
    RegisterModel,
    RunModel,
    Query,
    Contribute,
    ReadAudit,
    /// Create or expire alert silences for a station.
    ManageSilence,
    /// Approve a model that reads the dataset (a partner, for its own datasets).
    ApproveModel,
}

impl Action {
    pub const ALL: [Action; 11] = [
        Action::ReadAlert,
        Action::ActOnAlert,
        Action::Reveal,
        Action::CheckModel,
        Action::RegisterModel,
        Action::RunModel,
        Action::Query,
        Action::Contribute,
        Action::ReadAudit,
        Action::ManageSilence,
        Action::ApproveModel,
    ];

    /// The Cedar action id, as in `Blindwatch::Action::"read_alert"`.
    pub fn name(self) -> &'static str {
        match self {
            Action::ReadAlert => "read_alert",
            Action::ActOnAlert => "act_on_alert",
            Action::Reveal => "reveal",
            Action::CheckModel => "check_model",
            Action::RegisterModel => "register_model",
            Action::RunModel => "run_model",
            Action::Query => "query",
            Action::Contribute => "contribute",
            Action::ReadAudit => "read_audit",
            Action::ManageSilence => "manage_silence",
            Action::ApproveModel => "approve_model",
        }
    }
}

/// What the action is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// `tier`: 4 red, 3 orange, 2 yellow, 1 blue; anything else is denied.
    Alert {
        id: String,
        station: String,
        county: String,
        tier: u8,
        model: String,
    },
    Model {
        id: String,
    },
    Dataset {
        name: String,
        partner: String,
    },
    /// A police station (silences are per station).
    Station {
        id: String,
        county: String,
    },
    /// The platform itself: aggregate queries, the audit log.
    Platform,
}

/// Facts about the request beyond who, what and on what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Context {
    /// A written justification accompanies a reveal. Only passed to Cedar for `Reveal`.
    pub justification_given: bool,
}

/// Which step of building a request failed. Carries no value: Cedar's error messages name
/// entities, and names must not reach the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BuildError {
    TypeName,
    Tier,
    Entity,
    Entities,
    Context,
    Request,
}

impl BuildError {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BuildError::TypeName => "type_name",
            BuildError::Tier => "tier",
            BuildError::Entity => "entity",
            BuildError::Entities => "entities",
            BuildError::Context => "context",
            BuildError::Request => "request",
        }
    }
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, BuildError> {
    let ty = EntityTypeName::from_str(&format!("{NAMESPACE}::{type_name}"))
        .map_err(|_| BuildError::TypeName)?;
    Ok(EntityUid::from_type_name_and_id(ty, EntityId::new(id)))
}

fn entity(
    uid: EntityUid,
    attrs: impl IntoIterator<Item = (&'static str, RestrictedExpression)>,
    parents: impl IntoIterator<Item = EntityUid>,
) -> Result<Entity, BuildError> {
    let attrs: HashMap<String, RestrictedExpression> =
        attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let parents: HashSet<EntityUid> = parents.into_iter().collect();
    Entity::new(uid, attrs, parents).map_err(|_| BuildError::Entity)
}

fn reference(type_name: &str, id: &str) -> Result<RestrictedExpression, BuildError> {
    Ok(RestrictedExpression::new_entity_uid(uid(type_name, id)?))
}

/// The principal's uid and the entities it needs (an officer brings its station and county,
/// so that `principal in resource.county` follows Officer in Station in County).
fn principal_entities(principal: &Principal) -> Result<(EntityUid, Vec<Entity>), BuildError> {
    match principal {
        Principal::Officer {
            name,
            station,
            county,
            duty,
        } => {
            let county_uid = uid("County", county)?;
            let station_uid = uid("Station", station)?;
            let officer_uid = uid("Officer", name)?;
            let entities = vec![
                entity(county_uid.clone(), [], [])?,
                entity(
                    station_uid.clone(),
                    [("county", reference("County", county)?)],
                    [county_uid],
                )?,
                entity(
                    officer_uid.clone(),
                    [
                        ("station", reference("Station", station)?),
                        ("county", reference("County", county)?),
                        ("duty", RestrictedExpression::new_bool(*duty)),
                    ],
                    [station_uid],
                )?,
            ];
            Ok((officer_uid, entities))
        }
        Principal::Specialist { name } => plain("Specialist", name),
        Principal::Auditor { name } => plain("Auditor", name),
        Principal::Partner { name } => plain("Partner", name),
    }
}

fn plain(type_name: &str, id: &str) -> Result<(EntityUid, Vec<Entity>), BuildError> {
    let u = uid(type_name, id)?;
    Ok((u.clone(), vec![entity(u, [], [])?]))
}

/// The resource's uid and entity. Entities it refers to (an alert's station) are left out:
/// policies only compare them or test the principal's ancestry against them.
fn resource_entity(resource: &Resource) -> Result<(EntityUid, Entity), BuildError> {
    let (u, attrs) = match resource {
        Resource::Alert {
            id,
            station,
            county,
            tier,
            model,
        } => {
            if !(1..=4).contains(tier) {
                return Err(BuildError::Tier);
            }
            (
                uid("Alert", id)?,
                vec![
                    ("station", reference("Station", station)?),
                    ("county", reference("County", county)?),
                    ("tier", RestrictedExpression::new_long(i64::from(*tier))),
                    ("model", RestrictedExpression::new_string(model.clone())),
                ],
            )
        }
        Resource::Model { id } => (uid("Model", id)?, Vec::new()),
        Resource::Dataset { name, partner } => (
            uid("Dataset", name)?,
            vec![("partner", reference("Partner", partner)?)],
        ),
        Resource::Station { id, county } => (
            uid("Station", id)?,
            vec![("county", reference("County", county)?)],
        ),
        Resource::Platform => (uid("Platform", PLATFORM_ID)?, Vec::new()),
    };
    Ok((u.clone(), entity(u, attrs, [])?))
}

/// A Cedar request and entity store, both checked against the schema (types, attributes,
/// the action's principal and resource types, the context's shape).
pub(crate) fn build(
    schema: &Schema,
    principal: &Principal,
    action: Action,
    resource: &Resource,
    context: &Context,
) -> Result<(Request, Entities), BuildError> {
    let (principal_uid, mut entities) = principal_entities(principal)?;
    let (resource_uid, resource) = resource_entity(resource)?;
    // An officer's own station is already among the principal's entities; a second
    // copy would be refused as a duplicate (and could contradict the first).
    if !entities.iter().any(|e| e.uid() == resource_uid) {
        entities.push(resource);
    }
    let entities =
        Entities::from_entities(entities, Some(schema)).map_err(|_| BuildError::Entities)?;

    // Only reveal declares a context; the schema rejects attributes an action does not declare.
    let cedar_context = match action {
        Action::Reveal => cedar_policy::Context::from_pairs([(
            "justification_given".to_owned(),
            RestrictedExpression::new_bool(context.justification_given),
        )])
        .map_err(|_| BuildError::Context)?,
        _ => cedar_policy::Context::empty(),
    };
    let action_uid = uid("Action", action.name())?;
    let request = Request::new(
        principal_uid,
        action_uid,
        resource_uid,
        cedar_context,
        Some(schema),
    )
    .map_err(|_| BuildError::Request)?;
    Ok((request, entities))
}
