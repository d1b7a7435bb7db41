//! Response frames in pieces, so record bytes go to the socket from where they already are
//! (the log's O_DIRECT read buffer or a cached produce request), never copied into the
//! response.
//!
//! The response is encoded by `kafka-protocol` with a unique 16-byte marker standing in for
//! each partition's records; the encoded bytes are then cut at each marker and the real
//! records are spliced in as separate pieces, behind a length prefix rewritten for their real
//! size. The markers are random per response and each is checked to sit right after the length
//! prefix it must have; if any is not found where expected, the response is encoded again the
//! plain way, copying the records (correct, only slower).

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;

/// Bytes of a marker: 12 random bytes and the index of the records it stands for.
const MARKER_BYTES: usize = 16;

/// Record bytes to splice into a response: shared chunks and O_DIRECT read buffers, in order
/// (a fetch may read one partition in several rounds).
#[derive(Default)]
pub struct Records(Vec<Piece>);

impl Records {
    pub fn shared(chunks: Vec<Bytes>) -> Records {
        Records(chunks.into_iter().map(Piece::Bytes).collect())
    }

    pub fn log(read: glommio::io::ReadResult) -> Records {
        Records(vec![Piece::Log(read)])
    }

    /// Adds `more` after these records.
    pub fn append(&mut self, more: Records) {
        self.0.extend(more.0);
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|p| p.as_slice().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The size of the largest record batch here, walking the batches' length fields across
    /// the pieces (a batch may span several: the batch cache serves each as two). Records
    /// start with a whole batch, as reads return them; a walk that runs out of bytes stops.
    pub fn largest_batch(&self) -> usize {
        let mut largest = 0;
        // The next batch starts `skip` bytes into piece `piece`.
        let (mut piece, mut skip) = (0, 0usize);
        loop {
            // Skip to the batch's length field (bytes 8..12), then read it.
            let mut field = [0u8; 4];
            let mut filled = 0;
            let mut ahead = skip + 8;
            while filled < field.len() {
                let Some(p) = self.0.get(piece) else { return largest };
                let bytes = p.as_slice();
                if ahead >= bytes.len() {
                    ahead -= bytes.len();
                    piece += 1;
                    continue;
                }
                let n = (bytes.len() - ahead).min(field.len() - filled);
                field[filled..filled + n].copy_from_slice(&bytes[ahead..ahead + n]);
                filled += n;
                ahead += n;
            }
            let size = i32::from_be_bytes(field).max(0) as usize + 12;
            largest = largest.max(size);
            // The next batch starts `size - 12` bytes after the field's end.
            skip = ahead + (size - 12);
        }
    }

    fn to_bytes(&self) -> Bytes {
        match &self.0[..] {
            [Piece::Bytes(b)] => b.clone(),
            pieces => {
                let mut b = BytesMut::with_capacity(self.len());
                for p in pieces {
                    b.extend_from_slice(p.as_slice());
                }
                b.freeze()
            }
        }
    }
}

/// One piece of a response frame.
pub enum Piece {
    Bytes(Bytes),
    Log(glommio::io::ReadResult),
}

impl Piece {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Piece::Bytes(b) => b,
            Piece::Log(r) => r,
        }
    }
}

/// A whole response frame (size prefix included), in pieces to write in order.
pub struct Frame {
    pub pieces: Vec<Piece>,
}

impl Frame {
    pub fn single(bytes: Bytes) -> Frame {
        Frame {
            pieces: vec![Piece::Bytes(bytes)],
        }
    }

