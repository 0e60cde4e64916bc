//! The `recovered` record: recovery after a crash notes in the log, before
//! the recovered run acts, where the saga goes on and what may have been
//! running at the crash (and so may have acted twice under one idempotency
//! key). The inspector shows it; replay reads past it.

mod support;

use std::sync::Arc;

use saga::inspect::Inspection;
use saga::log::{Entry, Record, Resumes, SagaState};
use saga::prelude::*;
use saga::store::{ListFilter, Store, StoredSaga};
use saga::testing::{CrashPoint, CrashingStore};
use support::{Boom, Calls};

/// Reserve and hold at once (a concurrent group), then charge, then ship
/// (the pivot). `reserve` is busy on its first attempt; `ship` refuses for
/// good if `fail_ship`, and the saga rolls back.
#[derive(Default)]
pub struct Shop {
    calls: Calls,
    fail_ship: bool,
}

impl Shop {
    fn note(&self, what: &str, cx: &StepContext) {
        self.calls.push(format!("{what} {}", cx.attempt()));
    }
}

#[saga(input = u32, concurrent)]
impl Shop {
    #[step(compensate = unreserve, retry(attempts = 3))]
    async fn reserve(&self, input: &u32, cx: &StepContext) -> Result<u32, StepError> {
        self.note("reserve", cx);
        if cx.attempt() == 1 {
            return Err(retryable(Boom("busy")));
        }
        Ok(*input)
    }
    async fn unreserve(&self, reserve: &u32, cx: &StepContext) -> Result<(), StepError> {
        let _ = reserve;
        self.note("unreserve", cx);
        Ok(())
    }

    #[step(compensate = unhold)]
    async fn hold(&self, input: &u32, cx: &StepContext) -> Result<u32, StepError> {
        self.note("hold", cx);
        Ok(input + 1)
    }
    async fn unhold(&self, hold: &u32, cx: &StepContext) -> Result<(), StepError> {
        let _ = hold;
        self.note("unhold", cx);
        Ok(())
    }

    #[step(compensate = refund)]
    async fn charge(&self, reserve: &u32, hold: &u32, cx: &StepContext) -> Result<u32, StepError> {
        self.note("charge", cx);
        Ok(reserve + hold)
    }
    async fn refund(&self, charge: &u32, cx: &StepContext) -> Result<(), StepError> {
        let _ = charge;
        self.note("refund", cx);
        Ok(())
    }

    #[step(pivot)]
    async fn ship(&self, charge: &u32, cx: &StepContext) -> Result<u32, StepError> {
        self.note("ship", cx);
        if self.fail_ship {
            return Err(permanent(Boom("no courier")));
        }
        Ok(*charge)
    }
}

fn shop(fail_ship: bool) -> Arc<Shop> {
    Arc::new(Shop {
        calls: Calls::default(),
        fail_ship,
    })
}

async fn only_saga(store: &MemoryStore) -> StoredSaga {
    let list = store.list(ListFilter::default()).await.unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    store.load(list[0].id).await.unwrap().unwrap()
}

fn entries(saga: &StoredSaga) -> Vec<Entry> {
    saga.records.iter().map(|r| r.decode().unwrap()).collect()
}

fn recovered(entries: &[Entry]) -> Vec<&Entry> {
    entries
        .iter()
        .filter(|e| matches!(e, Entry::Recovered { .. }))
        .collect()
}

/// A runtime on `store` with `saga` registered.
async fn runtime<S: Store>(store: S, saga: &Arc<Shop>) -> Runtime {
    let runtime = Runtime::builder().store(store).build().await.unwrap();
    runtime.register(Arc::clone(saga));
    runtime
}

/// The log of a run without a crash.
async fn clean_log(fail_ship: bool) -> Vec<Entry> {
    let log = MemoryStore::new();
    let rt = runtime(log.clone(), &shop(fail_ship)).await;
    let _ = rt.run::<Shop>(5).await.unwrap();
    entries(&only_saga(&log).await)
}

/// Runs a saga on a store that crashes at `point`, on this task, and stops
/// the run where it is at the crash (as a killed process would). `None` if
/// the run ended first.
async fn crashed_at(saga: &Arc<Shop>, point: CrashPoint) -> Option<MemoryStore> {
    let durable = MemoryStore::new();
    let crashing = CrashingStore::new(durable.clone(), point);
    let rt = runtime(crashing.clone(), saga).await;
    tokio::select! {
        biased;
        () = crashing.wait_for_crash() => Some(durable),
        _ = rt.run::<Shop>(5) => None,
    }
}

/// Recovers `log` on a fresh runtime, as a restarted process would.
async fn recover(log: &MemoryStore, saga: &Arc<Shop>) -> saga::RecoveryReport {
    let rt = runtime(log.clone(), saga).await;
    let report = rt.recover().await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    report
}

