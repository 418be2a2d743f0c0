//! SIP over TLS (RFC 3261 §26.2, RFC 5630): the rustls server and client
//! configurations read from the files the configuration names. The server
//! presents `sip.tls_cert_file`/`sip.tls_key_file` and, with
//! `sip.tls_client_ca_file`, accepts only clients whose certificate that CA
//! signed (mutual TLS, as carriers such as Twilio offer). Outbound calls
//! verify the trunk's certificate against the public web roots plus
//! `sip.tls_trust_file`, and present the node's certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Where the TLS material comes from (`[sip]` in the configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate this CA signed (empty: none asked).
    pub client_ca: Option<PathBuf>,
    /// Extra roots trusted for outbound TLS (a private CA's trunks).
    pub trust: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store.add(cert).map_err(|e| file_err(path, e))?;
    }
    Ok(store)
}

/// The node's TLS server and client, built once at start.
#[derive(Clone)]
pub struct TlsContext {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsContext")
    }
}

impl TlsContext {
    /// Reads the files and builds both configurations; a missing or bad
    /// file is an error naming it (the node does not start).
    pub fn load(files: &TlsFiles) -> Result<TlsContext, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certs(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_err(&files.key, e))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let server = match &files.client_ca {
            Some(ca) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(ca)?),
                    provider.clone(),
                )
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
                server.with_client_cert_verifier(verifier)
            }
            None => server.with_no_client_auth(),
        }
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| file_err(&files.key, e))?;

        let mut trusted = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = &files.trust {
            for cert in certs(path)? {
                trusted.add(cert).map_err(|e| file_err(path, e))?;
            }
        }
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(trusted)
            .with_client_auth_cert(chain, key)
            .map_err(|e| file_err(&files.key, e))?;
        Ok(TlsContext {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }
}

/// The name an outbound connection verifies: the trunk's host name, or
/// its address when it has none.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    let host = host.trim().trim_matches(['[', ']']);
    ServerName::try_from(host.to_string()).ok()
}
