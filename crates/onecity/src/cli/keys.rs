//! `onecity token new` and `onecity cert`: credentials made on the spot, written only where
//! asked (files 0600 for secrets), never logged.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

use super::output::emit;
use super::{CertCommand, PrincipalArg, TokenCommand};
use crate::config::{Config, PrincipalKind, TokenConfig};
use crate::tls::Ca;

/// Bytes of randomness in a token `onecity token new` makes.
const TOKEN_BYTES: usize = 32;

/// A fresh random token: 256 bits from the operating system, in hex.
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::getrandom(&mut bytes).context("read random bytes from the operating system")?;
    Ok(hex::encode(bytes))
}

/// Runs `onecity token ...`.
pub(super) fn token(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::New {
        principal,
        id,
        district,
        street_office,
        unit,
        roles,
        token_out,
    } = command;
    let token = new_token()?;
    let entry = TokenConfig {
        token: Some(token.clone()),
        token_sha256: None,
        client_uri: None,
        principal: match principal {
            PrincipalArg::Terminal => PrincipalKind::Terminal,
            PrincipalArg::Department => PrincipalKind::Department,
            PrincipalArg::Admin => PrincipalKind::Admin,
            PrincipalArg::Service => PrincipalKind::Service,
        },
        id,
        district,
        street_office,
        unit,
        roles: (!roles.is_empty()).then_some(roles),
    };
    // The same validation as the server's, so a stanza that prints also loads.
    let check = Config {
        tokens: vec![entry.clone()],
        ..Config::default()
    };
    check.principals()?;
    let stanza = toml::to_string(&TokensFile {
        tokens: vec![entry.hashed()],
    })
    .context("render the [[tokens]] entry")?;
    let stanza = format!(
        "# for the server's config file: the token's SHA-256, not the token\n{}",
        stanza.trim_end()
    );
    match token_out {
        Some(path) => {
            write_secret(&path, &format!("{token}\n"))?;
            emit(&format!("# token written to {}\n{stanza}", path.display()))
        }
        None => emit(&format!(
            "# the token, shown once: hand it to its holder (e.g. in a file for --token-file)\n{token}\n{stanza}"
        )),
    }
}

#[derive(serde::Serialize)]
struct TokensFile {
    tokens: Vec<TokenConfig>,
}

/// Runs `onecity cert ...`.
pub(super) fn cert(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Ca { out, name } => {
            let ca = Ca::new(&name)?;
            std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
            write_public(&out.join("ca.pem"), &ca.cert_pem)?;
            write_secret(&out.join("ca.key"), &ca.key_pem)?;
            emit(&format!(
                "wrote {0}/ca.pem (trust it everywhere) and {0}/ca.key (keep it offline)",
                out.display()
            ))
        }
        CertCommand::Issue {
            ca,
            out,
            name,
            host,
            uri,
            days,
        } => {
            if host.is_empty() && uri.is_empty() {
                anyhow::bail!("give at least one --host (a server) or --uri (a client identity)");
            }
            let read = |f: &str| {
                let path = ca.join(f);
                std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
            };
            let ca = Ca::from_pem(&read("ca.pem")?, &read("ca.key")?)?;
            let issued = ca.issue(&host, &uri, days)?;
            std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
            let cert = out.join(format!("{name}.pem"));
            let key = out.join(format!("{name}.key"));
            write_public(&cert, &issued.cert_pem)?;
            write_secret(&key, &issued.key_pem)?;
            emit(&format!(
                "wrote {} and {} (valid {days} days)",
                cert.display(),
                key.display()
            ))
        }
    }
}

fn write_public(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// Writes a secret to a new file readable by its owner only; an existing file is not
/// overwritten (a key or token in use is not lost by a repeated command).
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("create {} (it must not exist yet)", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", path.display()))
}
