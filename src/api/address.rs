//! Which addresses a URL source may reach: the public internet, the operator's trusted
//! `IP:PORT`s, and never the daemon's own API.
//!
//! IPv6 is public only inside global unicast `2000::/3` and outside its special blocks;
//! so every form that embeds or translates an IPv4 address — `::a.b.c.d` (`::/96`),
//! `::ffff:0:a.b.c.d` (`::ffff:0:0:0/96`), NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`,
//! 6to4 `2002::/16`, Teredo `2001::/32` — and the site-local `fec0::/10`, discard-only
//! `100::/64`, unique-local, link-local and multicast ranges are refused by construction,
//! not by a list that a new spelling could miss. An IPv4-mapped address
//! (`::ffff:a.b.c.d`) is the IPv4 address it maps, and is judged as such.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// True for addresses on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 192 && o[1] == 88 && o[2] == 99) // 6to4 relay anycast
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
        || o[0] >= 240)
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    let global_unicast = (s[0] & 0xe000) == 0x2000; // 2000::/3
    // 2001::/23 is IETF special purpose (Teredo, ORCHID, benchmarking); 2001:db8::/32
    // and 3fff::/20 are documentation; 2002::/16 is 6to4.
    let special = match s[0] {
        0x2001 => s[1] < 0x0200 || s[1] == 0x0db8,
        0x2002 => true,
        first => (first & 0xfff0) == 0x3ff0,
    };
    global_unicast && !special
}

/// The addresses the daemon's API listens on, to be never fetched.
#[derive(Debug, Clone, Default)]
pub struct OwnAddresses(Vec<SocketAddr>);

impl OwnAddresses {
    pub fn new(listening: Vec<SocketAddr>) -> Self {
        Self(listening)
    }

    /// Whether connecting to `addr` would reach the daemon's own API: the same port and
    /// the same address, or any address of this host when it listens on `0.0.0.0`/`::`,
    /// or `0.0.0.0`/`::` itself (a connection to it goes to this host).
    pub fn contains(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        self.0.iter().any(|own| {
            own.port() == addr.port()
                && (own.ip().to_canonical() == ip
                    || ip.is_unspecified()
                    || (own.ip().is_unspecified() && is_this_host(ip)))
        })
    }
}

impl OwnAddresses {
    /// The addresses the API on `host:port` listens on, as the configuration names them
    /// (`check-config` has no listener): `host` resolved. Empty for port 0 (any free port,
    /// unknown until bound) or a host that does not resolve.
    pub fn configured(host: &str, port: u16) -> Self {
        use std::net::ToSocketAddrs;
        let listening = match port {
            0 => Vec::new(),
            _ => (host, port).to_socket_addrs().map(Iterator::collect).unwrap_or_default(),
        };
        Self(listening)
    }

    /// The address of the daemon's own API that a request to `url` would connect to, if
    /// any: its host (a name resolved by the system resolver, as a client would) at its
    /// port. `None` when it reaches none, or its host does not resolve (then no request
    /// reaches anything).
    pub fn reached_by(&self, url: &url::Url) -> Option<SocketAddr> {
        let addrs = url.socket_addrs(|| None).ok()?;
        addrs.into_iter().find(|a| self.contains(*a))
    }
}

