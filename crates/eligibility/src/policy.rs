//! Dated policy parameters: a [`PolicyBook`] of [`PolicyVersion`]s loaded from TOML.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDate;
use onecity_domain::{format_date, DistrictCode};
use onecity_proto::v1 as proto;
use serde::Deserialize;

use crate::{Error, Result};

const EMBEDDED: &str = include_str!("../policy/default.toml");
const EMBEDDED_NAME: &str = "crates/eligibility/policy/default.toml";

/// Largest value any parameter may take (10^15). Keeps every product the rules form (e.g.
/// asset_limit_months × standard × members, or bp × 12 × household income) far inside i128.
pub const MAX_PARAMETER: i64 = 1_000_000_000_000_000;

/// Declares the parameters once, so the struct, the raw TOML shape, the by-name map and the
/// completeness check cannot drift apart.
macro_rules! parameters {
    ($($(#[doc = $doc:literal])+ $name:ident,)+) => {
        /// Every parameter of one policy version (units in the names; see docs/policy.md).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Parameters {
            $($(#[doc = $doc])+ pub $name: i64,)+
        }

        impl Parameters {
            /// Parameter names, in file order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),+];

            /// Every parameter by name.
            pub fn to_map(&self) -> BTreeMap<&'static str, i64> {
                BTreeMap::from([$((stringify!($name), self.$name)),+])
            }

            fn check(&self) -> std::result::Result<(), (&'static str, String)> {
                $(
                    if self.$name < 0 {
                        return Err((stringify!($name), "must not be negative".into()));
                    }
                    if self.$name > MAX_PARAMETER {
                        return Err((stringify!($name), format!("must be at most {MAX_PARAMETER}")));
                    }
                )+
                if self.dibao_standard_fen == 0 {
                    return Err(("dibao_standard_fen", "must be positive".into()));
                }
                if self.working_age_min > self.working_age_max {
                    return Err(("working_age_min", "must not exceed working_age_max".into()));
                }
                // A review interval is a count of calendar months added to a date.
                if !(1..=1200).contains(&self.review_interval_months) {
                    return Err(("review_interval_months", "must be between 1 and 1200".into()));
                }
                if !(1..=self.review_interval_months)
                    .contains(&self.unstable_income_review_interval_months)
                {
                    return Err((
                        "unstable_income_review_interval_months",
                        "must be between 1 and review_interval_months".into(),
                    ));
                }
                if self.warning_days == 0 {
                    return Err(("warning_days", "must be positive".into()));
                }
                Ok(())
            }
        }

        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawVersion {
            id: Option<String>,
            effective_from: Option<toml::Value>,
            district_standards: Option<BTreeMap<String, i64>>,
            $($name: Option<i64>,)+
        }

        impl RawVersion {
            fn parameters(&self) -> std::result::Result<Parameters, (&'static str, String)> {
                Ok(Parameters {
                    $($name: self.$name.ok_or((stringify!($name), "missing".to_owned()))?,)+
                })
            }
        }
    };
}

parameters! {
    /// S: dibao standard, fen per person per month (districts may override it).
    dibao_standard_fen,
    /// Financial assets may not exceed this many months of S per member.
    asset_limit_months,
    /// Most homes a household may own and pass the asset test.
    max_homes,
    /// Most vehicles a household may own and pass the asset test.
    max_vehicles,
    /// Minimum dibao payment as a share of S·n, basis points.
    dibao_floor_bp,
    /// Monthly supplement per special member as a share of S, basis points.
    special_supplement_bp,
    /// Age from which a member is elderly (special; no labour capacity).
    elderly_age,
    /// Age below which a member is a minor (no labour capacity).
    minor_age,
    /// Low-income marginal line as a multiple of S·n, basis points.
    marginal_multiple_bp,
    /// Width of the review band above a line, basis points of S·n.
    review_band_bp,
    /// Extreme-poverty support per qualifying member as a multiple of S, basis points.
    extreme_poverty_multiple_bp,
    /// Medical costs over 12 months above this share of 12·H are catastrophic, basis points.
    catastrophic_medical_bp,
    /// Youngest working age (inclusive).
    working_age_min,
    /// Oldest working age (inclusive).
    working_age_max,
    /// Temporary assistance is this many months of S·n, before the cap.
    temporary_months,
    /// Cap on one temporary assistance payment, fen.
    temporary_cap_fen,
    /// Monthly living subsidy per disabled member of a low-income household, fen.
    disability_living_subsidy_fen,
    /// Monthly care subsidy per member with disability grade 1 or 2, fen.
    disability_care_subsidy_fen,
    /// Charity line as a multiple of S·n, basis points.
    charity_multiple_bp,
    /// Calendar months from a recognition's approval to its re-verification.
    review_interval_months,
    /// The same for a household with unstable income (`docs/policy.md`), at most
    /// `review_interval_months`.
    unstable_income_review_interval_months,
    /// Calendar days civil affairs has to resolve a warning (docs/monitoring.md).
    warning_days,
    /// An INCOME_DROP signal warns when the monthly income lost is at least this share of
    /// the household's monthly income, basis points.
    income_drop_warning_bp,
}

/// One dated version of the parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    id: String,
    effective_from: NaiveDate,
    params: Parameters,
    district_overrides: BTreeMap<DistrictCode, i64>,
}

impl PolicyVersion {
    /// Builds and checks a version (all parameters and overrides between 0 and
    /// [`MAX_PARAMETER`], standards positive, working ages ordered).
    pub fn new(
        id: impl Into<String>,
        effective_from: NaiveDate,
        params: Parameters,
        district_overrides: BTreeMap<DistrictCode, i64>,
    ) -> Result<Self> {
        let id = id.into();
        let source = format!("policy version {id:?}");
        if id.trim().is_empty() {
            return Err(Error::config(&source, "id", "must not be empty"));
        }
        params
            .check()
            .map_err(|(field, reason)| Error::config(&source, field, reason))?;
        for (d, v) in &district_overrides {
            if !(1..=MAX_PARAMETER).contains(v) {
                return Err(Error::config(
                    &source,
                    format!("district_standards.{d}"),
                    format!("must be between 1 and {MAX_PARAMETER}"),
                ));
            }
        }
        Ok(PolicyVersion {
            id,
            effective_from,
            params,
            district_overrides,
        })
    }

    /// Version id, recorded on every assessment.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// First day the version applies.
    pub fn effective_from(&self) -> NaiveDate {
        self.effective_from
    }

    /// The parameters as a struct.
    pub fn params(&self) -> &Parameters {
        &self.params
    }

    /// Every parameter by name (for the GetPolicy API).
    pub fn parameters(&self) -> BTreeMap<&'static str, i64> {
        self.params.to_map()
    }

    /// Districts whose standard differs from `dibao_standard_fen`.
    pub fn district_overrides(&self) -> &BTreeMap<DistrictCode, i64> {
        &self.district_overrides
    }

    /// The dibao standard S of `district`, fen per person per month.
    pub fn standard_for(&self, district: DistrictCode) -> i64 {
        self.district_overrides
            .get(&district)
            .copied()
            .unwrap_or(self.params.dibao_standard_fen)
    }

    /// All 16 districts and their standard.
    pub fn district_standards(&self) -> BTreeMap<DistrictCode, i64> {
        DistrictCode::all()
            .map(|d| (d, self.standard_for(d)))
            .collect()
    }

    /// Hex SHA-256 of what the version says: its id, `effective_from`, every parameter by
    /// name and every district's standard, one `name=value` line each in name order. The
    /// log records it with the parameters once the version is in force, and a version in
    /// force must keep it (docs/policy.md, "A version in force is immutable").
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        use std::fmt::Write as _;
        let mut text = format!("id={}\neffective_from={}\n", self.id, self.effective_from);
        for (name, value) in self.parameters() {
            let _ = writeln!(text, "{name}={value}");
        }
        for (district, standard) in self.district_standards() {
            let _ = writeln!(text, "district.{}={standard}", district.code());
        }
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    }
}

