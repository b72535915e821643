//! License keys: `LG-XXXXX-XXXXX-XXXXX-XXXXX-XXXXX`, what a vendor hands a customer
//! to activate an installation.
//!
//! 24 random Crockford base32 characters (120 bits) and one check character (a
//! weighted sum in GF(32)), in five groups of five after the `LG` prefix. Read as people type them:
//! case-insensitive, `O` as `0`, `I` and `L` as `1`, hyphens and spaces anywhere
//! ignored; a typo (one character changed, or two neighbours swapped) fails the check
//! before any round trip to the authority. The authority stores only the key's hash
//! ([`LicenseKey::hash`]); the key itself is shown once, when it is made.

use std::fmt;

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

/// Crockford's base32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Random characters in a key.
pub const RANDOM_CHARS: usize = 24;
const PREFIX: &str = "LG";

/// A well-formed license key (its check character verified).
#[derive(Clone, PartialEq, Eq)]
pub struct LicenseKey {
    /// The 25 characters' values (0–31), the check last.
    digits: [u8; RANDOM_CHARS + 1],
}

/// Why a text is not a license key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a license key looks like LG-XXXXX-XXXXX-XXXXX-XXXXX-XXXXX")]
    Format,
    /// Well-formed, but the check character does not match (a typo): the
    /// contract's `KEY_CHECK_FAILED`.
    #[error("the license key has a typo: its check character does not match; copy it again")]
    Check,
}

impl LicenseKey {
    /// A new random key. Fails only when the system's random source does.
    pub fn generate() -> Result<LicenseKey, ring::error::Unspecified> {
        let mut random = [0u8; RANDOM_CHARS];
        SystemRandom::new().fill(&mut random)?;
        let mut digits = [0u8; RANDOM_CHARS + 1];
        for (d, r) in digits.iter_mut().zip(random) {
            *d = r & 31;
        }
        digits[RANDOM_CHARS] = check_digit(&digits[..RANDOM_CHARS]);
        Ok(LicenseKey { digits })
    }

    /// Reads a key as a person typed or pasted it.
    pub fn parse(text: &str) -> Result<LicenseKey, KeyError> {
        if text.len() > 128 {
            return Err(KeyError::Format);
        }
        let mut chars = text
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != ' ')
            .map(|c| c.to_ascii_uppercase());
        if chars.next() != Some('L') || chars.next() != Some('G') {
            return Err(KeyError::Format);
        }
        let mut digits = [0u8; RANDOM_CHARS + 1];
        let mut n = 0;
        for c in chars {
            let value = decode(c).ok_or(KeyError::Format)?;
            *digits.get_mut(n).ok_or(KeyError::Format)? = value;
            n += 1;
        }
        if n != digits.len() {
            return Err(KeyError::Format);
        }
        if check_digit(&digits[..RANDOM_CHARS]) != digits[RANDOM_CHARS] {
            return Err(KeyError::Check);
        }
        Ok(LicenseKey { digits })
    }

    /// What the authority stores: the SHA-256 of the canonical form, in hex.
    pub fn hash(&self) -> String {
        let text = self.to_string();
        digest(&SHA256, text.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The key with all but its last group hidden (`LG-*****-…-XXXXX`), for lists
    /// and logs.
    pub fn redacted(&self) -> String {
        let text = self.to_string();
        format!("LG-*****-*****-*****-*****-{}", &text[text.len() - 5..])
    }
}

impl fmt::Display for LicenseKey {
    /// The canonical form, `LG-` and five groups of five upper-case characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PREFIX)?;
        for (i, d) in self.digits.iter().enumerate() {
            if i % 5 == 0 {
                f.write_str("-")?;
            }
            write!(f, "{}", ALPHABET[usize::from(*d)] as char)?;
        }
        Ok(())
    }
}

impl fmt::Debug for LicenseKey {
    /// Never the whole key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LicenseKey({})", self.redacted())
    }
}

