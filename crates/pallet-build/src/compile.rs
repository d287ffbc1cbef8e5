//! melange's configuration format, compiled exactly: the strict schema (unknown keys are
//! errors with line and column; a null or empty value is the field's zero value, as Go's
//! yaml.v3 reads it into melange's structs), `${{…}}` substitution, `if:` conditions,
//! `range` subpackages, `var-transforms`, build options, pipeline inputs with defaults and
//! required checks, the built-in pipelines (embedded; `--pipeline-dir` is searched first),
//! and `needs.packages` merged into the environment. Compiling never resolves packages or
//! touches the network.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use pallet_image::config::{Arch, ImageConfiguration};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Schema

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Configuration {
    #[serde(deserialize_with = "null::zero")]
    pub package: Package,
    #[serde(default, deserialize_with = "null::zero")]
    pub environment: ImageConfiguration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(default, deserialize_with = "null::seq")]
    pub pipeline: Vec<Pipeline>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub subpackages: Vec<Subpackage>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub data: Vec<Data>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null::map"
    )]
    pub vars: BTreeMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub var_transforms: Vec<VarTransform>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null::map"
    )]
    pub options: BTreeMap<String, BuildOption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Test>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Package {
    #[serde(deserialize_with = "null::zero")]
    pub name: String,
    #[serde(deserialize_with = "null::zero")]
    pub version: String,
    #[serde(default, deserialize_with = "null::zero")]
    pub epoch: u64,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null::zero"
    )]
    pub description: String,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null::map"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null::zero"
    )]
    pub url: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub commit: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub target_architecture: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub copyright: Vec<Copyright>,
    #[serde(default, deserialize_with = "null::zero")]
    pub dependencies: Dependencies,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<PackageOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scriptlets: Option<Scriptlets>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::opt_map"
    )]
    pub cpe: Option<BTreeMap<String, String>>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub setcap: Vec<Setcap>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_resources: Option<Resources>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Copyright {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub paths: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null::zero"
    )]
    pub attestation: String,
    #[serde(default, deserialize_with = "null::zero")]
    pub license: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null::zero"
    )]
    pub license_path: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null::zero"
    )]
    pub detection_override: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Dependencies {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub runtime: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub provides: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub replaces: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub provider_priority: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub replaces_priority: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PackageOptions {
    #[serde(default, deserialize_with = "null::zero")]
    pub no_provides: bool,
    #[serde(default, deserialize_with = "null::zero")]
    pub no_depends: bool,
    #[serde(default, deserialize_with = "null::zero")]
    pub no_commands: bool,
    #[serde(default, deserialize_with = "null::zero")]
    pub no_versioned_shlib_deps: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Scriptlets {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub pre_install: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub post_install: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub pre_deinstall: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub post_deinstall: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub pre_upgrade: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub post_upgrade: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    #[serde(default, deserialize_with = "null::zero")]
    pub script: String,
    #[serde(default, deserialize_with = "null::seq")]
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub enabled: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub disabled: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Setcap {
    #[serde(deserialize_with = "null::zero")]
    pub path: String,
    #[serde(default, deserialize_with = "null::map")]
    pub add: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null::zero")]
    pub reason: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub cpu: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub cpumodel: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub memory: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub disk: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub add: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Pipeline {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub name: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub uses: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null::map"
    )]
    pub with: BTreeMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub runs: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub pipeline: Vec<Pipeline>,
    #[serde(
        default,
        rename = "if",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub if_: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub working_directory: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null::map"
    )]
    pub environment: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Needs>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertions: Option<Assertions>,
    /// Only in pipeline definition files.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null::map"
    )]
    pub inputs: BTreeMap<String, Input>,
    /// Only in pipeline definition files.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Needs {
    #[serde(default, deserialize_with = "null::seq")]
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Assertions {
    #[serde(default, deserialize_with = "null::zero")]
    pub required_steps: u32,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null::zero"
    )]
    pub description: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub default: Option<String>,
    #[serde(default, deserialize_with = "null::zero")]
    pub required: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Subpackage {
    #[serde(deserialize_with = "null::zero")]
    pub name: String,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub pipeline: Vec<Pipeline>,
    #[serde(default, deserialize_with = "null::zero")]
    pub dependencies: Dependencies,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<PackageOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scriptlets: Option<Scriptlets>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null::zero"
    )]
    pub description: String,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null::map"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null::zero"
    )]
    pub url: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Test>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub setcap: Vec<Setcap>,
    #[serde(
        default,
        rename = "if",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub if_: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub range: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    #[serde(deserialize_with = "null::zero")]
    pub name: String,
    /// An item may have no value (`3.10:`): its value is then empty.
    #[serde(default, deserialize_with = "null::zero")]
    pub items: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Test {
    #[serde(default, deserialize_with = "null::zero")]
    pub environment: ImageConfiguration,
    #[serde(default, deserialize_with = "null::seq")]
    pub pipeline: Vec<Pipeline>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VarTransform {
    #[serde(deserialize_with = "null::zero")]
    pub from: String,
    #[serde(rename = "match", deserialize_with = "null::zero")]
    pub match_: String,
    #[serde(deserialize_with = "null::zero")]
    pub replace: String,
    #[serde(deserialize_with = "null::zero")]
    pub to: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuildOption {
    #[serde(default, deserialize_with = "null::map")]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub environment: Option<OptionEnvironment>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OptionEnvironment {
    #[serde(default)]
    pub contents: Option<OptionContents>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OptionContents {
    #[serde(default)]
    pub packages: Option<AddRemove>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddRemove {
    #[serde(default, deserialize_with = "null::seq")]
    pub add: Vec<String>,
    #[serde(default, deserialize_with = "null::seq")]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Update {
    #[serde(default, deserialize_with = "null::zero")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_sequential: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub version_separator: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub ignore_regex_patterns: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub exclude_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_prerelease_tags: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null::seq"
    )]
    pub version_transform: Vec<VersionTransform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_monitor: Option<Monitor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<Monitor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<Monitor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<Monitor>,
    #[serde(
        default,
        rename = "version_data",
        skip_serializing_if = "Option::is_none"
    )]
    pub version_data: Option<VersionData>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(default, deserialize_with = "null::zero")]
    pub reason: String,
    #[serde(default, deserialize_with = "null::zero")]
    pub period: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VersionTransform {
    #[serde(rename = "match", deserialize_with = "null::zero")]
    pub match_: String,
    #[serde(deserialize_with = "null::zero")]
    pub replace: String,
}

