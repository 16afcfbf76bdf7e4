//! Validated applications and their conversion from and to the proto message.

use std::collections::HashSet;

use chrono::NaiveDate;
use onecity_proto::v1 as proto;

use crate::date::{age_on, format_date, parse_date};
use crate::text::{check_name, check_text, TextKind};
use crate::{
    DisabilityKind, DistrictCode, EducationStage, EmergencyKind, Employment, Housing, IdNumber,
    Invalid, Relationship, Supporter,
};

/// Most members one household may declare.
pub const MAX_MEMBERS: usize = 20;
/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest contact phone, in characters.
pub const MAX_PHONE_CHARS: usize = 32;
/// Longest emergency description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;

/// One household's application, validated: see [`validate_application`] for the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// District whose standard and department units apply.
    pub district: DistrictCode,
    /// Members, exactly one of them the applicant.
    pub members: Vec<Person>,
    /// Household financial assets, fen.
    pub financial_assets_fen: i64,
    /// Homes owned.
    pub homes_owned: u32,
    /// Motor vehicles owned.
    pub vehicles_owned: u32,
    /// Housing situation.
    pub housing: Housing,
    /// Out-of-pocket medical expenses over the last 12 months, fen.
    pub medical_expense_12m_fen: i64,
    /// Other rigid expenditure over the last 12 months, fen.
    pub other_rigid_expense_12m_fen: i64,
    /// The declared emergency, if any.
    pub emergency: Option<Emergency>,
    /// Affected by a natural disaster.
    pub disaster_affected: bool,
    /// Consent to share the case with charity organisations.
    pub consent_to_share: bool,
    /// Date of application; ages are computed on it.
    pub application_date: NaiveDate,
    /// Contact phone (free text, at most 32 characters).
    pub contact_phone: String,
}

/// One household member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Identity number; its embedded birth date equals `birth_date`.
    pub id_number: IdNumber,
    /// Name, 1 to 64 characters.
    pub name: String,
    /// Birth date.
    pub birth_date: NaiveDate,
    /// Relationship to the applicant.
    pub relationship: Relationship,
    /// Certified disability, if any.
    pub disability: Option<Disability>,
    /// Has a serious illness.
    pub seriously_ill: bool,
    /// Employment status.
    pub employment: Employment,
    /// Education stage.
    pub education: EducationStage,
    /// Own monthly income, fen.
    pub monthly_income_fen: i64,
    /// Legal supporter outside the household.
    pub supporter: Supporter,
}

/// A certified disability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disability {
    /// Kind.
    pub kind: DisabilityKind,
    /// Grade, 1 (most severe) to 4.
    pub grade: u8,
}

/// A declared sudden emergency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emergency {
    /// Kind.
    pub kind: EmergencyKind,
    /// Free text, at most 2,000 characters.
    pub description: String,
}

impl Person {
    /// Age in whole years on `on`.
    pub fn age_on(&self, on: NaiveDate) -> u32 {
        age_on(self.birth_date, on)
    }

    /// Disability grade (1 to 4), or `None` without a certified disability.
    pub fn disability_grade(&self) -> Option<u8> {
        self.disability.map(|d| d.grade)
    }
}

impl Application {
    /// The applicant (validation guarantees exactly one).
    pub fn applicant(&self) -> Option<&Person> {
        self.members
            .iter()
            .find(|m| m.relationship == Relationship::Applicant)
    }
}

