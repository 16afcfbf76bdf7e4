//! Leases: which live instance of a worker role works each partition right now.
//!
//! The instances of a role share its partitions through leases kept next to the log (for
//! JetStream, a KV bucket; in one process, [`MemoryLeases`]). [`hold`] is the loop every
//! instance runs: it keeps a membership lease of its own (so the others count it), takes
//! free or expired partitions up to its fair share, gives back what is over the share,
//! and runs a worker for each partition only while it holds that partition's lease.
//!
//! A lease is never the only guard: the workers write with deterministic commit ids and
//! expected versions, so a partition briefly worked by two instances (a holder that
//! stalled past its lease and has not noticed yet) still writes nothing twice. Leases make
//! that overlap rare and short; they are about liveness, not safety.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// How long a lease lasts without a renewal, and how often holders renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// A record that has not changed for this long (on the observer's own clock) is
    /// expired and may be taken over.
    pub lease: Duration,
    /// How often [`hold`] renews its leases and looks for partitions to take: well under
    /// `lease`, so a few lost renewals in a row do not lose a lease.
    pub renew: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            lease: Duration::from_secs(10),
            renew: Duration::from_secs(2),
        }
    }
}

/// A lease this holder won: what it must show to renew or release it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The set of leases it belongs to (a worker role).
    pub group: String,
    /// What it leases (a partition's consumer name, or a member's own name).
    pub name: String,
    /// Who holds it.
    pub holder: String,
    /// The backend's revision of the record this holder wrote last.
    pub revision: u64,
    /// When the write of that record started, on this holder's clock: the lease runs until
    /// `renewed + lease time`.
    pub renewed: Instant,
}

impl Lease {
    /// Until when this holder may work under the lease without renewing it.
    pub fn valid_until(&self, timing: LeaseTiming) -> Instant {
        self.renewed + timing.lease
    }
}

/// A live lease as another instance sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// What is leased.
    pub name: String,
    /// Who holds it.
    pub holder: String,
}

/// Leases on named things, grouped (one group per worker role).
///
/// # Contract
/// Every backend keeps these promises; the `conformance::leases` suite checks each one.
///
/// - **One winner.** Each write of a lease record is a compare-and-set on the record's
///   revision: of two instances racing to acquire or renew the same lease, at most one
///   succeeds, whatever the timing.
/// - **`acquire` → `Ok(Some(lease))`**: the record now names `holder`. The holder may
///   work under it until [`Lease::valid_until`] (counted from when the call started, on
///   the holder's clock) unless it renews. A record that is free (never written, or
///   released) or already names `holder` is taken at once.
/// - **`acquire` → `Ok(None)`**: another holder's record has changed within the lease
///   time as *this instance* observed it. Expiry is measured on the observer's own clock
///   from the moment it first saw the record's current revision (a record seen for the
///   first time counts as just written), so no two machines' clocks are compared. A holder
///   that stopped renewing is taken over after one lease time plus at most one polling
///   interval of the observer.
/// - **`renew` → `Ok(true)`**: the record still named this holder and was rewritten; the
///   lease runs a lease time from the call's start. `Ok(false)`: lost (taken over or
///   released); the holder must stop working under it at once.
/// - **Errors** ([`Error::Unavailable`]) say nothing about the lease: the holder keeps
///   working only until [`Lease::valid_until`] and then stops.
/// - **`release`** frees a lease still held by this holder, so another instance may take
///   it at once; a lease already lost is left alone (not an error).
/// - **`holders`** lists the group's records held and not expired, by the same observer
///   rule as `acquire`.
#[async_trait::async_trait]
pub trait Leases: Send + Sync + fmt::Debug + 'static {
    /// Lease time and renew interval of this backend.
    fn timing(&self) -> LeaseTiming;

    /// Takes the lease `name` of `group` for `holder` if it is free, expired or already
    /// `holder`'s.
    async fn acquire(&self, group: &str, name: &str, holder: &str) -> Result<Option<Lease>>;

    /// Renews `lease`; `Ok(false)` if it was lost.
    async fn renew(&self, lease: &mut Lease) -> Result<bool>;

    /// Frees `lease` if it is still held.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// The live leases of `group`.
    async fn holders(&self, group: &str) -> Result<Vec<Holding>>;
}

/// Remembers, per record, the revision last seen and when this instance first saw it: the
/// observer's clock that decides expiry (see the [`Leases`] contract).
#[derive(Debug, Default)]
pub struct Observed {
    seen: Mutex<HashMap<String, (u64, Instant)>>,
}

impl Observed {
    /// Whether the record `key`, now at `revision`, has been unchanged for `lease` as far as
    /// this instance knows.
    pub fn expired(&self, key: &str, revision: u64, lease: Duration) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = seen.entry(key.to_owned()).or_insert((revision, now));
        if entry.0 != revision {
            *entry = (revision, now);
        }
        now.duration_since(entry.1) >= lease
    }
}

