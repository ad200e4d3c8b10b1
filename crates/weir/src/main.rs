//! The `weir` binary. Subcommands arrive with their issues: `serve` with the broker, `topic`,
//! `produce`, `consume`, `group` and `bench` after it.

use std::process::ExitCode;

const USAGE: &str = "usage: weir <command>

commands:
  version    print the version

The broker (`weir serve`) is not built yet.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("version" | "--version" | "-V") => {
            println!("weir {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("weir: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
