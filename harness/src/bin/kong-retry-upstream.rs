//! `kong-retry-upstream`: the harness's scriptable upstream; see
//! `kong_retry_harness::upstream::cli` for its arguments.

fn main() {
    std::process::exit(kong_retry_harness::upstream::cli::run(
        std::env::args().skip(1),
    ));
}
