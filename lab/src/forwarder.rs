//! A stand-in for a Kubernetes Service in front of the pool, for the rows on the test host:
//! Kong's dispatch goes to one `host:port` (not a Kong Upstream), which in a cluster is a
//! Service's address that kube-proxy spreads over the pods. Round robin over every endpoint,
//! no health checks; when the chosen endpoint refuses the connection, the client's
//! connection is reset (what a DNAT to a dead pod looks like to the caller).

use crate::{err, LabError};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A running forwarder; stops accepting when dropped.
pub struct Forwarder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    /// Listens on a free loopback port and spreads connections over `backends`.
    pub fn start(backends: Vec<SocketAddr>) -> Result<Forwarder, LabError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| err(format!("forwarder: binding 127.0.0.1:0: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| err(format!("forwarder: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let next = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let i = next.fetch_add(1, Ordering::Relaxed) % backends.len().max(1);
                let Some(&backend) = backends.get(i) else {
                    continue;
                };
                std::thread::spawn(move || relay(client, backend));
            }
        });
        Ok(Forwarder { addr, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn relay(client: TcpStream, backend: SocketAddr) {
    let _ = client.set_nodelay(true);
    let server = match TcpStream::connect_timeout(&backend, Duration::from_secs(1)) {
        Ok(s) => s,
        Err(_) => {
            reset(&client);
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pipe(c2, s2));
    pipe(server, client);
    let _ = up.join();
}

/// Copies until EOF or an error; an error on either side resets the other (a killed pod's
/// reset reaches the caller as a reset, not as a clean end).
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    reset(&from);
                    return;
                }
            }
            Err(_) => {
                reset(&to);
                return;
            }
        }
    }
}

/// Closes with SO_LINGER 0: the peer gets a TCP reset.
fn reset(s: &TcpStream) {
    kong_retry_harness::tcp::reset_on_close(s);
    let _ = s.shutdown(Shutdown::Both);
}
