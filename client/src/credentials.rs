//! Who the client says it is: a token or a user and password, sent on every call as the
//! `authorization` metadata (`Bearer TOKEN`, `Basic base64(user:password)`), added to every
//! channel by one interceptor so no call can leave it out.

use std::fmt;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::error::Error;

/// Credentials for a cluster that checks users (one started without `--insecure`).
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// An API token (`cairn token create`), or the admin secret.
    Token(String),
    UserPassword {
        user: String,
        password: String,
    },
}

impl fmt::Debug for Credentials {
    /// Never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(***)"),
            Credentials::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
        }
    }
}

impl Credentials {
    /// The `authorization` value; a token or password that cannot be one is refused here.
    pub(crate) fn header(&self) -> Result<MetadataValue<Ascii>, Error> {
        let text = match self {
            Credentials::Token(token) => {
                let token = token.trim();
                if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(Error::InvalidArgument(
                        "token: empty, or not one word of visible ASCII characters".to_owned(),
                    ));
                }
                format!("Bearer {token}")
            }
            Credentials::UserPassword { user, password } => {
                if user.contains(':') {
                    return Err(Error::InvalidArgument("user: contains ':'".to_owned()));
                }
                format!(
                    "Basic {}",
                    base64_encode(format!("{user}:{password}").as_bytes())
                )
            }
        };
        MetadataValue::try_from(text).map_err(|_| {
            Error::InvalidArgument("token: only visible ASCII characters are allowed".to_owned())
        })
    }
}

/// Standard base64 with padding (RFC 4648), for Basic credentials.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Adds the credentials (if any) to every request.
#[derive(Clone, Default)]
pub struct AddCredentials {
    header: Option<MetadataValue<Ascii>>,
}

impl AddCredentials {
    pub(crate) fn new(header: Option<MetadataValue<Ascii>>) -> Self {
        AddCredentials { header }
    }
}

impl Interceptor for AddCredentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// A channel that carries the client's credentials.
pub type AuthChannel = InterceptedService<Channel, AddCredentials>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_standard_base64() {
        assert_eq!(base64_encode(b"alice:secret"), "YWxpY2U6c2VjcmV0");
        assert_eq!(base64_encode(b"a:b"), "YTpi");
        assert_eq!(base64_encode(b"ab:cd"), "YWI6Y2Q=");
        assert_eq!(base64_encode(b"a:"), "YTo=");
    }

    #[test]
    fn a_token_with_spaces_or_control_characters_is_refused_before_sending() {
        assert!(Credentials::Token("two words".into()).header().is_err());
        assert!(Credentials::Token("".into()).header().is_err());
        assert!(Credentials::Token("caf\u{e9}".into()).header().is_err());
        assert_eq!(
            Credentials::Token("abc".into()).header().expect("ok"),
            "Bearer abc"
        );
        assert_eq!(
            format!("{:?}", Credentials::Token("abc".into())),
            "Token(***)"
        );
    }
}
