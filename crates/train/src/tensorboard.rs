//! TensorBoard event files, written by hand: TFRecord framing (length, masked CRC32C, data,
//! masked CRC32C) around `Event` protobufs encoded field by field, so no protobuf crate is needed.
//! TensorBoard reads every file named `*tfevents*` in a run directory, so a resumed run simply
//! opens a new file beside the old one.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Writes scalars to a TensorBoard event file in a run directory.
///
/// The file is `events.out.tfevents.<unix-seconds>.<hostname>.strata`; its first record says
/// `brain.Event:2`, as TensorFlow's and PyTorch's writers do. Records are buffered: call
/// [`EventWriter::flush`] at the end of each epoch (dropping the writer flushes too, silently).
pub struct EventWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates a new event file in `dir` (which must exist) and writes its version record.
    /// Never overwrites: if a file of that name exists already, a numbered name is used.
    pub fn create(dir: &Path) -> io::Result<EventWriter> {
        let wall_time = now();
        let base = format!("events.out.tfevents.{}.{}.strata", wall_time as u64, hostname());
        let mut n = 0;
        let (file, path) = loop {
            let name = if n == 0 { base.clone() } else { format!("{base}.{n}") };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(io::Error::new(e.kind(), format!("creating {}: {e}", path.display()))),
            }
        };
        let mut writer = EventWriter { file: BufWriter::new(file), path };
        writer.write_event(&encode_event(wall_time, None, Payload::FileVersion("brain.Event:2")))?;
        writer.flush()?;
        Ok(writer)
    }

    /// The event file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one scalar point: `tag` (e.g. `train/loss`) has `value` at `step`.
    pub fn add_scalar(&mut self, tag: &str, value: f32, step: i64) -> io::Result<()> {
        self.write_event(&encode_event(now(), Some(step), Payload::Scalar { tag, value }))
    }

    /// Writes the buffered records to the file, so that a running TensorBoard sees them.
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn write_event(&mut self, event: &[u8]) -> io::Result<()> {
        self.file.write_all(&frame_record(event))
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The machine's name, reduced to characters that are safe in a file name.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let name: String =
        raw.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
    if name.is_empty() { "localhost".to_string() } else { name }
}

// ---------------------------------------------------------------------------------------------
// TFRecord framing

/// One TFRecord: `u64 LE length`, `masked_crc32c(length bytes)` (u32 LE), the data,
/// `masked_crc32c(data)` (u32 LE).
fn frame_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// TFRecord's masked CRC: rotate right by 15 bits and add a constant, so that a CRC stored
/// inside checksummed data does not checksum to a fixed value.
fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one table lookup per byte: event
/// files are a few kilobytes per epoch, so the hardware instruction would buy nothing.
fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &b| CRC32C_TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8))
}

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

// ---------------------------------------------------------------------------------------------
// Protobuf encoding of the few messages we write (tensorflow/core/util/event.proto, summary.proto):
//   Event   { double wall_time = 1; int64 step = 2; oneof { string file_version = 3;
//             Summary summary = 5; } }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; oneof { float simple_value = 2; } }

