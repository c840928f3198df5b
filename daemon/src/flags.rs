//! Command lines and config files as NSQ's daemons take them.
//!
//! NSQ's binaries parse flags with Go's `flag` package: a long flag may be written with one
//! dash or two (`-data-path=/var/lib/nsq`, `--data-path /var/lib/nsq`), a bool flag may be given
//! bare or as `-snappy=false`. Their `--config` file is TOML whose keys are the flag names with
//! underscores (a few are named differently: `nsqlookupd_tcp_addresses`), unknown keys are
//! ignored, and a flag given on the command line wins over the file.
//!
//! [`parse_nsq_style`] gives a clap parser the same surface: [`go_style_args`] rewrites
//! single-dash long flags, [`IgnoredFlag`]s (NSQ flags with no meaning in Ferry) are accepted and
//! reported as warnings, and the config file's options are placed before the command line.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Command, Parser};

/// An NSQ flag that Ferry accepts, so that NSQ's command lines and config files keep working,
/// but does not act on. Each one given produces one startup warning saying why.
#[derive(Debug, Clone, Copy)]
pub struct IgnoredFlag {
    /// The flag's name without dashes (`"statsd-address"`).
    pub name: &'static str,
    /// Whether the flag takes a value (`-statsd-address=host:port`) or is a bool (`-verbose`).
    pub takes_value: bool,
    /// Why Ferry has no use for it, and what to use instead.
    pub why: &'static str,
}

/// How a daemon's flags line up with its NSQ counterpart's.
#[derive(Debug, Clone, Copy, Default)]
pub struct NsqCompat<'a> {
    /// Config-file keys whose flag is named differently (`("nsqlookupd_tcp_addresses",
    /// "lookupd-tcp-address")`); every other key is its flag name with `_` for `-`.
    pub renames: &'a [(&'a str, &'a str)],
    /// NSQ flags accepted and ignored.
    pub ignored: &'a [IgnoredFlag],
}

/// A parsed configuration and the warnings to log once logging is set up.
#[derive(Debug, Clone)]
pub struct Parsed<C> {
    /// The configuration.
    pub config: C,
    /// One line per ignored flag or unknown config-file key.
    pub warnings: Vec<String>,
}

/// A daemon's configuration read the NSQ way ([`parse_nsq_style`]): a clap parser that names its
/// `--config` file and the NSQ flags it accepts. The parsing entry points are provided.
pub trait DaemonConfig: Parser {
    /// Its NSQ daemon's renamed config keys and accepted-but-ignored flags.
    const COMPAT: NsqCompat<'static>;

    /// The TOML file given with `--config`.
    fn config_file(&self) -> Option<&Path>;

    /// `--log-level` and `--log-format`.
    fn logging(&self) -> (&str, crate::LogFormat);

    /// Parses the process's command line, merging `--config` if given; also returns the
    /// warnings (ignored flags, unknown config-file keys) to log once logging is set up.
    fn from_env_args() -> Result<Parsed<Self>, clap::Error> {
        Self::parse_nsq_style(std::env::args_os())
    }

    /// Parses `args` (program name first), merging the TOML file named by `--config`.
    fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Self::parse_nsq_style(args).map(|parsed| parsed.config)
    }

    /// Like [`DaemonConfig::from_args`], also returning the warnings to log.
    fn parse_nsq_style<I, T>(args: I) -> Result<Parsed<Self>, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        parse_nsq_style(args, |c: &Self| c.config_file(), &Self::COMPAT)
    }
}

/// Parses `args` (program name first) into `C` the way NSQ's daemons read theirs: Go-style
/// single-dash flags, `compat.ignored` flags accepted with a warning, and the TOML file named by
/// `config_file(&parsed)` read first so that the command line wins.
pub fn parse_nsq_style<C, I, T>(
    args: I,
    config_file: impl Fn(&C) -> Option<&Path>,
    compat: &NsqCompat<'_>,
) -> Result<Parsed<C>, clap::Error>
where
    C: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    // As with Go's flag package, a flag given twice takes its last value.
    let mut command = with_ignored_flags(C::command(), compat.ignored).args_override_self(true);
    let args = go_style_args(args.into_iter().map(Into::into).collect(), &command);
    let matches = command.clone().try_get_matches_from(&args)?;
    let first = C::from_arg_matches(&matches)?;
    let mut warnings = Vec::new();
    let matches = match config_file(&first).map(Path::to_path_buf) {
        None => matches,
        Some(path) => {
            let file_args = config_file_args(&command, &path, compat.renames, &mut warnings)
                .map_err(|msg| command.error(clap::error::ErrorKind::InvalidValue, msg))?;
            let mut merged: Vec<OsString> = Vec::with_capacity(args.len() + file_args.len());
            merged.extend(args.first().cloned());
            merged.extend(file_args);
            merged.extend(args.into_iter().skip(1));
            command.clone().try_get_matches_from(merged)?
        }
    };
    for flag in compat.ignored {
        if matches.value_source(flag.name) == Some(ValueSource::CommandLine) {
            warnings.push(format!(
                "--{} is accepted for NSQ compatibility and ignored: {}",
                flag.name, flag.why
            ));
        }
    }
    Ok(Parsed {
        config: C::from_arg_matches(&matches)?,
        warnings,
    })
}

