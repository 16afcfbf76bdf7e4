//! The person index: every member's cases, keyed by the keyed hash of the identity
//! number ([`PersonKey`]), so the index (and the person streams of the claims, see
//! `claim.rs`) never hold an identity number. A projection of the log, rebuilt on start
//! from the submissions, amendments, re-assessments, withdrawals and closings, and kept
//! current by a subscription.
//!
//! A member an amendment adds is indexed under the case from the amendment on (a member
//! it leaves out stays indexed: the case named them). Such a member is not claimed on
//! their person stream (the case is already open, no submission races it), but a later
//! submission naming them meets the case here: the claims consult the index for open
//! cases a person stream does not know.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use hmac::{Hmac, Mac};
use onecity_domain::case::CaseStatus;
use onecity_domain::events::{
    CaseEvent, APPLICATION_AMENDED, APPLICATION_SUBMITTED, APPLICATION_WITHDRAWN, CASE_CLOSED,
    ELIGIBILITY_REASSESSED,
};
use onecity_domain::IdNumber;
use onecity_eventlog::{EventLog, RecordedEvent};
use onecity_proto::v1 as pb;
use sha2::Sha256;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Shortest key accepted, in bytes (the HMAC-SHA256 block is 64; RFC 2104 asks for at
/// least the output length).
pub const MIN_KEY_BYTES: usize = 32;

/// The secret key of the person index: HMAC-SHA256 of an identity number under it names
/// the person in the index and in the log. Identity numbers are few enough to enumerate
/// (region, birth date, sequence), so an unkeyed hash would give them all back; without
/// the key the hashes say nothing. Every intake process of a deployment must hold the
/// same key, or their claims on one person would not meet.
#[derive(Clone)]
pub struct PersonKey(Arc<[u8]>);

impl fmt::Debug for PersonKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonKey(****)")
    }
}

/// A person as the index and the log name them: HMAC-SHA256 of the identity number.
pub type PersonHash = [u8; 32];

impl PersonKey {
    /// A key of at least [`MIN_KEY_BYTES`] bytes; `None` for a shorter one.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= MIN_KEY_BYTES).then(|| PersonKey(bytes.into()))
    }

    /// The key written in a key file: hexadecimal, surrounding whitespace ignored (as
    /// `openssl rand -hex 32` writes it).
    pub fn from_hex(text: &str) -> Option<Self> {
        PersonKey::new(&hex::decode(text.trim()).ok()?)
    }

    /// The person's hash: HMAC-SHA256 of the canonical identity number.
    pub fn hash(&self, id: &IdNumber) -> PersonHash {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("hmac takes any key length");
        mac.update(id.expose().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The hash of a stored identity number; `None` when it does not parse (a stored
    /// application was validated, so only damage gives one).
    pub fn hash_str(&self, id_number: &str) -> Option<PersonHash> {
        IdNumber::parse(id_number).ok().map(|id| self.hash(&id))
    }
}

/// One case as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedCase {
    /// The case.
    pub case_id: Uuid,
    /// Its status, as of the last event applied.
    pub status: CaseStatus,
    /// District of the application.
    pub district_code: String,
    /// Submission date, `YYYY-MM-DD` (UTC).
    pub submitted_date: String,
}

/// One case naming a person: the case and the person's relationship in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonCase {
    /// The case.
    pub case: IndexedCase,
    /// `Relationship` value of the person in the case.
    pub relationship: i32,
}

#[derive(Debug, Default)]
struct State {
    /// Person → (case, relationship), in submission order.
    people: HashMap<PersonHash, Vec<(Uuid, i32)>>,
    cases: HashMap<Uuid, IndexedCase>,
}

/// A closed case is open again (amended while an approval is in force, or re-assessed),
/// as in the case fold.
fn reopen(st: &mut State, case_id: Uuid) {
    if let Some(c) = st.cases.get_mut(&case_id) {
        if c.status == CaseStatus::Closed {
            c.status = CaseStatus::Open;
        }
    }
}

/// The person index (see the module documentation).
#[derive(Debug)]
pub struct PersonIndex {
    key: PersonKey,
    state: RwLock<State>,
    /// Position of the last event applied.
    applied: watch::Sender<u64>,
}

impl onecity_eventlog::projection::Projection for PersonIndex {
    fn name(&self) -> &'static str {
        "person index"
    }
    fn prefixes(&self) -> Vec<&'static str> {
        FOLLOWS.to_vec()
    }
    fn applied(&self) -> u64 {
        PersonIndex::applied(self)
    }
    fn apply(&self, events: &[RecordedEvent]) {
        PersonIndex::apply(self, events);
    }
}

