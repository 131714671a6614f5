//! Secrets: making tokens, hashing them (SHA-256) and passwords (argon2), reading the
//! `Authorization` header. Crypto from well-kept crates: *ring* (already the TLS provider) for
//! randomness and SHA-256, RustCrypto's `argon2` for passwords.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

/// Longest `authorization` header read, in bytes; a longer one is refused (UNAUTHENTICATED)
/// before any decoding. A token is 49 bytes, a Basic header of the longest name and password
/// about 1.5 KiB.
pub const MAX_AUTH_HEADER_BYTES: usize = 4 * 1024;
/// Longest password, in bytes (argon2 takes any length; this bounds the work a request asks).
pub const MAX_PASSWORD_BYTES: usize = 1_024;
/// Shortest password accepted when one is set.
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Shortest and longest admin secret read from `--admin-token-file`, in bytes (trimmed).
pub const MIN_ADMIN_SECRET_BYTES: usize = 16;
pub const MAX_ADMIN_SECRET_BYTES: usize = 512;
/// Random bytes in a new token (256 bits: guessing is hopeless, so a fast hash stores it).
const TOKEN_RANDOM_BYTES: usize = 32;
/// What every token `cairn token create` makes starts with (secret scanners look for it).
pub const TOKEN_PREFIX: &str = "cairn_";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the system's random generator failed")]
    Random,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecretError::Random)?;
    Ok(bytes)
}

/// A new token and its id: `cairn_` + 43 characters of base64url, and 12 hex characters.
pub fn new_token() -> Result<(String, String), SecretError> {
    let secret = random_bytes::<TOKEN_RANDOM_BYTES>()?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let id = hex(&random_bytes::<6>()?);
    Ok((token, id))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stored form of a token: lower-case hex SHA-256 of its text.
pub fn token_hash(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// An argon2id PHC string of `password` (argon2's default cost: 19 MiB, 2 passes), with a
/// fresh random salt. Slow on purpose; call it off the async threads.
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| SecretError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string (false for a string that does not parse).
/// Slow on purpose; call it off the async threads.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// What an `authorization` header presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    Token(String),
    Password { user: String, password: String },
}

/// Reads an `authorization` header: `Bearer TOKEN` or `Basic base64(user:password)`. The
/// error says what is wrong, never echoing the secret.
pub fn parse_header(value: &[u8]) -> Result<Presented, String> {
    if value.len() > MAX_AUTH_HEADER_BYTES {
        return Err(format!(
            "the authorization header is {} bytes, at most {MAX_AUTH_HEADER_BYTES}",
            value.len()
        ));
    }
    let text = std::str::from_utf8(value)
        .map_err(|_| "the authorization header is not text".to_owned())?;
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("malformed token: expected 'Bearer TOKEN', one word".to_owned());
        }
        return Ok(Presented::Token(rest.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| "malformed Basic credentials: not base64".to_owned())?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| "malformed Basic credentials: not UTF-8".to_owned())?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| "malformed Basic credentials: expected user:password".to_owned())?;
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(format!(
                "the password is longer than {MAX_PASSWORD_BYTES} bytes"
            ));
        }
        return Ok(Presented::Password {
            user: user.to_owned(),
            password: password.to_owned(),
        });
    }
    Err("malformed authorization header: expected 'Bearer TOKEN' or 'Basic …'".to_owned())
}

/// Reads the admin secret from `--admin-token-file`: the file's text, trimmed, of
/// `MIN_ADMIN_SECRET_BYTES..=MAX_ADMIN_SECRET_BYTES` printable ASCII bytes.
pub fn read_admin_secret(path: &std::path::Path) -> Result<String, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("admin token file {shown}: {e}"))?;
    if meta.len() > MAX_ADMIN_SECRET_BYTES as u64 + 64 {
        return Err(format!(
            "admin token file {shown}: {} bytes; a secret is at most {MAX_ADMIN_SECRET_BYTES}",
            meta.len()
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("admin token file {shown}: {e}"))?;
    let secret = text.trim();
    if secret.len() < MIN_ADMIN_SECRET_BYTES || secret.len() > MAX_ADMIN_SECRET_BYTES {
        return Err(format!(
            "admin token file {shown}: the secret is {} bytes; it must be {MIN_ADMIN_SECRET_BYTES} to {MAX_ADMIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)",
            secret.len()
        ));
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "admin token file {shown}: the secret must be printable ASCII without spaces"
        ));
    }
    Ok(secret.to_owned())
}

/// A new admin secret for `cairn dev`: a token like `cairn token create` makes.
pub fn new_admin_secret() -> Result<String, SecretError> {
    new_token().map(|(token, _)| token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_header(b"Bearer abc"),
            Ok(Presented::Token("abc".into()))
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        assert_eq!(
            parse_header(format!("Basic {basic}").as_bytes()),
            Ok(Presented::Password {
                user: "alice".into(),
                password: "pa:ss".into()
            })
        );
        for bad in [
            &b"Bearer "[..],
            b"Bearer a b",
            b"Token abc",
            b"Basic !!!",
            b"\xff\xfe",
        ] {
            assert!(parse_header(bad).is_err(), "{bad:?}");
        }
        let long = vec![b'a'; MAX_AUTH_HEADER_BYTES + 1];
        assert!(parse_header(&long).unwrap_err().contains("at most"));
    }

    #[test]
    fn a_password_verifies_against_its_hash_only() {
        let phc = hash_password("correct horse").expect("hash");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(!verify_password("correct horse", "not a phc string"));
    }

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let (a, id_a) = new_token().expect("token");
        let (b, id_b) = new_token().expect("token");
        assert_ne!(a, b);
        assert_ne!(id_a, id_b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_eq!(token_hash(&a).len(), 64);
    }
}
