//! Avro object container files, written and read directly for the archive's one record schema.
//!
//! The layout is the Avro specification's: the magic `Obj\x01`, a metadata map (the schema, the
//! codec and the archive's own entries), a 16-byte sync marker, then blocks of records (a
//! count, a byte size, the records — compressed with the `zstandard` codec — and the marker
//! again). Any Avro reader with zstandard (Java Avro since 1.9, apache-avro, fastavro) reads
//! these files; writing and reading them here, without a generic `Value` tree per record, is
//! what lets the archiver and replay keep up with the log. Objects archived with the `deflate`
//! codec (before zstandard) and uncompressed ones (`null`) are read too.
//!
//! Writing is deterministic: the same records with the same marker and metadata always give
//! the same bytes with the same zstd library (blocks are cut by size, never by time). Nothing
//! relies on it across versions: a retried write adopts the object already written when its
//! records are the log's, whatever its bytes.

use std::io::Read;

use crate::record::{ArchivedRecord, LogRecord};

/// The Avro container magic.
const MAGIC: &[u8; 4] = b"Obj\x01";

/// A block is closed once its records take this many bytes before compression.
const BLOCK_BYTES: usize = 64 * 1024;

/// The zstd level: the fastest (1). Archive objects are written once per record and read
/// rarely; the speed of writing them is what keeps the archiver up with the log, and level 1
/// already compresses these records better than deflate did.
const ZSTD_LEVEL: i32 = 1;

/// The most bytes one block may decompress to: a corrupt or hostile object cannot make a
/// reader allocate without bound.
const MAX_BLOCK_BYTES: usize = 1 << 30;

/// Bytes that are not a container this module can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a readable avro container: {0}")]
pub struct ContainerError(pub String);

fn bad(reason: impl Into<String>) -> ContainerError {
    ContainerError(reason.into())
}

/// A container whose records are encoded but not yet compressed: the part of writing that
/// reads the records ([`Unsealed::new`], cheap: their bytes copied once) apart from the part
/// that does not ([`Unsealed::seal`]: compression and framing, most of the work), so the
/// latter can run on another thread while the records' owner goes on.
pub struct Unsealed {
    header: Vec<u8>,
    marker: [u8; 16],
    /// Each block's record count and uncompressed bytes.
    blocks: Vec<(i64, Vec<u8>)>,
}

impl Unsealed {
    /// The container of `records` (encoded with [`LogRecord::write_avro`]), with `metadata`
    /// in the given order (besides `avro.codec`, which is added first) and `marker`.
    pub fn new<R: LogRecord>(
        marker: &[u8; 16],
        metadata: &[(&str, &[u8])],
        records: &[R],
    ) -> Unsealed {
        let mut header = MAGIC.to_vec();
        write_long(&mut header, metadata.len() as i64 + 1);
        write_bytes(&mut header, b"avro.codec");
        write_bytes(&mut header, b"zstandard");
        for (key, value) in metadata {
            write_bytes(&mut header, key.as_bytes());
            write_bytes(&mut header, value);
        }
        write_long(&mut header, 0);
        header.extend_from_slice(marker);
        let mut blocks = Vec::new();
        let mut block = Vec::with_capacity(BLOCK_BYTES + 4096);
        let mut count = 0i64;
        for record in records {
            record.write_avro(&mut block);
            count += 1;
            if block.len() >= BLOCK_BYTES {
                let full = std::mem::replace(&mut block, Vec::with_capacity(BLOCK_BYTES + 4096));
                blocks.push((count, full));
                count = 0;
            }
        }
        if count > 0 {
            blocks.push((count, block));
        }
        Unsealed {
            header,
            marker: *marker,
            blocks,
        }
    }

    /// The container's bytes: every block compressed and framed.
    pub fn seal(self) -> Result<Vec<u8>, ContainerError> {
        let mut zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL)
            .map_err(|e| bad(format!("zstd cannot start: {e}")))?;
        let mut out = self.header;
        for (count, block) in &self.blocks {
            write_block(&mut zstd, &mut out, &self.marker, *count, block)?;
        }
        Ok(out)
    }
}

fn write_block(
    zstd: &mut zstd::bulk::Compressor<'_>,
    out: &mut Vec<u8>,
    marker: &[u8; 16],
    count: i64,
    block: &[u8],
) -> Result<(), ContainerError> {
    let compressed = zstd
        .compress(block)
        .map_err(|e| bad(format!("zstd failed: {e}")))?;
    write_long(out, count);
    write_long(out, compressed.len() as i64);
    out.extend_from_slice(&compressed);
    out.extend_from_slice(marker);
    Ok(())
}

/// A block codec this module reads.
#[derive(Clone, Copy)]
enum Codec {
    Null,
    Deflate,
    Zstandard,
}

