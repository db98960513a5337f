//! Exit codes and the error type every command returns.

use std::fmt;
use std::process::ExitCode;

/// Everything went well (or: the child exited 0).
pub(crate) const OK: u8 = 0;
/// Bad command line or input: an unknown flag, a missing command, a bad URL, name or duration.
/// (clap's own code for usage errors.)
pub(crate) const USAGE: u8 = 2;
/// The lock, permit or leadership was not granted: `--try` found it held, or `--wait` ran out.
pub(crate) const NOT_ACQUIRED: u8 = 75;
/// The lock, permit or leadership was lost while the command ran; the command was stopped.
pub(crate) const LOST: u8 = 76;
/// `event tail`: the start asked for (or the next event of a reader that fell behind) was
/// already dropped by the topic's retention (sysexits' `EX_DATAERR`).
pub(crate) const TRUNCATED: u8 = 65;
/// The backend could not be reached (or refused our TLS or credentials).
pub(crate) const UNAVAILABLE: u8 = 69;
/// Something else failed inside syncctl.
pub(crate) const INTERNAL: u8 = 70;
/// The command could not be started: not executable.
pub(crate) const CANNOT_EXECUTE: u8 = 126;
/// The command could not be started: not found.
pub(crate) const NOT_FOUND: u8 = 127;

/// A failure with its exit code and message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, message)
    }

    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<sync_lock::Error> for Failure {
    fn from(e: sync_lock::Error) -> Self {
        use sync_lock::Error as E;
        let code = match &e {
            E::InvalidName { .. }
            | E::InvalidOptions { .. }
            | E::Config(_)
            | E::PermitsMismatch { .. } => USAGE,
            E::Timeout { .. } => NOT_ACQUIRED,
            E::Lost { .. } => LOST,
            E::Connect { .. } | E::Backend { .. } => UNAVAILABLE,
            _ => INTERNAL,
        };
        Failure::new(code, full_message(&e))
    }
}

impl From<sync_leader::Error> for Failure {
    fn from(e: sync_leader::Error) -> Self {
        use sync_leader::Error as E;
        let code = match &e {
            E::InvalidName { .. } | E::InvalidOptions { .. } | E::Config(_) => USAGE,
            E::Timeout { .. } => NOT_ACQUIRED,
            E::Lost { .. } | E::NotLeader { .. } => LOST,
            E::Connect { .. } | E::Backend { .. } => UNAVAILABLE,
            _ => INTERNAL,
        };
        Failure::new(code, full_message(&e))
    }
}

impl From<sync_time::Error> for Failure {
    fn from(e: sync_time::Error) -> Self {
        let code = if matches!(e, sync_time::Error::InvalidConfig { .. }) {
            USAGE
        } else {
            UNAVAILABLE
        };
        Failure::new(code, full_message(&e))
    }
}

impl From<sync_event::Error> for Failure {
    fn from(e: sync_event::Error) -> Self {
        use sync_event::Error as E;
        match &e {
            E::Truncated {
                first_available, ..
            } => Failure::new(
                TRUNCATED,
                format!(
                    "{}; to accept the loss, tail from --from {first_available} (or --from earliest)",
                    full_message(&e)
                ),
            ),
            E::InvalidName { .. }
            | E::InvalidOptions { .. }
            | E::Config(_)
            | E::TooLarge { .. }
            | E::BadPayload { .. } => Failure::new(USAGE, full_message(&e)),
            E::Unavailable { .. } => Failure::new(UNAVAILABLE, full_message(&e)),
            _ => Failure::new(INTERNAL, full_message(&e)),
        }
    }
}

/// The error and its chain of sources, `: `-separated (skipping a source its parent already
/// quotes).
pub(crate) fn full_message(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The exit code for a child that ended with `status`: its code, or 128 + the signal that
/// killed it.
pub(crate) fn child_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(sig)) => (128 + sig).min(255) as u8,
        _ => INTERNAL,
    }
}
