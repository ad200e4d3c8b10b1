//! Command-line flags, the one way every `weir` subcommand reads them: `--name value`,
//! `--name=value`, or a bare `--switch`.

/// Splits `args` into (name, value) pairs in order. `switch(name)` says which flags take no
/// value; any other flag without one is an error naming it.
pub fn split(
    args: &[String],
    switch: impl Fn(&str) -> bool,
) -> Result<Vec<(String, Option<String>)>, String> {
    let mut flags = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let value = if switch(name) {
            inline
        } else {
            let value = inline.or_else(|| rest.next().cloned());
            Some(value.ok_or_else(|| format!("{name} needs a value"))?)
        };
        flags.push((name.to_string(), value));
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_inline_or_following_and_switches() {
        let args: Vec<String> = ["--a", "1", "--b=2", "--json", "--c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let err = split(&args, |n| n == "--json").unwrap_err();
        assert_eq!(err, "--c needs a value");
        let flags = split(&args[..4], |n| n == "--json").expect("splits");
        assert_eq!(
            flags,
            vec![
                ("--a".to_string(), Some("1".to_string())),
                ("--b".to_string(), Some("2".to_string())),
                ("--json".to_string(), None),
            ]
        );
    }
}
