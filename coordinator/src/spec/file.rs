//! The serde model of an experiment file, as written (before defaults and sweeps).
//!
//! Every struct denies unknown fields, so a misspelt key is an error with its line.
//! Job fields are `Option`s because a job may take them from `defaults`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExperimentFile {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Read (and substituted) on the untyped document before this model is built;
    /// declared here only so that the key is allowed.
    #[serde(default, rename = "vars")]
    pub _vars: Option<serde_yaml::Value>,
    #[serde(default)]
    pub defaults: Option<JobDefaults>,
    pub jobs: Vec<JobFile>,
    #[serde(default)]
    pub sweep: Option<SweepFile>,
}

/// `defaults:`, merged under every job. `name`, `needs` and `sweep` belong to one job
/// only, so they are not allowed here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobDefaults {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub requires: Option<RequiresFile>,
    #[serde(default)]
    pub params: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobFile {
    pub name: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub requires: Option<RequiresFile>,
    #[serde(default)]
    pub params: Option<Map<String, Value>>,
    #[serde(default)]
    pub needs: Vec<String>,
    #[serde(default)]
    pub sweep: Option<SweepFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequiresFile {
    #[serde(default)]
    pub gpus: Option<u32>,
    #[serde(default)]
    pub gpu_mem_gb: Option<f64>,
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Method {
    #[default]
    Grid,
    Random,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SweepFile {
    #[serde(default)]
    pub method: Method,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub samples: Option<u64>,
    pub parameters: Parameters,
}

/// `parameters:` in the order written (grid order depends on it), duplicates refused.
#[derive(Debug, Default)]
pub(crate) struct Parameters(pub Vec<(String, Domain)>);

/// The values one sweep parameter takes.
#[derive(Debug, Clone)]
pub(crate) enum Domain {
    /// `[a, b, c]`: every value (grid) or one of them (random).
    List(Vec<Value>),
    /// `{min, max, log, int}`: random only.
    Range(RangeFile),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeFile {
    /// A `Number` rather than `f64`, so that integer ranges stay exact.
    pub min: serde_json::Number,
    pub max: serde_json::Number,
    /// Log-uniform instead of uniform.
    #[serde(default)]
    pub log: bool,
    /// Integers, both bounds included.
    #[serde(default)]
    pub int: bool,
}

impl<'de> Deserialize<'de> for Parameters {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ParametersVisitor;
        impl<'de> Visitor<'de> for ParametersVisitor {
            type Value = Parameters;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping from job field paths to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parameters, A::Error> {
                let mut entries: Vec<(String, Domain)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format_args!(
                            "sweep parameter `{key}` is given twice"
                        )));
                    }
                    let domain = map.next_value::<Domain>()?;
                    entries.push((key, domain));
                }
                Ok(Parameters(entries))
            }
        }
        deserializer.deserialize_map(ParametersVisitor)
    }
}

impl<'de> Deserialize<'de> for Domain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DomainVisitor;
        impl<'de> Visitor<'de> for DomainVisitor {
            type Value = Domain;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of values or a range like {min: 0, max: 1}")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Domain, A::Error> {
                let mut values = Vec::new();
                while let Some(value) = seq.next_element::<Value>()? {
                    values.push(value);
                }
                Ok(Domain::List(values))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Domain, A::Error> {
                RangeFile::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(Domain::Range)
            }
        }
        deserializer.deserialize_any(DomainVisitor)
    }
}

/// A job with `defaults` merged under it; sweeps not applied yet.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub name: String,
    pub kind: Option<String>,
    pub params: Map<String, Value>,
    pub priority: i64,
    pub max_attempts: u32,
    pub requires: super::Requirements,
    pub needs: Vec<String>,
}

impl JobFile {
    /// Merges `defaults` under this job: the job's scalars win, `requires` is merged
    /// field by field (labels key by key), `params` deeply (mappings merged, anything
    /// else replaced).
    pub fn with_defaults(&self, defaults: &JobDefaults) -> Draft {
        let mut requires = super::Requirements::default();
        for r in [defaults.requires.as_ref(), self.requires.as_ref()]
            .into_iter()
            .flatten()
        {
            if let Some(gpus) = r.gpus {
                requires.gpus = gpus;
            }
            if let Some(mem) = r.gpu_mem_gb {
                requires.gpu_mem_gb = mem;
            }
            if let Some(backend) = &r.backend {
                requires.backend.clone_from(backend);
            }
            if let Some(labels) = &r.labels {
                requires
                    .labels
                    .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        let mut params = defaults.params.clone().unwrap_or_default();
        if let Some(own) = &self.params {
            merge_json(&mut params, own);
        }
        Draft {
            name: self.name.clone(),
            kind: self.kind.clone().or_else(|| defaults.kind.clone()),
            params,
            priority: self.priority.or(defaults.priority).unwrap_or(0),
            max_attempts: self
                .max_attempts
                .or(defaults.max_attempts)
                .unwrap_or(super::DEFAULT_MAX_ATTEMPTS),
            requires,
            needs: self.needs.clone(),
        }
    }
}

/// Deep merge of `over` into `base`: mappings are merged key by key, other values
/// (lists included) replace.
pub(crate) fn merge_json(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(Value::Object(b)), Value::Object(o)) => merge_json(b, o),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_is_deep_for_mappings_only() {
        let Value::Object(mut base) = json!({"a": {"x": 1, "y": [1, 2]}, "b": 1, "c": {"k": 1}})
        else {
            unreachable!()
        };
        let Value::Object(over) = json!({"a": {"y": [3], "z": 2}, "b": {"n": 1}, "c": 5}) else {
            unreachable!()
        };
        merge_json(&mut base, &over);
        assert_eq!(
            Value::Object(base),
            json!({"a": {"x": 1, "y": [3], "z": 2}, "b": {"n": 1}, "c": 5})
        );
    }
}
