//! pprof's `profile.proto`, gzipped, as `go tool pprof` reads it; and a decoder back into a
//! [`Profile`].
//!
//! The messages are declared with `prost` derives (no `protoc` at build time); field numbers
//! follow github.com/google/pprof/proto/profile.proto.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};

use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use prost::Message as _;

use crate::{Frame, FrameKind, Profile, SampleLabels, ValueType, types::KERNEL_MODULE};

/// The protobuf messages of `profile.proto`.
#[allow(missing_docs)]
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
        #[prost(int64, tag = "3")]
        pub column: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

/// Errors reading a pprof profile.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The gzip stream is broken.
    #[error("the profile is not valid gzip")]
    Gzip(#[source] std::io::Error),
    /// The bytes are not a `profile.proto` message.
    #[error("the profile is not a valid profile.proto message")]
    Protobuf(#[source] prost::DecodeError),
    /// A message refers to something that is not there.
    #[error("inconsistent profile: {0}")]
    Inconsistent(String),
    /// The gzip stream inflates past [`MAX_DECODED_BYTES`] (a gzip bomb, or not a profile).
    #[error("the profile inflates to more than {} MiB", MAX_DECODED_BYTES >> 20)]
    TooLarge,
}

/// The most bytes a gzipped profile may inflate to: far above any real profile (the agent's
/// largest are tens of MiB), far below what would exhaust memory.
pub const MAX_DECODED_BYTES: u64 = 1 << 30;

/// Interns strings into the string table; index 0 is always "".
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Self::default();
        s.get("");
        s
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// Label keys used for the thread of a sample.
const LABEL_PID: &str = "pid";
const LABEL_TID: &str = "tid";
const LABEL_COMM: &str = "comm";
/// Label key of the probed function a sample was taken in (`critpath record --probe`).
const LABEL_REQUEST: &str = "request";

/// Builds the `profile.proto` message: one location per frame, one mapping per module.
pub fn to_proto(profile: &Profile) -> proto::Profile {
    let mut strings = Strings::new();
    let mut out = proto::Profile {
        sample_type: profile
            .sample_types
            .iter()
            .map(|t| value_type(&mut strings, t))
            .collect(),
        time_nanos: profile.start_unix_ns,
        duration_nanos: profile.duration_ns,
        period_type: profile
            .period_type
            .as_ref()
            .map(|t| value_type(&mut strings, t)),
        period: profile.period,
        ..Default::default()
    };

    let mut mappings: HashMap<(&str, Option<&str>), u64> = HashMap::new();
    let mut functions: HashMap<(&str, Option<&str>), u64> = HashMap::new();
    for (index, frame) in profile.frames().iter().enumerate() {
        let mapping_id = match frame.module.as_deref() {
            Some(module) => {
                let next = mappings.len() as u64 + 1;
                *mappings
                    .entry((module, frame.build_id.as_deref()))
                    .or_insert_with(|| {
                        out.mapping.push(proto::Mapping {
                            id: next,
                            filename: strings.get(module),
                            build_id: strings.get(frame.build_id.as_deref().unwrap_or("")),
                            has_functions: true,
                            has_filenames: frame.file.is_some(),
                            has_line_numbers: frame.line.is_some(),
                            has_inline_frames: true,
                            ..Default::default()
                        });
                        next
                    })
            }
            None => 0,
        };
        let next = functions.len() as u64 + 1;
        let function_id = *functions
            .entry((&frame.function, frame.file.as_deref()))
            .or_insert_with(|| {
                let name = strings.get(&frame.function);
                out.function.push(proto::Function {
                    id: next,
                    name,
                    system_name: name,
                    filename: strings.get(frame.file.as_deref().unwrap_or("")),
                    start_line: 0,
                });
                next
            });
        out.location.push(proto::Location {
            id: index as u64 + 1,
            mapping_id,
            address: 0,
            line: vec![proto::Line {
                function_id,
                line: frame.line.map_or(0, i64::from),
                column: 0,
            }],
            is_folded: frame.inlined,
        });
    }

    let (pid, tid, comm) = (
        strings.get(LABEL_PID),
        strings.get(LABEL_TID),
        strings.get(LABEL_COMM),
    );
    for sample in profile.samples() {
        out.sample.push(proto::Sample {
            // pprof lists locations leaf first.
            location_id: profile
                .stack(sample.stack)
                .iter()
                .rev()
                .map(|&f| u64::from(f) + 1)
                .collect(),
            value: sample.values.clone(),
            label: [
                num_label(pid, sample.labels.pid),
                num_label(tid, sample.labels.tid),
                proto::Label {
                    key: comm,
                    str: strings.get(&sample.labels.comm),
                    ..Default::default()
                },
            ]
            .into_iter()
            .chain(sample.labels.request.as_ref().map(|f| proto::Label {
                key: strings.get(LABEL_REQUEST),
                str: strings.get(f),
                ..Default::default()
            }))
            .collect(),
        });
    }
    out.string_table = strings.table;
    out
}

fn value_type(strings: &mut Strings, t: &ValueType) -> proto::ValueType {
    proto::ValueType {
        r#type: strings.get(&t.kind),
        unit: strings.get(&t.unit),
    }
}

fn num_label(key: i64, num: u32) -> proto::Label {
    proto::Label {
        key,
        num: i64::from(num),
        ..Default::default()
    }
}

/// Encodes a profile as gzipped `profile.proto`, ready to write to a `.pb.gz` file.
pub fn encode(profile: &Profile) -> Vec<u8> {
    let raw = to_proto(profile).encode_to_vec();
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4), Compression::default());
    gz.write_all(&raw).expect("writing to a Vec cannot fail");
    gz.finish().expect("writing to a Vec cannot fail")
}

