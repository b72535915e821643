//! Seats at the HTTP layer: a person is recognized by a session cookie, a verified
//! bearer token's claim or a trusted proxy's header, and only a keyed hash of that
//! value is kept ([`SeatId`], HMAC-SHA256 with a per-installation secret, truncated to
//! 128 bits), never the value itself. The [`book`] counts each licensed tenant's seats
//! against [`limits`].

pub mod book;
pub mod limits;

use std::fmt::Write as _;

/// The keyed hash of one identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeatId(pub [u8; 16]);

impl SeatId {
    /// Hex digits of the id shown by the admin API.
    pub const SHOWN_HEX: usize = 12;

    /// The id of `identity` under `secret`.
    pub fn of(secret: &SeatSecret, identity: &[u8]) -> SeatId {
        let tag = ring::hmac::sign(&secret.0, identity);
        let mut id = [0u8; 16];
        id.copy_from_slice(&tag.as_ref()[..16]);
        SeatId(id)
    }

    /// The id in lower-case hex.
    pub fn hex(&self) -> String {
        let mut text = String::with_capacity(32);
        for b in self.0 {
            let _ = write!(text, "{b:02x}");
        }
        text
    }
}

/// The per-installation key of the identity hashes.
pub struct SeatSecret(ring::hmac::Key);

impl std::fmt::Debug for SeatSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeatSecret(..)")
    }
}

impl SeatSecret {
    /// The key of `bytes` (32 random bytes kept by the installation).
    pub fn new(bytes: &[u8]) -> SeatSecret {
        SeatSecret(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_the_secret_and_never_show_the_value() {
        let a = SeatSecret::new(&[1; 32]);
        let b = SeatSecret::new(&[2; 32]);
        let value = b"sessionid-value-123";
        assert_eq!(SeatId::of(&a, value), SeatId::of(&a, value));
        assert_ne!(SeatId::of(&a, value), SeatId::of(&b, value));
        let hex = SeatId::of(&a, value).hex();
        assert_eq!(hex.len(), 32);
        assert!(!hex.contains("123"));
    }
}
