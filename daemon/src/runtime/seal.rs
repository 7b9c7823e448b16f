//! Forward-secure sealing of a [journal](super::journal), in the manner of journald's
//! `--setup-keys` (a hash ratchet and HMAC-SHA256 instead of journald's FSPRG).
//!
//! **Keys.** `twinloom audit setup-keys` draws a 32-byte key₀ from the operating system's random
//! source and prints the **verification key** once: key₀, the start of epoch 0 (Unix seconds)
//! and the epoch length (seconds), as `xxxxxxxx-…-xxxxxxxx/<start>-<interval>` (eight groups of
//! eight hex digits; [`VerifyKey`]'s `Display`/`FromStr`). It belongs off the box (a password
//! safe, paper). On the box stays only the **sealing key** of the current epoch, in
//! [`STATE_FILE`] in the journal's folder (mode 0600): epoch `n` covers
//! `[start + n·interval, start + (n+1)·interval)`, and keyₙ₊₁ = SHA-256(`"twinloom-seal-evolve"`
//! ‖ keyₙ). The journal's writer moves to the next key when an epoch ends: it writes the new
//! state file (temporary file, `fsync`, rename, `fsync` of the folder) and overwrites the old
//! key in memory. A key cannot be computed back from a later one (SHA-256 is one-way), so
//! whoever takes the box in epoch `m` cannot make seals for any epoch before `m`.
//!
//! **Seals.** When an epoch ends, the writer appends a [`SEAL`] record
//! `{"kind":"journal-seal","time","key":<key id>,"epoch":n,"seal","seq","prev"}` with
//! `seal` = HMAC-SHA256(keyₙ, `"twinloom-seal"` ‖ n ‖ seq ‖ prev) (numbers as 8 big-endian
//! bytes, `prev` as its 64 hex characters): since `prev` is the hash of the line before, which
//! holds the hash of the one before it, a seal vouches for the whole chain up to it. The head
//! file is sealed the same way at every commit (`"twinloom-head"` ‖ epoch ‖ count ‖ hash), so a
//! cut-off tail with a rewritten head is found too. The key id (8 hex digits, SHA-256 of
//! `"twinloom-seal-id"` ‖ key₀) only names the key; it proves nothing.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::journal::JournalError;

/// The sealing state file in the journal's folder: the current epoch's key (mode 0600).
pub const STATE_FILE: &str = "sealing-key.json";

/// The `kind` of a seal record.
pub const SEAL: &str = "journal-seal";

/// The default epoch length: 15 minutes (journald's default too).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15 * 60);

type HmacSha256 = Hmac<Sha256>;

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// keyₙ₊₁ from keyₙ.
fn evolve(key: &mut [u8; 32]) {
    let mut hasher = Sha256::new();
    hasher.update(b"twinloom-seal-evolve");
    hasher.update(&key[..]);
    let next: [u8; 32] = hasher.finalize().into();
    key.zeroize();
    *key = next;
}

fn mac(key: &[u8; 32], domain: &[u8], a: u64, b: u64, hash: &str) -> String {
    #[allow(clippy::expect_used, reason = "HMAC takes a key of any length")]
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(domain);
    mac.update(&a.to_be_bytes());
    mac.update(&b.to_be_bytes());
    mac.update(hash.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// The seal of record `seq` (whose `prev` is `prev`) in epoch `epoch`, with that epoch's key.
fn seal_record(key: &[u8; 32], epoch: u64, seq: u64, prev: &str) -> String {
    mac(key, b"twinloom-seal", epoch, seq, prev)
}

/// The seal of a head (`count`, `hash`) written in epoch `epoch`, with that epoch's key.
fn seal_head(key: &[u8; 32], epoch: u64, count: u64, hash: &str) -> String {
    mac(key, b"twinloom-head", epoch, count, hash)
}

fn key_id(key0: &[u8; 32]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"twinloom-seal-id");
    hasher.update(key0);
    hex(&hasher.finalize()[..4])
}

/// The verification key: key₀, the start of epoch 0 (Unix seconds) and the epoch length
/// (seconds, ≥ 1). Text form `xxxxxxxx-xxxxxxxx-xxxxxxxx-xxxxxxxx-xxxxxxxx-xxxxxxxx-xxxxxxxx-xxxxxxxx/<start>-<interval>`.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyKey {
    key0: Zeroizing<[u8; 32]>,
    start: u64,
    interval: u64,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("id", &self.id())
            .field("start", &self.start)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = hex(&self.key0[..]);
        let groups: Vec<&str> = (0..8).map(|i| &text[i * 8..i * 8 + 8]).collect();
        write!(f, "{}/{}-{}", groups.join("-"), self.start, self.interval)
    }
}

