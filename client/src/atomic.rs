//! Files written whole or not at all: a temporary file next to the target, synced, then renamed
//! over it. podman reads hook files and `containers.conf` at every container start; a reader must
//! never see half a file.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What [`write_if_changed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The file did not exist.
    Created,
    /// The file had other content.
    Replaced,
    /// The file already held exactly this content: not touched.
    Unchanged,
}

/// Writes `content` to `path` atomically with permissions `mode` (the permissions of the file
/// it replaces win, so a user's `chmod` survives).
pub fn write(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mode = match fs::metadata(path) {
        Ok(existing) => existing.permissions().mode() & 0o7777,
        Err(_) => mode,
    };
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".tmp-{}", std::process::id()));
    let temporary = dir.join(temporary_name);
    let result = write_then_rename(&temporary, path, content, mode);
    if result.is_err() {
        // Best effort: the temporary file is ours and useless after a failure.
        let _ = fs::remove_file(&temporary);
    }
    result?;
    // The rename is durable once the directory is synced; failing to sync is not worth an error.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn write_then_rename(temporary: &Path, path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(temporary)?;
    file.write_all(content)?;
    // The umask may have narrowed `mode` at creation: set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.sync_all()?;
    fs::rename(temporary, path)
}

/// Writes `content` unless `path` already holds exactly it.
pub fn write_if_changed(path: &Path, content: &[u8], mode: u32) -> io::Result<Written> {
    let outcome = match fs::read(path) {
        Ok(existing) if existing == content => return Ok(Written::Unchanged),
        Ok(_) => Written::Replaced,
        Err(error) if error.kind() == io::ErrorKind::NotFound => Written::Created,
        Err(error) => return Err(error),
    };
    write(path, content, mode)?;
    Ok(outcome)
}

/// Creates `dir` and its missing parents with `mode`; returns the directories it created,
/// outermost first, so that an undo can remove exactly those.
pub fn create_dirs(dir: &Path, mode: u32) -> io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(path) = cursor {
        if path.as_os_str().is_empty() || path.exists() {
            break;
        }
        missing.push(path.to_path_buf());
        cursor = path.parent();
    }
    missing.reverse();
    let mut created = Vec::new();
    for path in missing {
        match DirBuilder::new().mode(mode).create(&path) {
            Ok(()) => created.push(path),
            // Someone else made it meanwhile: it is not ours to remove later.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn write_creates_replaces_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        assert_eq!(
            write_if_changed(&path, b"one", 0o644).unwrap(),
            Written::Created
        );
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        assert_eq!(
            write_if_changed(&path, b"one", 0o644).unwrap(),
            Written::Unchanged
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            write_if_changed(&path, b"two", 0o644).unwrap(),
            Written::Replaced
        );
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn write_into_a_missing_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("f");
        assert!(write(&path, b"x", 0o644).is_err());
    }

    #[test]
    fn create_dirs_reports_only_what_it_made() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a").join("b").join("c");
        let created = create_dirs(&deep, 0o755).unwrap();
        assert_eq!(
            created,
            vec![
                dir.path().join("a"),
                dir.path().join("a/b"),
                dir.path().join("a/b/c")
            ]
        );
        assert!(deep.is_dir());
        assert!(create_dirs(&deep, 0o755).unwrap().is_empty());
    }
}
