//! Speech as a capture SIPp replays into a call (`play_pcap_audio`).

#![allow(dead_code)]

use std::path::Path;

/// PCMU at 8 kHz, 20 ms a packet.
const PACKET: usize = 160;

/// `pcm` (8 kHz) as a capture of RTP/UDP/IPv4 over Ethernet, PCMU packets
/// every 20 ms: what SIPp's `play_pcap_audio` replays into the call.
pub fn write_pcmu(path: &Path, pcm: &[i16]) {
    let mut out = Vec::new();
    // Global header: magic, v2.4, GMT offset, accuracy, snaplen, Ethernet.
    out.extend(0xa1b2_c3d4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend(0i32.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    out.extend(65_535u32.to_le_bytes());
    out.extend(1u32.to_le_bytes());
    let ssrc = 0x5157_4d44u32;
    for (k, chunk) in pcm.chunks(PACKET).enumerate() {
        let mut payload = Vec::with_capacity(PACKET);
        switchboard::media::g711::encode_ulaw(chunk, &mut payload);
        payload.resize(PACKET, 0xff);
        let mut rtp = vec![0x80, if k == 0 { 0x80 } else { 0x00 }];
        rtp.extend((k as u16).to_be_bytes());
        rtp.extend(((k * PACKET) as u32).to_be_bytes());
        rtp.extend(ssrc.to_be_bytes());
        rtp.extend(&payload);
        let udp_len = 8 + rtp.len();
        let mut udp = Vec::with_capacity(udp_len);
        udp.extend(6000u16.to_be_bytes());
        udp.extend(6002u16.to_be_bytes());
        udp.extend((udp_len as u16).to_be_bytes());
        udp.extend(0u16.to_be_bytes()); // no checksum (allowed over IPv4)
        udp.extend(&rtp);
        let ip_len = 20 + udp.len();
        let mut ip = vec![0x45, 0];
        ip.extend((ip_len as u16).to_be_bytes());
        ip.extend((k as u16).to_be_bytes());
        ip.extend([0x40, 0, 64, 17, 0, 0]);
        ip.extend([127, 0, 0, 1, 127, 0, 0, 1]);
        let sum = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip.extend(&udp);
        let mut frame = vec![0u8; 12];
        frame.extend([0x08, 0x00]);
        frame.extend(&ip);
        let t_us = (k as u64) * 20_000;
        out.extend(((t_us / 1_000_000) as u32).to_le_bytes());
        out.extend(((t_us % 1_000_000) as u32).to_le_bytes());
        out.extend((frame.len() as u32).to_le_bytes());
        out.extend((frame.len() as u32).to_le_bytes());
        out.extend(&frame);
    }
    std::fs::write(path, out).expect("write pcap");
}
