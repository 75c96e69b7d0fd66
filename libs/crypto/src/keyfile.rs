//! Secret key files: created 0600 (atomically, fsynced), and refused on
//! reading when group or others may read them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// A key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file is readable or writable by group or others.
    #[error(
        "key file {path} has mode {mode:04o}, so other users may read it; run `chmod 600 {path}` (and check nobody copied it)"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not exist.
    #[error("key file {0} does not exist")]
    Missing(PathBuf),
    /// The file exists but its content is not the expected key.
    #[error("key file {path} is not a valid {what}; restore it from your key export")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What kind of key was expected.
        what: &'static str,
    },
    /// Any other I/O error.
    #[error("cannot access key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl KeyFileError {
    fn io(path: &Path, source: io::Error) -> Self {
        KeyFileError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Reads a secret key file, refusing it when its mode lets group or others in.
pub fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KeyFileError::Missing(path.to_owned()));
        }
        Err(e) => return Err(KeyFileError::io(path, e)),
    };
    let mode = file
        .metadata()
        .map_err(|e| KeyFileError::io(path, e))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let mut buf = Zeroizing::new(Vec::new());
    file.read_to_end(&mut buf)
        .map_err(|e| KeyFileError::io(path, e))?;
    Ok(buf)
}

/// Writes a secret key file with mode 0600: to a temporary file created 0600,
/// fsynced, renamed into place, and the directory fsynced.
pub fn write_secret(path: &Path, content: &[u8]) -> Result<(), KeyFileError> {
    write_atomic(path, content, 0o600)
}

/// Writes a public file (0644) the same crash-safe way.
pub fn write_public(path: &Path, content: &[u8]) -> Result<(), KeyFileError> {
    write_atomic(path, content, 0o644)
}

fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<(), KeyFileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| KeyFileError::io(&tmp, e))?;
    // The umask may have narrowed the mode; set it exactly.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| KeyFileError::io(&tmp, e))?;
    f.write_all(content)
        .map_err(|e| KeyFileError::io(&tmp, e))?;
    f.sync_all().map_err(|e| KeyFileError::io(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| KeyFileError::io(path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| KeyFileError::io(dir, e))?;
    Ok(())
}

/// Creates a directory for keys with mode 0700 (and its parents).
pub fn create_key_dir(dir: &Path) -> Result<(), KeyFileError> {
    fs::create_dir_all(dir).map_err(|e| KeyFileError::io(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| KeyFileError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_0600_and_open_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_secret(&p, b"secret").unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(&**read_secret(&p).unwrap(), b"secret");

        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_secret(&p).unwrap_err();
        assert!(matches!(err, KeyFileError::TooOpen { mode: 0o640, .. }));
        assert!(err.to_string().contains("chmod 600"), "{err}");

        let missing = read_secret(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(missing, KeyFileError::Missing(_)));
    }
}
