//! Mutual TLS for the opt-in TCP listener ([`ServerTls`]) and for remote clients
//! ([`ClientTls`], [`connect_tls`]): rustls (ring) through tonic. PEM files are read
//! and checked when loaded, so a daemon with a bad file fails at start with the file
//! named, not at the first connection.

use std::path::Path;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::ControlError;

/// How long a TCP client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's side of mutual TLS: its certificate chain and key, and the CA that
/// must have signed every client's certificate (a client without one, or with one
/// from another CA, fails the handshake).
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) config: ServerTlsConfig,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// Reads and checks `cert` (PEM chain, leaf first), `key` (PEM PKCS#8, PKCS#1
    /// or SEC1) and `client_ca` (PEM, one or more CA certificates).
    pub fn load(cert: &Path, key: &Path, client_ca: &Path) -> Result<Self, ControlError> {
        let cert_pem = read(cert, "--tls-cert")?;
        certs(&cert_pem, cert, "--tls-cert")?;
        let key_pem = read(key, "--tls-key")?;
        private_key(&key_pem, key, "--tls-key")?;
        let ca_pem = read(client_ca, "--tls-client-ca")?;
        certs(&ca_pem, client_ca, "--tls-client-ca")?;
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert_pem, key_pem))
            .client_ca_root(Certificate::from_pem(ca_pem))
            .timeout(HANDSHAKE_TIMEOUT);
        // Build the rustls configuration once now: a key that does not match the
        // certificate, or a CA rustls cannot use, fails here.
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|e| ControlError::InvalidArgument {
                field: "--tls-cert/--tls-key/--tls-client-ca",
                why: crate::error_chain(&e),
            })?;
        Ok(Self { config })
    }
}

/// A client's side of mutual TLS: the CA that signed the server's certificate, and
/// the client's own certificate and key.
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) config: ClientTlsConfig,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Reads and checks `ca` (PEM), `cert` (PEM chain) and `key` (PEM).
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, String> {
        let ca_pem = read(ca, "--tls-ca").map_err(|e| e.to_string())?;
        certs(&ca_pem, ca, "--tls-ca").map_err(|e| e.to_string())?;
        let cert_pem = read(cert, "--tls-cert").map_err(|e| e.to_string())?;
        certs(&cert_pem, cert, "--tls-cert").map_err(|e| e.to_string())?;
        let key_pem = read(key, "--tls-key").map_err(|e| e.to_string())?;
        private_key(&key_pem, key, "--tls-key").map_err(|e| e.to_string())?;
        Ok(Self {
            config: ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .identity(Identity::from_pem(cert_pem, key_pem)),
        })
    }
}

/// Connects a client channel to the TCP listener at `addr` (`https://HOST:PORT`);
/// the server's certificate must name HOST (DNS name or IP address).
pub async fn connect_tls(addr: &str, tls: &ClientTls) -> Result<tonic::transport::Channel, String> {
    if !addr.starts_with("https://") {
        return Err(format!(
            "{addr:?}: expected https://HOST:PORT (the TCP listener requires TLS)"
        ));
    }
    tonic::transport::Endpoint::from_shared(addr.to_string())
        .map_err(|e| format!("{addr}: {e}"))?
        .tls_config(tls.config.clone())
        .map_err(|e| format!("{addr}: {}", crate::error_chain(&e)))?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {}", crate::error_chain(&e)))
}

fn read(path: &Path, flag: &'static str) -> Result<Vec<u8>, ControlError> {
    std::fs::read(path).map_err(|source| ControlError::Io {
        during: format!("reading {flag} {}", path.display()),
        source,
    })
}

fn certs(pem: &[u8], path: &Path, flag: &'static str) -> Result<(), ControlError> {
    let bad = |why: String| ControlError::InvalidArgument {
        field: flag,
        why: format!("{}: {why}", path.display()),
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no PEM CERTIFICATE block found".into()));
    }
    Ok(())
}

fn private_key(pem: &[u8], path: &Path, flag: &'static str) -> Result<(), ControlError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map(drop)
        .map_err(|e| ControlError::InvalidArgument {
            field: flag,
            why: format!(
                "{}: no PEM private key (PKCS#8, PKCS#1 or SEC1) found: {e}",
                path.display()
            ),
        })
}
