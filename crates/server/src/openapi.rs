//! `GET /v1/openapi.json`: the API described as OpenAPI 3.1.

use axum::Json;
use serde_json::{Value, json};

/// The refusals any authenticated route can give: its own (400, 403, 404, 409, 422), the
/// server's limits (408 body deadline, 413 size, 415 content type, 429 per-user rate, 503
/// query time) and failures (500).
fn op(summary: &str, tag: &str, ok: &str) -> Value {
    let problem = json!({"$ref": "#/components/responses/Problem"});
    let mut responses = serde_json::Map::new();
    responses.insert(ok.to_owned(), json!({"description": "success"}));
    for status in [
        "400", "401", "403", "404", "408", "409", "413", "415", "422", "429", "500", "503",
    ] {
        responses.insert(status.to_owned(), problem.clone());
    }
    json!({
        "summary": summary,
        "tags": [tag],
        "security": [{"bearer": []}],
        "responses": responses
    })
}

/// A public route (no token): its success, and a problem if the server fails.
fn public(summary: &str, content_type: &str) -> Value {
    json!({"get": {
        "summary": summary,
        "security": [],
        "responses": {
            "200": {"description": "success", "content": {content_type: {"schema": {"type": "string"}}}},
            "500": {"$ref": "#/components/responses/Problem"}
        }
    }})
}

fn with_body(mut op: Value, content_type: &str, schema: Value) -> Value {
    op["requestBody"] = json!({"required": true, "content": {content_type: {"schema": schema}}});
    op
}

fn id_param(name: &str) -> Value {
    json!([{"name": name, "in": "path", "required": true, "schema": {"type": "string"}}])
}

