//! A bank in its own SQLite file: accounts, holds, entries, and a journal
//! that makes every operation idempotent under the saga step's key (a
//! unique key: a repeated call returns the first call's answer and changes
//! nothing).
//!
//! Amounts are integer cents. Faults are injected on request: an outage
//! before the operation (a retryable error), or a reply lost after the
//! operation took effect (the step times out; its retry, under the same
//! key, finds the effect in the journal).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use saga::Classify;
use serde::{Deserialize, Serialize};

/// What a bank call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// The bank did not answer; try again.
    #[error("bank {0} is unavailable")]
    Unavailable(char),
    /// The payer's available balance cannot cover the amount.
    #[error("account {account} at bank {bank} has {available} cents available, {wanted} needed")]
    Insufficient {
        /// The bank.
        bank: char,
        /// The account.
        account: u32,
        /// Its balance less open holds.
        available: i64,
        /// The amount asked.
        wanted: i64,
    },
    /// A balance would overflow.
    #[error("account {0} would overflow")]
    Overflow(u32),
    /// No such account.
    #[error("bank {0} has no account {1}")]
    UnknownAccount(char, u32),
    /// The account takes no credits (closed to incoming money).
    #[error("account {1} at bank {0} is closed to credits")]
    Closed(char, u32),
    /// The database failed.
    #[error("bank database: {0}")]
    Db(#[from] rusqlite::Error),
}

impl Classify for BankError {
    fn is_retryable(&self) -> bool {
        matches!(self, BankError::Unavailable(_) | BankError::Db(_))
    }
}

/// A hold placed on a payer's account: `(bank, hold row id)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldId(pub char, pub i64);

/// A credit made to a payee's account: `(bank, entry row id)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditId(pub char, pub i64);

/// How often a bank misbehaves, per call.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// An outage before the operation.
    pub outage: f64,
    /// The operation takes effect but its reply comes too late.
    pub lost_reply: f64,
    /// An outage of a compensating operation (release, reverse).
    pub compensation_outage: f64,
}

/// One bank.
pub struct Bank {
    name: char,
    conn: Mutex<Connection>,
    faults: Faults,
    dice: AtomicU64,
}

/// How long a lost reply keeps the caller waiting (past the step timeout).
pub const LOST_REPLY_DELAY: Duration = Duration::from_millis(300);

