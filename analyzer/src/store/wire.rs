//! The ingest wire format: batches pushed by agents on other hosts to a server's
//! `POST /api/v1/ingest`, as protobuf (messages declared with `prost` derives, so no `protoc`).
//!
//! ```text
//! message IngestRequest { uint32 version = 1; repeated Batch batches = 2; }
//! message Batch  { int64 start_ms = 1; int64 end_ms = 2; int64 period_ns = 3;
//!                  repeated Frame frames = 4; repeated Stack stacks = 5;
//!                  repeated Series series = 6; repeated Row rows = 7;
//!                  repeated Wakeup wakeups = 8;                // 8: since store schema 2
//!                  repeated ThreadSample thread_samples = 9;   // 9, 10: since store schema 4
//!                  repeated WaitRecord waits = 10;
//!                  repeated Request requests = 11; }          // 11: since store schema 5
//! message Frame  { string function = 1; optional string module = 2; optional string build_id = 3;
//!                  optional string file = 4; optional uint32 line = 5; bool kernel = 6;
//!                  bool inlined = 7; }
//! message Stack  { repeated uint32 frames = 1; }             // indices into frames, root first
//! message Series { string host = 1; uint32 pid = 2; string comm = 3; string exe = 4;
//!                  string build_id = 5; string service = 6; }
//! message Row    { uint32 series = 1; uint32 stack = 2; bool off_cpu = 3; int64 value = 4; }
//! message Wakeup { uint32 wakee = 1; uint32 wakee_stack = 2; uint32 waker = 3;
//!                  uint32 waker_stack = 4; string cause = 5; bool in_interrupt = 6;
//!                  uint64 count = 7; double weight = 8; int64 blocked_ns = 9; }
//! message ThreadSample { uint32 series = 1; uint32 tid = 2; int64 time_ns = 3; uint32 stack = 4;
//!                  bool background = 5; }
//! message WaitRecord { uint32 series = 1; uint32 tid = 2; int64 start_ns = 3; int64 blocked_ns = 4;
//!                  int64 runq_ns = 5; uint32 stack = 6; string cause = 7; double weight = 8;
//!                  string waker = 9; uint32 waker_series = 10; uint32 waker_tid = 11;
//!                  uint32 waker_stack = 12; }
//! message Request { uint32 series = 1; uint32 tid = 2; int64 start_ns = 3;
//!                  int64 duration_ns = 4; }                   // a probed call
//! ```
//!
//! Wakeups, thread samples, wait records and requests are additions within version 1: an older
//! server ignores them, and batches from an older agent have none. A request may start before
//! its batch's interval (it is reported when the call returns) but not end before it.
//!
//! The body's `Content-Type` is [`CONTENT_TYPE`]; `version` must be [`WIRE_VERSION`]. A
//! server refuses another version, and any batch whose indices, times or values are invalid,
//! naming the batch and the problem; nothing of a refused request is stored.

use prost::Message as _;

use super::{
    Batch, RequestSpan, Row, SampleKind, SeriesLabels, ThreadSample, WaitRecord, WakerKind, Wakeup,
};
use crate::offcpu::Cause;
use crate::{Frame, FrameKind};

/// The wire format version this code writes and reads.
pub const WIRE_VERSION: u32 = 1;

/// The media type of an ingest body.
pub const CONTENT_TYPE: &str = "application/x-protobuf; messageType=critpath.IngestRequest";

/// Most batches one request may carry.
pub const MAX_BATCHES: usize = 1024;

/// Most memory the decoded batches of one request may take ([`decoded_bytes`]): 256 MiB, four
/// times the largest body a server accepts.
pub const MAX_DECODED_BYTES: usize = 256 << 20;

mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IngestRequest {
        #[prost(uint32, tag = "1")]
        pub version: u32,
        #[prost(message, repeated, tag = "2")]
        pub batches: Vec<Batch>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Batch {
        #[prost(int64, tag = "1")]
        pub start_ms: i64,
        #[prost(int64, tag = "2")]
        pub end_ms: i64,
        #[prost(int64, tag = "3")]
        pub period_ns: i64,
        #[prost(message, repeated, tag = "4")]
        pub frames: Vec<Frame>,
        #[prost(message, repeated, tag = "5")]
        pub stacks: Vec<Stack>,
        #[prost(message, repeated, tag = "6")]
        pub series: Vec<Series>,
        #[prost(message, repeated, tag = "7")]
        pub rows: Vec<Row>,
        #[prost(message, repeated, tag = "8")]
        pub wakeups: Vec<Wakeup>,
        #[prost(message, repeated, tag = "9")]
        pub thread_samples: Vec<ThreadSample>,
        #[prost(message, repeated, tag = "10")]
        pub waits: Vec<WaitRecord>,
        #[prost(message, repeated, tag = "11")]
        pub requests: Vec<Request>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(uint32, tag = "1")]
        pub series: u32,
        #[prost(uint32, tag = "2")]
        pub tid: u32,
        #[prost(int64, tag = "3")]
        pub start_ns: i64,
        #[prost(int64, tag = "4")]
        pub duration_ns: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ThreadSample {
        #[prost(uint32, tag = "1")]
        pub series: u32,
        #[prost(uint32, tag = "2")]
        pub tid: u32,
        #[prost(int64, tag = "3")]
        pub time_ns: i64,
        #[prost(uint32, tag = "4")]
        pub stack: u32,
        #[prost(bool, tag = "5")]
        pub background: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WaitRecord {
        #[prost(uint32, tag = "1")]
        pub series: u32,
        #[prost(uint32, tag = "2")]
        pub tid: u32,
        #[prost(int64, tag = "3")]
        pub start_ns: i64,
        #[prost(int64, tag = "4")]
        pub blocked_ns: i64,
        #[prost(int64, tag = "5")]
        pub runq_ns: i64,
        #[prost(uint32, tag = "6")]
        pub stack: u32,
        #[prost(string, tag = "7")]
        pub cause: String,
        #[prost(double, tag = "8")]
        pub weight: f64,
        #[prost(string, tag = "9")]
        pub waker: String,
        #[prost(uint32, tag = "10")]
        pub waker_series: u32,
        #[prost(uint32, tag = "11")]
        pub waker_tid: u32,
        #[prost(uint32, tag = "12")]
        pub waker_stack: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Wakeup {
        #[prost(uint32, tag = "1")]
        pub wakee: u32,
        #[prost(uint32, tag = "2")]
        pub wakee_stack: u32,
        #[prost(uint32, tag = "3")]
        pub waker: u32,
        #[prost(uint32, tag = "4")]
        pub waker_stack: u32,
        #[prost(string, tag = "5")]
        pub cause: String,
        #[prost(bool, tag = "6")]
        pub in_interrupt: bool,
        #[prost(uint64, tag = "7")]
        pub count: u64,
        #[prost(double, tag = "8")]
        pub weight: f64,
        #[prost(int64, tag = "9")]
        pub blocked_ns: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Frame {
        #[prost(string, tag = "1")]
        pub function: String,
        #[prost(string, optional, tag = "2")]
        pub module: Option<String>,
        #[prost(string, optional, tag = "3")]
        pub build_id: Option<String>,
        #[prost(string, optional, tag = "4")]
        pub file: Option<String>,
        #[prost(uint32, optional, tag = "5")]
        pub line: Option<u32>,
        #[prost(bool, tag = "6")]
        pub kernel: bool,
        #[prost(bool, tag = "7")]
        pub inlined: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stack {
        #[prost(uint32, repeated, tag = "1")]
        pub frames: Vec<u32>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Series {
        #[prost(string, tag = "1")]
        pub host: String,
        #[prost(uint32, tag = "2")]
        pub pid: u32,
        #[prost(string, tag = "3")]
        pub comm: String,
        #[prost(string, tag = "4")]
        pub exe: String,
        #[prost(string, tag = "5")]
        pub build_id: String,
        #[prost(string, tag = "6")]
        pub service: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Row {
        #[prost(uint32, tag = "1")]
        pub series: u32,
        #[prost(uint32, tag = "2")]
        pub stack: u32,
        #[prost(bool, tag = "3")]
        pub off_cpu: bool,
        #[prost(int64, tag = "4")]
        pub value: i64,
    }
}

/// Why an ingest body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Not a protobuf `IngestRequest`.
    #[error("the body is not a critpath IngestRequest protobuf: {0}")]
    Decode(String),
    /// Written by an incompatible version.
    #[error(
        "wire format version {found} is not supported; this server reads version {WIRE_VERSION}"
    )]
    Version {
        /// The version the body declares.
        found: u32,
    },
    /// Too many batches in one request.
    #[error("{0} batches in one request; at most {MAX_BATCHES} are allowed")]
    TooManyBatches(usize),
    /// Decoding the body would take more memory than one request may.
    #[error(
        "decoding this body would take about {needed} MiB (at most {limit} MiB per request); send its batches in smaller requests",
        needed = needed >> 20,
        limit = limit >> 20
    )]
    TooLarge {
        /// Bytes the decoded batches would take, estimated from the wire.
        needed: usize,
        /// The most one request may take.
        limit: usize,
    },
    /// One batch is invalid.
    #[error("batch {index}: {problem}")]
    Invalid {
        /// The batch's position in the request.
        index: usize,
        /// What is wrong with it.
        problem: String,
    },
}

/// Encodes batches as one ingest request body.
pub fn encode(batches: &[Batch]) -> Vec<u8> {
    proto::IngestRequest {
        version: WIRE_VERSION,
        batches: batches.iter().map(to_proto).collect(),
    }
    .encode_to_vec()
}

/// Encodes one batch as it appears inside a request: [`request`] joins such parts into a body
/// without encoding them again (an agent keeps its unsent batches this way, compact).
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    to_proto(batch).encode_to_vec()
}

