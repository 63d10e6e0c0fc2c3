//! Who the client is, by address: the socket's peer, or what a trusted proxy says it forwarded.
//! Damping and the log use it, for the realm and the admin API alike.

use std::net::IpAddr;

use poem::http::header;
use poem::Request;

/// The socket's peer, unless it is a trusted proxy: then the rightmost address in
/// `X-Forwarded-For` (or `Forwarded: for=`) that is not itself a trusted proxy. Headers from
/// any other peer are ignored, so a client cannot choose the address it is damped under.
pub(crate) fn client_address(req: &Request, trusted: &[ipnet::IpNet]) -> IpAddr {
    let peer = match req.remote_addr().as_socket_addr() {
        Some(a) => a.ip().to_canonical(),
        None => return IpAddr::from([0, 0, 0, 0]),
    };
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Hops in order, client first; each proxy appends the address it received from.
    let xff = req.headers().get_all("x-forwarded-for");
    let mut hops: Vec<IpAddr> = xff
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .take(MAX_HOPS)
        .filter_map(|h| h.trim().parse::<IpAddr>().ok())
        .collect();
    if hops.is_empty() {
        hops = req
            .headers()
            .get_all(header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .take(MAX_HOPS)
            .filter_map(forwarded_for)
            .collect();
    }
    hops.into_iter()
        .rev()
        .map(|ip| ip.to_canonical())
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

/// Hops read from one forwarding header; real chains have a handful.
const MAX_HOPS: usize = 32;

/// `for=192.0.2.1`, `for="[2001:db8::1]:4711"` in one `Forwarded` element.
pub(crate) fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        if !k.eq_ignore_ascii_case("for") {
            return None;
        }
        let v = v.trim_matches('"');
        let host = match v.strip_prefix('[') {
            Some(rest) => rest.split(']').next()?,
            None => v.split(':').next()?,
        };
        host.parse().ok()
    })
}
