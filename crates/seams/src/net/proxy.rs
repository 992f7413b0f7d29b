//! Clients behind a load balancer: which peers are trusted proxies, and
//! the PROXY protocol (v2) header such a proxy puts before each
//! connection's bytes, naming the client.
//!
//! A header is read only from a trusted proxy, which must send one: from
//! anyone else the bytes are the client's own, and believing an address
//! in them would let any client pick the address its limits count.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::prepared::prepared;
use super::{Io, Listener};

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("`{text}`: not an IP address"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("`{text}`: the prefix must be 0-{bits}"))?,
            None => bits,
        };
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    /// Whether `address` is in this block.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// Whether `address` is one of `trusted`.
pub fn is_trusted(trusted: &[Cidr], address: IpAddr) -> bool {
    trusted.iter().any(|block| block.contains(address))
}

/// The PROXY protocol v2 signature.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// How long a proxy may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads a PROXY protocol v2 header from `io`: the client's address, or
/// `None` for a `LOCAL` header (the proxy's own health check).
///
/// # Errors
/// A missing or malformed header.
pub async fn read_header(io: &mut Io) -> io::Result<Option<SocketAddr>> {
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("PROXY v2: {what}"));
    let mut fixed = [0u8; 16];
    io.read_exact(&mut fixed).await?;
    if fixed[..12] != SIGNATURE {
        return Err(invalid("no signature"));
    }
    let (version, command) = (fixed[12] >> 4, fixed[12] & 0x0f);
    if version != 2 {
        return Err(invalid("not version 2"));
    }
    let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let mut rest = vec![0u8; length];
    io.read_exact(&mut rest).await?;
    match command {
        0 => return Ok(None),
        1 => {}
        _ => return Err(invalid("unknown command")),
    }
    let port = |bytes: &[u8]| u16::from_be_bytes([bytes[0], bytes[1]]);
    match fixed[13] >> 4 {
        // AF_INET: source, destination, source port, destination port.
        1 if rest.len() >= 12 => {
            let ip = Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port(&rest[8..10]))))
        }
        2 if rest.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&rest[..16]);
            let ip = Ipv6Addr::from(octets);
            Ok(Some(SocketAddr::new(IpAddr::V6(ip), port(&rest[32..34]))))
        }
        // AF_UNSPEC or AF_UNIX: no address to take.
        0 | 3 => Ok(None),
        _ => Err(invalid("address block too short")),
    }
}

/// `inner`'s connections, each from a `trusted` proxy with the client
/// address of the PROXY protocol v2 header it must send first (without a
/// valid header within five seconds, the connection is dropped);
/// connections from other peers pass through as they are.
///
/// # Errors
/// When `inner` cannot say its address.
pub fn proxy_protocol_listener(
    inner: Box<dyn Listener>,
    trusted: Arc<[Cidr]>,
) -> io::Result<Box<dyn Listener>> {
    prepared(inner, move |mut io| {
        let from_proxy = is_trusted(&trusted, io.peer().ip());
        async move {
            if !from_proxy {
                return Some(io);
            }
            match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut io)).await {
                Ok(Ok(client)) => {
                    if let Some(client) = client {
                        io.set_peer(client);
                    }
                    Some(io)
                }
                _ => None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_contain_their_addresses() {
        let block: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("10.1.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_v2_header_names_the_client() {
        let (mut proxy, server) = tokio::io::duplex(256);
        let mut io = Io::new(server, "10.0.0.1:5000".parse().unwrap());
        let mut header = SIGNATURE.to_vec();
        header.extend_from_slice(&[0x21, 0x11, 0, 12]);
        header.extend_from_slice(&[203, 0, 113, 9, 10, 0, 0, 2, 0x1f, 0x90, 1, 187]);
        header.extend_from_slice(b"GET /");
        tokio::io::AsyncWriteExt::write_all(&mut proxy, &header)
            .await
            .unwrap();
        let client = read_header(&mut io).await.unwrap();
        assert_eq!(client, Some("203.0.113.9:8080".parse().unwrap()));
        // The client's own bytes follow, untouched.
        let mut rest = [0u8; 5];
        io.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"GET /");
    }

    #[tokio::test]
    async fn bytes_without_a_signature_are_no_header() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = Io::new(server, "10.0.0.1:5000".parse().unwrap());
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert!(read_header(&mut io).await.is_err());
    }
}
