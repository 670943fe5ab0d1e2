//! Registered nicknames: who owns a name, proved by a password. Both protocols ask here;
//! the hub knows nothing of accounts (a registered name is refused before the hub is asked).
//!
//! Hashing is argon2id, which takes tens of milliseconds of CPU by design: it runs on
//! tokio's blocking threads, at most [`Accounts::hashers`] at once, so the runtime thread (the
//! only one by default) never waits for it and a burst of logins queues instead of taking
//! every core. Accounts live in `accounts.json` in the data directory, rewritten whole (a
//! temporary file, fsync, rename) before a change is confirmed: a confirmed `/register`
//! survives a crash. Without a data directory there are no accounts.
//!
//! Passwords are never logged, stored or echoed: only their hashes leave this module.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The file in the data directory.
pub const FILE: &str = "accounts.json";

/// Failed attempts allowed per window for one account, and from one address.
pub const PER_ACCOUNT: u32 = 5;
pub const PER_ADDRESS: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(60);

/// The default shortest password, in characters (`--min-password-length` changes it).
pub const MIN_PASSWORD: usize = 8;
/// The longest password, in bytes. Longer ones are refused before hashing, so nobody can make
/// a hash cost more. 600 bytes and two nicknames fit one SASL PLAIN reply (the IRC listener
/// gathers 1 200 base64 characters, 900 bytes) and a netcat line (1 024 bytes by default), so
/// any password registered here can be given every way a password is given.
pub const MAX_PASSWORD: usize = 600;

/// Why an account request was refused. `Display` is the one line the client sees; none of
/// them holds a password.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AccountError {
    #[error("Error: accounts need a data directory; this server was started without --data-dir.")]
    NoDataDir,
    #[error("Error: accounts are unavailable on this server: {0}")]
    Unavailable(String),
    #[error("Error: {0} is already registered.")]
    Registered(String),
    #[error("Error: {0} is not registered; /register <password> registers your nickname.")]
    NotRegistered(String),
    #[error("Error: wrong password for {0}.")]
    Wrong(String),
    #[error("Error: too many failed attempts {0}; try again in {1} s.")]
    Throttled(String, u64),
    /// The shortest length this server accepts.
    #[error("Error: a password needs {0} characters or more ({MAX_PASSWORD} bytes at most) and no spaces.")]
    BadPassword(usize),
    #[error("Error: the account could not be saved ({0}); nothing changed.")]
    Io(String),
}

/// Why `OPER` (or `/oper`) was refused. `Display` is the netcat line; IRC answers with the
/// numeric for each. A name nobody listed reads as a wrong password, so nobody can learn which
/// operator names exist by trying them.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OperError {
    #[error("Error: wrong name or password for server operator {0}.")]
    Wrong(String),
    #[error("Error: too many failed attempts {0}; try again in {1} s.")]
    Throttled(String, u64),
}

/// The argon2id hash of `password`, as `--opers FILE` holds them (`linechat --hash-password`
/// prints one).
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    hash(password)
}

/// Whether `text` is an argon2 hash (a PHC string `$argon2id$…`) this build can check.
pub fn is_hash(text: &str) -> bool {
    PasswordHash::new(text).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

/// A password on its way to be hashed or checked: `{:?}` shows nothing of it, so no log line
/// or panic message can hold one.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Account {
    name: String,
    hash: String,
    /// Nicknames this account ignores (`/ignore`), kept for its next connection. Absent in
    /// files written before there was `/ignore`, and left out while empty, so such files and
    /// the linechat that wrote them read each other's files unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ignores: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    version: u32,
    accounts: Vec<Account>,
}

/// Failures counted in the current window for one key.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

