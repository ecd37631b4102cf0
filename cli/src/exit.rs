//! Exit codes and the CLI's error type.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | error (unreachable node, server error, bad file, ...) |
//! | 2 | usage error (bad flag or argument) |
//! | 3 | not found (key, namespace, alias, version) |
//! | 4 | conflict (create on existing, update on missing, version mismatch, name taken) |

use std::process::ExitCode;

use cfgnode_client::ClientError;

/// Success.
pub const OK: u8 = 0;
/// Any other error.
pub const ERROR: u8 = 1;
/// Usage error.
pub const USAGE: u8 = 2;
/// Not found.
pub const NOT_FOUND: u8 = 3;
/// Conflict.
pub const CONFLICT: u8 = 4;

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl CliError {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: USAGE,
            message: message.into(),
        }
    }

    /// A general error (exit 1).
    pub fn other(message: impl Into<String>) -> Self {
        CliError {
            code: ERROR,
            message: message.into(),
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        let code = match e {
            ClientError::NotFound { .. } => NOT_FOUND,
            ClientError::Conflict { .. } => CONFLICT,
            _ => ERROR,
        };
        CliError {
            code,
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::other(format!("{e:#}"))
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::other(e.to_string())
    }
}
