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

/// A path for a test's data under the temp directory, with nothing there.
fn empty_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("saga-transfer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
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
    let dir = empty_dir("kill");

    // A fresh run that aborts itself after 3,000 durable records.
    let crashed = run(&bin, &dir, &["--crash-after", "3000"]);
    assert!(
        !crashed.status.success(),
        "--crash-after must abort the process"
    );
    let said = String::from_utf8_lossy(&crashed.stderr);
    assert!(
        said.contains("--crash-after 3000: aborting once the log holds at least 3000 records"),
        "{said}"
    );
    // It says how many were written, which is at least the limit (it said
    // "aborting with 3001 records durable", more than it knew).
    let written: u64 = said
        .split('(')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count written in: {said}"));
    assert!(written >= 3000, "{said}");

    // A fresh run on the crashed run's data dir refuses, and deletes
    // nothing: its unfinished transfers are `--recover`'s to finish (it
    // used to delete the log, and them with it).
    let fresh = run(&bin, &dir, &[]);
    let said = String::from_utf8_lossy(&fresh.stderr);
    assert!(!fresh.status.success(), "{said}");
    assert!(
        said.contains("unfinished transfers from an earlier run: finish them with --recover"),
        "{said}"
    );
    assert!(fresh.stdout.is_empty(), "no header for a refused run");
    assert!(dir.join("sagas.db").is_file());
    assert!(dir.join("bank-a.db").is_file() && dir.join("bank-b.db").is_file());

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
    assert_eq!(row(&out, "invariant"), "holds", "{out}");
    assert_eq!(row(&out, "unfinished"), "0", "{out}");
    assert_eq!(row(&out, "stuck"), "0", "{out}");
    assert_eq!(row(&out, "open holds"), "0", "{out}");
    let ended = ended(&out);
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
    let dir = empty_dir("pipe");
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

/// The value of the summary row `name` in a run's output.
fn row(out: &str, name: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no `{name}` in:\n{out}"))
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// How many transfers a run's output says ended, one way or another.
fn ended(out: &str) -> u64 {
    ["completed", "compensated", "rejected before start"]
        .iter()
        .map(|n| row(out, n).parse::<u64>().unwrap())
        .sum()
}

/// A fresh run on a data dir another run is using refuses, before it
/// deletes anything; it used to delete the log and the banks under the
/// live run, which then died ("no such table: sagas") with both runs'
/// data gone.
#[test]
fn a_fresh_run_refuses_a_data_dir_another_run_is_using() {
    let bin = transfer_binary();
    let dir = empty_dir("busy");
    // Slow on purpose (lost replies wait out a step's timeout), never stuck.
    let flags = [
        "--accounts",
        "20",
        "--transfers",
        "300",
        "--concurrency",
        "4",
        "--step-error-rate",
        "0",
        "--timeout-rate",
        "0.3",
        "--seed",
        "5",
        "--data-dir",
    ];
    let first = Command::new(&bin)
        .args(flags)
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the first run");
    let started = std::time::Instant::now();
    while !dir.join("run.json").is_file() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first run never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut first = first;
    let second = Command::new(&bin)
        .args(flags)
        .arg(&dir)
        .output()
        .expect("run the second");
    assert!(
        first.try_wait().expect("poll").is_none(),
        "the first run ended before the second was refused: make it slower"
    );
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{said}");
    assert!(
        said.contains("is in use by another run of it (pid "),
        "{said}"
    );
    assert!(said.contains(&format!("pid {})", first.id())), "{said}");
    assert!(second.stdout.is_empty(), "no header for a refused run");

    let first = first.wait_with_output().expect("wait for the first run");
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(row(&out, "invariant"), "holds", "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run whose bank calls go unanswered ends with stuck transfers, says
/// what that means and what to do; a fresh run then refuses the data dir,
/// and `--recover --resume-stuck` with the cause gone finishes them.
#[test]
fn stuck_transfers_are_explained_and_resumed() {
    let bin = transfer_binary();
    let dir = empty_dir("stuck");
    let with = |extra: &[&str]| {
        let mut command = Command::new(&bin);
        command
            .args([
                "--accounts",
                "10",
                "--transfers",
                "20",
                "--concurrency",
                "20",
            ])
            .args(["--step-error-rate", "0", "--seed", "1", "--data-dir"])
            .arg(&dir)
            .args(extra);
        command.output().expect("run the transfer example")
    };

    // Nine replies in ten lost: a step's ten attempts often all go
    // unanswered.
    let stuck = with(&["--timeout-rate", "0.9"]);
    let out = String::from_utf8_lossy(&stuck.stdout);
    assert!(!stuck.status.success(), "{out}");
    let left: u64 = row(&out, "stuck").parse().unwrap();
    assert!(left > 0, "no transfer was left stuck:\n{out}");
    assert_eq!(row(&out, "invariant"), "BROKEN", "{out}");
    assert!(
        out.contains(&format!(
            "stuck: {left} transfers had a bank call that never answered"
        )) && out.contains("--recover --resume-stuck --timeout-rate 0")
            && out.contains("inspect a stuck one"),
        "{out}"
    );

    // A fresh run must not delete them.
    let fresh = with(&[]);
    let said = String::from_utf8_lossy(&fresh.stderr);
    assert!(!fresh.status.success(), "{said}");
    assert!(
        said.contains(&format!("has {left} stuck transfers from an earlier run")),
        "{said}"
    );

    // `--resume-stuck` needs `--recover`.
    let alone = with(&["--resume-stuck"]);
    assert!(!alone.status.success());

    let resumed = with(&["--recover", "--resume-stuck", "--timeout-rate", "0"]);
    let out = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        resumed.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(row(&out, "resumed from stuck"), left.to_string(), "{out}");
    assert_eq!(row(&out, "stuck"), "0", "{out}");
    assert_eq!(row(&out, "open holds"), "0", "{out}");
    assert_eq!(row(&out, "invariant"), "holds", "{out}");
    let ended = ended(&out);
    assert_eq!(ended, 20, "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Flags the run cannot honour are refused with a reason, before anything
/// is printed or made: no panic, no header, no data dir.
#[test]
fn impossible_flags_are_refused_before_anything_is_made() {
    let bin = transfer_binary();
    let base = empty_dir("flags");
    std::fs::create_dir_all(&base).unwrap();
    let file = base.join("afile");
    std::fs::write(&file, "not a directory").unwrap();
    let missing = base.join("missing");
    let file_arg = file.display().to_string();
    let missing_arg = missing.display().to_string();
    let cases: [(&[&str], &str); 7] = [
        (
            &["--accounts", "3000000000"],
            "--accounts must be from 2 to",
        ),
        (&["--accounts", "1"], "--accounts must be from 2 to"),
        (
            &["--concurrency", "99999999999999999"],
            "--concurrency must be from 1 to",
        ),
        (&["--timeout-rate", "1"], "give a rate below 1"),
        (&["--step-error-rate", "1"], "give a rate below 1"),
        (&["--data-dir", &file_arg], "not a directory"),
        (
            &["--recover", "--data-dir", &missing_arg],
            "nothing to recover in",
        ),
    ];
    for (flags, reason) in cases {
        let mut command = Command::new(&bin);
        if !flags.contains(&"--data-dir") {
            command.arg("--data-dir").arg(&missing);
        }
        let out = command.args(flags).output().expect("run the example");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?}: {said}");
        assert!(!said.contains("panicked"), "{flags:?}: {said}");
        assert!(said.contains(reason), "{flags:?}: {said}");
        assert!(
            out.stdout.is_empty(),
            "{flags:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(!missing.exists(), "{flags:?} made the data dir");
    }
    let _ = std::fs::remove_dir_all(&base);
}
