//! Realistic generated households: 1–6 members with valid GB 11643 identity numbers, varied
//! ages, incomes, housing, disabilities and emergencies, so that the assessment produces many
//! different programme mixes. Every household is checked with the real rules and nudged until
//! at least one programme is referred, so every submitted case ends in a referral (the `route`
//! scenario waits for one).
//!
//! Households are generated once into a [`Pool`] before any measurement: generating and
//! assessing costs client CPU that must not be charged to the server under test.

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate, TimeDelta};
use onecity_domain::fixtures::valid_id_number;
use onecity_domain::{validate_application, DistrictCode};
use onecity_eligibility::{decide, explain, Catalogue, Detail, LeanAssessment, PolicyBook};
use onecity_proto::prost::Message as _;
use onecity_proto::v1 as pb;

/// A small deterministic generator (splitmix64): reproducible runs, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        lo + (self.next_u64() % ((hi - lo) as u64 + 1)) as i64
    }

    /// True with probability `p` (0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// One generated household with what the real rules say about it.
#[derive(Debug, Clone)]
pub struct Household {
    /// The application as a terminal sends it.
    pub application: pb::Application,
    /// Its validated form (what intake stores).
    pub validated: onecity_domain::Application,
    /// All twelve assessments under the policy in force on the application date, as the
    /// log stores them (rule codes and inputs, no words).
    pub lean: Vec<LeanAssessment>,
    /// Id of that policy version.
    pub policy_version: String,
}

impl Household {
    /// Programmes referred (ELIGIBLE or NEEDS_REVIEW).
    pub fn referred(&self) -> impl Iterator<Item = &LeanAssessment> {
        self.lean.iter().filter(|a| a.outcome.is_referred())
    }
}

/// Makes `application`'s members people of region of first registration `region` (six
/// digits; any number is a region): the same household with another `region` names other
/// people, while birth dates, and so every rule's outcome, stay the same. Intake keeps one
/// open case per person, so a pooled household sent twice as it is would be a duplicate.
pub fn with_region(application: &mut pb::Application, region: u64) {
    let region = format!("{:06}", 100_000 + region % 900_000);
    for m in &mut application.members {
        if let Some(rest) = m.id_number.get(6..17) {
            let first17 = format!("{region}{rest}");
            if let Some(check) = onecity_domain::IdNumber::check_character(&first17) {
                m.id_number = format!("{first17}{check}");
            }
        }
    }
}

/// Pre-generated households, reused round-robin (each submission still opens a new case).
#[derive(Debug)]
pub struct Pool {
    /// The households.
    pub households: Vec<Household>,
}

impl Pool {
    /// `n` households from `seed`, each with at least one referral.
    pub fn generate(n: usize, seed: u64) -> anyhow::Result<Pool> {
        Self::generate_on(n, seed, onecity_domain::today())
    }

    /// [`Pool::generate`] as it would run on `today` (application dates fall before it):
    /// the same households on every run, for the golden tests of the explanations.
    pub fn generate_on(n: usize, seed: u64, today: NaiveDate) -> anyhow::Result<Pool> {
        let policies = PolicyBook::embedded_default();
        let catalogue = Catalogue::embedded();
        let mut rng = Rng::new(seed);
        let mut households = Vec::with_capacity(n);
        for _ in 0..n {
            households.push(household(&mut rng, today, &policies, &catalogue)?);
        }
        Ok(Pool { households })
    }

    /// The `i`-th household, cycling.
    pub fn get(&self, i: u64) -> &Household {
        &self.households[(i % self.households.len() as u64) as usize]
    }

