//! Reading (and writing) the IDX format that MNIST ships in.
//!
//! Layout, all big-endian: two zero bytes, a type code (byte 2), the number of dimensions
//! (byte 3), one `u32` per dimension, then the elements in row-major order. Files are often
//! gzip-compressed; compression is detected from the gzip magic bytes `1f 8b`, not from the file
//! name, because renamed or re-compressed downloads are common.
//!
//! The header is untrusted input. Everything it declares is validated *before* memory is
//! allocated for it: the dimension count, an overflow-checked byte size, and, for raw input, that
//! the bytes are actually there. Gzip input is inflated through [`Read::take`] capped one byte
//! past the declared size, into a buffer that grows only as data really arrives, so neither a
//! lying header ("4 billion images") nor a gzip bomb can cause a huge allocation; a header
//! declaring more than the machine's memory is refused before anything is inflated (a few MB
//! of gzip can hold gigabytes of real zeros).
//!
//! This file is the validating reader; `format.rs` the data model ([`IdxArray`], [`IdxData`])
//! and its encoding.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::error::{DataError, Result};

mod format;

use format::ElemType;
pub use format::{IdxArray, IdxData, MAX_DIMS};

/// Deflate cannot expand data by more than about 1032:1, so a gzip file of `n` bytes cannot
/// decompress to more than `n * 1032` bytes (plus a little per member); only that much is ever
/// reserved up front.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// The first two bytes of every gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// What a validated header declares.
struct Header {
    elem: ElemType,
    dims: Vec<usize>,
    /// Total payload bytes, overflow-checked.
    payload_bytes: u64,
}

/// Validates the fixed 4-byte prefix: magic, type code, dimension count. Returns the element
/// type and the dimension count.
fn check_prefix(prefix: [u8; 4], path: &Path) -> Result<(ElemType, usize)> {
    if prefix[0] != 0 || prefix[1] != 0 {
        return Err(DataError::BadMagic { path: path.to_path_buf(), found: u32::from_be_bytes(prefix) });
    }
    let elem = ElemType::from_code(prefix[2])
        .ok_or_else(|| DataError::UnknownType { path: path.to_path_buf(), code: prefix[2] })?;
    let ndims = prefix[3];
    if ndims == 0 || ndims > MAX_DIMS {
        return Err(DataError::BadDimCount { path: path.to_path_buf(), dims: ndims });
    }
    Ok((elem, ndims as usize))
}

/// Parses the dimension words and computes the payload size with overflow checks, so the size
/// is known to be addressable before anything is allocated for it.
fn check_dims(elem: ElemType, dim_bytes: &[u8], path: &Path) -> Result<Header> {
    let raw: Vec<u64> =
        dim_bytes.chunks_exact(4).map(|c| u32::from_be_bytes(c.try_into().expect("4-byte chunk")) as u64).collect();
    let too_large = || DataError::TooLarge { path: path.to_path_buf(), dims: raw.clone(), element: elem.name() };
    let payload_bytes = raw
        .iter()
        .try_fold(elem.size() as u64, |acc, &d| acc.checked_mul(d))
        .filter(|&b| b <= isize::MAX as u64)
        .ok_or_else(too_large)?;
    // Each dimension is <= u32::MAX and their product fits in isize, so these casts are exact
    // (on 16-bit targets the isize bound fails first for any large dimension).
    let dims = raw.iter().map(|&d| usize::try_from(d).map_err(|_| too_large())).collect::<Result<_>>()?;
    Ok(Header { elem, dims, payload_bytes })
}

/// Parses an IDX file already in memory, raw or gzip-compressed. `source` names the data in
/// error messages (usually its path).
///
/// Never panics on malformed input; every defect is a [`DataError`] naming `source`.
pub fn parse_idx(bytes: &[u8], source: &str) -> Result<IdxArray> {
    let path = Path::new(source);
    if bytes.starts_with(&GZIP_MAGIC) { parse_gzip(bytes, path) } else { parse_raw(bytes, path) }
}

/// Reads and parses an IDX file, raw or gzip-compressed (detected from its content).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    // Reading the whole file is bounded by its real size, not by anything the header claims.
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    parse_idx(&bytes, &path.to_string_lossy())
}

fn parse_raw(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    let truncated_header = |needed: usize| DataError::TruncatedHeader {
        path: path.to_path_buf(),
        needed_bytes: needed as u64,
        actual_bytes: bytes.len() as u64,
        gzip: false,
    };
    let prefix: [u8; 4] = bytes.get(..4).ok_or_else(|| truncated_header(4))?.try_into().expect("4 bytes");
    let (elem, ndims) = check_prefix(prefix, path)?;
    let header_len = 4 + 4 * ndims;
    let dim_bytes = bytes.get(4..header_len).ok_or_else(|| truncated_header(header_len))?;
    let header = check_dims(elem, dim_bytes, path)?;
    let payload = &bytes[header_len..];
    check_payload_len(&header, payload.len() as u64, false, path)?;
    Ok(IdxArray { data: header.elem.decode(payload), dims: header.dims })
}