/// `command` with each ignored flag added as a hidden argument (a bool one may be given bare,
/// as Go allows).
fn with_ignored_flags(mut command: Command, ignored: &[IgnoredFlag]) -> Command {
    for flag in ignored {
        let arg = Arg::new(flag.name)
            .long(flag.name)
            .hide(true)
            .action(ArgAction::Append);
        let arg = if flag.takes_value {
            arg.num_args(1)
        } else {
            arg.num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .value_parser(clap::builder::BoolishValueParser::new())
        };
        command = command.arg(arg);
    }
    command
}

/// Rewrites Go-style single-dash long flags (`-data-path=/x`, `-verbose`, `-tcp-address :4150`)
/// into clap's `--` form. Only names `command` (or the subcommand named before it) knows are
/// rewritten, so values such as `-1` and short flags such as `-n` are left alone; the value that
/// follows a flag taking one is never touched; everything after `--` is left as it is.
pub fn go_style_args(args: Vec<OsString>, command: &Command) -> Vec<OsString> {
    let mut command = command.clone();
    command.build();
    let mut out = Vec::with_capacity(args.len());
    let mut current = &command;
    let mut value_follows = false;
    let mut rest_verbatim = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || rest_verbatim || std::mem::take(&mut value_follows) {
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            rest_verbatim = true;
            out.push(arg);
            continue;
        }
        if let Some(sub) = current.find_subcommand(OsStr::new(text)) {
            current = sub;
            out.push(arg);
            continue;
        }
        let long = match text.strip_prefix("--") {
            Some(long) => Some(long.to_owned()),
            None => text
                .strip_prefix('-')
                .filter(|rest| is_long_name(current, rest.split('=').next().unwrap_or_default()))
                .map(str::to_owned),
        };
        match long {
            Some(long) => {
                let (name, inline_value) = match long.split_once('=') {
                    Some((name, _)) => (name.to_owned(), true),
                    None => (long.clone(), false),
                };
                value_follows = !inline_value && takes_separate_value(current, &name);
                out.push(OsString::from(format!("--{long}")));
            }
            None => out.push(arg),
        }
    }
    out
}

/// The argument of `command` whose long name (or an alias of it) is `name`.
fn find_long<'c>(command: &'c Command, name: &str) -> Option<&'c Arg> {
    command.get_arguments().find(|a| {
        a.get_long() == Some(name)
            || a.get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&name))
    })
}

/// Whether `name` is one of `command`'s long flags (or an alias of one), `help` or `version`.
fn is_long_name(command: &Command, name: &str) -> bool {
    name.len() > 1 && (name == "help" || name == "version" || find_long(command, name).is_some())
}

/// Whether `--name` given without `=` consumes the next argument as its value.
fn takes_separate_value(command: &Command, name: &str) -> bool {
    find_long(command, name).is_some_and(|a| {
        a.get_action().takes_values()
            && !a.is_require_equals_set()
            && a.get_num_args().is_none_or(|n| n.min_values() >= 1)
    })
}

