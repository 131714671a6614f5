//! Node addresses: `HOST:PORT`, as `--listen`, `--peers` and `cairn cluster add-node` take them.

/// HOST:PORT, where HOST is a name, an IPv4 address or a bracketed IPv6 address. Names are not
/// resolved (a peer's name may not resolve until its pod exists).
pub fn check_host_port(flag: &str, value: &str) -> Result<(), String> {
    let bad = || format!("{flag}: {value:?} is not HOST:PORT");
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    };
    if host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}
