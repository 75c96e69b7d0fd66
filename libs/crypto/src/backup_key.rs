//! The customer's master key and the per-backup keys wrapped to it.

use std::fmt;
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::seal::{OpenError, SealError, open, seal_into};

/// The customer's secret master key (an age X25519 identity). Needed only to
/// restore: backups are made with the [`MasterRecipient`] alone.
pub struct MasterKey(age::x25519::Identity);

/// The public half of the master key.
#[derive(Clone)]
pub struct MasterRecipient(age::x25519::Recipient);

/// A per-backup key (an age X25519 identity). Blocks of one backup are
/// encrypted to its recipient; its secret travels wrapped to the master.
#[derive(Clone)]
pub struct BackupKey(age::x25519::Identity);

impl MasterKey {
    /// A new random master key.
    pub fn generate() -> Self {
        MasterKey(age::x25519::Identity::generate())
    }

    /// The public recipient.
    pub fn recipient(&self) -> MasterRecipient {
        MasterRecipient(self.0.to_public())
    }

    /// The age secret key text (`AGE-SECRET-KEY-1…`).
    pub fn to_secret_string(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.to_string().expose_secret().to_owned())
    }

    /// Parses the age secret key text.
    pub fn parse(text: &str) -> Option<Self> {
        age::x25519::Identity::from_str(text.trim())
            .ok()
            .map(MasterKey)
    }

    /// The underlying age identity.
    pub fn age_identity(&self) -> &age::x25519::Identity {
        &self.0
    }
}

impl MasterRecipient {
    /// Parses an age recipient (`age1…`).
    pub fn parse(text: &str) -> Option<Self> {
        age::x25519::Recipient::from_str(text.trim())
            .ok()
            .map(MasterRecipient)
    }

    /// The underlying age recipient.
    pub fn age_recipient(&self) -> &age::x25519::Recipient {
        &self.0
    }
}

impl fmt::Display for MasterRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl BackupKey {
    /// A new random backup key.
    pub fn generate() -> Self {
        BackupKey(age::x25519::Identity::generate())
    }

    /// The recipient blocks are encrypted to (public, stored in the manifest).
    pub fn recipient(&self) -> age::x25519::Recipient {
        self.0.to_public()
    }

    /// The age identity that decrypts this backup's blocks.
    pub fn age_identity(&self) -> &age::x25519::Identity {
        &self.0
    }

    /// The secret as age text, e.g. to hand this one backup to another user.
    pub fn to_secret_string(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.to_string().expose_secret().to_owned())
    }

    /// Parses the age secret key text.
    pub fn parse(text: &str) -> Option<Self> {
        age::x25519::Identity::from_str(text.trim())
            .ok()
            .map(BackupKey)
    }

    /// The secret encrypted to `to` (the master recipient, or a recipient the
    /// backup is shared with).
    pub fn wrap(&self, to: &age::x25519::Recipient) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::new();
        seal_into(to, self.to_secret_string().as_bytes(), &mut out)?;
        Ok(out)
    }

    /// Unwraps a key made by [`BackupKey::wrap`].
    pub fn unwrap_with(
        wrapped: &[u8],
        identity: &age::x25519::Identity,
    ) -> Result<Self, OpenError> {
        let text = Zeroizing::new(open(identity, wrapped, 1024)?);
        let text = std::str::from_utf8(&text).map_err(|_| OpenError::Malformed)?;
        BackupKey::parse(text).ok_or(OpenError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_keys_unwrap_only_with_the_master() {
        let master = MasterKey::generate();
        let other = MasterKey::generate();
        let bk = BackupKey::generate();
        let wrapped = bk.wrap(master.recipient().age_recipient()).unwrap();
        let back = BackupKey::unwrap_with(&wrapped, master.age_identity()).unwrap();
        assert_eq!(back.recipient().to_string(), bk.recipient().to_string());
        assert!(BackupKey::unwrap_with(&wrapped, other.age_identity()).is_err());
    }
}
