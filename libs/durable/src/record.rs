//! A recording [`Fs`] for crash-point tests (feature `record`): it takes
//! each step on the real file system and logs it; [`materialize`] then
//! writes the disk a power cut after any prefix of the log would leave:
//! the names made durable (by an fsync of their directory), each file
//! holding the data last made durable (by its own fsync; empty when none
//! was), and nothing else.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{Fs, RealFs};

/// One durable step.
#[derive(Clone, Debug)]
pub enum Event {
    /// A file's data made durable, as it was then.
    SyncFile {
        /// The file.
        path: PathBuf,
        /// Its data.
        data: Vec<u8>,
    },
    /// A rename.
    Rename {
        /// From.
        from: PathBuf,
        /// To.
        to: PathBuf,
    },
    /// A directory's names made durable.
    SyncDir {
        /// The directory.
        dir: PathBuf,
    },
    /// A directory made.
    CreateDir {
        /// The directory.
        dir: PathBuf,
    },
    /// A file removed.
    RemoveFile {
        /// The file.
        path: PathBuf,
    },
    /// A directory removed with everything in it.
    RemoveDirAll {
        /// The directory.
        dir: PathBuf,
    },
    /// An index commit: the index file as that commit left it.
    Committed {
        /// Its bytes.
        index: Vec<u8>,
    },
}

/// Takes every step on the real file system and logs it.
#[derive(Debug)]
pub struct Recorder {
    index: Option<PathBuf>,
    log: Mutex<Vec<Event>>,
}

impl Recorder {
    /// A recorder; `index` is the file whose bytes each commit logs.
    pub fn new(index: Option<PathBuf>) -> Self {
        Recorder {
            index,
            log: Mutex::new(Vec::new()),
        }
    }

    fn push(&self, e: Event) {
        self.lock().push(e);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Steps logged so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was logged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The log.
    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }
}

impl Fs for Recorder {
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        RealFs.sync_file(path)?;
        let data = std::fs::read(path)?;
        self.push(Event::SyncFile {
            path: path.to_owned(),
            data,
        });
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)?;
        self.push(Event::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
        });
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)?;
        self.push(Event::SyncDir {
            dir: dir.to_owned(),
        });
        Ok(())
    }
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.create_dir(dir)?;
        self.push(Event::CreateDir {
            dir: dir.to_owned(),
        });
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_file(path)?;
        self.push(Event::RemoveFile {
            path: path.to_owned(),
        });
        Ok(())
    }
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealFs.remove_dir_all(dir)?;
        self.push(Event::RemoveDirAll {
            dir: dir.to_owned(),
        });
        Ok(())
    }
    fn committed(&self) {
        if let Some(index) = self.index.as_ref().and_then(|i| std::fs::read(i).ok()) {
            self.push(Event::Committed { index });
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir,
}

/// Writes into `to` (which exists) what a crash after `events` leaves of
/// the tree under `root`: the names made durable, with the file data made
/// durable (a file whose data never was is empty). Returns the index as
/// of the last commit, if any.
pub fn materialize(root: &Path, events: &[Event], to: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut cur: BTreeMap<PathBuf, Node> = BTreeMap::new();
    let mut durable: BTreeMap<PathBuf, Node> = BTreeMap::new();
    let mut data: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut index = None;
    let mut next = 0u64;
    let mut fresh = || {
        next += 1;
        next
    };
    for e in events {
        match e {
            Event::SyncFile { path, data: d } => {
                let id = match cur.get(path) {
                    Some(Node::File(id)) => *id,
                    _ => {
                        let id = fresh();
                        cur.insert(path.clone(), Node::File(id));
                        id
                    }
                };
                data.insert(id, d.clone());
            }
            Event::Rename { from, to } => {
                let node = cur.remove(from).unwrap_or_else(|| Node::File(fresh()));
                cur.insert(to.clone(), node);
            }
            Event::CreateDir { dir } => {
                cur.insert(dir.clone(), Node::Dir);
            }
            Event::RemoveFile { path } => {
                cur.remove(path);
            }
            Event::RemoveDirAll { dir } => {
                cur.retain(|p, _| !p.starts_with(dir));
            }
            Event::SyncDir { dir } => {
                durable.retain(|p, _| p.parent() != Some(dir.as_path()));
                for (p, n) in &cur {
                    if p.parent() == Some(dir.as_path()) {
                        durable.insert(p.clone(), *n);
                    }
                }
            }
            Event::Committed { index: i } => index = Some(i.clone()),
        }
    }
    // Parents first; a name whose directory is gone is gone with it.
    let mut entries: Vec<_> = durable.into_iter().collect();
    entries.sort_by_key(|(p, _)| p.components().count());
    for (p, n) in entries {
        let Ok(rel) = p.strip_prefix(root) else {
            continue;
        };
        let target = to.join(rel);
        if !target.parent().is_some_and(Path::is_dir) {
            continue;
        }
        match n {
            Node::Dir => match std::fs::create_dir(&target) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            },
            Node::File(id) => std::fs::write(&target, data.get(&id).cloned().unwrap_or_default())?,
        }
    }
    Ok(index)
}
