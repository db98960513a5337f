//! From one sync's outcomes to the agreed interval: which servers answered, whether enough of
//! them agree (a majority of the configured servers, or `min_agreeing`), and what became of
//! each (for the status).

use std::sync::Arc;

use super::query::{Answer, ServerOutcome};
use super::selection::{intersect, Interval, Sample};
use crate::{Error, ServerFailure, SourceStatus, SourceVerdict};

/// What one sync's outcomes come to: per server what became of it, and the agreed interval
/// (offsets from the anchor clock) with how many servers overlap it, or why there is none.
#[derive(Debug)]
pub(crate) struct Selection {
    pub(crate) sources: Vec<SourceStatus>,
    pub(crate) result: Result<(Interval, usize), SyncFailure>,
}

/// Why a sync produced no new clock. Kept apart from [`Error`] because it goes both to the
/// caller and into the status, and `Error` is not `Clone`.
#[derive(Debug)]
pub(crate) enum SyncFailure {
    Unreachable(Vec<(String, Arc<Error>)>),
    Quorum {
        required: usize,
        configured: usize,
        answered: Vec<String>,
        failures: Vec<(String, Arc<Error>)>,
    },
    Disagreement(Vec<String>),
}

impl SyncFailure {
    pub(crate) fn to_error(&self) -> Error {
        let failures = |list: &[(String, Arc<Error>)]| {
            list.iter()
                .map(|(s, e)| ServerFailure::new(s.clone(), e.clone()))
                .collect()
        };
        match self {
            SyncFailure::Unreachable(list) => Error::NoServerReachable {
                failures: failures(list),
            },
            SyncFailure::Quorum {
                required,
                configured,
                answered,
                failures: list,
            } => Error::NoQuorum {
                required: *required,
                configured: *configured,
                answered: answered.clone(),
                failures: failures(list),
            },
            SyncFailure::Disagreement(servers) => Error::NoAgreement {
                servers: servers.clone(),
            },
        }
    }
}

/// From the servers' outcomes (one per distinct configured server) to the agreed interval:
/// at least `required` servers, and a majority of those that answered, must overlap it.
pub(crate) fn select(outcomes: &[ServerOutcome], drift_ppm: u32, required: usize) -> Selection {
    // (index in `outcomes`, best sample) of each server that answered.
    let answered: Vec<(usize, Sample)> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o.answer {
            Answer::Sampled(s, _) => Some((i, s)),
            _ => None,
        })
        .collect();
    let intervals: Vec<Interval> = answered
        .iter()
        .map(|(_, s)| s.interval(drift_ppm))
        .collect();
    let agreement = intersect(&intervals, required);

    let mut chimers = agreement
        .as_ref()
        .map(|a| a.truechimers.clone())
        .unwrap_or_default()
        .into_iter();
    let sources: Vec<SourceStatus> = outcomes
        .iter()
        .map(|o| SourceStatus {
            name: o.name.clone(),
            address: o.address,
            verdict: match &o.answer {
                Answer::Failed(e) => SourceVerdict::Failed(e.clone()),
                Answer::KissedOff { code, retry_in, .. } => SourceVerdict::KissedOff {
                    code: code.clone(),
                    retry_in: *retry_in,
                },
                Answer::Duplicate { of } => SourceVerdict::Duplicate { of: of.clone() },
                Answer::Sampled(sample, count) => {
                    if chimers.next().unwrap_or(false) {
                        SourceVerdict::Selected {
                            offset_nanos: sample.offset_nanos,
                            delay: sample.delay,
                            error: sample.error(drift_ppm),
                            samples: *count,
                        }
                    } else {
                        SourceVerdict::FalseTicker {
                            offset_nanos: sample.offset_nanos,
                            delay: sample.delay,
                            error: sample.error(drift_ppm),
                        }
                    }
                }
            },
        })
        .collect();

    let described = |list: &[(usize, Sample)]| -> Vec<String> {
        list.iter()
            .map(|(i, s)| {
                format!(
                    "{} ({:+.3} ms ± {:.3} ms)",
                    outcomes[*i].name,
                    s.offset_nanos as f64 / 1e6,
                    s.error(drift_ppm).as_secs_f64() * 1e3
                )
            })
            .collect()
    };
    let failures: Vec<(String, Arc<Error>)> = outcomes
        .iter()
        .filter_map(|o| match &o.answer {
            Answer::Failed(e) | Answer::KissedOff { error: e, .. } => {
                Some((o.name.clone(), e.clone()))
            }
            Answer::Sampled(..) | Answer::Duplicate { .. } => None,
        })
        .collect();
    let result = if answered.is_empty() {
        Err(SyncFailure::Unreachable(failures))
    } else if answered.len() < required {
        Err(SyncFailure::Quorum {
            required,
            configured: outcomes.len(),
            answered: described(&answered),
            failures,
        })
    } else {
        match agreement {
            None => Err(SyncFailure::Disagreement(described(&answered))),
            Some(a) => {
                for (k, chimer) in a.truechimers.iter().enumerate() {
                    if !chimer {
                        tracing::warn!(
                            server = %outcomes[answered[k].0].name,
                            offset_ns = answered[k].1.offset_nanos,
                            "NTP server rejected as a false ticker"
                        );
                    }
                }
                let agreeing = a.truechimers.iter().filter(|c| **c).count();
                Ok((a.interval, agreeing))
            }
        }
    };
    Selection { sources, result }
}
