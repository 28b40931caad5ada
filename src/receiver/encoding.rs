//! OTLP/HTTP `Content-Encoding`: which codings are accepted (gzip, deflate
//! zlib-wrapped or raw, zstd, identity) and their decoders, each bounded by
//! the body limit: a decoder stops once the output passes the limit, so a
//! compression bomb costs at most the limit in memory, never its full size.

use bytes::Bytes;
use std::io::Read;

/// What `Content-Encoding` named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    /// RFC 9110 `deflate` is a zlib stream; raw deflate is accepted too
    /// (some clients send it), told apart by the zlib header.
    Deflate,
    Zstd,
}

/// The codings named in the 415 answer to anything else.
pub const SUPPORTED: &str = "gzip, deflate, zstd, identity";

impl Encoding {
    /// Parses a `Content-Encoding` value (case-insensitive, `x-gzip` is
    /// gzip); Err names the unsupported value. Stacked codings
    /// (`gzip, zstd`) are not accepted.
    pub fn parse(value: Option<&[u8]>) -> Result<Encoding, String> {
        let Some(v) = value else {
            return Ok(Encoding::Identity);
        };
        let s = std::str::from_utf8(v).map_err(|_| format!("{v:?}"))?.trim();
        let is = |name: &str| s.eq_ignore_ascii_case(name);
        if s.is_empty() || is("identity") {
            Ok(Encoding::Identity)
        } else if is("gzip") || is("x-gzip") {
            Ok(Encoding::Gzip)
        } else if is("deflate") {
            Ok(Encoding::Deflate)
        } else if is("zstd") {
            Ok(Encoding::Zstd)
        } else {
            Err(format!("{s:?}"))
        }
    }
}

/// Why a body could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The decoded body passes the limit (HTTP 413).
    TooLarge,
    /// Not a valid stream of its coding (HTTP 400).
    Invalid(String),
}

/// Decodes `body` (not Identity: that is the caller's fast path) into at
/// most `limit` bytes.
pub fn decode(enc: Encoding, body: &[u8], limit: usize) -> Result<Bytes, DecodeError> {
    match enc {
        Encoding::Identity => Ok(Bytes::copy_from_slice(body)),
        Encoding::Gzip => read_bounded(
            flate2::read::GzDecoder::new(body),
            body.len(),
            limit,
            "gzip",
        ),
        Encoding::Deflate => deflate(body, limit),
        Encoding::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|e| DecodeError::Invalid(format!("invalid zstd body: {e}")))?;
            d.window_log_max(zstd_window_log(limit))
                .map_err(|e| DecodeError::Invalid(format!("invalid zstd body: {e}")))?;
            read_bounded(d, body.len(), limit, "zstd")
        }
    }
}

/// A zlib stream when it starts like one, else (or when that fails) a raw
/// deflate stream.
fn deflate(body: &[u8], limit: usize) -> Result<Bytes, DecodeError> {
    let raw = || {
        read_bounded(
            flate2::read::DeflateDecoder::new(body),
            body.len(),
            limit,
            "deflate",
        )
    };
    if !is_zlib(body) {
        return raw();
    }
    match read_bounded(
        flate2::read::ZlibDecoder::new(body),
        body.len(),
        limit,
        "deflate",
    ) {
        Err(DecodeError::Invalid(e)) => raw().map_err(|_| DecodeError::Invalid(e)),
        r => r,
    }
}

/// A zlib stream starts with CMF (method 8 = deflate, window at most 32 KiB)
/// and FLG such that CMF*256+FLG is a multiple of 31 (RFC 1950); a raw
/// deflate stream rarely does (its first byte's low bits are a block type).
fn is_zlib(b: &[u8]) -> bool {
    match b {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) * 256 + u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// The largest zstd window (log2 bytes) accepted: what the limit needs,
/// and at least 8 MiB (libzstd's streaming window up to level 19, and the
/// Go encoder's default). A frame asking for more is refused before
/// anything is allocated.
fn zstd_window_log(limit: usize) -> u32 {
    let need = usize::BITS - limit.saturating_sub(1).leading_zeros();
    need.clamp(23, 30)
}

/// Reads `r` to the end, or fails once more than `limit` bytes came out.
fn read_bounded(
    r: impl Read,
    in_len: usize,
    limit: usize,
    what: &str,
) -> Result<Bytes, DecodeError> {
    // a first guess: 4x the compressed size, never past the limit
    let mut out = Vec::with_capacity(in_len.saturating_mul(4).min(limit).max(64));
    match r.take(limit as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > limit => Err(DecodeError::TooLarge),
        Ok(_) => Ok(Bytes::from(out)),
        Err(e) => Err(DecodeError::Invalid(format!("invalid {what} body: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }
    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn parses_codings_case_insensitively() {
        assert_eq!(Encoding::parse(None), Ok(Encoding::Identity));
        assert_eq!(Encoding::parse(Some(b"GZip")), Ok(Encoding::Gzip));
        assert_eq!(Encoding::parse(Some(b"x-gzip")), Ok(Encoding::Gzip));
        assert_eq!(Encoding::parse(Some(b" Deflate ")), Ok(Encoding::Deflate));
        assert_eq!(Encoding::parse(Some(b"zstd")), Ok(Encoding::Zstd));
        assert_eq!(Encoding::parse(Some(b"br")), Err("\"br\"".into()));
        assert!(Encoding::parse(Some(b"gzip, zstd")).is_err());
    }

    #[test]
    fn deflate_takes_zlib_and_raw_streams() {
        let data: Vec<u8> = (0..5000u32).flat_map(|i| i.to_le_bytes()).collect();
        for body in [zlib(&data), raw_deflate(&data)] {
            let got = decode(Encoding::Deflate, &body, 1 << 20).unwrap();
            assert_eq!(got.as_ref(), data.as_slice());
        }
        // every raw stream of the data at every level decodes too, even one
        // whose first bytes happen to look like a zlib header
        for level in 0..=9 {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
            e.write_all(&data).unwrap();
            let body = e.finish().unwrap();
            assert_eq!(
                decode(Encoding::Deflate, &body, 1 << 20).unwrap().as_ref(),
                data.as_slice()
            );
        }
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let zeros = vec![0u8; 16 << 20];
        let z = zstd::encode_all(zeros.as_slice(), 19).unwrap();
        assert_eq!(
            decode(Encoding::Zstd, &z, 1 << 20),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(
            decode(Encoding::Deflate, &zlib(&zeros), 1 << 20),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(
            decode(Encoding::Deflate, &raw_deflate(&zeros), 1 << 20),
            Err(DecodeError::TooLarge)
        );
        // exactly the limit is fine
        let z = zstd::encode_all(&zeros[..1 << 20], 3).unwrap();
        assert_eq!(
            decode(Encoding::Zstd, &z, 1 << 20).map(|b| b.len()),
            Ok(1 << 20)
        );
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        for enc in [Encoding::Gzip, Encoding::Deflate, Encoding::Zstd] {
            assert!(matches!(
                decode(enc, b"\x28\xb5\x2f\xfd garbage", 1 << 20),
                Err(DecodeError::Invalid(_))
            ));
        }
    }

    #[test]
    fn zstd_window_bound() {
        assert_eq!(zstd_window_log(4 << 20), 23);
        assert_eq!(zstd_window_log(64 << 20), 26);
        assert_eq!(zstd_window_log((64 << 20) + 1), 27);
    }
}