impl From<&PolicyVersion> for proto::Policy {
    fn from(v: &PolicyVersion) -> Self {
        proto::Policy {
            version_id: v.id.clone(),
            effective_from: format_date(v.effective_from),
            parameters: v
                .parameters()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            district_standards: v
                .district_standards()
                .into_iter()
                .map(|(d, s)| (d.code().to_owned(), s))
                .collect(),
        }
    }
}

/// All versions of the policy, in effective order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyBook {
    versions: Vec<PolicyVersion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBook {
    version: Option<Vec<RawVersion>>,
}

impl PolicyBook {
    /// The default policy shipped in `policy/default.toml`.
    ///
    /// # Panics
    /// Never for the shipped file, which a unit test parses.
    pub fn embedded_default() -> Self {
        Self::from_toml_str(EMBEDDED, EMBEDDED_NAME)
            .unwrap_or_else(|e| panic!("embedded default policy is invalid: {e}"))
    }

    /// Reads a policy file; errors name the file, the field and the reason.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let (text, name) = crate::error::read_source(path.as_ref())?;
        Self::from_toml_str(&text, &name)
    }

    /// Parses policy TOML; `source_name` names it in errors.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Self> {
        let raw: RawBook =
            toml::from_str(text).map_err(|e| Error::from_toml(source_name, text, &e))?;
        let err = |field: String, reason: String| Error::config(source_name, field, reason);
        let raw_versions = raw.version.unwrap_or_default();
        let mut versions: Vec<PolicyVersion> = Vec::with_capacity(raw_versions.len());
        for (i, rv) in raw_versions.into_iter().enumerate() {
            let at = |f: &str| format!("version[{i}].{f}");
            let id = rv
                .id
                .clone()
                .ok_or_else(|| err(at("id"), "missing".into()))?;
            if id.trim().is_empty() {
                return Err(err(at("id"), "must not be empty".into()));
            }
            if versions.iter().any(|v| v.id == id) {
                return Err(err(at("id"), format!("duplicate version id {id:?}")));
            }
            let effective_from = match &rv.effective_from {
                None => return Err(err(at("effective_from"), "missing".into())),
                Some(v) => toml_date(v).ok_or_else(|| {
                    err(
                        at("effective_from"),
                        "must be a date such as 2026-07-01".into(),
                    )
                })?,
            };
            if let Some(prev) = versions.last() {
                if effective_from <= prev.effective_from {
                    return Err(err(
                        at("effective_from"),
                        format!(
                            "must be later than the previous version's {}",
                            format_date(prev.effective_from)
                        ),
                    ));
                }
            }
            let params = rv.parameters().map_err(|(f, reason)| err(at(f), reason))?;
            params.check().map_err(|(f, reason)| err(at(f), reason))?;
            let mut overrides = BTreeMap::new();
            for (code, standard) in rv.district_standards.unwrap_or_default() {
                let field = at(&format!("district_standards.{code}"));
                let district = DistrictCode::parse(&code)
                    .ok_or_else(|| err(field.clone(), "unknown district code".into()))?;
                if standard < 0 {
                    return Err(err(field, "must not be negative".into()));
                }
                overrides.insert(district, standard);
            }
            let version =
                PolicyVersion::new(id, effective_from, params, overrides).map_err(|e| match e {
                    Error::Config { field, reason, .. } => err(at(&field), reason),
                    other => other,
                })?;
            versions.push(version);
        }
        if versions.is_empty() {
            return Err(err(
                "version".into(),
                "at least one version is required".into(),
            ));
        }
        Ok(PolicyBook { versions })
    }

    /// A book of already built versions; they must have distinct ids and strictly increasing
    /// `effective_from`.
    pub fn from_versions(versions: Vec<PolicyVersion>) -> Result<Self> {
        if versions.is_empty() {
            return Err(Error::config(
                "(memory)",
                "version",
                "at least one version is required",
            ));
        }
        for (i, pair) in versions.windows(2).enumerate() {
            if pair[1].effective_from <= pair[0].effective_from {
                return Err(Error::config(
                    "(memory)",
                    format!("version[{}].effective_from", i + 1),
                    "must be later than the previous version's",
                ));
            }
        }
        for (i, v) in versions.iter().enumerate() {
            if versions[..i].iter().any(|w| w.id == v.id) {
                return Err(Error::config(
                    "(memory)",
                    format!("version[{i}].id"),
                    format!("duplicate version id {:?}", v.id),
                ));
            }
        }
        Ok(PolicyBook { versions })
    }

    /// The version in force on `date`: the latest with `effective_from <= date`; `None` before
    /// the first version.
    pub fn in_force(&self, date: NaiveDate) -> Option<&PolicyVersion> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.effective_from <= date)
    }

    /// The version with this id.
    pub fn get(&self, id: &str) -> Option<&PolicyVersion> {
        self.versions.iter().find(|v| v.id == id)
    }

    /// All versions, oldest first.
    pub fn versions(&self) -> &[PolicyVersion] {
        &self.versions
    }
}

/// Accepts a TOML local date (`2026-07-01`) or the same as a string; no time or offset.
fn toml_date(v: &toml::Value) -> Option<NaiveDate> {
    match v {
        toml::Value::String(s) => onecity_domain::parse_date(s),
        toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => {
            let d = dt.date?;
            NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
        }
        _ => None,
    }
}
