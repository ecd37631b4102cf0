//! TLS files on disk: read with errors that name the file, written crash-safely through
//! [`crate::fs_atomic`] with the modes TLS material needs (keys 0600, certificates 0644,
//! directories 0700), never overwriting what a command did not make.

use std::path::Path;

use crate::fs_atomic::{AtomicWrite, write_atomically};

use super::TlsError;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn read_bytes(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(io_error(path))
}

pub(super) fn read_text(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(io_error(path))
}

/// Whether `path` exists; unlike `Path::exists`, an unreadable directory is an error.
pub(super) fn path_exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(io_error(path))
}

pub(super) fn refuse_existing(paths: &[&Path]) -> Result<(), TlsError> {
    for path in paths {
        if path_exists(path)? {
            return Err(TlsError::Exists(path.to_path_buf()));
        }
    }
    Ok(())
}

/// Creates `dir` and its missing parents, mode 0700 (existing directories keep their mode).
pub(super) fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_error(dir))
}

/// How a TLS file is written: mode 0600 for keys, 0644 for certificates.
fn file_write(private: bool, replace: bool) -> AtomicWrite {
    AtomicWrite {
        mode: Some(if private { 0o600 } else { 0o644 }),
        owner: None,
        replace,
    }
}

/// Writes a new file (never overwriting, see [`crate::fs_atomic`]): complete or absent after a
/// crash, mode 0600 when `private`.
fn write_new(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    write_atomically(path, contents, file_write(private, false)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            TlsError::Exists(path.to_path_buf())
        } else {
            io_error(path)(e)
        }
    })
}

/// Writes a certificate and its key as new files. The key goes first and is removed again if
/// the certificate cannot be written, so a failed command leaves nothing that blocks a retry.
pub(super) fn write_new_pair(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<(), TlsError> {
    write_new(key_path, key_pem, true)?;
    if let Err(e) = write_new(cert_path, cert_pem, false) {
        // Best effort: the error that matters is the certificate's.
        let _ = std::fs::remove_file(key_path);
        return Err(e);
    }
    Ok(())
}

/// Replaces `path` atomically (see [`crate::fs_atomic`]), mode 0600 when `private`.
pub(super) fn replace_file(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    write_atomically(path, contents, file_write(private, true)).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs_atomic::names;

    #[test]
    fn a_pair_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("n.pem"), dir.path().join("n.key"));
        // The certificate's name was taken after the up-front check (another command).
        std::fs::write(&cert, b"someone else's").expect("write");
        let err = write_new_pair(&cert, b"cert", &key, b"key").expect_err("taken");
        assert!(
            matches!(err, TlsError::Exists(ref p) if p == &cert),
            "{err:?}"
        );
        assert_eq!(std::fs::read(&cert).expect("read"), b"someone else's");
        assert_eq!(names(dir.path()), ["n.pem"], "no key, no temporary file");

        std::fs::remove_file(&cert).expect("rm");
        write_new_pair(&cert, b"cert", &key, b"key").expect("written");
        assert_eq!(std::fs::read(&cert).expect("read"), b"cert");
        assert_eq!(std::fs::read(&key).expect("read"), b"key");
        assert_eq!(names(dir.path()), ["n.key", "n.pem"]);
    }
}