enum Payload<'a> {
    FileVersion(&'a str),
    Scalar { tag: &'a str, value: f32 },
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

fn encode_event(wall_time: f64, step: Option<i64>, payload: Payload) -> Vec<u8> {
    let mut event = Vec::new();
    put_key(&mut event, 1, WIRE_FIXED64);
    event.extend_from_slice(&wall_time.to_le_bytes());
    if let Some(step) = step {
        put_key(&mut event, 2, WIRE_VARINT);
        put_varint(&mut event, step as u64); // int64: negative values take ten bytes
    }
    match payload {
        Payload::FileVersion(version) => put_bytes(&mut event, 3, version.as_bytes()),
        Payload::Scalar { tag, value } => {
            let mut v = Vec::new();
            put_bytes(&mut v, 1, tag.as_bytes());
            put_key(&mut v, 2, WIRE_FIXED32);
            v.extend_from_slice(&value.to_le_bytes());
            let mut summary = Vec::new();
            put_bytes(&mut summary, 1, &v);
            put_bytes(&mut event, 5, &summary);
        }
    }
    event
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    // -- a tiny reader, independent of the writer's helpers ------------------------------------

    /// Splits a file into its records, checking both CRCs of each.
    fn read_records(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut records = Vec::new();
        while !bytes.is_empty() {
            assert!(bytes.len() >= 12, "truncated header");
            let len_bytes = &bytes[..8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let len_crc = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
            assert_eq!(len_crc, masked_crc32c(len_bytes), "length CRC");
            assert!(bytes.len() >= 12 + len + 4, "truncated record");
            let data = &bytes[12..12 + len];
            let data_crc = u32::from_le_bytes(bytes[12 + len..16 + len].try_into().unwrap());
            assert_eq!(data_crc, masked_crc32c(data), "data CRC");
            records.push(data.to_vec());
            bytes = &bytes[16 + len..];
        }
        records
    }

    #[derive(Debug, PartialEq)]
    enum Field {
        Varint(u64),
        Fixed64([u8; 8]),
        Fixed32([u8; 4]),
        Bytes(Vec<u8>),
    }

    fn varint(bytes: &mut &[u8]) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = bytes[0];
            *bytes = &bytes[1..];
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    /// Decodes one message into (field number, value) pairs, in order.
    fn decode(mut bytes: &[u8]) -> Vec<(u64, Field)> {
        let mut fields = Vec::new();
        while !bytes.is_empty() {
            let key = varint(&mut bytes);
            let value = match key & 7 {
                0 => Field::Varint(varint(&mut bytes)),
                1 => {
                    let v = bytes[..8].try_into().unwrap();
                    bytes = &bytes[8..];
                    Field::Fixed64(v)
                }
                5 => {
                    let v = bytes[..4].try_into().unwrap();
                    bytes = &bytes[4..];
                    Field::Fixed32(v)
                }
                2 => {
                    let n = varint(&mut bytes) as usize;
                    let v = bytes[..n].to_vec();
                    bytes = &bytes[n..];
                    Field::Bytes(v)
                }
                w => panic!("unexpected wire type {w}"),
            };
            fields.push((key >> 3, value));
        }
        fields
    }

    /// A decoded Event: (wall_time, step, file_version, [(tag, simple_value)]).
    type Decoded = (f64, Option<i64>, Option<String>, Vec<(String, f32)>);

    fn decode_event(bytes: &[u8]) -> Decoded {
        let (mut wall_time, mut step, mut version, mut values) = (f64::NAN, None, None, Vec::new());
        for (field, value) in decode(bytes) {
            match (field, value) {
                (1, Field::Fixed64(b)) => wall_time = f64::from_le_bytes(b),
                (2, Field::Varint(v)) => step = Some(v as i64),
                (3, Field::Bytes(b)) => version = Some(String::from_utf8(b).unwrap()),
                (5, Field::Bytes(summary)) => {
                    for (field, value) in decode(&summary) {
                        let (1, Field::Bytes(v)) = (field, value) else { panic!("Summary field {field}") };
                        let mut tag_value = (String::new(), f32::NAN);
                        for (field, value) in decode(&v) {
                            match (field, value) {
                                (1, Field::Bytes(t)) => tag_value.0 = String::from_utf8(t).unwrap(),
                                (2, Field::Fixed32(f)) => tag_value.1 = f32::from_le_bytes(f),
                                other => panic!("unexpected Value field {other:?}"),
                            }
                        }
                        values.push(tag_value);
                    }
                }
                other => panic!("unexpected Event field {other:?}"),
            }
        }
        (wall_time, step, version, values)
    }

    // -- tests ---------------------------------------------------------------------------------

    #[test]
    fn crc32c_known_answers() {
        // The check value of CRC-32C, and the test vectors of RFC 3720 (iSCSI), appendix B.4.
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46dd_794e);
        let descending: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&descending), 0x113f_db5c);
    }

    #[test]
    fn masking_rotates_and_adds() {
        let crc = crc32c(b"123456789");
        #[allow(clippy::manual_rotate)] // spelled as in TensorFlow's crc32c.h
        let masked = ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc32c(b"123456789"), masked);
        assert_eq!(masked_crc32c(b""), 0xa282_ead8);
    }

    #[test]
    fn record_framing() {
        let record = frame_record(b"abc");
        assert_eq!(record.len(), 8 + 4 + 3 + 4);
        assert_eq!(&record[..8], &3u64.to_le_bytes());
        assert_eq!(&record[8..12], &masked_crc32c(&3u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&record[12..15], b"abc");
        assert_eq!(&record[15..], &masked_crc32c(b"abc").to_le_bytes());
        assert_eq!(read_records(&record), vec![b"abc".to_vec()]);
    }

    /// The exact bytes TensorBoard's own Python writer produces for the same two events:
    ///
    /// ```python
    /// from tensorboard.compat.proto import event_pb2, summary_pb2
    /// from tensorboard.summary.writer.record_writer import RecordWriter
    /// w = RecordWriter(open("golden", "wb"))
    /// w.write(event_pb2.Event(wall_time=1700000000.5, file_version="brain.Event:2").SerializeToString())
    /// v = summary_pb2.Summary.Value(tag="train/loss", simple_value=0.25)
    /// w.write(event_pb2.Event(wall_time=1700000001.25, step=10,
    ///                         summary=summary_pb2.Summary(value=[v])).SerializeToString())
    /// ```
    #[test]
    fn golden_records_match_tensorboards_writer() {
        let mut bytes = frame_record(&encode_event(1_700_000_000.5, None, Payload::FileVersion("brain.Event:2")));
        bytes.extend(frame_record(&encode_event(
            1_700_000_001.25,
            Some(10),
            Payload::Scalar { tag: "train/loss", value: 0.25 },
        )));
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN_HEX);
    }

    const GOLDEN_HEX: &str = concat!(
        "1800000000000000a37f4b220900002040fc54d9411a0d627261696e2e4576656e743a322b353110",
        "200000000000000029eda9500900005040fc54d941100a2a130a110a0a747261696e2f6c6f7373150000803e0369d379",
    );

    #[test]
    fn varints_and_negative_steps() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        let event = encode_event(0.0, Some(-1), Payload::Scalar { tag: "t", value: 1.0 });
        assert_eq!(decode_event(&event).1, Some(-1));
    }

    /// Writes a file with [`EventWriter`], reads it back with the decoder above. With
    /// `STRATA_TB_SAMPLE_DIR=DIR` set, the file is left in DIR for `tools/check_tensorboard.py`.
    #[test]
    fn event_writer_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::env::var_os("STRATA_TB_SAMPLE_DIR").map(PathBuf::from).unwrap_or_else(|| tmp.path().into());
        std::fs::create_dir_all(&dir).unwrap();
        let mut writer = EventWriter::create(&dir).unwrap();
        let name = writer.path().file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("events.out.tfevents.") && name.ends_with(".strata"), "{name}");
        for step in 1..=20 {
            writer.add_scalar("train/loss", 1.0 / step as f32, step).unwrap();
            writer.add_scalar("train/lr", 0.01, step).unwrap();
            if step % 10 == 0 {
                let epoch = step / 10;
                writer.add_scalar("epoch/val_acc", 0.8 + 0.05 * epoch as f32, epoch).unwrap();
            }
        }
        writer.flush().unwrap();

        // A second writer in the same second gets a fresh name instead of clobbering the first.
        let second = EventWriter::create(&dir).unwrap();
        assert_ne!(second.path(), writer.path());
        let path = writer.path().to_path_buf();
        drop((writer, second));

        let records = read_records(&std::fs::read(&path).unwrap());
        assert_eq!(records.len(), 1 + 20 * 2 + 2);
        let (wall_time, step, version, values) = decode_event(&records[0]);
        assert_eq!((step, version.as_deref(), values.len()), (None, Some("brain.Event:2"), 0));
        assert!(wall_time > 1.5e9, "wall_time {wall_time}");
        let (_, step, version, values) = decode_event(&records[1]);
        assert_eq!((step, version, values), (Some(1), None, vec![("train/loss".to_string(), 1.0)]));
        let (_, step, _, values) = decode_event(&records[records.len() - 1]);
        assert_eq!((step, values), (Some(2), vec![("epoch/val_acc".to_string(), 0.8 + 0.05 * 2.0)]));
    }

    #[test]
    fn create_names_the_missing_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("no-such-dir");
        let err = EventWriter::create(&missing).err().expect("no directory, no writer");
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }
}
