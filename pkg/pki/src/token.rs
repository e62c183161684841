//! Join tokens in the k3s format `K10<sha256 of CA PEM>::<user>:<password>`.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Prefix of a full-form token.
const TOKEN_PREFIX: &str = "K10";
/// Username used in server tokens.
pub(crate) const SERVER_USER: &str = "server";

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex SHA-256 of the server CA PEM bytes, present in the full form only.
    pub ca_hash: Option<String>,
    /// The username (`server` for bare tokens).
    pub username: String,
    /// The secret.
    pub password: String,
}

impl JoinToken {
    /// Renders the full form `K10<hash>::<user>:<password>` (or `<user>:<password>`
    /// prefixed with `K10::` when there is no hash).
    pub fn to_full_string(&self) -> String {
        format!(
            "{TOKEN_PREFIX}{}::{}:{}",
            self.ca_hash.as_deref().unwrap_or(""),
            self.username,
            self.password
        )
    }
}

/// Hex SHA-256 of the CA bundle's PEM bytes, as embedded in join tokens.
pub fn ca_hash(pem: &str) -> String {
    hex::encode(Sha256::digest(pem.as_bytes()))
}

/// Parses a join token: either the full form `K10<hash>::<user>:<password>`
/// or a bare secret (username `server`, no CA hash).
pub fn parse_token(s: &str) -> Result<JoinToken> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Error::InvalidToken("empty token".into()));
    }
    if let Some(rest) = s.strip_prefix(TOKEN_PREFIX)
        && let Some((hash, creds)) = rest.split_once("::")
    {
        let (user, pass) = creds.split_once(':').ok_or_else(|| {
            Error::InvalidToken("full-form token lacks '<user>:<password>' after '::'".into())
        })?;
        if user.is_empty() || pass.is_empty() {
            return Err(Error::InvalidToken(
                "full-form token has an empty user or password".into(),
            ));
        }
        let ca_hash = if hash.is_empty() {
            None
        } else {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::InvalidToken(
                    "CA hash is not 64 hex characters".into(),
                ));
            }
            Some(hash.to_ascii_lowercase())
        };
        return Ok(JoinToken {
            ca_hash,
            username: user.to_string(),
            password: pass.to_string(),
        });
    }
    Ok(JoinToken {
        ca_hash: None,
        username: SERVER_USER.to_string(),
        password: s.to_string(),
    })
}

/// The server secret taken from a user-supplied `--token`: the part after
/// `::server:` if present, else the whole string.
pub(crate) fn server_secret_from(token: &str) -> Result<String> {
    let token = token.trim();
    let secret = match token.split_once("::server:") {
        Some((_, secret)) => secret,
        None => token,
    };
    if secret.is_empty() {
        return Err(Error::InvalidToken("empty server secret".into()));
    }
    if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::InvalidToken(
            "secret must not contain whitespace".into(),
        ));
    }
    Ok(secret.to_string())
}

/// A fresh random secret: 32 hex characters.
pub(crate) fn random_secret() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Builds the server join token for a CA PEM and secret.
pub(crate) fn server_token(ca_pem: &str, secret: &str) -> String {
    format!("{TOKEN_PREFIX}{}::{SERVER_USER}:{secret}", ca_hash(ca_pem))
}
