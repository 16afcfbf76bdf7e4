//! `[nats]`: how a process on a `jetstream:` log authenticates to NATS, and its TLS.
//!
//! Secrets are read from files (or from the log URL, for development), never written in the
//! configuration file itself, so the file can be shown (`onecity config`) and kept in a
//! ConfigMap.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use onecity_eventlog_jetstream::NatsAuth;
use serde::{Deserialize, Serialize};

/// Environment variable overriding [`NatsConfig::user`].
pub const ENV_NATS_USER: &str = "ONECITY_NATS_USER";
/// Environment variable overriding [`NatsConfig::password_file`].
pub const ENV_NATS_PASSWORD_FILE: &str = "ONECITY_NATS_PASSWORD_FILE";
/// Environment variable overriding [`NatsConfig::token_file`].
pub const ENV_NATS_TOKEN_FILE: &str = "ONECITY_NATS_TOKEN_FILE";
/// Environment variable overriding [`NatsConfig::nkey_seed_file`].
pub const ENV_NATS_NKEY_SEED_FILE: &str = "ONECITY_NATS_NKEY_SEED_FILE";
/// Environment variable overriding [`NatsConfig::creds_file`].
pub const ENV_NATS_CREDS_FILE: &str = "ONECITY_NATS_CREDS_FILE";
/// Environment variable overriding [`NatsConfig::ca`].
pub const ENV_NATS_CA: &str = "ONECITY_NATS_CA";
/// Environment variable overriding [`NatsConfig::cert`].
pub const ENV_NATS_CERT: &str = "ONECITY_NATS_CERT";
/// Environment variable overriding [`NatsConfig::key`].
pub const ENV_NATS_KEY: &str = "ONECITY_NATS_KEY";

/// `[nats]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// User name; its password is in `password_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// File holding the user's password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// File holding an authentication token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// File holding an nkey seed (`SU…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and seed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
    /// CA (PEM) that signed the NATS servers' certificates; setting it requires TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that verify clients; with `key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Private key of `cert` (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Require TLS even without `ca` (the system's roots are trusted then).
    pub require_tls: bool,
}

impl NatsConfig {
    /// Applies the `ONECITY_NATS_*` variables `get` finds.
    pub(crate) fn apply_env(&mut self, get: &dyn Fn(&str) -> Option<String>) {
        let path = |name: &str| get(name).map(|v| PathBuf::from(v.trim()));
        if let Some(v) = get(ENV_NATS_USER) {
            self.user = Some(v.trim().to_owned());
        }
        for (name, slot) in [
            (ENV_NATS_PASSWORD_FILE, &mut self.password_file),
            (ENV_NATS_TOKEN_FILE, &mut self.token_file),
            (ENV_NATS_NKEY_SEED_FILE, &mut self.nkey_seed_file),
            (ENV_NATS_CREDS_FILE, &mut self.creds_file),
            (ENV_NATS_CA, &mut self.ca),
            (ENV_NATS_CERT, &mut self.cert),
            (ENV_NATS_KEY, &mut self.key),
        ] {
            if let Some(v) = path(name) {
                *slot = Some(v);
            }
        }
    }

    /// Checks that the settings make one credential and a whole client certificate.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if self.user.is_some() != self.password_file.is_some() {
            anyhow::bail!("nats: user and password_file go together");
        }
        let credentials = [
            self.user.is_some(),
            self.token_file.is_some(),
            self.nkey_seed_file.is_some(),
            self.creds_file.is_some(),
        ];
        if credentials.iter().filter(|&&set| set).count() > 1 {
            anyhow::bail!(
                "nats: set one of user/password_file, token_file, nkey_seed_file, creds_file"
            );
        }
        if self.cert.is_some() != self.key.is_some() {
            anyhow::bail!("nats: cert and key go together");
        }
        Ok(())
    }

    /// Whether anything is set (a deployment that authenticates or encrypts).
    pub fn is_set(&self) -> bool {
        *self != NatsConfig::default()
    }

    /// The backend's settings, with the password and token read from their files.
    pub fn auth(&self) -> anyhow::Result<NatsAuth> {
        let read = |what: &str, path: &Path| -> anyhow::Result<String> {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("nats: read {what} file {}", path.display()))?;
            let secret = text.trim();
            anyhow::ensure!(
                !secret.is_empty(),
                "nats: {what} file {} is empty",
                path.display()
            );
            Ok(secret.to_owned())
        };
        let user_password = match (&self.user, &self.password_file) {
            (Some(user), Some(file)) => Some((user.clone(), read("password", file)?)),
            _ => None,
        };
        let token = self
            .token_file
            .as_deref()
            .map(|f| read("token", f))
            .transpose()?;
        Ok(NatsAuth {
            user_password,
            token,
            nkey_seed_file: self.nkey_seed_file.clone(),
            creds_file: self.creds_file.clone(),
            tls_ca: self.ca.clone(),
            tls_client: self.cert.clone().zip(self.key.clone()),
            require_tls: self.require_tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_files_and_settings_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let c = NatsConfig {
            user: Some("log".into()),
            password_file: Some(pw.clone()),
            ..NatsConfig::default()
        };
        c.validate().unwrap();
        assert_eq!(
            c.auth().unwrap().user_password,
            Some(("log".into(), "s3cret".into()))
        );
        let half = NatsConfig {
            user: Some("log".into()),
            ..NatsConfig::default()
        };
        assert!(half.validate().is_err());
        let two = NatsConfig {
            token_file: Some(pw.clone()),
            ..c.clone()
        };
        assert!(two.validate().is_err());
        let missing = NatsConfig {
            token_file: Some(dir.path().join("nope")),
            ..NatsConfig::default()
        };
        let err = missing.auth().unwrap_err().to_string();
        assert!(err.contains("token file"), "{err}");
        let mut env = NatsConfig::default();
        env.apply_env(&|name| (name == ENV_NATS_CA).then(|| "/etc/nats/ca.pem".to_owned()));
        assert_eq!(env.ca, Some(PathBuf::from("/etc/nats/ca.pem")));
    }
}
