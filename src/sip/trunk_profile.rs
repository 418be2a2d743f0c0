//! What Switchboard knows of the SIP trunk providers it has presets for
//! (`sip_trunks.provider`): where their signalling comes from (the default
//! `inbound_cidrs` of a trunk created without any), the codecs and DTMF
//! mode they use. Twilio and Telnyx both send E.164 numbers with `+`, the
//! caller's identity in P-Asserted-Identity (read with Remote-Party-ID and
//! From by `sip::routing`), the diverting number of a forwarded call in
//! Diversion, and RFC 2833/4733 telephone-events for DTMF; `generic` is any
//! other RFC 3261 trunk, configured by hand.
//! The address lists live here and nowhere else.

/// Twilio Elastic SIP Trunking's regional signalling gateways (all edges:
/// Virginia, Oregon, Ireland, Frankfurt, Tokyo, Singapore, Sydney,
/// São Paulo), from "IP Addresses for Elastic SIP Trunking Services",
/// https://www.twilio.com/docs/sip-trunking/ip-addresses (regional
/// signalling IP gateways; Twilio asks that all of them be allowed).
pub const TWILIO_SIGNALLING: &[&str] = &[
    "54.172.60.0/23",
    "34.203.250.0/23",
    "54.244.51.0/24",
    "54.171.127.192/26",
    "52.215.127.0/24",
    "35.156.191.128/25",
    "3.122.181.0/24",
    "54.65.63.192/26",
    "3.112.80.0/24",
    "54.169.127.128/26",
    "3.1.77.0/24",
    "54.252.254.64/26",
    "3.104.90.0/24",
    "177.71.206.192/26",
    "18.228.249.0/24",
];

/// Telnyx's SIP proxies, two per region (US, Canada, Europe, Australia,
/// Asia), from "SIP Signaling Addresses", https://sip.telnyx.com (linked
/// from https://developers.telnyx.com/docs/voice/sip-trunking/network-configuration/ip-whitelisting).
pub const TELNYX_SIGNALLING: &[&str] = &[
    "192.76.120.10/32",
    "64.16.250.10/32",
    "192.76.120.31/32",
    "64.16.250.13/32",
    "185.246.41.140/32",
    "185.246.41.141/32",
    "103.115.244.145/32",
    "103.115.244.146/32",
    "103.115.244.158/32",
    "103.115.244.159/32",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrunkProvider {
    Twilio,
    Telnyx,
    Generic,
}

/// How a provider sends DTMF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfMode {
    /// RFC 2833 / RFC 4733 telephone-events in the RTP stream.
    Rfc4733,
}

impl TrunkProvider {
    /// `sip_trunks.provider` values.
    pub const NAMES: &'static [&'static str] = &["twilio", "telnyx", "generic"];

    pub fn parse(name: &str) -> Option<TrunkProvider> {
        match name {
            "twilio" => Some(TrunkProvider::Twilio),
            "telnyx" => Some(TrunkProvider::Telnyx),
            "generic" => Some(TrunkProvider::Generic),
            _ => None,
        }
    }

    /// Where the provider's calls come from: a new trunk's `inbound_cidrs`
    /// when the admin gives none (a generic trunk has no default).
    pub fn signalling_ranges(self) -> &'static [&'static str] {
        match self {
            TrunkProvider::Twilio => TWILIO_SIGNALLING,
            TrunkProvider::Telnyx => TELNYX_SIGNALLING,
            TrunkProvider::Generic => &[],
        }
    }

    /// The codecs, in preference order: G.711 μ-law then A-law, as both
    /// providers offer them on trunks.
    pub fn codecs(self) -> &'static [&'static str] {
        &["PCMU", "PCMA"]
    }

    pub fn dtmf(self) -> DtmfMode {
        DtmfMode::Rfc4733
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_range_parses_and_none_is_internal() {
        for p in [TrunkProvider::Twilio, TrunkProvider::Telnyx] {
            assert!(!p.signalling_ranges().is_empty());
            for r in p.signalling_ranges() {
                let net: ipnet::IpNet = r.parse().unwrap_or_else(|_| panic!("{r}"));
                assert_eq!(net, net.trunc(), "{r} is a network address");
                assert!(!crate::outbound::is_internal(net.addr()), "{r}");
            }
        }
        assert!(TrunkProvider::Generic.signalling_ranges().is_empty());
        for n in TrunkProvider::NAMES {
            assert!(TrunkProvider::parse(n).is_some());
        }
    }
}
