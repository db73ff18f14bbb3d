//! The PROXY protocol (HAProxy, "The PROXY protocol, Versions 1 & 2",
//! ../shared/rfc/proxy-protocol.txt): parse the header a load balancer
//! puts in front of a client connection (§2.1 text v1, §2.2 binary v2), and
//! write a v2 header for backends that accept one.  Pure: bytes in, header
//! out.  Only accepted from `trusted_proxies` (§5, the caller's job).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature (§2.2).
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Longest v1 header, CRLF included (§2.1).
const V1_MAX: usize = 107;
/// Largest v2 header we accept (16-byte fixed part + addresses + TLVs).
const V2_MAX: usize = 16 + 2048;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Octets the header occupied; the IMAP stream starts after them.
    pub len: usize,
    /// The original client and the address it connected to; `None` for
    /// `PROXY UNKNOWN` / v2 `LOCAL` (health checks by the proxy itself:
    /// use the real socket addresses).
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Invalid(&'static str),
}

/// Parse a header at the front of `input`: `Ok(None)` if more bytes are
/// needed.
pub fn parse(input: &[u8]) -> Result<Option<Header>, ProxyError> {
    let sig_len = input.len().min(V2_SIGNATURE.len());
    if input[..sig_len] == V2_SIGNATURE[..sig_len] {
        return if sig_len < V2_SIGNATURE.len() {
            Ok(None)
        } else {
            parse_v2(input)
        };
    }
    let prefix = input.len().min(6);
    if input[..prefix] == b"PROXY "[..prefix] {
        return if prefix < 6 {
            Ok(None)
        } else {
            parse_v1(input)
        };
    }
    Err(ProxyError::Missing)
}

/// §2.1: `PROXY TCP4|TCP6|UNKNOWN src dst sport dport\r\n`.
fn parse_v1(input: &[u8]) -> Result<Option<Header>, ProxyError> {
    let window = &input[..input.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if input.len() >= V1_MAX {
            Err(ProxyError::Invalid("v1 header longer than 107 octets"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&input[..end])
        .map_err(|_| ProxyError::Invalid("v1 header not ASCII"))?;
    let len = end + 2;
    let mut parts = line.split(' ');
    parts.next(); // "PROXY"
    let family = parts
        .next()
        .ok_or(ProxyError::Invalid("v1 family missing"))?;
    if family == "UNKNOWN" {
        return Ok(Some(Header {
            len,
            addresses: None,
        }));
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::Invalid("v1 expects 4 address fields"));
    };
    let ip = |s: &str| {
        s.parse::<IpAddr>()
            .map_err(|_| ProxyError::Invalid("v1 bad address"))
    };
    let port = |s: &str| {
        if s.len() > 1 && s.starts_with('0') {
            return Err(ProxyError::Invalid("v1 port with leading zero"));
        }
        s.parse::<u16>()
            .map_err(|_| ProxyError::Invalid("v1 bad port"))
    };
    let (src, dst) = (ip(src)?, ip(dst)?);
    let family_ok = match family {
        "TCP4" => src.is_ipv4() && dst.is_ipv4(),
        "TCP6" => src.is_ipv6() && dst.is_ipv6(),
        _ => return Err(ProxyError::Invalid("v1 unknown family")),
    };
    if !family_ok {
        return Err(ProxyError::Invalid("v1 address does not match family"));
    }
    Ok(Some(Header {
        len,
        addresses: Some((
            SocketAddr::new(src, port(sport)?),
            SocketAddr::new(dst, port(dport)?),
        )),
    }))
}

/// §2.2: signature, version/command, family/protocol, length, addresses,
/// TLVs (skipped).
fn parse_v2(input: &[u8]) -> Result<Option<Header>, ProxyError> {
    if input.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = input[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Invalid("v2 version is not 2"));
    }
    let body_len = usize::from(u16::from_be_bytes([input[14], input[15]]));
    let len = 16 + body_len;
    if len > V2_MAX {
        return Err(ProxyError::Invalid("v2 header too long"));
    }
    if input.len() < len {
        return Ok(None);
    }
    let body = &input[16..len];
    match ver_cmd & 0x0F {
        0 => {
            return Ok(Some(Header {
                len,
                addresses: None,
            }))
        } // LOCAL
        1 => {} // PROXY
        _ => return Err(ProxyError::Invalid("v2 unknown command")),
    }
    let addresses = match input[13] {
        // TCP over IPv4 / UDP over IPv4
        0x11 | 0x12 => {
            let b = body
                .get(..12)
                .ok_or(ProxyError::Invalid("v2 IPv4 block too short"))?;
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]));
            let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
            Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            ))
        }
        0x21 | 0x22 => {
            let b = body
                .get(..36)
                .ok_or(ProxyError::Invalid("v2 IPv6 block too short"))?;
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(a))
            };
            let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            ))
        }
        // UNSPEC or UNIX: no usable client address.
        _ => None,
    };
    Ok(Some(Header { len, addresses }))
}

