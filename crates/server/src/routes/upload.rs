//! `POST /v1/contributions`: a partner uploads a sealed package (multipart: `manifest`, the
//! signed manifest JSON, and `package`, the encrypted Parquet file). The same checks and
//! refusals as `blindwatch ingest`, after the access policies let this partner contribute
//! to the dataset the manifest names.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use blindwatch_access::{Action, Context, Resource};
use blindwatch_contract::ContractSet;
use blindwatch_crypto::manifest::Manifest;
use blindwatch_crypto::sign::Envelope;
use blindwatch_ingest::{IngestError, Ingestor};
use tokio::io::AsyncWriteExt;

use blindwatch_audit::{AuditEvent, AuditRecord, ReasonCode};

use crate::auth::{Caller, audit_principal};
use crate::problem::Problem;
use crate::state::AppState;
use crate::users::User;

/// Manifests are small; anything bigger is not one.
const MAX_MANIFEST_BYTES: usize = 1024 * 1024;

#[derive(serde::Serialize)]
pub struct Accepted {
    table: String,
    sequence: u64,
    rows: u64,
    contribution: i64,
}

/// A staging directory under the data directory's `tmp/`, removed whatever happens.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bad(detail: impl Into<String>) -> Problem {
    Problem::bad_request(detail)
}

/// A multipart read that failed: over the upload limit (413, enforced as the body streams
/// in) or too slow (408) as such, anything else as a bad request about `what`.
fn part_error(e: &MultipartError, what: &str) -> Problem {
    Problem::from_body_error(e, e.status()).unwrap_or_else(|| {
        bad(format!(
            "{what}: the upload is not valid multipart/form-data"
        ))
    })
}

pub async fn upload(
    State(state): State<AppState>,
    Caller(user): Caller,
    form: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Accepted>), Problem> {
    let refuse = |p: Problem| {
        state
            .metrics
            .uploads_refused
            .fetch_add(1, Ordering::Relaxed);
        p
    };
    let staging = Staging(state.dir.tmp_dir().join(format!("upload-{}", uuid_like())));
    std::fs::create_dir_all(&staging.0).map_err(|e| Problem::internal(&e))?;
    let manifest_path = match receive(&state, &user, form, &staging.0).await {
        Ok(p) => p,
        Err(problem) => {
            // Refused before ingest saw it: audited here (ingest audits its own outcomes).
            let principal = audit_principal(&user)?;
            let rule = problem.rule.clone().unwrap_or_else(|| {
                problem
                    .kind
                    .strip_prefix("/problems/")
                    .unwrap_or("internal")
                    .to_owned()
            });
            let code = |c: &str| ReasonCode::new(c).map_err(|e| Problem::internal(&e));
            state
                .audit(vec![AuditRecord::now(
                    principal.clone(),
                    AuditEvent::RequestRefused {
                        principal,
                        action: code("contribute")?,
                        rule: code(&rule)?,
                    },
                )])
                .await?;
            return Err(refuse(problem));
        }
    };

    let _writer = state.writer.lock().await;
    let contracts =
        ContractSet::load_dir(&state.dir.contracts_dir()).map_err(|e| Problem::internal(&e))?;
    let ingestor = Ingestor::new(
        state.dir.clone(),
        state.catalog.clone(),
        contracts,
        state.platform_key.clone(),
    );
    // The work (copy, hash, check every page, commit to the catalog) on a blocking thread,
    // off the async workers and without the audit log; the log is held only to append.
    let runtime = tokio::runtime::Handle::current();
    let checked = tokio::task::spawn_blocking(move || {
        runtime.block_on(ingestor.check_and_store_unaudited(&manifest_path))
    })
    .await
    .map_err(|e| Problem::internal(&e))?;
    let mut audit = state.audit.lock().await;
    let outcome = checked.audit(&mut audit);
    let checkpoint = audit.checkpoint();
    drop(audit);
    if let Err(e) = checkpoint {
        tracing::error!(error = %e, "audit checkpoint after an upload failed");
    }
    match outcome {
        Ok(a) => {
            state
                .metrics
                .uploads_accepted
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(table = %a.table, sequence = a.sequence, rows = a.rows, "contribution accepted");
            Ok((
                StatusCode::CREATED,
                Json(Accepted {
                    table: a.table,
                    sequence: a.sequence,
                    rows: a.rows,
                    contribution: a.contribution_id,
                }),
            ))
        }
        Err(e) => Err(refuse(ingest_problem(&e))),
    }
}

