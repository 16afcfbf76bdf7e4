//! Bearer tokens and the principals they stand for: the `[[tokens]]` entries, their
//! validation and the built-in DEMO tokens.

use std::collections::HashMap;
use std::fmt;

use anyhow::bail;
use onecity_domain::{DepartmentUnit, DistrictCode, Principal};
use serde::{Deserialize, Serialize};

use super::Config;

/// The demo terminal token the CLI uses when no `--token` is given (terminal `T-120103-01`).
pub const DEMO_TERMINAL_TOKEN: &str = "demo-terminal-120103";

/// Longest accepted token, id or street office name.
const MAX_TOKEN_CHARS: usize = 256;
const MAX_ID_CHARS: usize = 64;

impl Config {
    /// Token → principal, validated: each entry has exactly the fields its kind needs, districts
    /// and units exist, and no token appears twice. Errors name the entry (index, kind, id or
    /// unit), never the token.
    pub fn principals(&self) -> anyhow::Result<HashMap<String, Principal>> {
        let mut map: HashMap<String, Principal> = HashMap::with_capacity(self.tokens.len());
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(self.tokens.len());
        for (i, entry) in self.tokens.iter().enumerate() {
            let principal = entry
                .to_principal()
                .map_err(|reason| anyhow::anyhow!("{}: {reason}", entry.label(i)))?;
            if let Some(first) = seen.insert(entry.token.as_str(), i) {
                bail!(
                    "{}: the same token is already given to tokens[{first}]",
                    entry.label(i)
                );
            }
            map.insert(entry.token.clone(), principal);
        }
        Ok(map)
    }

    /// True when any configured token is one of the published demo tokens (also when they
    /// were copied into a file), so the server must warn that anyone can call it.
    pub fn uses_demo_tokens(&self) -> bool {
        let demo: Vec<String> = demo_tokens().into_iter().map(|t| t.token).collect();
        self.tokens.iter().any(|t| demo.contains(&t.token))
    }
}

pub(super) fn redact(token: &str) -> String {
    if token.starts_with("demo-") && demo_tokens().iter().any(|t| t.token == token) {
        "demo-…".to_owned()
    } else {
        "****".to_owned()
    }
}

/// The kind of principal a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A street-office intake terminal: needs `id`, `district`, `street_office`.
    Terminal,
    /// A department unit's back-office system: needs `unit`.
    Department,
    /// An administrator: needs `id`.
    Admin,
    /// Another onecity process (e.g. a worker reaching the shared log): needs `id`.
    Service,
}

impl PrincipalKind {
    fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Terminal => "terminal",
            PrincipalKind::Department => "department",
            PrincipalKind::Admin => "admin",
            PrincipalKind::Service => "service",
        }
    }
}

/// One `[[tokens]]` entry of the config file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The bearer token, a secret: 1–256 visible ASCII characters, unique in the file.
    pub token: String,
    /// Kind of principal: `terminal`, `department`, `admin` or `service`.
    pub principal: PrincipalKind,
    /// Terminal, admin or service id (e.g. `T-120103-07`), recorded as the actor of events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Terminal only: district code of its street office (one of the 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    /// Terminal only: name of its street office.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street_office: Option<String>,
    /// Department only: the unit, `<department>@<district code>` (e.g. `civil-affairs@120103`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

// Hand-written so the token never reaches a log line.
impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &"****")
            .field("principal", &self.principal)
            .field("id", &self.id)
            .field("district", &self.district)
            .field("street_office", &self.street_office)
            .field("unit", &self.unit)
            .finish()
    }
}

impl TokenConfig {
    /// A terminal token.
    pub fn terminal(token: &str, id: &str, district: &str, street_office: &str) -> Self {
        TokenConfig {
            token: token.to_owned(),
            principal: PrincipalKind::Terminal,
            id: Some(id.to_owned()),
            district: Some(district.to_owned()),
            street_office: Some(street_office.to_owned()),
            unit: None,
        }
    }

    /// A department unit token.
    pub fn department(token: &str, unit: &str) -> Self {
        TokenConfig {
            token: token.to_owned(),
            principal: PrincipalKind::Department,
            id: None,
            district: None,
            street_office: None,
            unit: Some(unit.to_owned()),
        }
    }

    /// An admin or service token.
    pub fn named(token: &str, kind: PrincipalKind, id: &str) -> Self {
        TokenConfig {
            token: token.to_owned(),
            principal: kind,
            id: Some(id.to_owned()),
            district: None,
            street_office: None,
            unit: None,
        }
    }

    /// How errors name this entry: position, kind and id or unit, never the token.
    fn label(&self, index: usize) -> String {
        let name = self.id.as_deref().or(self.unit.as_deref());
        match name {
            Some(name) => format!("tokens[{index}] ({} {name:?})", self.principal.as_str()),
            None => format!("tokens[{index}] ({})", self.principal.as_str()),
        }
    }

