//! A TCP link on loopback between a client and a gateway that loses chosen answers: the
//! client's requests are numbered over all its connections, and the answer to each request
//! whose number is in the list is held until its first body byte, then the link closes both
//! sides and drops it. The gateway has finished that request (a keyed POST's result is
//! stored before its body goes out); the client sees its connection break and cannot know
//! whether the payment happened: the moment an idempotency key is for.

use crate::{err, LabError};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running link; stops accepting when dropped.
pub struct LossyLink {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    target: SocketAddr,
    /// 1-based numbers of the requests whose answer is lost.
    lose: Vec<usize>,
    requests: AtomicUsize,
    lost: AtomicUsize,
    stop: AtomicBool,
}

/// Where one connection is between its requests and answers.
struct Exchange {
    /// The client's next bytes start a new request (none yet, or the gateway answered).
    between: bool,
    /// The answer to the current request is to be lost.
    lose: bool,
}

impl LossyLink {
    /// Listens on a free loopback port and passes connections on to `target`, losing the
    /// answers of the requests numbered in `lose`.
    pub fn start(target: SocketAddr, lose: &[usize]) -> Result<LossyLink, LabError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| err(format!("lossy link: binding 127.0.0.1:0: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| err(format!("lossy link: {e}")))?;
        let shared = Arc::new(Shared {
            target,
            lose: lose.to_vec(),
            requests: AtomicUsize::new(0),
            lost: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let s = s.clone();
                std::thread::spawn(move || connection(client, &s));
            }
        });
        Ok(LossyLink { addr, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers lost so far.
    pub fn lost(&self) -> usize {
        self.shared.lost.load(Ordering::SeqCst)
    }

    /// Requests passed on so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn connection(client: TcpStream, s: &Arc<Shared>) {
    let Ok(gateway) = TcpStream::connect_timeout(&s.target, Duration::from_secs(1)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    for sock in [&client, &gateway] {
        let _ = sock.set_nodelay(true);
        let _ = sock.set_read_timeout(Some(Duration::from_secs(60)));
    }
    let (Ok(mut c_read), Ok(mut g_write)) = (client.try_clone(), gateway.try_clone()) else {
        return;
    };
    let exchange = Arc::new(Mutex::new(Exchange {
        between: true,
        lose: false,
    }));
    let (x, shared) = (exchange.clone(), s.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match c_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    {
                        let mut x = x.lock().unwrap_or_else(|p| p.into_inner());
                        if x.between {
                            x.between = false;
                            let k = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
                            x.lose = shared.lose.contains(&k);
                        }
                    }
                    if g_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = g_write.shutdown(Shutdown::Write);
    });
    let (mut g_read, mut c_write) = (gateway, client);
    let mut buf = [0u8; 16 * 1024];
    let mut held: Vec<u8> = Vec::new();
    loop {
        let n = match g_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let lose = {
            let mut x = exchange.lock().unwrap_or_else(|p| p.into_inner());
            x.between = true;
            x.lose
        };
        if lose {
            held.extend_from_slice(&buf[..n]);
            let body_began = held
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .is_some_and(|p| held.len() > p + 4);
            if body_began {
                s.lost.fetch_add(1, Ordering::SeqCst);
                let _ = c_write.shutdown(Shutdown::Both);
                let _ = g_read.shutdown(Shutdown::Both);
                return;
            }
            continue;
        }
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = c_write.shutdown(Shutdown::Write);
}