/// Receives the two parts into `staging`, the manifest first and the package never past the
/// size the manifest declares; returns the manifest's path.
async fn receive(
    state: &AppState,
    user: &User,
    form: Result<Multipart, MultipartRejection>,
    staging: &Path,
) -> Result<PathBuf, Problem> {
    let mut form = form.map_err(|e| {
        Problem::bad_request(format!(
            "send the package as multipart/form-data with parts `manifest` and `package`: {e}"
        ))
    })?;

    // The manifest must come first: nothing of the package is written before the caller is
    // known to be allowed to contribute to the dataset it names.
    let mut manifest: Option<(Vec<u8>, Manifest)> = None;
    let mut package: Option<PathBuf> = None;
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| part_error(&e, "reading the next part"))?
    {
        let duplicate = match field.name() {
            Some("manifest") => manifest.is_some(),
            Some("package") => package.is_some(),
            _ => false,
        };
        if duplicate {
            return Err(bad(
                "send exactly one `manifest` part and one `package` part",
            ));
        }
        match field.name() {
            Some("manifest") => {
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| part_error(&e, "reading the manifest part"))?;
                if bytes.len() > MAX_MANIFEST_BYTES {
                    return Err(bad(
                        "the manifest part is larger than 1 MiB; it is not a manifest",
                    ));
                }
                // A part of the documented shape whose content is not a manifest: 422.
                let not_manifest = |detail: String| {
                    Problem::unprocessable("not-a-manifest", detail).with_rule("not-a-manifest")
                };
                let envelope = Envelope::from_json(&bytes).map_err(|e| {
                    not_manifest(format!("the manifest part is not a signed manifest: {e}"))
                })?;
                let claimed = Manifest::peek_unverified(&envelope).ok_or_else(|| {
                    not_manifest("the manifest part is not a signed manifest".into())
                })?;
                let resource = Resource::Dataset {
                    name: claimed.table_name(),
                    partner: claimed.partner.clone(),
                };
                state.authorize(user, Action::Contribute, &resource, &Context::default())?;
                manifest = Some((bytes.to_vec(), claimed));
            }
            Some("package") => {
                let Some((_, claimed)) = &manifest else {
                    // Part order is not something the API description can say: 422.
                    return Err(Problem::unprocessable(
                        "manifest-first",
                        "send the `manifest` part before the `package` part",
                    )
                    .with_rule("manifest-first"));
                };
                let declared = claimed.file_bytes;
                // The platform names files; a name in the manifest never reaches the disk.
                let path = staging.join("package.parquet");
                let mut written = 0u64;
                let mut file = tokio::fs::File::create(&path)
                    .await
                    .map_err(|e| Problem::internal(&e))?;
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| part_error(&e, "reading the package part"))?
                {
                    written += chunk.len() as u64;
                    if written > declared {
                        return Err(Problem::unprocessable(
                            "bad-file-size",
                            "the package part is larger than its manifest declares; nothing was stored",
                        )
                        .with_rule("bad-file-size"));
                    }
                    file.write_all(&chunk)
                        .await
                        .map_err(|e| Problem::internal(&e))?;
                }
                file.sync_all().await.map_err(|e| Problem::internal(&e))?;
                package = Some(path);
            }
            _ => {
                return Err(bad(
                    "unexpected part: send exactly `manifest` (the signed manifest JSON) and `package` (the Parquet file)",
                ));
            }
        }
    }
    let (Some((manifest_bytes, _)), Some(package)) = (manifest, package) else {
        return Err(bad(
            "an upload has two parts: `manifest` (the signed manifest JSON) and `package` (the Parquet file)",
        ));
    };
    let manifest_path = package.with_file_name("package.manifest.json");
    tokio::fs::write(&manifest_path, &manifest_bytes)
        .await
        .map_err(|e| Problem::internal(&e))?;
    Ok(manifest_path)
}

fn ingest_problem(e: &IngestError) -> Problem {
    let status = match e {
        IngestError::Storage(_) => return Problem::internal(e),
        IngestError::Sequence(_) | IngestError::Tokens(_) => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    Problem::new(
        status,
        e.reason_code(),
        format!("refused; nothing was stored: {e}"),
    )
    .with_rule(e.reason_code())
}

/// A unique name for a staging directory (not a secret).
fn uuid_like() -> String {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
