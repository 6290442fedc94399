//! Command line: `kong-retry-notice --lang zh|en [--window TEXT] [--filter NAME] <kong.yml | filter-config.json>`

use kong_retry_notice::{load, render, warnings, Lang, DEFAULT_FILTER_NAME};
use std::process::ExitCode;

const USAGE: &str = "usage: kong-retry-notice --lang zh|en [--window \"2026-12-01 01:00–03:00 UTC\"] [--filter kong_retry] <kong.yml | filter-config.json>

Prints, as Markdown, the notice to send to API consumers before a maintenance window:
what may happen, which failures the gateway retries and how often, the longest a request
can take, which requests are never retried automatically, and what clients must do.
The numbers come from the configuration, parsed by the filter's own parser.

  --lang     zh or en (required)
  --window   the maintenance window, quoted as it should appear
  --filter   the filter's name in kong.yml (default: kong_retry)";

struct Args {
    lang: Lang,
    window: Option<String>,
    filter: String,
    path: String,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut lang = None;
    let mut window = None;
    let mut filter = DEFAULT_FILTER_NAME.to_string();
    let mut path = None;
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--lang" => {
                let v = value("--lang")?;
                lang = Some(
                    Lang::parse(&v).ok_or_else(|| format!("--lang must be zh or en, not {v:?}"))?,
                );
            }
            "--window" => window = Some(value("--window")?),
            "--filter" => filter = value("--filter")?,
            f if f.starts_with('-') && f.len() > 1 => return Err(format!("unknown option {f}")),
            _ => {
                if path.replace(a).is_some() {
                    return Err("give exactly one configuration file".into());
                }
            }
        }
    }
    Ok(Args {
        lang: lang.ok_or("--lang zh|en is required")?,
        window,
        filter,
        path: path.ok_or("a kong.yml or filter config file is required")?,
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kong-retry-notice: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let text = match std::fs::read_to_string(&args.path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kong-retry-notice: {}: {e}", args.path);
            return ExitCode::FAILURE;
        }
    };
    let input = match load(&text, &args.filter) {
        Ok(i) => i,
        Err(e) => {
            // Never print a notice for a configuration the filter would not run.
            eprintln!("kong-retry-notice: {}: {e}", args.path);
            return ExitCode::FAILURE;
        }
    };
    for w in warnings(&input) {
        eprintln!("kong-retry-notice: warning: {w}");
    }
    print!("{}", render(&input, args.lang, args.window.as_deref()));
    ExitCode::SUCCESS
}