/// Checks a proto application against the intake rules, with `today` (Tianjin's date, see
/// [`crate::today`]) as the bound for "not in the future", and returns the FIRST violation in
/// field order: district, members (count, then each member field by field, then the single
/// applicant), then the remaining application fields in proto order.
///
/// A mismatch between a member's `birth_date` and the date inside the `id_number` is reported on
/// `id_number`; it is only checked when `birth_date` itself parses, so a malformed birth date is
/// reported as such. Likewise "birth date not after the application date" is only checked when
/// the application date parses.
pub fn validate_application(
    p: proto::Application,
    today: NaiveDate,
) -> Result<Application, Invalid> {
    // Destructured so that a new proto field is a compile error here until it is validated.
    let proto::Application {
        district_code,
        members,
        financial_assets_fen,
        homes_owned,
        vehicles_owned,
        housing,
        medical_expense_12m_fen,
        other_rigid_expense_12m_fen,
        emergency,
        disaster_affected,
        consent_to_share,
        application_date,
        contact_phone,
    } = p;

    let district = DistrictCode::parse(&district_code).ok_or_else(|| {
        Invalid::new(
            "application.district_code",
            "must be one of the 16 tianjin district codes",
        )
    })?;

    // Parsed early because member birth dates are compared with it; its own errors are still
    // reported in field order, after the members.
    let parsed_application_date = parse_date(&application_date);

    if members.is_empty() {
        return Err(Invalid::new(
            "application.members",
            "at least 1 member is required",
        ));
    }
    if members.len() > MAX_MEMBERS {
        return Err(Invalid::new(
            "application.members",
            format!(
                "at most {MAX_MEMBERS} members are allowed, got {}",
                members.len()
            ),
        ));
    }
    let mut seen = HashSet::with_capacity(members.len());
    let mut valid_members = Vec::with_capacity(members.len());
    for (i, m) in members.into_iter().enumerate() {
        let person = validate_person(m, i, parsed_application_date, today, &mut seen)?;
        valid_members.push(person);
    }
    let applicants = valid_members
        .iter()
        .filter(|m| m.relationship == Relationship::Applicant)
        .count();
    if applicants != 1 {
        return Err(Invalid::new(
            "application.members",
            format!("exactly one member must be the applicant, found {applicants}"),
        ));
    }

    let financial_assets_fen =
        non_negative(financial_assets_fen, "application.financial_assets_fen")?;
    let homes_owned = count(homes_owned, "application.homes_owned")?;
    let vehicles_owned = count(vehicles_owned, "application.vehicles_owned")?;
    let housing = required_enum(housing, Housing::from_proto, "application.housing")?;
    let medical_expense_12m_fen = non_negative(
        medical_expense_12m_fen,
        "application.medical_expense_12m_fen",
    )?;
    let other_rigid_expense_12m_fen = non_negative(
        other_rigid_expense_12m_fen,
        "application.other_rigid_expense_12m_fen",
    )?;
    let emergency = match emergency {
        None => None,
        Some(proto::Emergency { kind, description }) => {
            let kind = optional_enum(
                kind,
                EmergencyKind::from_proto,
                "application.emergency.kind",
            )?;
            check_text(
                "application.emergency.description",
                &description,
                MAX_DESCRIPTION_CHARS,
                TextKind::Paragraph,
            )?;
            // Kind unspecified means no emergency, so a stray description goes with it.
            kind.map(|kind| Emergency { kind, description })
        }
    };
    let application_date = match parsed_application_date {
        Some(d) => not_in_future(d, today, "application.application_date")?,
        None => return Err(bad_date("application.application_date")),
    };
    check_text(
        "application.contact_phone",
        &contact_phone,
        MAX_PHONE_CHARS,
        TextKind::Line,
    )?;

    Ok(Application {
        district,
        members: valid_members,
        financial_assets_fen,
        homes_owned,
        vehicles_owned,
        housing,
        medical_expense_12m_fen,
        other_rigid_expense_12m_fen,
        emergency,
        disaster_affected,
        consent_to_share,
        application_date,
        contact_phone,
    })
}

fn validate_person(
    p: proto::Person,
    i: usize,
    application_date: Option<NaiveDate>,
    today: NaiveDate,
    seen: &mut HashSet<IdNumber>,
) -> Result<Person, Invalid> {
    let proto::Person {
        id_number,
        name,
        birth_date,
        relationship,
        disability,
        seriously_ill,
        employment,
        education,
        monthly_income_fen,
        supporter,
        // Output only (computed when a case is read): whatever a client sends is ignored.
        age_years: _,
    } = p;
    let field = |name: &str| format!("application.members[{i}].{name}");
    // The paths of the checks below are formatted only for a refused value.
    let path = |name: &'static str| MemberField(i, name);

    let parsed_birth_date = parse_date(&birth_date);
    let id_number =
        IdNumber::parse(&id_number).map_err(|e| Invalid::new(field("id_number"), e.to_string()))?;
    if let Some(b) = parsed_birth_date {
        if id_number.birth_date() != b {
            return Err(Invalid::new(
                field("id_number"),
                "embedded birth date does not match birth_date",
            ));
        }
    }
    if !seen.insert(id_number.clone()) {
        return Err(Invalid::new(
            field("id_number"),
            "duplicate identity number in the household",
        ));
    }

    check_name(&field("name"), &name, MAX_NAME_CHARS)?;

    let birth_date = match parsed_birth_date {
        Some(b) => not_in_future(b, today, path("birth_date"))?,
        None => return Err(bad_date(path("birth_date"))),
    };
    if application_date.is_some_and(|a| birth_date > a) {
        return Err(Invalid::new(
            field("birth_date"),
            "is after the application date",
        ));
    }

    let relationship = required_enum(relationship, Relationship::from_proto, path("relationship"))?;
    let disability = match disability {
        None => None,
        Some(proto::Disability { kind, grade }) => {
            let kind = optional_enum(kind, DisabilityKind::from_proto, path("disability.kind"))?;
            match kind {
                None if grade != 0 => {
                    return Err(Invalid::new(
                        field("disability.grade"),
                        "must be 0 when no disability kind is set",
                    ))
                }
                None => None,
                Some(kind) => {
                    let grade = u8::try_from(grade)
                        .ok()
                        .filter(|g| (1..=4).contains(g))
                        .ok_or_else(|| {
                            Invalid::new(field("disability.grade"), "must be between 1 and 4")
                        })?;
                    Some(Disability { kind, grade })
                }
            }
        }
    };
    let employment = required_enum(employment, Employment::from_proto, path("employment"))?;
    let education = required_enum(education, EducationStage::from_proto, path("education"))?;
    let monthly_income_fen = non_negative(monthly_income_fen, path("monthly_income_fen"))?;
    let supporter = required_enum(supporter, Supporter::from_proto, path("supporter"))?;

    Ok(Person {
        id_number,
        name,
        birth_date,
        relationship,
        disability,
        seriously_ill,
        employment,
        education,
        monthly_income_fen,
        supporter,
    })
}

