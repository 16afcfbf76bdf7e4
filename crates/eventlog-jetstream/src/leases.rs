//! [`Leases`] on a KV bucket of the log's server, `<prefix>-leases`: one record per lease,
//! key = hex of the group and hex of the name, value = the holder (empty once released).
//!
//! **One winner.** Every write is a compare-and-set made race-free the same way as the
//! log's appends: the writer reads the bucket's last sequence, then the record, and
//! publishes only if the record is at the expected revision, with
//! `Nats-Expected-Last-Sequence` set to the sequence it read. The server checks that
//! header when it applies the message (in a cluster, in Raft order on every replica), so a
//! write lands only if nothing at all was written to the bucket since its writer looked.
//! The per-subject `Nats-Expected-Last-Subject-Sequence` is not used: in 2.9 clusters its
//! check runs before proposing and two writers can both pass it. A write that loses the
//! race on the bucket's sequence, not on the record, tries again.
//!
//! **Expiry** is decided on the observer's clock (see [`Observed`]): a record whose revision
//! has not changed for the lease time, since this process first saw that revision, is
//! expired. Records of instances that died are dropped by the bucket's `max_age` after a
//! day, so the bucket does not grow with every restart.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream;
use async_nats::HeaderMap;
use onecity_eventlog::leases::{check_holder, Holding, Lease, LeaseTiming, Leases, Observed};
use onecity_eventlog::{Error, Result};
use tokio::time::Instant;

use crate::read::Get;
use crate::streams::{ensure_stream, kv_stream_config};
use crate::{publish_failed, wire, Inner, JetStreamLog};

/// Rounds a lease write tries while other writes to the bucket keep moving its sequence.
const MAX_ROUNDS: usize = 32;
/// How long a record nobody rewrites stays in the bucket.
const RECORD_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// The leases of one JetStream log (see the module documentation).
#[derive(Debug)]
pub struct JetStreamLeases {
    inner: Arc<Inner>,
    bucket: stream::Stream,
    timing: LeaseTiming,
    observed: Observed,
}

pub(crate) fn leases_stream_config(bucket: &str, replicas: usize) -> stream::Config {
    stream::Config {
        max_age: RECORD_MAX_AGE,
        ..kv_stream_config(bucket, 1, replicas)
    }
}

impl JetStreamLog {
    /// The leases of this log, with `timing`; creates (or checks) their bucket, with as many
    /// replicas as the log's streams.
    pub async fn leases(&self, timing: LeaseTiming) -> Result<JetStreamLeases> {
        let replicas = self.inner.log.cached_info().config.num_replicas;
        let bucket = ensure_stream(
            &self.inner.js,
            leases_stream_config(&self.inner.names.leases_bucket(), replicas),
        )
        .await?;
        Ok(JetStreamLeases {
            inner: Arc::clone(&self.inner),
            bucket,
            timing,
            observed: Observed::default(),
        })
    }
}

/// A lease record as read: its revision (stream sequence, 0 = none) and holder.
struct Record {
    revision: u64,
    holder: String,
}

impl JetStreamLeases {
    async fn record(&self, subject: &str) -> Result<Record> {
        Ok(
            match self.inner.get(&self.bucket, Get::Last(subject)).await? {
                None => Record {
                    revision: 0,
                    holder: String::new(),
                },
                Some(m) => Record {
                    revision: m.sequence,
                    holder: String::from_utf8_lossy(&m.payload).into_owned(),
                },
            },
        )
    }

    /// Writes `holder` to the record at `subject` if it is at `expected`: the new revision,
    /// or `None` if the record had moved.
    async fn write(&self, subject: &str, holder: &str, expected: u64) -> Result<Option<u64>> {
        for _ in 0..MAX_ROUNDS {
            // The bucket's sequence before the record: a write to the record after this
            // read moves the sequence, and the publish below is refused.
            let last = self
                .inner
                .get(&self.bucket, Get::Last(">"))
                .await?
                .map_or(0, |m| m.sequence);
            if self.record(subject).await?.revision != expected {
                return Ok(None);
            }
            let mut headers = HeaderMap::new();
            headers.insert(wire::NATS_EXPECTED_LAST_SEQ, last.to_string());
            match self
                .inner
                .publish(subject.to_owned(), headers, holder.to_owned().into())
                .await
            {
                Ok(ack) => return Ok(Some(ack.sequence)),
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => continue,
                Err(e) => return Err(publish_failed("write lease", &e)),
            }
        }
        Err(Error::Unavailable(
            "lease bucket too busy: every write attempt was overtaken".into(),
        ))
    }
}

#[async_trait::async_trait]
impl Leases for JetStreamLeases {
    fn timing(&self) -> LeaseTiming {
        self.timing
    }

    async fn acquire(&self, group: &str, name: &str, holder: &str) -> Result<Option<Lease>> {
        check_holder(holder)?;
        let started = Instant::now();
        let subject = self.inner.names.lease_subject(group, name);
        let current = self.record(&subject).await?;
        let free = current.holder.is_empty() || current.holder == holder;
        if !free
            && !self
                .observed
                .expired(&subject, current.revision, self.timing.lease)
        {
            return Ok(None);
        }
        Ok(self
            .write(&subject, holder, current.revision)
            .await?
            .map(|revision| Lease {
                group: group.to_owned(),
                name: name.to_owned(),
                holder: holder.to_owned(),
                revision,
                renewed: started,
            }))
    }

    async fn renew(&self, lease: &mut Lease) -> Result<bool> {
        let started = Instant::now();
        let subject = self.inner.names.lease_subject(&lease.group, &lease.name);
        match self.write(&subject, &lease.holder, lease.revision).await? {
            Some(revision) => {
                lease.revision = revision;
                lease.renewed = started;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let subject = self.inner.names.lease_subject(&lease.group, &lease.name);
        self.write(&subject, "", lease.revision).await.map(drop)
    }

    async fn holders(&self, group: &str) -> Result<Vec<Holding>> {
        let filter = self.inner.names.lease_group_filter(group);
        let mut live = Vec::new();
        // The bucket keeps one message per record, so walking the group's subject in
        // sequence order visits each record once.
        let mut next = 1;
        while let Some(m) = self
            .inner
            .get(&self.bucket, Get::Next(&filter, next))
            .await?
        {
            next = m.sequence + 1;
            let subject = m.subject.to_string();
            let holder = String::from_utf8_lossy(&m.payload).into_owned();
            if holder.is_empty()
                || self
                    .observed
                    .expired(&subject, m.sequence, self.timing.lease)
            {
                continue;
            }
            if let Some(name) = wire::lease_name(&subject) {
                live.push(Holding { name, holder });
            }
        }
        live.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(live)
    }
}
