//! SRTP and SRTCP (RFC 3711) with keys exchanged in SDP (SDES, RFC 4568),
//! suite AES_CM_128_HMAC_SHA1_80, sans-IO: packets in, packets out. The
//! ciphers are the `webrtc-srtp` crate's; this module owns the keys (never
//! printed: `Debug` shows `***`) and screens what a peer sends before the
//! crate sees it, because its RTP header parser panics on malformed
//! header extensions and it passes SRTCP with the E bit clear through
//! unauthenticated.

use bytes::Bytes;
use rand::RngCore;
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

use super::receiver::RtpView;

/// AES_CM_128_HMAC_SHA1_80: a 128-bit master key and a 112-bit salt.
pub const KEY_LEN: usize = 16;
pub const SALT_LEN: usize = 14;
/// The SDES suite name (RFC 4568 §6.2.1).
pub const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";
/// SRTP's 80-bit authentication tag.
const RTP_TAG: usize = 10;
/// SRTCP: the E flag and 31-bit index, then the 80-bit tag.
const RTCP_TRAILER: usize = 4 + 10;
/// RTCP's fixed header and sender SSRC.
const RTCP_HEAD: usize = 8;

/// One side's master key and salt. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKey {
    key: [u8; KEY_LEN],
    salt: [u8; SALT_LEN],
}

impl std::fmt::Debug for SrtpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SrtpKey(***)")
    }
}

impl SrtpKey {
    /// A fresh random key and salt (the OS's CSPRNG through `rand`).
    pub fn random() -> SrtpKey {
        let mut k = SrtpKey {
            key: [0; KEY_LEN],
            salt: [0; SALT_LEN],
        };
        let mut rng = rand::rngs::OsRng;
        rng.fill_bytes(&mut k.key);
        rng.fill_bytes(&mut k.salt);
        k
    }

    /// Key then salt, 30 bytes: the SDES `inline:` key material.
    pub fn from_material(material: &[u8]) -> Option<SrtpKey> {
        if material.len() != KEY_LEN + SALT_LEN {
            return None;
        }
        let mut k = SrtpKey {
            key: [0; KEY_LEN],
            salt: [0; SALT_LEN],
        };
        k.key.copy_from_slice(&material[..KEY_LEN]);
        k.salt.copy_from_slice(&material[KEY_LEN..]);
        Some(k)
    }

    pub fn material(&self) -> [u8; KEY_LEN + SALT_LEN] {
        let mut out = [0u8; KEY_LEN + SALT_LEN];
        out[..KEY_LEN].copy_from_slice(&self.key);
        out[KEY_LEN..].copy_from_slice(&self.salt);
        out
    }

    fn context(&self) -> Result<Context, SrtpError> {
        Context::new(
            &self.key,
            &self.salt,
            ProtectionProfile::Aes128CmHmacSha1_80,
            None,
            None,
        )
        .map_err(|e| SrtpError::Setup(e.to_string()))
    }
}

/// The keys of one call: ours protect what we send, the peer's what it
/// sends us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub local: SrtpKey,
    pub remote: SrtpKey,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("SRTP context: {0}")]
    Setup(String),
    #[error("SRTP packet malformed")]
    Malformed,
    #[error("SRTP authentication failed or replayed: {0}")]
    Unprotect(String),
    #[error("SRTP protect: {0}")]
    Protect(String),
}

/// Both directions of a call's SRTP, with replay protection on receive.
pub struct SrtpSession {
    outbound: Context,
    inbound: Context,
}

impl std::fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SrtpSession(***)")
    }
}

impl SrtpSession {
    pub fn new(keys: &SrtpKeys) -> Result<SrtpSession, SrtpError> {
        let outbound = keys.local.context()?;
        let inbound = Context::new(
            &keys.remote.key,
            &keys.remote.salt,
            ProtectionProfile::Aes128CmHmacSha1_80,
            Some(webrtc_srtp::option::srtp_replay_protection(64)),
            Some(webrtc_srtp::option::srtcp_replay_protection(64)),
        )
        .map_err(|e| SrtpError::Setup(e.to_string()))?;
        Ok(SrtpSession { outbound, inbound })
    }

    /// Encrypts and authenticates one RTP packet we built (no extensions).
    pub fn protect_rtp(&mut self, packet: &[u8]) -> Result<Bytes, SrtpError> {
        if RtpView::parse(packet).is_none() {
            return Err(SrtpError::Malformed);
        }
        self.outbound
            .encrypt_rtp(packet)
            .map_err(|e| SrtpError::Protect(e.to_string()))
    }

    /// Checks and decrypts one SRTP packet from the peer: the plain RTP
    /// packet, or an error for anything forged, replayed or malformed.
    pub fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<Bytes, SrtpError> {
        let header = screened_header(packet).ok_or(SrtpError::Malformed)?;
        self.inbound
            .decrypt_rtp_with_header(packet, &header)
            .map_err(|e| SrtpError::Unprotect(e.to_string()))
    }

    pub fn protect_rtcp(&mut self, packet: &[u8]) -> Result<Bytes, SrtpError> {
        if packet.len() < RTCP_HEAD {
            return Err(SrtpError::Malformed);
        }
        self.outbound
            .encrypt_rtcp(packet)
            .map_err(|e| SrtpError::Protect(e.to_string()))
    }

