//! The license store: a directory on disk.
//!
//! ```text
//! store_dir/
//!   licenses/          one token per file; files an operator drops here are picked up
//!   revocations.json   {"revoked": [{"jti": "...", "revoked_at": 1700000000}]}
//!   clock.json         {"high_water": 1700000000}  (clock rollback defence)
//!   instance-id        this installation's id, when `instance_id = "auto"`
//! ```
//!
//! Every write goes to a temporary file in the same directory, is flushed to disk,
//! renamed over the target and the directory is flushed: a crash leaves either the
//! old file or the new one, never a torn one. Temporary files start with `.` and are
//! never read as licenses.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::claims::UnixTime;
use super::verify::MAX_TOKEN_BYTES;

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("license store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("license store {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A token file read from `licenses/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub path: PathBuf,
    /// The file's [`FileStamp`] taken before it was read.
    pub stamp: FileStamp,
    pub token: String,
}

/// One version of a license file: a digest of its size, modification time, change
/// time and inode. A file whose stamp has not changed has not been written since.
pub type FileStamp = u64;

/// A license file found by [`Store::scan_changed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScannedFile {
    /// A version of the file the caller did not know: to be read.
    Changed(ListedFile),
    /// The caller said it already knows this name and stamp.
    Known(OsString),
}

/// A license file listed, not read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub path: PathBuf,
    /// The file's [`FileStamp`], taken before it is read.
    pub stamp: FileStamp,
}

impl ListedFile {
    /// Reads the token; an unreadable or oversized file is a problem, not an error.
    pub fn read(self) -> Result<StoredToken, StoreProblem> {
        match read_token_file(&self.path) {
            Ok(token) => Ok(StoredToken {
                path: self.path,
                stamp: self.stamp,
                token,
            }),
            Err(reason) => Err(StoreProblem {
                path: self.path,
                reason,
                claimed_tenant: None,
            }),
        }
    }
}

/// A file in `licenses/` that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreProblem {
    pub path: PathBuf,
    pub reason: String,
    /// The tenant the file claims to be for, read without verification (only used to
    /// show that tenant as `INVALID` rather than `UNLICENSED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_tenant: Option<String>,
}

/// What changes in the directory look like: (name, size, modified) of every entry.
/// A digest of the names, sizes and modification times of the store's files: equal
/// digests mean nothing changed (32 bytes kept, however many files).
pub type Fingerprint = [u8; 32];

/// A revoked license id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub jti: String,
    pub revoked_at: UnixTime,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RevocationsFile {
    revoked: Vec<Revocation>,
}

