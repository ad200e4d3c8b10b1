//! The client commands: `weir topic`, `produce`, `consume`, `group`. Each is a thin shell over
//! `weir-client`: parse the flags, make the calls, print a table for people or JSON for
//! scripts. Exit codes: 0 done, 1 the broker or the input said no, 2 the command line is wrong.

pub mod consume;
pub mod group;
pub mod produce;
pub mod topic;

use std::future::Future;
use std::process::ExitCode;

use weir_client::Config;

/// Every client command's shared flags, as the usage texts spell them.
pub const COMMON_FLAGS: &str =
    "  --bootstrap   broker address (env WEIR_BOOTSTRAP; default 127.0.0.1:9092)
  --json        print JSON for scripts instead of text for people";

/// Runs client command `command` (`topic`, `produce`, `consume` or `group`) on the arguments
/// after it.
pub fn main(command: &str, args: &[String]) -> ExitCode {
    type Run = fn(&[String]) -> Result<(), Failure>;
    let (run, usage): (Run, fn() -> String) = match command {
        "topic" => (topic::run, topic::usage),
        "produce" => (produce::run, produce::usage),
        "consume" => (consume::run, consume::usage),
        _ => (group::run, group::usage),
    };
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", usage());
        return ExitCode::SUCCESS;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("weir {command}: {}", failure.message());
            ExitCode::from(failure.code())
        }
    }
}

/// Why a command stopped: the exit code and what to print.
#[derive(Debug)]
pub enum Failure {
    /// Exit 2: the command line is wrong; the message ends with a usage hint.
    Usage(String),
    /// Exit 1: the broker or the input refused.
    Failed(String),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Failed(_) => 1,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Failed(m) => m,
        }
    }
}

impl From<weir_client::Error> for Failure {
    fn from(e: weir_client::Error) -> Failure {
        Failure::Failed(e.to_string())
    }
}

/// A command line split into positional arguments and flags.
#[derive(Debug, Default)]
pub struct Args {
    pub positional: Vec<String>,
    pub flags: Vec<(String, Option<String>)>,
    pub bootstrap: Option<String>,
    pub json: bool,
}

impl Args {
    /// Splits `args`; `values` are the flags that take a value, `switches` those that do not
    /// (`--bootstrap` and `--json` are always known). Anything else is a usage error.
    pub fn parse(
        args: &[String],
        values: &[&str],
        switches: &[&str],
        usage: &str,
    ) -> Result<Args, Failure> {
        let bad = |message: String| Failure::Usage(format!("{message}\n\n{usage}"));
        let mut parsed = Args::default();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            if !arg.starts_with("--") || arg == "--" {
                parsed.positional.push(arg.clone());
                continue;
            }
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (arg.as_str(), None),
            };
            if name == "--bootstrap" || values.contains(&name) {
                let value = inline
                    .or_else(|| rest.next().cloned())
                    .ok_or_else(|| bad(format!("{name} needs a value")))?;
                if name == "--bootstrap" {
                    parsed.bootstrap = Some(value);
                } else {
                    parsed.flags.push((name.to_string(), Some(value)));
                }
            } else if name == "--json" || switches.contains(&name) {
                if inline.is_some() {
                    return Err(bad(format!("{name} takes no value")));
                }
                if name == "--json" {
                    parsed.json = true;
                } else {
                    parsed.flags.push((name.to_string(), None));
                }
            } else {
                return Err(bad(format!("unknown flag {name:?}")));
            }
        }
        Ok(parsed)
    }

    /// The last value of flag `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value of a repeatable flag, in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }

    pub fn switch(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, v)| n == name && v.is_none())
    }

    /// The client settings: `--bootstrap`, else WEIR_BOOTSTRAP, else the default.
    pub fn config(&self) -> Config {
        match &self.bootstrap {
            Some(bootstrap) => Config::new(bootstrap.clone()),
            None => Config::from_env(),
        }
        .client_id("weir-cli")
    }
}

/// Parses flag `name`'s value as a number.
pub fn number<T: std::str::FromStr>(name: &str, value: &str, usage: &str) -> Result<T, Failure> {
    value
        .parse()
        .map_err(|_| Failure::Usage(format!("{name}: {value:?} is not a number\n\n{usage}")))
}

/// `KEY=VALUE` pairs of a repeatable flag.
pub fn pairs(name: &str, values: &[&str], usage: &str) -> Result<Vec<(String, String)>, Failure> {
    values
        .iter()
        .map(|v| match v.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Failure::Usage(format!(
                "{name} wants KEY=VALUE, not {v:?}\n\n{usage}"
            ))),
        })
        .collect()
}

/// Runs a command's async body on a current-thread runtime.
pub fn block_on<T>(body: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(format!("cannot start the runtime: {e}")))?
        .block_on(body)
}

/// A table for people: left-aligned columns two spaces apart, headed by capitals.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Bytes as JSON: a string when they are UTF-8, else `{"base64": "…"}`.
pub fn bytes_json(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::Value::String(text.to_string()),
        Err(_) => serde_json::json!({ "base64": base64(bytes) }),
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn positionals_flags_and_mistakes() {
        let a = Args::parse(
            &args(&[
                "orders",
                "--config",
                "a=1",
                "--config=b=2",
                "--json",
                "--bootstrap=h:1",
            ]),
            &["--config"],
            &["--force"],
            "usage: x",
        )
        .expect("parses");
        assert_eq!(a.positional, ["orders"]);
        assert_eq!(a.values("--config"), ["a=1", "b=2"]);
        assert_eq!(a.bootstrap.as_deref(), Some("h:1"));
        assert!(a.json && !a.switch("--force"));
        for (bad, says) in [
            (&["--nope"][..], "unknown flag \"--nope\""),
            (&["--config"][..], "--config needs a value"),
            (&["--json=1"][..], "--json takes no value"),
        ] {
            let e = Args::parse(&args(bad), &["--config"], &[], "usage: x").unwrap_err();
            assert_eq!(e.code(), 2);
            assert!(e.message().starts_with(says), "{}", e.message());
            assert!(e.message().ends_with("usage: x"));
        }
        assert!(pairs("--config", &["novalue"], "u").is_err());
    }

    #[test]
    fn tables_align_and_bytes_encode() {
        let t = table(
            &["TOPIC", "PARTITIONS"],
            &[
                vec!["orders".into(), "3".into()],
                vec!["a".into(), "12".into()],
            ],
        );
        assert_eq!(t, "TOPIC   PARTITIONS\norders  3\na       12");
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
        assert_eq!(
            bytes_json(&[0xff, 0]),
            serde_json::json!({"base64": "/wA="})
        );
        assert_eq!(bytes_json(b"hi"), serde_json::json!("hi"));
    }
}