/// The update monitors share their fields; each kind uses a subset.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Monitor {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub identifier: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub strip_prefix: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub strip_suffix: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub version_filter_contains: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub version_filter_prefix: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub tag_filter: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub tag_filter_prefix: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null::string"
    )]
    pub tag_filter_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_tag: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VersionData {
    #[serde(default, deserialize_with = "null::zero")]
    pub version_format: String,
    #[serde(default, deserialize_with = "null::seq")]
    pub sources: Vec<VersionSource>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSource {
    #[serde(default, deserialize_with = "null::zero")]
    pub name: String,
    #[serde(default, deserialize_with = "null::zero")]
    pub stream: String,
    #[serde(default, deserialize_with = "null::seq")]
    pub ignore: Vec<String>,
    #[serde(default, deserialize_with = "null::zero")]
    pub commit_source: String,
    #[serde(default, deserialize_with = "null::zero")]
    pub use_release: bool,
}

/// Go's yaml.v3 reads a YAML null (`~`, `null`, or nothing after the colon, as when every
/// entry under a key is commented out) as the zero value of the field's type, where
/// serde_saphyr refuses null for anything but `Option`. Every field of the schema goes through
/// one of these so that what melange accepts, pallet accepts; unknown keys stay errors.
mod null {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer};

    /// Null is the zero value: `""`, `0`, `false`, an empty struct.
    pub(super) fn zero<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }

    /// A null list is empty, and a null item is dropped: yaml.v3 skips an element that decodes
    /// to nothing when the element type is not a pointer (a string, a struct).
    pub(super) fn seq<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        let items = Option::<Vec<Option<T>>>::deserialize(d)?.unwrap_or_default();
        Ok(items.into_iter().flatten().collect())
    }

    /// A null map is empty, and a null value is the zero value under its key (`with: {opts: }`
    /// gives `opts: ""`), as yaml.v3 stores it.
    pub(super) fn map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
    where
        D: Deserializer<'de>,
        V: Deserialize<'de> + Default,
    {
        Ok(opt_map(d)?.unwrap_or_default())
    }

    /// [`map`] for a map held as an `Option` (`cpe`): null is `None`.
    pub(super) fn opt_map<'de, D, V>(d: D) -> Result<Option<BTreeMap<String, V>>, D::Error>
    where
        D: Deserializer<'de>,
        V: Deserialize<'de> + Default,
    {
        let m = Option::<BTreeMap<String, Option<V>>>::deserialize(d)?;
        Ok(m.map(|m| {
            m.into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect()
        }))
    }

    /// A Go `string` held as `Option<String>`: Go cannot tell `""` from absent (`range: ""` is
    /// no range, `if: ""` no condition, `working-directory: ""` the parent's), so both are `None`.
    pub(super) fn string<'de, D>(d: D) -> Result<Option<String>, D::Error>
    where
        D: Deserializer<'de>,
    {
        Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: step '{step}': {message}")]
    Step {
        path: PathBuf,
        step: String,
        message: String,
    },
    /// The package does not build for this architecture (`target-architecture`).
    #[error("{name} does not build for {arch} (target-architecture)")]
    SkipArch { name: String, arch: String },
}

// ---------------------------------------------------------------------------------------------
// Built-in pipelines

/// The built-in pipelines, embedded in the binary.
pub static BUILTIN_PIPELINES: &[(&str, &str)] =
    &include!(concat!(env!("OUT_DIR"), "/builtin_pipelines.rs"));

/// Find a pipeline definition: `--pipeline-dir`s first, then the built-ins.
fn find_pipeline(name: &str, dirs: &[PathBuf]) -> Option<(String, String)> {
    for d in dirs {
        let p = d.join(format!("{name}.yaml"));
        if let Some(text) = read_pipeline_file(&p) {
            return Some((p.display().to_string(), text));
        }
    }
    BUILTIN_PIPELINES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, t)| (format!("(built-in) {n}"), t.to_string()))
}

/// A `--pipeline-dir` file, read once per process (a pallet run is one build): a workspace of
/// thousands of recipes looks up the same few dozen names in the same folders, most of them
/// missing there and taken from the built-ins.
fn read_pipeline_file(p: &Path) -> Option<String> {
    type Memo = std::sync::Mutex<HashMap<PathBuf, Option<String>>>;
    static MEMO: std::sync::OnceLock<Memo> = std::sync::OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    if let Some(hit) = memo.lock().unwrap_or_else(|e| e.into_inner()).get(p) {
        return hit.clone();
    }
    let text = std::fs::read_to_string(p).ok();
    memo.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(p.to_path_buf(), text.clone());
    text
}

/// A pipeline definition parsed once per process: a workspace of thousands of recipes uses
/// the same few dozen pipelines, and parsing their YAML again for each was most of the time a
/// workspace plan took. Keyed by the text, so an edited file is parsed anew.
fn parse_pipeline(source: &str, text: &str) -> Result<std::sync::Arc<Pipeline>, CompileError> {
    type Memo = std::sync::Mutex<HashMap<String, std::sync::Arc<Pipeline>>>;
    static MEMO: std::sync::OnceLock<Memo> = std::sync::OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    if let Some(p) = memo.lock().unwrap_or_else(|e| e.into_inner()).get(text) {
        return Ok(p.clone());
    }
    let def: Pipeline = serde_saphyr::from_str(text).map_err(|e| CompileError::Parse {
        path: PathBuf::from(source),
        message: e.to_string(),
    })?;
    let def = std::sync::Arc::new(def);
    memo.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(text.to_string(), def.clone());
    Ok(def)
}

// ---------------------------------------------------------------------------------------------
// Substitution and conditions