    /// One line describing the mix, so a reader can see the data is varied.
    pub fn describe(&self) -> String {
        let n = self.households.len().max(1);
        let mixes: BTreeSet<Vec<&str>> = self
            .households
            .iter()
            .map(|h| h.referred().map(|a| a.programme.as_str()).collect())
            .collect();
        let members: usize = self
            .households
            .iter()
            .map(|h| h.application.members.len())
            .sum();
        let referrals: usize = self.households.iter().map(|h| h.referred().count()).sum();
        let min_ref = self
            .households
            .iter()
            .map(|h| h.referred().count())
            .min()
            .unwrap_or(0);
        // The twelve explained assessments are the bulk of a `Screen` response; the log
        // stores them lean.
        let stored_bytes: usize = self
            .households
            .iter()
            .map(|h| {
                pb::EligibilityAssessed {
                    assessments: h.lean.iter().map(Into::into).collect(),
                    policy_version: h.policy_version.clone(),
                }
                .encoded_len()
            })
            .sum();
        let assessed_bytes: usize = self
            .households
            .iter()
            .map(|h| {
                pb::ScreenResponse {
                    assessments: explain(&h.lean, Detail::Full)
                        .into_iter()
                        .map(Into::into)
                        .collect(),
                }
                .encoded_len()
            })
            .sum();
        let application_bytes: usize = self
            .households
            .iter()
            .map(|h| h.application.encoded_len())
            .sum();
        format!(
            "{} households: {:.1} members and {:.2} referrals on average (min {}), {} distinct programme mixes; application {:.1} KiB, twelve assessments {:.1} KiB encoded ({:.1} KiB stored)",
            self.households.len(),
            members as f64 / n as f64,
            referrals as f64 / n as f64,
            min_ref,
            mixes.len(),
            application_bytes as f64 / n as f64 / 1024.0,
            assessed_bytes as f64 / n as f64 / 1024.0,
            stored_bytes as f64 / n as f64 / 1024.0,
        )
    }
}

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "马", "朱", "胡", "郭",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀英", "霞", "平", "刚", "桂英", "小红", "建国", "淑珍", "志强",
];

/// The range of application dates: 2026, before today (so both shipped policy versions,
/// 2025-07 and 2026-07, are used). Falls back to the year before today if the clock is
/// outside 2026.
fn date_range(today: NaiveDate) -> (NaiveDate, NaiveDate) {
    let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or(today);
    let end =
        (today - TimeDelta::days(1)).min(NaiveDate::from_ymd_opt(2026, 12, 31).unwrap_or(today));
    if end >= start {
        (start, end)
    } else {
        (today - TimeDelta::days(365), today - TimeDelta::days(1))
    }
}

fn birth_for_age(rng: &mut Rng, on: NaiveDate, age: i64) -> NaiveDate {
    // A day within the year that makes the person `age` on `on`.
    let base = on
        .with_year(on.year() - age as i32)
        .unwrap_or_else(|| on - TimeDelta::days(365 * age));
    base - TimeDelta::days(rng.range(1, 360))
}

struct Member {
    age: i64,
    relationship: pb::Relationship,
}

