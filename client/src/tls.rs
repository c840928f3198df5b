//! TLS configuration for [`Config::tls`](crate::Config::tls), from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// A rustls client configuration that trusts the CA certificates in the PEM file
/// `root_ca_file` (no system roots are bundled: give the CA that signed your brokers) and
/// presents `client_cert` = (certificate chain, private key) PEM files when given.
///
/// ```no_run
/// # fn f() -> Result<(), ferry_client::Error> {
/// let tls = ferry_client::tls::client_config(
///     Some("ca.pem".as_ref()),
///     Some(("client.pem".as_ref(), "client-key.pem".as_ref())),
/// )?;
/// # Ok(()) }
/// ```
pub fn client_config(
    root_ca_file: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let bad = |what: String| Error::InvalidConfig { reason: what };
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = root_ca_file {
        for cert in CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?
        {
            let cert =
                cert.map_err(|e| bad(format!("bad certificate in {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("bad CA certificate in {}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS versions: {e}")))?
        .with_root_certificates(roots);
    let config = match client_cert {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(format!("cannot read {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| bad(format!("cannot read {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad(format!("client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
