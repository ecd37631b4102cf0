//! Crash-safe writes of small files (keys, certificates, tokens, rendered configs): a file is
//! either absent or complete under its name, never empty or cut short, whatever moment the
//! process or the machine dies at.
//!
//! # Steps
//!
//! 1. Create a temporary file in the target's own directory (a rename is atomic only within one
//!    file system), with its final mode from creation, so a secret is never readable by others,
//!    not even for a moment. Its name is unique (`.NAME.PID.N.tmp`): two writers never share
//!    one.
//! 2. Write the contents, give the file its owner if asked, and fsync it: the data is on disk
//!    before any name points to it.
//! 3. Put it under its name:
//!    - **replace**: `rename` over whatever is there (atomic: readers see the old or the new
//!      file). A symlink at the path is replaced itself, not followed.
//!    - **create new**: `hard_link` the temporary file to the name, then remove the temporary
//!      name. `link` fails when the name exists (any file, even a dangling symlink), so an
//!      existing file is never clobbered, atomically: no check-then-rename window in which
//!      another writer's file could be overwritten. On a file system without hard links, the
//!      only fallback is check-then-rename, which is taken there (the window only matters
//!      against a concurrent writer of the same private directory).
//! 4. fsync the directory, so the new name survives a power loss.
//!
//! On an error the temporary file is removed; a crash can leave one behind (a complete file
//! under a hidden `.tmp` name, as private as the real one), never a damaged real one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How [`write_atomically`] writes a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtomicWrite {
    /// The Unix permission bits of the file (`0o777` at most), set from its creation and
    /// exactly, whatever the umask (ignored elsewhere). `None`: the default for new files
    /// (0666 less the umask).
    pub mode: Option<u32>,
    /// The Unix owner and group to give the file before it appears under its name (e.g. an
    /// agent running as root keeping an operator's ownership). When the writer may not give it
    /// (not root, not a member of the group), the file keeps the writer's and a warning is
    /// logged. `None`: the writer's.
    pub owner: Option<(u32, u32)>,
    /// Whether an existing file at the path is replaced; when false the write fails with
    /// [`std::io::ErrorKind::AlreadyExists`] and changes nothing.
    pub replace: bool,
}

impl AtomicWrite {
    /// A new secret: mode 0600, never replacing an existing file.
    pub const PRIVATE_NEW: AtomicWrite = AtomicWrite {
        mode: Some(0o600),
        owner: None,
        replace: false,
    };
}

/// Writes a new file readable only by its owner (mode 0600), crash-safely (see the module):
/// after a crash the file is absent or complete. Fails with
/// [`std::io::ErrorKind::AlreadyExists`], changing nothing, when `path` exists. This is how
/// the node writes its admin token and TLS keys.
pub fn write_private_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_atomically(path, contents, AtomicWrite::PRIVATE_NEW)
}

/// Writes `contents` to `path` crash-safely (see the module), as `how` says.
pub fn write_atomically(path: &Path, contents: &[u8], how: AtomicWrite) -> std::io::Result<()> {
    let dir = parent_dir(path);
    let (tmp, file) = create_temp(&dir, path, how.mode)?;
    let placed = (|| {
        fill(file, contents, how)?;
        if how.replace {
            std::fs::rename(&tmp, path)
        } else {
            link_new(&tmp, path)
        }
    })();
    // After a rename the temporary name is gone; after a link (or a failure) it is removed.
    // Best effort: the outcome that matters is the real file's.
    if !how.replace || placed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    placed?;
    sync_dir(&dir)
}

/// The directory `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates a fresh, uniquely named temporary file next to `path`, mode `mode`.
fn create_temp(
    dir: &Path,
    path: &Path,
    mode: Option<u32>,
) -> std::io::Result<(PathBuf, std::fs::File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    let mut last = None;
    // A name can only be taken by a leftover of a crashed process that had the same pid.
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if let Some(mode) = mode {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        match options.open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary file name")))
}

/// Writes, sets mode and owner, and fsyncs the temporary file.
fn fill(mut file: std::fs::File, contents: &[u8], how: AtomicWrite) -> std::io::Result<()> {
    file.write_all(contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // Owner first: a chown may clear mode bits.
        if let Some((uid, gid)) = how.owner {
            let meta = file.metadata()?;
            if (meta.uid(), meta.gid()) != (uid, gid)
                && let Err(e) = std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            {
                tracing::warn!(uid, gid, error = %e, "cannot keep the file's owner; it gets the writer's");
            }
        }
        // The umask may have taken bits off the creation mode; a kept mode must be exact.
        if let Some(mode) = how.mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
        }
    }
    file.sync_all()
}

/// Gives `tmp` the name `path` only when `path` does not exist (see the module, step 3).
fn link_new(tmp: &Path, path: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        // No hard links here (EPERM or unsupported): check, then rename.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::Unsupported
            ) =>
        {
            if path.symlink_metadata().is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} already exists", path.display()),
                ));
            }
            std::fs::rename(tmp, path)
        }
        Err(e) => Err(e),
    }
}

/// Makes the names changed in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Every name in `dir`, sorted: tests check that no temp file is left behind.
#[cfg(test)]
pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_private_file_is_complete_private_and_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.token");
        write_private_atomically(&path, b"secret\n").expect("written");
        assert_eq!(std::fs::read(&path).expect("read"), b"secret\n");
        assert_eq!(names(dir.path()), ["admin.token"], "no temporary file left");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn create_new_never_clobbers_anything_at_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.key");
        std::fs::write(&path, b"the operator's").expect("write");
        let e = write_private_atomically(&path, b"new").expect_err("exists");
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).expect("read"), b"the operator's");
        assert_eq!(
            names(dir.path()),
            ["ca.key"],
            "the temporary file is removed"
        );
        #[cfg(unix)]
        {
            // Not even through a dangling symlink (which `exists()` would call absent).
            let link = dir.path().join("dangling");
            std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).expect("symlink");
            let e = write_private_atomically(&link, b"new").expect_err("exists");
            assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
            assert!(
                !dir.path().join("nowhere").exists(),
                "nothing written through it"
            );
        }
    }

    #[test]
    fn replace_swaps_the_whole_file_with_the_asked_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.pem");
        std::fs::write(&path, b"old contents, longer than the new").expect("write");
        let how = AtomicWrite {
            mode: Some(0o640),
            owner: None,
            replace: true,
        };
        write_atomically(&path, b"new", how).expect("replaced");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        assert_eq!(names(dir.path()), ["node.pem"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o640, "exact, whatever the umask");
        }
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Replacing a directory fails at the rename, after the temporary file was written.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).expect("dir");
        std::fs::write(path.join("inside"), b"x").expect("write");
        let how = AtomicWrite {
            mode: Some(0o600),
            owner: None,
            replace: true,
        };
        assert!(write_atomically(&path, b"new", how).is_err());
        assert_eq!(
            names(dir.path()),
            ["taken"],
            "the temporary file is removed"
        );
        // A directory that does not exist: nothing is created anywhere.
        assert!(write_private_atomically(&dir.path().join("no/such/file"), b"x").is_err());
        assert_eq!(names(dir.path()), ["taken"]);
    }
}