/// The request body holding `parts` (from [`encode_batch`]): the same bytes [`encode`] gives
/// for their batches.
pub fn request<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    prost::encoding::uint32::encode(1, &WIRE_VERSION, &mut body);
    for part in parts {
        prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut body);
        prost::encoding::encode_varint(part.len() as u64, &mut body);
        body.extend_from_slice(part);
    }
    body
}

/// Decodes and checks an ingest request body.
///
/// # Errors
/// Not a request, another version, too many batches, or an invalid batch (an index out of
/// range, an empty or reversed interval, a negative value or period).
pub fn decode(body: &[u8]) -> Result<Vec<Batch>, WireError> {
    decode_within(body, MAX_DECODED_BYTES)
}

/// [`decode`], refusing a body whose decoded batches would take more than `limit` bytes
/// ([`decoded_bytes`]) before allocating any of them.
///
/// # Errors
/// As [`decode`], and [`WireError::TooLarge`].
pub fn decode_within(body: &[u8], limit: usize) -> Result<Vec<Batch>, WireError> {
    let needed = decoded_bytes(body)?;
    if needed > limit {
        return Err(WireError::TooLarge { needed, limit });
    }
    let request =
        proto::IngestRequest::decode(body).map_err(|e| WireError::Decode(e.to_string()))?;
    if request.version != WIRE_VERSION {
        return Err(WireError::Version {
            found: request.version,
        });
    }
    if request.batches.len() > MAX_BATCHES {
        return Err(WireError::TooManyBatches(request.batches.len()));
    }
    request
        .batches
        .into_iter()
        .enumerate()
        .map(|(index, b)| from_proto(b).map_err(|problem| WireError::Invalid { index, problem }))
        .collect()
}

