//! Bearer tokens and the principals they stand for: the `[[tokens]]` entries, their
//! validation and the built-in DEMO tokens.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use anyhow::bail;
use onecity_domain::{DepartmentUnit, DistrictCode, Principal};
use onecity_eventlog_grpc::Grant;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{Config, Role};

/// The demo terminal token the CLI uses when no `--token` is given (terminal `T-120103-01`).
pub const DEMO_TERMINAL_TOKEN: &str = "demo-terminal-120103";

/// Longest accepted token, id or street office name.
const MAX_TOKEN_CHARS: usize = 256;
const MAX_ID_CHARS: usize = 64;

/// What the server accepts as a caller's credentials: SHA-256 hashes of bearer tokens and
/// the URI SANs of client certificates, each standing for a principal. Built from validated
/// `[[tokens]]` entries ([`Config::principals`]); the plain tokens are not kept.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    hashes: Vec<([u8; 32], Identity)>,
    clients: HashMap<String, Identity>,
}

/// Who a credential stands for, and what it may write to the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The principal.
    pub principal: Principal,
    /// What it may write through the `EventLogService` (its `roles`, see
    /// [`crate::ownership`]); only `service` principals write at all.
    pub grant: Arc<Grant>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("tokens", &self.hashes.len())
            .field("client_uris", &self.clients.len())
            .finish()
    }
}

impl Credentials {
    /// The principal of a bearer token. Every configured hash is compared, in constant time
    /// per hash and with no early exit, so the time taken says nothing about which entry,
    /// if any, is close to the guess.
    pub fn token(&self, token: &str) -> Option<&Principal> {
        self.token_identity(token).map(|i| &i.principal)
    }

    /// The identity of a bearer token, compared as in [`Credentials::token`].
    pub fn token_identity(&self, token: &str) -> Option<&Identity> {
        let hash = sha256(token);
        let mut found = None;
        for (h, identity) in &self.hashes {
            if bool::from(h.ct_eq(&hash)) {
                found = Some(identity);
            }
        }
        found
    }

    /// The principal of a client certificate's URI SAN.
    pub fn client_uri(&self, uri: &str) -> Option<&Principal> {
        self.client_identity(uri).map(|i| &i.principal)
    }

    /// The identity of a client certificate's URI SAN.
    pub fn client_identity(&self, uri: &str) -> Option<&Identity> {
        self.clients.get(uri)
    }

    /// How many bearer tokens are configured.
    pub fn tokens(&self) -> usize {
        self.hashes.len()
    }

    /// How many client certificate URIs are mapped.
    pub fn client_uris(&self) -> usize {
        self.clients.len()
    }
}

/// SHA-256 of a token, the form `token_sha256` holds (in hex).
pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Config {
    /// Credentials → principal, validated: each entry has exactly one credential (`token`,
    /// `token_sha256` or `client_uri`) and exactly the fields its kind needs, districts and
    /// units exist, and no credential appears twice. Errors name the entry (index, kind, id
    /// or unit), never the token.
    pub fn principals(&self) -> anyhow::Result<Credentials> {
        let mut creds = Credentials::default();
        let mut seen: HashMap<[u8; 32], usize> = HashMap::with_capacity(self.tokens.len());
        for (i, entry) in self.tokens.iter().enumerate() {
            let label = || entry.label(i);
            let principal = entry
                .to_principal()
                .map_err(|reason| anyhow::anyhow!("{}: {reason}", label()))?;
            let grant = entry
                .grant()
                .map_err(|reason| anyhow::anyhow!("{}: {reason}", label()))?;
            let identity = Identity { principal, grant };
            match entry
                .credential()
                .map_err(|reason| anyhow::anyhow!("{}: {reason}", label()))?
            {
                Credential::Hash(hash) => {
                    if let Some(first) = seen.insert(hash, i) {
                        bail!(
                            "{}: the same token is already given to tokens[{first}]",
                            label()
                        );
                    }
                    creds.hashes.push((hash, identity));
                }
                Credential::ClientUri(uri) => {
                    if creds.clients.insert(uri.to_owned(), identity).is_some() {
                        bail!("{}: client_uri {uri:?} is mapped twice", label());
                    }
                }
            }
        }
        Ok(creds)
    }

    /// True when any configured token is one of the published demo tokens (also when they
    /// were copied into a file, in clear or hashed), so the server must warn that anyone
    /// can call it.
    pub fn uses_demo_tokens(&self) -> bool {
        let demo: Vec<[u8; 32]> = demo_tokens()
            .iter()
            .filter_map(|t| t.token.as_deref().map(sha256))
            .collect();
        self.tokens.iter().any(|t| match t.credential() {
            Ok(Credential::Hash(h)) => demo.contains(&h),
            _ => false,
        })
    }

    /// The entries that hold a token in clear (`token`, not `token_sha256`), by label;
    /// demo tokens are not counted (they are public anyway: [`Config::uses_demo_tokens`]).
    pub fn clear_tokens(&self) -> Vec<String> {
        let demo = demo_tokens();
        self.tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| t.token.is_some() && !demo.iter().any(|d| d.token == t.token))
            .map(|(i, t)| t.label(i))
            .collect()
    }
}

