//! `--consumer-opt KEY,VALUE`: go-nsq `Config` options passed through to the consumer, as
//! nsq_tail takes them (`--consumer-opt=max_attempts,5`, `--consumer-opt=tls_v1,true`; a bare
//! `KEY` means `KEY,true`). Names are go-nsq's; TLS, compression and AUTH options land in the
//! same place as `--tls`, `--snappy`, `--deflate` and `--auth-secret`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use ferry_client::Config;

use crate::security::SecurityArgs;

/// go-nsq options that have no counterpart in ferry-client: accepted, with a warning.
const WITHOUT_EFFECT: &[(&str, &str)] = &[
    ("local_addr", "the system picks the local address"),
    (
        "tls_insecure_skip_verify",
        "the broker's certificate is always verified",
    ),
    (
        "tls_min_version",
        "TLS 1.2 is the lowest version ferry-client speaks",
    ),
];

/// Applies `opts` to `config` and `security`; returns a warning per option without effect.
pub fn apply(
    opts: &[String],
    mut config: Config,
    security: &mut SecurityArgs,
) -> anyhow::Result<(Config, Vec<String>)> {
    let mut warnings = Vec::new();
    for opt in opts {
        let (key, value) = opt.split_once(',').unwrap_or((opt.as_str(), "true"));
        let (key, value) = (key.trim(), value.trim());
        config = apply_one(key, value, config, security, &mut warnings)
            .with_context(|| format!("--consumer-opt {opt:?}"))?;
    }
    Ok((config, warnings))
}

fn apply_one(
    key: &str,
    value: &str,
    config: Config,
    security: &mut SecurityArgs,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Config> {
    let config = match key {
        "max_in_flight" => config.max_in_flight(number(value)?),
        "max_attempts" => config.max_attempts(number(value)?),
        "sample_rate" => config.sample_rate(number(value)?),
        "output_buffer_size" => config.output_buffer_size(number(value)?),
        "lookupd_poll_jitter" => config.lookupd_poll_jitter(number(value)?),
        "heartbeat_interval" => config.heartbeat_interval(duration(value)?),
        "read_timeout" => config.read_timeout(duration(value)?),
        "write_timeout" => config.write_timeout(duration(value)?),
        "dial_timeout" => config.dial_timeout(duration(value)?),
        "lookupd_poll_interval" => config.lookupd_poll_interval(duration(value)?),
        "default_requeue_delay" => config.default_requeue_delay(duration(value)?),
        "max_requeue_delay" => config.max_requeue_delay(duration(value)?),
        "backoff_multiplier" => config.backoff_multiplier(duration(value)?),
        "max_backoff_duration" => config.max_backoff_duration(duration(value)?),
        "rdy_redistribute_interval" => config.rdy_redistribute_interval(duration(value)?),
        "low_rdy_idle_timeout" => config.low_rdy_idle_timeout(duration(value)?),
        "low_rdy_timeout" => config.low_rdy_timeout(duration(value)?),
        "msg_timeout" => config.msg_timeout(Some(duration(value)?)),
        "output_buffer_timeout" => config.output_buffer_timeout(duration(value)?),
        "client_id" => config.client_id(value),
        "hostname" => config.hostname(value),
        "user_agent" => config.user_agent(value),
        "auth_secret" => {
            security.auth_secret = Some(value.to_owned());
            config
        }
        "tls_v1" => {
            security.tls = boolean(value)?;
            config
        }
        "tls_root_ca_file" => {
            security.tls_root_ca_file = Some(value.into());
            config
        }
        "tls_cert" => {
            security.tls_cert = Some(value.into());
            config
        }
        "tls_key" => {
            security.tls_key = Some(value.into());
            config
        }
        "snappy" => {
            security.snappy = boolean(value)?;
            config
        }
        "deflate" => {
            security.deflate = match boolean(value)? {
                true => Some(security.deflate.unwrap_or(6)),
                false => None,
            };
            config
        }
        "deflate_level" => {
            let level: u32 = number(value)?;
            if !(1..=9).contains(&level) {
                bail!("deflate_level must be 1-9");
            }
            if security.deflate.is_some() {
                security.deflate = Some(level);
            } else {
                warnings.push(format!(
                    "--consumer-opt deflate_level,{level} has no effect without deflate,true"
                ));
            }
            config
        }
        other => match WITHOUT_EFFECT.iter().find(|(k, _)| *k == other) {
            Some((_, why)) => {
                warnings.push(format!("--consumer-opt {other} is ignored: {why}"));
                config
            }
            None => bail!("unknown option {other:?} (go-nsq Config names, e.g. max_attempts)"),
        },
    };
    Ok(config)
}

fn number<N: std::str::FromStr>(value: &str) -> anyhow::Result<N>
where
    N::Err: std::error::Error + Send + Sync + 'static,
{
    value
        .parse()
        .with_context(|| format!("{value:?} is not a number"))
}

/// Go's `strconv.ParseBool`.
fn boolean(value: &str) -> anyhow::Result<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => bail!("{other:?} is not a bool"),
    }
}

/// A Go duration ("5s", "250ms"); go-nsq also takes a bare number of nanoseconds.
fn duration(value: &str) -> anyhow::Result<Duration> {
    if let Ok(ns) = value.parse::<u64>() {
        return Ok(Duration::from_nanos(ns));
    }
    humantime::parse_duration(value).with_context(|| format!("{value:?} is not a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> anyhow::Result<(Config, SecurityArgs, Vec<String>)> {
        let mut security = SecurityArgs::default();
        let owned: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        let (config, warnings) = apply(&owned, Config::new(), &mut security)?;
        Ok((config, security, warnings))
    }

    #[test]
    fn go_nsq_options_reach_the_consumer() {
        let (_, security, warnings) = opts(&[
            "max_attempts,5",
            "heartbeat_interval,10s",
            "read_timeout,60000000000",
            "snappy",
            "tls_v1,true",
            "auth_secret,s3cret",
            "user_agent,tail/1",
        ])
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(security.tls && security.snappy);
        assert_eq!(security.auth_secret.as_deref(), Some("s3cret"));
        let (_, security, _) = opts(&["deflate,true", "deflate_level,3"]).unwrap();
        assert_eq!(security.deflate, Some(3));
    }

    #[test]
    fn bad_and_inert_options() {
        for bad in [
            "nope,1",
            "max_attempts,many",
            "snappy,maybe",
            "deflate_level,12",
        ] {
            assert!(opts(&[bad]).is_err(), "{bad}");
        }
        let (_, _, warnings) = opts(&["tls_insecure_skip_verify,true"]).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("always verified"), "{warnings:?}");
    }
}
