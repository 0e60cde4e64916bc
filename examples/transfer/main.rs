//! Run with: `cargo run --release --example transfer`
//!
//! Moves money between accounts at two banks, each its own SQLite database,
//! with a durable saga per transfer: `hold` at the payer's bank, `credit` the
//! payee's, `capture` the hold (the pivot), `notify`. Bank calls fail at
//! random, replies get lost (the step times out and is retried under the
//! same idempotency key), some transfers are refused by a bank and rolled
//! back. The saga log is a third SQLite file, so the process can be killed
//! at any moment and finished with `--recover`:
//!
//! ```text
//! cargo run --release --example transfer -- --crash-after 20000   # aborts mid-run
//! cargo run --release --example transfer -- --recover             # finishes every transfer
//! cargo run --release --example transfer -- --inspect <saga id>   # one transfer's timeline
//! ```
//!
//! At the end it checks the invariant (no money created or lost, no hold
//! left open, every saga finished) and exits non-zero if it fails.
//!
//! A fresh run (no `--recover`) starts over: it deletes the banks and
//! empties the log. It refuses, and changes nothing, if another run is
//! using the data dir (the log is locked while a run has it open), or if the
//! log holds transfers an earlier run left unfinished (finish them with
//! `--recover`) or stuck (see below), or if it is not a readable log.
//!
//! A transfer is stuck when a bank call never answered within its attempts
//! (every reply was lost, `--timeout-rate`): the saga cannot know whether
//! the bank acted, so it neither goes on nor rolls back by itself. Once the
//! cause is fixed, `--recover --resume-stuck` tries each stuck transfer once
//! more (the call is made again under the same idempotency key):
//!
//! ```text
//! cargo run --release --example transfer -- --recover --resume-stuck --timeout-rate 0
//! ```

mod app;
mod bank;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use saga::SagaId;
use saga::inspect::Inspection;
use saga::store::{SqliteStore, Store};

use app::{Config, Summary};

