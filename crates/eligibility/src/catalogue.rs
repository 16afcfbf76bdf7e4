//! The programme catalogue: owning department, decision deadline and the application facts
//! the department may see, per programme.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use onecity_domain::{Department, DepartmentUnit, DistrictCode, Programme};
use serde::Deserialize;

use crate::holidays::{DeadlineUnit, HolidayCalendar};
use crate::{Error, Result};

const EMBEDDED: &str = include_str!("../policy/catalogue.toml");
const EMBEDDED_NAME: &str = "crates/eligibility/policy/catalogue.toml";

bitflags::bitflags! {
    /// Facts of an application beyond who its members are: what a programme's rules read,
    /// and so what that programme's department may see of a case (data minimisation). The
    /// names are the `onecity.v1` field names (`monthly_income_fen` and so on), in upper case
    /// here; member facts are fields of `Person`, household facts fields of `Application`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Facts: u16 {
        /// Each member's own monthly income.
        const MONTHLY_INCOME_FEN = 1;
        /// Each member's certified disability (kind and grade).
        const DISABILITY = 1 << 1;
        /// Whether each member is seriously ill.
        const SERIOUSLY_ILL = 1 << 2;
        /// Each member's employment status.
        const EMPLOYMENT = 1 << 3;
        /// Each member's education stage.
        const EDUCATION = 1 << 4;
        /// Whether each member has an able legal supporter.
        const SUPPORTER = 1 << 5;
        /// The household's financial assets.
        const FINANCIAL_ASSETS_FEN = 1 << 6;
        /// Homes the household owns.
        const HOMES_OWNED = 1 << 7;
        /// Vehicles the household owns.
        const VEHICLES_OWNED = 1 << 8;
        /// The household's housing situation.
        const HOUSING = 1 << 9;
        /// Medical expenses over the last 12 months.
        const MEDICAL_EXPENSE_12M_FEN = 1 << 10;
        /// Other rigid expenditure over the last 12 months.
        const OTHER_RIGID_EXPENSE_12M_FEN = 1 << 11;
        /// The emergency, kind and description.
        const EMERGENCY = 1 << 12;
        /// Whether the household was affected by a disaster.
        const DISASTER_AFFECTED = 1 << 13;
        /// The consent to share the case with charity organisations.
        const CONSENT_TO_SHARE = 1 << 14;
    }
}

impl Facts {
    /// The fact named as in the catalogue file (`monthly_income_fen`).
    pub fn named(name: &str) -> Option<Facts> {
        // Upper-case names only: `from_name` would also take the constant's own spelling.
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            return None;
        }
        Facts::from_name(&name.to_ascii_uppercase())
    }
}

/// One programme's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogueEntry {
    /// The programme.
    pub programme: Programme,
    /// Department that runs it.
    pub department: Department,
    /// Days from submission to the decision deadline.
    pub deadline_days: u32,
    /// Whether those days are calendar or working days.
    pub deadline_unit: DeadlineUnit,
    /// What the department may see of a case this programme is referred in: the facts the
    /// programme's rules read.
    pub visible_facts: Facts,
}

/// Department, deadline and visible facts of each of the twelve programmes, read from
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    entries: BTreeMap<Programme, CatalogueEntry>,
    holidays: HolidayCalendar,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    programme: Option<Vec<RawEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    programme: Option<String>,
    department: Option<String>,
    deadline_days: Option<i64>,
    deadline_unit: Option<String>,
    visible_facts: Option<Vec<String>>,
}

impl Catalogue {
    /// The catalogue shipped in `policy/catalogue.toml`.
    ///
    /// # Panics
    /// Never for the shipped file, which a unit test parses.
    pub fn embedded() -> Self {
        Self::from_toml_str(EMBEDDED, EMBEDDED_NAME)
            .unwrap_or_else(|e| panic!("embedded catalogue is invalid: {e}"))
    }