/// Leases within one process: for the embedded (sled) and in-memory logs, which only one
/// process opens. Cheap to clone; clones share the leases, so tests can run several
/// "instances" against one store. Held in memory only: a restarted process starts with
/// every lease free, which is right, since nothing else held them.
#[derive(Debug, Clone)]
pub struct MemoryLeases {
    timing: LeaseTiming,
    records: Arc<Mutex<MemoryRecords>>,
}

#[derive(Debug, Default)]
struct MemoryRecords {
    next_revision: u64,
    /// (group, name) → (holder, revision, written at); an empty holder is a released lease.
    records: HashMap<(String, String), (String, u64, Instant)>,
}

impl MemoryLeases {
    /// Empty leases with `timing`.
    pub fn new(timing: LeaseTiming) -> Self {
        MemoryLeases {
            timing,
            records: Arc::default(),
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, MemoryRecords> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryLeases {
    fn default() -> Self {
        MemoryLeases::new(LeaseTiming::default())
    }
}

impl MemoryRecords {
    fn write(&mut self, key: (String, String), holder: &str, now: Instant) -> u64 {
        self.next_revision += 1;
        let revision = self.next_revision;
        self.records.insert(key, (holder.to_owned(), revision, now));
        revision
    }
}

#[async_trait::async_trait]
impl Leases for MemoryLeases {
    fn timing(&self) -> LeaseTiming {
        self.timing
    }

    async fn acquire(&self, group: &str, name: &str, holder: &str) -> Result<Option<Lease>> {
        check_holder(holder)?;
        let now = Instant::now();
        let key = (group.to_owned(), name.to_owned());
        let mut records = self.records();
        if let Some((current, _, written)) = records.records.get(&key) {
            let free = current.is_empty() || current == holder;
            if !free && now.duration_since(*written) < self.timing.lease {
                return Ok(None);
            }
        }
        let revision = records.write(key, holder, now);
        Ok(Some(Lease {
            group: group.to_owned(),
            name: name.to_owned(),
            holder: holder.to_owned(),
            revision,
            renewed: now,
        }))
    }

    async fn renew(&self, lease: &mut Lease) -> Result<bool> {
        let now = Instant::now();
        let key = (lease.group.clone(), lease.name.clone());
        let mut records = self.records();
        match records.records.get(&key) {
            Some((_, revision, _)) if *revision == lease.revision => {
                lease.revision = records.write(key, &lease.holder, now);
                lease.renewed = now;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let now = Instant::now();
        let key = (lease.group.clone(), lease.name.clone());
        let mut records = self.records();
        if matches!(records.records.get(&key), Some((_, r, _)) if *r == lease.revision) {
            records.write(key, "", now);
        }
        Ok(())
    }

    async fn holders(&self, group: &str) -> Result<Vec<Holding>> {
        let now = Instant::now();
        let records = self.records();
        let mut live: Vec<Holding> = records
            .records
            .iter()
            .filter(|((g, _), (holder, _, written))| {
                g == group && !holder.is_empty() && now.duration_since(*written) < self.timing.lease
            })
            .map(|((_, name), (holder, _, _))| Holding {
                name: name.clone(),
                holder: holder.clone(),
            })
            .collect();
        live.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(live)
    }
}

/// An empty holder is how a released record reads, so it cannot be a holder's name.
pub fn check_holder(holder: &str) -> Result<()> {
    if holder.is_empty() {
        return Err(Error::invalid("holder", "must not be empty"));
    }
    Ok(())
}

/// The prefix of the membership leases in a group: one per live instance.
pub const MEMBER_PREFIX: &str = "member-";

/// What [`hold`] shares: one group of leases among the instances of a role.
#[derive(Debug, Clone)]
pub struct Share {
    /// The leases.
    pub leases: Arc<dyn Leases>,
    /// The group (the role's consumer name, e.g. `assessment`).
    pub group: String,
    /// This instance's id, unique among the role's instances (a fresh UUID per start).
    pub holder: String,
    /// The lease names of the partitions (their consumer names), most preferred first.
    /// The index in this list is what `work` gets.
    pub partitions: Vec<String>,
}

/// How many of `partitions` one of `members` live instances should hold: the ceiling of
/// the even split, so every partition has room with somebody.
pub fn fair_share(partitions: usize, members: usize) -> usize {
    partitions.div_ceil(members.max(1))
}

struct Held {
    lease: Lease,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Runs `work(i, stop)` for each partition `i` of `share` while this instance holds its
/// lease, until `shutdown`; then stops every worker, waits for it (it saves its
/// checkpoint) and releases the leases so another instance takes over at once.
///
/// Every [`LeaseTiming::renew`] it renews its membership and partition leases, counts the
/// live members, and moves towards its [`fair_share`]: it takes free or expired partitions
/// (in order of preference) while under the share, and while over it gives back its least
/// preferred partitions one at a time (worker stopped and checkpoint saved before the
/// lease is released, so the next holder resumes where it stopped). A partition whose
/// renewal says the lease is lost, or which could not be renewed before it ran out, has
/// its worker stopped at once. A worker that ends on its own (a panic) is started again
/// at the next round while the lease is held.
pub async fn hold<F, Fut>(share: Share, shutdown: CancellationToken, work: F)
where
    F: Fn(usize, CancellationToken) -> Fut + Send + Sync,
    Fut: Future<Output = ()> + Send + 'static,
{
    let timing = share.leases.timing();
    let member = format!("{MEMBER_PREFIX}{}", share.holder);
    let mut membership: Option<Lease> = None;
    let mut held: HashMap<usize, Held> = HashMap::new();
    let group = share.group.as_str();
    let mut tick = tokio::time::interval(timing.renew);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => break,
        }
        // Membership first, so the share below counts this instance.
        membership = match membership.take() {
            Some(mut lease) => match share.leases.renew(&mut lease).await {
                Ok(true) => Some(lease),
                Ok(false) => None,
                Err(e) => {
                    tracing::warn!(group, error = %e, "cannot renew membership lease");
                    (Instant::now() < lease.valid_until(timing)).then_some(lease)
                }
            },
            None => None,
        };
        if membership.is_none() {
            match share.leases.acquire(group, &member, &share.holder).await {
                Ok(lease) => membership = lease,
                Err(e) => tracing::warn!(group, error = %e, "cannot take membership lease"),
            }
        }
        // Renew what is held; stop the workers of what is lost or ran out.
        let mut lost = Vec::new();
        for (&i, h) in held.iter_mut() {
            let keep = match share.leases.renew(&mut h.lease).await {
                Ok(true) => true,
                Ok(false) => {
                    tracing::warn!(group, partition = %h.lease.name, "partition lease lost to another instance");
                    false
                }
                Err(e) => {
                    let valid = Instant::now() < h.lease.valid_until(timing);
                    tracing::warn!(group, partition = %h.lease.name, error = %e, still_valid = valid, "cannot renew partition lease");
                    valid
                }
            };
            if !keep {
                lost.push(i);
            }
        }
        for i in lost {
            if let Some(h) = held.remove(&i) {
                h.stop.cancel();
                let _ = h.task.await;
            }
        }
        let members = match share.leases.holders(group).await {
            Ok(live) => {
                live.iter()
                    .filter(|h| h.name.starts_with(MEMBER_PREFIX) && h.holder != share.holder)
                    .count()
                    + 1
            }
            Err(e) => {
                tracing::warn!(group, error = %e, "cannot count the role's instances");
                continue;
            }
        };
        let target = fair_share(share.partitions.len(), members);
        if held.len() > target {
            // Give back one per round, the least preferred: the others see it free at
            // their next round, and the count settles without everyone moving at once.
            if let Some(&i) = held.keys().max() {
                let h = held.remove(&i).expect("key just seen");
                h.stop.cancel();
                let _ = h.task.await;
                if let Err(e) = share.leases.release(&h.lease).await {
                    tracing::warn!(group, partition = %h.lease.name, error = %e, "cannot release partition lease");
                }
                tracing::info!(group, partition = %h.lease.name, members, share = target, "partition given back");
            }
        }
        for (i, name) in share.partitions.iter().enumerate() {
            if held.len() >= target {
                break;
            }
            if held.contains_key(&i) {
                continue;
            }
            match share.leases.acquire(group, name, &share.holder).await {
                Ok(Some(lease)) => {
                    tracing::info!(group, partition = %name, members, share = target, "partition lease taken, worker starting");
                    let stop = shutdown.child_token();
                    let task = tokio::spawn(work(i, stop.clone()));
                    held.insert(i, Held { lease, stop, task });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(group, partition = %name, error = %e, "cannot take partition lease")
                }
            }
        }
        for (&i, h) in held.iter_mut() {
            if h.task.is_finished() && !h.stop.is_cancelled() {
                tracing::error!(group, partition = %h.lease.name, "partition worker ended on its own, restarting");
                h.task = tokio::spawn(work(i, h.stop.clone()));
            }
        }
    }
    for (_, h) in held.drain() {
        h.stop.cancel();
        let _ = h.task.await;
        if let Err(e) = share.leases.release(&h.lease).await {
            tracing::warn!(group, partition = %h.lease.name, error = %e, "cannot release partition lease");
        }
    }
    if let Some(lease) = membership {
        let _ = share.leases.release(&lease).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_leaves_room_for_every_partition() {
        assert_eq!(fair_share(2, 1), 2);
        assert_eq!(fair_share(2, 2), 1);
        assert_eq!(fair_share(2, 3), 1);
        assert_eq!(fair_share(3, 2), 2);
        assert_eq!(fair_share(4, 0), 4);
    }
}
