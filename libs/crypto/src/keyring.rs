//! The key directory of one customer.
//!
//! | file           | what                               | needed for        |
//! |----------------|------------------------------------|-------------------|
//! | `identity.key` | ed25519 node identity (secret, 0600) | signing: backup   |
//! | `master.pub`   | age recipient of the master key    | backup            |
//! | `master.key`   | age master secret (0600)           | restore only      |
//!
//! `master.key` may be moved offline: backups keep working, restores ask for it.

use std::path::{Path, PathBuf};

use data_encoding::BASE32_NOPAD;
use zeroize::Zeroizing;

use crate::keyfile::{self, KeyFileError};
use crate::{Identity, MasterKey, MasterRecipient};

const IDENTITY_FILE: &str = "identity.key";
const MASTER_SECRET_FILE: &str = "master.key";
const MASTER_PUBLIC_FILE: &str = "master.pub";
const IDENTITY_PREFIX: &str = "BITDUST-IDENTITY-1:";

/// The key directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    /// A key file is missing, malformed, too open or unreadable.
    #[error(transparent)]
    File(#[from] KeyFileError),
    /// The master secret is not in the key directory.
    #[error(
        "the master secret key {0} is not present (kept offline?); put it back, or pass --keys with the directory that holds it, to restore"
    )]
    MasterOffline(PathBuf),
    /// master.key is not the secret of master.pub.
    #[error(
        "master.key and master.pub in {0} do not belong together; put back the pair from your key export"
    )]
    Mismatch(PathBuf),
    /// An export file is not one.
    #[error(
        "{0} is not a BitDust key export (it needs a BITDUST-IDENTITY-1: line and an AGE-SECRET-KEY-1 line); give the file `bitdustctl key export` wrote"
    )]
    NotAnExport(PathBuf),
    /// Importing over other keys.
    #[error(
        "{0} already holds other keys (node {1}); import into an empty directory, or move those keys away first"
    )]
    OtherKeys(PathBuf, String),
    /// The key directory has no keys at all.
    #[error(
        "no keys in {0}; make a backup first (keys are created on first use) or import your exported keys there"
    )]
    NoKeys(PathBuf),
}

/// One customer's keys, loaded from a directory.
pub struct KeyRing {
    dir: PathBuf,
    identity: Identity,
    master_recipient: MasterRecipient,
}

impl KeyRing {
    /// Opens the key directory, creating a new identity and master key when it
    /// holds none. Returns whether keys were created.
    pub fn open_or_create(dir: &Path) -> Result<(KeyRing, bool), KeyRingError> {
        // `master.pub` is written last, so its absence means no backup was
        // ever made with these keys (backing up needs it): an interrupted
        // creation is safely started over.
        if !dir.join(MASTER_PUBLIC_FILE).exists() {
            keyfile::create_key_dir(dir)?;
            let identity = Identity::generate();
            let master = MasterKey::generate();
            keyfile::write_secret(
                &dir.join(MASTER_SECRET_FILE),
                master.to_secret_string().as_bytes(),
            )?;
            keyfile::write_secret(
                &dir.join(IDENTITY_FILE),
                encode_identity(&identity).as_bytes(),
            )?;
            keyfile::write_public(
                &dir.join(MASTER_PUBLIC_FILE),
                format!("{}\n", master.recipient()).as_bytes(),
            )?;
            return Ok((KeyRing::open(dir)?, true));
        }
        Ok((KeyRing::open(dir)?, false))
    }