fn household(
    rng: &mut Rng,
    today: NaiveDate,
    policies: &PolicyBook,
    catalogue: &Catalogue,
) -> anyhow::Result<Household> {
    use pb::Relationship as R;
    let (start, end) = date_range(today);
    let date = start + TimeDelta::days(rng.range(0, (end - start).num_days()));
    // Mostly the demo terminal's own district; the rest spread over the city (the one-city
    // link accepts any district), which sends referrals to other units.
    let district = if rng.chance(0.7) {
        "120103"
    } else {
        rng.pick(&DistrictCode::all().collect::<Vec<_>>()).code()
    };
    let size = *rng.pick(&[1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4, 5, 5, 6]);
    let applicant_age = if rng.chance(0.25) {
        rng.range(60, 88)
    } else {
        rng.range(20, 59)
    };
    let mut members = vec![Member {
        age: applicant_age,
        relationship: R::Applicant,
    }];
    while members.len() < size {
        let m = match rng.range(0, 9) {
            0..=2 if !members.iter().any(|m| m.relationship == R::Spouse) => Member {
                age: (applicant_age + rng.range(-5, 5)).clamp(18, 95),
                relationship: R::Spouse,
            },
            0..=5 if applicant_age < 70 => Member {
                age: rng.range(0, (applicant_age - 18).clamp(0, 30)),
                relationship: R::Child,
            },
            6 if applicant_age < 55 => Member {
                age: (applicant_age + rng.range(22, 32)).min(98),
                relationship: R::Parent,
            },
            7 if applicant_age > 50 => Member {
                age: rng.range(0, 15),
                relationship: R::Grandchild,
            },
            8 => Member {
                age: (applicant_age + rng.range(-10, 10)).clamp(16, 90),
                relationship: R::Sibling,
            },
            _ => Member {
                age: rng.range(0, 17),
                relationship: R::Child,
            },
        };
        members.push(m);
    }
    // Per-capita income band relative to the dibao standard (~1,070–1,110 yuan), so the
    // household falls into different tiers: below the standard, marginal, up to the
    // charity line, or above everything.
    let standard = 107_000i64;
    let per_capita = match rng.range(0, 9) {
        0..=2 => rng.range(0, standard),
        3..=5 => rng.range(standard, standard * 3 / 2),
        6..=7 => rng.range(standard * 3 / 2, standard * 2),
        _ => rng.range(standard * 2, standard * 5),
    };
    let mut budget = per_capita * size as i64;
    let seq_base = rng.range(0, 800) as u16;
    let mut persons = Vec::with_capacity(size);
    for (i, m) in members.iter().enumerate() {
        let birth = birth_for_age(rng, date, m.age);
        let employment = match m.age {
            0..=15 => pb::Employment::NotInLabourForce,
            16..=22 if rng.chance(0.6) => pb::Employment::Student,
            16..=59 => *rng.pick(&[
                pb::Employment::Employed,
                pb::Employment::Employed,
                pb::Employment::Employed,
                pb::Employment::Unemployed,
                pb::Employment::Unemployed,
                pb::Employment::NotInLabourForce,
            ]),
            _ if rng.chance(0.8) => pb::Employment::Retired,
            _ => pb::Employment::NotInLabourForce,
        };
        let education = match m.age {
            0..=2 => pb::EducationStage::None,
            3..=5 => pb::EducationStage::Preschool,
            6..=11 => pb::EducationStage::Primary,
            12..=14 => pb::EducationStage::JuniorSecondary,
            15..=17 => *rng.pick(&[
                pb::EducationStage::SeniorSecondary,
                pb::EducationStage::Vocational,
            ]),
            18..=22 if employment == pb::Employment::Student => pb::EducationStage::University,
            _ => pb::EducationStage::None,
        };
        // Earners share the household budget; pensions are a part of it too.
        let earns = matches!(
            employment,
            pb::Employment::Employed | pb::Employment::Retired
        );
        let income = if earns && budget > 0 {
            let share = if i + 1 == size {
                budget
            } else {
                budget * rng.range(30, 100) / 100
            };
            budget -= share;
            share
        } else {
            0
        };
        let disability = rng.chance(0.12).then(|| pb::Disability {
            kind: *rng.pick(&[
                pb::DisabilityKind::Physical,
                pb::DisabilityKind::Visual,
                pb::DisabilityKind::Hearing,
                pb::DisabilityKind::Speech,
                pb::DisabilityKind::Intellectual,
                pb::DisabilityKind::Mental,
                pb::DisabilityKind::Multiple,
            ]) as i32,
            grade: rng.range(1, 4) as i32,
        });
        let supporter = if m.age >= 60 || disability.is_some() {
            *rng.pick(&[
                pb::Supporter::None,
                pb::Supporter::Unable,
                pb::Supporter::Able,
            ])
        } else {
            pb::Supporter::None
        };
        persons.push(pb::Person {
            // Distinct sequence numbers keep identity numbers unique in the household.
            id_number: valid_id_number(district, birth, seq_base + i as u16 * 3),
            name: format!("{}{}", rng.pick(SURNAMES), rng.pick(GIVEN)),
            birth_date: birth.format("%Y-%m-%d").to_string(),
            relationship: m.relationship as i32,
            disability,
            seriously_ill: rng.chance(0.05),
            employment: employment as i32,
            education: education as i32,
            monthly_income_fen: income,
            supporter: supporter as i32,
            age_years: 0,
        });
    }
    let n = size as i64;
    let mut application = pb::Application {
        district_code: district.to_owned(),
        members: persons,
        financial_assets_fen: match rng.range(0, 9) {
            0..=4 => rng.range(0, 2_000_000),
            5..=7 => rng.range(0, 24 * standard * n),
            _ => rng.range(24 * standard * n, 60 * standard * n),
        },
        homes_owned: *rng.pick(&[0, 0, 1, 1, 1, 2]),
        vehicles_owned: if rng.chance(0.15) { 1 } else { 0 },
        housing: *rng.pick(&[
            pb::Housing::Renting,
            pb::Housing::Renting,
            pb::Housing::OwnedAdequate,
            pb::Housing::OwnedAdequate,
            pb::Housing::NoHome,
            pb::Housing::Dilapidated,
        ]) as i32,
        medical_expense_12m_fen: if rng.chance(0.15) {
            rng.range(1_000_000, 20_000_000)
        } else {
            rng.range(0, 300_000)
        },
        other_rigid_expense_12m_fen: if rng.chance(0.2) {
            rng.range(100_000, 5_000_000)
        } else {
            0
        },
        emergency: rng.chance(0.06).then(|| pb::Emergency {
            kind: *rng.pick(&[
                pb::EmergencyKind::Accident,
                pb::EmergencyKind::Illness,
                pb::EmergencyKind::Fire,
                pb::EmergencyKind::Flood,
                pb::EmergencyKind::Other,
            ]) as i32,
            description: "sudden loss of income".into(),
        }),
        disaster_affected: rng.chance(0.03),
        consent_to_share: rng.chance(0.85),
        application_date: date.format("%Y-%m-%d").to_string(),
        contact_phone: format!("022-{:08}", rng.range(20_000_000, 89_999_999)),
    };
    // Nudge until something is referred: consent to charities, then halve incomes (the
    // charity line is twice the standard per person, so this terminates).
    for _ in 0..40 {
        let validated = validate_application(application.clone(), today)
            .map_err(|e| anyhow::anyhow!("generated household is invalid: {e:?}"))?;
        let policy = policies
            .in_force(validated.application_date)
            .ok_or_else(|| anyhow::anyhow!("no policy in force on {}", date))?;
        let lean = decide(&validated, policy, catalogue, &[]);
        if lean.iter().any(|a| a.outcome.is_referred()) {
            return Ok(Household {
                application,
                validated,
                lean,
                policy_version: policy.id().to_owned(),
            });
        }
        application.consent_to_share = true;
        for p in &mut application.members {
            p.monthly_income_fen /= 2;
        }
    }
    anyhow::bail!("could not generate a household with a referral")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_is_valid_varied_and_always_referred() {
        let pool = Pool::generate(500, 7).unwrap();
        let sizes: BTreeSet<usize> = pool
            .households
            .iter()
            .map(|h| h.application.members.len())
            .collect();
        assert_eq!(sizes, (1..=6).collect());
        assert!(pool.households.iter().all(|h| h.referred().count() >= 1));
        let mixes: BTreeSet<Vec<&str>> = pool
            .households
            .iter()
            .map(|h| h.referred().map(|a| a.programme.as_str()).collect())
            .collect();
        assert!(mixes.len() >= 10, "{}", pool.describe());
        let policies: BTreeSet<&str> = pool
            .households
            .iter()
            .map(|h| h.policy_version.as_str())
            .collect();
        assert!(!policies.is_empty());
    }
}