/// A field path for an error: a literal, or a member's field formatted only when needed.
trait FieldPath {
    fn path(self) -> String;
}

impl FieldPath for &str {
    fn path(self) -> String {
        self.to_owned()
    }
}

/// `application.members[i].name`.
struct MemberField(usize, &'static str);

impl FieldPath for MemberField {
    fn path(self) -> String {
        format!("application.members[{}].{}", self.0, self.1)
    }
}

fn non_negative(v: i64, field: impl FieldPath) -> Result<i64, Invalid> {
    if v < 0 {
        return Err(Invalid::new(field.path(), "must not be negative"));
    }
    Ok(v)
}

fn count(v: i32, field: &str) -> Result<u32, Invalid> {
    u32::try_from(v).map_err(|_| Invalid::new(field, "must not be negative"))
}

fn required_enum<T>(
    v: i32,
    from: fn(i32) -> Option<T>,
    field: impl FieldPath,
) -> Result<T, Invalid> {
    if v == 0 {
        return Err(Invalid::new(field.path(), "must be set"));
    }
    from(v).ok_or_else(|| Invalid::new(field.path(), format!("unknown value {v}")))
}

/// For enums whose UNSPECIFIED value means "none".
fn optional_enum<T>(
    v: i32,
    from: fn(i32) -> Option<T>,
    field: impl FieldPath,
) -> Result<Option<T>, Invalid> {
    if v == 0 {
        return Ok(None);
    }
    from(v)
        .map(Some)
        .ok_or_else(|| Invalid::new(field.path(), format!("unknown value {v}")))
}

fn bad_date(field: impl FieldPath) -> Invalid {
    Invalid::new(field.path(), "must be a real date written YYYY-MM-DD")
}

fn not_in_future(
    d: NaiveDate,
    today: NaiveDate,
    field: impl FieldPath,
) -> Result<NaiveDate, Invalid> {
    if d > today {
        return Err(Invalid::new(field.path(), "must not be in the future"));
    }
    Ok(d)
}

impl TryFrom<proto::Application> for Application {
    type Error = Invalid;

    /// Validates against today's date in Tianjin ([`crate::today`]).
    fn try_from(p: proto::Application) -> Result<Self, Invalid> {
        validate_application(p, crate::today())
    }
}

impl From<&Application> for proto::Application {
    fn from(a: &Application) -> Self {
        let Application {
            district,
            members,
            financial_assets_fen,
            homes_owned,
            vehicles_owned,
            housing,
            medical_expense_12m_fen,
            other_rigid_expense_12m_fen,
            emergency,
            disaster_affected,
            consent_to_share,
            application_date,
            contact_phone,
        } = a;
        proto::Application {
            district_code: district.code().to_owned(),
            members: members.iter().map(proto::Person::from).collect(),
            financial_assets_fen: *financial_assets_fen,
            // Validated counts came from an i32; saturate only for hand-built values.
            homes_owned: i32::try_from(*homes_owned).unwrap_or(i32::MAX),
            vehicles_owned: i32::try_from(*vehicles_owned).unwrap_or(i32::MAX),
            housing: housing.to_proto(),
            medical_expense_12m_fen: *medical_expense_12m_fen,
            other_rigid_expense_12m_fen: *other_rigid_expense_12m_fen,
            emergency: emergency.as_ref().map(|e| proto::Emergency {
                kind: e.kind.to_proto(),
                description: e.description.clone(),
            }),
            disaster_affected: *disaster_affected,
            consent_to_share: *consent_to_share,
            application_date: format_date(*application_date),
            contact_phone: contact_phone.clone(),
        }
    }
}

impl From<Application> for proto::Application {
    fn from(a: Application) -> Self {
        proto::Application::from(&a)
    }
}

impl From<&Person> for proto::Person {
    fn from(p: &Person) -> Self {
        let Person {
            id_number,
            name,
            birth_date,
            relationship,
            disability,
            seriously_ill,
            employment,
            education,
            monthly_income_fen,
            supporter,
        } = p;
        proto::Person {
            id_number: id_number.expose().to_owned(),
            name: name.clone(),
            birth_date: format_date(*birth_date),
            relationship: relationship.to_proto(),
            disability: disability.map(|d| proto::Disability {
                kind: d.kind.to_proto(),
                grade: i32::from(d.grade),
            }),
            seriously_ill: *seriously_ill,
            employment: employment.to_proto(),
            education: education.to_proto(),
            monthly_income_fen: *monthly_income_fen,
            supporter: supporter.to_proto(),
            // Computed when a case is read, never stored.
            age_years: 0,
        }
    }
}
