//! Live mode (HTTP front and real upstream sockets).