impl Bank {
    /// Opens (or creates, with `accounts` accounts of `balance` cents) the
    /// bank at `path`.
    pub fn open(
        name: char,
        path: &Path,
        accounts: u32,
        balance: i64,
        faults: Faults,
        seed: u64,
    ) -> Result<Bank, BankError> {
        let mut conn = Connection::open(path)?;
        // WAL with synchronous=NORMAL survives a killed process; fsync per
        // operation would only matter for a power loss.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS accounts (
                 number INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS holds (
                 id INTEGER PRIMARY KEY, account INTEGER NOT NULL, amount INTEGER NOT NULL,
                 state TEXT NOT NULL CHECK (state IN ('open', 'released', 'captured')));
             CREATE TABLE IF NOT EXISTS entries (
                 id INTEGER PRIMARY KEY, account INTEGER NOT NULL, amount INTEGER NOT NULL,
                 kind TEXT NOT NULL, reversed INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS journal (key TEXT PRIMARY KEY, result INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS notices (key TEXT PRIMARY KEY, entry INTEGER NOT NULL);",
        )?;
        let existing: i64 = conn.query_row("SELECT COUNT(*) FROM accounts", [], |r| r.get(0))?;
        if existing == 0 {
            let tx = conn.transaction()?;
            for number in 0..accounts {
                tx.execute(
                    "INSERT INTO accounts (number, balance) VALUES (?1, ?2)",
                    params![number, balance],
                )?;
            }
            tx.commit()?;
        }
        Ok(Bank {
            name,
            conn: Mutex::new(conn),
            faults,
            dice: AtomicU64::new(seed),
        })
    }

    fn roll(&self) -> f64 {
        let x = self
            .dice
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        (mix(x) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Runs `op` once per `key` in one transaction, with the configured
    /// faults: a repeat returns the first answer.
    async fn once(
        &self,
        key: &str,
        undoing: bool,
        op: impl FnOnce(&Transaction<'_>) -> Result<i64, BankError>,
    ) -> Result<i64, BankError> {
        let outage = if undoing {
            self.faults.compensation_outage
        } else {
            self.faults.outage
        };
        if self.roll() < outage {
            return Err(BankError::Unavailable(self.name));
        }
        let result = {
            let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction()?;
            let done: Option<i64> = tx
                .query_row("SELECT result FROM journal WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()?;
            match done {
                Some(result) => result,
                None => {
                    let result = op(&tx)?;
                    tx.execute(
                        "INSERT INTO journal (key, result) VALUES (?1, ?2)",
                        params![key, result],
                    )?;
                    tx.commit()?;
                    result
                }
            }
        };
        if self.roll() < self.faults.lost_reply {
            tokio::time::sleep(LOST_REPLY_DELAY).await;
        }
        Ok(result)
    }

    fn available(&self, tx: &Transaction<'_>, account: u32) -> Result<i64, BankError> {
        let balance: Option<i64> = tx
            .query_row(
                "SELECT balance FROM accounts WHERE number = ?1",
                [account],
                |r| r.get(0),
            )
            .optional()?;
        let balance = balance.ok_or(BankError::UnknownAccount(self.name, account))?;
        let held: i64 = tx.query_row(
            "SELECT COALESCE(SUM(amount), 0) FROM holds WHERE account = ?1 AND state = 'open'",
            [account],
            |r| r.get(0),
        )?;
        Ok(balance - held)
    }

    /// Places a hold of `amount` on `account` if its available balance
    /// covers it.
    pub async fn hold(&self, account: u32, amount: i64, key: &str) -> Result<HoldId, BankError> {
        let id = self
            .once(key, false, |tx| {
                let available = self.available(tx, account)?;
                if available < amount {
                    return Err(BankError::Insufficient {
                        bank: self.name,
                        account,
                        available,
                        wanted: amount,
                    });
                }
                tx.execute(
                    "INSERT INTO holds (account, amount, state) VALUES (?1, ?2, 'open')",
                    params![account, amount],
                )?;
                Ok(tx.last_insert_rowid())
            })
            .await?;
        Ok(HoldId(self.name, id))
    }

    /// Releases an open hold (a released or unknown one is left alone).
    pub async fn release(&self, hold: HoldId, key: &str) -> Result<(), BankError> {
        self.once(key, true, |tx| {
            tx.execute(
                "UPDATE holds SET state = 'released' WHERE id = ?1 AND state = 'open'",
                [hold.1],
            )?;
            Ok(0)
        })
        .await
        .map(drop)
    }

    /// Takes the held money out of the account.
    pub async fn capture(&self, hold: HoldId, key: &str) -> Result<(), BankError> {
        self.once(key, false, |tx| {
            let row: Option<(u32, i64)> = tx
                .query_row(
                    "SELECT account, amount FROM holds WHERE id = ?1 AND state = 'open'",
                    [hold.1],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((account, amount)) = row {
                tx.execute(
                    "UPDATE holds SET state = 'captured' WHERE id = ?1",
                    [hold.1],
                )?;
                tx.execute(
                    "UPDATE accounts SET balance = balance - ?2 WHERE number = ?1",
                    params![account, amount],
                )?;
                tx.execute(
                    "INSERT INTO entries (account, amount, kind) VALUES (?1, ?2, 'capture')",
                    params![account, -amount],
                )?;
            }
            Ok(0)
        })
        .await
        .map(drop)
    }

    /// Credits `amount` to `account`.
    pub async fn credit(
        &self,
        account: u32,
        amount: i64,
        key: &str,
    ) -> Result<CreditId, BankError> {
        let id = self
            .once(key, false, |tx| {
                let balance: Option<i64> = tx
                    .query_row(
                        "SELECT balance FROM accounts WHERE number = ?1",
                        [account],
                        |r| r.get(0),
                    )
                    .optional()?;
                let balance = balance.ok_or(BankError::UnknownAccount(self.name, account))?;
                if is_closed(account) {
                    return Err(BankError::Closed(self.name, account));
                }
                let new = balance
                    .checked_add(amount)
                    .ok_or(BankError::Overflow(account))?;
                tx.execute(
                    "UPDATE accounts SET balance = ?2 WHERE number = ?1",
                    params![account, new],
                )?;
                tx.execute(
                    "INSERT INTO entries (account, amount, kind) VALUES (?1, ?2, 'credit')",
                    params![account, amount],
                )?;
                Ok(tx.last_insert_rowid())
            })
            .await?;
        Ok(CreditId(self.name, id))
    }

    /// Reverses a credit (once).
    pub async fn reverse(&self, credit: CreditId, key: &str) -> Result<(), BankError> {
        self.once(key, true, |tx| {
            let row: Option<(u32, i64)> = tx
                .query_row(
                    "SELECT account, amount FROM entries WHERE id = ?1 AND kind = 'credit' AND reversed = 0",
                    [credit.1],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((account, amount)) = row {
                tx.execute("UPDATE entries SET reversed = 1 WHERE id = ?1", [credit.1])?;
                tx.execute(
                    "UPDATE accounts SET balance = balance - ?2 WHERE number = ?1",
                    params![account, amount],
                )?;
            }
            Ok(0)
        })
        .await
        .map(drop)
    }

    /// Tells the payee about a credit (once).
    pub async fn notify(&self, credit: CreditId, key: &str) -> Result<(), BankError> {
        self.once(key, false, |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO notices (key, entry) VALUES (?1, ?2)",
                params![key, credit.1],
            )?;
            Ok(0)
        })
        .await
        .map(drop)
    }

    /// Whether `account` exists.
    pub fn has_account(&self, account: u32) -> Result<bool, BankError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let found: Option<i64> = conn
            .query_row("SELECT 1 FROM accounts WHERE number = ?1", [account], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(found.is_some())
    }

    /// The sum of all balances, and the number and sum of open holds.
    pub fn totals(&self) -> Result<(i64, i64, i64), BankError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let balances: i64 =
            conn.query_row("SELECT COALESCE(SUM(balance), 0) FROM accounts", [], |r| {
                r.get(0)
            })?;
        let (open, held): (i64, i64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM holds WHERE state = 'open'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((balances, open, held))
    }
}

/// Accounts whose number ends in 37 take no credits: a transfer to one is
/// found out only at the payee's bank, after the hold, and rolls back.
pub fn is_closed(account: u32) -> bool {
    account % 100 == 37
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A well-mixed 64-bit hash, for deterministic pseudo-random choices.
pub fn hash(x: u64) -> u64 {
    mix(x.wrapping_add(0x9E37_79B9_7F4A_7C15))
}
