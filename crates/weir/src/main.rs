//! The `weir` binary: `weir serve` runs the broker; `weir bench` loads one. The other
//! subcommands (`topic`, `produce`, `consume`, `group`) arrive with the client layer.

mod bench;
mod flags;
mod serve;

use std::process::ExitCode;

const USAGE: &str = "usage: weir <command>

commands:
  serve      run the broker (weir serve --help)
  bench      load a broker and measure it (weir bench --help)
  version    print the version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {
            if args.iter().any(|a| a == "--help" || a == "-h") {
                println!("{}", serve::USAGE);
                return ExitCode::SUCCESS;
            }
            match serve::run(&args[1..]) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weir serve: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some("bench") => {
            if args.iter().any(|a| a == "--help" || a == "-h") {
                println!("{}", bench::USAGE);
                return ExitCode::SUCCESS;
            }
            match bench::run(&args[1..]) {
                Ok(()) => ExitCode::SUCCESS,
                Err((code, e)) => {
                    eprintln!("weir bench: {e}");
                    ExitCode::from(code)
                }
            }
        }
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