/// A v2 `PROXY` header for a connection from `src` to `dst` (§2.2), for
/// backends configured to accept one.  Mixed families are sent as IPv6
/// (IPv4-mapped).
pub fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

/// A v2 `LOCAL` header (§2.2): the connection is the proxy's own, e.g. a
/// health check; the receiver uses the socket's addresses.
pub fn encode_v2_local() -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Every prefix of a valid header is "need more", never an error.
    fn incremental(h: &[u8]) -> Header {
        for i in 0..h.len() {
            assert_eq!(parse(&h[..i]), Ok(None), "prefix {i}");
        }
        parse(h).unwrap().unwrap()
    }

    #[test]
    fn v1_examples() {
        // §2.1 examples.
        let h = incremental(b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n");
        assert_eq!(h.len, 56);
        let h = incremental(b"PROXY TCP6 ffff:f::ffff ffff:f::ffff 65535 65535\r\n");
        assert_eq!(h.addresses.unwrap().0, addr("[ffff:f::ffff]:65535"));
        // The IMAP stream right behind the header is not part of it.
        let h2 = parse(b"PROXY TCP6 ffff:f::ffff ffff:f::ffff 65535 65535\r\nA1 NOOP\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h2, h);
        let h = parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!(
            h,
            Header {
                len: 15,
                addresses: None
            }
        );
        let h = parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 143\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            h.addresses,
            Some((addr("192.0.2.1:56324"), addr("198.51.100.2:143")))
        );
    }

    #[test]
    fn v1_rejects() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"[..],
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyError::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse(&[b'P'; 200][..]).is_err());
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        assert!(parse(long.as_bytes()).is_err());
        assert_eq!(parse(b"a1 NOOP\r\n"), Err(ProxyError::Missing));
    }

    #[test]
    fn v2_round_trip_and_local() {
        for (s, d) in [
            ("192.0.2.1:40000", "198.51.100.2:143"),
            ("[2001:db8::1]:5", "[2001:db8::2]:993"),
        ] {
            let bytes = encode_v2(addr(s), addr(d));
            let h = incremental(&bytes);
            assert_eq!(h.len, bytes.len());
            assert_eq!(h.addresses, Some((addr(s), addr(d))));
        }
        let local = encode_v2_local();
        assert_eq!(
            parse(&local),
            Ok(Some(Header {
                len: 16,
                addresses: None
            }))
        );
        // TLVs after the addresses are skipped.
        let mut with_tlv = encode_v2(addr("192.0.2.1:1"), addr("192.0.2.2:2"));
        with_tlv[15] += 4;
        with_tlv.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
        assert_eq!(parse(&with_tlv).unwrap().unwrap().len, with_tlv.len());
        let mut v3 = local.clone();
        v3[12] = 0x31;
        assert!(parse(&v3).is_err());
    }
}
