//! Connection options of `ferry tail` and `ferry pub`: TLS, compression and AUTH, applied to
//! the ferry-client configuration (the names follow nsq_tail / to_nsq).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use ferry_client::Config;

/// TLS, compression and AUTH flags.
#[derive(Debug, Clone, Default, Args)]
pub struct SecurityArgs {
    /// Upgrade connections to TLS (IDENTIFY tls_v1).
    #[arg(long = "tls")]
    pub tls: bool,

    /// PEM CA certificate(s) the broker's certificate must be signed by (implies --tls).
    #[arg(long, value_name = "FILE")]
    pub tls_root_ca_file: Option<PathBuf>,

    /// PEM client certificate to present (with --tls-key; implies --tls).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Compress connections with snappy.
    #[arg(long, conflicts_with = "deflate")]
    pub snappy: bool,

    /// Compress connections with DEFLATE at this level (1-9).
    #[arg(long, value_name = "LEVEL", num_args = 0..=1, default_missing_value = "6",
          value_parser = clap::value_parser!(u32).range(1..=9))]
    pub deflate: Option<u32>,

    /// Secret sent with AUTH when the broker requires authentication.
    #[arg(long, value_name = "SECRET")]
    pub auth_secret: Option<String>,
}

impl SecurityArgs {
    /// `config` with these options applied.
    pub fn apply(&self, mut config: Config) -> anyhow::Result<Config> {
        if self.tls || self.tls_root_ca_file.is_some() || self.tls_cert.is_some() {
            let client = match (&self.tls_cert, &self.tls_key) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                _ => None,
            };
            let tls = ferry_client::tls::client_config(self.tls_root_ca_file.as_deref(), client)
                .context("TLS options")?;
            config = config.tls(tls);
        }
        if self.snappy {
            config = config.snappy(true);
        }
        if let Some(level) = self.deflate {
            config = config.deflate(level);
        }
        if let Some(secret) = &self.auth_secret {
            config = config.auth_secret(secret.clone());
        }
        Ok(config)
    }
}
