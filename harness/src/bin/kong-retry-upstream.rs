//! `kong-retry-upstream [--port-file PATH] [--port N]`: the harness's scriptable upstream
//! (see `kong_retry_harness::upstream::script`) on 127.0.0.1. With port 0 (the default) it
//! binds a free port and writes it to `--port-file`.

use std::net::TcpListener;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut port_file = None;
    let mut port = 0u16;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port-file" => port_file = args.next(),
            "--port" => port = args.next().and_then(|p| p.parse().ok()).unwrap_or(0),
            other => {
                eprintln!("kong-retry-upstream: unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kong-retry-upstream: cannot bind 127.0.0.1:{port}: {e}");
            std::process::exit(1);
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
            std::process::exit(1);
        }
    }
    println!("kong-retry-upstream listening on 127.0.0.1:{bound}");
    if let Err(e) = kong_retry_harness::upstream::server::serve(listener) {
        eprintln!("kong-retry-upstream: {e}");
        std::process::exit(1);
    }
}
