//! The rollout policy: the ordered stages a new version goes through (nodes chosen by
//! labels or by share of the fleet, each with a bake time) and the gates every stage
//! must pass. Parsed from the REST API's JSON and checked as a whole: every problem is
//! reported with the field it concerns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::compile::valid_name;
use crate::config::duration::parse_ms;
use crate::config::{FieldError, Invalid};

/// Most stages a policy may have.
pub const MAX_STAGES: usize = 10;
/// Longest bake time of a stage.
pub const MAX_BAKE_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutPolicy {
    /// In order; a version that passes the last stage goes to every node.
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub gates: Gates,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Unique within the policy (1-128 of `A-Z a-z 0-9 _ - . :`).
    pub name: String,
    pub select: Select,
    /// How long the stage's nodes run the version, its gates holding, before the next
    /// stage starts (e.g. `30s`, `5m`; at most 24h).
    pub bake: String,
}

/// Which nodes a stage adds. Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Select {
    /// Nodes whose labels include all of these (nodes that connect later and match
    /// are included too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// This percentage of the connected fleet runs the version once the stage starts,
    /// the earlier stages' nodes included (1-100; 100: every node, late ones too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<u8>,
}

/// What a stage must hold to pass; a failed gate rolls the version back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Gates {
    /// How much worse (as a fraction of requests: 0.05 is five points) the error rate
    /// of the nodes on the new version may be than the baseline: the nodes still on the
    /// previous version over the same time, or, when none are left, the stage before.
    /// Errors: 5xx responses, server connect errors, tunnels ended by a server error.
    pub max_error_rate_increase: f64,
    /// Fewer requests than this on the new version's nodes: too little traffic to judge
    /// the error rate (the gate holds).
    pub min_requests: u64,
    /// The share of checked servers the new version's nodes see down, past which the
    /// stage fails (when it is also more than the baseline sees).
    pub max_servers_down: f64,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            max_error_rate_increase: 0.05,
            min_requests: 20,
            max_servers_down: 0.5,
        }
    }
}

impl Stage {
    /// The bake time in milliseconds (checked by [`RolloutPolicy::check`]).
    pub fn bake_ms(&self) -> u64 {
        parse_ms(&self.bake).unwrap_or(0)
    }
}

impl Select {
    /// Whether a node with `labels` matches a label selector.
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels
            .as_ref()
            .is_some_and(|want| want.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }

    /// Every node, late ones included.
    pub fn is_all(&self) -> bool {
        self.share == Some(100)
    }
}

impl RolloutPolicy {
    /// Parses and checks a policy.
    pub fn parse(json: &[u8]) -> Result<RolloutPolicy, Invalid> {
        let policy: RolloutPolicy = serde_json::from_slice(json).map_err(|e| {
            Invalid(vec![FieldError {
                field: "(body)".into(),
                message: e.to_string(),
            }])
        })?;
        policy.check()?;
        Ok(policy)
    }

    /// Every problem, each with its field.
    pub fn check(&self) -> Result<(), Invalid> {
        let mut errors = Vec::new();
        let mut add = |field: String, message: String| errors.push(FieldError { field, message });
        if self.stages.is_empty() || self.stages.len() > MAX_STAGES {
            add(
                "stages".into(),
                format!("{} stages: 1 to {MAX_STAGES}", self.stages.len()),
            );
        }
        for (i, s) in self.stages.iter().enumerate() {
            let at = format!("stages[{i}]");
            if !valid_name(&s.name) {
                add(format!("{at}.name"), "1-128 of A-Z a-z 0-9 _ - . :".into());
            } else if self.stages[..i].iter().any(|o| o.name == s.name) {
                add(format!("{at}.name"), format!("{:?} is used twice", s.name));
            }
            match (&s.select.labels, s.select.share) {
                (Some(_), Some(_)) | (None, None) => add(
                    format!("{at}.select"),
                    "exactly one of labels or share".into(),
                ),
                (Some(labels), None) => {
                    if labels.is_empty() {
                        add(format!("{at}.select.labels"), "at least one label".into());
                    }
                    for k in labels.keys() {
                        if !valid_name(k) {
                            add(
                                format!("{at}.select.labels"),
                                format!("{k:?} is not 1-128 of A-Z a-z 0-9 _ - . :"),
                            );
                        }
                    }
                }
                (None, Some(share)) => {
                    if !(1..=100).contains(&share) {
                        add(format!("{at}.select.share"), format!("{share}: 1 to 100"));
                    }
                }
            }
            match parse_ms(&s.bake) {
                Ok(ms) if ms <= MAX_BAKE_MS => {}
                Ok(_) => add(format!("{at}.bake"), "at most 24h".into()),
                Err(e) => add(format!("{at}.bake"), e.to_string()),
            }
        }
        let g = &self.gates;
        if !(0.0..=1.0).contains(&g.max_error_rate_increase) {
            add(
                "gates.max_error_rate_increase".into(),
                "a fraction from 0 to 1".into(),
            );
        }
        if !(0.0..=1.0).contains(&g.max_servers_down) {
            add(
                "gates.max_servers_down".into(),
                "a fraction from 0 to 1".into(),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Invalid(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_is_checked_as_a_whole_and_each_problem_named() {
        let ok = br#"{"stages":[
            {"name":"canary","select":{"labels":{"zone":"canary"}},"bake":"30s"},
            {"name":"quarter","select":{"share":25},"bake":"1m"},
            {"name":"all","select":{"share":100},"bake":"0s"}]}"#;
        let p = RolloutPolicy::parse(ok).unwrap();
        assert_eq!(p.gates, Gates::default());
        assert_eq!(p.stages[1].bake_ms(), 60_000);
        assert!(p.stages[2].select.is_all());

        let bad = br#"{"stages":[
            {"name":"a","select":{"labels":{"zone":"x"},"share":5},"bake":"30s"},
            {"name":"a","select":{"share":0},"bake":"2d"},
            {"name":"b","select":{},"bake":"soon"}],
            "gates":{"max_error_rate_increase":2}}"#;
        let Invalid(errors) = RolloutPolicy::parse(bad).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "stages[0].select",
                "stages[1].name",
                "stages[1].select.share",
                "stages[1].bake",
                "stages[2].select",
                "stages[2].bake",
                "gates.max_error_rate_increase"
            ]
        );
        assert!(RolloutPolicy::parse(br#"{"stages":[]}"#).is_err());
        assert!(RolloutPolicy::parse(br#"{"stages":[], "extra": 1}"#).is_err());
    }

    #[test]
    fn label_selectors_need_every_label() {
        let s = Select {
            labels: Some([("zone".to_string(), "canary".to_string())].into()),
            share: None,
        };
        let mut labels = BTreeMap::new();
        assert!(!s.matches_labels(&labels));
        labels.insert("zone".into(), "canary".into());
        labels.insert("rack".into(), "r1".into());
        assert!(s.matches_labels(&labels));
        labels.insert("zone".into(), "eu".into());
        assert!(!s.matches_labels(&labels));
    }
}
