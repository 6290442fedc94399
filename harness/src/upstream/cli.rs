//! The command line of `kong-retry-upstream`: `[--port-file PATH] [--port N] [--journal PATH] [--graceful]`, the
//! harness's scriptable upstream (see `kong_retry_harness::upstream::script`) on 127.0.0.1.
//! With port 0 (the default) it binds a free port and writes it to `--port-file`.
//! `--journal` appends a line per request received (see `server::Options::journal`);
//! `--graceful` makes SIGTERM a drain (stop accepting, finish what is in flight, exit)
//! instead of an immediate exit.

use super::server::{serve_with, Options};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_signal: libc::c_int) {
    TERM.store(true, Ordering::SeqCst);
}

/// Runs the server with these arguments (without the program name); returns the exit status.
pub fn run(args: impl IntoIterator<Item = String>) -> i32 {
    let mut args = args.into_iter();
    let mut port_file = None;
    let mut port = 0u16;
    let mut journal = None;
    let mut graceful = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port-file" => port_file = args.next(),
            "--port" => port = args.next().and_then(|p| p.parse().ok()).unwrap_or(0),
            "--journal" => journal = args.next(),
            "--graceful" => graceful = true,
            other => {
                eprintln!("kong-retry-upstream: unknown argument {other:?}");
                return 2;
            }
        }
    }
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kong-retry-upstream: cannot bind 127.0.0.1:{port}: {e}");
            return 1;
        }
    };
    let bound = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    if let Some(path) = port_file {
        // Written whole, then renamed: a reader never sees half a number.
        let tmp = format!("{path}.tmp");
        if std::fs::write(&tmp, bound.to_string())
            .and_then(|_| std::fs::rename(&tmp, &path))
            .is_err()
        {
            eprintln!("kong-retry-upstream: cannot write {path}");
            return 1;
        }
    }
    let mut options = Options {
        drain_limit: Duration::from_secs(5),
        ..Options::default()
    };
    if let Some(path) = journal {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => options.journal = Some(f),
            Err(e) => {
                eprintln!("kong-retry-upstream: cannot open journal {path}: {e}");
                return 1;
            }
        }
    }
    if graceful {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                libc::SIGTERM,
                on_term as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
        options.drain = Some(&TERM);
    }
    println!("kong-retry-upstream listening on 127.0.0.1:{bound}");
    if let Err(e) = serve_with(listener, options) {
        eprintln!("kong-retry-upstream: {e}");
        return 1;
    }
    0
}