/// Memory that decoding `body` takes, estimated from its wire bytes without decoding it: each
/// message costs its decoded struct and its store counterpart, each of its bytes (strings, packed
/// indices) up to eight more. A request of two-byte empty messages costs some hundred times its
/// size decoded; this sees that first.
///
/// # Errors
/// The body is not well-formed protobuf, or has more than [`MAX_BATCHES`] batches.
pub fn decoded_bytes(body: &[u8]) -> Result<usize, WireError> {
    use std::mem::size_of;
    let mut total = 0usize;
    let mut batches = 0usize;
    for field in Fields::new(body) {
        let (tag, payload) = field?;
        if tag != 2 {
            continue;
        }
        let Some(batch) = payload else {
            return Err(WireError::Decode(
                "batches (field 2) is not a message".into(),
            ));
        };
        batches += 1;
        if batches > MAX_BATCHES {
            return Err(WireError::TooManyBatches(batches));
        }
        total = total.saturating_add(size_of::<proto::Batch>() + size_of::<Batch>());
        for field in Fields::new(batch) {
            let (tag, payload) = field?;
            let each = match tag {
                4 => size_of::<proto::Frame>() + size_of::<Frame>(),
                5 => 2 * size_of::<Vec<u32>>(),
                6 => size_of::<proto::Series>() + size_of::<SeriesLabels>(),
                7 => size_of::<proto::Row>() + size_of::<Row>(),
                8 => size_of::<proto::Wakeup>() + size_of::<Wakeup>(),
                9 => size_of::<proto::ThreadSample>() + size_of::<ThreadSample>(),
                10 => size_of::<proto::WaitRecord>() + size_of::<WaitRecord>(),
                11 => size_of::<proto::Request>() + size_of::<RequestSpan>(),
                _ => 0,
            };
            let bytes = payload.map_or(0, <[u8]>::len);
            total = total.saturating_add(each.saturating_add(bytes.saturating_mul(8)));
        }
    }
    Ok(total)
}

/// The fields of one protobuf message: each tag with its payload when it is length-delimited.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(message: &'a [u8]) -> Self {
        Self { rest: message }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Option<&'a [u8]>), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        use prost::encoding::{WireType, decode_key, decode_varint};
        if self.rest.is_empty() {
            return None;
        }
        let bad = |e: &dyn std::fmt::Display| WireError::Decode(e.to_string());
        let step = (|| {
            let (tag, wire_type) = decode_key(&mut self.rest).map_err(|e| bad(&e))?;
            let skip = |rest: &mut &'a [u8], n: usize| {
                if rest.len() < n {
                    return Err(WireError::Decode(format!(
                        "field {tag} runs past the end of its message"
                    )));
                }
                let (head, tail) = rest.split_at(n);
                *rest = tail;
                Ok(head)
            };
            let payload = match wire_type {
                WireType::Varint => {
                    decode_varint(&mut self.rest).map_err(|e| bad(&e))?;
                    None
                }
                WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                    let n = if wire_type == WireType::SixtyFourBit {
                        8
                    } else {
                        4
                    };
                    skip(&mut self.rest, n)?;
                    None
                }
                WireType::LengthDelimited => {
                    let len = decode_varint(&mut self.rest).map_err(|e| bad(&e))?;
                    let len = usize::try_from(len).unwrap_or(usize::MAX);
                    Some(skip(&mut self.rest, len)?)
                }
                WireType::StartGroup | WireType::EndGroup => {
                    return Err(WireError::Decode(format!(
                        "field {tag} is a group, which this format does not use"
                    )));
                }
            };
            Ok((tag, payload))
        })();
        if step.is_err() {
            self.rest = &[];
        }
        Some(step)
    }
}

