//! Which sources this instance streams, when several `run` processes share
//! a fleet: leases on the landlord (`postgres::leases`), renewed by a
//! heartbeat every `instances.rebalance_interval_secs`, spread evenly by
//! `model::balance`.
//!
//! **The rule, and why two instances never stream one source.** A lease
//! is taken only once the landlord's clock says it expired, and renewed
//! only by its owner. The owner measures its lease from the moment it
//! *sent* the renewal (before the landlord stamped it), and stops every
//! reader two thirds into it if no renewal got through since: the
//! landlord's expiry comes later than the owner's own deadline by at
//! least a third of a lease (5 s by default), which is the time its
//! readers have to stop. PostgreSQL adds a second fence: a slot streams to
//! one walsender at a time, so a reader that failed to stop would make the
//! new owner's `START_REPLICATION` fail (and retry), never stream twice.
//! A graceful stop releases the leases at once, after the readers stopped.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::config::{Config, Dsn};
use crate::model::balance::{plan, Plan};
use crate::postgres::leases::LeaseStore;
use crate::postgres::{connect, DbError};

/// The landlord's own reader, as a lease name.
pub(super) const LANDLORD_SOURCE: &str = "landlord";

/// A tenant's reader, as a lease name.
pub(super) fn tenant_source(id: &str) -> String {
    format!("tenant/{id}")
}

/// The landlord connection, opened again when it was lost.
async fn landlord<'a>(slot: &'a mut Option<Client>, dsn: &Dsn) -> Result<&'a Client, DbError> {
    let client = match slot.take() {
        Some(client) if !client.is_closed() => client,
        _ => connect(dsn, "landlord").await?,
    };
    Ok(slot.insert(client))
}

pub(super) struct Ownership {
    pub(super) me: String,
    lease: Duration,
    store: LeaseStore,
    landlord: Dsn,
    client: Option<Client>,
    held: BTreeSet<String>,
    live: Vec<String>,
    /// Streaming what is held is safe until then without a new heartbeat.
    valid_until: Option<Instant>,
    /// The same, for the readers (see `SourceSpec::lease_until`).
    published: tokio::sync::watch::Sender<Option<Instant>>,
}

impl Ownership {
    pub(super) fn new(config: &Config) -> Self {
        Ownership {
            me: config.instances.instance_id.clone(),
            lease: config.instances.lease,
            store: LeaseStore::new(config),
            landlord: config.landlord.dsn.clone(),
            client: None,
            held: BTreeSet::new(),
            live: Vec::new(),
            valid_until: None,
            published: tokio::sync::watch::Sender::new(None),
        }
    }

    /// What a reader watches to know its lease is current.
    pub(super) fn lease_view(&self) -> tokio::sync::watch::Receiver<Option<Instant>> {
        self.published.subscribe()
    }

    fn set_valid_until(&mut self, until: Option<Instant>) {
        self.valid_until = until;
        self.published.send_replace(until);
    }

    pub(super) fn held(&self) -> &BTreeSet<String> {
        &self.held
    }

    pub(super) fn live(&self) -> &[String] {
        &self.live
    }

    /// When the readers must have stopped unless a heartbeat gets through.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.valid_until
    }

    /// Whether this instance's heartbeat is current (`/ready`).
    pub(super) fn is_current(&self) -> bool {
        self.valid_until.is_some_and(|until| Instant::now() < until)
    }

    /// Renews this instance's heartbeat and leases, and reads who is live.
    pub(super) async fn beat(&mut self) -> Result<(), DbError> {
        let sent = Instant::now();
        let (me, lease) = (self.me.clone(), self.lease);
        let result = async {
            let client = landlord(&mut self.client, &self.landlord).await?;
            let held = self.store.heartbeat(client, &me, lease).await?;
            let live = self.store.live_instances(client).await?;
            Ok::<_, DbError>((held, live))
        }
        .await;
        let (held, live) = result.inspect_err(|_| self.client = None)?;
        self.held = held.into_iter().collect();
        self.live = live;
        self.set_valid_until(Some(sent + self.lease * 2 / 3));
        Ok(())
    }

    /// What to give up and take now, for these wanted sources.
    pub(super) fn plan(&self, wanted: &BTreeSet<String>) -> Plan {
        plan(&self.me, &self.live, wanted, &self.held)
    }

    /// Gives up `sources` (their readers have stopped), then takes what
    /// the plan allows; `held` is updated by both.
    pub(super) async fn apply(&mut self, plan: &Plan) -> Result<(), DbError> {
        let (me, lease) = (self.me.clone(), self.lease);
        if !plan.release.is_empty() {
            let client = landlord(&mut self.client, &self.landlord).await?;
            self.store.release(client, &me, &plan.release).await?;
            for source in &plan.release {
                self.held.remove(source);
            }
        }
        if plan.take > 0 {
            let client = landlord(&mut self.client, &self.landlord).await?;
            let taken = self
                .store
                .acquire(client, &me, &plan.candidates, plan.take, lease)
                .await?;
            self.held.extend(taken);
        }
        Ok(())
    }

    /// A query hung: the next heartbeat opens a fresh connection.
    pub(super) fn reconnect(&mut self) {
        self.client = None;
    }

    /// The heartbeat did not get through in time: nothing is held any
    /// more as far as this instance knows (its readers are stopping).
    pub(super) fn lost(&mut self) {
        self.held.clear();
        self.set_valid_until(None);
        self.client = None;
    }

    /// Graceful stop: every lease and the heartbeat given up at once.
    pub(super) async fn leave(&mut self) -> Result<(), DbError> {
        let me = self.me.clone();
        let client = landlord(&mut self.client, &self.landlord).await?;
        self.store.leave(client, &me).await?;
        self.lost();
        Ok(())
    }

    /// Every source's lease (for `/status` and operators).
    pub(super) async fn leases(
        &mut self,
    ) -> Result<Vec<crate::postgres::leases::SourceLease>, DbError> {
        let client = landlord(&mut self.client, &self.landlord).await?;
        self.store.all(client).await
    }
}
