//! TLS to the backend servers (`[backend] tls`, in MySQL's `--ssl-mode` terms): the rustls
//! client configuration for data-path connections and the mysql_async options for control-path
//! ones, both built once from the mode and the CA file. Unix-socket connections stay plain,
//! as MySQL clients leave them: the socket never leaves the host.
//!
//! Owns: backend TLS settings and certificate checks. May import: rustls, tokio-rustls,
//! mysql_async (SslOpts), config.

use crate::config::BackendConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How much of the server's certificate is checked (MySQL's ssl-mode values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain connections.
    Off,
    /// Encrypted; the certificate is not checked (MySQL's REQUIRED).
    Required,
    /// Encrypted; the certificate must chain to `tls_ca` (any host name).
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the address the proxy connects to.
    VerifyIdentity,
}

impl TlsMode {
    pub const NAMES: [&'static str; 4] = ["off", "required", "verify_ca", "verify_identity"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn parse(s: &str) -> Option<TlsMode> {
        match s {
            "off" => Some(TlsMode::Off),
            "required" => Some(TlsMode::Required),
            "verify_ca" => Some(TlsMode::VerifyCa),
            "verify_identity" => Some(TlsMode::VerifyIdentity),
            _ => None,
        }
    }
}

/// The backend TLS settings in use (absent when `tls = "off"`).
pub struct BackendTls {
    pub mode: TlsMode,
    connector: TlsConnector,
    ca: Option<PathBuf>,
    /// The proxy's own certificate chain and key (`tls_cert`, `tls_key`), for accounts
    /// created `REQUIRE X509` or `REQUIRE SUBJECT/ISSUER`.
    identity: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("mode", &self.mode)
            .field("ca", &self.ca)
            .field("identity", &self.identity)
            .finish()
    }
}

impl BackendTls {
    /// Builds the settings `[backend]` asks for: `tls` (a `TlsMode::NAMES` value), `tls_ca`
    /// (PEM; needed by the verifying modes), `tls_cert` + `tls_key` (PEM; optional, both or
    /// neither). None for "off".
    pub fn new(cfg: &BackendConfig) -> Result<Option<Arc<BackendTls>>, String> {
        let ca = cfg.tls_ca.as_str();
        let mode = TlsMode::parse(&cfg.tls).ok_or_else(|| {
            format!(
                "backend.tls = {:?}: use one of {}",
                cfg.tls,
                TlsMode::NAMES.join(", ")
            )
        })?;
        let identity = match (cfg.tls_cert.as_str(), cfg.tls_key.as_str()) {
            ("", "") => None,
            ("", _) | (_, "") => {
                return Err(
                    "backend.tls_cert and backend.tls_key go together: the proxy's \
                     certificate (PEM chain) and its private key (PEM)"
                        .into(),
                )
            }
            (cert, key) => Some((cert, key)),
        };
        if mode == TlsMode::Off {
            if identity.is_some() {
                return Err(
                    "backend.tls_cert is set but backend.tls = \"off\": choose a TLS \
                     mode (\"required\" or stricter) to present it"
                        .into(),
                );
            }
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = match mode {
            TlsMode::Off | TlsMode::Required => None,
            TlsMode::VerifyCa | TlsMode::VerifyIdentity => {
                if ca.is_empty() {
                    return Err(format!(
                        "backend.tls = \"{}\" needs backend.tls_ca: the PEM file of the CA that \
                         signed the servers' certificates (or use tls = \"required\" to encrypt \
                         without checking them)",
                        mode.name()
                    ));
                }
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(ca)
                    .map_err(|e| format!("backend.tls_ca {ca}: {e}"))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("backend.tls_ca {ca}: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("backend.tls_ca {ca}: {e}"))?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "backend.tls_ca {ca} holds no certificate (expected PEM)"
                    ));
                }
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| format!("backend.tls_ca {ca}: {e}"))?;
                Some(webpki)
            }
        };
        let verifier = Arc::new(CertificateCheck {
            chain,
            check_name: mode == TlsMode::VerifyIdentity,
            algorithms: provider.signature_verification_algorithms,
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("backend TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match identity {
            None => config.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("backend.tls_cert {cert}: {e}"))?;
                if chain.is_empty() {
                    return Err(format!(
                        "backend.tls_cert {cert} holds no certificate (expected PEM)"
                    ));
                }
                let private = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("backend.tls_key {key}: {e}"))?;
                config
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| format!("backend.tls_cert/tls_key: {e}"))?
            }
        };
        Ok(Some(Arc::new(BackendTls {
            mode,
            connector: TlsConnector::from(Arc::new(config)),
            ca: (!ca.is_empty()).then(|| PathBuf::from(ca)),
            identity: identity.map(|(c, k)| (PathBuf::from(c), PathBuf::from(k))),
        })))
    }

    /// Runs the TLS handshake on `tcp` to the server at `addr` (host:port).
    pub async fn connect(&self, addr: &str, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("backend {addr}: `{host}` is not a host name for TLS: {e}"),
            )
        })?;
        self.connector.connect(name, tcp).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "TLS to backend {addr} failed: {e} (backend.tls = \"{}\"; check the server's \
                     certificate against backend.tls_ca and the address it names)",
                    self.mode.name()
                ),
            )
        })
    }

    /// The same settings for a mysql_async (control-path) connection.
    pub fn ssl_opts(&self) -> mysql_async::SslOpts {
        let opts = mysql_async::SslOpts::default();
        let opts = match &self.ca {
            Some(ca) => opts
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true),
            None => opts,
        };
        let opts = opts.with_client_identity(self.identity.as_ref().map(|(cert, key)| {
            mysql_async::ClientIdentity::new(cert.clone().into(), key.clone().into())
        }));
        match self.mode {
            TlsMode::Off | TlsMode::Required => opts
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
            TlsMode::VerifyCa => opts.with_danger_skip_domain_validation(true),
            TlsMode::VerifyIdentity => opts,
        }
    }
}