/// The value of a typed character, with Crockford's readings of look-alikes.
fn decode(c: char) -> Option<u8> {
    let c = match c {
        'O' => '0',
        'I' | 'L' => '1',
        c => c,
    };
    ALPHABET
        .iter()
        .position(|&a| a as char == c)
        .map(|p| p as u8)
}

/// The check character of `digits`: `c = Σ αⁱ⁺¹·dᵢ` in GF(32) (α a root of the
/// primitive x⁵ + x² + 1), so that the whole key sums to 0 with the check weighted 1.
/// Every weight differs and none is 0, so every single changed character and every
/// swap of two different neighbours changes the sum.
fn check_digit(digits: &[u8]) -> u8 {
    let mut sum = 0u8;
    let mut weight = 1u8;
    for &d in digits {
        weight = gf32_mul(weight, 2);
        sum ^= gf32_mul(weight, d);
    }
    sum
}

/// Multiplication in GF(32) = GF(2)[x] / (x⁵ + x² + 1).
fn gf32_mul(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            product ^= a;
        }
        b >>= 1;
        a <<= 1;
        if a & 0x20 != 0 {
            a ^= 0x25;
        }
    }
    product
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_read_back_and_look_as_promised() {
        let key = LicenseKey::generate().unwrap();
        let text = key.to_string();
        assert_eq!(text.len(), 2 + 5 * 6);
        assert!(text.starts_with("LG-"));
        assert_eq!(text.matches('-').count(), 5);
        assert_eq!(LicenseKey::parse(&text), Ok(key.clone()));
        // As people type it: lower case, no hyphens, O and I for 0 and 1, spaces.
        let typed = text
            .to_lowercase()
            .replace('-', " ")
            .replace('0', "o")
            .replace('1', "i");
        assert_eq!(LicenseKey::parse(&typed), Ok(key.clone()));
        assert_eq!(key.hash().len(), 64);
        assert_ne!(key.hash(), LicenseKey::generate().unwrap().hash());
        assert_eq!(
            format!("{key:?}"),
            format!("LicenseKey({})", key.redacted())
        );
        assert_eq!(
            key.redacted(),
            format!("LG-*****-*****-*****-*****-{}", &text[27..])
        );
    }

    #[test]
    fn every_single_typo_and_neighbour_swap_fails_the_check() {
        for _ in 0..50 {
            let key = LicenseKey::generate().unwrap();
            let text: Vec<u8> = key.to_string().into_bytes();
            let positions: Vec<usize> = (3..text.len()).filter(|&i| text[i] != b'-').collect();
            for &i in &positions {
                for &c in ALPHABET {
                    if c == text[i] {
                        continue;
                    }
                    let mut typo = text.clone();
                    typo[i] = c;
                    let typo = String::from_utf8(typo).unwrap();
                    assert_eq!(LicenseKey::parse(&typo), Err(KeyError::Check), "{typo}");
                }
            }
            for pair in positions.windows(2) {
                let (i, j) = (pair[0], pair[1]);
                if text[i] == text[j] {
                    continue;
                }
                let mut swapped = text.clone();
                swapped.swap(i, j);
                let swapped = String::from_utf8(swapped).unwrap();
                assert_eq!(
                    LicenseKey::parse(&swapped),
                    Err(KeyError::Check),
                    "{swapped}"
                );
            }
        }
    }

    #[test]
    fn what_is_not_a_key_says_so() {
        let key = LicenseKey::generate().unwrap().to_string();
        for bad in [
            "",
            "LG",
            &key[..key.len() - 1],
            &format!("{key}X"),
            &key.replacen("LG", "LX", 1),
            &key.replacen('-', "_", 1),
            "LG-'; DROP TABLE licenses; --",
            "LG-UUUUU-UUUUU-UUUUU-UUUUU-UUUUU",
            &"LG-".repeat(100),
        ] {
            assert_eq!(LicenseKey::parse(bad), Err(KeyError::Format), "{bad}");
        }
    }
}
