//! Loading the cluster key: the secret every node of a cluster holds and no client does
//! (docs/security.md). Peers prove it on every node-to-node connection
//! ([`cfgnode_transport::dial_handshake`]).
//!
//! Where it comes from, in order:
//! 1. `--cluster-key-file F`: the operator's copy (the same file on every node).
//! 2. `<data-dir>/cluster.key`, kept from an earlier start.
//! 3. Neither, and no `--join`: this is the first node of a new cluster; a fresh key is written
//!    to `<data-dir>/cluster.key` (mode 0600) for the operator to copy to the other nodes.
//!
//! A node told to `--join` without a key refuses to start: it could not prove anything to the
//! cluster, and a key it made up would only make it a stranger.

use std::path::{Path, PathBuf};

use cfgnode_transport::ClusterKey;

use crate::error::NodeError;

/// File name of the cluster key inside the data dir.
pub const CLUSTER_KEY_FILE: &str = "cluster.key";

/// Where the cluster key came from, for the startup log line (the key itself is never logged).
#[derive(Clone, Debug)]
pub struct KeySource {
    /// The file holding the key.
    pub path: PathBuf,
    /// True when this start created it (the first node of a new cluster).
    pub created: bool,
}

/// Loads (or, for the first node of a new cluster, creates) the cluster key; see the module
/// docs for the order.
pub fn load_cluster_key(
    data_dir: &Path,
    key_file: Option<&Path>,
    joining: bool,
) -> Result<(ClusterKey, KeySource), NodeError> {
    if let Some(path) = key_file {
        let key = read_key(path)?;
        let source = KeySource {
            path: path.to_path_buf(),
            created: false,
        };
        return Ok((key, source));
    }
    let path = data_dir.join(CLUSTER_KEY_FILE);
    if path.exists() {
        let key = read_key(&path)?;
        return Ok((
            key,
            KeySource {
                path,
                created: false,
            },
        ));
    }
    if joining {
        return Err(NodeError::Config(format!(
            "--join needs the cluster's key: copy {CLUSTER_KEY_FILE} from the data dir of a member (or the file its operator passed with --cluster-key-file) and start with --cluster-key-file FILE"
        )));
    }
    let key = ClusterKey::generate().map_err(NodeError::Config)?;
    let mut text = key.to_hex();
    text.push('\n');
    crate::auth::write_private_file(&path, text.as_bytes(), "cluster key")?;
    Ok((
        key,
        KeySource {
            path,
            created: true,
        },
    ))
}

fn read_key(path: &Path) -> Result<ClusterKey, NodeError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        NodeError::Config(format!(
            "cannot read the cluster key file {}: {e}",
            path.display()
        ))
    })?;
    ClusterKey::parse(&text)
        .map_err(|e| NodeError::Config(format!("the cluster key file {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_node_creates_a_private_key_and_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, source) = load_cluster_key(dir.path(), None, false).expect("created");
        assert!(source.created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&source.path)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, source) = load_cluster_key(dir.path(), None, true).expect("kept");
        assert_eq!(again, key);
        assert!(!source.created);
    }

    #[test]
    fn joining_without_a_key_is_refused_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load_cluster_key(dir.path(), None, true).expect_err("no key");
        assert!(err.to_string().contains("--cluster-key-file"), "{err}");
        assert!(!dir.path().join(CLUSTER_KEY_FILE).exists());
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not a key").expect("write");
        let err = load_cluster_key(dir.path(), Some(&bad), true).expect_err("bad");
        assert!(err.to_string().contains("bad.key"), "{err}");
        let good = dir.path().join("good.key");
        let key = ClusterKey::generate().expect("random");
        std::fs::write(&good, key.to_hex()).expect("write");
        let (loaded, _) = load_cluster_key(dir.path(), Some(&good), true).expect("loads");
        assert_eq!(loaded, key);
    }
}
