//! One TLS set-up for every client of the process — Postgres, RabbitMQ, the gateways'
//! `token_url`s and the OTLP exporter (docs/interface.md, configuration): rustls with the
//! ring crypto provider, trusting the operating system's certificate store plus, when
//! `WALLET_TLS_CA_FILE` names one, the CA certificates of a PEM file.
//!
//! The trust is process-wide, as rustls's default provider is: [`configure`] sets it once
//! at start-up; a process that never calls it trusts the OS store alone.

use crate::error_chain::ErrorChain;
use anyhow::{Context, bail};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

static TRUST: OnceLock<Trust> = OnceLock::new();

/// What this process trusts.
struct Trust {
    /// The extra CA file, its PEM text (the broker client takes the text) and its
    /// certificates.
    ca: Option<CaFile>,
    /// The rustls configuration of the HTTPS clients.
    client_config: Arc<ClientConfig>,
}

struct CaFile {
    path: PathBuf,
    pem: String,
}

/// Sets this process's trust once, before its first connection: the OS store, plus the
/// certificates of `ca_file`. A file that cannot be read or holds no certificate is an
/// error naming it, at start-up rather than at the first handshake.
pub fn configure(ca_file: Option<&Path>) -> anyhow::Result<()> {
    let trust = Trust::load(ca_file)?;
    if TRUST.set(trust).is_err() {
        bail!("the TLS trust of this process is already configured");
    }
    Ok(())
}

fn trust() -> &'static Trust {
    TRUST.get_or_init(|| Trust::load(None).expect("the OS trust store alone always loads"))
}

impl Trust {
    fn load(ca_file: Option<&Path>) -> anyhow::Result<Self> {
        // Every client that asks rustls for the process default gets ring too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for err in &native.errors {
            tracing::warn!(error = %ErrorChain(err), "a certificate of the OS trust store cannot be loaded");
        }
        roots.add_parsable_certificates(native.certs);
        let ca = match ca_file {
            Some(path) => {
                let (ca, certs) = CaFile::read(path)?;
                for cert in certs {
                    roots
                        .add(cert)
                        .with_context(|| format!("WALLET_TLS_CA_FILE {}", path.display()))?;
                }
                Some(ca)
            }
            None => None,
        };
        let client_config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .context("the TLS provider lacks the default protocol versions")?
                .with_root_certificates(roots)
                .with_no_client_auth();
        Ok(Self {
            ca,
            client_config: Arc::new(client_config),
        })
    }
}

impl CaFile {
    fn read(path: &Path) -> anyhow::Result<(Self, Vec<CertificateDer<'static>>)> {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read WALLET_TLS_CA_FILE {}", path.display()))?;
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("WALLET_TLS_CA_FILE {} is not PEM", path.display()))?;
        if certs.is_empty() {
            bail!(
                "WALLET_TLS_CA_FILE {} holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)",
                path.display()
            );
        }
        let ca = Self {
            path: path.to_owned(),
            pem,
        };
        Ok((ca, certs))
    }
}

/// The rustls configuration of HTTPS clients (token_urls, OTLP).
pub fn client_config() -> ClientConfig {
    ClientConfig::clone(&trust().client_config)
}

/// The broker client's TLS settings for `amqps://` URLs: its own OS-store roots plus the
/// CA file's certificates.
pub fn amqp_config() -> lapin::tcp::OwnedTLSConfig {
    lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: trust().ca.as_ref().map(|ca| ca.pem.clone()),
    }
}

/// `url` (a Postgres URL) with the CA file as its `sslrootcert`, unless it names one
/// itself: the Postgres client adds that file to the OS store when it verifies the
/// server (`sslmode=verify-ca` / `verify-full`).
pub fn postgres_url(url: &str) -> Cow<'_, str> {
    let Some(ca) = trust().ca.as_ref() else {
        return Cow::Borrowed(url);
    };
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.query_pairs().any(|(key, _)| key == "sslrootcert") => {
            parsed
                .query_pairs_mut()
                .append_pair("sslrootcert", &ca.path.to_string_lossy());
            Cow::Owned(parsed.into())
        }
        // A URL that does not parse is reported by the Postgres client, as it is.
        _ => Cow::Borrowed(url),
    }
}