    /// Checks and decrypts one SRTCP packet. Only encrypted SRTCP (E set)
    /// is taken: the crate returns an E-clear packet without checking its
    /// tag, which would let anyone inject RTCP (a BYE).
    pub fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<Bytes, SrtpError> {
        if packet.len() < RTCP_HEAD + RTCP_TRAILER || packet[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let e_flag = packet[packet.len() - RTCP_TRAILER] >> 7;
        if e_flag != 1 {
            return Err(SrtpError::Malformed);
        }
        self.inbound
            .decrypt_rtcp(packet)
            .map_err(|e| SrtpError::Unprotect(e.to_string()))
    }
}

/// The RTP header of `packet` as the SRTP cipher needs it (where the
/// payload starts, SSRC, sequence number), built by our own bounded parser.
/// A header extension is carried as one opaque block of its true length,
/// so the `rtp` crate never parses (and panics on) its elements.
fn screened_header(packet: &[u8]) -> Option<rtp::header::Header> {
    let view = RtpView::parse(packet)?;
    let csrc_count = (packet[0] & 0x0F) as usize;
    let mut off = 12 + 4 * csrc_count;
    let csrc = (0..csrc_count)
        .map(|i| {
            let b = &packet[12 + 4 * i..16 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        })
        .collect();
    let extension = packet[0] & 0x10 != 0;
    let mut extensions = Vec::new();
    if extension {
        let words = packet.get(off + 2..off + 4)?;
        let len = 4 * u16::from_be_bytes([words[0], words[1]]) as usize;
        off += 4;
        packet.get(off..off + len)?;
        extensions.push(rtp::header::Extension {
            id: 0,
            payload: Bytes::from(vec![0u8; len]),
        });
        off += len;
    }
    if packet.len() < off + RTP_TAG {
        return None;
    }
    Some(rtp::header::Header {
        version: 2,
        padding: false,
        extension,
        marker: view.marker,
        payload_type: view.payload_type,
        sequence_number: view.seq,
        timestamp: view.timestamp,
        ssrc: view.ssrc,
        csrc,
        // Any profile but RFC 8285's: the block's length is its payload's.
        extension_profile: 0,
        extensions,
        extensions_padding: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn pair() -> (SrtpSession, SrtpSession) {
        let (a, b) = (SrtpKey::random(), SrtpKey::random());
        let ours = SrtpSession::new(&SrtpKeys {
            local: a.clone(),
            remote: b.clone(),
        })
        .unwrap();
        let theirs = SrtpSession::new(&SrtpKeys {
            local: b,
            remote: a,
        })
        .unwrap();
        (ours, theirs)
    }

    #[test]
    fn packets_round_trip_and_payloads_are_hidden() {
        let (mut ours, mut theirs) = pair();
        for seq in 0..50u16 {
            let plain = rtp(seq, &[0x55; 160]);
            let sealed = ours.protect_rtp(&plain).unwrap();
            assert_eq!(sealed.len(), plain.len() + RTP_TAG);
            assert_ne!(&sealed[12..172], &plain[12..172], "payload encrypted");
            assert_eq!(&theirs.unprotect_rtp(&sealed).unwrap()[..], &plain[..]);
        }
        let report = [
            0x80u8, 201, 0, 1, 0x12, 0x34, 0x56, 0x78, // RR, no report blocks
        ];
        let sealed = ours.protect_rtcp(&report).unwrap();
        assert_eq!(&theirs.unprotect_rtcp(&sealed).unwrap()[..], &report[..]);
    }

    #[test]
    fn forged_replayed_or_broken_packets_are_refused_without_panic() {
        let (mut ours, mut theirs) = pair();
        let sealed = ours.protect_rtp(&rtp(7, &[1; 160])).unwrap();
        let mut forged = sealed.to_vec();
        forged[20] ^= 1;
        assert!(theirs.unprotect_rtp(&forged).is_err(), "tag checked");
        assert!(theirs.unprotect_rtp(&sealed).is_ok());
        assert!(theirs.unprotect_rtp(&sealed).is_err(), "replay refused");
        // A stranger with another key.
        let (mut stranger, _) = pair();
        let alien = stranger.protect_rtp(&rtp(8, &[1; 160])).unwrap();
        assert!(theirs.unprotect_rtp(&alien).is_err());
        // Header extensions whose elements overrun the block: the `rtp`
        // crate's parser panics on these; we never hand them to it.
        let mut ext = vec![0x90, 0x00, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2];
        ext.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x1F, 0xFF, 0xFF, 0xFF]);
        ext.extend_from_slice(&[0; 30]);
        assert!(theirs.unprotect_rtp(&ext).is_err());
        let mut rng = 0x9e37_79b9u32;
        for len in 0..120 {
            let p: Vec<u8> = (0..len)
                .map(|i| {
                    rng ^= rng << 13;
                    rng ^= rng >> 17;
                    rng ^= rng << 5;
                    if i == 0 {
                        0x80 | (rng as u8 & 0x1F)
                    } else {
                        rng as u8
                    }
                })
                .collect();
            let _ = theirs.unprotect_rtp(&p);
            let _ = theirs.unprotect_rtcp(&p);
        }
        // SRTCP with the E bit clear is not taken unauthenticated.
        let mut clear = vec![0x81u8, 203, 0, 1, 0x12, 0x34, 0x56, 0x78];
        clear.extend_from_slice(&[0, 0, 0, 1]);
        clear.extend_from_slice(&[0; 10]);
        assert!(theirs.unprotect_rtcp(&clear).is_err());
    }

    #[test]
    fn keys_are_never_printed() {
        let k = SrtpKey::random();
        assert_eq!(format!("{k:?}"), "SrtpKey(***)");
        let keys = SrtpKeys {
            local: k.clone(),
            remote: k.clone(),
        };
        assert!(!format!("{keys:?}").contains(&format!("{:?}", k.material())));
        assert_eq!(SrtpKey::from_material(&k.material()), Some(k));
        assert_eq!(SrtpKey::from_material(&[0; 29]), None);
    }
}