fn parse_gzip(compressed: &[u8], path: &Path) -> Result<IdxArray> {
    let mut decoder = MultiGzDecoder::new(compressed);
    let mut produced = 0u64;

    // Header first, in two steps, so it is validated before any payload is inflated.
    let mut prefix = [0u8; 4];
    let got = read_full(&mut decoder, &mut prefix, path, &mut produced)?;
    let truncated_header = |needed: usize, actual: u64| DataError::TruncatedHeader {
        path: path.to_path_buf(),
        needed_bytes: needed as u64,
        actual_bytes: actual,
        gzip: true,
    };
    if got < 4 {
        return Err(truncated_header(4, got as u64));
    }
    let (elem, ndims) = check_prefix(prefix, path)?;
    let mut dim_bytes = vec![0u8; 4 * ndims];
    let got = read_full(&mut decoder, &mut dim_bytes, path, &mut produced)?;
    if got < dim_bytes.len() {
        return Err(truncated_header(4 + 4 * ndims, 4 + got as u64));
    }
    let header = check_dims(elem, &dim_bytes, path)?;
    // More than the machine's memory (checked before inflating anything): a lying header or a
    // gzip bomb, whose zeros would otherwise be inflated until the process is killed.
    if let Some(memory) = strata_core::Device::Cpu.total_memory()
        && header.payload_bytes > memory
    {
        return Err(DataError::LargerThanMemory {
            path: path.to_path_buf(),
            dims: header.dims,
            element: elem.name(),
            declared_bytes: header.payload_bytes,
            memory_bytes: memory,
        });
    }

    // Inflate at most one byte more than declared: enough to detect trailing data, never more.
    // Reserve the declared size only when deflate could actually produce it from this input;
    // otherwise the buffer grows as data arrives.
    let plausible = (compressed.len() as u64).saturating_mul(MAX_DEFLATE_RATIO);
    let mut payload = Vec::with_capacity(header.payload_bytes.min(plausible) as usize);
    let limit = header.payload_bytes + 1;
    decoder.take(limit).read_to_end(&mut payload).map_err(|source| DataError::Gzip {
        path: path.to_path_buf(),
        source,
        decompressed_bytes: produced + payload.len() as u64,
    })?;
    check_payload_len(&header, payload.len() as u64, true, path)?;
    Ok(IdxArray { data: header.elem.decode(&payload), dims: header.dims })
}

/// Fills `buf` from `reader` until it is full or the stream ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8], path: &Path, produced: &mut u64) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                *produced += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(DataError::Gzip { path: path.to_path_buf(), source, decompressed_bytes: *produced });
            }
        }
    }
    Ok(filled)
}