#[derive(Debug)]
pub struct Accounts {
    dir: Option<PathBuf>,
    /// Why the file could not be read at start: then nothing may be registered or proved.
    broken: Option<String>,
    /// By name in lower case.
    map: Mutex<HashMap<String, Account>>,
    /// One rewrite of the file at a time, in the order the changes were made.
    writer: tokio::sync::Mutex<()>,
    hashers: Arc<Semaphore>,
    /// The shortest password accepted, in characters.
    min_password: usize,
    failures: Mutex<HashMap<String, Failures>>,
    /// Failed attempts (a wrong password), and attempts refused unheard (throttled), since start.
    pub failed: AtomicU64,
    pub throttled: AtomicU64,
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn check_password(password: &str, min: usize) -> Result<(), AccountError> {
    if password.chars().count() < min
        || password.len() > MAX_PASSWORD
        || password.contains(char::is_whitespace)
    {
        return Err(AccountError::BadPassword(min));
    }
    Ok(())
}

fn hash(password: &str) -> Result<String, AccountError> {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| AccountError::Io("no random salt from the system".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AccountError::Io(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Io(e.to_string()))
}

fn verify(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

impl Accounts {
    /// Reads the accounts kept in `dir`; `None`: a server without accounts. A file that
    /// cannot be read is not overwritten: accounts stay unavailable (and say why) until it is
    /// fixed. The binary refuses to start instead ([`Accounts::load`]), so that nobody can take
    /// a registered name meanwhile.
    pub fn open(dir: Option<&Path>) -> Accounts {
        Self::load(dir).unwrap_or_else(|why| {
            tracing::error!("{why}; nobody can register or identify until it is fixed");
            let mut accounts = Self::with(dir, HashMap::new());
            accounts.broken = Some("its accounts file cannot be read; the log says why".into());
            accounts
        })
    }

    /// [`Accounts::open`] for a caller that would rather not start (the binary): why the
    /// accounts file cannot be read, naming it.
    pub fn load(dir: Option<&Path>) -> Result<Accounts, String> {
        let mut map = HashMap::new();
        if let Some(dir) = dir {
            let path = dir.join(FILE);
            let kept = Self::read(&path).map_err(|why| {
                format!("cannot read the accounts file {}: {why}", path.display())
            })?;
            for a in kept {
                map.insert(key(&a.name), a);
            }
        }
        Ok(Self::with(dir, map))
    }

    fn with(dir: Option<&Path>, map: HashMap<String, Account>) -> Accounts {
        let broken = None;
        let hashers = std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .max(1);
        Accounts {
            dir: dir.map(Path::to_owned),
            broken,
            map: Mutex::new(map),
            writer: tokio::sync::Mutex::new(()),
            hashers: Arc::new(Semaphore::new(hashers)),
            min_password: MIN_PASSWORD,
            failures: Mutex::new(HashMap::new()),
            failed: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        }
    }

    /// The shortest password `register` and `set_password` accept (`--min-password-length`).
    /// Passwords already registered are not judged again.
    pub fn with_min_password(mut self, min: usize) -> Accounts {
        self.min_password = min;
        self
    }

    fn read(path: &Path) -> Result<Vec<Account>, String> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.to_string()),
        };
        let file: File = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if file.version != 1 {
            return Err(format!(
                "written in accounts format {}, this linechat reads 1",
                file.version
            ));
        }
        Ok(file.accounts)
    }

    fn usable(&self) -> Result<&Path, AccountError> {
        if let Some(why) = &self.broken {
            return Err(AccountError::Unavailable(why.clone()));
        }
        self.dir.as_deref().ok_or(AccountError::NoDataDir)
    }

