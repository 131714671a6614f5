//! How the command line finds a cluster without `--endpoints`: the client profile (its format
//! and reading are the client library's, `cairn_client::profile`).
//!
//! `cairn dev` writes `client-profile.toml` into its data directory; the client subcommands
//! read it when neither `--endpoints` nor `CAIRN_ENDPOINTS` is given: the file named by
//! `--profile` / `CAIRN_PROFILE`, else `./cairn-data/client-profile.toml` if it exists, else
//! the contract's default endpoint. The profile holds the whole cluster, so a command still
//! finds the new leader after the old one died. `--tls-ca` overrides its `tls_ca`, `--token`
//! (and `--username`/`--password`) its `token`.

use std::path::{Path, PathBuf};

pub use cairn_client::profile::{Profile, DEFAULT_PROFILE_PATH, PROFILE_FILE_NAME};

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