    pub fn len(&self) -> usize {
        self.pieces.iter().map(|p| p.as_slice().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn marker(nonce: &[u8; 12], index: usize) -> [u8; MARKER_BYTES] {
    let mut m = [0u8; MARKER_BYTES];
    m[..12].copy_from_slice(nonce);
    m[12..].copy_from_slice(&(index as u32).to_be_bytes());
    m
}

fn nonce() -> [u8; 12] {
    *uuid::Uuid::new_v4().as_bytes().first_chunk::<12>().expect("uuid has 16 bytes")
}

/// Unsigned varint, as Kafka's compact types use.
fn put_uvarint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.extend_from_slice(&[(v as u8) | 0x80]);
        v >>= 7;
    }
    out.extend_from_slice(&[v as u8]);
}

/// Encodes a Fetch response whose partitions' records are given separately, in response order:
/// `records[i]` belongs to the i-th partition (over all topics) whose `records` is `Some` and
/// not empty (its content is a placeholder). Empty records stay in the response as they are.
pub fn encode_fetch(version: i16, correlation_id: i32, mut response: FetchResponse, records: Vec<Records>) -> anyhow::Result<Frame> {
    let flexible = version >= 12;
    let nonce = nonce();
    let mut index = 0;
    for t in response.responses.iter_mut() {
        for p in t.partitions.iter_mut() {
            if has_records(p) {
                anyhow::ensure!(index < records.len(), "more partitions with records than records given");
                p.records = Some(Bytes::copy_from_slice(&marker(&nonce, index)));
                index += 1;
            }
        }
    }
    anyhow::ensure!(index == records.len(), "{} records given for {index} partitions", records.len());
    let kind = ResponseKind::Fetch(response);
    let encoded = encode_plain(ApiKey::Fetch, version, correlation_id, &kind)?;
    match splice(&encoded, &nonce, records, flexible) {
        Ok(frame) => Ok(frame),
        Err(records) => {
            let ResponseKind::Fetch(mut response) = kind else {
                unreachable!("built as Fetch above")
            };
            // A marker was not where it must be: encode plainly, copying the records.
            tracing::warn!(target: "broker", "fetch response splice failed; copying records");
            let mut rest = records.into_iter();
            for t in response.responses.iter_mut() {
                for p in t.partitions.iter_mut() {
                    if has_records(p) {
                        p.records = Some(rest.next().expect("counted above").to_bytes());
                    }
                }
            }
            Ok(Frame::single(encode_plain(
                ApiKey::Fetch,
                version,
                correlation_id,
                &ResponseKind::Fetch(response),
            )?))
        }
    }
}

fn has_records(p: &kafka_protocol::messages::fetch_response::PartitionData) -> bool {
    p.records.as_ref().is_some_and(|r| !r.is_empty())
}

fn splice(encoded: &Bytes, nonce: &[u8; 12], records: Vec<Records>, flexible: bool) -> Result<Frame, Vec<Records>> {
    // The length prefix each marker must follow: compact bytes (varint len + 1) or i32 len.
    let prefix: &[u8] = if flexible {
        &[MARKER_BYTES as u8 + 1]
    } else {
        &[0, 0, 0, MARKER_BYTES as u8]
    };
    let mut positions = Vec::with_capacity(records.len());
    let mut from = 4;
    for i in 0..records.len() {
        let m = marker(nonce, i);
        let found = encoded[from..].windows(MARKER_BYTES).position(|w| w == m).map(|p| p + from);
        match found {
            Some(p) if p >= from + prefix.len() && &encoded[p - prefix.len()..p] == prefix => {
                positions.push(p);
                from = p + MARKER_BYTES;
            }
            _ => return Err(records),
        }
    }
    let mut pieces = Vec::with_capacity(records.len() * 3 + 1);
    let mut last = 0;
    let mut total = 0usize;
    for (p, r) in positions.into_iter().zip(records) {
        let mut head = BytesMut::from(&encoded[last..p - prefix.len()]);
        let len = r.len();
        if flexible {
            put_uvarint(&mut head, len as u64 + 1);
        } else {
            head.extend_from_slice(&(len as i32).to_be_bytes());
        }
        total += head.len() + len;
        pieces.push(Piece::Bytes(head.freeze()));
        pieces.extend(r.0);
        last = p + MARKER_BYTES;
    }
    let tail = encoded.slice(last..);
    total += tail.len();
    pieces.push(Piece::Bytes(tail));
    // Rewrite the frame's size prefix for the real record sizes.
    let Piece::Bytes(first) = &pieces[0] else {
        unreachable!("the first piece is encoded bytes")
    };
    let mut first = BytesMut::from(&first[..]);
    first[0..4].copy_from_slice(&((total - 4) as i32).to_be_bytes());
    pieces[0] = Piece::Bytes(first.freeze());
    Ok(Frame { pieces })
}

/// Size prefix, response header, body.
pub fn encode_plain(api_key: ApiKey, version: i16, correlation_id: i32, response: &ResponseKind) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(&[0u8; 4]);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, api_key.response_header_version(version))?;
    response.encode(&mut buf, version)?;
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Decodable, StrBytes};

    fn response(parts: &[Option<&'static [u8]>]) -> FetchResponse {
        let partitions = parts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_records(r.map(Bytes::from_static))
            })
            .collect();
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(partitions)])
    }

    fn join(frame: &Frame) -> Vec<u8> {
        frame.pieces.iter().flat_map(|p| p.as_slice().to_vec()).collect()
    }

    #[test]
    fn spliced_frames_equal_plain_encoding_in_every_version() {
        let big: &'static [u8] = Box::leak(vec![7u8; 300].into_boxed_slice());
        let parts: [Option<&'static [u8]>; 4] = [Some(b"abc"), Some(b""), None, Some(big)];
        for version in 4..=17 {
            let plain = encode_plain(ApiKey::Fetch, version, 42, &ResponseKind::Fetch(response(&parts))).unwrap();
            let records = parts
                .iter()
                .flatten()
                .filter(|r| !r.is_empty())
                .map(|r| {
                    Records::shared(vec![
                        Bytes::from_static(&r[..r.len().min(1)]),
                        Bytes::from_static(&r[r.len().min(1)..]),
                    ])
                })
                .collect();
            let frame = encode_fetch(version, 42, response(&parts), records).unwrap();
            assert_eq!(join(&frame), plain.to_vec(), "version {version}");
            assert!(frame.pieces.len() > 1, "version {version}: records were spliced, not copied");
            // And a client decodes it.
            let mut body = Bytes::from(join(&frame)).slice(4..);
            let header_version = ApiKey::Fetch.response_header_version(version);
            kafka_protocol::messages::ResponseHeader::decode(&mut body, header_version).unwrap();
            let back = FetchResponse::decode(&mut body, version).unwrap();
            assert_eq!(back.responses[0].partitions[3].records.as_deref(), Some(big));
        }
    }

    #[test]
    fn largest_batch_walks_the_batch_lengths_of_every_piece() {
        // Only the length field (bytes 8..12, the bytes after it) matters to the walk.
        let batch = |after_length: usize| {
            let mut b = vec![0u8; 12 + after_length];
            b[8..12].copy_from_slice(&(after_length as i32).to_be_bytes());
            b
        };
        let piece = [batch(100), batch(300), batch(50)].concat();
        let mut records = Records::shared(vec![Bytes::from(piece), Bytes::from(batch(200))]);
        assert_eq!(records.largest_batch(), 312);
        records.append(Records::shared(vec![Bytes::from(batch(1000))]));
        assert_eq!(records.largest_batch(), 1012);
        assert_eq!(Records::default().largest_batch(), 0);
        // Batches split anywhere across pieces, as the batch cache serves them (a 16-byte head
        // and the rest), even through the length field.
        let stream = [batch(100), batch(2000), batch(30), batch(500)].concat();
        for cuts in [
            vec![16, 112, 128],
            vec![10, 11, 122, 2124, 2130],
            (1..stream.len()).step_by(7).collect(),
        ] {
            let mut pieces = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([stream.len()]) {
                pieces.push(Bytes::copy_from_slice(&stream[from..cut]));
                from = cut;
            }
            assert_eq!(Records::shared(pieces).largest_batch(), 2012);
        }
        // A length running past the records ends the walk; nothing reads out of bounds.
        assert_eq!(Records::shared(vec![Bytes::from(batch(100)[..50].to_vec())]).largest_batch(), 112);
        assert_eq!(Records::shared(vec![Bytes::from(batch(100)[..10].to_vec())]).largest_batch(), 0);
    }

    #[test]
    fn a_record_count_mismatch_is_an_error() {
        assert!(encode_fetch(12, 1, response(&[Some(b"x")]), vec![]).is_err());
    }
}
