//! Crash-safe file writes: write to a temporary file in the target directory, fsync it,
//! rename it into place, fsync the directory. A crash leaves either the old state or the
//! new one, never half a file.

use std::io::{self, Write};
use std::path::Path;

/// A temporary file beside `target`, to be filled and then [`persist`]ed.
pub fn temp_beside(target: &Path) -> io::Result<tempfile::NamedTempFile> {
    let dir = parent_of(target);
    std::fs::create_dir_all(dir)?;
    tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)
}

/// Fsyncs `tmp`, renames it to `target` (refusing to replace an existing file) and fsyncs
/// the directory.
pub fn persist(tmp: tempfile::NamedTempFile, target: &Path) -> io::Result<()> {
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(target).map_err(|e| e.error)?;
    sync_dir(parent_of(target))
}

/// Writes `bytes` to `target` crash-safely; refuses to replace an existing file.
pub fn write_new(target: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = temp_beside(target)?;
    tmp.write_all(bytes)?;
    persist(tmp, target)
}

/// Replaces `target` crash-safely.
pub fn replace(target: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = temp_beside(target)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(target).map_err(|e| e.error)?;
    sync_dir(parent_of(target))
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}