/// Transfers between two banks with durable sagas.
#[derive(Parser, Debug)]
#[command(long_about = None)]
struct Cli {
    /// Accounts per bank (2 to 1000000).
    #[arg(long, default_value_t = 300)]
    accounts: u32,
    /// Transfers to make.
    #[arg(long, default_value_t = 5_000)]
    transfers: u64,
    /// Transfers in flight at once (1 to 100000).
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Chance that a bank call fails (retried; the last step is retried
    /// until it succeeds, so below 1).
    #[arg(long, default_value_t = 0.02, value_parser = fault_rate(app::STEP_ERRORS_FOREVER))]
    step_error_rate: f64,
    /// Chance that a bank call takes effect but its reply is lost, so the
    /// step times out and is retried under the same key (below 1; a call
    /// left unanswered by all its attempts leaves its transfer stuck).
    #[arg(long, default_value_t = 0.005, value_parser = fault_rate(app::TIMEOUTS_FOREVER))]
    timeout_rate: f64,
    /// Chance that a compensating call fails (retried until it succeeds, so
    /// below 1).
    #[arg(long, default_value_t = 0.05, value_parser = fault_rate(app::COMPENSATION_ERRORS_FOREVER))]
    compensation_error_rate: f64,
    /// Abort the process once the saga log holds at least this many records
    /// (checked as appends become durable, so a batch may go past it).
    #[arg(long)]
    crash_after: Option<u64>,
    /// Finish an earlier run (after a crash) instead of starting afresh.
    /// A fresh run refuses a data dir whose log has unfinished or stuck
    /// transfers, or that another run is using.
    #[arg(long)]
    recover: bool,
    /// With --recover: after recovery, resume every stuck transfer once (a
    /// bank call that never answered is made again under the same key), for
    /// when the cause is fixed (say, with --timeout-rate 0).
    #[arg(long, requires = "recover")]
    resume_stuck: bool,
    /// Where the banks and the saga log live.
    #[arg(long, default_value = "transfer-data")]
    data_dir: PathBuf,
    /// Seeds the transfers and the faults.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print one transfer's saga timeline and graph, and exit.
    #[arg(long, value_name = "SAGA_ID")]
    inspect: Option<SagaId>,
}

fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{text}` is not a rate from 0 to 1")),
    }
}

/// A fault rate's parser: a rate below 1, or `why` 1 would never let the
/// run end.
fn fault_rate(why: &'static str) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync {
    move |text| app::below_one(rate(text)?, why)
}

/// `println!` that does not panic when stdout is gone: a reader that went
/// away (`| head`) is not a failure, the transfers still finish and the exit
/// code still says whether the invariant holds; any other write error is
/// returned.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*)
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(format!("cannot write the output: {e}"));
        }
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let tokio = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("transfer: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.inspect {
        Some(id) => tokio.block_on(inspect(&cli.data_dir, id)),
        None => tokio.block_on(transfer(cli)),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("transfer: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn inspect(dir: &std::path::Path, id: SagaId) -> Result<ExitCode, String> {
    let path = app::log_path(dir);
    if !path.is_file() {
        return Err(format!(
            "no saga log at {}: run the transfers first",
            path.display()
        ));
    }
    let store = SqliteStore::open_existing(&path).map_err(|e| e.to_string())?;
    let stored = store
        .load(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no transfer {id} in {}", path.display()))?;
    let view = Inspection::of(&stored);
    say!("{}", view.table());
    say!("```mermaid\n{}```", view.mermaid());
    Ok(ExitCode::SUCCESS)
}

async fn transfer(cli: Cli) -> Result<ExitCode, String> {
    let config = Config {
        accounts: cli.accounts,
        transfers: cli.transfers,
        concurrency: cli.concurrency,
        step_error_rate: cli.step_error_rate,
        timeout_rate: cli.timeout_rate,
        compensation_error_rate: cli.compensation_error_rate,
        crash_after: cli.crash_after,
        recover: cli.recover,
        resume_stuck: cli.resume_stuck,
        data_dir: cli.data_dir.clone(),
        seed: cli.seed,
    };
    let bar = ProgressBar::new(config.transfers);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} transfers  {per_sec}  {msg}")
            .map_err(|e| e.to_string())?,
    );
    let shown = bar.clone();
    // Printed once the run is sure to go ahead: a refusal (another run on
    // the data dir, transfers left unfinished) prints only its reason.
    let announce = || {
        header(&config)?;
        bar.enable_steady_tick(Duration::from_millis(100));
        Ok(())
    };
    let summary = app::run_announced(&config, announce, move |s: &Summary| {
        shown.set_position(s.ran);
        shown.set_message(format!("{} retries", s.retries));
    })
    .await?;
    bar.finish_and_clear();
    print_summary(&summary, &config)?;
    Ok(if summary.whole() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn header(config: &Config) -> Result<(), String> {
    say!(
        "{} {} transfers between {} accounts at two banks in {} ({} in flight)",
        if config.recover {
            "recovering, then finishing"
        } else {
            "running"
        },
        config.transfers,
        u64::from(config.accounts) * 2,
        config.data_dir.display(),
        config.concurrency
    );
    Ok(())
}

fn print_summary(s: &Summary, config: &Config) -> Result<(), String> {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    let rows: Vec<(&str, String)> = vec![
        ("transfers", s.transfers.to_string()),
        ("rejected before start", s.rejected.to_string()),
        ("completed", s.completed.to_string()),
        ("compensated", s.compensated.to_string()),
        ("stuck", s.stuck.to_string()),
        ("unfinished", s.unfinished.to_string()),
        ("recovered from a crash", s.recovered.to_string()),
        ("resumed from stuck", s.resumed_stuck.to_string()),
        ("retries", s.retries.to_string()),
        (
            "throughput",
            format!("{:.0} transfers/s", s.ran as f64 / secs),
        ),
        ("money at start (cents)", s.money_before.to_string()),
        ("money at end (cents)", s.money_after.to_string()),
        ("open holds", s.open_holds.to_string()),
        (
            "invariant",
            if s.whole() {
                "holds".into()
            } else {
                "BROKEN".into()
            },
        ),
    ];
    for (name, value) in rows {
        say!("{name:<24}{value:>20}");
    }
    let inspect_command = |id: SagaId| {
        format!(
            "cargo run --release --example transfer -- --data-dir {} --inspect {id}",
            config.data_dir.display()
        )
    };
    if s.stuck > 0 {
        say!(
            "\nstuck: {} transfers had a bank call that never answered within its attempts \
             (every reply was lost), so the saga cannot know whether the bank acted, and \
             neither goes on nor rolls back by itself; their money stays held. Fix the cause \
             (here, the lost replies of --timeout-rate), then resume each once:\n  \
             cargo run --release --example transfer -- --data-dir {} --accounts {} \
             --transfers {} --seed {} --recover --resume-stuck --timeout-rate 0",
            s.stuck,
            config.data_dir.display(),
            config.accounts,
            config.transfers,
            config.seed
        );
        if let Some(id) = s.stuck_example {
            say!("inspect a stuck one: {}", inspect_command(id));
        }
    }
    if let Some(id) = s.example {
        say!("\ninspect one: {}", inspect_command(id));
    }
    Ok(())
}