    pub fn is_registered(&self, name: &str) -> bool {
        self.broken.is_none() && lock(&self.map).contains_key(&key(name))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AccountError> {
        let _permit = self
            .hashers
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AccountError::Io(e.to_string()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| AccountError::Io(e.to_string()))
    }

    /// Registers `name` with `password`; returns once the account is on disk.
    pub async fn register(&self, name: &str, password: &str) -> Result<(), AccountError> {
        let dir = self.usable()?.to_owned();
        check_password(password, self.min_password)?;
        if self.is_registered(name) {
            return Err(AccountError::Registered(name.to_owned()));
        }
        let password = password.to_owned();
        let hash = self.blocking(move || hash(&password)).await??;
        self.change(&dir, name, |map| match map.get(&key(name)) {
            Some(_) => Err(AccountError::Registered(name.to_owned())),
            None => {
                map.insert(
                    key(name),
                    Account {
                        name: name.to_owned(),
                        hash,
                        ignores: Vec::new(),
                    },
                );
                Ok(())
            }
        })
        .await
    }

    /// Proves `password` is `name`'s, throttled per account and per `addr`.
    pub async fn verify(
        &self,
        name: &str,
        password: &str,
        addr: IpAddr,
    ) -> Result<String, AccountError> {
        self.usable()?;
        let Some(account) = lock(&self.map).get(&key(name)).cloned() else {
            return Err(AccountError::NotRegistered(name.to_owned()));
        };
        let by_account = format!("a:{}", key(name));
        let by_address = format!("i:{}", addr.to_canonical());
        self.unthrottled(&by_account, &by_address, &format!("for {}", account.name))
            .map_err(|(what, secs)| {
                tracing::warn!(account = %account.name, addr = %addr, "login throttled");
                AccountError::Throttled(what, secs)
            })?;
        let password = password.to_owned();
        let hash = account.hash.clone();
        if self.blocking(move || verify(&password, &hash)).await? {
            return Ok(account.name);
        }
        self.failed.fetch_add(1, Relaxed);
        tracing::warn!(account = %account.name, addr = %addr, "wrong password");
        self.count_failure([by_account, by_address]);
        Err(AccountError::Wrong(account.name))
    }

    /// Refuses an attempt, counted as throttled, when `by_account` (said as `what`) or
    /// `by_address` failed too often in the last [`WINDOW`].
    fn unthrottled(
        &self,
        by_account: &str,
        by_address: &str,
        what: &str,
    ) -> Result<(), (String, u64)> {
        let now = Instant::now();
        let failures = lock(&self.failures);
        let wait = |k: &str, limit: u32| {
            failures
                .get(k)
                .filter(|f| f.count >= limit && now < f.since + WINDOW)
                .map(|f| (f.since + WINDOW - now).as_secs().max(1))
        };
        let refused = wait(by_account, PER_ACCOUNT)
            .map(|s| (what.to_owned(), s))
            .or_else(|| wait(by_address, PER_ADDRESS).map(|s| ("from your address".into(), s)));
        if let Some((what, secs)) = refused {
            self.throttled.fetch_add(1, Relaxed);
            return Err((what, secs));
        }
        Ok(())
    }

    /// Counts a failed attempt against each of `keys` in the current window.
    fn count_failure(&self, keys: [String; 2]) {
        let now = Instant::now();
        let mut failures = lock(&self.failures);
        // Bounded: a window's stale entries go whenever the map grows large.
        if failures.len() > 10_000 {
            failures.retain(|_, f| now < f.since + WINDOW);
        }
        for k in keys {
            let f = failures.entry(k).or_insert(Failures {
                count: 0,
                since: now,
            });
            if now >= f.since + WINDOW {
                *f = Failures {
                    count: 0,
                    since: now,
                };
            }
            f.count += 1;
        }
    }

    /// Proves `password` is server operator `name`'s: one of `plain` (`--oper NAME:PASSWORD`)
    /// or of `hashed` (`--opers FILE`, argon2 hashes, checked off the runtime thread),
    /// throttled per operator name and per `addr` like logins, and counted with them.
    pub async fn verify_oper(
        &self,
        name: &str,
        password: &str,
        plain: &[(String, String)],
        hashed: &[(String, String)],
        addr: IpAddr,
    ) -> Result<(), OperError> {
        let by_name = format!("o:{}", key(name));
        let by_address = format!("i:{}", addr.to_canonical());
        self.unthrottled(&by_name, &by_address, &format!("for operator {name}"))
            .map_err(|(what, secs)| OperError::Throttled(what, secs))?;
        let plain_ok = plain.iter().any(|(n, p)| n == name && p == password);
        // A name with no hash is checked against a hash all the same when the server has
        // hashed operators, so that an unknown name takes as long to refuse as a known one.
        let hash = hashed
            .iter()
            .find(|(n, _)| n == name)
            .or(hashed.first())
            .map(|(n, h)| (n == name, h.clone()));
        let hashed_ok = match (plain_ok, hash) {
            (false, Some((known, hash))) => {
                let password = password.to_owned();
                let ok = self.blocking(move || verify(&password, &hash)).await;
                known && ok.unwrap_or(false)
            }
            _ => false,
        };
        if plain_ok || hashed_ok {
            return Ok(());
        }
        self.failed.fetch_add(1, Relaxed);
        tracing::warn!(oper = name, addr = %addr, "wrong operator password");
        self.count_failure([by_name, by_address]);
        Err(OperError::Wrong(name.to_owned()))
    }

    /// The nicknames `name` ignores, as it last left them.
    pub fn ignores(&self, name: &str) -> Vec<String> {
        lock(&self.map)
            .get(&key(name))
            .map_or_else(Vec::new, |a| a.ignores.clone())
    }

    /// Keeps `list` as the nicknames `name` ignores (the caller has proved it is theirs);
    /// returns once it is on disk.
    pub async fn set_ignores(&self, name: &str, list: Vec<String>) -> Result<(), AccountError> {
        let dir = self.usable()?.to_owned();
        self.change(&dir, name, |map| match map.get_mut(&key(name)) {
            Some(a) => {
                a.ignores = list;
                Ok(())
            }
            None => Err(AccountError::NotRegistered(name.to_owned())),
        })
        .await
    }

    /// Replaces `name`'s password (the caller has proved it is theirs).
    pub async fn set_password(&self, name: &str, password: &str) -> Result<(), AccountError> {
        let dir = self.usable()?.to_owned();
        check_password(password, self.min_password)?;
        let password = password.to_owned();
        let hash = self.blocking(move || hash(&password)).await??;
        self.change(&dir, name, |map| match map.get_mut(&key(name)) {
            Some(a) => {
                a.hash = hash;
                Ok(())
            }
            None => Err(AccountError::NotRegistered(name.to_owned())),
        })
        .await
    }

    /// Drops `name`'s account (the caller has proved it is theirs).
    pub async fn unregister(&self, name: &str) -> Result<(), AccountError> {
        let dir = self.usable()?.to_owned();
        self.change(&dir, name, |map| match map.remove(&key(name)) {
            Some(_) => Ok(()),
            None => Err(AccountError::NotRegistered(name.to_owned())),
        })
        .await
    }

    /// Applies `edit` and rewrites the file; if the file cannot be written the edit is undone.
    async fn change(
        &self,
        dir: &Path,
        name: &str,
        edit: impl FnOnce(&mut HashMap<String, Account>) -> Result<(), AccountError>,
    ) -> Result<(), AccountError> {
        let _writing = self.writer.lock().await;
        let (before, text) = {
            let mut map = lock(&self.map);
            let before = map.get(&key(name)).cloned();
            edit(&mut map)?;
            let mut accounts: Vec<Account> = map.values().cloned().collect();
            accounts.sort_by(|a, b| a.name.cmp(&b.name));
            let file = File {
                version: 1,
                accounts,
            };
            (
                before,
                serde_json::to_string_pretty(&file).expect("plain data"),
            )
        };
        let path = dir.join(FILE);
        let written = tokio::task::spawn_blocking(move || write_atomically(&path, text.as_bytes()))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        if let Err(e) = written {
            let mut map = lock(&self.map);
            match before {
                Some(a) => map.insert(key(name), a),
                None => map.remove(&key(name)),
            };
            tracing::error!(error = %e, "cannot save the accounts");
            return Err(AccountError::Io(e.to_string()));
        }
        Ok(())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