/// A license the license server suspended (refused until it is reinstated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    pub jti: String,
    pub suspended_at: UnixTime,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SuspensionsFile {
    suspended: Vec<Suspension>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ClockFile {
    high_water: UnixTime,
}

/// The license directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating when missing, mode 0700) the store at `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let store = Store {
            dir: dir.to_path_buf(),
        };
        for d in [store.dir.clone(), store.licenses_dir()] {
            create_private_dir(&d)?;
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where license files live.
    pub fn licenses_dir(&self) -> PathBuf {
        self.dir.join("licenses")
    }

    fn revocations_path(&self) -> PathBuf {
        self.dir.join("revocations.json")
    }

    fn suspensions_path(&self) -> PathBuf {
        self.dir.join("suspensions.json")
    }

    fn clock_path(&self) -> PathBuf {
        self.dir.join("clock.json")
    }

    fn instance_id_path(&self) -> PathBuf {
        self.dir.join("instance-id")
    }

    fn csrf_secret_path(&self) -> PathBuf {
        self.dir.join("csrf-secret")
    }

    /// The store as listed now: its license files' names and stamps, and its
    /// [`Fingerprint`] (nothing is read). [`Store::scan_listed`] takes it on.
    pub fn listing(&self) -> Listing {
        match self.list() {
            Ok(entries) => Listing {
                fingerprint: self.digest(&entries),
                entries,
                problem: None,
            },
            Err(e) => Listing {
                fingerprint: self.digest(&[]),
                entries: Vec::new(),
                problem: Some(StoreProblem {
                    path: self.licenses_dir(),
                    reason: format!("cannot list: {e}"),
                    claimed_tenant: None,
                }),
            },
        }
    }

    /// The entries of `licenses/` in name order, with what their metadata (not
    /// followed) says, temporary files left out.
    fn list(&self) -> std::io::Result<Vec<Listed>> {
        let mut entries: Vec<Listed> = fs::read_dir(self.licenses_dir())?
            .flatten()
            .filter(|e| !e.file_name().as_encoded_bytes().starts_with(b"."))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some(Listed {
                    name: e.file_name(),
                    len: meta.len(),
                    modified_nanos: modified_nanos(&meta),
                    stamp: file_stamp(&meta),
                    is_file: meta.is_file(),
                })
            })
            .collect();
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// The [`Fingerprint`] of `entries` (a listing of `licenses/`) and of the
    /// revocation list.
    fn digest(&self, entries: &[Listed]) -> Fingerprint {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut add = |name: &[u8], len: u64, nanos: u128| {
            digest.update(name);
            digest.update(&[0]);
            digest.update(&len.to_le_bytes());
            digest.update(&nanos.to_le_bytes());
        };
        for entry in entries {
            add(
                entry.name.as_encoded_bytes(),
                entry.len,
                entry.modified_nanos,
            );
        }
        if let Ok(meta) = fs::metadata(self.revocations_path()) {
            add(b"../revocations.json", meta.len(), modified_nanos(&meta));
        }
        if let Ok(meta) = fs::metadata(self.suspensions_path()) {
            add(b"../suspensions.json", meta.len(), modified_nanos(&meta));
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.finish().as_ref());
        out
    }

    /// Lists the license files in name order, marking those for which `known(name,
    /// stamp)` is false as changed (to be read with [`ListedFile::read`]), with the
    /// store's [`Fingerprint`] as listed (before anything is read). A directory that
    /// cannot be listed is reported, not fatal.
    pub fn scan_changed(
        &self,
        known: impl FnMut(&OsStr, FileStamp) -> bool,
    ) -> (Vec<ScannedFile>, Vec<StoreProblem>, Fingerprint) {
        self.scan_listed(self.listing(), known)
    }

    /// [`Store::scan_changed`] of a listing already taken.
    pub fn scan_listed(
        &self,
        listing: Listing,
        mut known: impl FnMut(&OsStr, FileStamp) -> bool,
    ) -> (Vec<ScannedFile>, Vec<StoreProblem>, Fingerprint) {
        let dir = self.licenses_dir();
        let mut files = Vec::with_capacity(listing.entries.len());
        for Listed {
            name,
            stamp,
            is_file,
            ..
        } in listing.entries
        {
            // Not followed: a symbolic link is not a license file.
            if !is_file {
                continue;
            }
            if known(&name, stamp) {
                files.push(ScannedFile::Known(name));
            } else {
                files.push(ScannedFile::Changed(ListedFile {
                    path: dir.join(&name),
                    stamp,
                }));
            }
        }
        (
            files,
            listing.problem.into_iter().collect(),
            listing.fingerprint,
        )
    }

    /// Writes `token` as the file for license `jti` of `tenant`; returns its path.
    pub fn install(&self, tenant: &str, jti: &str, token: &str) -> Result<PathBuf, StoreError> {
        let path = self.licenses_dir().join(license_file_name(tenant, jti));
        write_atomically(&path, format!("{}\n", token.trim()).as_bytes())?;
        Ok(path)
    }

    /// The stamp of the file at `path` now, as [`Store::scan_changed`] sees it.
    pub fn stamp(&self, path: &Path) -> Result<FileStamp, StoreError> {
        fs::symlink_metadata(path)
            .map(|meta| file_stamp(&meta))
            .map_err(io_error(path))
    }

    /// Removes the license file at `path` (a file listed by [`Store::scan_changed`]).
    pub fn remove(&self, path: &Path) -> Result<(), StoreError> {
        fs::remove_file(path).map_err(io_error(path))?;
        sync_dir(&self.licenses_dir())
    }

    /// The revoked license ids.
    pub fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let path = self.revocations_path();
        match fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_error(&path)(e)),
            Ok(bytes) => serde_json::from_slice::<RevocationsFile>(&bytes)
                .map(|f| f.revoked)
                .map_err(|e| StoreError::Corrupt {
                    path,
                    reason: format!("not a revocation list: {e}"),
                }),
        }
    }

    /// Adds `jti` to the revocation list (no-op when already there).
    pub fn revoke(&self, jti: &str, now: UnixTime) -> Result<(), StoreError> {
        let mut revoked = self.revocations()?;
        if revoked.iter().any(|r| r.jti == jti) {
            return Ok(());
        }
        revoked.push(Revocation {
            jti: jti.to_string(),
            revoked_at: now,
        });
        let body = serde_json::to_vec_pretty(&RevocationsFile { revoked }).expect("serializes");
        write_atomically(&self.revocations_path(), &body)
    }

    /// The suspended license ids.
    pub fn suspensions(&self) -> Result<Vec<Suspension>, StoreError> {
        let path = self.suspensions_path();
        match fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_error(&path)(e)),
            Ok(bytes) => serde_json::from_slice::<SuspensionsFile>(&bytes)
                .map(|f| f.suspended)
                .map_err(|e| StoreError::Corrupt {
                    path,
                    reason: format!("not a suspension list: {e}"),
                }),
        }
    }

    /// Adds (`suspended`) or removes `jti` from the suspension list; `false` when it
    /// was already so (nothing written).
    pub fn set_suspended(
        &self,
        jti: &str,
        suspended: bool,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut list = self.suspensions()?;
        let present = list.iter().any(|s| s.jti == jti);
        if present == suspended {
            return Ok(false);
        }
        if suspended {
            list.push(Suspension {
                jti: jti.to_string(),
                suspended_at: now,
            });
        } else {
            list.retain(|s| s.jti != jti);
        }
        let body =
            serde_json::to_vec_pretty(&SuspensionsFile { suspended: list }).expect("serializes");
        write_atomically(&self.suspensions_path(), &body)?;
        Ok(true)
    }

    /// The persisted clock high-water mark (0 when none or unreadable).
    pub fn clock_high_water(&self) -> UnixTime {
        fs::read(self.clock_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<ClockFile>(&b).ok())
            .map(|c| c.high_water)
            .unwrap_or(0)
    }

    /// Persists the clock high-water mark.
    pub fn save_clock_high_water(&self, high_water: UnixTime) -> Result<(), StoreError> {
        let body = serde_json::to_vec(&ClockFile { high_water }).expect("serializes");
        write_atomically(&self.clock_path(), &body)
    }

    /// The persisted instance id, generated (and persisted) on first use.
    pub fn instance_id(&self) -> Result<String, StoreError> {
        self.generated_id(self.instance_id_path())
    }

    /// This store's replica id (gateways sharing a store are one replica; each store
    /// of a fleet is its own), generated and persisted on first use.
    pub fn replica_id(&self) -> Result<String, StoreError> {
        self.generated_id(self.dir.join("replica-id"))
    }

    /// The id kept in the file at `path`, generated there on first use.
    fn generated_id(&self, path: PathBuf) -> Result<String, StoreError> {
        match fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
            Ok(_) => Err(StoreError::Corrupt {
                path,
                reason: "the instance id file is empty".into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = generate_instance_id();
                write_atomically(&path, format!("{id}\n").as_bytes())?;
                Ok(id)
            }
            Err(e) => Err(io_error(&path)(e)),
        }
    }
}