/// The payload must be exactly the declared size: shorter means truncation, longer means the
/// header lies or junk was appended; either way the data cannot be trusted.
fn check_payload_len(header: &Header, actual: u64, gzip: bool, path: &Path) -> Result<()> {
    let details = || (path.to_path_buf(), header.dims.clone(), header.elem.name());
    if actual < header.payload_bytes {
        let (path, dims, element) = details();
        return Err(DataError::Truncated {
            path,
            dims,
            element,
            expected_bytes: header.payload_bytes,
            actual_bytes: actual,
            gzip,
        });
    }
    if actual > header.payload_bytes {
        let (path, dims, element) = details();
        return Err(DataError::TrailingBytes {
            path,
            dims,
            element,
            expected_bytes: header.payload_bytes,
            actual_bytes: actual,
            gzip,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// A valid 3-image 2x2 u8 file.
    fn small() -> Vec<u8> {
        IdxArray { dims: vec![3, 2, 2], data: IdxData::U8((0..12).collect()) }.to_bytes()
    }

    /// Runs `check` on the raw bytes and on their gzip-compressed form.
    fn both(bytes: &[u8], check: impl Fn(DataError, bool)) {
        for gzip in [false, true] {
            let input = if gzip { gz(bytes) } else { bytes.to_vec() };
            let err = parse_idx(&input, "dir/crafted.idx").expect_err("malformed input must be rejected");
            assert!(err.to_string().contains("`dir/crafted.idx`"), "message lacks the path: {err}");
            check(err, gzip);
        }
    }

    #[test]
    fn small_file_parses() {
        let a = parse_idx(&small(), "small").unwrap();
        assert_eq!(a.dims, vec![3, 2, 2]);
        assert_eq!(a.data, IdxData::U8((0..12).collect()));
        assert_eq!(parse_idx(&gz(&small()), "small").unwrap(), a);
    }

    #[test]
    fn every_type_round_trips_big_endian() {
        let arrays = [
            IdxData::I8(vec![-128, -1, 0, 127]),
            IdxData::I16(vec![-32768, -2, 258, 32767]),
            IdxData::I32(vec![i32::MIN, -3, 0x0102_0304, i32::MAX]),
            IdxData::F32(vec![-1.5, 0.0, 3.25, f32::MAX]),
            IdxData::F64(vec![-1e300, 0.5, 2.0, f64::MIN_POSITIVE]),
        ];
        for data in arrays {
            let a = IdxArray { dims: vec![2, 2], data };
            let bytes = a.to_bytes();
            assert_eq!(bytes[2], a.data.type_code());
            assert_eq!(parse_idx(&bytes, "t").unwrap(), a);
            assert_eq!(parse_idx(&gz(&bytes), "t").unwrap(), a);
        }
        // Big-endian on disk: 0x0102 is stored as 01 02.
        let a = IdxArray { dims: vec![1], data: IdxData::I16(vec![0x0102]) };
        assert_eq!(&a.to_bytes()[8..], &[1, 2]);
    }

    #[test]
    fn to_f32_vec_is_unscaled() {
        assert_eq!(IdxData::U8(vec![0, 255]).to_f32_vec(), vec![0.0, 255.0]);
        assert_eq!(IdxData::I16(vec![-7]).to_f32_vec(), vec![-7.0]);
    }

    #[test]
    fn wrong_magic() {
        let mut b = small();
        b[0] = 0x12;
        both(&b, |e, _| assert!(matches!(e, DataError::BadMagic { found: 0x1200_0803, .. }), "{e:?}"));
        // An HTML error page saved under the data file's name.
        both(b"<!DOCTYPE html><html>", |e, _| assert!(matches!(e, DataError::BadMagic { .. }), "{e:?}"));
    }

    #[test]
    fn unknown_type_code() {
        let mut b = small();
        b[2] = 0x0A;
        both(&b, |e, _| assert!(matches!(e, DataError::UnknownType { code: 0x0A, .. }), "{e:?}"));
    }

    #[test]
    fn zero_or_too_many_dims() {
        both(&[0, 0, 8, 0], |e, _| assert!(matches!(e, DataError::BadDimCount { dims: 0, .. }), "{e:?}"));
        let mut b = vec![0, 0, 8, 9];
        b.extend(std::iter::repeat_n([0, 0, 0, 1], 9).flatten());
        b.push(7);
        both(&b, |e, _| assert!(matches!(e, DataError::BadDimCount { dims: 9, .. }), "{e:?}"));
    }

    #[test]
    fn truncated_header() {
        both(&[], |e, gzip| {
            assert!(
                matches!(e, DataError::TruncatedHeader { needed_bytes: 4, actual_bytes: 0, gzip: g, .. } if g == gzip),
                "{e:?}"
            )
        });
        both(&small()[..10], |e, _| {
            assert!(matches!(e, DataError::TruncatedHeader { needed_bytes: 16, actual_bytes: 10, .. }), "{e:?}")
        });
    }

    #[test]
    fn truncated_payload() {
        let b = small();
        both(&b[..b.len() - 1], |e, gzip| {
            assert!(
                matches!(e, DataError::Truncated { expected_bytes: 12, actual_bytes: 11, gzip: g, .. } if g == gzip),
                "{e:?}"
            );
            let msg = e.to_string();
            assert!(msg.contains("3 records of 2x2 u8 (12 bytes)") && msg.contains("re-download"), "{msg}");
        });
    }

    #[test]
    fn trailing_bytes() {
        let mut b = small();
        b.extend_from_slice(&[1, 2, 3]);
        both(&b, |e, gzip| {
            let want = if gzip { 13 } else { 15 };
            assert!(
                matches!(e, DataError::TrailingBytes { expected_bytes: 12, actual_bytes: a, .. } if a == want),
                "{e:?}"
            );
        });
    }

    #[test]
    fn lying_header_four_billion_images() {
        // 4e9 images of 28x28 (3.1 TB) declared in a file of a few bytes: must fail fast,
        // without trying to allocate what the header claims.
        let mut b = vec![0, 0, 8, 3];
        for d in [4_000_000_000u32, 28, 28] {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(&[0; 100]);
        let start = std::time::Instant::now();
        // Compressed, it is refused before inflating when the machine has less memory than
        // that (every machine this runs on); raw, its bytes are simply not there.
        let memory = strata_core::Device::Cpu.total_memory();
        both(&b, |e, gzip| {
            if gzip && let Some(m) = memory.filter(|&m| m < 3_136_000_000_000) {
                assert!(
                    matches!(&e, DataError::LargerThanMemory { declared_bytes: 3_136_000_000_000, memory_bytes, .. } if *memory_bytes == m),
                    "{e:?}"
                );
                let msg = e.to_string();
                assert!(msg.contains("4000000000 records of 28x28 u8 (3136000000000 bytes once decompressed), more than this machine's"), "{msg}");
                return;
            }
            assert!(
                matches!(e, DataError::Truncated { expected_bytes: 3_136_000_000_000, actual_bytes: 100, .. }),
                "{e:?}"
            );
            let msg = e.to_string();
            assert!(msg.contains("4000000000 records of 28x28 u8 (3136000000000 bytes)"), "{msg}");
        });
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn size_overflow_is_too_large() {
        let mut b = vec![0, 0, 0x0E, 8];
        for _ in 0..8 {
            b.extend_from_slice(&u32::MAX.to_be_bytes());
        }
        both(&b, |e, _| assert!(matches!(e, DataError::TooLarge { element: "f64", .. }), "{e:?}"));
    }

    #[test]
    fn gzip_bomb_is_not_inflated() {
        // 64 MiB of zeros compress to ~64 KiB; the header declares 16 bytes. Reading stops one
        // byte past the declared size, so this is quick and small.
        let mut raw = IdxArray { dims: vec![16], data: IdxData::U8(vec![0; 16]) }.to_bytes();
        raw.resize(raw.len() + (64 << 20), 0);
        let bomb = gz(&raw);
        let e = parse_idx(&bomb, "bomb.gz").unwrap_err();
        assert!(
            matches!(e, DataError::TrailingBytes { expected_bytes: 16, actual_bytes: 17, gzip: true, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("at least 17"), "{e}");
    }

    #[test]
    fn corrupt_gzip_stream() {
        let mut g = gz(&small());
        let n = g.len();
        g.truncate(n - 12); // cut into the deflate data and the trailer
        let e = parse_idx(&g, "cut.gz").unwrap_err();
        assert!(
            matches!(e, DataError::Gzip { .. } | DataError::Truncated { .. } | DataError::TruncatedHeader { .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("`cut.gz`"), "{e}");
    }

    #[test]
    fn zero_sized_dims_are_fine_when_consistent() {
        let b = IdxArray { dims: vec![0, 28, 28], data: IdxData::U8(vec![]) }.to_bytes();
        let a = parse_idx(&b, "empty").unwrap();
        assert_eq!(a.dims, vec![0, 28, 28]);
        assert!(a.data.is_empty());
        let mut b2 = b.clone();
        b2.push(0);
        assert!(matches!(parse_idx(&b2, "empty").unwrap_err(), DataError::TrailingBytes { .. }));
    }

    #[test]
    fn missing_file_is_io_error() {
        let e = read_idx(Path::new("/definitely/not/here.idx")).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }));
        assert!(e.to_string().contains("/definitely/not/here.idx"));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = parse_idx(&bytes, "random");
                let _ = parse_idx(&gz(&bytes), "random.gz");
            }

            #[test]
            fn random_header_then_bytes_never_panic(
                code in prop_oneof![Just(8u8), Just(9), Just(0xB), Just(0xC), Just(0xD), Just(0xE), any::<u8>()],
                dims in proptest::collection::vec(any::<u32>(), 0..10),
                tail in proptest::collection::vec(any::<u8>(), 0..64),
            ) {
                let mut b = vec![0, 0, code, dims.len() as u8];
                for d in &dims { b.extend_from_slice(&d.to_be_bytes()); }
                b.extend_from_slice(&tail);
                let _ = parse_idx(&b, "random");
                let _ = parse_idx(&gz(&b), "random.gz");
            }

            #[test]
            fn truncations_and_corruptions_never_panic(cut in 0usize..80, pos in 0usize..80, byte in any::<u8>()) {
                let valid = IdxArray { dims: vec![2, 3, 4], data: IdxData::I16((0..24).collect()) }.to_bytes();
                let cut = cut.min(valid.len());
                let r = parse_idx(&valid[..cut], "cut");
                prop_assert!(cut == valid.len() || r.is_err());
                let g = gz(&valid);
                let _ = parse_idx(&g[..cut.min(g.len())], "cut.gz");
                let mut corrupt = valid.clone();
                let p = pos % corrupt.len();
                corrupt[p] = byte;
                let _ = parse_idx(&corrupt, "corrupt");
                let mut gzc = gz(&valid);
                let p = pos % gzc.len();
                gzc[p] = byte;
                let _ = parse_idx(&gzc, "corrupt.gz");
            }
        }
    }
}
