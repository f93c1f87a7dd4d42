//! speedscope's file format (<https://www.speedscope.app/file-format-schema.json>): one
//! `sampled` profile per process, frames shared.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{FrameKind, Profile};

const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

#[derive(Serialize)]
struct File<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: Shared<'a>,
    profiles: Vec<SampledProfile>,
    name: String,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: usize,
    exporter: String,
}

#[derive(Serialize)]
struct Shared<'a> {
    frames: Vec<FrameJson<'a>>,
}

#[derive(Serialize)]
struct FrameJson<'a> {
    name: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
}

#[derive(Serialize)]
struct SampledProfile {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: i64,
    #[serde(rename = "endValue")]
    end_value: i64,
    samples: Vec<Vec<u32>>,
    weights: Vec<i64>,
}

/// Renders value `index` as a speedscope JSON document named `name`.
pub fn to_string(profile: &Profile, index: usize, name: &str) -> String {
    let frames = profile
        .frames()
        .iter()
        .map(|f| FrameJson {
            name: if f.kind == FrameKind::Kernel {
                format!("{} [k]", f.function).into()
            } else {
                f.function.as_str().into()
            },
            file: f.file.as_deref().or(f.module.as_deref()),
            line: f.line,
        })
        .collect();
    let unit = match profile.sample_types.get(index).map(|t| t.unit.as_str()) {
        Some("nanoseconds") => "nanoseconds",
        Some("bytes") => "bytes",
        _ => "none",
    };
    let mut by_process: BTreeMap<u32, SampledProfile> = BTreeMap::new();
    for sample in profile.samples() {
        let value = sample.values[index];
        if value == 0 {
            continue;
        }
        let p = by_process
            .entry(sample.labels.pid)
            .or_insert_with(|| SampledProfile {
                kind: "sampled",
                name: format!("{} (pid {})", sample.labels.comm, sample.labels.pid),
                unit,
                start_value: 0,
                end_value: 0,
                samples: Vec::new(),
                weights: Vec::new(),
            });
        p.samples.push(profile.stack(sample.stack).to_vec());
        p.weights.push(value);
        p.end_value += value;
    }
    let file = File {
        schema: SCHEMA,
        shared: Shared { frames },
        profiles: by_process.into_values().collect(),
        name: name.to_owned(),
        active_profile_index: 0,
        exporter: concat!("critpath ", env!("CARGO_PKG_VERSION")).to_owned(),
    };
    serde_json::to_string(&file).expect("serializing plain data cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Frame, SampleLabels, ValueType};

    /// One sampled profile per process, stacks as frame indices root first, weights summing to
    /// the profile's total.
    #[test]
    fn one_profile_per_process() {
        let mut p = Profile::new(vec![ValueType::new("cpu", "nanoseconds")]);
        p.add(
            [Frame::user("main", "/a"), Frame::user("f", "/a")],
            &[5],
            SampleLabels::new(1, 1, "a"),
        );
        p.add(
            [Frame::user("main", "/b")],
            &[7],
            SampleLabels::new(2, 2, "b"),
        );
        let v: serde_json::Value = serde_json::from_str(&to_string(&p, 0, "test")).unwrap();
        assert_eq!(v["$schema"], SCHEMA);
        let profiles = v["profiles"].as_array().unwrap();
        assert_eq!(profiles.len(), 2);
        assert_eq!(profiles[0]["unit"], "nanoseconds");
        assert_eq!(profiles[0]["samples"][0], serde_json::json!([0, 1]));
        assert_eq!(profiles[0]["endValue"], 5);
        assert_eq!(v["shared"]["frames"][1]["name"], "f");
    }
}
