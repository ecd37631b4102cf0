//! Bearer-token authentication for the HTTP admin port.
//!
//! The node's admin token lives in `<data-dir>/admin.token` (mode 0600), created on first start,
//! or comes from a file the operator names (so a cluster can share one token). The token is never
//! logged; only its path is.

use std::io::Write;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

use crate::error::NodeError;

/// File name of the generated admin token inside the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Shortest token accepted from an operator's file: shorter ones are guessable.
const MIN_TOKEN_LEN: usize = 16;

/// What a caller's token allows in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// May read entries, history, snapshots.
    pub read: bool,
    /// May write, delete, manage aliases.
    pub write: bool,
}

/// Who a request authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The holder of the admin token: may do everything everywhere.
    Admin,
}

impl Principal {
    /// What this principal may do in `namespace`.
    pub fn access(&self, _namespace: &str) -> Access {
        match self {
            Principal::Admin => Access {
                read: true,
                write: true,
            },
        }
    }

    /// A short name for the principal, safe to show and log, and what a forwarding node sends
    /// in place of the caller's token.
    pub fn name(&self) -> &'static str {
        match self {
            Principal::Admin => "admin",
        }
    }

    /// The principal named `name` (by [`Principal::name`]), for requests a peer forwards.
    pub fn from_name(name: &str) -> Option<Principal> {
        (name == "admin").then_some(Principal::Admin)
    }
}

/// Checks bearer tokens against the node's admin token.
#[derive(Clone)]
pub struct TokenVerifier {
    admin: String,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenVerifier { admin: <redacted> }")
    }
}

impl TokenVerifier {
    /// A verifier that accepts exactly `admin`.
    pub fn new(admin: String) -> Self {
        TokenVerifier { admin }
    }

    /// Who `token` authenticates as, if anyone. Compares in constant time.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        let matches: bool = self.admin.as_bytes().ct_eq(token.as_bytes()).into();
        matches.then_some(Principal::Admin)
    }
}

/// Where the admin token came from, for the startup log line.
#[derive(Clone, Debug)]
pub struct TokenSource {
    /// The file holding the token.
    pub path: PathBuf,
    /// True when this start created the file.
    pub created: bool,
}

/// Loads the admin token: from `token_file` when given, else from `<data_dir>/admin.token`,
/// creating that file with a fresh random token (mode 0600) on first start.
pub fn load_admin_token(
    data_dir: &Path,
    token_file: Option<&Path>,
) -> Result<(String, TokenSource), NodeError> {
    if let Some(path) = token_file {
        let token = read_token(path)?;
        return Ok((
            token,
            TokenSource {
                path: path.to_path_buf(),
                created: false,
            },
        ));
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        let token = read_token(&path)?;
        return Ok((
            token,
            TokenSource {
                path,
                created: false,
            },
        ));
    }
    let token = generate_token()?;
    let mut text = token.clone();
    text.push('\n');
    write_private_file(&path, text.as_bytes(), "token")?;
    Ok((
        token,
        TokenSource {
            path,
            created: true,
        },
    ))
}

fn read_token(path: &Path) -> Result<String, NodeError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        NodeError::Config(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    let token = text.trim().to_string();
    if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(NodeError::Config(format!(
            "the token in {} must be at least {MIN_TOKEN_LEN} printable ASCII characters without spaces",
            path.display()
        )));
    }
    Ok(token)
}

/// A 256-bit random token, hex encoded.
pub fn generate_token() -> Result<String, NodeError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| NodeError::Config(format!("no randomness from the OS: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `contents` to a new file readable only by its owner (`what` names it in errors).
pub(crate) fn write_private_file(
    path: &Path,
    contents: &[u8],
    what: &str,
) -> Result<(), NodeError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let fail = |e: std::io::Error| {
        NodeError::Config(format!(
            "cannot write the {what} file {}: {e}",
            path.display()
        ))
    };
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(contents).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_once_private_and_verified() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (token, source) = load_admin_token(dir.path(), None).expect("created");
        assert!(source.created);
        assert_eq!(token.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&source.path)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, source) = load_admin_token(dir.path(), None).expect("loaded");
        assert_eq!(again, token);
        assert!(!source.created);
        let verifier = TokenVerifier::new(token.clone());
        assert_eq!(verifier.verify(&token), Some(Principal::Admin));
        assert_eq!(verifier.verify("wrong"), None);
        assert_eq!(verifier.verify(""), None);
    }

    #[test]
    fn operator_token_file_must_be_strong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let weak = dir.path().join("weak");
        std::fs::write(&weak, "short\n").expect("write");
        assert!(load_admin_token(dir.path(), Some(&weak)).is_err());
        let good = dir.path().join("good");
        std::fs::write(&good, "0123456789abcdef-shared\n").expect("write");
        let (token, _) = load_admin_token(dir.path(), Some(&good)).expect("loads");
        assert_eq!(token, "0123456789abcdef-shared");
    }
}