/// Replace `${{ name }}` references. `quote` renders each value as a quoted string (for `if:`).
fn substitute(text: &str, vars: &BTreeMap<String, String>, quote: bool) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or_else(|| {
            format!(
                "unterminated ${{{{ in '{}'",
                text.lines().next().unwrap_or("")
            )
        })?;
        let key = after[..end].trim();
        let val = vars
            .get(key)
            .ok_or_else(|| format!("variable ${{{{{key}}}}} is not defined"))?;
        if quote {
            out.push('"');
            for c in val.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c => out.push(c),
                }
            }
            out.push('"');
        } else {
            out.push_str(val);
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// melange's parse-time replacement: known variables are replaced, anything else is left as
/// written (descriptions may hold text that only looks like a reference).
fn substitute_lenient(text: &str, vars: &BTreeMap<String, String>) -> String {
    replace_known(text, |k| vars.get(k))
}

/// A step's name is a label: melange replaces only what its parse-time replacer knows
/// (`package.*` but `srcdir`, `vars.*`, `range.*`) and never substitutes names at compile
/// time, so `${{inputs.x}}`, `${{targets.destdir}}` or an undefined name stay as written.
fn substitute_label(text: &str, scope: &BTreeMap<String, String>) -> String {
    const PACKAGE: [&str; 5] = [
        "package.name",
        "package.version",
        "package.epoch",
        "package.full-version",
        "package.description",
    ];
    replace_known(text, |k| {
        let parse_time = PACKAGE.contains(&k) || k.starts_with("vars.") || k.starts_with("range.");
        scope.get(k).filter(|_| parse_time)
    })
}

fn replace_known<'a>(text: &str, lookup: impl Fn(&str) -> Option<&'a String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        match after
            .find("}}")
            .and_then(|end| Some((end, lookup(after[..end].trim())?)))
        {
            Some((end, v)) => {
                out.push_str(v);
                rest = &after[end + 2..];
            }
            _ => {
                out.push_str("${{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[derive(Debug, PartialEq)]
enum Tok {
    Str(String),
    Eq,
    Ne,
    And,
    Or,
    Open,
    Close,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = vec![];
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '=' | '!' | '&' | '|' => {
                let two: String = cs[i..(i + 2).min(cs.len())].iter().collect();
                out.push(match two.as_str() {
                    "==" => Tok::Eq,
                    "!=" => Tok::Ne,
                    "&&" => Tok::And,
                    "||" => Tok::Or,
                    _ => return Err(format!("unexpected '{two}'")),
                });
                i += 2;
            }
            '\'' | '"' => {
                let q = c;
                let mut v = String::new();
                i += 1;
                loop {
                    let Some(&ch) = cs.get(i) else {
                        return Err("unterminated string".into());
                    };
                    i += 1;
                    if ch == q {
                        break;
                    }
                    if ch == '\\' {
                        let n = *cs.get(i).ok_or("unterminated escape")?;
                        i += 1;
                        v.push(match n {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                    } else {
                        v.push(ch);
                    }
                }
                out.push(Tok::Str(v));
            }
            _ => {
                return Err(format!(
                    "unexpected '{c}' (values must be quoted strings or ${{{{variables}}}})"
                ));
            }
        }
    }
    Ok(out)
}

/// `expr := atom (('&&'|'||') atom)*`, equal precedence, left to right, as melange evaluates.
fn eval_expr(t: &[Tok], i: &mut usize) -> Result<bool, String> {
    let mut acc = eval_atom(t, i)?;
    while let Some(op) = t.get(*i) {
        match op {
            Tok::And => {
                *i += 1;
                let r = eval_atom(t, i)?;
                acc = acc && r;
            }
            Tok::Or => {
                *i += 1;
                let r = eval_atom(t, i)?;
                acc = acc || r;
            }
            _ => break,
        }
    }
    Ok(acc)
}

fn eval_atom(t: &[Tok], i: &mut usize) -> Result<bool, String> {
    match t.get(*i) {
        Some(Tok::Open) => {
            *i += 1;
            let v = eval_expr(t, i)?;
            if t.get(*i) != Some(&Tok::Close) {
                return Err("missing ')'".into());
            }
            *i += 1;
            Ok(v)
        }
        Some(Tok::Str(a)) => {
            let a = a.clone();
            *i += 1;
            let op = t.get(*i).ok_or("expected == or != after a value")?;
            let eq = match op {
                Tok::Eq => true,
                Tok::Ne => false,
                _ => return Err("expected == or !=".into()),
            };
            *i += 1;
            let Some(Tok::Str(b)) = t.get(*i) else {
                return Err("expected a value after the comparison".into());
            };
            *i += 1;
            Ok((a == *b) == eq)
        }
        _ => Err("expected a value or '('".into()),
    }
}

/// Put variables into a condition: outside string literals each becomes a quoted string;
/// inside a literal (`'"${{range.key}}" == ""'`) its text joins the literal.
fn substitute_condition(cond: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut rest = cond;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("${{") {
            let after = &rest[3..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unterminated ${{{{ in '{cond}'"))?;
            let key = after[..end].trim();
            let val = vars
                .get(key)
                .ok_or_else(|| format!("variable ${{{{{key}}}}} is not defined"))?;
            let escaped: String = val
                .chars()
                .flat_map(|ch| match ch {
                    '\\' => vec!['\\', '\\'],
                    ch if Some(ch) == quote || (quote.is_none() && ch == '"') => vec!['\\', ch],
                    ch => vec![ch],
                })
                .collect();
            match quote {
                Some(_) => out.push_str(&escaped),
                None => {
                    out.push('"');
                    out.push_str(&escaped);
                    out.push('"');
                }
            }
            rest = &after[end + 2..];
            continue;
        }
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), ch) if ch == q => quote = None,
            (Some(_), '\\') => {
                out.push(c);
                rest = &rest[1..];
                if let Some(n) = rest.chars().next() {
                    out.push(n);
                    rest = &rest[n.len_utf8()..];
                }
                continue;
            }
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

/// Evaluate an `if:` condition against `vars`.
pub fn evaluate_if(cond: &str, vars: &BTreeMap<String, String>) -> Result<bool, String> {
    let text = substitute_condition(cond, vars)?;
    let toks = tokenize(&text)?;
    let mut i = 0;
    let v = eval_expr(&toks, &mut i)?;
    if i != toks.len() {
        return Err(format!("unexpected trailing tokens in '{cond}'"));
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// Compilation

/// How to compile.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    pub arch: Option<Arch>,
    pub pipeline_dirs: Vec<PathBuf>,
    /// `--vars-file` values, merged over `vars`.
    pub vars: BTreeMap<String, String>,
    /// `--build-option` names.
    pub build_options: Vec<String>,
}

/// One compiled step: the final shell text, environment and working directory, with its
/// children (the `uses` pipeline's steps, or its own nested `pipeline`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct CompiledStep {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    /// Inputs that differ from the pipeline's defaults.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub with: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<String>,
    pub working_directory: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pipeline: Vec<CompiledStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct CompiledPackage {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub dependencies: Dependencies,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<PackageOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scriptlets: Option<Scriptlets>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
    pub pipeline: Vec<CompiledStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<CompiledTest>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CompiledTest {
    pub environment: ImageConfiguration,
    pub pipeline: Vec<CompiledStep>,
}

/// The fully resolved configuration, as `melange compile` prints it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Compiled {
    pub package: Package,
    pub environment: ImageConfiguration,
    pub pipeline: Vec<CompiledStep>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subpackages: Vec<CompiledPackage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<CompiledTest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    pub arch: String,
    /// `target-architecture` excludes this architecture: melange skips the build.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// Every variable the compile defined (after var-transforms and options).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
}

fn triplets(arch: Arch) -> [(&'static str, String); 6] {
    let (gnu, rust) = match arch {
        Arch::Amd64 => ("x86_64-pc-linux-gnu", "x86_64-unknown-linux-gnu"),
        Arch::Arm64 => ("aarch64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"),
        Arch::X86 => ("i486-pc-linux-gnu", "i686-unknown-linux-gnu"),
        Arch::Ppc64le => (
            "powerpc64le-unknown-linux-gnu",
            "powerpc64le-unknown-linux-gnu",
        ),
        Arch::S390x => ("s390x-ibm-linux-gnu", "s390x-unknown-linux-gnu"),
        Arch::Riscv64 => ("riscv64-unknown-linux-gnu", "riscv64gc-unknown-linux-gnu"),
        Arch::ArmV7 => (
            "armv7-unknown-linux-gnueabihf",
            "armv7-unknown-linux-gnueabihf",
        ),
        Arch::ArmV6 => (
            "armv6-unknown-linux-gnueabihf",
            "arm-unknown-linux-gnueabihf",
        ),
        Arch::Loong64 => (
            "loongarch64-unknown-linux-gnu",
            "loongarch64-unknown-linux-gnu",
        ),
    };
    let musl = |s: &str| s.replace("-gnu", "-musl");
    [
        ("host.triplet.gnu", gnu.to_string()),
        ("host.triplet.rust", rust.to_string()),
        ("cross.triplet.gnu.glibc", gnu.to_string()),
        ("cross.triplet.gnu.musl", musl(gnu)),
        ("cross.triplet.rust.glibc", rust.to_string()),
        ("cross.triplet.rust.musl", musl(rust)),
    ]
}

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit())
}

struct Compiler<'a> {
    path: &'a Path,
    dirs: &'a [PathBuf],
    needs: Vec<String>,
}

impl Compiler<'_> {
    fn step_err(&self, step: &str, message: impl Into<String>) -> CompileError {
        CompileError::Step {
            path: self.path.to_path_buf(),
            step: step.to_string(),
            message: message.into(),
        }
    }

    /// Compile one step in `scope`. Returns `None` when its `if:` is false. `from_def` is set
    /// for the steps of a `uses` definition file, whose names melange never substitutes.
    fn step(
        &mut self,
        p: &Pipeline,
        scope: &BTreeMap<String, String>,
        workdir: &str,
        env: &BTreeMap<String, String>,
        depth: usize,
        from_def: bool,
    ) -> Result<Option<CompiledStep>, CompileError> {
        let label = p
            .name
            .clone()
            .or_else(|| p.uses.clone())
            .unwrap_or_else(|| {
                p.runs
                    .as_deref()
                    .and_then(|r| r.lines().next())
                    .unwrap_or("step")
                    .chars()
                    .take(40)
                    .collect()
            });
        if depth > 32 {
            return Err(self.step_err(
                &label,
                "pipelines nest deeper than 32 levels (a uses loop?)",
            ));
        }
        let path = self.path;
        let sub = |t: &str| {
            substitute(t, scope, false).map_err(|m| CompileError::Step {
                path: path.to_path_buf(),
                step: label.clone(),
                message: m,
            })
        };
        if let Some(cond) = &p.if_ {
            let ok =
                evaluate_if(cond, scope).map_err(|m| self.step_err(&label, format!("if: {m}")))?;
            if !ok {
                return Ok(None);
            }
        }
        if p.uses.is_some() && p.runs.is_some() {
            return Err(self.step_err(&label, "uses and runs cannot be combined"));
        }
        if !p.with.is_empty() && p.uses.is_none() {
            return Err(self.step_err(&label, "with is given without uses"));
        }
        let workdir = match &p.working_directory {
            Some(w) => {
                let w = sub(w)?;
                if w.starts_with('/') {
                    w
                } else {
                    format!("/home/build/{w}")
                }
            }
            None => workdir.to_string(),
        };
        let mut env = env.clone();
        for (k, v) in &p.environment {
            env.insert(k.clone(), sub(v)?);
        }
        if let Some(n) = &p.needs {
            for pkg in &n.packages {
                let pkg = sub(pkg)?;
                if !pkg.is_empty() && !self.needs.contains(&pkg) {
                    self.needs.push(pkg);
                }
            }
        }
        let mut out = CompiledStep {
            name: p.name.as_ref().map(|n| {
                if from_def {
                    n.clone()
                } else {
                    substitute_label(n, scope)
                }
            }),
            uses: p.uses.clone(),
            runs: p.runs.as_ref().map(|r| sub(r)).transpose()?,
            working_directory: workdir.clone(),
            environment: env.clone(),
            label: p.label.clone(),
            ..Default::default()
        };
        if let Some(uses) = &p.uses {
            if uses.starts_with('/') || uses.split('/').any(|c| c == "..") {
                return Err(self.step_err(
                    &label,
                    format!("uses: '{uses}' must be a relative pipeline name"),
                ));
            }
            let (source, text) = find_pipeline(uses, self.dirs).ok_or_else(|| {
                self.step_err(
                    &label,
                    format!("unknown pipeline '{uses}' (not built in, and not in --pipeline-dir)"),
                )
            })?;
            let def = parse_pipeline(&source, &text)?;
            for k in p.with.keys() {
                if !def.inputs.contains_key(k) {
                    return Err(self.step_err(
                        &label,
                        format!("input '{k}' is not declared by pipeline '{uses}'"),
                    ));
                }
            }
            let mut inner = scope.clone();
            // Inputs of an outer pipeline do not leak into this one; its own are set below.
            inner.retain(|k, _| !k.starts_with("inputs."));
            for (k, input) in &def.inputs {
                let given = p
                    .with
                    .get(k)
                    .map(|v| sub(v))
                    .transpose()?
                    .filter(|v| !v.is_empty());
                // No default is the default "" (Go's zero string).
                let default = input
                    .default
                    .as_ref()
                    .map(|d| sub(d))
                    .transpose()?
                    .unwrap_or_default();
                let value = given.unwrap_or_else(|| default.clone());
                if value.is_empty() && input.required {
                    return Err(
                        self.step_err(&label, format!("pipeline '{uses}' requires input '{k}'"))
                    );
                }
                let check = match k.as_str() {
                    "expected-sha256" => Some(64),
                    "expected-sha512" => Some(128),
                    "expected-commit" => Some(40),
                    _ => None,
                };
                if let Some(n) = check
                    && !value.is_empty()
                    && !is_hex(&value, n)
                {
                    return Err(self.step_err(
                        &label,
                        format!("input '{k}' must be {n} hex digits, got '{value}'"),
                    ));
                }
                // Only values that differ from the default are kept, so an input that has no
                // default and was not given leaves nothing behind, as in melange.
                if value != default {
                    out.with.insert(k.clone(), value.clone());
                }
                inner.insert(format!("inputs.{k}"), value);
            }
            if let Some(n) = &def.needs {
                for pkg in &n.packages {
                    let pkg =
                        substitute(pkg, &inner, false).map_err(|m| self.step_err(&label, m))?;
                    if !pkg.is_empty() && !self.needs.contains(&pkg) {
                        self.needs.push(pkg);
                    }
                }
            }
            if def.runs.is_some() {
                out.runs = def
                    .runs
                    .as_ref()
                    .map(|r| substitute(r, &inner, false).map_err(|m| self.step_err(&label, m)))
                    .transpose()?;
            }
            for child in &def.pipeline {
                if let Some(c) = self.step(child, &inner, &workdir, &env, depth + 1, true)? {
                    out.pipeline.push(c);
                }
            }
        }
        let mut ran = 0u32;
        for child in &p.pipeline {
            if let Some(c) = self.step(child, scope, &workdir, &env, depth + 1, from_def)? {
                out.pipeline.push(c);
                ran += 1;
            }
        }
        if let Some(a) = &p.assertions
            && a.required_steps > 0
            && ran != a.required_steps
        {
            return Err(self.step_err(
                &label,
                format!(
                    "assertions: {} step(s) must run, {ran} did",
                    a.required_steps
                ),
            ));
        }
        Ok(Some(out))
    }

    fn steps(
        &mut self,
        list: &[Pipeline],
        scope: &BTreeMap<String, String>,
    ) -> Result<Vec<CompiledStep>, CompileError> {
        let mut out = vec![];
        for p in list {
            if let Some(s) = self.step(p, scope, "/home/build", &BTreeMap::new(), 0, false)? {
                out.push(s);
            }
        }
        Ok(out)
    }
}

fn sub_list(
    list: &[String],
    scope: &BTreeMap<String, String>,
    path: &Path,
    what: &str,
) -> Result<Vec<String>, CompileError> {
    list.iter()
        .map(|s| {
            substitute(s, scope, false).map_err(|m| CompileError::Invalid {
                path: path.to_path_buf(),
                message: format!("{what}: {m}"),
            })
        })
        .collect()
}

fn sub_deps(
    d: &Dependencies,
    scope: &BTreeMap<String, String>,
    path: &Path,
) -> Result<Dependencies, CompileError> {
    Ok(Dependencies {
        runtime: sub_list(&d.runtime, scope, path, "dependencies.runtime")?,
        provides: sub_list(&d.provides, scope, path, "dependencies.provides")?,
        replaces: sub_list(&d.replaces, scope, path, "dependencies.replaces")?,
        // wolfi writes `provider-priority: ${{range.value}}` and `${{vars.major-version}}`.
        provider_priority: sub_opt(
            &d.provider_priority,
            scope,
            path,
            "dependencies.provider-priority",
        )?,
        replaces_priority: sub_opt(
            &d.replaces_priority,
            scope,
            path,
            "dependencies.replaces-priority",
        )?,
    })
}

fn sub_opt(
    v: &Option<String>,
    scope: &BTreeMap<String, String>,
    path: &Path,
    what: &str,
) -> Result<Option<String>, CompileError> {
    v.as_deref()
        .map(|s| {
            substitute(s, scope, false).map_err(|m| CompileError::Invalid {
                path: path.to_path_buf(),
                message: format!("{what}: {m}"),
            })
        })
        .transpose()
}

/// Parse a melange YAML file strictly.
pub fn parse(path: &Path) -> Result<(Configuration, String), CompileError> {
    let text = std::fs::read_to_string(path).map_err(|e| CompileError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok((parse_str(&text, path)?, text))
}

/// Parse melange YAML held in memory; `path` names it in errors.
pub fn parse_str(text: &str, path: &Path) -> Result<Configuration, CompileError> {
    serde_saphyr::from_str(text).map_err(|e| CompileError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

const NAME_RE: &str = r"^[a-zA-Z\d][a-zA-Z\d+_.-]*$";

/// The variables every step of `cfg` sees before its subpackages are known: `package.*`,
/// `targets.*`, `build.*`, the triplets, `vars` (with build options and `--vars-file`
/// merged) and the `var-transforms` results, as melange's substitution map holds them.
pub fn variables(
    cfg: &Configuration,
    path: &Path,
    opts: &CompileOptions,
) -> Result<BTreeMap<String, String>, CompileError> {
    let invalid = |message: String| CompileError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let arch = opts.arch.unwrap_or_else(Arch::host);
    let p = &cfg.package;
    let full = format!("{}-r{}", p.version, p.epoch);
    let mut vars: BTreeMap<String, String> = BTreeMap::from([
        ("package.name".into(), p.name.clone()),
        ("package.version".into(), p.version.clone()),
        ("package.epoch".into(), p.epoch.to_string()),
        ("package.full-version".into(), full),
        ("package.description".into(), p.description.clone()),
        ("package.srcdir".into(), "/home/build".into()),
        ("targets.outdir".into(), "/home/build/melange-out".into()),
        (
            "targets.destdir".into(),
            format!("/home/build/melange-out/{}", p.name),
        ),
        (
            format!("targets.package.{}", p.name),
            format!("/home/build/melange-out/{}", p.name),
        ),
        ("build.arch".into(), arch.apk().into()),
        ("build.goarch".into(), arch.oci().0.into()),
    ]);
    for (k, v) in triplets(arch) {
        vars.insert(k.into(), v);
    }
    // User vars, then option vars for enabled options, then --vars-file.
    for (k, v) in &cfg.vars {
        let v = substitute(v, &vars, false).unwrap_or_else(|_| v.clone());
        vars.insert(format!("vars.{k}"), v);
    }
    for o in &opts.build_options {
        if !cfg.options.contains_key(o) {
            return Err(invalid(format!(
                "--build-option {o}: no such option in options:"
            )));
        }
    }
    for (name, o) in &cfg.options {
        let on = opts.build_options.contains(name);
        vars.insert(format!("options.{name}.enabled"), on.to_string());
        if on {
            for (k, v) in &o.vars {
                vars.insert(format!("vars.{k}"), v.clone());
            }
        }
    }
    for (k, v) in &opts.vars {
        vars.insert(format!("vars.{k}"), v.clone());
    }
    for t in &cfg.var_transforms {
        let from = substitute(&t.from, &vars, false)
            .map_err(|m| invalid(format!("var-transforms {}: {m}", t.to)))?;
        let re = regex::Regex::new(&t.match_)
            .map_err(|e| invalid(format!("var-transforms {}: bad regex: {e}", t.to)))?;
        vars.insert(
            format!("vars.{}", t.to),
            re.replace_all(&from, t.replace.as_str()).into_owned(),
        );
    }
    Ok(vars)
}

/// Replace every `${{name}}` in `text` with its value in `vars`; an undefined name is an error.
pub fn substitute_vars(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    substitute(text, vars, false)
}

/// Compile a parsed configuration for one architecture.
pub fn compile(
    cfg: &Configuration,
    path: &Path,
    opts: &CompileOptions,
) -> Result<Compiled, CompileError> {
    let invalid = |message: String| CompileError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let arch = opts.arch.unwrap_or_else(Arch::host);
    let p = &cfg.package;
    // Compiled once: a workspace compiles thousands of recipes.
    static NAME: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(NAME_RE).expect("valid regex"));
    let name_re = &*NAME;
    if !name_re.is_match(&p.name) {
        return Err(invalid(format!(
            "package.name '{}' must match {NAME_RE}",
            p.name
        )));
    }
    if p.version.is_empty() {
        return Err(invalid("package.version is required".into()));
    }
    // melange validates the main package's `setcap` only: it drops a subpackage's when it
    // builds the subpackage list, so that one is never checked nor applied.
    crate::setcap::validate(&p.setcap).map_err(invalid)?;
    // Compiling still works for an architecture the package skips; building does not.
    let skipped = !p.target_architecture.is_empty()
        && !p
            .target_architecture
            .iter()
            .any(|a| a == "all" || Arch::parse(a) == Some(arch));
    let mut vars = variables(cfg, path, opts)?;
    // Subpackage output folders are known to every step.
    type Items = BTreeMap<String, Option<String>>;
    let data: BTreeMap<&str, &Items> = cfg
        .data
        .iter()
        .map(|d| (d.name.as_str(), &d.items))
        .collect();
    let mut expanded: Vec<(Subpackage, BTreeMap<String, String>)> = vec![];
    for sp in &cfg.subpackages {
        match &sp.range {
            Some(r) => {
                let items = data.get(r.as_str()).ok_or_else(|| {
                    invalid(format!(
                        "subpackage {}: range '{r}' is not in data:",
                        sp.name
                    ))
                })?;
                for (k, v) in items.iter() {
                    let mut scope = BTreeMap::new();
                    scope.insert("range.key".to_string(), k.clone());
                    scope.insert("range.value".to_string(), v.clone().unwrap_or_default());
                    expanded.push((sp.clone(), scope));
                }
            }
            None => expanded.push((sp.clone(), BTreeMap::new())),
        }
    }
    let mut subs: Vec<(String, Subpackage, BTreeMap<String, String>)> = vec![];
    for (sp, extra) in expanded {
        let mut scope = vars.clone();
        scope.extend(extra);
        let name = substitute(&sp.name, &scope, false)
            .map_err(|m| invalid(format!("subpackage {}: {m}", sp.name)))?;
        if !name_re.is_match(&name) {
            return Err(invalid(format!(
                "subpackage name '{name}' must match {NAME_RE}"
            )));
        }
        if name == p.name || subs.iter().any(|(n, _, _)| *n == name) {
            return Err(invalid(format!("subpackage name '{name}' is used twice")));
        }
        vars.insert(
            format!("targets.package.{name}"),
            format!("/home/build/melange-out/{name}"),
        );
        subs.push((name, sp, scope));
    }
    let mut c = Compiler {
        path,
        dirs: &opts.pipeline_dirs,
        needs: vec![],
    };
    let mut main_scope = vars.clone();
    main_scope.insert(
        "targets.contextdir".into(),
        format!("/home/build/melange-out/{}", p.name),
    );
    main_scope.insert("context.name".into(), p.name.clone());
    let pipeline = c.steps(&cfg.pipeline, &main_scope)?;
    let mut subpackages = vec![];
    for (name, sp, scope) in subs {
        let mut scope = scope;
        scope.extend(
            vars.iter()
                .filter(|(k, _)| k.starts_with("targets.package."))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        scope.insert(
            "targets.contextdir".into(),
            format!("/home/build/melange-out/{name}"),
        );
        scope.insert(
            "targets.subpkgdir".into(),
            format!("/home/build/melange-out/{name}"),
        );
        scope.insert("subpkg.name".into(), name.clone());
        scope.insert("context.name".into(), name.clone());
        if let Some(cond) = &sp.if_
            && !evaluate_if(cond, &scope)
                .map_err(|m| invalid(format!("subpackage {name}: if: {m}")))?
        {
            continue;
        }
        let steps = c.steps(&sp.pipeline, &scope)?;
        let test = match &sp.test {
            Some(t) => Some(compile_test(
                t,
                &scope,
                path,
                &opts.pipeline_dirs,
                &name,
                &cfg.environment.environment,
            )?),
            None => None,
        };
        subpackages.push(CompiledPackage {
            name: name.clone(),
            description: substitute_lenient(&sp.description, &scope),
            dependencies: sub_deps(&sp.dependencies, &scope, path)?,
            options: sp.options.clone(),
            scriptlets: sp.scriptlets.clone(),
            url: sp.url.clone(),
            checks: sp.checks.clone(),
            pipeline: steps,
            test,
        });
    }
    let mut environment = cfg.environment.clone();
    environment.contents.packages = sub_list(
        &environment.contents.packages,
        &vars,
        path,
        "environment.contents.packages",
    )?;
    for (name, o) in &cfg.options {
        if !opts.build_options.contains(name) {
            continue;
        }
        if let Some(ar) = o
            .environment
            .as_ref()
            .and_then(|e| e.contents.as_ref())
            .and_then(|c| c.packages.as_ref())
        {
            environment
                .contents
                .packages
                .retain(|pk| !ar.remove.contains(pk));
            for a in &ar.add {
                if !environment.contents.packages.contains(a) {
                    environment.contents.packages.push(a.clone());
                }
            }
        }
    }
    for n in c.needs {
        if !environment.contents.packages.contains(&n) {
            environment.contents.packages.push(n);
        }
    }
    let test = match &cfg.test {
        Some(t) => Some(compile_test(
            t,
            &main_scope,
            path,
            &opts.pipeline_dirs,
            &p.name,
            &cfg.environment.environment,
        )?),
        None => None,
    };
    let mut package = p.clone();
    package.dependencies = sub_deps(&p.dependencies, &main_scope, path)?;
    // melange's parse-time replacement reaches the description (`${{package.version}}`,
    // `${{vars.x}}`); anything it does not know stays as written.
    package.description = substitute_label(&p.description, &main_scope);
    Ok(Compiled {
        package,
        environment,
        pipeline,
        subpackages,
        test,
        update: cfg.update.clone(),
        capabilities: cfg.capabilities.clone(),
        arch: arch.apk().into(),
        skipped,
        vars: vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("vars.") || k.starts_with("options."))
            .collect(),
    })
}

fn compile_test(
    t: &Test,
    scope: &BTreeMap<String, String>,
    path: &Path,
    dirs: &[PathBuf],
    pkg: &str,
    build_env: &BTreeMap<String, String>,
) -> Result<CompiledTest, CompileError> {
    let mut c = Compiler {
        path,
        dirs,
        needs: vec![],
    };
    let pipeline = c.steps(&t.pipeline, scope)?;
    let mut environment = t.environment.clone();
    // Tests see the build's environment variables, their own winning, as melange runs them.
    for (k, v) in build_env {
        environment
            .environment
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    // The package under test is installed into its test environment.
    if !environment.contents.packages.iter().any(|p| p == pkg) {
        environment.contents.packages.push(pkg.to_string());
    }
    for n in c.needs {
        if !environment.contents.packages.contains(&n) {
            environment.contents.packages.push(n);
        }
    }
    Ok(CompiledTest {
        environment,
        pipeline,
    })
}

/// Parse and compile a file.
pub fn compile_file(
    path: &Path,
    opts: &CompileOptions,
) -> Result<(Compiled, String), CompileError> {
    let (cfg, text) = parse(path)?;
    Ok((compile(&cfg, path, opts)?, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_yaml(text: &str) -> Result<Configuration, CompileError> {
        parse_str(text, Path::new("t.yaml"))
    }

    fn compile_yaml(text: &str) -> Result<Compiled, CompileError> {
        let opts = CompileOptions {
            arch: Some(Arch::Amd64),
            ..Default::default()
        };
        compile(&parse_yaml(text)?, Path::new("t.yaml"), &opts)
    }

    const HEAD: &str = "package:\n  name: p\n  version: 1.0.0\n  epoch: 0\n";

    #[test]
    fn null_description_is_empty() {
        for v in ["", " ~", " null"] {
            let c = compile_yaml(&format!(
                "{HEAD}  description:{v}\nsubpackages:\n  - name: p-doc\n    description:{v}\n"
            ))
            .unwrap_or_else(|e| panic!("description:{v}: {e}"));
            assert_eq!(c.package.description, "");
            assert_eq!(c.subpackages[0].description, "");
        }
    }

    #[test]
    fn descriptions_get_parse_time_variables() {
        let c = compile_yaml(&format!(
            "{HEAD}  description: \"${{{{package.name}}}} ${{{{package.version}}}} ${{{{vars.flavour}}}} ${{{{nope.x}}}}\"\nvars:\n  flavour: mild\n"
        ))
        .unwrap();
        assert_eq!(c.package.description, "p 1.0.0 mild ${{nope.x}}");
    }

    #[test]
    fn tests_inherit_the_build_environment_variables() {
        let c = compile_yaml(&format!(
            "{HEAD}environment:\n  environment:\n    A: build\n    B: build\ntest:\n  environment:\n    environment:\n      B: test\n  pipeline:\n    - runs: echo $A $B\nsubpackages:\n  - name: p-sub\n    test:\n      pipeline:\n        - runs: echo $A\n"
        ))
        .unwrap();
        let env = &c.test.unwrap().environment.environment;
        assert_eq!((env["A"].as_str(), env["B"].as_str()), ("build", "test"));
        let sub = &c.subpackages[0]
            .test
            .as_ref()
            .unwrap()
            .environment
            .environment;
        assert_eq!(sub["A"], "build");
    }

    #[test]
    fn null_dependencies_and_their_lists_are_empty() {
        // Every entry commented out leaves the key null: the common Wolfi shape.
        let c = compile_yaml(&format!(
            "{HEAD}  dependencies:\n    runtime:\n      # - busybox\n    provides: ~\n\
             subpackages:\n  - name: p-dev\n    dependencies:\n"
        ))
        .unwrap();
        assert!(c.package.dependencies.runtime.is_empty());
        assert!(c.package.dependencies.provides.is_empty());
        assert!(c.subpackages[0].dependencies.runtime.is_empty());
        // yaml.v3 drops a null item of a string list.
        let c = compile_yaml(&format!(
            "{HEAD}  dependencies:\n    runtime:\n      - busybox\n      -\n      - ~\n"
        ))
        .unwrap();
        assert_eq!(c.package.dependencies.runtime, ["busybox"]);
    }

    #[test]
    fn empty_with_is_no_inputs() {
        let c = compile_yaml(&format!(
            "{HEAD}pipeline:\n  - uses: autoconf/make\n    with:\n      # opts: V=1\n"
        ))
        .unwrap();
        assert_eq!(c.pipeline[0].uses.as_deref(), Some("autoconf/make"));
        assert!(c.pipeline[0].with.is_empty());
        // A null value is "" under its key, and "" takes the input's default.
        let c = compile_yaml(&format!(
            "{HEAD}pipeline:\n  - uses: autoconf/make\n    with:\n      dir:\n"
        ))
        .unwrap();
        assert!(c.pipeline[0].with.is_empty(), "{:?}", c.pipeline[0].with);
    }

    #[test]
    fn empty_pipeline_in_a_subpackage() {
        let c = compile_yaml(&format!(
            "{HEAD}pipeline:\nsubpackages:\n  - name: p-meta\n    pipeline:\n      # - runs: true\n\
             environment:\nvars:\ndata:\nvar-transforms:\noptions:\n"
        ))
        .unwrap();
        assert!(c.pipeline.is_empty());
        assert_eq!(c.subpackages[0].name, "p-meta");
        assert!(c.subpackages[0].pipeline.is_empty());
        // A test with no steps and no environment.
        let c = compile_yaml(&format!("{HEAD}test:\n  environment:\n  pipeline:\n")).unwrap();
        assert!(c.test.unwrap().pipeline.is_empty());
    }

    #[test]
    fn empty_range_is_no_range() {
        let c = compile_yaml(&format!(
            "{HEAD}subpackages:\n  - name: p-one\n    range: \"\"\n    if: \"\"\n    pipeline:\n      - runs: echo one\n        if: ''\n        working-directory: ''\n"
        ))
        .unwrap();
        assert_eq!(c.subpackages.len(), 1);
        assert_eq!(c.subpackages[0].name, "p-one");
        let step = &c.subpackages[0].pipeline[0];
        assert_eq!(step.runs.as_deref(), Some("echo one"));
        assert_eq!(step.working_directory, "/home/build");
        // A range that names no data entry is still an error.
        let e = compile_yaml(&format!(
            "{HEAD}subpackages:\n  - name: p-x\n    range: nope\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("range 'nope'"), "{e}");
    }

    #[test]
    fn undefined_variable_in_a_step_name_is_kept() {
        let c = compile_yaml(&format!(
            "{HEAD}vars:\n  v: 2\npipeline:\n  - name: build ${{{{vars.v}}}} for ${{{{package.name}}}} with ${{{{inputs.python}}}} in ${{{{targets.destdir}}}}\n    runs: echo ok\n"
        ))
        .unwrap();
        assert_eq!(
            c.pipeline[0].name.as_deref(),
            Some("build 2 for p with ${{inputs.python}} in ${{targets.destdir}}")
        );
        // In runs it is still an error, naming the step as written.
        let e = compile_yaml(&format!(
            "{HEAD}pipeline:\n  - name: n ${{{{nope}}}}\n    runs: echo ${{{{nope}}}}\n"
        ))
        .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("n ${{nope}}") && m.contains("is not defined"),
            "{m}"
        );
        // And in a working directory.
        assert!(
            compile_yaml(&format!(
                "{HEAD}pipeline:\n  - working-directory: ${{{{nope}}}}\n    runs: true\n"
            ))
            .is_err()
        );
    }

    #[test]
    fn unknown_keys_stay_errors_with_line() {
        let e = compile_yaml(&format!("{HEAD}  descripton: typo\n")).unwrap_err();
        let m = e.to_string();
        assert!(
            m.starts_with("t.yaml: ") && m.contains("descripton") && m.contains("line 5"),
            "{m}"
        );
        // Also under a key that may be null.
        let e = compile_yaml(&format!("{HEAD}  dependencies:\n    runtimes: [a]\n")).unwrap_err();
        assert!(e.to_string().contains("runtimes"), "{e}");
    }

    #[test]
    fn null_scalars_are_zero() {
        let c = compile_yaml(
            "package:\n  name: p\n  version: 1.0.0\n  epoch:\n  url: ~\n  commit:\n  copyright:\n    - license:\n      paths:\nupdate:\n  enabled:\n  ignore-regex-patterns:\n",
        )
        .unwrap();
        assert_eq!(c.package.epoch, 0);
        assert_eq!(c.package.commit, None);
        assert_eq!(c.package.copyright[0].license, "");
        assert!(!c.update.unwrap().enabled);
        // A null package is an empty one, which then fails validation like melange's.
        let e = compile_yaml("package:\n").unwrap_err();
        assert!(e.to_string().contains("package.name"), "{e}");
    }
}
