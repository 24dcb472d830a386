//! Who pullprobe authenticates as: a user name and its secret (a password, or
//! an identity token from `docker login`), and the password sources of
//! probes.yaml (`password_file`, `password_env`). A Docker config
//! ([`crate::registry::docker_config`]) and a cloud's workload identity or a
//! credential provider plugin ([`crate::registry::cloud`]) are the others; which one applies, and when it
//! is read, is [`crate::registry::auth`]'s decision.
//!
//! A secret never prints: [`Credentials`] and [`Secret`] show `[redacted]`,
//! and the Basic header they make is marked sensitive.

use std::fmt;

use base64::Engine;
use reqwest::header::HeaderValue;

use crate::config::PasswordSource;
use crate::reason::{ProbeError, Reason};

/// A user name and its secret. Prints without the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    secret: Secret,
    /// Who issued them, for messages ("an ECR authorization token for role …"); never a secret.
    origin: Option<String>,
}

/// A password, or an identity (OAuth2 refresh) token from `docker login`.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Password(String),
    IdentityToken(String),
}

impl Credentials {
    pub fn new(username: impl Into<String>, secret: Secret) -> Self {
        Credentials { username: username.into(), secret, origin: None }
    }

    /// Name who issued them (a cloud identity, a plugin) in failure messages.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// `Authorization: Basic …`, marked sensitive; `None` for an identity token.
    pub fn basic_header(&self) -> Option<HeaderValue> {
        let Secret::Password(password) = &self.secret else { return None };
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", self.username));
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// Who a failure says it authenticated as: the user name, never the secret.
    pub fn describe(&self) -> String {
        if let Some(origin) = &self.origin {
            return format!("{origin} (user {:?})", self.username);
        }
        match (&self.secret, self.username.is_empty()) {
            (Secret::IdentityToken(_), _) => "the identity token of the Docker config".to_string(),
            (_, true) => "an empty user name".to_string(),
            (_, false) => format!("the credentials of user {:?}", self.username),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.secret {
            Secret::Password(_) => "password",
            Secret::IdentityToken(_) => "identity token",
        };
        write!(f, "Credentials {{ username: {:?}, {kind}: [redacted] }}", self.username)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A password from its file (one trailing newline dropped) or environment variable.
pub fn read_password(source: &PasswordSource) -> Result<String, ProbeError> {
    match source {
        PasswordSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ProbeError::new(Reason::AuthFailed, format!("auth password_file {}: {e}", path.display()))
            })?;
            let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
            Ok(text.to_string())
        }
        PasswordSource::Env(name) => std::env::var(name).map_err(|_| {
            ProbeError::new(Reason::AuthFailed, format!("auth password_env {name}: the variable is not set"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let creds = Credentials::new("alice", Secret::Password("hunter2".into()));
        assert!(!format!("{creds:?}").contains("hunter2"));
        let header = creds.basic_header().unwrap();
        assert!(header.is_sensitive());
        assert!(!format!("{header:?}").contains("aHVudGVyMg"), "{header:?}");
    }

    #[test]
    fn passwords_from_files_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p");
        std::fs::write(&file, "s3cret\r\n").unwrap();
        assert_eq!(read_password(&PasswordSource::File(file)).unwrap(), "s3cret");
        let err = read_password(&PasswordSource::Env("PULLPROBE_TEST_SURELY_UNSET_VAR".into())).unwrap_err();
        assert_eq!(err.reason, Reason::AuthFailed);
        let err = read_password(&PasswordSource::File(dir.path().join("absent"))).unwrap_err();
        assert!(err.message.contains("password_file"), "{}", err.message);
    }
}