    /// Opens an existing key directory (the master secret may be absent).
    pub fn open(dir: &Path) -> Result<KeyRing, KeyRingError> {
        if !dir.join(IDENTITY_FILE).exists() && !dir.join(MASTER_PUBLIC_FILE).exists() {
            return Err(KeyRingError::NoKeys(dir.to_owned()));
        }
        let identity_path = dir.join(IDENTITY_FILE);
        let identity = decode_identity(&keyfile::read_secret(&identity_path)?).ok_or(
            KeyFileError::Malformed {
                path: identity_path,
                what: "BitDust identity key",
            },
        )?;
        let pub_path = dir.join(MASTER_PUBLIC_FILE);
        let text = std::fs::read_to_string(&pub_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => KeyFileError::Missing(pub_path.clone()),
            _ => KeyFileError::Io {
                path: pub_path.clone(),
                source: e,
            },
        })?;
        let master_recipient = MasterRecipient::parse(&text).ok_or(KeyFileError::Malformed {
            path: pub_path,
            what: "age recipient (age1…)",
        })?;
        Ok(KeyRing {
            dir: dir.to_owned(),
            identity,
            master_recipient,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node identity (signs blocks and manifests).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The master recipient (all that backing up needs).
    pub fn master_recipient(&self) -> &MasterRecipient {
        &self.master_recipient
    }

    /// Reads the master secret, which may be kept offline.
    pub fn master_key(&self) -> Result<MasterKey, KeyRingError> {
        let path = self.dir.join(MASTER_SECRET_FILE);
        let bytes = match keyfile::read_secret(&path) {
            Ok(b) => b,
            Err(KeyFileError::Missing(p)) => return Err(KeyRingError::MasterOffline(p)),
            Err(e) => return Err(e.into()),
        };
        let text = std::str::from_utf8(&bytes).ok();
        let key = text
            .and_then(MasterKey::parse)
            .ok_or(KeyFileError::Malformed {
                path,
                what: "age secret key (AGE-SECRET-KEY-1…)",
            })?;
        if key.recipient().to_string() != self.master_recipient.to_string() {
            return Err(KeyRingError::Mismatch(self.dir.clone()));
        }
        Ok(key)
    }
}

const EXPORT_HEADER: &str = "# BitDust key export: this customer's identity and master key.\n\
# Anyone holding this file can read and delete this customer's backups.\n\
# Keep it offline; restore on a new machine with `bitdustctl key import FILE`.\n";

impl KeyRing {
    /// The text of a key export: the identity and the master secret, which
    /// is everything a fresh machine needs to find and restore the backups.
    pub fn export(&self) -> Result<Zeroizing<String>, KeyRingError> {
        let master = self.master_key()?;
        let mut out = Zeroizing::new(String::from(EXPORT_HEADER));
        out.push_str(&encode_identity(&self.identity));
        out.push_str(&master.to_secret_string());
        out.push('\n');
        Ok(out)
    }

    /// Writes the keys of export file `file` into `dir` (created 0700, the
    /// secrets 0600). Importing the same keys again is a no-op; importing
    /// over different keys is refused.
    pub fn import(dir: &Path, file: &Path) -> Result<KeyRing, KeyRingError> {
        let bytes = keyfile::read_secret(file)?;
        let text =
            std::str::from_utf8(&bytes).map_err(|_| KeyRingError::NotAnExport(file.to_owned()))?;
        let identity_line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(IDENTITY_PREFIX))
            .ok_or_else(|| KeyRingError::NotAnExport(file.to_owned()))?;
        let identity = decode_identity(identity_line.as_bytes())
            .ok_or_else(|| KeyRingError::NotAnExport(file.to_owned()))?;
        let master = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .and_then(MasterKey::parse)
            .ok_or_else(|| KeyRingError::NotAnExport(file.to_owned()))?;
        if dir.join(IDENTITY_FILE).exists() || dir.join(MASTER_PUBLIC_FILE).exists() {
            let held = KeyRing::open(dir)?;
            if held.identity.node_id() != identity.node_id()
                || held.master_recipient.to_string() != master.recipient().to_string()
            {
                return Err(KeyRingError::OtherKeys(
                    dir.to_owned(),
                    held.identity.node_id().to_string(),
                ));
            }
        }
        keyfile::create_key_dir(dir)?;
        keyfile::write_secret(
            &dir.join(MASTER_SECRET_FILE),
            master.to_secret_string().as_bytes(),
        )?;
        keyfile::write_secret(
            &dir.join(IDENTITY_FILE),
            encode_identity(&identity).as_bytes(),
        )?;
        keyfile::write_public(
            &dir.join(MASTER_PUBLIC_FILE),
            format!("{}\n", master.recipient()).as_bytes(),
        )?;
        KeyRing::open(dir)
    }
}

/// Loads the node identity kept alone in `path` (a supplier or DHT node has
/// no master key), creating a new one (0600, in a 0700 directory) when the
/// file does not exist. Returns whether it was created.
pub fn load_or_create_identity(path: &Path) -> Result<(Identity, bool), KeyFileError> {
    if !path.exists() {
        if let Some(dir) = path.parent() {
            keyfile::create_key_dir(dir)?;
        }
        let identity = Identity::generate();
        keyfile::write_secret(path, encode_identity(&identity).as_bytes())?;
        return Ok((identity, true));
    }
    let identity =
        decode_identity(&keyfile::read_secret(path)?).ok_or(KeyFileError::Malformed {
            path: path.to_owned(),
            what: "BitDust identity key",
        })?;
    Ok((identity, false))
}

fn encode_identity(identity: &Identity) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "{IDENTITY_PREFIX}{}\n",
        BASE32_NOPAD.encode(identity.secret().as_ref())
    ))
}

