//! `ferry to-http`: send each message to an HTTP endpoint, as nsq_to_http.
//!
//! `--post URL`: the body is POSTed with `--content-type`; `--get URL`: `%s` in the URL is
//! replaced by the body, query-escaped. A 2xx answer FINs the message; anything else (another
//! status, a timeout, a refused connection) requeues it with backoff, so it is tried again
//! until it is delivered (at least once).

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::hosts::{Hosts, Mode};
use super::{FeedArgs, Progress, Subscription, dispatch};
use crate::args::parse_positive_duration;

/// Flags of `ferry to-http`.
#[derive(Debug, Clone, Args)]
pub struct ToHttpArgs {
    /// Topics, channel and brokers to consume.
    #[command(flatten)]
    pub feed: FeedArgs,

    /// URL to POST each message to; repeatable.
    #[arg(
        long = "post",
        value_name = "URL",
        required_unless_present = "get",
        conflicts_with = "get"
    )]
    pub post: Vec<String>,

    /// URL to GET for each message, `%s` standing for the query-escaped body; repeatable.
    #[arg(long = "get", value_name = "URL")]
    pub get: Vec<String>,

    /// Content-Type of POSTs.
    #[arg(long, default_value = "application/octet-stream")]
    pub content_type: String,

    /// Timeout of one request, connection included.
    #[arg(long, default_value = "20s", value_parser = parse_positive_duration)]
    pub http_timeout: Duration,

    /// Most requests at once.
    #[arg(short = 'n', long = "n", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: u64,

    /// How messages are spread over the URLs.
    #[arg(long, value_enum, default_value_t = Mode::Hostpool)]
    pub mode: Mode,
}

/// Runs `ferry to-http` until `shutdown`, then waits for the requests under way.
pub async fn run(args: &ToHttpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(args.http_timeout)
        .user_agent(concat!("ferry-to-http/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let is_get = args.post.is_empty();
    let urls = Arc::new(if is_get {
        args.get.clone()
    } else {
        args.post.clone()
    });
    let hosts = Arc::new(Hosts::new(args.mode, urls.len()));
    let content_type = args.content_type.clone();
    let progress_stop = CancellationToken::new();
    let progress = Progress::start("to-http", progress_stop.clone());
    let sub = Subscription::start(&args.feed, "nsq_to_http", "to-http").await?;
    let send = move |_topic: usize, body: bytes::Bytes| {
        let (client, urls, hosts) = (client.clone(), urls.clone(), hosts.clone());
        let content_type = content_type.clone();
        async move {
            let d = hosts.pick();
            let request = if is_get {
                client.get(urls[d].replace("%s", &query_escape(&body)))
            } else {
                client
                    .post(&urls[d])
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(body)
            };
            let result = match request.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{}: {}", urls[d], r.status())),
                Err(err) => Err(format!("{}: {err}", urls[d])),
            };
            hosts.report(d, result.is_ok());
            result
        }
    };
    let concurrency = usize::try_from(args.concurrency).unwrap_or(usize::MAX);
    dispatch(sub, concurrency, &progress, &shutdown, send).await;
    progress_stop.cancel();
    eprintln!("{}", progress.summary());
    Ok(())
}

/// `body` escaped for a URL's query, as Go's `url.QueryEscape` (space as `+`).
pub fn query_escape(body: &[u8]) -> String {
    let mut out = String::with_capacity(body.len());
    for &b in body {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_escape_as_go() {
        assert_eq!(query_escape(b"a b&c=d/e~"), "a+b%26c%3Dd%2Fe~");
        assert_eq!(query_escape(&[0xff, b'\n']), "%FF%0A");
    }
}
