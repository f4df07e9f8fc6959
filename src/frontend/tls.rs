//! Client-side TLS: the rustls acceptor built from the configured PEM certificate and key,
//! and the stream that hands the handshake bytes read along with the SSL request to it.
//!
//! Owns: TLS server configuration. May import: rustls, tokio-rustls, tokio io traits.

use bytes::{Buf, BytesMut};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;

/// A stream that first yields bytes already read from it. Clients such as PyMySQL send the
/// TLS ClientHello right behind the SSL request, so one socket read can hold both; those bytes
/// belong to the TLS handshake (which authenticates them), not to the plain-text protocol.
pub struct Rewind<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: BytesMut, inner: S) -> Self {
        Rewind { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub fn acceptor(cert_path: &str, key_path: &str) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| format!("reading TLS certificate {cert_path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("parsing TLS certificate {cert_path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{cert_path} holds no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("reading TLS key {key_path}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate/key in {cert_path} / {key_path}: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Writes a self-signed certificate for localhost (playground and tests).
pub fn write_self_signed(
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
) -> Result<(), String> {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|e| format!("generating a self-signed certificate: {e}"))?;
    std::fs::write(cert_path, ck.cert.pem())
        .map_err(|e| format!("writing {}: {e}", cert_path.display()))?;
    std::fs::write(key_path, ck.key_pair.serialize_pem())
        .map_err(|e| format!("writing {}: {e}", key_path.display()))?;
    Ok(())
}

/// The client connection's TLS session as the server's `Ssl_version` and `Ssl_cipher` status
/// variables name it (OpenSSL's names, which MySQL clients and tools compare against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    pub version: String,
    pub cipher: String,
}

impl ClientTls {
    pub fn of(conn: &rustls::ServerConnection) -> ClientTls {
        use rustls::{CipherSuite as C, ProtocolVersion as V};
        let version = match conn.protocol_version() {
            Some(V::TLSv1_3) => "TLSv1.3".to_string(),
            Some(V::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        let cipher = match conn.negotiated_cipher_suite().map(|s| s.suite()) {
            Some(C::TLS13_AES_128_GCM_SHA256) => "TLS_AES_128_GCM_SHA256".to_string(),
            Some(C::TLS13_AES_256_GCM_SHA384) => "TLS_AES_256_GCM_SHA384".to_string(),
            Some(C::TLS13_CHACHA20_POLY1305_SHA256) => "TLS_CHACHA20_POLY1305_SHA256".to_string(),
            Some(C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256) => {
                "ECDHE-ECDSA-AES128-GCM-SHA256".to_string()
            }
            Some(C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384) => {
                "ECDHE-ECDSA-AES256-GCM-SHA384".to_string()
            }
            Some(C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256) => {
                "ECDHE-ECDSA-CHACHA20-POLY1305".to_string()
            }
            Some(C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) => {
                "ECDHE-RSA-AES128-GCM-SHA256".to_string()
            }
            Some(C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) => {
                "ECDHE-RSA-AES256-GCM-SHA384".to_string()
            }
            Some(C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256) => {
                "ECDHE-RSA-CHACHA20-POLY1305".to_string()
            }
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        ClientTls { version, cipher }
    }
}