    /// Reads a catalogue file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let (text, name) = crate::error::read_source(path.as_ref())?;
        Self::from_toml_str(&text, &name)
    }

    /// Parses catalogue TOML; `source_name` names it in errors. Every programme must appear
    /// exactly once with a known department and a deadline of at least one day; its
    /// `visible_facts` may name only known facts, and left out means none.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Self> {
        let raw: RawCatalogue =
            toml::from_str(text).map_err(|e| Error::from_toml(source_name, text, &e))?;
        let err = |field: String, reason: String| Error::config(source_name, field, reason);
        let mut entries = BTreeMap::new();
        for (i, e) in raw.programme.unwrap_or_default().into_iter().enumerate() {
            let at = |f: &str| format!("programme[{i}].{f}");
            let programme: Programme = e
                .programme
                .ok_or_else(|| err(at("programme"), "missing".into()))?
                .parse()
                .map_err(|e: onecity_domain::Error| err(at("programme"), e.to_string()))?;
            let department: Department = e
                .department
                .ok_or_else(|| err(at("department"), "missing".into()))?
                .parse()
                .map_err(|e: onecity_domain::Error| err(at("department"), e.to_string()))?;
            let deadline_days = e
                .deadline_days
                .ok_or_else(|| err(at("deadline_days"), "missing".into()))?;
            let deadline_days = u32::try_from(deadline_days)
                .ok()
                .filter(|d| *d >= 1)
                .ok_or_else(|| {
                    err(
                        at("deadline_days"),
                        "must be between 1 and 4294967295".into(),
                    )
                })?;
            let deadline_unit = match e.deadline_unit.as_deref() {
                None | Some("calendar") => DeadlineUnit::Calendar,
                Some("working") => DeadlineUnit::Working,
                Some(other) => {
                    return Err(err(
                        at("deadline_unit"),
                        format!("must be calendar or working, not {other:?}"),
                    ))
                }
            };
            let mut visible_facts = Facts::empty();
            for (j, name) in e.visible_facts.unwrap_or_default().iter().enumerate() {
                let fact = Facts::named(name).ok_or_else(|| {
                    err(
                        format!("programme[{i}].visible_facts[{j}]"),
                        format!("unknown fact {name}"),
                    )
                })?;
                visible_facts |= fact;
            }
            let entry = CatalogueEntry {
                programme,
                department,
                deadline_days,
                deadline_unit,
                visible_facts,
            };
            if entries.insert(programme, entry).is_some() {
                return Err(err(
                    at("programme"),
                    format!("duplicate programme {programme}"),
                ));
            }
        }
        if let Some(missing) = Programme::ALL.iter().find(|p| !entries.contains_key(p)) {
            return Err(err(
                "programme".into(),
                format!("missing programme {missing}"),
            ));
        }
        Ok(Catalogue {
            entries,
            holidays: HolidayCalendar::embedded(),
        })
    }

    fn entry(&self, programme: Programme) -> &CatalogueEntry {
        // from_toml_str guarantees an entry for every programme.
        &self.entries[&programme]
    }

    /// Department that runs `programme`.
    pub fn department(&self, programme: Programme) -> Department {
        self.entry(programme).department
    }

    /// Decision deadline of `programme`, in days of [`Catalogue::deadline_unit`] from
    /// submission.
    pub fn deadline_days(&self, programme: Programme) -> u32 {
        self.entry(programme).deadline_days
    }

    /// Whether `programme`'s deadline counts calendar or working days.
    pub fn deadline_unit(&self, programme: Programme) -> DeadlineUnit {
        self.entry(programme).deadline_unit
    }

    /// The same catalogue counting working days with `holidays` (the embedded sample
    /// calendar otherwise).
    #[must_use]
    pub fn with_holidays(mut self, holidays: HolidayCalendar) -> Self {
        self.holidays = holidays;
        self
    }

    /// The holiday calendar working-day deadlines use.
    pub fn holidays(&self) -> &HolidayCalendar {
        &self.holidays
    }

    /// When a referral of `programme` whose period starts at `start` is due.
    pub fn due_at(&self, programme: Programme, start: DateTime<Utc>) -> DateTime<Utc> {
        let e = self.entry(programme);
        self.holidays
            .due_at(start, e.deadline_days, e.deadline_unit)
    }

    /// What `programme`'s department may see of a case beyond who its members are.
    pub fn visible_facts(&self, programme: Programme) -> Facts {
        self.entry(programme).visible_facts
    }

    /// Department unit that receives the referral for `programme` from `district`.
    pub fn unit(&self, programme: Programme, district: DistrictCode) -> DepartmentUnit {
        DepartmentUnit {
            department: self.department(programme),
            district,
        }
    }

    /// All entries, in programme order.
    pub fn entries(&self) -> impl Iterator<Item = &CatalogueEntry> {
        self.entries.values()
    }
}

