//! The proxy-wasm adapter: the only code that talks to the host.
//!
//! `root` parses the plan and detects the host; `driver` turns one request's host callbacks
//! into `exchange` events and executes the returned actions, with `env` as the exchange's
//! `Env`; `http` is the SDK's per-request context over a reused driver; `kong_response` puts
//! Kong's local responses back as sent; `state/` is the VM's shared state (`store`: may this
//! VM touch shared data; `budget`: the retry budget; `protection`: adaptive mode's per-worker
//! flag cache); `metrics` defines and counts the counters; `abi` makes the raw host calls.

mod abi;
mod driver;
mod env;
mod http;
mod kong_response;
mod logger;
mod metrics;
mod root;
mod state;

proxy_wasm::main! {{
    logger::install();
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::FilterRoot::new(context_id))
    });
}}