/// The event types the index follows.
pub const FOLLOWS: [&str; 5] = [
    APPLICATION_SUBMITTED,
    APPLICATION_AMENDED,
    ELIGIBILITY_REASSESSED,
    APPLICATION_WITHDRAWN,
    CASE_CLOSED,
];

impl PersonIndex {
    /// An empty index under `key`, fed by nothing: [`PersonIndex::apply`] feeds it.
    pub fn new(key: PersonKey) -> Self {
        PersonIndex {
            key,
            state: RwLock::default(),
            applied: watch::channel(0).0,
        }
    }

    /// Starts the projection: replays the log's submissions, withdrawals and closings
    /// from the beginning, then follows them until `shutdown`.
    pub fn start(
        log: Arc<dyn EventLog>,
        key: PersonKey,
        shutdown: CancellationToken,
    ) -> Arc<PersonIndex> {
        onecity_eventlog::projection::start(Arc::new(PersonIndex::new(key)), log, shutdown)
    }

    /// The key the index hashes with.
    pub fn key(&self) -> &PersonKey {
        &self.key
    }

    /// Position of the last event applied (0 before any).
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Applies events in position order (others than [`FOLLOWS`] are skipped). An event
    /// at or below the applied position is skipped too, so a replay changes nothing.
    pub fn apply(&self, events: &[RecordedEvent]) {
        let mut last = None;
        {
            let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
            let applied = self.applied();
            for e in events.iter().filter(|e| e.position > applied) {
                last = Some(e.position);
                if !FOLLOWS.contains(&e.event_type.as_str()) {
                    continue;
                }
                // A re-assessment re-opens a closed case as the case fold does; its
                // payload (every programme's assessment) is not needed for that.
                if e.event_type == ELIGIBILITY_REASSESSED {
                    reopen(&mut st, e.case_id);
                    continue;
                }
                let event = match CaseEvent::decode(&e.event_type, &e.payload) {
                    Ok(Some(event)) => event,
                    Ok(None) => continue,
                    Err(err) => {
                        tracing::error!(error = %err, position = e.position, "undecodable event skipped by the person index");
                        continue;
                    }
                };
                match event {
                    CaseEvent::ApplicationSubmitted(s) => self.submitted(&mut st, e.case_id, &s),
                    CaseEvent::ApplicationAmended(a) => {
                        reopen(&mut st, e.case_id);
                        if let Some(app) = &a.application {
                            self.members(&mut st, e.case_id, app);
                        }
                    }
                    CaseEvent::ApplicationWithdrawn(_) => {
                        if let Some(c) = st.cases.get_mut(&e.case_id) {
                            c.status = CaseStatus::Withdrawn;
                        }
                    }
                    CaseEvent::CaseClosed(_) => {
                        if let Some(c) = st.cases.get_mut(&e.case_id) {
                            if c.status == CaseStatus::Open {
                                c.status = CaseStatus::Closed;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(p) = last {
            self.applied.send_replace(p);
        }
    }

    fn submitted(&self, st: &mut State, case_id: Uuid, s: &pb::ApplicationSubmitted) {
        let Some(app) = &s.application else { return };
        if st.cases.contains_key(&case_id) {
            return;
        }
        st.cases.insert(
            case_id,
            IndexedCase {
                case_id,
                status: CaseStatus::Open,
                district_code: app.district_code.clone(),
                submitted_date: s.submitted_at.get(..10).unwrap_or_default().to_owned(),
            },
        );
        self.members(st, case_id, app);
    }

    /// Indexes `app`'s members under `case_id` (each once per case).
    fn members(&self, st: &mut State, case_id: Uuid, app: &pb::Application) {
        if !st.cases.contains_key(&case_id) {
            return;
        }
        for m in &app.members {
            match self.key.hash_str(&m.id_number) {
                Some(person) => {
                    let cases = st.people.entry(person).or_default();
                    if !cases.iter().any(|(c, _)| *c == case_id) {
                        cases.push((case_id, m.relationship));
                    }
                }
                None => {
                    tracing::error!(%case_id, "a stored member's identity number does not parse; not indexed")
                }
            }
        }
    }

    /// The cases naming `person`, in the order they first named them.
    pub fn cases_of(&self, person: &PersonHash) -> Vec<PersonCase> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        st.people
            .get(person)
            .into_iter()
            .flatten()
            .filter_map(|(case_id, relationship)| {
                Some(PersonCase {
                    case: st.cases.get(case_id)?.clone(),
                    relationship: *relationship,
                })
            })
            .collect()
    }

    /// The status of `case_id` as indexed, if the index has it.
    pub fn status(&self, case_id: Uuid) -> Option<CaseStatus> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        st.cases.get(&case_id).map(|c| c.status)
    }

    /// Waits until the index has applied position `position` or later.
    pub async fn wait_applied(&self, position: u64) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|p| *p >= position).await;
    }
}

#[cfg(test)]
mod tests {
    use onecity_domain::fixtures::sample_application;
    use proptest::prelude::*;

    use super::*;

    fn key(b: u8) -> PersonKey {
        PersonKey::new(&[b; 32]).unwrap()
    }

    fn submitted(app: pb::Application, at: &str) -> CaseEvent {
        CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted {
            application: Some(app),
            submitted_at: at.into(),
            ..Default::default()
        })
    }

    #[test]
    fn the_hash_is_keyed_and_of_the_canonical_number() {
        let id = IdNumber::parse("11010519491231002X").unwrap();
        let lower = IdNumber::parse("11010519491231002x").unwrap();
        assert_eq!(key(1).hash(&id), key(1).hash(&lower));
        assert_ne!(key(1).hash(&id), key(2).hash(&id));
        // RFC 4231-style check against an independent computation of HMAC-SHA256.
        let mut mac = Hmac::<Sha256>::new_from_slice(&[1; 32]).unwrap();
        mac.update(b"11010519491231002X");
        let want: PersonHash = mac.finalize().into_bytes().into();
        assert_eq!(key(1).hash(&id), want);
        assert!(PersonKey::new(&[0; 31]).is_none());
        assert!(PersonKey::from_hex(&"ab".repeat(32)).is_some());
        assert!(PersonKey::from_hex(&format!(" {}\n", "0f".repeat(40))).is_some());
        assert!(PersonKey::from_hex(&"ab".repeat(31)).is_none());
        assert!(PersonKey::from_hex(&"zz".repeat(32)).is_none());
        assert_eq!(format!("{:?}", key(1)), "PersonKey(****)");
    }

    #[test]
    fn the_index_follows_submissions_and_status_and_holds_no_number() {
        let index = PersonIndex::new(key(1));
        let app = sample_application();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut other = sample_application();
        other.district_code = "120104".into();
        other.members.truncate(1);
        index.apply(&[
            RecordedEvent::for_test(a, 1, &submitted(app.clone(), "2026-03-01T08:00:00Z")),
            RecordedEvent::for_test(b, 3, &submitted(other, "2026-03-02T08:00:00Z")),
        ]);
        let first = IdNumber::parse(&app.members[0].id_number).unwrap();
        let second = IdNumber::parse(&app.members[1].id_number).unwrap();
        let found = index.cases_of(&key(1).hash(&first));
        let ids: Vec<Uuid> = found.iter().map(|c| c.case.case_id).collect();
        assert_eq!(ids, [a, b]);
        assert_eq!(found[1].case.district_code, "120104");
        assert_eq!(found[1].case.submitted_date, "2026-03-02");
        assert_eq!(found[0].relationship, app.members[0].relationship);
        assert_eq!(index.cases_of(&key(1).hash(&second)).len(), 1);
        // Under another key nothing is found.
        assert!(index.cases_of(&key(2).hash(&first)).is_empty());
        // Status changes; a replay of what was applied changes nothing.
        let withdrawn = CaseEvent::ApplicationWithdrawn(pb::ApplicationWithdrawn::default());
        let closed = CaseEvent::CaseClosed(pb::CaseClosed::default());
        index.apply(&[
            RecordedEvent::for_test(a, 5, &withdrawn),
            RecordedEvent::for_test(b, 6, &closed),
        ]);
        index.apply(&[RecordedEvent::for_test(
            a,
            1,
            &submitted(app.clone(), "2026-03-09T00:00:00Z"),
        )]);
        assert_eq!(index.status(a), Some(CaseStatus::Withdrawn));
        assert_eq!(index.status(b), Some(CaseStatus::Closed));
        assert_eq!(index.cases_of(&key(1).hash(&first)).len(), 2);
        // A closing after a withdrawal does not turn it into closed.
        index.apply(&[RecordedEvent::for_test(a, 7, &closed)]);
        assert_eq!(index.status(a), Some(CaseStatus::Withdrawn));
        assert_eq!(index.applied(), 7);
        let st = index.state.read().unwrap();
        let text = format!("{:?}", (&st.people, &st.cases));
        for m in &app.members {
            assert!(!text.contains(&m.id_number), "{text}");
        }
    }

    #[test]
    fn an_amendment_indexes_added_members_and_reopens_a_closed_case() {
        let index = PersonIndex::new(key(1));
        let app = sample_application();
        let case = Uuid::now_v7();
        index.apply(&[RecordedEvent::for_test(
            case,
            1,
            &submitted(app.clone(), "2026-03-01T08:00:00Z"),
        )]);
        let closed = CaseEvent::CaseClosed(pb::CaseClosed::default());
        index.apply(&[RecordedEvent::for_test(case, 2, &closed)]);
        assert_eq!(index.status(case), Some(CaseStatus::Closed));
        let mut amended = app.clone();
        let mut newborn = amended.members[2].clone();
        newborn.id_number = onecity_domain::fixtures::valid_id_number(
            "120103",
            chrono::NaiveDate::from_ymd_opt(2026, 1, 2).unwrap(),
            77,
        );
        amended.members.push(newborn.clone());
        let event = CaseEvent::ApplicationAmended(pb::ApplicationAmended {
            application: Some(amended),
            reason: "a child was born".into(),
            ..Default::default()
        });
        index.apply(&[
            RecordedEvent::for_test(case, 3, &event),
            RecordedEvent::for_test(case, 4, &event),
        ]);
        assert_eq!(index.status(case), Some(CaseStatus::Open));
        let added = key(1).hash_str(&newborn.id_number).unwrap();
        let found = index.cases_of(&added);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].case.case_id, case);
        // A member already named is not listed twice.
        let first = key(1).hash_str(&app.members[0].id_number).unwrap();
        assert_eq!(index.cases_of(&first).len(), 1);
        // A re-assessment re-opens a closed case too, without its payload.
        index.apply(&[RecordedEvent::for_test(case, 5, &closed)]);
        let mut reassessed = RecordedEvent::for_test(case, 6, &closed);
        reassessed.event_type = ELIGIBILITY_REASSESSED.into();
        reassessed.payload = vec![0xff];
        index.apply(&[reassessed]);
        assert_eq!(index.status(case), Some(CaseStatus::Open));
    }

    proptest! {
        /// Whatever the order of chunks, the index finds each person's cases exactly,
        /// and distinct numbers never share a hash.
        #[test]
        fn each_person_finds_exactly_their_cases(
            households in proptest::collection::vec(proptest::sample::subsequence((0..6usize).collect::<Vec<_>>(), 1..=3), 1..12),
            chunk in 1..5usize,
        ) {
            let pool = [
                "11010519491231002X", "110105194912310037", "440524188001010014",
                "11010519491231002X", "120103198003150016", "120103198211020027",
            ];
            let ids: Vec<IdNumber> = pool.iter().filter_map(|s| IdNumber::parse(s).ok()).collect();
            let index = PersonIndex::new(key(9));
            let mut events = Vec::new();
            let mut want: HashMap<PersonHash, Vec<Uuid>> = HashMap::new();
            for (i, members) in households.iter().enumerate() {
                let case_id = Uuid::from_u128(i as u128 + 1);
                let mut app = sample_application();
                let mut seen = std::collections::BTreeSet::new();
                app.members = members
                    .iter()
                    .filter_map(|&m| ids.get(m % ids.len()))
                    .filter(|id| seen.insert(id.expose().to_owned()))
                    .map(|id| pb::Person { id_number: id.expose().into(), ..Default::default() })
                    .collect();
                for m in &app.members {
                    want.entry(key(9).hash_str(&m.id_number).unwrap()).or_default().push(case_id);
                }
                events.push(RecordedEvent::for_test(case_id, i as u64 + 1, &submitted(app, "2026-01-01T00:00:00Z")));
            }
            for c in events.chunks(chunk) {
                index.apply(c);
            }
            for id in &ids {
                let h = key(9).hash(id);
                let got: Vec<Uuid> = index.cases_of(&h).iter().map(|c| c.case.case_id).collect();
                prop_assert_eq!(got, want.get(&h).cloned().unwrap_or_default());
            }
        }
    }
}