impl Default for Catalogue {
    fn default() -> Self {
        Self::embedded()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalogue_matches_the_specification() {
        let c = Catalogue::embedded();
        let expected = [
            (Programme::Dibao, "civil-affairs", 30),
            (Programme::ExtremePoverty, "civil-affairs", 20),
            (Programme::LowIncomeMarginal, "civil-affairs", 30),
            (Programme::RigidExpenditure, "civil-affairs", 30),
            (Programme::Medical, "medical-security", 15),
            (Programme::Education, "education", 15),
            (Programme::Housing, "housing", 30),
            (Programme::Employment, "human-resources", 15),
            (Programme::Temporary, "civil-affairs", 1),
            (Programme::DisasterRelief, "emergency-management", 3),
            (
                Programme::DisabilitySubsidy,
                "disabled-persons-federation",
                20,
            ),
            (Programme::Charity, "charity", 10),
        ];
        for (p, dept, days) in expected {
            assert_eq!(c.department(p).as_str(), dept, "{p}");
            assert_eq!(c.deadline_days(p), days, "{p}");
        }
        assert_eq!(c.entries().count(), 12);
        let hexi = DistrictCode::parse("120103").unwrap();
        assert_eq!(
            c.unit(Programme::Employment, hexi).to_string(),
            "human-resources@120103"
        );
    }

    fn refused(text: &str, field: &str, reason_part: &str) {
        let e = Catalogue::from_toml_str(text, "cat.toml").unwrap_err();
        let Error::Config {
            file,
            field: f,
            reason,
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(file, "cat.toml");
        assert_eq!(f, field, "{e}");
        assert!(reason.contains(reason_part), "{e}");
    }

    #[test]
    fn refuses_bad_catalogues() {
        let one = |p: &str, d: &str, n: &str| {
            format!(
                "[[programme]]\nprogramme = \"{p}\"\ndepartment = \"{d}\"\ndeadline_days = {n}\n"
            )
        };
        let all_but_charity: String = EMBEDDED
            .split("[[programme]]")
            .filter(|s| !s.contains("\"charity\""))
            .collect::<Vec<_>>()
            .join("[[programme]]");
        refused(&all_but_charity, "programme", "missing programme charity");
        refused(
            &(all_but_charity.clone() + &one("charity", "charity", "0")),
            "programme[11].deadline_days",
            "between 1",
        );
        refused(
            &(all_but_charity.clone() + &one("charity", "police", "3")),
            "programme[11].department",
            "unknown department",
        );
        refused(
            &(all_but_charity.clone() + &one("dibao", "charity", "3")),
            "programme[11].programme",
            "duplicate programme dibao",
        );
        refused(
            &(all_but_charity.clone() + &one("lottery", "charity", "3")),
            "programme[11].programme",
            "unknown programme",
        );
        refused(
            "[[programme]]\nprogramme = \"dibao\"\ncolour = 1\n",
            "colour",
            "unknown field",
        );
        refused(
            "[[programme]]\nprogramme = \"dibao\"\ndepartment = \"civil-affairs\"\n",
            "programme[0].deadline_days",
            "missing",
        );
        refused("[[programme]]\nprogramme = \"dibao\"\ndepartment = \"civil-affairs\"\ndeadline_days = \"x\"\n", "deadline_days", "invalid type");
        for bad in ["birth_date", "MONTHLY_INCOME_FEN", "id_number", ""] {
            refused(
                &format!(
                    "{}visible_facts = [\"housing\", \"{bad}\"]\n",
                    one("charity", "charity", "3")
                ),
                "programme[0].visible_facts[1]",
                "unknown fact",
            );
        }
    }

    #[test]
    fn visible_facts_are_what_each_programme_reads() {
        let c = Catalogue::embedded();
        let dibao = c.visible_facts(Programme::Dibao);
        assert!(dibao.contains(Facts::MONTHLY_INCOME_FEN | Facts::FINANCIAL_ASSETS_FEN));
        assert!(!dibao.contains(Facts::HOUSING));
        assert_eq!(c.visible_facts(Programme::Housing), Facts::HOUSING);
        assert_eq!(
            c.visible_facts(Programme::DisabilitySubsidy),
            Facts::DISABILITY
        );
        assert_eq!(
            c.visible_facts(Programme::DisasterRelief),
            Facts::DISASTER_AFFECTED
        );
        // Every programme shows something, and no fact is left unused by every programme.
        let mut all = Facts::empty();
        for &p in Programme::ALL.iter() {
            assert!(!c.visible_facts(p).is_empty(), "{p}");
            all |= c.visible_facts(p);
        }
        assert_eq!(all, Facts::all());
        let left_out = Catalogue::from_toml_str(
            &EMBEDDED.replace("visible_facts = [\"housing\"]", ""),
            "cat.toml",
        )
        .unwrap();
        assert_eq!(left_out.visible_facts(Programme::Housing), Facts::empty());
    }
}
