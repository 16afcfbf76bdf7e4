//! Domain enums mirroring the proto enums (without their UNSPECIFIED values), plus
//! departments and department units, which the protos carry as strings.

use std::fmt;
use std::str::FromStr;

use onecity_proto::v1 as proto;

use crate::{DistrictCode, Error};

/// Declares a domain enum whose variants share names with the prost enum's, with conversions
/// both ways; the UNSPECIFIED value (and any unknown number) has no domain counterpart.
macro_rules! proto_enum {
    (
        $(#[$meta:meta])*
        $name:ident => $proto:ident {
            $($(#[$vmeta:meta])* $variant:ident),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in proto order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The domain value for a proto enum number; `None` for UNSPECIFIED or unknown numbers.
            pub fn from_proto(value: i32) -> Option<Self> {
                match proto::$proto::try_from(value).ok()? {
                    $(proto::$proto::$variant => Some($name::$variant),)+
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }

            /// The proto enum number.
            pub fn to_proto(self) -> i32 {
                proto::$proto::from(self) as i32
            }
        }

        impl From<$name> for proto::$proto {
            fn from(v: $name) -> Self {
                match v {
                    $($name::$variant => proto::$proto::$variant,)+
                }
            }
        }

        impl From<$name> for i32 {
            fn from(v: $name) -> i32 {
                v.to_proto()
            }
        }

        impl TryFrom<i32> for $name {
            type Error = Error;

            fn try_from(value: i32) -> Result<Self, Error> {
                Self::from_proto(value).ok_or(Error::UnknownEnumValue {
                    enum_name: stringify!($proto),
                    value,
                })
            }
        }
    };
}

proto_enum! {
    /// Relationship of a member to the applicant.
    Relationship => Relationship {
        /// The person applying.
        Applicant,
        /// Spouse.
        Spouse,
        /// Child.
        Child,
        /// Parent.
        Parent,
        /// Grandparent.
        Grandparent,
        /// Grandchild.
        Grandchild,
        /// Sibling.
        Sibling,
        /// Another relative in the household.
        Other,
    }
}

proto_enum! {
    /// Kind of certified disability (no disability is `Option::None` on [`crate::Person`]).
    DisabilityKind => DisabilityKind {
        /// Physical.
        Physical,
        /// Visual.
        Visual,
        /// Hearing.
        Hearing,
        /// Speech.
        Speech,
        /// Intellectual.
        Intellectual,
        /// Mental.
        Mental,
        /// Multiple disabilities.
        Multiple,
    }
}

proto_enum! {
    /// Employment status.
    Employment => Employment {
        /// In work.
        Employed,
        /// Without work and able to work.
        Unemployed,
        /// Retired.
        Retired,
        /// Student.
        Student,
        /// Not in the labour force.
        NotInLabourForce,
    }
}

proto_enum! {
    /// Current education stage (`None` means not in education).
    EducationStage => EducationStage {
        /// Not in education.
        None,
        /// Kindergarten.
        Preschool,
        /// Primary school.
        Primary,
        /// Junior secondary school.
        JuniorSecondary,
        /// Senior secondary school.
        SeniorSecondary,
        /// Vocational school.
        Vocational,
        /// University.
        University,
    }
}

proto_enum! {
    /// Whether a legal supporter outside the household exists and can support the member.
    Supporter => Supporter {
        /// No legal supporter.
        None,
        /// A supporter exists but is unable to support.
        Unable,
        /// A supporter exists and is able to support.
        Able,
    }
}

proto_enum! {
    /// Housing situation of the household.
    Housing => Housing {
        /// Adequate housing it owns.
        OwnedAdequate,
        /// Rents.
        Renting,
        /// No home.
        NoHome,
        /// Dilapidated home.
        Dilapidated,
    }
}

proto_enum! {
    /// Kind of sudden emergency (no emergency is `Option::None` on [`crate::Application`]).
    EmergencyKind => EmergencyKind {
        /// Accident.
        Accident,
        /// Sudden serious illness.
        Illness,
        /// Fire.
        Fire,
        /// Flood.
        Flood,
        /// Another emergency.
        Other,
    }
}

proto_enum! {
    /// The twelve programmes, in proto (and assessment) order.
    Programme => Programme {
        /// Minimum living allowance.
        Dibao,
        /// Extreme-poverty support.
        ExtremePoverty,
        /// Low-income marginal household recognition.
        LowIncomeMarginal,
        /// Rigid-expenditure hardship recognition.
        RigidExpenditure,
        /// Medical assistance.
        Medical,
        /// Education assistance.
        Education,
        /// Housing assistance.
        Housing,
        /// Employment assistance.
        Employment,
        /// Temporary assistance.
        Temporary,
        /// Disaster relief.
        DisasterRelief,
        /// Disability living and care subsidies.
        DisabilitySubsidy,
        /// Charity referral.
        Charity,
    }
}

proto_enum! {
    /// Outcome of assessing one programme.
    Outcome => Outcome {
        /// The household qualifies.
        Eligible,
        /// A caseworker must review.
        NeedsReview,
        /// The household does not qualify.
        Ineligible,
    }
}

impl Programme {
    /// Stable snake_case slug, used in configuration and rule ids (`dibao`, `extreme_poverty`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Programme::Dibao => "dibao",
            Programme::ExtremePoverty => "extreme_poverty",
            Programme::LowIncomeMarginal => "low_income_marginal",
            Programme::RigidExpenditure => "rigid_expenditure",
            Programme::Medical => "medical",
            Programme::Education => "education",
            Programme::Housing => "housing",
            Programme::Employment => "employment",
            Programme::Temporary => "temporary",
            Programme::DisasterRelief => "disaster_relief",
            Programme::DisabilitySubsidy => "disability_subsidy",
            Programme::Charity => "charity",
        }
    }

    /// Human-readable name for summaries.
    pub fn label(self) -> &'static str {
        match self {
            Programme::Dibao => "minimum living allowance (dibao)",
            Programme::ExtremePoverty => "extreme-poverty support",
            Programme::LowIncomeMarginal => "low-income marginal household",
            Programme::RigidExpenditure => "rigid-expenditure hardship",
            Programme::Medical => "medical assistance",
            Programme::Education => "education assistance",
            Programme::Housing => "housing assistance",
            Programme::Employment => "employment assistance",
            Programme::Temporary => "temporary assistance",
            Programme::DisasterRelief => "disaster relief",
            Programme::DisabilitySubsidy => "disability subsidies",
            Programme::Charity => "charity referral",
        }
    }
}

impl fmt::Display for Programme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Programme {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Programme::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| Error::UnknownProgramme(s.to_owned()))
    }
}

