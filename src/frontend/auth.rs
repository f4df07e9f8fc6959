//! Client authentication: the configured users, mysql_native_password, and
//! caching_sha2_password with MySQL's cache semantics — the first login of a user since start
//! takes the full path (cleartext password over TLS, or RSA-encrypted with the proxy's key over
//! plain TCP), later ones the fast scramble path.
//!
//! Owns: who may log in. May import: protocol, rsa, sha1.

use crate::protocol::handshake::{
    decode_client_hello, encode_auth_more_data, encode_auth_switch, verify_scramble, ClientHello,
    CACHING_SHA2, NATIVE_PASSWORD, SHA2_FAST_AUTH_SUCCESS, SHA2_PERFORM_FULL_AUTH,
    SHA2_REQUEST_PUBLIC_KEY,
};
use crate::protocol::{MysqlError, PacketStream};
use parking_lot::{Mutex, RwLock};
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::{Oaep, RsaPrivateKey};
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::OnceLock;
use tokio::io::{AsyncRead, AsyncWrite};

/// Configured users and what authentication remembers about them.
pub struct Authenticator {
    /// name → password; replaced whole by a config reload.
    users: RwLock<HashMap<String, String>>,
    /// Users that completed a full caching_sha2_password authentication with their current
    /// password (MySQL's in-memory cache).
    sha2_cache: Mutex<HashSet<(String, String)>>,
    rsa: OnceLock<Option<(RsaPrivateKey, String)>>,
}

pub fn access_denied(user: &str, password_given: bool) -> MysqlError {
    MysqlError::new(
        1045,
        "28000",
        format!(
            "Access denied for user '{user}'@'myquorum' (using password: {})",
            if password_given { "YES" } else { "NO" }
        ),
    )
}

impl Authenticator {
    pub fn new(users: HashMap<String, String>) -> Self {
        Authenticator {
            users: RwLock::new(users),
            sha2_cache: Mutex::new(HashSet::new()),
            rsa: OnceLock::new(),
        }
    }

    /// Takes the users of a reloaded config. Sessions already logged in stay (as MySQL keeps
    /// the sessions of a dropped user); a changed password is checked from the next login on:
    /// the caching_sha2_password cache is keyed by the password too.
    pub fn replace_users(&self, users: HashMap<String, String>) {
        *self.users.write() = users;
    }

    /// The proxy's RSA key pair for caching_sha2_password over plain TCP, made on first use.
    fn rsa_key(&self) -> Option<&(RsaPrivateKey, String)> {
        self.rsa
            .get_or_init(|| {
                tracing::info!("generating the RSA key pair for caching_sha2_password");
                let key = RsaPrivateKey::new(&mut rand_core::OsRng, 2048).ok()?;
                let pem = key.to_public_key().to_public_key_pem(LineEnding::LF).ok()?;
                Some((key, pem))
            })
            .as_ref()
    }

    /// Authenticates `user`, whose first answer `response` was computed for `plugin` over
    /// `nonce`. `secure` is true on TLS. Returns the sequence id for the next packet (the
    /// caller's OK or error) and whether the user is in.
    #[allow(clippy::too_many_arguments)]
    pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut PacketStream<S>,
        user: &str,
        plugin: Option<&str>,
        response: &[u8],
        nonce: &[u8; 20],
        mut seq: u8,
        secure: bool,
    ) -> io::Result<(u8, Result<(), MysqlError>)> {
        let Some(password) = self.users.read().get(user).cloned() else {
            return Ok((seq, Err(access_denied(user, !response.is_empty()))));
        };
        let mut plugin = plugin.unwrap_or(NATIVE_PASSWORD).to_string();
        let mut response = response.to_vec();
        if plugin != NATIVE_PASSWORD && plugin != CACHING_SHA2 {
            // Ask the client to answer with a plugin the proxy checks.
            stream
                .write_packet(seq, &encode_auth_switch(NATIVE_PASSWORD, nonce))
                .await?;
            let pkt = stream.read_packet().await?;
            seq = pkt.seq.wrapping_add(1);
            plugin = NATIVE_PASSWORD.to_string();
            response = pkt.payload;
        }
        if plugin == NATIVE_PASSWORD || password.is_empty() {
            return Ok(if verify_scramble(&plugin, nonce, &response, &password) {
                (seq, Ok(()))
            } else {
                (seq, Err(access_denied(user, !response.is_empty())))
            });
        }
        let key = (user.to_string(), password.clone());
        if self.sha2_cache.lock().contains(&key) {
            if !verify_scramble(CACHING_SHA2, nonce, &response, &password) {
                return Ok((seq, Err(access_denied(user, !response.is_empty()))));
            }
            let next = stream
                .write_packet(seq, &encode_auth_more_data(&[SHA2_FAST_AUTH_SUCCESS]))
                .await?;
            return Ok((next, Ok(())));
        }
        // Full authentication.
        stream
            .write_packet(seq, &encode_auth_more_data(&[SHA2_PERFORM_FULL_AUTH]))
            .await?;
        let mut pkt = stream.read_packet().await?;
        let given: Vec<u8> = if secure {
            pkt.payload.clone()
        } else {
            let Some((rsa_key, pem)) = self.rsa_key() else {
                return Ok((
                    pkt.seq.wrapping_add(1),
                    Err(MysqlError::new(
                        1045,
                        "28000",
                        "the proxy has no RSA key for caching_sha2_password; connect with TLS",
                    )),
                ));
            };
            if pkt.payload == [SHA2_REQUEST_PUBLIC_KEY] {
                stream
                    .write_packet(
                        pkt.seq.wrapping_add(1),
                        &encode_auth_more_data(pem.as_bytes()),
                    )
                    .await?;
                pkt = stream.read_packet().await?;
            }
            match rsa_key.decrypt(Oaep::new::<sha1::Sha1>(), &pkt.payload) {
                Ok(mut plain) => {
                    for (i, b) in plain.iter_mut().enumerate() {
                        *b ^= nonce[i % nonce.len()];
                    }
                    plain
                }
                Err(_) => return Ok((pkt.seq.wrapping_add(1), Err(access_denied(user, true)))),
            }
        };
        let given = given.strip_suffix(&[0]).unwrap_or(&given);
        let next = pkt.seq.wrapping_add(1);
        if given != password.as_bytes() {
            return Ok((next, Err(access_denied(user, true))));
        }
        self.sha2_cache.lock().insert(key);
        Ok((next, Ok(())))
    }
}

/// Reads and checks the client's handshake response.
pub fn parse_hello(payload: &[u8]) -> Result<ClientHello, MysqlError> {
    decode_client_hello(payload)
}
