//! Error type of the eligibility crate.

/// Crate result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why configuration was refused or a stored assessment could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A policy or catalogue file is malformed or incomplete.
    #[error("{file}: {field}: {reason}")]
    Config {
        /// File (or source) name.
        file: String,
        /// Field path inside it, e.g. `version[1].dibao_standard_fen`.
        field: String,
        /// Lowercase reason.
        reason: String,
    },
    /// A proto message that does not describe a valid value.
    #[error("invalid {field}: {reason}")]
    Conversion {
        /// Field of the proto message.
        field: String,
        /// Lowercase reason.
        reason: String,
    },
}

impl Error {
    pub(crate) fn config(file: &str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            file: file.to_owned(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn conversion(field: impl Into<String>, reason: impl ToString) -> Self {
        Error::Conversion {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    /// Turns a TOML syntax or type error into a config error naming the key on the offending
    /// line, since toml only knows the position.
    pub(crate) fn from_toml(file: &str, text: &str, e: &toml::de::Error) -> Self {
        let (field, at) = match e.span() {
            Some(span) => {
                let start = span.start.min(text.len());
                let line_no = text[..start].matches('\n').count() + 1;
                let line = text.lines().nth(line_no - 1).unwrap_or_default();
                let key = line
                    .split_once('=')
                    .map(|(k, _)| k.trim().trim_matches('"').to_owned())
                    .filter(|k| !k.is_empty())
                    .unwrap_or_else(|| line.trim().to_owned());
                (key, format!(" (line {line_no})"))
            }
            None => ("(document)".to_owned(), String::new()),
        };
        let message = e.message().trim_end_matches(['.', '\n']).to_owned();
        Error::config(file, field, format!("{message}{at}"))
    }
}

/// Reads a policy-side file (policy, catalogue, holiday calendar) for its `from_toml_str`:
/// its text and the name errors give it, or an error naming the file.
pub(crate) fn read_source(path: &std::path::Path) -> Result<(String, String)> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(&name, "(file)", format!("cannot read: {e}")))?;
    Ok((text, name))
}