impl Outcome {
    /// Upper-case name as in the proto without its prefix (`ELIGIBLE`, `NEEDS_REVIEW`, `INELIGIBLE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Eligible => "ELIGIBLE",
            Outcome::NeedsReview => "NEEDS_REVIEW",
            Outcome::Ineligible => "INELIGIBLE",
        }
    }

    /// Whether a referral is issued for this outcome (ELIGIBLE or NEEDS_REVIEW).
    pub fn is_referred(self) -> bool {
        matches!(self, Outcome::Eligible | Outcome::NeedsReview)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Outcome::ALL
            .iter()
            .copied()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| Error::UnknownOutcome(s.to_owned()))
    }
}

/// A department that runs programmes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Department {
    /// Civil affairs: dibao, extreme poverty, marginal, rigid expenditure, temporary.
    CivilAffairs,
    /// Medical security: medical assistance.
    MedicalSecurity,
    /// Education.
    Education,
    /// Housing and urban-rural development.
    Housing,
    /// Human resources and social security: employment assistance.
    HumanResources,
    /// Emergency management: disaster relief.
    EmergencyManagement,
    /// Disabled persons' federation: disability subsidies.
    DisabledPersonsFederation,
    /// Charity organisations.
    Charity,
}

impl Department {
    /// Every department.
    pub const ALL: &'static [Department] = &[
        Department::CivilAffairs,
        Department::MedicalSecurity,
        Department::Education,
        Department::Housing,
        Department::HumanResources,
        Department::EmergencyManagement,
        Department::DisabledPersonsFederation,
        Department::Charity,
    ];

    /// Slug used in department units and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Department::CivilAffairs => "civil-affairs",
            Department::MedicalSecurity => "medical-security",
            Department::Education => "education",
            Department::Housing => "housing",
            Department::HumanResources => "human-resources",
            Department::EmergencyManagement => "emergency-management",
            Department::DisabledPersonsFederation => "disabled-persons-federation",
            Department::Charity => "charity",
        }
    }
}

impl fmt::Display for Department {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Department {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Department::ALL
            .iter()
            .copied()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| Error::UnknownDepartment(s.to_owned()))
    }
}

/// A department's office in one district, written `<department>@<district code>`
/// (e.g. `civil-affairs@120103`): the addressee of a referral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DepartmentUnit {
    /// The department.
    pub department: Department,
    /// The district.
    pub district: DistrictCode,
}

impl fmt::Display for DepartmentUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.department, self.district)
    }
}

impl FromStr for DepartmentUnit {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (department, district) = s
            .split_once('@')
            .ok_or_else(|| Error::MalformedUnit(s.to_owned()))?;
        Ok(DepartmentUnit {
            department: department.parse()?,
            district: district.parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_numbers_round_trip() {
        for (i, p) in Programme::ALL.iter().enumerate() {
            assert_eq!(p.to_proto(), i as i32 + 1);
            assert_eq!(Programme::try_from(p.to_proto()), Ok(*p));
            assert_eq!(p.as_str().parse::<Programme>(), Ok(*p));
        }
        assert_eq!(Programme::ALL.len(), 12);
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_proto(o.to_proto()), Some(*o));
            assert_eq!(o.as_str().parse::<Outcome>(), Ok(*o));
        }
        assert_eq!(Relationship::from_proto(0), None);
        assert_eq!(Relationship::from_proto(99), None);
        assert_eq!(
            Housing::try_from(0),
            Err(Error::UnknownEnumValue {
                enum_name: "Housing",
                value: 0
            })
        );
        assert_eq!(EducationStage::from_proto(1), Some(EducationStage::None));
        assert_eq!(i32::from(EmergencyKind::Other), 5);
    }

    #[test]
    fn department_slugs_and_units() {
        assert_eq!(Department::ALL.len(), 8);
        for d in Department::ALL {
            assert_eq!(d.as_str().parse::<Department>(), Ok(*d));
        }
        let unit: DepartmentUnit = "disabled-persons-federation@120116".parse().unwrap();
        assert_eq!(unit.department, Department::DisabledPersonsFederation);
        assert_eq!(unit.district.code(), "120116");
        assert_eq!(unit.to_string(), "disabled-persons-federation@120116");
        assert!("civil-affairs".parse::<DepartmentUnit>().is_err());
        assert!("civil-affairs@999999".parse::<DepartmentUnit>().is_err());
        assert!("police@120101".parse::<DepartmentUnit>().is_err());
    }
}
