//! The rules a programme is decided by, each with a stable code and its named inputs: what
//! the log stores of a rule instead of its explanation (docs/eventlog.md, "Assessments").

/// One of the rules of the twelve programmes. The code ([`RuleKind::code`]) is what the
/// log stores, with the input values in the order of [`RuleKind::keys`]. Codes are never
/// reused or renumbered and a code's inputs never change: stored values are read by
/// position, and a record with another number of values is refused. A rule that needs
/// another input, or other words, is a new code; the old one keeps rendering as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RuleKind {
    DibaoAssetsFinancial = 1,
    DibaoAssetsHomes = 2,
    DibaoAssetsVehicles = 3,
    DibaoIncomeBelowStandard = 4,
    DibaoReviewBand = 5,
    DibaoAmount = 6,
    ExtremePovertyAssetsFinancial = 7,
    ExtremePovertyAssetsHomes = 8,
    ExtremePovertyAssetsVehicles = 9,
    ExtremePovertyMember = 10,
    MarginalNotCoveredByDibao = 11,
    MarginalAssetsFinancial = 12,
    MarginalAssetsHomes = 13,
    MarginalAssetsVehicles = 14,
    MarginalIncome = 15,
    MarginalReviewBand = 16,
    RigidNotCovered = 17,
    RigidAssetsFinancial = 18,
    RigidAssetsHomes = 19,
    RigidAssetsVehicles = 20,
    RigidIncomeAfterExpenses = 21,
    MedicalLinked = 22,
    MedicalCatastrophic = 23,
    EducationMemberInEducation = 24,
    EducationLinked = 25,
    HousingNeed = 26,
    HousingLinked = 27,
    EmploymentUnemployedWorkingAgeMember = 28,
    EmploymentLinked = 29,
    TemporaryEmergencyDeclared = 30,
    TemporaryAmount = 31,
    DisasterReliefAffected = 32,
    DisabilityLinked = 33,
    DisabilityLiving = 34,
    DisabilityCare = 35,
    CharityConsent = 36,
    CharityNoOtherProgramme = 37,
    CharityIncome = 38,
}

use RuleKind::*;

/// Every kind, at index `code - 1`.
const ALL: [RuleKind; 38] = [
    DibaoAssetsFinancial,
    DibaoAssetsHomes,
    DibaoAssetsVehicles,
    DibaoIncomeBelowStandard,
    DibaoReviewBand,
    DibaoAmount,
    ExtremePovertyAssetsFinancial,
    ExtremePovertyAssetsHomes,
    ExtremePovertyAssetsVehicles,
    ExtremePovertyMember,
    MarginalNotCoveredByDibao,
    MarginalAssetsFinancial,
    MarginalAssetsHomes,
    MarginalAssetsVehicles,
    MarginalIncome,
    MarginalReviewBand,
    RigidNotCovered,
    RigidAssetsFinancial,
    RigidAssetsHomes,
    RigidAssetsVehicles,
    RigidIncomeAfterExpenses,
    MedicalLinked,
    MedicalCatastrophic,
    EducationMemberInEducation,
    EducationLinked,
    HousingNeed,
    HousingLinked,
    EmploymentUnemployedWorkingAgeMember,
    EmploymentLinked,
    TemporaryEmergencyDeclared,
    TemporaryAmount,
    DisasterReliefAffected,
    DisabilityLinked,
    DisabilityLiving,
    DisabilityCare,
    CharityConsent,
    CharityNoOtherProgramme,
    CharityIncome,
];

const ASSETS_FINANCIAL: &[&str] = &[
    "financial_assets_fen",
    "asset_limit_months",
    "standard_fen",
    "members",
];
const ASSETS_HOMES: &[&str] = &["homes_owned", "max_homes"];
const ASSETS_VEHICLES: &[&str] = &["vehicles_owned", "max_vehicles"];
/// The four recognition tiers as the linked programmes take them (the `Outcome` wire value:
/// 1 ELIGIBLE, 2 NEEDS_REVIEW, 3 INELIGIBLE) and each tier's department decision (0 none,
/// 1 approved, 2 denied).
const LINKED: &[&str] = &[
    "linked",
    "decided_recognitions",
    "dibao_outcome",
    "extreme_poverty_outcome",
    "low_income_marginal_outcome",
    "rigid_expenditure_outcome",
    "dibao_decision",
    "extreme_poverty_decision",
    "low_income_marginal_decision",
    "rigid_expenditure_decision",
];

/// How a rule is explained: the shape of its sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    AssetsFinancial,
    AssetsHomes,
    AssetsVehicles,
    /// An income test: the household income (after rigid expenses with `after_expenses`)
    /// below a multiple of n × standard; `review_band` ends the line with "(review band)".
    Income {
        after_expenses: bool,
        review_band: bool,
    },
    DibaoAmount,
    ExtremePovertyMember,
    MarginalNotCovered,
    RigidNotCovered,
    Linked,
    Catastrophic,
    InEducation,
    HousingNeed,
    Unemployed,
    Emergency,
    TemporaryAmount,
    DisasterAffected,
    DisabilityLiving,
    DisabilityCare,
    Consent,
    NoOtherProgramme,
}

