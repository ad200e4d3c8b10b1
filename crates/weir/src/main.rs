//! The `weir` binary: `weir serve` runs the broker; `weir bench` loads one; `topic`,
//! `produce`, `consume` and `group` are the client commands ([`cli`]).

mod bench;
mod cli;
mod flags;
mod serve;

use std::process::ExitCode;

const USAGE: &str = "usage: weir <command>

commands:
  serve      run the broker (weir serve --help)
  topic      create, list, describe, alter and delete topics (weir topic --help)
  produce    send lines from stdin or a file as records (weir produce --help)
  consume    print records as they arrive (weir consume --help)
  group      list, describe, reset and delete consumer groups (weir group --help)
  bench      load a broker and measure it (weir bench --help)
  version    print the version

The client commands take --bootstrap HOST:PORT (env WEIR_BOOTSTRAP; default 127.0.0.1:9092).";

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
        Some(command @ ("topic" | "produce" | "consume" | "group")) => {
            cli::main(command, &args[1..])
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
