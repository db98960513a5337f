//! The partition's checker (beside the lock's and the leader's): what the proxy's cuts did.

use super::Outcome;
use crate::event::Event;

/// Partition: the checks are those of the lock and the leader; this notes what the cuts did.
pub fn check_partition(out: &mut Outcome, events: &[Event]) {
    let cuts = events.iter().filter(|e| e.ev == "cut").count();
    if cuts == 0 {
        out.violation("the proxy logged no cut: the partition was not injected");
    }
    let lost = events
        .iter()
        .filter(|e| e.ev == "exit" && e.ok == Some(false))
        .count();
    let revoked = events.iter().filter(|e| e.ev == "revoked").count();
    out.note(format!(
        "partition: {cuts} cuts, {lost} locks lost, {revoked} leaderships revoked"
    ));
}