/// Whether `ip` is an address of this host (it can be bound).
fn is_this_host(ip: IpAddr) -> bool {
    ip.is_unspecified() || ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(list: &[&str]) {
        for a in list {
            assert!(!is_public(a.parse().unwrap()), "{a} passed as public");
        }
    }

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_not_public() {
        refused(&[
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "192.88.99.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
        ]);
        for a in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "2a00:1450:4001::200e", "::ffff:1.1.1.1"] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn ipv6_forms_embedding_ipv4_and_special_ranges_are_not_public() {
        refused(&[
            "::127.0.0.1",                          // IPv4-compatible, ::/96
            "::a9fe:a9fe",                          // ::169.254.169.254
            "::ffff:0:7f00:1",                      // IPv4-translated (SIIT), ::ffff:0:0:0/96
            "64:ff9b::7f00:1",                      // NAT64 well-known prefix
            "64:ff9b::a9fe:a9fe",                   // NAT64 to the metadata address
            "64:ff9b:1::a00:1",                     // NAT64 local-use prefix
            "2002:7f00:1::1",                       // 6to4 of 127.0.0.1
            "2002:a9fe:a9fe::",                     // 6to4 of 169.254.169.254
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo
            "fec0::1",                              // site-local
            "100::1",                               // discard-only
            "2001:db8::1",                          // documentation
            "3fff::1",                              // documentation (RFC 9637)
        ]);
    }

    #[test]
    fn every_ipv6_embedding_of_an_internal_ipv4_address_is_not_public() {
        let internal =
            ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0"];
        for v4 in internal {
            let o: Ipv4Addr = v4.parse().unwrap();
            let [a, b, c, d] = o.octets().map(u16::from);
            let (hi, lo) = ((a << 8) | b, (c << 8) | d);
            let forms = [
                Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo),                  // ::a.b.c.d
                Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo),             // ::ffff:0:a.b.c.d
                Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, hi, lo),             // ::ffff:a.b.c.d (mapped)
                Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),          // NAT64
                Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, hi, lo),          // NAT64 local use
                Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1),             // 6to4
                Ipv6Addr::new(0x2001, 0, 0x4136, 0xe378, 0, 0, !hi, !lo), // Teredo (client bits inverted)
            ];
            for f in forms {
                assert!(!is_public(IpAddr::V6(f)), "{f} (embedding {v4}) passed as public");
            }
        }
    }

    #[test]
    fn own_addresses_cover_every_local_address_when_listening_on_all() {
        let own = OwnAddresses::new(vec!["0.0.0.0:4000".parse().unwrap()]);
        assert!(own.contains("127.0.0.1:4000".parse().unwrap()));
        assert!(own.contains("[::ffff:127.0.0.1]:4000".parse().unwrap()));
        assert!(!own.contains("127.0.0.1:4001".parse().unwrap()));
        assert!(!own.contains("93.184.216.34:4000".parse().unwrap()));
        let own = OwnAddresses::new(vec!["127.0.0.2:80".parse().unwrap()]);
        assert!(own.contains("127.0.0.2:80".parse().unwrap()));
        assert!(!own.contains("127.0.0.3:80".parse().unwrap()));
    }

    #[test]
    fn a_url_naming_the_daemons_own_listener_in_any_spelling_reaches_it() {
        let url = |u: &str| url::Url::parse(u).unwrap();
        let all = OwnAddresses::new(vec!["0.0.0.0:4000".parse().unwrap()]);
        for u in [
            "http://127.0.0.1:4000/api/runs",
            "http://localhost:4000/api/runs",
            "http://[::1]:4000/",
            "http://0.0.0.0:4000/api/runs",
            "http://[::ffff:127.0.0.1]:4000/x",
            "http://127.0.0.2:4000/", // the whole of 127/8 is this host
        ] {
            assert!(all.reached_by(&url(u)).is_some(), "{u} passed as another server");
        }
        for u in ["http://127.0.0.1:4001/api/runs", "http://93.184.216.34:4000/", "http://localhost/api/runs"] {
            assert_eq!(all.reached_by(&url(u)), None, "{u}");
        }
        // One address: that address (and its port) only; the default port of the scheme counts.
        let one = OwnAddresses::new(vec!["127.0.0.1:80".parse().unwrap()]);
        assert!(one.reached_by(&url("http://localhost/api/runs")).is_some());
        assert_eq!(one.reached_by(&url("https://localhost/api/runs")), None);
        assert_eq!(one.reached_by(&url("http://127.0.0.3/")), None);
        assert!(one.reached_by(&url("http://0.0.0.0/")).is_some());
        // A host that does not resolve reaches nothing.
        assert_eq!(all.reached_by(&url("http://no-such-host.invalid:4000/")), None);
    }

    #[test]
    fn configured_addresses_resolve_the_host_and_know_nothing_of_port_0() {
        let own = OwnAddresses::configured("localhost", 4000);
        assert!(own.contains("127.0.0.1:4000".parse().unwrap()));
        assert!(!OwnAddresses::configured("127.0.0.1", 0).contains("127.0.0.1:0".parse().unwrap()));
    }
}
