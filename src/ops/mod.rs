//! What operators see of a running server: Prometheus metrics and a health check over HTTP
//! ([`http`]), the counters the poll loops update ([`metrics`]), the per-minute message rate
//! ([`rate`]) and the JSON a server answers STATUS with ([`status`]).
//!
//! The servers only call this small API from their poll loops: counters and gauges are
//! atomics, per-group label sets are made once per group, and the HTTP endpoint runs on its
//! own thread, reading the registry and [`Health`] only. Printing `zms status` is left to
//! [`crate::user`].

pub mod http;
pub mod metrics;
pub mod rate;
pub mod status;

use std::sync::{Arc, Mutex, PoisonError};

/// Whether a server can serve right now, shared between its poll loop (which writes it when
/// something changes) and the HTTP thread (which reads it for `/healthz`).
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<Problems>>);

/// What stands in the way of serving; all `None` is healthy.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Problems {
    /// The last write to the store failed (why).
    store: Option<String>,
    /// A group server that no message server has acknowledged (why).
    registration: Option<String>,
}

impl Health {
    /// Records whether the store's last write failed (`Some(why)`) or succeeded (`None`).
    pub fn set_store(&self, problem: Option<&str>) {
        let mut problems = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if problems.store.as_deref() != problem {
            problems.store = problem.map(str::to_string);
        }
    }

    /// Records whether the server is registered with a message server (`None`) or not (why).
    pub fn set_registration(&self, problem: Option<&str>) {
        let mut problems = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if problems.registration.as_deref() != problem {
            problems.registration = problem.map(str::to_string);
        }
    }

    /// Why the server cannot serve, in one line; `None` when it can.
    pub fn problem(&self) -> Option<String> {
        let problems = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match (problems.store, problems.registration) {
            (Some(store), _) => Some(format!("store unwritable: {store}")),
            (None, Some(why)) => Some(format!("not registered with a message server: {why}")),
            (None, None) => None,
        }
        // One line, whatever the store's error said.
        .map(|why| why.replace(['\n', '\r'], " "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_names_the_store_first_and_clears() {
        let health = Health::default();
        assert_eq!(health.problem(), None);
        health.set_registration(Some("no answer from message server 127.0.0.1:5555"));
        assert!(health.problem().unwrap().starts_with("not registered"));
        health.set_store(Some("disk I/O error"));
        assert_eq!(
            health.problem().as_deref(),
            Some("store unwritable: disk I/O error")
        );
        health.set_store(None);
        health.set_registration(None);
        assert_eq!(health.problem(), None);
    }
}