impl std::str::FromStr for VerifyKey {
    type Err = JournalError;

    /// Errors: [`JournalError::Sealing`] when the text is not of the form above.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            JournalError::Sealing(
                "a verification key is 64 hex digits (dashes allowed), `/`, the start in Unix seconds, `-`, the epoch length in seconds".into(),
            )
        };
        let (key, epochs) = text.trim().split_once('/').ok_or_else(bad)?;
        let (start, interval) = epochs.split_once('-').ok_or_else(bad)?;
        let key: String = key.chars().filter(|c| *c != '-').collect();
        let key0 = Zeroizing::new(unhex32(&key).ok_or_else(bad)?);
        let start = start.parse().map_err(|_| bad())?;
        let interval: u64 = interval.parse().map_err(|_| bad())?;
        if interval == 0 {
            return Err(bad());
        }
        Ok(Self {
            key0,
            start,
            interval,
        })
    }
}

impl VerifyKey {
    /// The key's id: 8 hex digits that name it in seal records (not secret, proves nothing).
    pub fn id(&self) -> String {
        key_id(&self.key0)
    }

    /// When epoch `epoch` starts.
    pub fn epoch_start(&self, epoch: u64) -> SystemTime {
        UNIX_EPOCH
            + Duration::from_secs(
                self.start
                    .saturating_add(epoch.saturating_mul(self.interval)),
            )
    }

    /// A checker of this key's seals, from epoch 0.
    pub(crate) fn checker(&self) -> SealChecker {
        SealChecker {
            id: self.id(),
            epoch: 0,
            key: self.key0.clone(),
        }
    }
}

/// Checks seals in chain order with one key, evolving it forward only (constant memory; a seal
/// of epoch `n` after one of epoch `m` costs `n - m` hashes).
pub(crate) struct SealChecker {
    id: String,
    epoch: u64,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SealChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealChecker")
            .field("id", &self.id)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl SealChecker {
    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Moves to `epoch`'s key. Errors: `epoch` is before one already checked.
    fn move_to(&mut self, epoch: u64) -> Result<(), String> {
        if epoch < self.epoch {
            return Err(format!(
                "epoch {epoch} comes after a seal of epoch {}: seals go forward only",
                self.epoch
            ));
        }
        while self.epoch < epoch {
            evolve(&mut self.key);
            self.epoch += 1;
        }
        Ok(())
    }

    /// Checks a seal record's `seal` for record `seq` with `prev` in `epoch`.
    ///
    /// Errors: the epoch goes back, or the seal is not this key's seal of that chain position.
    pub fn check_record(
        &mut self,
        epoch: u64,
        seq: u64,
        prev: &str,
        seal: &str,
    ) -> Result<(), String> {
        self.move_to(epoch)?;
        if seal_record(&self.key, epoch, seq, prev) == seal {
            Ok(())
        } else {
            Err(format!(
                "the seal of epoch {epoch} does not match: records before it were changed after they were sealed, or the seal was made without the key"
            ))
        }
    }

    /// Checks a head's seal (`count`, `hash`, written in `epoch`).
    ///
    /// Errors: the epoch goes back, or the seal does not match.
    pub fn check_head(
        &mut self,
        epoch: u64,
        count: u64,
        hash: &str,
        seal: &str,
    ) -> Result<(), String> {
        self.move_to(epoch)?;
        if seal_head(&self.key, epoch, count, hash) == seal {
            Ok(())
        } else {
            Err(format!(
                "the head's seal (epoch {epoch}) does not match: the head was rewritten without the sealing key"
            ))
        }
    }
}

/// The state file's content.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    key_id: String,
    epoch: u64,
    key: String,
    start: u64,
    interval: u64,
}

