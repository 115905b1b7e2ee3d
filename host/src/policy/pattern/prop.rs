//! Property tests of the address matcher: a policy of random IPv4 rules against a naive
//! reference (a u32 mask and a range check).

use super::*;
use crate::policy::{Policy, Rule, Use};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn reference(net: u32, prefix: u8, lo: u16, hi: u16, ip: u32, port: u16) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    let ip_ok = if ip == 0 { net == 0 } else { ip & mask == net };
    ip_ok && lo <= port && port <= hi
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn v4_matcher_agrees_with_reference(
        base in any::<u32>(),
        prefix in 0u8..=32,
        a in any::<u16>(),
        b in any::<u16>(),
        // Half the addresses are near the network so both outcomes are exercised.
        near in any::<bool>(),
        offset in any::<u32>(),
        ip in any::<u32>(),
        port in any::<u16>(),
        mapped in any::<bool>(),
    ) {
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        let net = base & mask;
        let (lo, hi) = (a.min(b), a.max(b));
        let ip = if near { net.wrapping_add(offset % 512) } else { ip };
        let pat = format!("{}/{}:{}-{}", Ipv4Addr::from(net), prefix, lo, hi);
        let p = AddrPattern::parse(&pat).unwrap();
        let v4 = Ipv4Addr::from(ip);
        let addr_ip = if mapped { IpAddr::V6(v4.to_ipv6_mapped()) } else { IpAddr::V4(v4) };
        let got = p.matches(SocketAddr::new(addr_ip, port));
        prop_assert_eq!(got, reference(net, prefix, lo, hi, ip, port), "{} vs {}:{}", pat, v4, port);
    }

    #[test]
    fn v6_matcher_agrees_with_reference(
        base in any::<u128>(),
        prefix in 0u8..=128,
        mapped_base in any::<bool>(),
        port_spec in prop_oneof![Just(None), any::<u16>().prop_map(Some)],
        near in any::<bool>(),
        offset in any::<u16>(),
        ip in any::<u128>(),
        port in any::<u16>(),
    ) {
        const MAPPED: u128 = 0xffff_0000_0000; // ::ffff:0.0.0.0
        // Some networks inside ::ffff:0:0/96, which are IPv4 networks written long.
        let (base, prefix) = if mapped_base {
            (MAPPED | (base & 0xffff_ffff), 96 + prefix % 33)
        } else {
            (base, prefix)
        };
        let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
        let net = base & mask;
        let ip = if near { net.wrapping_add(offset as u128) } else { ip };
        let pat = match port_spec {
            Some(p) => format!("[{}/{}]:{}", Ipv6Addr::from(net), prefix, p),
            None => format!("{}/{}", Ipv6Addr::from(net), prefix),
        };
        let p = AddrPattern::parse(&pat).unwrap();
        let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port);

        let is_mapped = |x: u128| x >> 32 == 0xffff;
        let net_is_v4 = prefix >= 96 && is_mapped(net);
        let ip_is_v4 = is_mapped(ip);
        let unspecified = |x: u128, v4: bool| if v4 { x == MAPPED } else { x == 0 };
        let want = net_is_v4 == ip_is_v4
            && ip & mask == net
            && (!unspecified(ip, ip_is_v4) || unspecified(net, net_is_v4))
            && port_spec.is_none_or(|p| p == port);
        prop_assert_eq!(p.matches(addr), want, "{} vs {}", pat, addr);
    }

    #[test]
    fn the_first_matching_rule_is_reported(
        specs in proptest::collection::vec((any::<u8>(), 24u8..=32, 0u16..4), 1..8),
        last in 1u8..=255,
        port in 0u16..4,
    ) {
        // Small spaces (10.0.0.x, ports 0-3) so rules overlap often.
        let rules: Vec<Rule> = specs
            .iter()
            .enumerate()
            .map(|(i, (host, prefix, p))| {
                let net = IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, *host)), *prefix)
                    .unwrap()
                    .trunc();
                Rule::new(Use::TcpConnect, &format!("{net}:{p}"), format!("rule {i}")).unwrap()
            })
            .collect();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), port);
        let ip = u32::from(Ipv4Addr::new(10, 0, 0, last));
        let want = specs.iter().position(|(host, prefix, p)| {
            let mask = u32::MAX << (32 - prefix);
            let net = u32::from(Ipv4Addr::new(10, 0, 0, *host)) & mask;
            ip & mask == net && port == *p
        });
        let policy = Policy { rules, ..Policy::default() };
        let got = policy.decide(Use::TcpConnect, addr);
        prop_assert_eq!(got.rule, want.map(|i| format!("rule {i}")));
    }
}
