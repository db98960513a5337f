//! The event conformance suite on the etcd backend (being written: see the branch h-event).