/// The position of the first record of `log` matching `f`.
fn position(log: &[Entry], f: impl Fn(&Entry) -> bool) -> u64 {
    log.iter().position(f).expect("no such record") as u64
}

fn charge_started(e: &Entry) -> bool {
    matches!(e, Entry::StepStarted { step, .. } if step == "charge")
}

/// Every line of a Mermaid flowchart this crate writes is one it knows: a
/// node, an edge, a class, or a comment.
fn assert_valid_mermaid(graph: &str) {
    let mut lines = graph.lines();
    assert_eq!(lines.next(), Some("flowchart TD"), "{graph}");
    for line in lines {
        let l = line.trim_start();
        assert!(
            line.starts_with("    "),
            "unindented line `{line}` in\n{graph}"
        );
        let known = l.starts_with("%% ")
            || l.starts_with("class ")
            || l.starts_with("classDef ")
            || l.starts_with("input")
            || (l.starts_with('s')
                && (l.contains(" --> ") || l.contains('[') || l.contains('(') || l.contains('{')));
        assert!(known, "unexpected line `{line}` in\n{graph}");
        if let Some(comment) = l.strip_prefix("%%") {
            assert!(!comment.contains("%%"), "{graph}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_inside_a_step_before_its_start_was_durable_is_recorded_on_recovery() {
    // The process dies while `charge`'s start record is written: `charge`
    // acts, and its start never reaches the log.
    let k = position(&clean_log(false).await, charge_started);
    let saga = shop(false);
    let log = crashed_at(&saga, CrashPoint::BeforeDurable(k))
        .await
        .unwrap();
    assert_eq!(saga.calls.count("charge 1"), 1, "{:?}", saga.calls.all());
    let before = only_saga(&log).await;
    assert!(!entries(&before).iter().any(charge_started));
    assert!(recovered(&entries(&before)).is_empty());

    let report = recover(&log, &saga).await;
    assert_eq!(report.completed, 1);
    // Attempt 1 again, same key: `charge` acted twice.
    assert_eq!(saga.calls.count("charge 1"), 2, "{:?}", saga.calls.all());

    let after = only_saga(&log).await;
    assert_eq!(after.summary.state, SagaState::Completed);
    let seqs: Vec<u64> = after.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    let log_entries = entries(&after);
    // The note comes first, at the next position, then the run it recovered.
    assert_eq!(
        log_entries[k as usize],
        Entry::Recovered {
            resumes: Resumes::Forward,
            step: Some("charge".into()),
            running: vec!["charge".into()],
            compensating: vec![],
        }
    );
    assert!(charge_started(&log_entries[k as usize + 1]));
    assert_eq!(recovered(&log_entries).len(), 1);

    let view = Inspection::of(&after);
    let table = view.table();
    assert!(
        table.contains(
            "recovered after a crash; goes on at `charge`; may have been running: charge"
        ),
        "{table}"
    );
    let row = &view.timeline[k as usize];
    assert_eq!(
        (row.event.as_str(), row.step.as_deref()),
        ("recovered", Some("charge"))
    );
    let graph = view.mermaid();
    assert!(
        graph.contains(&format!(
            "    %% seq {k}: recovered after a crash; goes on at `charge`; may have been running: charge\n"
        )),
        "{graph}"
    );
    assert!(graph.contains("class s2 completed"), "{graph}");
    assert_valid_mermaid(&graph);
}

#[tokio::test(start_paused = true)]
async fn a_saga_recovered_twice_has_two_records_and_ends_the_same() {
    let clean = clean_log(false).await;
    let k = position(&clean, charge_started);
    let saga = shop(false);
    let log = crashed_at(&saga, CrashPoint::BeforeDurable(k))
        .await
        .unwrap();

    // A recovery that dies writing its note: nothing of it is durable. Its
    // run is not held back by the note (stores order appends: the note is
    // durable before any later record of the run), so it may call `charge`
    // once more, unrecorded; the next recovery's note says `charge` may
    // have been running, which covers that call too.
    let crashing = CrashingStore::new(log.clone(), CrashPoint::BeforeDurable(0));
    let rt = runtime(crashing.clone(), &saga).await;
    tokio::select! {
        biased;
        () = crashing.wait_for_crash() => {}
        _ = rt.recover() => panic!("the recovery should have crashed"),
    }
    // Let anything the recovered run would do happen, if it would.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    drop(rt);
    assert_eq!(saga.calls.count("charge 1"), 2, "{:?}", saga.calls.all());
    assert!(recovered(&entries(&only_saga(&log).await)).is_empty());

    // The next recovery crashes too: its note and `charge`'s start are
    // durable (its appends 0 and 1), `charge`'s success is not.
    let crashing = CrashingStore::new(log.clone(), CrashPoint::BeforeDurable(2));
    let rt = runtime(crashing.clone(), &saga).await;
    tokio::select! {
        biased;
        () = crashing.wait_for_crash() => {}
        _ = rt.recover() => panic!("the recovery should have crashed"),
    }
    drop(rt);
    let between = entries(&only_saga(&log).await);
    assert_eq!(recovered(&between).len(), 1);
    assert!(charge_started(between.last().unwrap()));

    let report = recover(&log, &saga).await;
    assert_eq!(report.completed, 1);
    assert_eq!(saga.calls.count("charge 1"), 4, "{:?}", saga.calls.all());

    let after = only_saga(&log).await;
    assert_eq!(after.summary.state, SagaState::Completed);
    let log_entries = entries(&after);
    let notes = recovered(&log_entries);
    assert_eq!(notes.len(), 2, "{log_entries:#?}");
    let charge_running = Entry::Recovered {
        resumes: Resumes::Forward,
        step: Some("charge".into()),
        running: vec!["charge".into()],
        compensating: vec![],
    };
    // The first from a log without `charge`'s start, the second from one
    // with it (started, never finished): both say it may have acted.
    assert_eq!(notes, [&charge_running, &charge_running]);
    assert_eq!(log_entries[k as usize], charge_running);
    assert_eq!(log_entries[k as usize + 2], charge_running);

    // The same outcome as a run without a crash: every step's output, and
    // the end.
    let outputs = |log: &[Entry]| -> Vec<(String, serde_json::Value)> {
        log.iter()
            .filter_map(|e| match e {
                Entry::StepSucceeded { step, output, .. } => Some((step.clone(), output.clone())),
                _ => None,
            })
            .collect()
    };
    assert_eq!(outputs(&log_entries), outputs(&clean));
    assert_eq!(log_entries.last(), Some(&Entry::Completed));

    let table = Inspection::of(&after).table();
    assert_eq!(
        table.matches("recovered after a crash").count(),
        2,
        "{table}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rollback_cut_off_inside_a_compensation_says_what_was_compensating() {
    let clean = clean_log(true).await;
    let k = position(
        &clean,
        |e| matches!(e, Entry::CompensationStarted { step, .. } if step == "charge"),
    );
    let saga = shop(true);
    let log = crashed_at(&saga, CrashPoint::BeforeDurable(k))
        .await
        .unwrap();
    let report = recover(&log, &saga).await;
    assert_eq!(report.compensated, 1);
    let after = only_saga(&log).await;
    assert_eq!(
        entries(&after)[k as usize],
        Entry::Recovered {
            resumes: Resumes::RollingBack,
            step: None,
            running: vec![],
            compensating: vec!["charge".into()],
        }
    );
    let table = Inspection::of(&after).table();
    assert!(
        table.contains("recovered after a crash; rolling back; may have been compensating: charge"),
        "{table}"
    );

    // Cut off once `charge` is undone: the group of `reserve` and `hold`
    // is next, both at once.
    let k = position(
        &clean,
        |e| matches!(e, Entry::CompensationSucceeded { step, .. } if step == "charge"),
    );
    let saga = shop(true);
    let log = crashed_at(&saga, CrashPoint::AfterDurable(k))
        .await
        .unwrap();
    recover(&log, &saga).await;
    assert_eq!(
        entries(&only_saga(&log).await)[k as usize + 1],
        Entry::Recovered {
            resumes: Resumes::RollingBack,
            step: None,
            running: vec![],
            compensating: vec!["reserve".into(), "hold".into()],
        }
    );
}

#[tokio::test(start_paused = true)]
async fn an_operator_resume_writes_no_recovered_record() {
    let saga = shop(false);
    let log = MemoryStore::new();
    let id = SagaId::new();
    // A log that ends stuck (what gave up does not matter to the resume).
    let def = Shop::definition();
    let created = Entry::Created {
        saga: def.name().into(),
        fingerprint: def.fingerprint(),
        input: serde_json::json!(5),
        definition: saga::log::DefinitionSnapshot::of(def),
        deadline_ms: None,
        retry: Vec::new(),
    };
    let stuck = Entry::Stuck {
        failure: saga::log::FailureSnapshot {
            step: "reserve".into(),
            compensation: None,
            phase: saga::Phase::Forward,
            error: "busy".into(),
            retryable: true,
            attempts: 3,
        },
    };
    log.append(vec![Record::new(id, 0, created), Record::new(id, 1, stuck)])
        .await
        .unwrap();
    let rt = runtime(log.clone(), &saga).await;
    rt.resume(id).await.unwrap();
    let log_entries = entries(&only_saga(&log).await);
    assert_eq!(log_entries[2], Entry::Resumed);
    assert!(recovered(&log_entries).is_empty(), "{log_entries:#?}");
    assert_eq!(log_entries.last(), Some(&Entry::Completed));
}

/// Deliberately misleading notes: replay must not read them.
fn notes() -> Vec<Entry> {
    vec![
        Entry::Recovered {
            resumes: Resumes::Forward,
            step: Some("ship".into()),
            running: vec!["ship".into(), "reserve".into()],
            compensating: vec![],
        },
        Entry::Recovered {
            resumes: Resumes::RollingBack,
            step: None,
            running: vec![],
            compensating: vec!["charge".into(), "hold".into()],
        },
        Entry::Recovered {
            resumes: Resumes::GaveUp,
            step: Some("reserve".into()),
            running: vec![],
            compensating: vec![],
        },
    ]
}

/// `log` with notes inserted: `at` lists, for each note, the number of
/// the original records before it (at least 1: after `created`).
fn with_notes(log: &[Entry], at: &[usize]) -> Vec<Entry> {
    let notes = notes();
    let mut out = Vec::new();
    for (i, entry) in log.iter().enumerate() {
        for (n, _) in at.iter().enumerate().filter(|(_, a)| **a == i) {
            out.push(notes[n % notes.len()].clone());
        }
        out.push(entry.clone());
    }
    for (n, _) in at.iter().enumerate().filter(|(_, a)| **a >= log.len()) {
        out.push(notes[n % notes.len()].clone());
    }
    out
}

/// What recovering `log` does: how it ends, what it writes after the log
/// (its own note first), and what the services were asked.
async fn recovery_of(log: &[Entry], fail_ship: bool) -> (String, Vec<Entry>, Vec<String>) {
    let id = SagaId::new();
    let store = MemoryStore::new();
    let records = log
        .iter()
        .enumerate()
        .map(|(seq, e)| Record::new(id, seq as u64, e.clone()))
        .collect();
    store.append(records).await.unwrap();
    let saga = shop(fail_ship);
    let report = recover(&store, &saga).await;
    let written = entries(&store.load(id).await.unwrap().unwrap())[log.len()..].to_vec();
    let ended = format!(
        "{} completed, {} compensated, {} stuck",
        report.completed, report.compensated, report.stuck
    );
    (ended, written, saga.calls.all())
}

/// A table of logs (every crash point of a run that completes and of one
/// that rolls back) against notes placed anywhere after `created`, any
/// number of them: each log recovers exactly as it does without them. The
/// note recovery writes itself says where the replay resumes and what it
/// found in flight, so this compares positions, then every record after.
#[tokio::test(start_paused = true)]
async fn recovered_records_do_not_change_where_a_log_resumes() {
    let mut logs = 0;
    for fail_ship in [false, true] {
        let total = clean_log(fail_ship).await.len() as u64;
        for k in 0..total {
            for point in [CrashPoint::BeforeDurable(k), CrashPoint::AfterDurable(k)] {
                let Some(durable) = crashed_at(&shop(fail_ship), point).await else {
                    panic!("{point}: the run did not crash");
                };
                let Ok(list) = durable.list(ListFilter::default()).await else {
                    unreachable!()
                };
                let Some(summary) = list.first() else {
                    continue; // the crash came before `created`
                };
                if summary.state != SagaState::Running {
                    continue;
                }
                let log = entries(&durable.load(summary.id).await.unwrap().unwrap());
                let n = log.len();
                let (ended, written, calls) = recovery_of(&log, fail_ship).await;
                assert!(
                    matches!(written.first(), Some(Entry::Recovered { .. })),
                    "{point}: {written:#?}"
                );
                // A small deterministic spread of places, from a seed.
                let mut seed = k * 2 + u64::from(fail_ship) + 1;
                let mut next = |bound: usize| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    1 + (seed >> 33) as usize % bound
                };
                let scattered: Vec<usize> = (0..4).map(|_| next(n)).collect();
                let cases: Vec<Vec<usize>> = vec![
                    vec![n],           // recovered, crashed at once
                    vec![n, n, n],     // three times over
                    (1..=n).collect(), // one after every record
                    vec![1],           // right after `created`
                    scattered,
                ];
                for at in cases {
                    let noted = with_notes(&log, &at);
                    assert_eq!(noted.len(), n + at.len());
                    let (e, w, c) = recovery_of(&noted, fail_ship).await;
                    assert_eq!(e, ended, "{point}, notes at {at:?}");
                    assert_eq!(w, written, "{point}, notes at {at:?}");
                    assert_eq!(c, calls, "{point}, notes at {at:?}");
                }
                logs += 1;
            }
        }
    }
    // Both runs were cut off at most of their records.
    assert!(logs >= 30, "{logs}");
}
