//! The transfer example's code under heavy faults: the invariant holds, and
//! bad requests are refused before any saga starts.

#[path = "../examples/transfer/app.rs"]
#[allow(dead_code)]
mod app;
#[path = "../examples/transfer/bank.rs"]
#[allow(dead_code)]
mod bank;

use app::{Account, Config, Invalid, TransferRequest};

fn config(dir: &std::path::Path) -> Config {
    Config {
        accounts: 40,
        transfers: 600,
        concurrency: 32,
        step_error_rate: 0.15,
        timeout_rate: 0.03,
        compensation_error_rate: 0.3,
        crash_after: None,
        recover: false,
        resume_stuck: false,
        data_dir: dir.to_path_buf(),
        seed: 7,
    }
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        TempDir(std::env::temp_dir().join(format!("saga-transfer-{}", saga::SagaId::new())))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_heavy_faults_no_money_is_created_or_lost() {
    let dir = TempDir::new();
    let summary = app::run(&config(&dir.0), |_| {}).await.unwrap();
    assert!(summary.whole(), "{summary:#?}");
    assert_eq!(
        summary.completed + summary.compensated + summary.rejected,
        600,
        "{summary:#?}"
    );
    assert!(
        summary.compensated > 20,
        "bank refusals roll back: {summary:#?}"
    );
    assert!(summary.retries > 100, "faults are retried: {summary:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_before_any_saga_starts() {
    let dir = TempDir::new();
    let mut config = config(&dir.0);
    config.transfers = 0;
    app::run(&config, |_| {}).await.unwrap();
    config.recover = true;
    let transfer = app::open_banks(&config).unwrap();
    let a = |number| Account { bank: 'A', number };
    let b = |number| Account { bank: 'B', number };
    let request = |from, to, amount| TransferRequest { from, to, amount };
    assert_eq!(
        transfer.validate(&request(a(1), b(2), 0)),
        Err(Invalid::NotPositive(0))
    );
    assert_eq!(
        transfer.validate(&request(a(1), b(2), -5)),
        Err(Invalid::NotPositive(-5))
    );
    assert_eq!(
        transfer.validate(&request(a(1), b(2), i64::MAX)),
        Err(Invalid::TooLarge(i64::MAX))
    );
    assert_eq!(
        transfer.validate(&request(a(3), a(3), 10)),
        Err(Invalid::SameAccount(a(3)))
    );
    assert_eq!(
        transfer.validate(&request(a(1), b(40), 10)),
        Err(Invalid::UnknownAccount(b(40)))
    );
    let nowhere = Account {
        bank: 'Z',
        number: 1,
    };
    assert_eq!(
        transfer.validate(&request(nowhere, b(2), 10)),
        Err(Invalid::UnknownAccount(nowhere))
    );
    assert_eq!(transfer.validate(&request(a(1), b(2), 10)), Ok(()));
    assert_eq!(
        Invalid::SameAccount(a(3)).to_string(),
        "cannot transfer from account A-3 to itself"
    );
}