impl Codec {
    fn of(name: &[u8]) -> Result<Codec, ContainerError> {
        match name {
            b"null" => Ok(Codec::Null),
            b"deflate" => Ok(Codec::Deflate),
            b"zstandard" => Ok(Codec::Zstandard),
            other => Err(bad(format!(
                "codec {} is not supported (null, deflate and zstandard are)",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    /// A block's records' bytes: `data` itself, or decompressed into `buffer`.
    fn decompress<'a>(
        self,
        data: &'a [u8],
        buffer: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], ContainerError> {
        match self {
            Codec::Null => return Ok(data),
            Codec::Deflate => {
                *buffer = miniz_oxide::inflate::decompress_to_vec_with_limit(data, MAX_BLOCK_BYTES)
                    .map_err(|e| bad(format!("a block does not inflate: {e:?}")))?;
            }
            Codec::Zstandard => {
                buffer.clear();
                let decoder = zstd::stream::read::Decoder::with_buffer(data)
                    .map_err(|e| bad(format!("zstd cannot start: {e}")))?;
                decoder
                    .take(MAX_BLOCK_BYTES as u64 + 1)
                    .read_to_end(buffer)
                    .map_err(|e| bad(format!("a block does not decompress: {e}")))?;
                if buffer.len() > MAX_BLOCK_BYTES {
                    return Err(bad("a block decompresses to more than 1 GiB"));
                }
            }
        }
        Ok(buffer.as_slice())
    }
}

/// A container read back: its metadata and its records.
#[derive(Debug)]
pub struct Container {
    /// The metadata entries, in file order.
    pub metadata: Vec<(String, Vec<u8>)>,
    /// The records.
    pub records: Vec<ArchivedRecord>,
}

impl Container {
    /// The metadata entry `key`.
    pub fn meta(&self, key: &str) -> Option<&[u8]> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// Reads a container of archive records (codec `null`, `deflate` or `zstandard`), checking
/// every block's sync marker.
pub fn read(bytes: &[u8]) -> Result<Container, ContainerError> {
    let mut input = Input::new(bytes);
    if input.take(4)? != MAGIC {
        return Err(bad("no avro magic"));
    }
    let mut metadata = Vec::new();
    loop {
        let count = input.block_count()?;
        if count == 0 {
            break;
        }
        for _ in 0..count {
            let key = String::from_utf8(input.bytes()?.to_vec())
                .map_err(|_| bad("a metadata key is not utf-8"))?;
            let value = input.bytes()?.to_vec();
            metadata.push((key, value));
        }
    }
    let marker = input.take(16)?;
    let codec = Codec::of(
        metadata
            .iter()
            .find(|(k, _)| k == "avro.codec")
            .map_or(&b"null"[..], |(_, v)| v.as_slice()),
    )?;
    let mut records = Vec::new();
    let mut buffer = Vec::new();
    while !input.is_empty() {
        let count = input.long()?;
        let size = input.long()?;
        if count < 0 || size < 0 {
            return Err(bad("a block has a negative count or size"));
        }
        let data = input.take(size as usize)?;
        if input.take(16)? != marker {
            return Err(bad("a block does not end with the file's sync marker"));
        }
        let mut block = Input::new(codec.decompress(data, &mut buffer)?);
        for _ in 0..count {
            records.push(ArchivedRecord::read_avro(&mut block)?);
        }
        if !block.is_empty() {
            return Err(bad("a block holds more bytes than its records"));
        }
    }
    Ok(Container { metadata, records })
}

/// Appends `n` in Avro's zig-zag variable-length encoding.
pub(crate) fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends Avro `bytes` (or a `string`'s UTF-8): the length, then the bytes.
pub(crate) fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

/// Avro binary input, every read bounds-checked.
pub(crate) struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Input<'a> {
        Input { bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ContainerError> {
        if n > self.bytes.len() {
            return Err(bad("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// A zig-zag `long` of at most 10 bytes.
    pub(crate) fn long(&mut self) -> Result<i64, ContainerError> {
        let mut z: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.take(1)?.first().ok_or_else(|| bad("truncated"))?;
            z |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(bad("a long takes more than 10 bytes"))
    }

    /// The item count of the next block of an Avro array or map (0: the end); a negative
    /// count is followed by the block's byte size, which is skipped.
    pub(crate) fn block_count(&mut self) -> Result<u64, ContainerError> {
        let count = self.long()?;
        if count < 0 {
            self.long()?;
        }
        Ok(count.unsigned_abs())
    }

    /// An `int`: a `long` in the range of `i32`.
    pub(crate) fn int(&mut self) -> Result<i32, ContainerError> {
        i32::try_from(self.long()?).map_err(|_| bad("an int is out of range"))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], ContainerError> {
        let len = self.long()?;
        let len = usize::try_from(len).map_err(|_| bad("a negative length"))?;
        self.take(len)
    }

    pub(crate) fn string(&mut self) -> Result<String, ContainerError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| bad("a string is not utf-8"))
    }

    /// A union's branch index, which must be below `branches`.
    pub(crate) fn branch(&mut self, branches: i64) -> Result<i64, ContainerError> {
        let index = self.long()?;
        if !(0..branches).contains(&index) {
            return Err(bad("a union branch is out of range"));
        }
        Ok(index)
    }
}
