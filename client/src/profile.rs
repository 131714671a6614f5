//! The client profile: where a cluster is and how to talk to it, in one small TOML file
//! (`cairn dev` writes one into its data directory, the way kubectl uses a kubeconfig). The
//! command line, this library ([`ClientConfig::from_profile`]) and the Python client read the
//! same file; unknown keys are ignored, so an older reader reads a newer profile.
//!
//! ```toml
//! endpoints = ["https://127.0.0.1:2113", "https://127.0.0.1:2114", "https://127.0.0.1:2115"]
//! tls_ca = "/home/me/cairn-data/ca.pem"
//! token = "cairn_..."
//! ```
//!
//! `tls_ca` is the CA that signed the nodes' certificates (a relative path is taken from the
//! profile's directory); `token` the API token every call carries.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The profile's file name inside a `cairn dev` data directory.
pub const PROFILE_FILE_NAME: &str = "client-profile.toml";
/// Where the command line looks for a profile when none is named: `cairn dev`'s default
/// data directory, relative to the working directory.
pub const DEFAULT_PROFILE_PATH: &str = "./cairn-data/client-profile.toml";
/// Largest profile read, in bytes: a profile is a few lines; anything bigger is not one.
pub const MAX_PROFILE_BYTES: u64 = 64 * 1024;

/// A client profile as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Node URLs, `http://HOST:PORT` or `https://HOST:PORT`.
    pub endpoints: Vec<String>,
    /// The CA certificate (PEM file) to check the nodes' certificates against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// The API token every command sends (`cairn dev` writes its admin token here; keep the
    /// file private: `cairn dev` makes it readable by its owner only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Profile {
    pub fn read(path: &Path) -> Result<Profile, String> {
        let meta =
            std::fs::metadata(path).map_err(|e| format!("profile {}: {e}", path.display()))?;
        if meta.len() > MAX_PROFILE_BYTES {
            return Err(format!(
                "profile {}: {} bytes, at most {MAX_PROFILE_BYTES}: not a client profile",
                path.display(),
                meta.len()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("profile {}: {e}", path.display()))?;
        let profile: Profile = toml::from_str(&text).map_err(|e| {
            let message = e.message().to_owned();
            format!(
                "profile {}: not a client profile: {message}",
                path.display()
            )
        })?;
        if profile.endpoints.iter().all(|e| e.trim().is_empty()) {
            return Err(format!("profile {}: `endpoints` is empty", path.display()));
        }
        let mut profile = profile;
        if let (Some(ca), Some(dir)) = (&profile.tls_ca, path.parent()) {
            if ca.is_relative() {
                profile.tls_ca = Some(dir.join(ca));
            }
        }
        Ok(profile)
    }

    /// Writes the profile (to a temporary file renamed over `path`, so a reader never sees
    /// half of it).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let body = toml::to_string(self).map_err(std::io::Error::other)?;
        let text = format!(
            "# Written by `cairn dev`: where the cairn command line finds this cluster.\n\
             # Used when neither --endpoints nor CAIRN_ENDPOINTS is given (see --profile).\n{body}"
        );
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text)?;
        if self.token.is_some() {
            // It holds a secret: its owner's alone (before it gets its name).
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::rename(&tmp, path)
    }
}

/// The environment variable naming a profile.
pub const PROFILE_ENV: &str = "CAIRN_PROFILE";
/// The environment variable holding a token, which wins over the profile's.
pub const TOKEN_ENV: &str = "CAIRN_TOKEN";
/// Largest CA file read, in bytes: a PEM bundle of a few certificates.
pub const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

impl crate::ClientConfig {
    /// A configuration from a client profile: its endpoints, its CA (read now) and its token
    /// (`CAIRN_TOKEN` wins when set). `None`: the file named by `CAIRN_PROFILE`, else
    /// `./cairn-data/client-profile.toml` (what `cairn dev` writes). Bad input is
    /// `Error::InvalidArgument` naming the file.
    pub fn from_profile(path: Option<&Path>) -> Result<crate::ClientConfig, crate::Error> {
        let invalid = crate::Error::InvalidArgument;
        let path = match path {
            Some(path) => path.to_path_buf(),
            None => std::env::var_os(PROFILE_ENV)
                .filter(|p| !p.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_PROFILE_PATH), PathBuf::from),
        };
        let profile = Profile::read(&path).map_err(invalid)?;
        let tls_ca = match &profile.tls_ca {
            Some(ca) => Some(read_ca(ca).map_err(invalid)?),
            None => None,
        };
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .or(profile.token);
        Ok(crate::ClientConfig {
            endpoints: profile.endpoints,
            tls_ca,
            credentials: token.map(crate::Credentials::Token),
            ..crate::ClientConfig::default()
        })
    }
}

/// The PEM of a CA file, refused when it is too big to be one.
pub fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("CA {}: {e}", path.display()))?;
    if meta.len() > MAX_CA_FILE_BYTES {
        return Err(format!(
            "CA {}: {} bytes, at most {MAX_CA_FILE_BYTES}: not a CA certificate",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| format!("CA {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_gives_endpoints_the_ca_relative_to_it_and_the_token() {
        let dir = std::env::temp_dir().join(format!("cairn-profile-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").expect("ca");
        let path = dir.join(PROFILE_FILE_NAME);
        std::fs::write(
            &path,
            "endpoints = [\"https://a:1\", \"https://b:2\"]\ntls_ca = \"ca.pem\"\ntoken = \"cairn_t\"\nlater = 1\n",
        )
        .expect("profile");
        let config = crate::ClientConfig::from_profile(Some(&path)).expect("config");
        assert_eq!(config.endpoints, vec!["https://a:1", "https://b:2"]);
        assert_eq!(
            config.tls_ca.as_deref(),
            Some(&b"-----BEGIN CERTIFICATE-----\n"[..])
        );
        if std::env::var_os(TOKEN_ENV).is_none() {
            assert_eq!(
                config.credentials,
                Some(crate::Credentials::Token("cairn_t".into()))
            );
        }
        let missing = crate::ClientConfig::from_profile(Some(&dir.join("nope.toml")));
        assert!(
            matches!(missing, Err(crate::Error::InvalidArgument(m)) if m.contains("nope.toml"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