impl Store {
    /// The installation's secret for CSRF tokens (32 bytes), generated and persisted
    /// (mode 0600) on first use, so tokens survive restarts and hold across gateways
    /// that share the store.
    pub fn csrf_secret(&self) -> Result<[u8; 32], StoreError> {
        let path = self.csrf_secret_path();
        match fs::read(&path) {
            Ok(bytes) => bytes.try_into().map_err(|_| StoreError::Corrupt {
                path,
                reason: "the CSRF secret is not 32 bytes".into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
                    .map_err(|_| StoreError::Corrupt {
                        path: path.clone(),
                        reason: "no system randomness".into(),
                    })?;
                write_atomically_with_mode(&path, &secret, 0o600)?;
                Ok(secret)
            }
            Err(e) => Err(io_error(&path)(e)),
        }
    }
}

/// The [`FileStamp`] of a file with metadata `meta`.
/// The store as listed by [`Store::listing`].
#[derive(Debug)]
pub struct Listing {
    /// What the listing says of the store (equal fingerprints: nothing changed).
    pub fingerprint: Fingerprint,
    entries: Vec<Listed>,
    /// Why `licenses/` could not be listed.
    problem: Option<StoreProblem>,
}

/// An entry of `licenses/` as listed.
#[derive(Debug)]
struct Listed {
    name: OsString,
    len: u64,
    modified_nanos: u128,
    stamp: FileStamp,
    is_file: bool,
}

/// The modification time in nanoseconds since the epoch (0 when unknown).
fn modified_nanos(meta: &fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

fn file_stamp(meta: &fs::Metadata) -> FileStamp {
    use std::hash::{Hash as _, Hasher as _};
    use std::os::unix::fs::MetadataExt as _;
    // SipHash with fixed keys: the same metadata gives the same stamp in this process.
    let mut hasher = std::hash::DefaultHasher::new();
    (meta.len(), meta.ino(), meta.dev()).hash(&mut hasher);
    (
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
        .hash(&mut hasher);
    hasher.finish()
}

/// Reads a token file: at most [`MAX_TOKEN_BYTES`], UTF-8, surrounding space trimmed.
fn read_token_file(path: &Path) -> Result<String, String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_BYTES as u64 + 2)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > MAX_TOKEN_BYTES + 1 {
        return Err(format!(
            "larger than {MAX_TOKEN_BYTES} bytes: not a license"
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text: not a license".to_string())?;
    Ok(text.trim().to_string())
}

/// A file name for a license: `<tenant>--<jti>.jwt` when both are plain, else a digest.
pub fn license_file_name(tenant: &str, jti: &str) -> String {
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if plain(tenant) && plain(jti) {
        format!("{tenant}--{jti}.jwt")
    } else {
        let digest =
            ring::digest::digest(&ring::digest::SHA256, format!("{tenant}\0{jti}").as_bytes());
        let hex: String = digest.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("license-{hex}.jwt")
    }
}

/// A random id in UUID v4 form.
pub fn generate_instance_id() -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system randomness available");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` atomically: temp file in the same directory, fsync,
/// rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomically_with_mode(path, bytes, 0o666)
}

/// [`write_atomically`] with the file created with `mode` (less the umask) from the
/// start, e.g. 0o600 for a secret.
pub fn write_atomically_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .map_err(io_error(&temp))?;
        file.write_all(bytes).map_err(io_error(&temp))?;
        file.sync_all().map_err(io_error(&temp))?;
        drop(file);
        fs::rename(&temp, path).map_err(io_error(path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt as _;
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(io_error(dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every license file as read (none is known to the caller).
    fn read_all(store: &Store) -> (Vec<StoredToken>, Vec<StoreProblem>) {
        let (files, mut problems, _) = store.scan_changed(|_, _| false);
        let mut tokens = Vec::new();
        for file in files {
            match file {
                ScannedFile::Changed(listed) => match listed.read() {
                    Ok(token) => tokens.push(token),
                    Err(problem) => problems.push(problem),
                },
                ScannedFile::Known(name) => panic!("{name:?} reported as known"),
            }
        }
        (tokens, problems)
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_torn_temp_file_is_never_read_and_the_old_file_stays_intact() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let installed = store.install("acme", "L1", "aaa.bbb.ccc").unwrap();
        // A crash in the middle of a later write: a partial temp file beside the target.
        fs::write(
            store.licenses_dir().join(".acme--L1.jwt.tmp-999-0"),
            b"aaa.b",
        )
        .unwrap();
        let (tokens, problems) = read_all(&store);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            tokens,
            vec![StoredToken {
                stamp: file_stamp(&fs::metadata(&installed).unwrap()),
                path: installed,
                token: "aaa.bbb.ccc".into()
            }]
        );
    }

    #[test]
    fn scan_changed_lists_as_changed_only_what_the_caller_does_not_know() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.install("acme", "L1", "aaa.bbb.ccc").unwrap();
        store.install("globex", "L2", "ddd.eee.fff").unwrap();
        let (files, _, _) = store.scan_changed(|_, _| false);
        let stamps: Vec<FileStamp> = files
            .iter()
            .map(|f| match f {
                ScannedFile::Changed(t) => t.stamp,
                ScannedFile::Known(n) => panic!("{n:?} was not known"),
            })
            .collect();
        let (files, _, _) =
            store.scan_changed(|name, stamp| name == "acme--L1.jwt" && stamp == stamps[0]);
        assert!(matches!(&files[0], ScannedFile::Known(n) if n == "acme--L1.jwt"));
        let read = |file: &ScannedFile| match file {
            ScannedFile::Changed(listed) => listed.clone().read().unwrap(),
            ScannedFile::Known(n) => panic!("{n:?} was known"),
        };
        assert_eq!(read(&files[1]).token, "ddd.eee.fff");
        // Rewritten with the same length: a new stamp, so it is read again.
        store.install("acme", "L1", "xxx.yyy.zzz").unwrap();
        let (files, _, _) =
            store.scan_changed(|name, stamp| name == "acme--L1.jwt" && stamp == stamps[0]);
        let token = read(&files[0]);
        assert_eq!((token.token.as_str(), token.path), ("xxx.yyy.zzz", a));
    }

    #[test]
    fn revocations_and_clock_persist() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.revocations().unwrap().is_empty());
        store.revoke("L1", 100).unwrap();
        store.revoke("L1", 200).unwrap();
        store.revoke("L2", 300).unwrap();
        let again = Store::open(dir.path()).unwrap();
        let jtis: Vec<_> = again
            .revocations()
            .unwrap()
            .into_iter()
            .map(|r| r.jti)
            .collect();
        assert_eq!(jtis, vec!["L1", "L2"]);
        assert_eq!(again.clock_high_water(), 0);
        again.save_clock_high_water(12345).unwrap();
        assert_eq!(store.clock_high_water(), 12345);
    }

    #[test]
    fn a_corrupt_revocation_list_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(dir.path().join("revocations.json"), b"{not json").unwrap();
        assert!(matches!(
            store.revocations(),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn instance_id_is_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.instance_id().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(Store::open(dir.path()).unwrap().instance_id().unwrap(), id);
        assert_ne!(generate_instance_id(), id);
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(license_file_name("acme", "L-1"), "acme--L-1.jwt");
        let odd = license_file_name("../etc", "x/y");
        assert!(odd.starts_with("license-") && !odd.contains('/'), "{odd}");
    }

    #[test]
    fn oversized_and_binary_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(
            store.licenses_dir().join("big.jwt"),
            vec![b'a'; MAX_TOKEN_BYTES + 10],
        )
        .unwrap();
        fs::write(store.licenses_dir().join("bin.jwt"), [0xff, 0xfe, 0x00]).unwrap();
        let (tokens, problems) = read_all(&store);
        assert!(tokens.is_empty());
        assert_eq!(problems.len(), 2);
        assert!(problems[0].reason.contains("larger than"), "{problems:?}");
        assert!(problems[1].reason.contains("not UTF-8"), "{problems:?}");
    }
}
