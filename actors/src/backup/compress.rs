//! zstd compression of backup files, streamed: neither side is ever held
//! in memory whole.
//!
//! A compressed backup is `<dbname>-<UTC timestamp>-<label>.db.zst`, one
//! zstd frame with the uncompressed size in its header and a content
//! checksum (so a damaged frame fails to decompress rather than yielding
//! other bytes). Its recorded SHA-256 and `size` are those of the stored
//! (compressed) file; [`BackupInfo::uncompressed_size`] is the size of the
//! database inside.
//!
//! [`BackupInfo::uncompressed_size`]: super::BackupInfo::uncompressed_size

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::destination::create_private;
use super::progress::Meter;
use crate::error::{Error, ErrorClass, Result};

/// The suffix of a compressed backup's name (after `.db`).
pub const ZSTD_SUFFIX: &str = ".zst";

/// Lowest zstd level accepted.
pub const MIN_COMPRESS_LEVEL: i32 = 1;
/// Highest zstd level accepted: 20 to 22 ("ultra") need up to 128 MiB
/// windows on both sides, for little gain on a database file.
pub const MAX_COMPRESS_LEVEL: i32 = 19;

/// How backups are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compress {
    /// As SQLite wrote them: `<name>.db`.
    #[default]
    None,
    /// zstd-compressed: `<name>.db.zst`.
    Zstd,
}

/// Bytes through a reader or writer, hashed and counted on the way.
struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn hex(self) -> String {
        hex(&self.hasher.finalize())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compress the file `plain` into `to` (created or truncated, mode 0600)
/// at zstd `level`, and fsync `to`. Blocking. Returns the bytes read.
pub fn compress_file(plain: &Path, to: &Path, level: i32) -> Result<u64> {
    compress_metered(plain, to, level, &Meter::none())
}

/// [`compress_file`], the bytes read one pass of `meter`.
pub(crate) fn compress_metered(
    plain: &Path,
    to: &Path,
    level: i32,
    meter: &Meter<'_>,
) -> Result<u64> {
    let during = |e: std::io::Error| Error::from(e).during("compress backup", to);
    let input = File::open(plain).map_err(|e| Error::from(e).during("read", plain))?;
    let size = input
        .metadata()
        .map_err(|e| Error::from(e).during("stat", plain))?
        .len();
    let out = create_private(to).map_err(during)?;
    let mut encoder =
        zstd::stream::write::Encoder::new(BufWriter::new(out), level).map_err(during)?;
    encoder.include_checksum(true).map_err(during)?;
    encoder.set_pledged_src_size(Some(size)).map_err(during)?;
    let mut input = meter.reader(BufReader::new(input));
    let read = std::io::copy(&mut input, &mut encoder).map_err(during)?;
    let out = encoder
        .finish()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .map_err(during)?;
    out.sync_all().map_err(during)?;
    meter.pass_done(read);
    Ok(read)
}

/// What [`decompress_file`] read and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decompressed {
    /// SHA-256 (hex) of the compressed bytes read.
    pub stored_sha256: String,
    /// SHA-256 (hex) of the decompressed bytes written.
    pub sha256: String,
    /// Decompressed bytes written.
    pub size: u64,
}

/// Decompress the zstd file `stored` into `to` (created or truncated, mode
/// 0600) and fsync `to`. Blocking. A damaged frame (bad checksum,
/// truncated, not zstd) is an error of class `corruption`.
pub fn decompress_file(stored: &Path, to: &Path) -> Result<Decompressed> {
    decompress_metered(stored, to, &Meter::none())
}

/// [`decompress_file`], the compressed bytes read one pass of `meter`.
pub(crate) fn decompress_metered(
    stored: &Path,
    to: &Path,
    meter: &Meter<'_>,
) -> Result<Decompressed> {
    let input = File::open(stored).map_err(|e| Error::from(e).during("read", stored))?;
    let out = create_private(to).map_err(|e| Error::from(e).during("decompress backup", to))?;
    let mut out = Hashing::new(BufWriter::new(out));
    // The decoder reads to the end of the file (frame after frame), so the
    // input hash covers every byte, and bytes after the frame that are
    // not a frame are an error.
    let mut decoder = zstd::stream::read::Decoder::new(Hashing::new(meter.reader(input)))
        .map_err(|e| Error::from(e).during("decompress backup", stored))?;
    if let Err(e) = std::io::copy(&mut decoder, &mut out) {
        return Err(Error::new(
            ErrorClass::Corruption,
            format!("{} does not decompress: {e}", stored.display()),
            "the compressed backup is damaged, cut short or not a zstd file",
        ));
    }
    let size = out.bytes;
    let Hashing { inner, hasher, .. } = out;
    let file = inner
        .into_inner()
        .map_err(|e| Error::from(e.into_error()).during("decompress backup", to))?;
    file.sync_all()
        .map_err(|e| Error::from(e).during("fsync", to))?;
    let input = decoder.finish().into_inner();
    let read = input.bytes;
    meter.pass_done(read);
    Ok(Decompressed {
        stored_sha256: input.hex(),
        sha256: hex(&hasher.finalize()),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compress_round_trip_is_private_and_damage_is_corruption() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let plain = tmp.path().join("a.db");
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        std::fs::write(&plain, &data).unwrap();
        let zst = tmp.path().join("a.db.zst");
        assert_eq!(compress_file(&plain, &zst, 3).unwrap(), data.len() as u64);
        let stored = std::fs::read(&zst).unwrap();
        assert!(stored.len() < data.len() / 10);
        let mode = std::fs::metadata(&zst).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let back = tmp.path().join("b.db");
        let d = decompress_file(&zst, &back).unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), data);
        assert_eq!(d.size, data.len() as u64);
        assert_eq!(d.sha256, hex(&Sha256::digest(&data)));
        assert_eq!(d.stored_sha256, hex(&Sha256::digest(&stored)));
        let mode = std::fs::metadata(&back).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // One byte changed, bytes appended, cut short: each is refused.
        let mut flipped = stored.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x10;
        let mut appended = stored.clone();
        appended.extend_from_slice(b"junk");
        let cut = stored[..stored.len() - 3].to_vec();
        for bad in [flipped, appended, cut, b"not zstd at all".to_vec()] {
            std::fs::write(&zst, &bad).unwrap();
            let err = decompress_file(&zst, &back).unwrap_err();
            assert_eq!(err.class, ErrorClass::Corruption, "{err}");
        }
    }
}
