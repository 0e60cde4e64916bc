//! `saga-inspect`: read a saga log (a SQLite store file, or a PostgreSQL
//! store) without the code that wrote it.
//!
//! ```text
//! saga-inspect sagas.db list --state stuck --since 2h
//! saga-inspect postgres://postgres@127.0.0.1/app --schema sagas list
//! saga-inspect sagas.db show 5a6a0000-0000-4000-8000-000000000042
//! saga-inspect sagas.db show 5a6a0000-0000-4000-8000-000000000042 --json
//! saga-inspect sagas.db prune --older-than 30d
//! ```

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use saga_runtime::SagaId;
use saga_runtime::inspect::{Inspection, utc};
use saga_runtime::log::SagaState;
use saga_runtime::store::{ListFilter, PostgresStore, SqliteStore, Store};

/// Inspect a saga log.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The log: a SQLite file written by `SqliteStore`, or the
    /// `postgres://` URL of a database written by `PostgresStore`.
    db: String,
    /// The PostgreSQL schema that holds the log.
    #[arg(long, default_value = "saga")]
    schema: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List sagas, newest first.
    List {
        /// Only sagas in this state.
        #[arg(long, value_enum)]
        state: Option<State>,
        /// Only sagas of this name.
        #[arg(long)]
        name: Option<String>,
        /// Only sagas created within this long, such as `30m`, `2h`, `7d`.
        #[arg(long, value_parser = parse_age)]
        since: Option<Duration>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON, one object per saga.
        #[arg(long)]
        json: bool,
    },
    /// Show one saga: its timeline and its graph, steps coloured by state.
    Show {
        /// The saga's id.
        id: SagaId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete completed and compensated sagas older than a retention.
    Prune {
        /// Such as `30d`.
        #[arg(long, value_parser = parse_age)]
        older_than: Duration,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum State {
    Running,
    Completed,
    Compensated,
    Stuck,
}

impl From<State> for SagaState {
    fn from(s: State) -> SagaState {
        match s {
            State::Running => SagaState::Running,
            State::Completed => SagaState::Completed,
            State::Compensated => SagaState::Compensated,
            State::Stuck => SagaState::Stuck,
        }
    }
}

fn parse_age(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{text}`: expected a number and a unit, such as 30m, 2h or 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// The time `age` ago, in ms since the Unix epoch (the epoch itself for an
/// age longer than that).
fn ago_ms(age: Duration) -> u64 {
    now_ms().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Prints a line to standard output. A reader that went away (`| head`)
/// ends the program quietly: it has all it wanted.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(format!("cannot write the output: {e}"));
        }
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("saga-inspect: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the log `db` names. Reading a PostgreSQL log takes no saga's
/// lease (only recovery does), so it never disturbs the workers.
async fn open(db: &str, schema: &str) -> Result<Arc<dyn Store>, String> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        let store = PostgresStore::builder(db)
            .schema(schema)
            .create(false)
            .worker(format!("saga-inspect-{}", std::process::id()))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Arc::new(store));
    }
    if Path::new(db).is_dir() {
        return Err(format!("{db}: a directory, not a saga log file"));
    }
    if !Path::new(db).is_file() {
        return Err(format!("{db}: no such file"));
    }
    // Never turns another file into a log, nor upgrades an older one.
    Ok(Arc::new(
        SqliteStore::open_existing(db).map_err(|e| e.to_string())?,
    ))
}

fn run(cli: Cli) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let store = open(&cli.db, &cli.schema).await?;
        match cli.command {
            Command::List {
                state,
                name,
                since,
                limit,
                json,
            } => {
                let filter = ListFilter {
                    state: state.map(SagaState::from),
                    name,
                    created_after_ms: since.map(ago_ms),
                    limit: Some(limit),
                };
                let sagas = store.list(filter).await.map_err(|e| e.to_string())?;
                if json {
                    for s in &sagas {
                        let line = serde_json::json!({
                            "id": s.id, "name": s.name, "state": s.state,
                            "fingerprint": format!("{:016x}", s.fingerprint),
                            "created_ms": s.created_ms, "updated_ms": s.updated_ms,
                        });
                        out!("{line}");
                    }
                } else {
                    out!(
                        "{:<36}  {:<20}  {:<11}  {:<23}  updated (UTC)",
                        "id",
                        "name",
                        "state",
                        "created (UTC)"
                    );
                    for s in &sagas {
                        out!(
                            "{:<36}  {:<20}  {:<11}  {:<23}  {}",
                            s.id,
                            s.name,
                            s.state.as_str(),
                            utc(s.created_ms),
                            utc(s.updated_ms)
                        );
                    }
                }
                Ok(())
            }
            Command::Show { id, json } => {
                let stored = store
                    .load(id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("no saga {id} in {}", cli.db))?;
                let view = Inspection::of(&stored);
                if json {
                    let text = serde_json::to_string_pretty(&view).map_err(|e| e.to_string())?;
                    out!("{text}");
                } else {
                    out!("{}", view.table());
                    out!("```mermaid\n{}```", view.mermaid());
                }
                Ok(())
            }
            Command::Prune { older_than } => {
                let before = ago_ms(older_than);
                let removed = store.prune(before).await.map_err(|e| e.to_string())?;
                out!("pruned {removed} finished sagas");
                Ok(())
            }
        }
    })
}
