//! The conformance suite (`sync_time::time_conformance!`, one test per guarantee) for the
//! `local` backend and for the `ntp` backend against fake servers on loopback. chronyd's run is
//! in `chronyd.rs`.
#![cfg(feature = "conformance")]

mod support;

use std::time::Duration;

use sync_time::conformance::Backend;
use sync_time::{LocalOptions, LocalTime};

sync_time::time_conformance!(local, Backend::new(LocalTime::new(), 0, false));
sync_time::time_conformance!(
    local_tight,
    Backend::new(
        LocalTime::with_options(LocalOptions::new().with_assumed_error(Duration::from_millis(1))),
        0,
        false
    )
);

/// The `ntp` backend against fake servers.
#[cfg(feature = "ntp")]
mod ntp {
    use super::*;
    use support::{options, Config, FakeNtpServer};
    use sync_time::{NtpTime, Time};

    const SEC: i64 = 1_000_000_000;

    /// Fake servers (kept alive as long as the backend) and the backend synced to them.
    struct FakeHarness {
        _servers: Vec<FakeNtpServer>,
        time: NtpTime,
        skew: i64,
    }

    impl FakeHarness {
        /// `n` servers `skew` off the system clock. Each holds requests for a varying time
        /// (0 to 6 ms, a different cycle per server), so every sync's interval is wider or
        /// narrower and its midpoint moves: the re-sync checks see moving intervals.
        async fn new(n: usize, skew: i64) -> Self {
            let mut servers = Vec::new();
            for i in 0..n {
                let mut delays = [0, 3, 1, 6, 2].map(Duration::from_millis).to_vec();
                delays.rotate_left(i);
                servers.push(
                    FakeNtpServer::start(Config {
                        skew_nanos: skew,
                        inbound_delays: delays,
                        ..Config::default()
                    })
                    .await,
                );
            }
            let refs: Vec<&FakeNtpServer> = servers.iter().collect();
            let time = NtpTime::connect(options(&refs).with_samples(2))
                .await
                .unwrap();
            Self {
                _servers: servers,
                time,
                skew,
            }
        }
    }

    impl sync_time::conformance::Harness for FakeHarness {
        fn time(&self) -> &dyn Time {
            &self.time
        }
        fn true_offset_nanos(&self) -> i64 {
            self.skew
        }
        fn monotonic(&self) -> bool {
            true
        }
    }

    sync_time::time_conformance!(ntp_fake_servers, FakeHarness::new(3, 0).await);
    sync_time::time_conformance!(ntp_skewed_server, FakeHarness::new(1, 3 * SEC).await);
}
