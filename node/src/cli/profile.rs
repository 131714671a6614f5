//! The client profile: how the command line finds a cluster without `--endpoints`.
//!
//! `cairn dev` writes `client-profile.toml` into its data directory; the client subcommands
//! read it when neither `--endpoints` nor `CAIRN_ENDPOINTS` is given: the file named by
//! `--profile` / `CAIRN_PROFILE`, else `./cairn-data/client-profile.toml` if it exists, else
//! the contract's default endpoint. The profile holds the whole cluster, so a command still
//! finds the new leader after the old one died.
//!
//! The format is TOML so that it can grow (the security issue adds a TLS CA and a token);
//! unknown keys are ignored, so an older `cairn` reads a newer profile.
//!
//! ```toml
//! endpoints = ["https://127.0.0.1:2113", "https://127.0.0.1:2114", "https://127.0.0.1:2115"]
//! tls_ca = "/home/me/cairn-data/ca.pem"
//! token = "cairn_..."
//! ```
//!
//! `tls_ca` is the CA that signed the nodes' certificates (`--tls-ca` overrides it); a
//! relative path is taken from the profile's directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The profile's file name inside a `cairn dev` data directory.
pub const PROFILE_FILE_NAME: &str = "client-profile.toml";
/// Where the command line looks for a profile when none is named: `cairn dev`'s default
/// data directory, relative to the working directory.
pub const DEFAULT_PROFILE_PATH: &str = "./cairn-data/client-profile.toml";
/// Largest profile read, in bytes: a profile is a few lines; anything bigger is not one.
pub const MAX_PROFILE_BYTES: u64 = 64 * 1024;

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

/// Where a command's endpoints came from, for the hint when none answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Profile(PathBuf),
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => write!(f, "from --endpoints / CAIRN_ENDPOINTS"),
            Source::Profile(path) => write!(f, "from the profile {}", path.display()),
            Source::Default => write!(f, "the default; no profile at {DEFAULT_PROFILE_PATH}"),
        }
    }
}

/// Where a client command goes and what it trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub urls: Vec<String>,
    pub source: Source,
    /// The CA file from the profile, when the endpoints came from one.
    pub tls_ca: Option<PathBuf>,
    /// The token from the profile, when the endpoints came from one.
    pub token: Option<String>,
}

/// The endpoints a client command uses: `--endpoints` / `CAIRN_ENDPOINTS`, else the profile
/// (`--profile` / `CAIRN_PROFILE`, else `./cairn-data/client-profile.toml` when it exists),
/// else `default`. An empty `--endpoints` is a usage error, not the default.
pub fn resolve(flag: &[String], profile: Option<&Path>, default: &str) -> Result<Resolved, String> {
    if !flag.is_empty() {
        let urls: Vec<String> = flag
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            return Err(
                "--endpoints is empty: give node URLs like http://127.0.0.1:2113, comma-separated"
                    .to_owned(),
            );
        }
        return Ok(Resolved {
            urls,
            source: Source::Flag,
            tls_ca: None,
            token: None,
        });
    }
    let (path, named) = match profile {
        Some(path) if !path.as_os_str().is_empty() => (path.to_path_buf(), true),
        _ => (PathBuf::from(DEFAULT_PROFILE_PATH), false),
    };
    if named || path.exists() {
        let profile = Profile::read(&path)?;
        let urls = profile
            .endpoints
            .into_iter()
            .filter(|e| !e.trim().is_empty())
            .collect();
        return Ok(Resolved {
            urls,
            source: Source::Profile(path),
            tls_ca: profile.tls_ca,
            token: profile.token,
        });
    }
    Ok(Resolved {
        urls: vec![default.to_owned()],
        source: Source::Default,
        tls_ca: None,
        token: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_profile_reads_back_and_unknown_keys_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(PROFILE_FILE_NAME);
        let profile = Profile {
            endpoints: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            tls_ca: Some(dir.path().join("ca.pem")),
            token: Some("cairn_secret".into()),
        };
        profile.write(&path).expect("write");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "a profile with a token is private");
        assert_eq!(Profile::read(&path), Ok(profile));
        std::fs::write(
            &path,
            "endpoints = [\"h:1\"]\ntls_ca = \"ca.pem\"\ntoken = \"later\"\n",
        )
        .expect("write");
        let resolved = resolve(&[], Some(&path), "d").expect("resolved");
        assert_eq!(resolved.urls, vec!["h:1".to_owned()]);
        // A relative CA path is the profile's neighbour, wherever the command runs.
        assert_eq!(resolved.tls_ca, Some(dir.path().join("ca.pem")));
    }

    #[test]
    fn endpoints_win_over_a_profile_and_empty_endpoints_are_refused() {
        let named = Path::new("/nonexistent/profile.toml");
        assert_eq!(
            resolve(&["a:1".into()], Some(named), "d").map(|r| r.urls),
            Ok(vec!["a:1".to_owned()])
        );
        assert!(resolve(&[String::new()], None, "d").is_err());
        // A named profile that is missing is an error, not a silent fall back.
        let missing = resolve(&[], Some(named), "d").expect_err("missing profile");
        assert!(missing.contains("/nonexistent/profile.toml"), "{missing}");
    }
}
