//! age encryption of blocks and small secrets.

use std::io::{Read, Write};

use age::x25519::{Identity, Recipient};

/// Encryption failed (only on internal errors of the age library).
#[derive(Debug, thiserror::Error)]
#[error("age encryption failed: {0}")]
pub struct SealError(String);

/// Decryption failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No key we hold opens it.
    #[error("the data is encrypted to a key this customer does not hold")]
    NoMatchingKey,
    /// The ciphertext was altered or is not age data.
    #[error("the encrypted data is damaged or not age data")]
    Malformed,
    /// The plaintext would be larger than the caller allows.
    #[error("the decrypted data is larger than the {0} bytes allowed")]
    TooLarge(usize),
}

/// Encrypts `plaintext` to `recipient`, appending the age ciphertext to `out`.
pub fn seal_into(
    recipient: &Recipient,
    plaintext: &[u8],
    out: &mut impl Write,
) -> Result<(), SealError> {
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
            .map_err(|e| SealError(e.to_string()))?;
    let mut w = encryptor
        .wrap_output(out)
        .map_err(|e| SealError(e.to_string()))?;
    w.write_all(plaintext)
        .map_err(|e| SealError(e.to_string()))?;
    w.finish().map_err(|e| SealError(e.to_string()))?;
    Ok(())
}

/// Decrypts age `ciphertext` with `identity`, refusing plaintexts over `max_len`.
pub fn open(identity: &Identity, ciphertext: &[u8], max_len: usize) -> Result<Vec<u8>, OpenError> {
    let decryptor = age::Decryptor::new_buffered(ciphertext).map_err(|_| OpenError::Malformed)?;
    let reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => OpenError::NoMatchingKey,
            _ => OpenError::Malformed,
        })?;
    let mut out = Vec::with_capacity(ciphertext.len().min(max_len));
    let read = reader
        .take(max_len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| OpenError::Malformed)?;
    if read > max_len {
        return Err(OpenError::TooLarge(max_len));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let id = Identity::generate();
        let mut ct = Vec::new();
        seal_into(&id.to_public(), b"block bytes", &mut ct).unwrap();
        assert_eq!(open(&id, &ct, 100).unwrap(), b"block bytes");
        assert!(matches!(open(&id, &ct, 5), Err(OpenError::TooLarge(5))));
        let last = ct.len() - 1;
        ct[last] ^= 1;
        assert!(matches!(open(&id, &ct, 100), Err(OpenError::Malformed)));
        let other = Identity::generate();
        let mut ct2 = Vec::new();
        seal_into(&id.to_public(), b"x", &mut ct2).unwrap();
        assert!(matches!(
            open(&other, &ct2, 100),
            Err(OpenError::NoMatchingKey)
        ));
    }
}