fn to_proto(b: &Batch) -> proto::Batch {
    proto::Batch {
        start_ms: b.start_ms,
        end_ms: b.end_ms,
        period_ns: b.period_ns,
        frames: b
            .frames
            .iter()
            .map(|f| proto::Frame {
                function: f.function.clone(),
                module: f.module.clone(),
                build_id: f.build_id.clone(),
                file: f.file.clone(),
                line: f.line,
                kernel: f.kind == FrameKind::Kernel,
                inlined: f.inlined,
            })
            .collect(),
        stacks: b
            .stacks
            .iter()
            .map(|s| proto::Stack { frames: s.clone() })
            .collect(),
        series: b
            .series
            .iter()
            .map(|s| proto::Series {
                host: s.host.clone(),
                pid: s.pid,
                comm: s.comm.clone(),
                exe: s.exe.clone(),
                build_id: s.build_id.clone(),
                service: s.service.clone(),
            })
            .collect(),
        rows: b
            .rows
            .iter()
            .map(|r| proto::Row {
                series: r.series,
                stack: r.stack,
                off_cpu: r.kind == SampleKind::OffCpu,
                value: r.value,
            })
            .collect(),
        wakeups: b
            .wakeups
            .iter()
            .map(|w| proto::Wakeup {
                wakee: w.wakee,
                wakee_stack: w.wakee_stack,
                waker: w.waker,
                waker_stack: w.waker_stack,
                cause: w.cause.name().to_owned(),
                in_interrupt: w.in_interrupt,
                count: w.count,
                weight: w.weight,
                blocked_ns: w.blocked_ns,
            })
            .collect(),
        thread_samples: b
            .thread_samples
            .iter()
            .map(|t| proto::ThreadSample {
                series: t.series,
                tid: t.tid,
                time_ns: t.time_ns,
                stack: t.stack,
                background: t.background,
            })
            .collect(),
        waits: b
            .waits
            .iter()
            .map(|w| proto::WaitRecord {
                series: w.series,
                tid: w.tid,
                start_ns: w.start_ns,
                blocked_ns: w.blocked_ns,
                runq_ns: w.runq_ns,
                stack: w.stack,
                cause: w.cause.name().to_owned(),
                weight: w.weight,
                waker: w.waker.name().to_owned(),
                waker_series: w.waker_series,
                waker_tid: w.waker_tid,
                waker_stack: w.waker_stack,
            })
            .collect(),
        requests: b
            .requests
            .iter()
            .map(|r| proto::Request {
                series: r.series,
                tid: r.tid,
                start_ns: r.start_ns,
                duration_ns: r.duration_ns,
            })
            .collect(),
    }
}