/// Turns a TOML file into `--flag=value` arguments for `command`: arrays become repeated flags,
/// `snake_case` keys become `kebab-case` flags unless `renames` says otherwise, empty strings
/// mean "not set" (as in NSQ's example files), and unknown keys are skipped with a warning, as
/// NSQ's daemons skip them.
fn config_file_args(
    command: &Command,
    path: &Path,
    renames: &[(&str, &str)],
    warnings: &mut Vec<String>,
) -> Result<Vec<OsString>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("cannot parse config file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let flag = match renames.iter().find(|(k, _)| *k == key) {
            Some((_, flag)) => (*flag).to_owned(),
            None => key.replace('_', "-"),
        };
        if flag == "config" {
            continue;
        }
        if !command.get_arguments().any(|a| a.get_long() == Some(&flag)) {
            warnings.push(format!(
                "config file {}: unknown option {key:?} ignored",
                path.display()
            ));
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for v in values {
            let text = match v {
                toml::Value::String(s) if s.is_empty() => continue,
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => return Err(format!("config option {key:?}: unsupported value {other}")),
            };
            out.push(OsString::from(format!("--{flag}={text}")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 1)]
        size: u32,
        #[arg(long = "peer")]
        peers: Vec<String>,
        #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
              default_missing_value = "true")]
        snappy: bool,
        #[arg(short = 'n')]
        count: Option<i64>,
    }

    const IGNORED: &[IgnoredFlag] = &[
        IgnoredFlag {
            name: "verbose",
            takes_value: false,
            why: "use --log-level",
        },
        IgnoredFlag {
            name: "statsd-address",
            takes_value: true,
            why: "no statsd",
        },
    ];

    fn parse(args: &[&str]) -> Result<Parsed<Flags>, clap::Error> {
        let compat = NsqCompat {
            renames: &[("nsq_peers", "peer")],
            ignored: IGNORED,
        };
        parse_nsq_style(
            std::iter::once("x").chain(args.iter().copied()),
            |f: &Flags| f.config.as_deref(),
            &compat,
        )
    }

    #[test]
    fn single_and_double_dash_long_flags() {
        let p = parse(&[
            "-size=3",
            "-peer",
            "a",
            "--peer=b",
            "-snappy=false",
            "-n",
            "4",
        ])
        .unwrap();
        assert_eq!(p.config.size, 3);
        assert_eq!(p.config.peers, ["a", "b"]);
        assert!(!p.config.snappy);
        assert_eq!(p.config.count, Some(4), "short flags stay as they are");
        assert!(p.warnings.is_empty());
        let p = parse(&["-snappy", "--size", "5"]).unwrap();
        assert!(p.config.snappy);
        assert_eq!(p.config.size, 5);
        assert!(
            parse(&["-nope=1"]).is_err(),
            "unknown flags are still errors"
        );
    }

    #[test]
    fn ignored_flags_are_accepted_once_with_a_warning() {
        let p = parse(&[
            "-verbose",
            "--statsd-address",
            "127.0.0.1:8125",
            "-statsd-address=127.0.0.1:8126",
            "--verbose=false",
            "-size=2",
        ])
        .unwrap();
        assert_eq!(p.config.size, 2);
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("--verbose") && p.warnings[0].contains("use --log-level"));
        assert!(p.warnings[1].contains("--statsd-address"));
    }

    #[test]
    fn the_command_line_wins_over_the_file() {
        let dir = std::env::temp_dir().join(format!("ferry-daemon-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f.cfg");
        std::fs::write(
            &file,
            "size = 7\nnsq_peers = [\"a\", \"b\"]\nstatsd_address = \"\"\nverbose = true\nnope = 1\n",
        )
        .unwrap();
        let cfg = file.to_str().unwrap();
        let p = parse(&["-config", cfg]).unwrap();
        assert_eq!(
            (p.config.size, p.config.peers.clone()),
            (7, vec!["a".into(), "b".into()])
        );
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("unknown option \"nope\""));
        assert!(
            p.warnings[1].contains("--verbose"),
            "empty strings are unset"
        );
        let p = parse(&["--config", cfg, "-size", "9"]).unwrap();
        assert_eq!(p.config.size, 9);
        std::fs::write(&file, "size = \"big\"\n").unwrap();
        assert!(parse(&["--config", cfg]).is_err());
        std::fs::write(&file, "size = [").unwrap();
        let err = parse(&["--config", cfg]).unwrap_err();
        assert!(
            err.to_string().contains("cannot parse config file"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn subcommand_flags_and_verbatim_tail() {
        let command = Command::new("ferry").subcommand(
            Command::new("tail")
                .arg(Arg::new("topic").long("topic"))
                .arg(Arg::new("rest").num_args(0..).last(true)),
        );
        let args = [
            "ferry", "-topic=x", "tail", "-topic", "-topic", "--", "-topic",
        ];
        let out = go_style_args(args.iter().map(OsString::from).collect(), &command);
        let out: Vec<&str> = out.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            out,
            [
                "ferry", "-topic=x", "tail", "--topic", "-topic", "--", "-topic"
            ]
        );
    }
}
