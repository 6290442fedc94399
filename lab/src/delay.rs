//! The Kong rows' delay server: what `kong/delay-server.conf` does inside Kong (answer
//! `GET /kong-retry/delay?ms=N` with 204 after N ms), on its own loopback port, since Kong
//! gives a filter no per-request timer and the filter waits between attempts by
//! dispatching to it (`delay_endpoint`).

use crate::{err, LabError};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A running delay server (its thread ends with the process).
pub struct DelayServer {
    addr: SocketAddr,
}

impl DelayServer {
    pub fn start() -> Result<DelayServer, LabError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| err(format!("delay server: binding 127.0.0.1:0: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| err(format!("delay server: {e}")))?;
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                std::thread::spawn(move || answer(s));
            }
        });
        Ok(DelayServer { addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn answer(stream: TcpStream) {
    let Ok(read) = stream.try_clone() else { return };
    let mut r = BufReader::new(read);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    // The rest of the head (the dispatch has no body).
    let mut h = String::new();
    while r.read_line(&mut h).is_ok_and(|n| n > 2) {
        h.clear();
    }
    let target = line.split_whitespace().nth(1).unwrap_or("");
    let status = if target.starts_with("/kong-retry/delay") {
        let ms = target
            .split_once("ms=")
            .and_then(|(_, v)| v.split('&').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            .min(3_600_000);
        std::thread::sleep(Duration::from_millis(ms));
        "204 No Content"
    } else {
        "404 Not Found"
    };
    let mut w = stream;
    let _ = write!(
        w,
        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
}
