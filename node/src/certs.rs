//! Throwaway certificates: the CA and node certificates `cairn dev` makes in its data
//! directory, and what the tests use (rcgen; no hand-written crypto).
//!
//! Node certificates carry both extended key usages, server and client: a node is the server
//! of its clients and peers and the client of its peers (mutual TLS).

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// How long a `cairn dev` certificate is valid: long enough never to expire under a developer.
pub const DEV_CERTIFICATE_DAYS: i64 = 10 * 365;
/// Names every local node certificate carries: nodes of `cairn dev` and of the tests listen on
/// 127.0.0.1 and are reached as that or as localhost.
pub const LOCAL_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// A certificate authority with its key in memory.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Validity from a day ago (clocks differ a little) for `days` days from now.
fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

impl Ca {
    /// A new CA named `name`, valid for `days` days.
    pub fn new(name: &str, days: i64) -> Result<Ca, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, days);
        let key = KeyPair::generate()?;
        let pem = params.self_signed(&key)?.pem();
        Ok(Ca {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// The CA certificate, PEM: what `--tls-ca` and clients are given.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A node certificate for `names` (DNS names or IP addresses), valid from `days` days ago
    /// up to `days` days from now; negative `days` make one that has expired (for tests).
    pub fn issue_node(&self, names: &[&str], days: i64) -> Result<Issued, rcgen::Error> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "cairn node");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if days < 0 {
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now + time::Duration::days(days * 2);
            params.not_after = now + time::Duration::days(days);
        } else {
            validity(&mut params, days);
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Issued {
    /// Writes the key, then the certificate, each by rename so that a node reloading them never
    /// reads half a file; the key readable by its owner only.
    pub fn write(&self, cert: &Path, key: &Path) -> std::io::Result<()> {
        write_replacing(key, self.key_pem.as_bytes())?;
        write_replacing(cert, self.cert_pem.as_bytes())
    }
}

/// Writes `bytes` to a temporary file beside `path` (mode 0600) and renames it over `path`.
pub fn write_replacing(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp_name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
