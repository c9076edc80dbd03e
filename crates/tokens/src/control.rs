//! The running authority's control socket, `DIR/control.sock` (0600): how
//! `blindwatch audit checkpoint --data-dir DIR` signs a checkpoint while the authority holds
//! its audit log (one writer at a time, by the log's lock). Only the operator's account can
//! reach it; it takes one command, `checkpoint`, and answers `ok` and the checkpoint's text,
//! or `error: ` and a reason.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::{Authority, AuthorityDir, AuthorityError};

const COMMAND: &str = "checkpoint";

/// Binds the socket and answers on it until the task is aborted.
pub(crate) fn listen(
    authority: Arc<Authority>,
) -> Result<tokio::task::JoinHandle<()>, AuthorityError> {
    let path = authority.dir().control_socket();
    // A leftover of a process that died: this process holds the audit log's lock, so no
    // other authority serves this directory.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(AuthorityError::Io { path, source }),
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(|source| AuthorityError::Io {
        path: path.clone(),
        source,
    })?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|source| AuthorityError::Io { path, source })?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors and the like: wait instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let authority = authority.clone();
            tokio::spawn(async move {
                let answer = tokio::time::timeout(Duration::from_secs(10), async {
                    let mut line = String::new();
                    let mut reader = BufReader::new(stream);
                    (&mut reader).take(64).read_line(&mut line).await?;
                    let answer = if line.trim() == COMMAND {
                        match tokio::task::spawn_blocking(move || authority.checkpoint()).await {
                            Ok(Ok(text)) => format!("ok\n{text}"),
                            Ok(Err(e)) => format!("error: {e}\n"),
                            Err(_) => "error: the checkpoint task failed\n".to_owned(),
                        }
                    } else {
                        format!("error: unknown command; the only one is `{COMMAND}`\n")
                    };
                    reader.into_inner().write_all(answer.as_bytes()).await
                })
                .await;
                if !matches!(answer, Ok(Ok(()))) {
                    tracing::debug!("a control connection failed or timed out");
                }
            });
        }
    }))
}

/// Signs a checkpoint of the authority's audit log and returns its text: through the
/// running authority when there is one, else directly.
pub fn checkpoint(dir: &AuthorityDir) -> Result<String, AuthorityError> {
    let path = dir.control_socket();
    let control = |why: String| AuthorityError::Control {
        path: path.clone(),
        why,
    };
    match std::os::unix::net::UnixStream::connect(&path) {
        Ok(mut stream) => {
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .map_err(|e| control(e.to_string()))?;
            stream
                .write_all(format!("{COMMAND}\n").as_bytes())
                .map_err(|e| control(e.to_string()))?;
            let mut answer = String::new();
            stream
                .take(1 << 20)
                .read_to_string(&mut answer)
                .map_err(|e| control(e.to_string()))?;
            match answer.strip_prefix("ok\n") {
                Some(text) => Ok(text.to_owned()),
                None => Err(control(
                    answer
                        .strip_prefix("error: ")
                        .unwrap_or("no answer")
                        .trim()
                        .to_owned(),
                )),
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            // Not running: sign directly (the log's lock refuses if another process has it).
            let mut log = dir.open_audit_log()?;
            Ok(log.checkpoint()?.text().to_owned())
        }
        Err(e) => Err(control(e.to_string())),
    }
}