pub(super) fn redact(token: &str) -> String {
    if token.starts_with("demo-")
        && demo_tokens()
            .iter()
            .any(|t| t.token.as_deref() == Some(token))
    {
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
    /// A district's supervisor (`supervisor@<district>`): needs `district`.
    Supervisor,
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
            PrincipalKind::Supervisor => "supervisor",
            PrincipalKind::Admin => "admin",
            PrincipalKind::Service => "service",
        }
    }
}

/// One `[[tokens]]` entry of the config file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The bearer token in clear, a secret: 1–256 visible ASCII characters, unique in the
    /// file. Accepted on a loopback address only (the demo); elsewhere use `token_sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The SHA-256 of the bearer token, 64 hex digits (`onecity token new` prints it): the
    /// server never holds the token itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// Instead of a token: the URI SAN of a client certificate (mTLS, `[tls] client_ca`),
    /// e.g. `spiffe://onecity/service/intake-1`. A call with no bearer token over a
    /// connection with this certificate is this principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
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
    /// Service only: the roles it may act as (`intake`, `eligibility`, `handoff`), which
    /// decide the event types it may append and the checkpoints it may save
    /// ([`crate::ownership`]). Omitted or `["all"]`: every role, and any event type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Role>>,
}

// Hand-written so the token never reaches a log line.
impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &self.token.as_ref().map(|_| "****"))
            .field("token_sha256", &self.token_sha256)
            .field("client_uri", &self.client_uri)
            .field("principal", &self.principal)
            .field("id", &self.id)
            .field("district", &self.district)
            .field("street_office", &self.street_office)
            .field("unit", &self.unit)
            .field("roles", &self.roles)
            .finish()
    }
}

impl TokenConfig {
    /// A terminal token.
    pub fn terminal(token: &str, id: &str, district: &str, street_office: &str) -> Self {
        TokenConfig {
            token: Some(token.to_owned()),
            token_sha256: None,
            client_uri: None,
            principal: PrincipalKind::Terminal,
            id: Some(id.to_owned()),
            district: Some(district.to_owned()),
            street_office: Some(street_office.to_owned()),
            unit: None,
            roles: None,
        }
    }

    /// A department unit token.
    pub fn department(token: &str, unit: &str) -> Self {
        TokenConfig {
            token: Some(token.to_owned()),
            token_sha256: None,
            client_uri: None,
            principal: PrincipalKind::Department,
            id: None,
            district: None,
            street_office: None,
            unit: Some(unit.to_owned()),
            roles: None,
        }
    }

    /// A district supervisor token.
    pub fn supervisor(token: &str, district: &str) -> Self {
        TokenConfig {
            token: Some(token.to_owned()),
            token_sha256: None,
            client_uri: None,
            principal: PrincipalKind::Supervisor,
            id: None,
            district: Some(district.to_owned()),
            street_office: None,
            unit: None,
            roles: None,
        }
    }

    /// An admin or service token.
    pub fn named(token: &str, kind: PrincipalKind, id: &str) -> Self {
        TokenConfig {
            token: Some(token.to_owned()),
            token_sha256: None,
            client_uri: None,
            principal: kind,
            id: Some(id.to_owned()),
            district: None,
            street_office: None,
            unit: None,
            roles: None,
        }
    }

