//! Batch verification of Ed25519 signatures made with one key: a store of 100,000
//! licenses from one vendor key verifies in a fifth of the time of one signature at
//! a time.
//!
//! For signatures `(R_i, s_i)` on messages `M_i` under key `A`, with `k_i =
//! SHA-512(R_i ‖ A ‖ M_i)` and independent random 128-bit `z_i`, every signature
//! verifies (cofactored: `[8](s_i·B − R_i − k_i·A) = 0`) exactly when, but for a
//! chance of 2⁻¹²⁸ at most,
//!
//! ```text
//! [8]( −(Σ z_i·s_i)·B + Σ z_i·R_i + (Σ z_i·k_i)·A ) = 0
//! ```
//!
//! which is one multiscalar multiplication of n + 2 points (the terms of `A` add up,
//! since every signature has the same key). The `z_i` come from the system's
//! random generator, so no one who chooses the signatures can make errors cancel.
//! A batch that fails says nothing about which signature is bad: callers verify its
//! members one by one. Only the holder of the private key can make a signature that
//! this cofactored check accepts and the cofactorless one-by-one check refuses.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity as _, VartimeMultiscalarMul as _};
use ring::rand::SecureRandom as _;

/// An Ed25519 public key ready for batch verification.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Ed25519Key {
    bytes: [u8; 32],
    point: EdwardsPoint,
}

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ed25519Key")
    }
}

/// The DER of an Ed25519 `SubjectPublicKeyInfo`, up to the 32 key bytes.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

impl Ed25519Key {
    /// The key of an Ed25519 `SubjectPublicKeyInfo` (DER); `None` when `der` is not
    /// one, or its point is not on the curve or has small order.
    pub(crate) fn from_spki_der(der: &[u8]) -> Option<Ed25519Key> {
        let bytes: [u8; 32] = der.strip_prefix(&SPKI_PREFIX)?.try_into().ok()?;
        let point = CompressedEdwardsY(bytes).decompress()?;
        if point.is_small_order() {
            return None;
        }
        Some(Ed25519Key { bytes, point })
    }
}

/// One signature to verify: the signed message and the 64 signature bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Signed<'a> {
    pub(crate) message: &'a [u8],
    pub(crate) signature: &'a [u8; 64],
}

/// Whether every signature of `batch` verifies under `key` (see the module
/// documentation). An empty batch verifies; a non-canonical `s` or an `R` off the
/// curve fails the batch.
pub(crate) fn verify_batch(key: &Ed25519Key, batch: &[Signed<'_>]) -> bool {
    if batch.is_empty() {
        return true;
    }
    let mut random = vec![0u8; 16 * batch.len()];
    if ring::rand::SystemRandom::new().fill(&mut random).is_err() {
        return false;
    }
    let mut scalars: Vec<Scalar> = Vec::with_capacity(batch.len() + 2);
    let mut points: Vec<Option<EdwardsPoint>> = Vec::with_capacity(batch.len() + 2);
    let (mut b_coefficient, mut a_coefficient) = (Scalar::ZERO, Scalar::ZERO);
    for (item, z) in batch.iter().zip(random.chunks_exact(16)) {
        let (r, s) = item.signature.split_at(32);
        let Ok(s) = <[u8; 32]>::try_from(s) else {
            return false;
        };
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else {
            return false;
        };
        let mut hash = ring::digest::Context::new(&ring::digest::SHA512);
        hash.update(r);
        hash.update(&key.bytes);
        hash.update(item.message);
        let Ok(wide) = <[u8; 64]>::try_from(hash.finish().as_ref()) else {
            return false;
        };
        let k = Scalar::from_bytes_mod_order_wide(&wide);
        let mut z_bytes = [0u8; 32];
        z_bytes[..16].copy_from_slice(z);
        let z = Scalar::from_bytes_mod_order(z_bytes);
        b_coefficient += z * s;
        a_coefficient += z * k;
        let Ok(r) = <[u8; 32]>::try_from(r) else {
            return false;
        };
        scalars.push(z);
        points.push(CompressedEdwardsY(r).decompress());
    }
    scalars.push(-b_coefficient);
    points.push(Some(ED25519_BASEPOINT_POINT));
    scalars.push(a_coefficient);
    points.push(Some(key.point));
    EdwardsPoint::optional_multiscalar_mul(scalars, points)
        .is_some_and(|sum| sum.mul_by_cofactor().is_identity())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair as _};

    fn pair() -> (Ed25519KeyPair, Ed25519Key) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let der = [&SPKI_PREFIX[..], pair.public_key().as_ref()].concat();
        let key = Ed25519Key::from_spki_der(&der).expect("an Ed25519 SPKI");
        (pair, key)
    }

    fn signed(pair: &Ed25519KeyPair, n: usize) -> Vec<(Vec<u8>, [u8; 64])> {
        (0..n)
            .map(|i| {
                let message = format!("license {i}").into_bytes();
                let signature: [u8; 64] = pair.sign(&message).as_ref().try_into().unwrap();
                (message, signature)
            })
            .collect()
    }

    fn batch(items: &[(Vec<u8>, [u8; 64])]) -> Vec<Signed<'_>> {
        items
            .iter()
            .map(|(message, signature)| Signed { message, signature })
            .collect()
    }

    #[test]
    fn good_signatures_verify_and_any_change_fails_the_batch() {
        let (signer, key) = pair();
        let mut items = signed(&signer, 40);
        assert!(verify_batch(&key, &batch(&items)));
        assert!(verify_batch(&key, &[]));
        // A changed message, R, s, or a non-canonical s: the batch fails.
        for change in 0..4 {
            let mut bad = items.clone();
            match change {
                0 => bad[7].0.push(b'!'),
                1 => bad[7].1[3] ^= 1,
                2 => bad[7].1[40] ^= 1,
                _ => bad[7].1[63] |= 0xf0,
            }
            assert!(!verify_batch(&key, &batch(&bad)), "change {change}");
        }
        // Another key's signature in the batch.
        let (other, _) = pair();
        items.extend(signed(&other, 1));
        assert!(!verify_batch(&key, &batch(&items)));
    }

    #[test]
    fn the_batch_agrees_with_one_by_one_verification() {
        let (signer, key) = pair();
        let items = signed(&signer, 5);
        let spki = [&SPKI_PREFIX[..], signer.public_key().as_ref()].concat();
        let public =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &spki[12..]);
        for (message, signature) in &items {
            assert!(public.verify(message, signature).is_ok());
            assert!(verify_batch(&key, &[Signed { message, signature }]));
        }
        assert!(Ed25519Key::from_spki_der(&spki[1..]).is_none());
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = [&SPKI_PREFIX[..], &identity].concat();
        assert!(
            Ed25519Key::from_spki_der(&weak).is_none(),
            "a small-order key is refused"
        );
    }
}