/// Decodes a `profile.proto` message, gzipped or not.
///
/// # Errors
/// Broken gzip or protobuf bytes, or gzip that inflates past [`MAX_DECODED_BYTES`].
pub fn decode_proto(bytes: &[u8]) -> Result<proto::Profile, DecodeError> {
    let raw;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        raw = inflate(bytes, MAX_DECODED_BYTES)?;
        &raw[..]
    } else {
        bytes
    };
    proto::Profile::decode(bytes).map_err(DecodeError::Protobuf)
}

/// Inflates gzip bytes, refusing to go past `limit` bytes.
fn inflate(gz: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
    let mut buf = Vec::new();
    GzDecoder::new(gz)
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(DecodeError::Gzip)?;
    if buf.len() as u64 > limit {
        return Err(DecodeError::TooLarge);
    }
    Ok(buf)
}

/// Decodes a pprof profile back into a [`Profile`]; the inverse of [`encode`] for what it writes.
///
/// # Errors
/// Broken bytes, or ids and string indices that point nowhere.
pub fn decode(bytes: &[u8]) -> Result<Profile, DecodeError> {
    let p = decode_proto(bytes)?;
    let string = |i: i64| -> Result<&str, DecodeError> {
        p.string_table
            .get(usize::try_from(i).unwrap_or(usize::MAX))
            .map(String::as_str)
            .ok_or_else(|| DecodeError::Inconsistent(format!("string index {i} out of range")))
    };
    let opt = |i: i64| -> Result<Option<String>, DecodeError> {
        Ok(Some(string(i)?)
            .filter(|s| !s.is_empty())
            .map(str::to_owned))
    };
    let value_type = |t: &proto::ValueType| -> Result<ValueType, DecodeError> {
        Ok(ValueType::new(string(t.r#type)?, string(t.unit)?))
    };

    let mut out = Profile::new(
        p.sample_type
            .iter()
            .map(value_type)
            .collect::<Result<_, _>>()?,
    );
    out.period_type = p.period_type.as_ref().map(value_type).transpose()?;
    out.period = p.period;
    out.start_unix_ns = p.time_nanos;
    out.duration_ns = p.duration_nanos;

    let mappings: HashMap<u64, &proto::Mapping> = p.mapping.iter().map(|m| (m.id, m)).collect();
    let functions: HashMap<u64, &proto::Function> = p.function.iter().map(|f| (f.id, f)).collect();
    let mut locations = HashMap::new();
    for loc in &p.location {
        let mapping = mappings.get(&loc.mapping_id);
        let module = mapping.map(|m| opt(m.filename)).transpose()?.flatten();
        let build_id = mapping.map(|m| opt(m.build_id)).transpose()?.flatten();
        let kind = if module.as_deref() == Some(KERNEL_MODULE) {
            FrameKind::Kernel
        } else {
            FrameKind::User
        };
        // What `to_proto` writes has one line per location; a location with inlined lines
        // (from other writers) becomes one frame per line, innermost first as pprof lists them.
        let mut frames = Vec::with_capacity(loc.line.len());
        for (i, line) in loc.line.iter().enumerate() {
            let f = functions.get(&line.function_id).ok_or_else(|| {
                DecodeError::Inconsistent(format!("function id {} not found", line.function_id))
            })?;
            frames.push(Frame {
                function: string(f.name)?.to_owned(),
                module: module.clone(),
                build_id: build_id.clone(),
                file: opt(f.filename)?,
                line: u32::try_from(line.line).ok().filter(|&l| l > 0),
                kind,
                inlined: loc.is_folded || i + 1 < loc.line.len(),
            });
        }
        locations.insert(loc.id, frames);
    }

    for s in &p.sample {
        let mut frames = Vec::new();
        for id in s.location_id.iter().rev() {
            let loc = locations
                .get(id)
                .ok_or_else(|| DecodeError::Inconsistent(format!("location id {id} not found")))?;
            frames.extend(loc.iter().rev().cloned());
        }
        let mut labels = SampleLabels::new(0, 0, "");
        for l in &s.label {
            match string(l.key)? {
                LABEL_PID => labels.pid = l.num as u32,
                LABEL_TID => labels.tid = l.num as u32,
                LABEL_COMM => labels.comm = string(l.str)?.to_owned(),
                LABEL_REQUEST => labels.request = Some(string(l.str)?.to_owned()),
                _ => {}
            }
        }
        if s.value.len() != out.sample_types.len() {
            return Err(DecodeError::Inconsistent(format!(
                "a sample has {} values for {} sample types",
                s.value.len(),
                out.sample_types.len()
            )));
        }
        out.add(frames, &s.value, labels);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzip stream that inflates past the limit is refused before it is all in memory;
    /// one at the limit inflates.
    #[test]
    fn inflating_stops_at_the_limit() {
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(&vec![0_u8; 1 << 20]).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 4096, "{} bytes", bomb.len());
        assert!(matches!(
            inflate(&bomb, (1 << 20) - 1),
            Err(DecodeError::TooLarge)
        ));
        assert_eq!(inflate(&bomb, 1 << 20).unwrap().len(), 1 << 20);
        let err = decode(&bomb).unwrap_err();
        assert!(matches!(err, DecodeError::Protobuf(_)), "{err}");
    }

    fn sample_profile() -> Profile {
        let mut p = Profile::new(vec![
            ValueType::new("samples", "count"),
            ValueType::new("cpu", "nanoseconds"),
        ]);
        p.period_type = Some(ValueType::new("cpu", "nanoseconds"));
        p.period = 10_101_010;
        p.start_unix_ns = 1_700_000_000_000_000_000;
        p.duration_ns = 3_000_000_000;
        let mut hot = Frame::user("app::hot", "/bin/app");
        hot.build_id = Some("abcd".into());
        hot.file = Some("src/main.rs".into());
        hot.line = Some(12);
        let main = Frame::user("main", "/bin/app");
        p.add(
            [main.clone(), hot.clone()],
            &[3, 30],
            SampleLabels::new(10, 11, "app"),
        );
        // Taken inside a probed call (`critpath record --probe`).
        let mut in_request = SampleLabels::new(10, 12, "app-worker");
        in_request.request = Some("app::handle".into());
        p.add(
            [main, hot, Frame::kernel("ksys_write")],
            &[1, 10],
            in_request,
        );
        p
    }

    /// Encoding then decoding gives back the same frames, stacks, labels and totals.
    #[test]
    fn round_trip() {
        let p = sample_profile();
        let bytes = encode(&p);
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzipped");
        let q = decode(&bytes).unwrap();
        assert_eq!(q.sample_types, p.sample_types);
        assert_eq!(q.period_type, p.period_type);
        assert_eq!(q.period, p.period);
        assert_eq!(q.start_unix_ns, p.start_unix_ns);
        assert_eq!(q.totals(), vec![4, 40]);
        assert_eq!(q.samples().len(), 2);
        for (a, b) in p.samples().iter().zip(q.samples()) {
            assert_eq!(a.labels, b.labels);
            assert_eq!(a.values, b.values);
            let fa: Vec<_> = p.stack(a.stack).iter().map(|&f| p.frame(f)).collect();
            let fb: Vec<_> = q.stack(b.stack).iter().map(|&f| q.frame(f)).collect();
            assert_eq!(fa, fb);
        }
    }

    /// The string table starts with "", ids are 1-based and samples list locations leaf first.
    #[test]
    fn proto_conventions() {
        let p = sample_profile();
        let m = to_proto(&p);
        assert_eq!(m.string_table[0], "");
        assert!(m.location.iter().all(|l| l.id > 0 && l.mapping_id > 0));
        let leaf = m.sample[1].location_id[0];
        let line = &m.location[(leaf - 1) as usize].line[0];
        let f = &m.function[(line.function_id - 1) as usize];
        assert_eq!(m.string_table[f.name as usize], "ksys_write");
        let kernel_mapping = &m.mapping[(m.location[(leaf - 1) as usize].mapping_id - 1) as usize];
        assert_eq!(
            m.string_table[kernel_mapping.filename as usize],
            KERNEL_MODULE
        );
        let app = m
            .mapping
            .iter()
            .find(|m2| m.string_table[m2.build_id as usize] == "abcd");
        assert!(app.is_some(), "build id recorded on the mapping");
    }

    /// Garbage is rejected with a decode error, not a panic.
    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            decode(&[0x1f, 0x8b, 1, 2, 3]),
            Err(DecodeError::Gzip(_))
        ));
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
    }
}