    /// How errors name this entry: position, kind and id or unit, never the token.
    pub(super) fn label(&self, index: usize) -> String {
        let name = match self.principal {
            PrincipalKind::Supervisor => self.district.as_deref(),
            _ => self.id.as_deref().or(self.unit.as_deref()),
        };
        match name {
            Some(name) => format!("tokens[{index}] ({} {name:?})", self.principal.as_str()),
            None => format!("tokens[{index}] ({})", self.principal.as_str()),
        }
    }

    /// This entry with `token_sha256` in place of the token in clear.
    pub fn hashed(mut self) -> Self {
        if let Some(token) = self.token.take() {
            self.token_sha256 = Some(hex::encode(sha256(&token)));
        }
        self
    }

    /// The entry's one credential, checked: the hash of its token, or its client URI.
    fn credential(&self) -> Result<Credential<'_>, String> {
        match (&self.token, &self.token_sha256, &self.client_uri) {
            (Some(token), None, None) => {
                check_token(token)?;
                Ok(Credential::Hash(sha256(token)))
            }
            (None, Some(hex_hash), None) => {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(hex_hash.trim(), &mut hash).map_err(|_| {
                    "`token_sha256` must be 64 hex digits (the SHA-256 of the token)".to_owned()
                })?;
                Ok(Credential::Hash(hash))
            }
            (None, None, Some(uri)) => {
                if uri.is_empty() || uri.len() > MAX_TOKEN_CHARS || !uri.contains(':') {
                    return Err(format!(
                        "`client_uri` must be a URI of at most {MAX_TOKEN_CHARS} characters (e.g. spiffe://onecity/service/ID)"
                    ));
                }
                Ok(Credential::ClientUri(uri))
            }
            _ => Err(
                "give exactly one of `token_sha256`, `token` (loopback only) or `client_uri`"
                    .to_owned(),
            ),
        }
    }

    /// What this entry may write to the event log: its `roles`, checked (a service's
    /// only, at least one, each owning something or `all`).
    pub fn grant(&self) -> Result<Arc<Grant>, String> {
        let Some(roles) = &self.roles else {
            return Ok(crate::ownership::shared_grant(None));
        };
        if self.principal != PrincipalKind::Service {
            return Err("`roles` applies to a service token only".to_owned());
        }
        if roles.is_empty() {
            return Err(
                "`roles` is empty: name the roles it acts as (intake, eligibility, handoff) or leave it out for all"
                    .to_owned(),
            );
        }
        if let Some(r) = roles
            .iter()
            .find(|r| **r != Role::All && !crate::ownership::GRANTABLE.contains(r))
        {
            return Err(format!(
                "role {:?} writes nothing to the log: a service token's roles are intake, eligibility, handoff or all",
                r.as_str()
            ));
        }
        Ok(crate::ownership::shared_grant(Some(roles)))
    }

    /// The principal this entry stands for, or why the entry is invalid.
    pub fn to_principal(&self) -> Result<Principal, String> {
        self.credential()?;
        let a_kind = match self.principal {
            PrincipalKind::Terminal => "a terminal",
            PrincipalKind::Department => "a department",
            PrincipalKind::Supervisor => "a supervisor",
            PrincipalKind::Admin => "an admin",
            PrincipalKind::Service => "a service",
        };
        // Each kind names the fields it needs; any other field is a mistake worth refusing
        // (e.g. a `district` on a department token suggests the unit was meant elsewhere).
        let needed: &[&str] = match self.principal {
            PrincipalKind::Terminal => &["id", "district", "street_office"],
            PrincipalKind::Department => &["unit"],
            PrincipalKind::Supervisor => &["district"],
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
        let district = || {
            let district = self.district.as_deref().unwrap_or_default();
            DistrictCode::parse(district).ok_or_else(|| {
                format!("unknown district {district:?}: expected one of the 16 Tianjin district codes (120101..120119)")
            })
        };
        Ok(match self.principal {
            PrincipalKind::Terminal => Principal::Terminal {
                id: text("id", self.id.as_deref())?,
                district: district()?,
                street_office: text("street_office", self.street_office.as_deref())?,
            },
            PrincipalKind::Supervisor => Principal::Supervisor {
                district: district()?,
            },
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

/// The credential of one entry.
enum Credential<'a> {
    Hash([u8; 32]),
    ClientUri(&'a str),
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
/// | `demo-supervisor-120103` | the supervisor of Hexi (`supervisor@120103`) |
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
    tokens.push(TokenConfig::supervisor("demo-supervisor-120103", "120103"));
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
