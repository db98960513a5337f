//! Running `cargo test` with the services' environment, streaming its output and
//! adding up its `test result:` lines.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use crate::process;
use crate::Result;

/// Passed and failed tests, summed over every `test result:` line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Tests that passed.
    pub(crate) passed: u64,
    /// Tests that failed.
    pub(crate) failed: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// What a `cargo test` run gave.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Summed counts.
    pub(crate) counts: Counts,
    /// Cargo's exit status.
    pub(crate) status: ExitStatus,
}

/// Splits xtask's `test` arguments into (cargo test arguments, test binary arguments).
/// A leading `--` is dropped; a later `--` separates the two, as for `cargo test`.
pub(crate) fn split_args(args: &[String]) -> (Vec<String>, Vec<String>) {
    let args = match args.first() {
        Some(first) if first == "--" => &args[1..],
        _ => args,
    };
    match args.iter().position(|a| a == "--") {
        Some(i) => (args[..i].to_vec(), args[i + 1..].to_vec()),
        None => (args.to_vec(), Vec::new()),
    }
}

/// Runs `cargo test --workspace --all-features --no-fail-fast [CARGO_ARGS] --
/// --include-ignored [TEST_ARGS]` (no `--workspace` if CARGO_ARGS pick a package) in `root` with `env` added. Cargo's stdout is copied to
/// ours line by line (and parsed); its stderr goes straight to ours.
pub(crate) fn cargo_test(
    root: &Path,
    env: &[(String, String)],
    args: &[String],
) -> Result<Outcome> {
    let (cargo_args, test_args) = split_args(args);
    let mut cmd = cargo_command();
    cmd.arg("test");
    // `--workspace` would override a `-p`/`--package` given by the user.
    let picks_package = cargo_args
        .iter()
        .any(|a| a == "-p" || a.starts_with("--package") || (a.starts_with("-p") && a.len() > 2));
    if !picks_package {
        cmd.arg("--workspace");
    }
    cmd.args(["--all-features", "--no-fail-fast"])
        .args(&cargo_args)
        .arg("--");
    // Unless the user chose `--ignored` (only those) or already asked for them all.
    if !test_args
        .iter()
        .any(|a| a == "--ignored" || a == "--include-ignored")
    {
        cmd.arg("--include-ignored");
    }
    cmd.args(&test_args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Own process group: the signal handler stops cargo and its test binaries together.
        .process_group(0);
    eprintln!("xtask: running {}", describe(&cmd));
    let mut child = cmd.spawn().map_err(|e| format!("cannot run cargo: {e}"))?;
    process::set_foreground(child.id());

    let mut counts = Counts::default();
    if let Some(stdout) = child.stdout.take() {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        let out = io::stdout();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let mut out = out.lock();
                    let _ = out.write_all(&line);
                    let _ = out.flush();
                    if let Some(c) = parse_result_line(&String::from_utf8_lossy(&line)) {
                        counts.add(c);
                    }
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for cargo: {e}"));
    process::clear_foreground();
    if process::interrupted() {
        // Test binaries that outlived cargo.
        process::signal_group(child.id(), "KILL");
    }
    Ok(Outcome {
        counts,
        status: status?,
    })
}

/// `cargo`, without the variables `cargo run` set for xtask itself: inherited, they would
/// reach build scripts, and some (ring's) rerun when e.g. `CARGO_MANIFEST_DIR` changes,
/// rebuilding half the dependency tree after every switch between `cargo test` and
/// `cargo xtask test`.
pub(crate) fn cargo_command() -> Command {
    let mut cmd = Command::new("cargo");
    for (key, _) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        let set_by_cargo_run = matches!(
            &*key_str,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_RUSTC_CURRENT_DIR"
        ) || key_str.starts_with("CARGO_PKG_");
        if set_by_cargo_run {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// The command line, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Parses a libtest summary such as
/// `test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 2 filtered out; finished in 0.01s`.
/// Colour codes are ignored. Returns `None` for any other line.
pub(crate) fn parse_result_line(line: &str) -> Option<Counts> {
    let line = strip_ansi(line);
    let rest = line.trim().strip_prefix("test result:")?;
    let mut counts = Counts::default();
    let (mut saw_passed, mut saw_failed) = (false, false);
    for part in rest.split(';') {
        // "ok. 5 passed" or "FAILED. 3 passed": the count is the word before the label.
        let words: Vec<&str> = part.split_whitespace().collect();
        let [.., n, label] = words.as_slice() else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match *label {
            "passed" => (counts.passed, saw_passed) = (n, true),
            "failed" => (counts.failed, saw_failed) = (n, true),
            _ => {}
        }
    }
    (saw_passed && saw_failed).then_some(counts)
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(passed: u64, failed: u64) -> Option<Counts> {
        Some(Counts { passed, failed })
    }

    #[test]
    fn parses_an_ok_line() {
        let line = "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.03s";
        assert_eq!(parse_result_line(line), counts(12, 0));
    }

    #[test]
    fn parses_a_failed_line() {
        let line = "test result: FAILED. 7 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s\n";
        assert_eq!(parse_result_line(line), counts(7, 2));
    }

    #[test]
    fn ignored_measured_and_filtered_out_do_not_count() {
        let line = "test result: ok. 3 passed; 0 failed; 4 ignored; 1 measured; 25 filtered out; finished in 0.00s";
        assert_eq!(parse_result_line(line), counts(3, 0));
        let line = "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 9 filtered out; finished in 0.00s";
        assert_eq!(parse_result_line(line), counts(0, 0));
    }

    #[test]
    fn parses_doc_test_and_coloured_lines() {
        let line = "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.52s\r\n";
        assert_eq!(parse_result_line(line), counts(1, 0));
        let line = "test result: \u{1b}[31mFAILED\u{1b}[0m. 4 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(parse_result_line(line), counts(4, 1));
    }

    #[test]
    fn ignores_other_lines() {
        for line in [
            "running 5 tests",
            "test lock::tests::acquires ... ok",
            "error: 1 target failed:",
            "test result: garbage",
            "",
        ] {
            assert_eq!(parse_result_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn splits_cargo_and_test_arguments() {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(split_args(&s(&[])), (s(&[]), s(&[])));
        assert_eq!(
            split_args(&s(&["--", "-p", "sync-lock"])),
            (s(&["-p", "sync-lock"]), s(&[]))
        );
        assert_eq!(
            split_args(&s(&["--", "lease", "--", "--nocapture"])),
            (s(&["lease"]), s(&["--nocapture"]))
        );
        assert_eq!(
            split_args(&s(&["-p", "x", "--", "--exact"])),
            (s(&["-p", "x"]), s(&["--exact"]))
        );
    }
}
