//! The transfer example as a real process: killed with SIGKILL at random
//! moments and aborted by `--crash-after`, then finished with `--recover`;
//! every transfer ends completed or compensated and the money adds up.
//!
//! `cargo test` builds the examples, so the binary is beside this test's;
//! if it is missing or older than its sources (a lone `cargo test --test
//! transfer_kill`), it is built into a target directory of its own (the one
//! this test runs from is locked by the running `cargo test`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

fn transfer_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let beside = profile_dir.join("examples").join("transfer");
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/transfer");
    let newest_source = std::fs::read_dir(&sources)
        .expect("example sources")
        .filter_map(|e| e.ok()?.metadata().ok()?.modified().ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let fresh = |bin: &Path| {
        bin.metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|built| built >= newest_source)
    };
    if fresh(&beside) {
        return beside;
    }
    let own_target = profile_dir.join("transfer-kill-build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--example", "transfer", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&own_target)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the transfer example failed");
    own_target.join("debug/examples/transfer")
}

fn args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--accounts",
        "60",
        "--transfers",
        "1200",
        "--concurrency",
        "32",
        "--step-error-rate",
        "0.05",
        "--timeout-rate",
        "0.01",
        "--compensation-error-rate",
        "0.1",
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(dir.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts the example and SIGKILLs it after `after`; returns whether it
/// was still running (so the kill landed mid-run).
fn run_and_kill(bin: &Path, dir: &Path, extra: &[&str], after: Duration) -> bool {
    let mut child = Command::new(bin)
        .args(args(dir, extra))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the transfer example");
    std::thread::sleep(after);
    let running = child.try_wait().expect("poll").is_none();
    if running {
        child.kill().expect("SIGKILL");
    }
    child.wait().expect("reap");
    running
}

fn run(bin: &Path, dir: &Path, extra: &[&str]) -> Output {
    Command::new(bin)
        .args(args(dir, extra))
        .output()
        .expect("run the transfer example")
}

#[test]
fn killed_and_crashed_runs_recover_to_a_whole_ledger() {
    let bin = transfer_binary();
    let dir = std::env::temp_dir().join(format!("saga-transfer-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    // A fresh run that aborts itself after 3,000 durable records.
    let crashed = run(&bin, &dir, &["--crash-after", "3000"]);
    assert!(
        !crashed.status.success(),
        "--crash-after must abort the process"
    );
    assert!(
        String::from_utf8_lossy(&crashed.stderr).contains("--crash-after 3000: aborting"),
        "{}",
        String::from_utf8_lossy(&crashed.stderr)
    );

    // Recovering runs, each killed at a different moment.
    let mut kills = 0;
    for ms in [150u64, 400, 250, 600] {
        if run_and_kill(&bin, &dir, &["--recover"], Duration::from_millis(ms)) {
            kills += 1;
        }
    }
    assert!(kills >= 1, "no kill landed while the example was running");

    // A last recovering run finishes everything and checks the invariant.
    let last = run(&bin, &dir, &["--recover"]);
    let out = String::from_utf8_lossy(&last.stdout);
    assert!(
        last.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&last.stderr)
    );
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` in:\n{out}"))
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(line("invariant"), "holds", "{out}");
    assert_eq!(line("unfinished"), "0", "{out}");
    assert_eq!(line("stuck"), "0", "{out}");
    assert_eq!(line("open holds"), "0", "{out}");
    let ended: u64 = ["completed", "compensated", "rejected before start"]
        .iter()
        .map(|n| line(n).parse::<u64>().unwrap())
        .sum();
    assert_eq!(ended, 1200, "{out}");

    // The inspector reads one of them back.
    let id = out
        .lines()
        .find_map(|l| l.split("--inspect ").nth(1))
        .expect("an id to inspect")
        .trim()
        .to_string();
    let inspect = Command::new(&bin)
        .args(["--data-dir", &dir.display().to_string(), "--inspect", &id])
        .output()
        .expect("inspect");
    let shown = String::from_utf8_lossy(&inspect.stdout);
    assert!(inspect.status.success(), "{shown}");
    assert!(
        shown.contains("```mermaid") && shown.contains("created"),
        "{shown}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Output piped into a reader that goes away (`| head`) is not a failure:
/// the transfers still finish and the exit code still says whether the
/// ledger is whole (it was a panic on the broken pipe).
#[test]
fn a_reader_that_goes_away_does_not_fail_the_run() {
    let bin = transfer_binary();
    let dir = std::env::temp_dir().join(format!("saga-transfer-pipe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(&bin)
        .args(["--accounts", "10", "--transfers", "50", "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the transfer example");
    // The reader is gone before the first line is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for the example");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
