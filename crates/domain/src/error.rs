//! Error types of the domain crate.

/// Crate result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failure to parse or convert a single domain value (a code, a slug, an enum number).
///
/// Whole applications are checked by [`crate::validate_application`], which reports an
/// [`Invalid`] naming the field instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not one of the 16 Tianjin district codes.
    #[error("unknown district code {0:?}")]
    UnknownDistrict(String),
    /// Not one of the department slugs.
    #[error("unknown department {0:?}")]
    UnknownDepartment(String),
    /// Not a programme slug.
    #[error("unknown programme {0:?}")]
    UnknownProgramme(String),
    /// Not an outcome name.
    #[error("unknown outcome {0:?}")]
    UnknownOutcome(String),
    /// A department unit not of the form `<department>@<district code>`.
    #[error("malformed department unit {0:?}: expected <department>@<district code>")]
    MalformedUnit(String),
    /// A proto enum number that is unspecified (0) or not a known value.
    #[error("{enum_name} value {value} is unspecified or unknown")]
    UnknownEnumValue {
        /// Proto enum name, e.g. `Programme`.
        enum_name: &'static str,
        /// The number received.
        value: i32,
    },
    /// A malformed identity number.
    #[error("invalid identity number: {0}")]
    IdNumber(#[from] crate::IdNumberError),
}

/// Why an application was refused: the first violated rule, with the field path relative to the
/// request (`application.members[2].id_number`), so intake can answer `INVALID_ARGUMENT` with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct Invalid {
    /// Field path starting with `application.`.
    pub field: String,
    /// Lowercase reason without trailing punctuation.
    pub reason: String,
}

impl Invalid {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
