//! `console_addr`: where the browser console listens.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// The console's default address.
pub const DEFAULT_CONSOLE_ADDR: &str = "127.0.0.1:8080";

/// Where the browser console listens (see docs/console.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsoleAddr {
    /// `127.0.0.1:8080` if that port is free; if it is taken the server warns and runs
    /// without the console, so a second local server (or a test) still starts.
    #[default]
    Default,
    /// No console.
    Off,
    /// This address; a failure to bind it refuses start-up. Off loopback only with `[tls]`
    /// (the console then speaks HTTPS) or `insecure`.
    At(SocketAddr),
}

impl FromStr for ConsoleAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<ConsoleAddr, String> {
        match s.trim() {
            "off" => Ok(ConsoleAddr::Off),
            "default" => Ok(ConsoleAddr::Default),
            other => other.parse().map(ConsoleAddr::At).map_err(|_| {
                format!("console_addr: {other:?} is not `off` nor an address like {DEFAULT_CONSOLE_ADDR}")
            }),
        }
    }
}

impl fmt::Display for ConsoleAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsoleAddr::Default => f.write_str("default"),
            ConsoleAddr::Off => f.write_str("off"),
            ConsoleAddr::At(addr) => write!(f, "{addr}"),
        }
    }
}