fn from_proto(b: proto::Batch) -> Result<Batch, String> {
    if b.end_ms <= b.start_ms {
        return Err(format!(
            "the interval [{}, {}) ms is empty or reversed",
            b.start_ms, b.end_ms
        ));
    }
    if b.period_ns <= 0 {
        return Err(format!("period_ns must be positive, not {}", b.period_ns));
    }
    let frames = b.frames.len();
    for (i, s) in b.stacks.iter().enumerate() {
        if let Some(f) = s.frames.iter().find(|&&f| f as usize >= frames) {
            return Err(format!(
                "stack {i} refers to frame {f}; the batch has {frames}"
            ));
        }
    }
    for (i, r) in b.rows.iter().enumerate() {
        if r.series as usize >= b.series.len() {
            return Err(format!(
                "row {i} refers to series {}; the batch has {}",
                r.series,
                b.series.len()
            ));
        }
        if r.stack as usize >= b.stacks.len() {
            return Err(format!(
                "row {i} refers to stack {}; the batch has {}",
                r.stack,
                b.stacks.len()
            ));
        }
        if r.value < 0 {
            return Err(format!("row {i} has a negative value ({})", r.value));
        }
    }
    let mut wakeups = Vec::with_capacity(b.wakeups.len());
    for (i, w) in b.wakeups.iter().enumerate() {
        for (what, index, len) in [
            ("series", w.wakee, b.series.len()),
            ("stack", w.wakee_stack, b.stacks.len()),
            ("series", w.waker, b.series.len()),
            ("stack", w.waker_stack, b.stacks.len()),
        ] {
            if index as usize >= len {
                return Err(format!(
                    "wakeup {i} refers to {what} {index}; the batch has {len}"
                ));
            }
        }
        let cause = Cause::ALL
            .into_iter()
            .find(|c| c.name() == w.cause)
            .ok_or_else(|| format!("wakeup {i} has an unknown cause {:?}", w.cause))?;
        if !(w.weight.is_finite() && w.weight >= 0.0) || w.blocked_ns < 0 {
            return Err(format!(
                "wakeup {i} has a negative or non-finite weight ({}) or time ({})",
                w.weight, w.blocked_ns
            ));
        }
        wakeups.push(Wakeup {
            wakee: w.wakee,
            wakee_stack: w.wakee_stack,
            waker: w.waker,
            waker_stack: w.waker_stack,
            cause,
            in_interrupt: w.in_interrupt,
            count: w.count,
            weight: w.weight,
            blocked_ns: w.blocked_ns,
        });
    }
    // Records live within the batch's interval (nanoseconds of its milliseconds).
    let (from_ns, to_ns) = (
        b.start_ms.saturating_mul(1_000_000),
        b.end_ms.saturating_mul(1_000_000),
    );
    let index = |what: &str, i: usize, field: &str, index: u32, len: usize| {
        if index as usize >= len {
            Err(format!(
                "{what} {i} refers to {field} {index}; the batch has {len}"
            ))
        } else {
            Ok(())
        }
    };
    let mut thread_samples = Vec::with_capacity(b.thread_samples.len());
    for (i, t) in b.thread_samples.iter().enumerate() {
        index("thread sample", i, "series", t.series, b.series.len())?;
        index("thread sample", i, "stack", t.stack, b.stacks.len())?;
        if !(from_ns..to_ns).contains(&t.time_ns) {
            return Err(format!(
                "thread sample {i} was taken at {} ns, outside the batch's interval",
                t.time_ns
            ));
        }
        thread_samples.push(ThreadSample {
            series: t.series,
            tid: t.tid,
            time_ns: t.time_ns,
            stack: t.stack,
            background: t.background,
        });
    }
    let mut waits = Vec::with_capacity(b.waits.len());
    for (i, w) in b.waits.iter().enumerate() {
        index("wait", i, "series", w.series, b.series.len())?;
        index("wait", i, "series", w.waker_series, b.series.len())?;
        index("wait", i, "stack", w.stack, b.stacks.len())?;
        index("wait", i, "stack", w.waker_stack, b.stacks.len())?;
        if !(from_ns..to_ns).contains(&w.start_ns) {
            return Err(format!(
                "wait {i} started at {} ns, outside the batch's interval",
                w.start_ns
            ));
        }
        if !(w.weight.is_finite() && w.weight >= 0.0) || w.blocked_ns < 0 || w.runq_ns < 0 {
            return Err(format!(
                "wait {i} has a negative or non-finite weight ({}) or time ({}, {})",
                w.weight, w.blocked_ns, w.runq_ns
            ));
        }
        let cause = Cause::ALL
            .into_iter()
            .find(|c| c.name() == w.cause)
            .ok_or_else(|| format!("wait {i} has an unknown cause {:?}", w.cause))?;
        let waker = WakerKind::from_name(&w.waker)
            .ok_or_else(|| format!("wait {i} has an unknown waker kind {:?}", w.waker))?;
        waits.push(WaitRecord {
            series: w.series,
            tid: w.tid,
            start_ns: w.start_ns,
            blocked_ns: w.blocked_ns,
            runq_ns: w.runq_ns,
            stack: w.stack,
            cause,
            weight: w.weight,
            waker,
            waker_series: w.waker_series,
            waker_tid: w.waker_tid,
            waker_stack: w.waker_stack,
        });
    }
    let mut requests = Vec::with_capacity(b.requests.len());
    for (i, r) in b.requests.iter().enumerate() {
        index("request", i, "series", r.series, b.series.len())?;
        if r.duration_ns < 0
            || r.start_ns >= to_ns
            || r.start_ns.saturating_add(r.duration_ns) < from_ns
        {
            return Err(format!(
                "request {i} ({} ns from {} ns) does not reach into the batch's interval",
                r.duration_ns, r.start_ns
            ));
        }
        requests.push(RequestSpan {
            series: r.series,
            tid: r.tid,
            start_ns: r.start_ns,
            duration_ns: r.duration_ns,
        });
    }
    Ok(Batch {
        start_ms: b.start_ms,
        end_ms: b.end_ms,
        period_ns: b.period_ns,
        frames: b
            .frames
            .into_iter()
            .map(|f| Frame {
                function: f.function,
                module: f.module,
                build_id: f.build_id,
                file: f.file,
                line: f.line,
                kind: if f.kernel {
                    FrameKind::Kernel
                } else {
                    FrameKind::User
                },
                inlined: f.inlined,
            })
            .collect(),
        stacks: b.stacks.into_iter().map(|s| s.frames).collect(),
        series: b
            .series
            .into_iter()
            .map(|s| SeriesLabels {
                host: s.host,
                pid: s.pid,
                comm: s.comm,
                exe: s.exe,
                build_id: s.build_id,
                service: s.service,
            })
            .collect(),
        rows: b
            .rows
            .into_iter()
            .map(|r| Row {
                series: r.series,
                stack: r.stack,
                kind: if r.off_cpu {
                    SampleKind::OffCpu
                } else {
                    SampleKind::Cpu
                },
                value: r.value,
            })
            .collect(),
        wakeups,
        thread_samples,
        waits,
        requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::wal::tests::batch;

    #[test]
    fn round_trip() {
        let mut b = batch(1_000, 3);
        b.rows[1].kind = SampleKind::OffCpu;
        b.frames[0].kind = FrameKind::Kernel;
        b.frames[1].line = Some(42);
        b.wakeups.push(Wakeup {
            wakee: 0,
            wakee_stack: 1,
            waker: 0,
            waker_stack: 2,
            cause: Cause::Lock,
            in_interrupt: false,
            count: 3,
            weight: 4.5,
            blocked_ns: 1_000_000,
        });
        b.thread_samples.push(ThreadSample {
            series: 0,
            tid: 9,
            time_ns: 1_500_000_000,
            stack: 1,
            background: true,
        });
        b.waits.push(WaitRecord {
            series: 0,
            tid: 9,
            start_ns: 2_000_000_000,
            blocked_ns: 3_000_000,
            runq_ns: 10_000,
            stack: 0,
            cause: Cause::Io,
            weight: 2.5,
            waker: WakerKind::Kernel,
            waker_series: 0,
            waker_tid: 77,
            waker_stack: 2,
        });
        // A call that began before the interval and returned in it.
        b.requests.push(RequestSpan {
            series: 0,
            tid: 9,
            start_ns: -1_000_000,
            duration_ns: 2_000_000,
        });
        let batches = vec![b, batch(11_000, 1)];
        assert_eq!(decode(&encode(&batches)).unwrap(), batches);
        // Batches encoded one by one and joined make the same body.
        let parts: Vec<Vec<u8>> = batches.iter().map(encode_batch).collect();
        assert_eq!(request(parts.iter().map(Vec::as_slice)), encode(&batches));
        // A record outside its batch's interval is refused, naming it.
        let mut late = batches[0].clone();
        late.waits[0].start_ns = 99_000_000_000;
        let err = decode(&encode(&[late])).unwrap_err().to_string();
        assert!(err.contains("wait 0 started at"), "{err}");
        let mut early = batches[0].clone();
        early.requests[0].duration_ns = 500_000;
        let err = decode(&encode(&[early])).unwrap_err().to_string();
        assert!(
            err.contains("request 0 (500000 ns from -1000000 ns)"),
            "{err}"
        );
    }

    #[test]
    fn refuses_bad_input() {
        assert!(matches!(decode(b"\xff\xff\xff"), Err(WireError::Decode(_))));
        let mut body = proto::IngestRequest {
            version: 2,
            batches: vec![],
        };
        assert_eq!(
            decode(&body.encode_to_vec()),
            Err(WireError::Version { found: 2 })
        );
        body.version = WIRE_VERSION;
        let invalid = |edit: fn(&mut proto::Batch)| {
            let mut b = to_proto(&batch(1_000, 2));
            edit(&mut b);
            let body = proto::IngestRequest {
                version: WIRE_VERSION,
                batches: vec![to_proto(&batch(0, 1)), b],
            };
            match decode(&body.encode_to_vec()) {
                Err(WireError::Invalid { index: 1, problem }) => problem,
                other => panic!("{other:?}"),
            }
        };
        assert!(invalid(|b| b.end_ms = b.start_ms).contains("empty or reversed"));
        assert!(invalid(|b| b.period_ns = 0).contains("period_ns"));
        assert!(invalid(|b| b.stacks[0].frames.push(99)).contains("frame 99"));
        assert!(invalid(|b| b.rows[0].series = 5).contains("series 5"));
        assert!(invalid(|b| b.rows[1].stack = 7).contains("stack 7"));
        assert!(invalid(|b| b.rows[0].value = -1).contains("negative"));
        let wakeup = |edit: fn(&mut proto::Wakeup)| {
            move |b: &mut proto::Batch| {
                let mut w = proto::Wakeup {
                    cause: "io".into(),
                    ..Default::default()
                };
                edit(&mut w);
                b.wakeups.push(w);
            }
        };
        let invalid_wakeup = |edit: fn(&mut proto::Wakeup)| {
            let mut b = to_proto(&batch(1_000, 2));
            wakeup(edit)(&mut b);
            let body = proto::IngestRequest {
                version: WIRE_VERSION,
                batches: vec![b],
            };
            match decode(&body.encode_to_vec()) {
                Err(WireError::Invalid { index: 0, problem }) => problem,
                other => panic!("{other:?}"),
            }
        };
        assert!(invalid_wakeup(|w| w.waker = 9).contains("wakeup 0 refers to series 9"));
        assert!(invalid_wakeup(|w| w.waker_stack = 9).contains("stack 9"));
        assert!(invalid_wakeup(|w| w.cause = "nap".into()).contains("unknown cause"));
        assert!(invalid_wakeup(|w| w.weight = f64::NAN).contains("non-finite"));
    }

    /// A body of empty messages (two bytes each, a few hundred decoded) is refused before it
    /// is decoded; ordinary batches cost a small multiple of their size.
    #[test]
    fn refuses_bodies_that_decode_huge() {
        let mut batch_body = Vec::new();
        for _ in 0..(512 << 10) {
            batch_body.extend_from_slice(&[0x22, 0x00]); // frames (4): an empty Frame
        }
        let mut body = vec![0x08, 0x01, 0x12]; // version 1; batches (2)
        prost::encoding::encode_varint(batch_body.len() as u64, &mut body);
        body.extend_from_slice(&batch_body);
        let needed = decoded_bytes(&body).unwrap();
        assert!(needed > 100 * body.len(), "{needed} for {}", body.len());
        assert!(matches!(
            decode_within(&body, 64 << 20),
            Err(WireError::TooLarge { .. })
        ));
        let message = decode_within(&body, 64 << 20).unwrap_err().to_string();
        assert!(message.contains("smaller requests"), "{message}");
        let ordinary = encode(&[batch(1_000, 50), batch(11_000, 50)]);
        let needed = decoded_bytes(&ordinary).unwrap();
        assert!(
            needed < 64 * ordinary.len(),
            "{needed} for {}",
            ordinary.len()
        );
        assert_eq!(decode_within(&ordinary, needed).unwrap().len(), 2);
        // A message longer than what is left is malformed, not read past the end.
        let err = decoded_bytes(&[0x08, 0x01, 0x12, 0x05, 0x22]).unwrap_err();
        assert!(err.to_string().contains("runs past the end"), "{err}");
        let mut many = Vec::new();
        for _ in 0..=MAX_BATCHES {
            many.extend_from_slice(&[0x12, 0x00]);
        }
        assert_eq!(
            decoded_bytes(&many),
            Err(WireError::TooManyBatches(MAX_BATCHES + 1))
        );
    }
}