/// The sealing key of the current epoch, as the writer holds it.
#[derive(Clone)]
pub(crate) struct SealingKey {
    id: String,
    epoch: u64,
    key: Zeroizing<[u8; 32]>,
    start: u64,
    interval: u64,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey")
            .field("id", &self.id)
            .field("epoch", &self.epoch)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl SealingKey {
    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The epoch this key seals.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The epoch `at` falls in (0 before the start).
    pub fn epoch_at(&self, at: SystemTime) -> u64 {
        let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        secs.saturating_sub(self.start) / self.interval
    }

    /// When this key's epoch ends.
    pub fn epoch_end(&self) -> SystemTime {
        UNIX_EPOCH
            + Duration::from_secs(
                self.start
                    .saturating_add((self.epoch + 1).saturating_mul(self.interval)),
            )
    }

    /// The seal of record `seq` following `prev`, in this key's epoch.
    pub fn seal_record(&self, seq: u64, prev: &str) -> String {
        seal_record(&self.key, self.epoch, seq, prev)
    }

    /// The seal of a head (`count`, `hash`), in this key's epoch.
    pub fn seal_head(&self, count: u64, hash: &str) -> String {
        seal_head(&self.key, self.epoch, count, hash)
    }

    /// This key moved on to `epoch` (the same key when it is not later); the old key material of
    /// the copy is overwritten, `self` keeps its own until dropped.
    pub fn evolved_to(&self, epoch: u64) -> Self {
        let mut next = self.clone();
        while next.epoch < epoch {
            evolve(&mut next.key);
            next.epoch += 1;
        }
        next
    }

    /// Reads the sealing state in `dir`; `None` when the journal is not sealed.
    ///
    /// Errors: [`JournalError::Sealing`] when the file does not parse; [`JournalError::Io`]
    /// when it cannot be read (a symbolic link included).
    pub fn load(dir: &Path) -> Result<Option<Self>, JournalError> {
        let mut text = String::new();
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join(STATE_FILE))
        {
            Ok(mut file) => file
                .read_to_string(&mut text)
                .map_err(|e| JournalError::Io(format!("{STATE_FILE}: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(JournalError::Io(format!("{STATE_FILE}: {e}"))),
        };
        let text = Zeroizing::new(text);
        let bad = |why: &str| JournalError::Sealing(format!("{STATE_FILE}: {why}"));
        let stored: Stored = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
        let key =
            Zeroizing::new(unhex32(&stored.key).ok_or_else(|| bad("key is not 64 hex digits"))?);
        let mut stored_key = stored.key;
        stored_key.zeroize();
        if stored.interval == 0 {
            return Err(bad("interval is 0"));
        }
        Ok(Some(Self {
            id: stored.key_id,
            epoch: stored.epoch,
            key,
            start: stored.start,
            interval: stored.interval,
        }))
    }

    /// Replaces the state file in `dir` with this key (temporary file with mode 0600, `fsync`,
    /// rename, `fsync` of the folder): the previous key is gone from the disk once this returns
    /// (as far as the file system overwrites; see `docs/control.md`).
    ///
    /// Errors: [`JournalError::Io`].
    pub fn store(&self, dir: &Path) -> Result<(), JournalError> {
        let io = |e: std::io::Error| JournalError::Io(format!("{STATE_FILE}: {e}"));
        let text = Zeroizing::new(
            serde_json::to_string(&Stored {
                key_id: self.id.clone(),
                epoch: self.epoch,
                key: hex(&self.key[..]),
                start: self.start,
                interval: self.interval,
            })
            .map_err(|e| JournalError::Io(e.to_string()))?,
        );
        let temporary = dir.join(format!("{STATE_FILE}.partial"));
        let _ = std::fs::remove_file(&temporary);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temporary)
            .map_err(io)?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        drop(file);
        std::fs::rename(&temporary, dir.join(STATE_FILE)).map_err(io)?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)
    }
}

/// Sets up sealing for the journal in `dir` (created when missing): a new key₀ from the
/// operating system's random source, epoch 0 starting `now` (whole seconds), epochs `interval`
/// long (whole seconds, ≥ 1 s); writes the state file and returns the verification key, which
/// is not kept anywhere.
///
/// Errors: [`JournalError::Sealing`] when the folder is sealed already and `replace` is false,
/// or the interval is under a second; [`JournalError::Io`].
pub fn setup(
    dir: &Path,
    interval: Duration,
    now: SystemTime,
    replace: bool,
) -> Result<VerifyKey, JournalError> {
    use rand::TryRngCore;
    let interval = interval.as_secs();
    if interval == 0 {
        return Err(JournalError::Sealing(
            "the epoch length must be at least 1 s".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| JournalError::Io(e.to_string()))?;
    if !replace && std::fs::symlink_metadata(dir.join(STATE_FILE)).is_ok() {
        return Err(JournalError::Sealing(format!(
            "{} already has a sealing key ({STATE_FILE}); `--force` replaces it (seals made with the old key then verify only with the old verification key)",
            dir.display()
        )));
    }
    let mut key0 = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng
        .try_fill_bytes(&mut key0[..])
        .map_err(|e| JournalError::Io(format!("random source: {e}")))?;
    let start = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let sealing = SealingKey {
        id: key_id(&key0),
        epoch: 0,
        key: key0.clone(),
        start,
        interval,
    };
    sealing.store(dir)?;
    Ok(VerifyKey {
        key0,
        start,
        interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verification_key_round_trips_and_evolves_like_the_sealing_key() {
        let dir = tempfile::tempdir().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let key = setup(dir.path(), Duration::from_secs(60), now, false).unwrap();
        let text = key.to_string();
        assert_eq!(text.len(), 64 + 7 + "/1800000000-60".len(), "{text}");
        assert!(text.ends_with("/1800000000-60"), "{text}");
        let parsed: VerifyKey = text.parse().unwrap();
        assert_eq!(parsed, key);
        assert!(matches!(
            setup(dir.path(), Duration::from_secs(60), now, false),
            Err(JournalError::Sealing(_))
        ));
        let sealing = SealingKey::load(dir.path()).unwrap().unwrap();
        assert_eq!(sealing.id(), key.id());
        assert_eq!(sealing.epoch_at(now + Duration::from_secs(125)), 2);
        let later = sealing.evolved_to(5);
        later.store(dir.path()).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(STATE_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let reloaded = SealingKey::load(dir.path()).unwrap().unwrap();
        assert_eq!(reloaded.epoch(), 5);
        let seal = reloaded.seal_record(7, "ab");
        let mut checker = parsed.checker();
        assert_eq!(checker.check_record(5, 7, "ab", &seal), Ok(()));
        assert!(checker.check_record(5, 7, "ac", &seal).is_err());
        assert!(checker.check_record(4, 7, "ab", &seal).is_err());
        // Epoch 5's key cannot seal epoch 4, and a wrong key seals nothing.
        assert!(parsed.checker().check_record(4, 7, "ab", &seal).is_err());
        assert!("00-11/1-1".parse::<VerifyKey>().is_err());
        assert!(format!("{}/1-0", &text[..71]).parse::<VerifyKey>().is_err());
    }
}
