//! Observability: a `tracing` span per saga and one per attempt of each step
//! and compensation, the attempts' spans children of their saga's. What a
//! step logs is inside its attempt's span, and so is the saga's own account
//! of a failed attempt; the decision to roll back is inside the saga's span.
//!
//! With the usual INFO filter the attempts' spans (DEBUG) do not exist, and
//! what a step logs is inside its saga's span instead.
//!
//! A small subscriber records, for each span and event, the span it belongs
//! to (an explicit parent, or else the one entered at that moment).

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use saga::prelude::*;
use support::{Boom, runtime_with};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// What the subscriber saw.
#[derive(Default)]
struct Seen {
    /// Per span (by id): its name, and its parent's id.
    spans: HashMap<u64, (&'static str, Option<u64>)>,
    /// Per event: its message, and the id of the span it belongs to.
    events: Vec<(String, Option<u64>)>,
    /// The spans entered on this (single) thread, innermost last.
    entered: Vec<u64>,
}

impl Seen {
    /// The name of span `id`'s parent.
    fn parent_name(&self, id: u64) -> Option<&'static str> {
        let parent = self.spans[&id].1?;
        Some(self.spans[&parent].0)
    }

    /// Ids of the spans named `name`.
    fn named(&self, name: &str) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .spans
            .iter()
            .filter(|(_, (n, _))| *n == name)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// The name of the span the event whose message contains `text` belongs to.
    fn span_of_event(&self, text: &str) -> Option<&'static str> {
        let (_, span) = self
            .events
            .iter()
            .find(|(message, _)| message.contains(text))
            .unwrap_or_else(|| panic!("no event says `{text}`"));
        Some(self.spans[&(*span)?].0)
    }
}

/// Records what is at `max` level or more severe.
#[derive(Clone)]
struct Recorder {
    seen: Arc<Mutex<Seen>>,
    max: Level,
}

/// Collects an event's `message` field.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Recorder {
    // Asked at every call, not cached per call site: tests run in parallel,
    // each with its own subscriber and filter.
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut seen = self.seen.lock().unwrap();
        let id = seen.spans.len() as u64 + 1;
        let parent = if attrs.is_contextual() {
            seen.entered.last().copied()
        } else {
            attrs.parent().map(Id::into_u64)
        };
        seen.spans.insert(id, (attrs.metadata().name(), parent));
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let mut seen = self.seen.lock().unwrap();
        let span = if event.is_contextual() {
            seen.entered.last().copied()
        } else {
            event.parent().map(Id::into_u64)
        };
        seen.events.push((message.0, span));
    }

    fn enter(&self, span: &Id) {
        self.seen.lock().unwrap().entered.push(span.into_u64());
    }

    fn exit(&self, _: &Id) {
        self.seen.lock().unwrap().entered.pop();
    }
}

/// Two steps; the second fails once (retryable), then for good if `fail`.
struct Traced {
    fail: bool,
}

#[saga(input = u32)]
impl Traced {
    #[step(compensate = undo_first)]
    async fn first(&self, input: &u32) -> Result<u32, Boom> {
        tracing::info!("inside first");
        Ok(*input)
    }
    async fn undo_first(&self, first: &u32) -> Result<(), Boom> {
        tracing::info!("inside undo_first {first}");
        Ok(())
    }

    #[step(pivot, retry(attempts = 2, backoff = fixed("1ms")))]
    async fn second(&self, first: &u32, cx: &StepContext) -> Result<u32, Boom> {
        if cx.attempt() == 1 || self.fail {
            return Err(Boom("second refused"));
        }
        Ok(first + 1)
    }
}

/// Runs one `Traced` saga on this thread under a subscriber recording
/// what is at `max` level or more severe.
fn traced_run(fail: bool, max: Level) -> Seen {
    let recorder = Recorder {
        seen: Arc::default(),
        max,
    };
    tracing::subscriber::with_default(recorder.clone(), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let runtime = runtime_with(&Arc::new(Traced { fail })).await;
            let outcome = runtime.run::<Traced>(7).await.unwrap();
            assert_eq!(outcome.is_completed(), !fail);
        });
    });
    std::mem::take(&mut *recorder.seen.lock().unwrap())
}

#[test]
fn each_step_attempt_has_a_span_inside_its_saga_span() {
    let seen = traced_run(false, Level::TRACE);
    let sagas = seen.named("saga");
    assert_eq!(sagas.len(), 1, "one saga span");
    // first once, second twice (a retry).
    let steps = seen.named("step");
    assert_eq!(steps.len(), 3);
    for step in steps {
        assert_eq!(seen.parent_name(step), Some("saga"));
    }
    assert_eq!(seen.span_of_event("inside first"), Some("step"));
    assert_eq!(seen.span_of_event("step failed"), Some("step"));
}

#[test]
fn compensations_and_the_rollback_are_inside_the_saga_span() {
    let seen = traced_run(true, Level::TRACE);
    let compensations = seen.named("compensation");
    assert_eq!(compensations.len(), 1);
    assert_eq!(seen.parent_name(compensations[0]), Some("saga"));
    assert_eq!(
        seen.span_of_event("inside undo_first"),
        Some("compensation")
    );
    assert_eq!(seen.span_of_event("rolling back"), Some("saga"));
}

#[test]
fn with_an_info_filter_what_a_step_logs_is_inside_its_saga_span() {
    let seen = traced_run(false, Level::INFO);
    assert_eq!(seen.named("saga").len(), 1);
    assert!(seen.named("step").is_empty(), "attempt spans are DEBUG");
    assert_eq!(seen.span_of_event("inside first"), Some("saga"));
    assert_eq!(seen.span_of_event("step failed"), Some("saga"));

    let seen = traced_run(true, Level::INFO);
    assert_eq!(seen.span_of_event("inside undo_first"), Some("saga"));
    assert_eq!(seen.span_of_event("rolling back"), Some("saga"));
}
