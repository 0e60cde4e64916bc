//! An in-memory bank whose every operation is idempotent under a key, and
//! which is unavailable now and then.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use saga::Classify;
use serde::{Deserialize, Serialize};

/// What a bank call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// The bank did not answer; try again.
    #[error("bank {0} unavailable")]
    Unavailable(&'static str),
    /// The payer's account cannot cover the amount.
    #[error("insufficient funds in account {0}")]
    Insufficient(u32),
    /// No such account.
    #[error("unknown account {0}")]
    UnknownAccount(u32),
}

impl Classify for BankError {
    fn is_retryable(&self) -> bool {
        matches!(self, BankError::Unavailable(_))
    }
}

/// A hold placed on a payer's account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HoldId(String);

/// A credit made to a payee's account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreditId(String);

#[derive(Clone, Copy, PartialEq, Eq)]
enum HoldState {
    Open,
    Released,
    Captured,
}

struct Hold {
    account: u32,
    amount: i64,
    state: HoldState,
}

struct Credit {
    account: u32,
    amount: i64,
    reversed: bool,
}

#[derive(Default)]
struct Books {
    balances: HashMap<u32, i64>,
    holds: HashMap<String, Hold>,
    credits: HashMap<String, Credit>,
}

/// One bank.
pub struct Bank {
    name: &'static str,
    books: Mutex<Books>,
    outage_rate: f64,
    dice: AtomicU64,
}

impl Bank {
    pub fn new(
        name: &'static str,
        accounts: u32,
        balance: i64,
        outage_rate: f64,
        seed: u64,
    ) -> Bank {
        let books = Books {
            balances: (0..accounts).map(|a| (a, balance)).collect(),
            ..Books::default()
        };
        Bank {
            name,
            books: Mutex::new(books),
            outage_rate,
            dice: AtomicU64::new(seed),
        }
    }

    fn books(&self) -> Result<std::sync::MutexGuard<'_, Books>, BankError> {
        let roll = self
            .dice
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let unit = (mix(roll) >> 11) as f64 / (1u64 << 53) as f64;
        if unit < self.outage_rate {
            return Err(BankError::Unavailable(self.name));
        }
        Ok(self.books.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn hold(&self, account: u32, amount: i64, key: &str) -> Result<HoldId, BankError> {
        let mut books = self.books()?;
        if books.holds.contains_key(key) {
            return Ok(HoldId(key.to_string()));
        }
        let balance = books
            .balances
            .get_mut(&account)
            .ok_or(BankError::UnknownAccount(account))?;
        if *balance < amount {
            return Err(BankError::Insufficient(account));
        }
        *balance -= amount;
        books.holds.insert(
            key.to_string(),
            Hold {
                account,
                amount,
                state: HoldState::Open,
            },
        );
        Ok(HoldId(key.to_string()))
    }

    pub fn release(&self, hold: &HoldId) -> Result<(), BankError> {
        let mut books = self.books()?;
        let Books {
            balances, holds, ..
        } = &mut *books;
        if let Some(h) = holds.get_mut(&hold.0)
            && h.state == HoldState::Open
        {
            h.state = HoldState::Released;
            *balances.entry(h.account).or_default() += h.amount;
        }
        Ok(())
    }

    pub fn capture(&self, hold: &HoldId) -> Result<(), BankError> {
        let mut books = self.books()?;
        if let Some(h) = books.holds.get_mut(&hold.0)
            && h.state == HoldState::Open
        {
            h.state = HoldState::Captured;
        }
        Ok(())
    }

    pub fn credit(&self, account: u32, amount: i64, key: &str) -> Result<CreditId, BankError> {
        let mut books = self.books()?;
        if !books.credits.contains_key(key) {
            *books
                .balances
                .get_mut(&account)
                .ok_or(BankError::UnknownAccount(account))? += amount;
            books.credits.insert(
                key.to_string(),
                Credit {
                    account,
                    amount,
                    reversed: false,
                },
            );
        }
        Ok(CreditId(key.to_string()))
    }

    pub fn reverse(&self, credit: &CreditId) -> Result<(), BankError> {
        let mut books = self.books()?;
        let Books {
            balances, credits, ..
        } = &mut *books;
        if let Some(c) = credits.get_mut(&credit.0)
            && !c.reversed
        {
            c.reversed = true;
            *balances.entry(c.account).or_default() -= c.amount;
        }
        Ok(())
    }

    pub fn notify(&self, _credit: &CreditId) -> Result<(), BankError> {
        self.books().map(drop)
    }

    /// The money this bank accounts for: balances plus open holds. A captured
    /// hold has left the bank; it was credited at the other one.
    pub fn total(&self) -> i64 {
        let books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        let balances: i64 = books.balances.values().sum();
        let held: i64 = books
            .holds
            .values()
            .filter(|h| h.state == HoldState::Open)
            .map(|h| h.amount)
            .sum();
        balances + held
    }

    pub fn open_holds(&self) -> usize {
        let books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        books
            .holds
            .values()
            .filter(|h| h.state == HoldState::Open)
            .count()
    }
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