impl RuleKind {
    /// What the log stores.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The kind stored as `code`, if any.
    pub fn from_code(code: u32) -> Option<RuleKind> {
        let i = usize::try_from(code).ok()?.checked_sub(1)?;
        ALL.get(i).copied()
    }

    /// The stable id, `<programme>.<rule>`.
    pub fn id(self) -> &'static str {
        match self {
            DibaoAssetsFinancial => "dibao.assets.financial",
            DibaoAssetsHomes => "dibao.assets.homes",
            DibaoAssetsVehicles => "dibao.assets.vehicles",
            DibaoIncomeBelowStandard => "dibao.income_below_standard",
            DibaoReviewBand => "dibao.review_band",
            DibaoAmount => "dibao.amount",
            ExtremePovertyAssetsFinancial => "extreme_poverty.assets.financial",
            ExtremePovertyAssetsHomes => "extreme_poverty.assets.homes",
            ExtremePovertyAssetsVehicles => "extreme_poverty.assets.vehicles",
            ExtremePovertyMember => "extreme_poverty.member",
            MarginalNotCoveredByDibao => "low_income_marginal.not_covered_by_dibao",
            MarginalAssetsFinancial => "low_income_marginal.assets.financial",
            MarginalAssetsHomes => "low_income_marginal.assets.homes",
            MarginalAssetsVehicles => "low_income_marginal.assets.vehicles",
            MarginalIncome => "low_income_marginal.income",
            MarginalReviewBand => "low_income_marginal.review_band",
            RigidNotCovered => "rigid_expenditure.not_covered",
            RigidAssetsFinancial => "rigid_expenditure.assets.financial",
            RigidAssetsHomes => "rigid_expenditure.assets.homes",
            RigidAssetsVehicles => "rigid_expenditure.assets.vehicles",
            RigidIncomeAfterExpenses => "rigid_expenditure.income_after_expenses",
            MedicalLinked => "medical.linked",
            MedicalCatastrophic => "medical.catastrophic",
            EducationMemberInEducation => "education.member_in_education",
            EducationLinked => "education.linked",
            HousingNeed => "housing.housing_need",
            HousingLinked => "housing.linked",
            EmploymentUnemployedWorkingAgeMember => "employment.unemployed_working_age_member",
            EmploymentLinked => "employment.linked",
            TemporaryEmergencyDeclared => "temporary.emergency_declared",
            TemporaryAmount => "temporary.amount",
            DisasterReliefAffected => "disaster_relief.affected",
            DisabilityLinked => "disability_subsidy.linked",
            DisabilityLiving => "disability_subsidy.living",
            DisabilityCare => "disability_subsidy.care",
            CharityConsent => "charity.consent",
            CharityNoOtherProgramme => "charity.no_other_programme",
            CharityIncome => "charity.income",
        }
    }

    /// Whether the id ends with `suffix` (`.income` is the marginal income rule's suffix,
    /// not the review band's).
    pub(super) fn id_ends_with(self, suffix: &str) -> bool {
        self.id().ends_with(suffix)
    }

    /// The names of its inputs, in the order the log stores their values.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            DibaoAssetsFinancial
            | ExtremePovertyAssetsFinancial
            | MarginalAssetsFinancial
            | RigidAssetsFinancial => ASSETS_FINANCIAL,
            DibaoAssetsHomes
            | ExtremePovertyAssetsHomes
            | MarginalAssetsHomes
            | RigidAssetsHomes => ASSETS_HOMES,
            DibaoAssetsVehicles
            | ExtremePovertyAssetsVehicles
            | MarginalAssetsVehicles
            | RigidAssetsVehicles => ASSETS_VEHICLES,
            DibaoIncomeBelowStandard => &["household_income_fen", "standard_fen", "members"],
            DibaoReviewBand => &[
                "household_income_fen",
                "review_band_bp",
                "standard_fen",
                "members",
            ],
            DibaoAmount => &[
                "gap_fen",
                "floor_fen",
                "special_members",
                "supplement_fen",
                "amount_fen",
                "household_income_fen",
                "standard_fen",
                "members",
                "dibao_floor_bp",
                "special_supplement_bp",
                "elderly_age",
            ],
            ExtremePovertyMember => &[
                "member",
                "age",
                "no_labour_capacity",
                "own_income_fen",
                "standard_fen",
                "supporter_ok",
                "supporter",
                "disability_kind",
                "disability_grade",
                "elderly_age",
                "minor_age",
                "extreme_poverty_multiple_bp",
            ],
            MarginalNotCoveredByDibao => &["dibao_eligible", "dibao_outcome"],
            MarginalIncome => &[
                "household_income_fen",
                "marginal_multiple_bp",
                "standard_fen",
                "members",
            ],
            MarginalReviewBand => &[
                "household_income_fen",
                "marginal_multiple_bp",
                "review_band_bp",
                "standard_fen",
                "members",
            ],
            RigidNotCovered => &[
                "dibao_eligible",
                "marginal_eligible",
                "dibao_outcome",
                "marginal_outcome",
            ],
            RigidIncomeAfterExpenses => &[
                "household_income_fen",
                "medical_expense_12m_fen",
                "other_rigid_expense_12m_fen",
                "monthly_rigid_expense_fen",
                "adjusted_income_fen",
                "marginal_multiple_bp",
                "standard_fen",
                "members",
            ],
            MedicalLinked | EducationLinked | HousingLinked | EmploymentLinked
            | DisabilityLinked => LINKED,
            MedicalCatastrophic => &[
                "medical_expense_12m_fen",
                "household_income_fen",
                "catastrophic_medical_bp",
            ],
            EducationMemberInEducation => &["members_in_education"],
            HousingNeed => &["housing"],
            EmploymentUnemployedWorkingAgeMember => {
                &["members", "working_age_min", "working_age_max"]
            }
            TemporaryEmergencyDeclared => &["emergency_kind"],
            TemporaryAmount => &[
                "temporary_months",
                "standard_fen",
                "members",
                "temporary_cap_fen",
                "amount_fen",
            ],
            DisasterReliefAffected => &["disaster_affected"],
            DisabilityLiving => &[
                "disabled_members",
                "linked",
                "living_members",
                "living_subsidy_fen",
            ],
            DisabilityCare => &["severely_disabled_members", "care_subsidy_fen"],
            CharityConsent => &["consent_to_share"],
            CharityNoOtherProgramme => &["programmes_referred"],
            CharityIncome => &[
                "household_income_fen",
                "charity_multiple_bp",
                "standard_fen",
                "members",
            ],
        }
    }

    pub(super) fn shape(self) -> Shape {
        let income = |after_expenses, review_band| Shape::Income {
            after_expenses,
            review_band,
        };
        match self {
            DibaoAssetsFinancial
            | ExtremePovertyAssetsFinancial
            | MarginalAssetsFinancial
            | RigidAssetsFinancial => Shape::AssetsFinancial,
            DibaoAssetsHomes
            | ExtremePovertyAssetsHomes
            | MarginalAssetsHomes
            | RigidAssetsHomes => Shape::AssetsHomes,
            DibaoAssetsVehicles
            | ExtremePovertyAssetsVehicles
            | MarginalAssetsVehicles
            | RigidAssetsVehicles => Shape::AssetsVehicles,
            DibaoIncomeBelowStandard | MarginalIncome | CharityIncome => income(false, false),
            DibaoReviewBand | MarginalReviewBand => income(false, true),
            RigidIncomeAfterExpenses => income(true, false),
            DibaoAmount => Shape::DibaoAmount,
            ExtremePovertyMember => Shape::ExtremePovertyMember,
            MarginalNotCoveredByDibao => Shape::MarginalNotCovered,
            RigidNotCovered => Shape::RigidNotCovered,
            MedicalLinked | EducationLinked | HousingLinked | EmploymentLinked
            | DisabilityLinked => Shape::Linked,
            MedicalCatastrophic => Shape::Catastrophic,
            EducationMemberInEducation => Shape::InEducation,
            HousingNeed => Shape::HousingNeed,
            EmploymentUnemployedWorkingAgeMember => Shape::Unemployed,
            TemporaryEmergencyDeclared => Shape::Emergency,
            TemporaryAmount => Shape::TemporaryAmount,
            DisasterReliefAffected => Shape::DisasterAffected,
            DisabilityLiving => Shape::DisabilityLiving,
            DisabilityCare => Shape::DisabilityCare,
            CharityConsent => Shape::Consent,
            CharityNoOtherProgramme => Shape::NoOtherProgramme,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_and_read_back() {
        for (i, k) in ALL.iter().enumerate() {
            assert_eq!(k.code() as usize, i + 1, "{k:?}");
            assert_eq!(RuleKind::from_code(k.code()), Some(*k));
        }
        assert_eq!(RuleKind::from_code(0), None);
        assert_eq!(RuleKind::from_code(ALL.len() as u32 + 1), None);
    }

    #[test]
    fn ids_are_unique_and_inputs_named_once() {
        let ids: std::collections::BTreeSet<&str> = ALL.iter().map(|k| k.id()).collect();
        assert_eq!(ids.len(), ALL.len());
        for k in ALL {
            let keys: std::collections::BTreeSet<&&str> = k.keys().iter().collect();
            assert_eq!(keys.len(), k.keys().len(), "{k:?}");
        }
    }
}