fn decode_identity(bytes: &[u8]) -> Option<Identity> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let b32 = text.strip_prefix(IDENTITY_PREFIX)?;
    let secret = Zeroizing::new(BASE32_NOPAD.decode(b32.as_bytes()).ok()?);
    let secret: [u8; 32] = secret.as_slice().try_into().ok()?;
    Some(Identity::from_secret(&secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_export_imports_into_an_empty_directory_and_not_over_other_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let (ring, _) = KeyRing::open_or_create(&tmp.path().join("a")).unwrap();
        let file = tmp.path().join("export.txt");
        keyfile::write_secret(&file, ring.export().unwrap().as_bytes()).unwrap();
        let b = KeyRing::import(&tmp.path().join("b"), &file).unwrap();
        assert_eq!(b.identity().node_id(), ring.identity().node_id());
        assert_eq!(
            b.master_key().unwrap().recipient().to_string(),
            ring.master_recipient().to_string()
        );
        let mode = std::fs::metadata(tmp.path().join("b/master.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        // Again: the same keys, fine.
        KeyRing::import(&tmp.path().join("b"), &file).unwrap();
        // Over other keys: refused.
        let (_, _) = KeyRing::open_or_create(&tmp.path().join("c")).unwrap();
        let e = KeyRing::import(&tmp.path().join("c"), &file).err().unwrap();
        assert!(e.to_string().contains("already holds other keys"), "{e}");
        // Not an export.
        let junk = tmp.path().join("junk");
        keyfile::write_secret(&junk, b"hello\n").unwrap();
        let e = KeyRing::import(&tmp.path().join("d"), &junk).err().unwrap();
        assert!(e.to_string().contains("is not a BitDust key export"), "{e}");
        // A world-readable export is refused like any key file.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(KeyRing::import(&tmp.path().join("e"), &file).is_err());
    }

    #[test]
    fn created_once_then_reopened_and_master_can_go_offline() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let (ring, created) = KeyRing::open_or_create(&dir).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let (again, created) = KeyRing::open_or_create(&dir).unwrap();
        assert!(!created);
        assert_eq!(ring.identity().node_id(), again.identity().node_id());
        assert_eq!(
            ring.master_key().unwrap().recipient().to_string(),
            again.master_recipient().to_string()
        );
        std::fs::rename(dir.join("master.key"), tmp.path().join("offline.key")).unwrap();
        let ring = KeyRing::open(&dir).unwrap();
        assert!(matches!(
            ring.master_key(),
            Err(KeyRingError::MasterOffline(_))
        ));

        // A master.key that is not master.pub's secret is named as such.
        let other = MasterKey::generate();
        keyfile::write_secret(&dir.join("master.key"), other.to_secret_string().as_bytes())
            .unwrap();
        assert!(matches!(ring.master_key(), Err(KeyRingError::Mismatch(_))));
    }

    #[test]
    fn a_lone_identity_is_created_once() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state/identity.key");
        let (a, created) = load_or_create_identity(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, created) = load_or_create_identity(&path).unwrap();
        assert!(!created);
        assert_eq!(a.node_id(), b.node_id());
        std::fs::write(&path, "garbage").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_or_create_identity(&path).is_err());
    }

    #[test]
    fn an_interrupted_creation_is_started_over() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let (ring, _) = KeyRing::open_or_create(&dir).unwrap();
        std::fs::remove_file(dir.join("master.pub")).unwrap();
        std::fs::remove_file(dir.join("identity.key")).unwrap();
        let (again, created) = KeyRing::open_or_create(&dir).unwrap();
        assert!(created);
        assert_ne!(ring.identity().node_id(), again.identity().node_id());
        again.master_key().unwrap();
    }
}