    /// The principal this entry stands for, or why the entry is invalid.
    pub fn to_principal(&self) -> Result<Principal, String> {
        check_token(&self.token)?;
        let a_kind = match self.principal {
            PrincipalKind::Terminal => "a terminal",
            PrincipalKind::Department => "a department",
            PrincipalKind::Admin => "an admin",
            PrincipalKind::Service => "a service",
        };
        // Each kind names the fields it needs; any other field is a mistake worth refusing
        // (e.g. a `district` on a department token suggests the unit was meant elsewhere).
        let needed: &[&str] = match self.principal {
            PrincipalKind::Terminal => &["id", "district", "street_office"],
            PrincipalKind::Department => &["unit"],
            PrincipalKind::Admin | PrincipalKind::Service => &["id"],
        };
        let fields = [
            ("id", self.id.as_deref()),
            ("district", self.district.as_deref()),
            ("street_office", self.street_office.as_deref()),
            ("unit", self.unit.as_deref()),
        ];
        for (name, value) in fields {
            match (needed.contains(&name), value) {
                (true, None) => return Err(format!("{a_kind} token needs `{name}`")),
                (false, Some(_)) => {
                    return Err(format!("`{name}` does not apply to {a_kind} token"))
                }
                _ => {}
            }
        }
        let text = |name: &str, value: Option<&str>| -> Result<String, String> {
            let v = value.unwrap_or_default().trim();
            if v.is_empty() {
                return Err(format!("`{name}` is empty"));
            }
            if v.chars().count() > MAX_ID_CHARS || v.chars().any(char::is_control) {
                return Err(format!(
                    "`{name}` must be at most {MAX_ID_CHARS} characters without control characters"
                ));
            }
            Ok(v.to_owned())
        };
        Ok(match self.principal {
            PrincipalKind::Terminal => {
                let district = self.district.as_deref().unwrap_or_default();
                Principal::Terminal {
                    id: text("id", self.id.as_deref())?,
                    district: DistrictCode::parse(district).ok_or_else(|| {
                        format!("unknown district {district:?}: expected one of the 16 Tianjin district codes (120101..120119)")
                    })?,
                    street_office: text("street_office", self.street_office.as_deref())?,
                }
            }
            PrincipalKind::Department => {
                let unit = self.unit.as_deref().unwrap_or_default();
                Principal::Department {
                    unit: unit.parse::<DepartmentUnit>().map_err(|e| {
                        format!("bad unit {unit:?}: {e} (e.g. civil-affairs@120103)")
                    })?,
                }
            }
            PrincipalKind::Admin => Principal::Admin {
                id: text("id", self.id.as_deref())?,
            },
            PrincipalKind::Service => Principal::Service {
                id: text("id", self.id.as_deref())?,
            },
        })
    }
}

fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("`token` is empty".to_owned());
    }
    // It travels as `authorization: Bearer <token>`, so it must be a plain header value.
    if token.len() > MAX_TOKEN_CHARS || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "`token` must be 1..={MAX_TOKEN_CHARS} visible ASCII characters without spaces"
        ));
    }
    Ok(())
}

/// The built-in DEMO tokens: public, for trying onecity out on one machine. Every token starts
/// with `demo-` and says what it is:
///
/// | token | principal |
/// | --- | --- |
/// | `demo-terminal-120103` | terminal `T-120103-01`, Youyi Road street office, Hexi |
/// | `demo-terminal-120101` | terminal `T-120101-01`, Quanyechang street office, Heping |
/// | `demo-<department>-120103` | each of the 8 department units in Hexi, e.g. `demo-civil-affairs-120103` |
/// | `demo-civil-affairs-120101` | `civil-affairs@120101` (Heping) |
/// | `demo-admin` | admin `demo-admin` |
/// | `demo-service` | service `demo-service` |
pub fn demo_tokens() -> Vec<TokenConfig> {
    let mut tokens = vec![
        TokenConfig::terminal(
            DEMO_TERMINAL_TOKEN,
            "T-120103-01",
            "120103",
            "Youyi Road street office",
        ),
        TokenConfig::terminal(
            "demo-terminal-120101",
            "T-120101-01",
            "120101",
            "Quanyechang street office",
        ),
    ];
    for department in onecity_domain::Department::ALL {
        tokens.push(TokenConfig::department(
            &format!("demo-{department}-120103"),
            &format!("{department}@120103"),
        ));
    }
    tokens.push(TokenConfig::department(
        "demo-civil-affairs-120101",
        "civil-affairs@120101",
    ));
    tokens.push(TokenConfig::named(
        "demo-admin",
        PrincipalKind::Admin,
        "demo-admin",
    ));
    tokens.push(TokenConfig::named(
        "demo-service",
        PrincipalKind::Service,
        "demo-service",
    ));
    tokens
}
