//! What the harness does to loopback TCP connections beyond reading and writing them.

use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// Sets SO_LINGER 0: closing `s` then sends the peer a TCP reset instead of a FIN (what a
/// crashed or killed process's connections look like to the other end).
pub fn reset_on_close(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket the caller owns, with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
