//! Describing an action: its Command and Action messages in canonical form, and the `Any`
//! wrapping the Bots API passes them in.

use crate::proto::{self, Action, Command, Digest, Platform, platform::Property};
use crate::tree::Blobs;

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    pub arguments: Vec<String>,
    /// Sorted by name when encoded, as the spec requires.
    pub environment: Vec<(String, String)>,
    /// Output paths relative to the working directory; sorted and deduplicated when encoded.
    pub outputs: Vec<String>,
    /// Platform properties (`OSFamily`, `ISA`); sorted by name, then value.
    pub platform: Vec<(String, String)>,
    pub input_root: Digest,
    /// Part of the action's digest: a separate cache namespace (pallet puts the node's content
    /// key here, so the digest follows from it).
    pub salt: Vec<u8>,
    /// Execution time limit in seconds (0: the server's).
    pub timeout_secs: i64,
}

/// The Action's digest, with the Command and Action blobs added to `blobs`.
pub fn encode(spec: &Spec, blobs: &mut Blobs) -> (Digest, Action, Command) {
    let mut env = spec.environment.clone();
    env.sort();
    env.dedup_by(|a, b| a.0 == b.0);
    let mut outputs = spec.outputs.clone();
    outputs.sort();
    outputs.dedup();
    let mut props = spec.platform.clone();
    props.sort();
    let platform = Platform {
        properties: props
            .into_iter()
            .map(|(name, value)| Property { name, value })
            .collect(),
    };
    let command = Command {
        arguments: spec.arguments.clone(),
        environment_variables: env
            .into_iter()
            .map(|(name, value)| proto::command::EnvironmentVariable { name, value })
            .collect(),
        output_paths: outputs,
        ..Default::default()
    };
    let command_digest = blobs.add_message(&command);
    let action = Action {
        command_digest: Some(command_digest),
        input_root_digest: Some(spec.input_root.clone()),
        timeout: (spec.timeout_secs > 0).then_some(bazel_remote_apis::google::protobuf::Duration {
            seconds: spec.timeout_secs,
            nanos: 0,
        }),
        salt: spec.salt.clone(),
        platform: Some(platform),
        ..Default::default()
    };
    let d = blobs.add_message(&action);
    (d, action, command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_spec_in_any_order_gives_the_same_action() {
        let spec = Spec {
            arguments: vec!["pallet".into(), "x".into()],
            environment: vec![("B".into(), "2".into()), ("A".into(), "1".into())],
            outputs: vec!["out/b".into(), "out/a".into(), "out/a".into()],
            platform: vec![
                ("OSFamily".into(), "linux".into()),
                ("ISA".into(), "x86-64".into()),
            ],
            input_root: crate::digest::empty(),
            salt: b"key".to_vec(),
            timeout_secs: 60,
        };
        let mut b1 = Blobs::new();
        let (d1, _, c) = encode(&spec, &mut b1);
        let mut other = spec.clone();
        other.environment.reverse();
        other.outputs.reverse();
        other.platform.reverse();
        let (d2, _, _) = encode(&other, &mut Blobs::new());
        assert_eq!(d1, d2);
        assert_eq!(c.output_paths, ["out/a", "out/b"]);
        assert_eq!(c.environment_variables[0].name, "A");
        assert_eq!(b1.len(), 2);
        other.salt = b"other key".to_vec();
        assert_ne!(encode(&other, &mut Blobs::new()).0, d1);
    }
}