pub fn spec() -> Value {
    // Request bodies the server refuses fields of are closed, as the server is.
    let closed = |mut schema: Value| {
        schema["additionalProperties"] = json!(false);
        schema
    };
    let action = |summary: &str, body: Value| {
        let mut o = with_body(op(summary, "alerts", "200"), "application/json", body);
        o["parameters"] = id_param("id");
        o
    };
    let text = json!({"type": "string"});
    // Optional fields: absent or null mean the same (serde's `Option`).
    let optional_text = json!({"type": ["string", "null"]});
    // Any content type is read as the file's text; 422 when it is not a model that checks.
    let model_file = json!({"type": "string", "description": "the model file (TOML)"});
    let mut one = op("One alert with its history and comments", "alerts", "200");
    one["parameters"] = id_param("id");
    let mut subject = op(
        "A subject card: every alert of one pseudonym, highest tier first",
        "alerts",
        "200",
    );
    subject["parameters"] = id_param("pseudonym");
    let mut expire = op("Expire a silence", "alerts", "200");
    // No body: whatever is sent is not read.
    let mut acknowledge = op("Acknowledge (no body)", "alerts", "200");
    acknowledge["parameters"] = id_param("id");
    expire["parameters"] = id_param("id");
    let mut list = op(
        "Alerts the caller may read, highest tier first, paginated",
        "alerts",
        "200",
    );
    list["parameters"] = json!([
        {"name": "tier", "in": "query", "description": "tiers, comma-separated", "schema": {"type": "string", "pattern": "^(|red|orange|yellow|blue)(,(|red|orange|yellow|blue))*$"}},
        {"name": "status", "in": "query", "description": "states, comma-separated", "schema": {"type": "string", "pattern": "^(|open|acknowledged|closed)(,(|open|acknowledged|closed))*$"}},
        {"name": "model", "in": "query", "schema": text},
        {"name": "station", "in": "query", "schema": text},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
        {"name": "after", "in": "query", "description": "the `next` cursor of the previous page (422 `bad-cursor` for any other value)", "schema": text},
        {"name": "order", "in": "query", "description": "`urgency` (tier, then most recently seen; default) or `newest`", "schema": {"type": "string", "enum": ["urgency", "newest"]}}
    ]);
    let mut stream = op(
        "Server-sent events of new and changed alerts the caller may read (resume with Last-Event-ID); officers only; ends when the caller's user is revoked or the server stops",
        "alerts",
        "200",
    );
    stream["responses"]["200"] = json!({"description": "an event stream", "content": {"text/event-stream": {"schema": text}}});
    let mut me = op(
        "The caller: name, role, audit principal, station and county (officers), duty flag, and the registered models' titles",
        "users",
        "200",
    );
    me["responses"]["200"] = json!({
        "description": "the caller",
        "content": {"application/json": {"schema": {
            "type": "object",
            "required": ["name", "role", "principal", "duty", "models"],
            "properties": {
                "name": text, "principal": text, "station": text, "county": text,
                "role": {"type": "string", "enum": ["officer", "specialist", "auditor", "partner"]},
                "duty": {"type": "boolean"},
                "models": {"type": "array", "items": {"type": "object", "properties": {"id": text, "title_zh": text, "title_en": text}}}
            }
        }}}
    });
    let mut run = op(
        "Evaluate registered models now and record their alerts (specialists). Each model's checks and partners' approvals are verified again first; a model whose approvals are missing or stale is refused (422 `model-unapproved`, audited) and nothing runs. Counts of subjects read `fewer than k` below `min_group_size`; alerts go to officers only",
        "models",
        "200",
    );
    let count = json!({"oneOf": [
        {"type": "integer", "minimum": 0, "description": "at least min_group_size"},
        {"type": "string", "description": "`fewer than k` (k = min_group_size)"}
    ]});
    run["responses"]["200"] = json!({
        "description": "one summary per model run",
        "content": {"application/json": {"schema": {"type": "array", "items": {
            "type": "object",
            "required": ["model", "version", "subjects", "opened", "raised", "lowered", "resolved", "unchanged", "without_subject", "unroutable", "duplicates"],
            "properties": {
                "model": text, "version": {"type": "integer"},
                "subjects": count, "opened": count, "raised": count, "lowered": count,
                "resolved": count, "unchanged": count, "without_subject": count,
                "unroutable": count, "duplicates": count
            }
        }}}}
    });
    let envelope = json!({
        "type": "object",
        "description": "a DSSE envelope as written by `blindwatch model approve`: payload type `application/vnd.blindwatch.model-approval+json`, payload {model, version, digest, partner}, signed with the partner's registered Ed25519 key",
        "required": ["payloadType", "payload", "signatures"],
        "properties": {
            "payloadType": text,
            "payload": {"type": "string", "contentEncoding": "base64"},
            "signatures": {"type": "array", "items": {"type": "object", "required": ["keyid", "sig"], "properties": {"keyid": text, "sig": text}}}
        }
    });
    let mut approve = with_body(
        op(
            "A partner's signed approval of one exact model that reads its datasets (partners only, for their own datasets; verified under the partner's registered key; audited, accepted or refused)",
            "models",
            "201",
        ),
        "application/json",
        json!({"type": "object", "required": ["model", "approval"], "properties": {
            "model": {"type": "string", "description": "the model file's text, exactly as approved"},
            "approval": envelope
        }}),
    );
    approve["parameters"] = id_param("id");
    run["parameters"] = json!([
        {"name": "model", "in": "query", "schema": text},
        {"name": "as_of", "in": "query", "description": "evaluate as of this day, 1970-01-01 to 2199-12-31 (422 `bad-as-of` outside)", "schema": {"type": "string", "format": "date"}}
    ]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Blindwatch platform API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sealed partner contributions, tiered warning alerts for police stations, gated aggregate queries. Every route but /healthz, /metrics, this document and the console's static files (/, /console.js, /console.css) needs `Authorization: Bearer <token>` (issued by `blindwatch users add`) and is authorised by the Cedar access policies. Errors are RFC 9457 problem details."
        },
        "paths": {
            "/healthz": public("Liveness and store access", "text/plain"),
            "/metrics": public("Prometheus metrics (text format 0.0.4)", "text/plain"),
            "/v1/openapi.json": public("This document", "application/json"),
            "/": public("The officer console (HTML; signs in with a bearer token and uses this API)", "text/html"),
            "/console.js": public("The officer console's script", "text/javascript"),
            "/console.css": public("The officer console's stylesheet", "text/css"),
            "/v1/me": {"get": me},
            "/v1/alerts": {"get": list},
            "/v1/alerts/stream": {"get": stream},
            "/v1/alerts/{id}": {"get": one},
            "/v1/alerts/{id}/acknowledge": {"post": acknowledge},
            "/v1/alerts/{id}/assign": {"post": action("Assign to an officer", closed(json!({"type": "object", "required": ["assignee"], "properties": {"assignee": {
                "type": "string", "minLength": 1, "maxLength": 64,
                "description": "an officer's user name at the caller's station: letters, digits, `-`, `_`, `.`, never 11 or more digits in a row",
                "pattern": "^([A-Za-z._-]|[0-9]{1,10}[A-Za-z._-])*[0-9]{0,10}$"
            }}})))},
            "/v1/alerts/{id}/comment": {"post": action("Comment", closed(json!({"type": "object", "required": ["text"], "properties": {"text": text}})))},
            "/v1/alerts/{id}/close": {"post": action("Close with an outcome", closed(json!({"type": "object", "required": ["outcome"], "properties": {"outcome": {"type": "string", "enum": ["handled", "false_positive", "duplicate"]}, "note": optional_text.clone()}})))},
            "/v1/alerts/{id}/reveal": {"post": action("Ask to reveal the identity behind an alert (justification required; audited)", closed(json!({"type": "object", "required": ["justification"], "properties": {"justification": text}})))},
            "/v1/subjects/{pseudonym}": {"get": subject},
            "/v1/silences": {
                "get": op("Silences (active and expired)", "alerts", "200"),
                "post": with_body(op("Create a silence of the caller's own station (the station matcher is always theirs): optional matchers model (a registered model's id), tier, category and subject (a pseudonym); start (default now), end, reason", "alerts", "201"), "application/json", closed(json!({
                    "type": "object",
                    "required": ["ends_at", "reason"],
                    "properties": {
                        "model": optional_text.clone(),
                        "tier": {"type": ["string", "null"], "enum": ["red", "orange", "yellow", "blue", null]},
                        "category": {"type": ["string", "null"], "enum": ["dispute", "mental-health", "fugitive", "public-order", "fraud", "other", null]},
                        "subject": {"type": ["string", "null"], "description": "a pseudonym such as P-7K3Q9-XD2MB", "pattern": "^[PTAVNX]-[0-9ABCDEFGHJKMNPQRSTVWXYZ]{5}-[0-9ABCDEFGHJKMNPQRSTVWXYZ]{5}$"},
                        "starts_at": {"type": ["string", "null"], "format": "date-time", "description": "default (absent or null): now"},
                        "ends_at": {"type": "string", "format": "date-time"},
                        "reason": text
                    }
                })))
            },
            "/v1/silences/{id}/expire": {"post": expire},
            "/v1/models": {"get": op("Registered models", "models", "200")},
            "/v1/models/check": {"post": with_body(op("Check a model file against the catalog and contracts", "models", "200"), "text/plain", model_file.clone())},
            "/v1/models/register": {"post": with_body(op("Check and register a model file (audited). Every partner whose data the model reads must first have approved this exact text (POST /v1/models/{id}/approvals); otherwise 422 `model-unapproved` names the missing partners", "models", "201"), "text/plain", model_file.clone())},
            "/v1/models/run": {"post": run},
            "/v1/models/{id}/approvals": {"post": approve},
            "/v1/query": {"post": with_body(op("An aggregate query through the privacy gate (audited by digest)", "query", "200"), "application/json", closed(json!({"type": "object", "required": ["sql", "purpose"], "properties": {"sql": text, "purpose": {
                "type": "string", "minLength": 1, "maxLength": 64,
                "description": "a purpose code of privacy.toml: lowercase letters, digits and `-`, starting with a letter, never 11 or more digits in a row",
                "pattern": "^[a-z]([a-z-]|[0-9]{1,10}[a-z-])*[0-9]{0,10}$"
            }}})))},
            "/v1/contributions": {"post": with_body(op("Upload a sealed contribution (partners; same checks as `blindwatch ingest`)", "partners", "201"), "multipart/form-data", closed(json!({"type": "object", "required": ["manifest", "package"], "properties": {"manifest": {"type": "string", "format": "binary", "description": "the signed manifest (DSSE JSON), first; 422 `not-a-manifest` otherwise"}, "package": {"type": "string", "format": "binary", "description": "the sealed Parquet file, at most its manifest's size"}}})))}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
                }
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": text, "title": text, "status": {"type": "integer"}, "detail": text,
                        "rule": {"type": "string", "description": "the policy or gate rule that refused"},
                        "retry_after": {"type": "integer", "minimum": 1, "description": "seconds to wait before trying again (also the Retry-After header)"}
                    }
                }
            }
        }
    })
}

pub async fn document() -> Json<Value> {
    Json(spec())
}
