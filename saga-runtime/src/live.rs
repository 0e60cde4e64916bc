//! The durable sagas this process is running right now.
//!
//! In the log, a saga this runtime is running and one a crash left
//! unfinished look the same: both are `running`. Recovery must resume only
//! the second kind, or a step would run twice at once. So every durable run
//! claims its saga id here for as long as it runs, and recovery skips (and
//! operators' commands refuse) the ids that are claimed. Runs without a
//! store never come here: the in-memory path takes no lock for this.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::SagaId;

/// The ids claimed by the runs of one runtime (and its clones).
#[derive(Clone, Default)]
pub(crate) struct LiveSet {
    ids: Arc<Mutex<HashSet<SagaId>>>,
}

impl LiveSet {
    fn lock(&self) -> MutexGuard<'_, HashSet<SagaId>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `id` for a run; `None` if a run of this runtime holds it.
    pub(crate) fn claim(&self, id: SagaId) -> Option<Claim> {
        self.lock().insert(id).then(|| Claim {
            set: self.clone(),
            id,
        })
    }

    /// Whether a run of this runtime holds `id`.
    pub(crate) fn contains(&self, id: SagaId) -> bool {
        self.lock().contains(&id)
    }
}

/// A run's hold on its saga id, released when the run ends, however it
/// ends (returned, failed, panicked or dropped).
pub(crate) struct Claim {
    set: LiveSet,
    id: SagaId,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_held_once_until_its_claim_is_dropped() {
        let live = LiveSet::default();
        let id = SagaId::new();
        let claim = live.claim(id).expect("free");
        assert!(live.contains(id));
        assert!(live.claim(id).is_none());
        assert!(live.claim(SagaId::new()).is_some());
        drop(claim);
        assert!(!live.contains(id));
        assert!(live.claim(id).is_some());
    }
}