/// The server-certificate check for a mode. The handshake's signatures are always checked
/// against the certificate presented, so the peer holds its key whatever the mode.
#[derive(Debug)]
struct CertificateCheck {
    /// The chain check against `tls_ca` (None: `required`, any certificate).
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// `verify_identity`: the certificate must name the address. webpki checks the chain
    /// before the name, so for `verify_ca` only a name mismatch is forgiven.
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for CertificateCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: &str, ca: &str, cert: &str, key: &str) -> BackendConfig {
        BackendConfig {
            tls: mode.into(),
            tls_ca: ca.into(),
            tls_cert: cert.into(),
            tls_key: key.into(),
            ..BackendConfig::default()
        }
    }

    #[test]
    fn modes_parse_and_verifying_ones_need_a_ca() {
        assert_eq!(TlsMode::parse("verify_ca"), Some(TlsMode::VerifyCa));
        assert_eq!(TlsMode::parse("REQUIRED"), None);
        assert!(BackendTls::new(&cfg("off", "", "", "")).unwrap().is_none());
        assert_eq!(
            BackendTls::new(&cfg("required", "", "", ""))
                .unwrap()
                .unwrap()
                .mode,
            TlsMode::Required
        );
        let e = BackendTls::new(&cfg("verify_identity", "", "", "")).unwrap_err();
        assert!(e.contains("needs backend.tls_ca"), "{e}");
        let e = BackendTls::new(&cfg("preferred", "", "", "")).unwrap_err();
        assert!(e.contains("verify_identity"), "{e}");
        let e = BackendTls::new(&cfg("verify_ca", "/nonexistent/ca.pem", "", "")).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_a_tls_mode() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let ck = rcgen::generate_simple_self_signed(vec!["myquorum".to_string()]).unwrap();
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let e = BackendTls::new(&cfg("required", "", cert, "")).unwrap_err();
        assert!(e.contains("go together"), "{e}");
        let e = BackendTls::new(&cfg("off", "", cert, key)).unwrap_err();
        assert!(e.contains("choose a TLS mode"), "{e}");
        let tls = BackendTls::new(&cfg("required", "", cert, key))
            .unwrap()
            .unwrap();
        assert!(tls.identity.is_some());
        // The key file given as the certificate holds no certificate.
        let e = BackendTls::new(&cfg("required", "", key, key)).unwrap_err();
        assert!(e.contains("holds no certificate"), "{e}");
    }
}
