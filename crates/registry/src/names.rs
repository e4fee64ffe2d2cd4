//! Validated names: parsed once at the edge so inner code never holds an invalid one.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Where a registry lives.
///
/// Accepted forms:
/// - `file://DIR`: everything after `file://` is a path, relative paths allowed
///   (`file://.predict-buy/registry`, `file:///srv/registry`);
/// - a plain path (`./registry`, `/srv/registry`), treated as `file://`;
/// - `s3://bucket` or `s3://bucket/some/prefix`.
///
/// Any other scheme (`http://`, `gs://`, …) is refused with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryUrl {
    /// A folder on the local file system.
    File { root: PathBuf },
    /// An S3 bucket, optionally under a key prefix (no leading or trailing `/`).
    S3 { bucket: String, prefix: String },
}

impl RegistryUrl {
    /// Parse a registry URL; see the type docs for the accepted forms.
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidUrl {
            url: input.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(bad("it is empty; use file://DIR or s3://bucket/prefix"));
        }
        if let Some(path) = trimmed.strip_prefix("file://") {
            if path.is_empty() {
                return Err(bad("no directory after `file://`"));
            }
            return Ok(RegistryUrl::File {
                root: PathBuf::from(path),
            });
        }
        if let Some(rest) = trimmed.strip_prefix("s3://") {
            return Self::parse_s3(rest).map_err(|reason| bad(&reason));
        }
        if let Some((scheme, _)) = trimmed.split_once("://") {
            return Err(bad(&format!(
                "unsupported scheme `{scheme}://`; a registry is file://DIR, a plain directory path, or s3://bucket/prefix"
            )));
        }
        if trimmed.starts_with("s3:") || trimmed.starts_with("file:") {
            return Err(bad(
                "a scheme needs `//`, as in s3://bucket/prefix or file://DIR",
            ));
        }
        Ok(RegistryUrl::File {
            root: PathBuf::from(trimmed),
        })
    }

    fn parse_s3(rest: &str) -> std::result::Result<Self, String> {
        if rest.contains(['?', '#']) {
            return Err("query strings and fragments are not supported".into());
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err("no bucket name after `s3://`".into());
        }
        if !(3..=63).contains(&bucket.len()) {
            return Err(format!(
                "bucket name `{bucket}` must be 3 to 63 characters long"
            ));
        }
        let valid_chars = bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !valid_chars || !ends_ok(bucket.chars().next()) || !ends_ok(bucket.chars().last()) {
            return Err(format!(
                "bucket name `{bucket}` may only hold lowercase letters, digits, `-` and `.`, and must start and end with a letter or digit"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|part| part == "." || part == "..") {
            return Err(format!("prefix `{prefix}` must not contain `.` or `..`"));
        }
        if prefix.contains("//") {
            return Err(format!("prefix `{prefix}` has an empty path segment"));
        }
        Ok(RegistryUrl::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl FromStr for RegistryUrl {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for RegistryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryUrl::File { root } => write!(f, "file://{}", root.display()),
            RegistryUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RegistryUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// A sha256 content digest, written `sha256:<64 lowercase hex>`.
///
/// [`Digest::parse`] takes the full form (or the bare 64 hex digits); a shorter hex
/// prefix is resolved against a store by [`crate::Registry::resolve_digest`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub(crate) fn from_hasher(hasher: Sha256) -> Self {
        Digest(hex::encode(hasher.finalize()))
    }

    /// Parse `sha256:<64 hex>` (or bare 64 hex digits). Uppercase hex is accepted and
    /// normalised to lowercase.
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidDigest {
            input: input.to_string(),
            reason,
        };
        let hex_part = match input.split_once(':') {
            Some(("sha256", rest)) => rest,
            Some((algo, _)) => {
                return Err(bad(format!(
                    "unsupported algorithm `{algo}`; only sha256 is used"
                )));
            }
            None => input,
        };
        if let Some(c) = hex_part.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(bad(format!("`{c}` is not a hex digit")));
        }
        if hex_part.len() != 64 {
            return Err(bad(format!(
                "a sha256 digest has 64 hex digits, this has {}",
                hex_part.len()
            )));
        }
        Ok(Digest(hex_part.to_ascii_lowercase()))
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for display.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", self.0)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// A release tag: `vMAJOR.MINOR.PATCH`, ordered by semver precedence.
///
/// Pre-release (`v1.2.3-rc.1`) and build metadata (`v1.2.3+abc`) are refused: a
/// release is something that may run in production, and environments compare tags
/// with plain semver ordering. Cut `v1.2.4` instead of `v1.2.4-rc.1`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReleaseTag(semver::Version);

impl ReleaseTag {
    /// Parse `vMAJOR.MINOR.PATCH`; the error says exactly what is wrong.
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidTag {
            input: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(bad("a release tag looks like v1.2.3, got nothing".into()));
        }
        let Some(body) = input.strip_prefix('v') else {
            let hint = if let Some(rest) = input.strip_prefix('V') {
                format!("the leading `v` must be lowercase: `v{rest}`")
            } else if input.starts_with(|c: char| c.is_ascii_digit()) {
                format!("missing leading `v`: write `v{input}`")
            } else {
                "a release tag looks like vMAJOR.MINOR.PATCH, e.g. v1.2.3".to_string()
            };
            return Err(bad(hint));
        };
        if let Some(idx) = body.find(['-', '+']) {
            let (core, extra) = body.split_at(idx);
            let what = if extra.starts_with('-') {
                "pre-release"
            } else {
                "build metadata"
            };
            return Err(bad(format!(
                "{what} `{extra}` is not allowed: release tags are plain vMAJOR.MINOR.PATCH (e.g. `v{core}`)"
            )));
        }
        let parts: Vec<&str> = body.split('.').collect();
        if parts.len() != 3 {
            return Err(bad(format!(
                "`{body}` needs three numbers MAJOR.MINOR.PATCH, it has {}",
                parts.len()
            )));
        }
        for (name, part) in ["MAJOR", "MINOR", "PATCH"].iter().zip(&parts) {
            if part.is_empty() {
                return Err(bad(format!("{name} is empty")));
            }
            if !part.chars().all(|c| c.is_ascii_digit()) {
                return Err(bad(format!("{name} `{part}` is not a number")));
            }
            if part.len() > 1 && part.starts_with('0') {
                return Err(bad(format!("{name} `{part}` has a leading zero")));
            }
        }
        semver::Version::parse(body)
            .map(ReleaseTag)
            .map_err(|e| bad(e.to_string()))
    }

    /// The semantic version without the `v`.
    pub fn version(&self) -> &semver::Version {
        &self.0
    }
}

impl fmt::Display for ReleaseTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl fmt::Debug for ReleaseTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReleaseTag(v{})", self.0)
    }
}

impl FromStr for ReleaseTag {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// An environment name: 1 to 63 characters of `[a-z0-9-]`, starting and ending with a
/// letter or digit (a DNS label, so it can also name a Kubernetes namespace).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvName(String);

impl EnvName {
    /// Parse an environment name; see the type docs for the rules.
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidEnv {
            input: input.to_string(),
            reason,
        };
        if input.is_empty() || input.len() > 63 {
            return Err(bad(format!(
                "must be 1 to 63 characters long, it has {}",
                input.len()
            )));
        }
        if let Some(c) = input
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(bad(format!(
                "`{c}` is not allowed: use lowercase letters, digits and `-`"
            )));
        }
        if input.starts_with('-') || input.ends_with('-') {
            return Err(bad("must start and end with a letter or digit".into()));
        }
        Ok(EnvName(input.to_string()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvName({})", self.0)
    }
}

impl FromStr for EnvName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

macro_rules! serde_via_str {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$ty>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(Digest);
serde_via_str!(ReleaseTag);
serde_via_str!(EnvName);

#[cfg(test)]
mod tests {
    use super::*;

    fn tag_err(s: &str) -> String {
        ReleaseTag::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn release_tags_parse_and_order_by_semver() {
        let mut tags: Vec<ReleaseTag> = ["v1.10.0", "v1.2.0", "v0.1.0", "v1.2.10", "v1.2.9"]
            .iter()
            .map(|s| ReleaseTag::parse(s).unwrap())
            .collect();
        tags.sort();
        let shown: Vec<String> = tags.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["v0.1.0", "v1.2.0", "v1.2.9", "v1.2.10", "v1.10.0"]);
    }

    #[test]
    fn release_tag_errors_say_what_is_wrong() {
        assert!(
            tag_err("1.2.3").contains("missing leading `v`"),
            "{}",
            tag_err("1.2.3")
        );
        assert!(tag_err("v1.2").contains("`1.2` needs three numbers MAJOR.MINOR.PATCH"));
        assert!(tag_err("v1.2.3.4").contains("needs three numbers"));
        assert!(tag_err("v1.2.3-rc.1").contains("pre-release `-rc.1` is not allowed"));
        assert!(tag_err("v1.2.3+git").contains("build metadata"));
        assert!(tag_err("v01.2.3").contains("leading zero"));
        assert!(tag_err("v1.x.3").contains("MINOR `x` is not a number"));
        assert!(tag_err("V1.2.3").contains("lowercase"));
        assert!(tag_err("").contains("got nothing"));
        assert!(tag_err("latest").contains("vMAJOR.MINOR.PATCH"));
    }

    #[test]
    fn digests_parse_in_full_only() {
        let d = Digest::of(b"hello");
        assert_eq!(
            d.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert_eq!(Digest::parse(d.hex()).unwrap(), d);
        assert_eq!(Digest::parse(&d.hex().to_uppercase()).unwrap(), d);
        assert!(
            Digest::parse("sha256:abc")
                .unwrap_err()
                .to_string()
                .contains("64 hex digits")
        );
        assert!(
            Digest::parse("md5:abc")
                .unwrap_err()
                .to_string()
                .contains("only sha256")
        );
        assert!(
            Digest::parse("sha256:zz")
                .unwrap_err()
                .to_string()
                .contains("`z` is not a hex digit")
        );
    }

    #[test]
    fn env_names_are_dns_labels() {
        assert!(EnvName::parse("nonprod").is_ok());
        assert!(EnvName::parse("eu-west-1").is_ok());
        assert!(EnvName::parse("Prod").is_err());
        assert!(EnvName::parse("-prod").is_err());
        assert!(EnvName::parse("").is_err());
        assert!(EnvName::parse(&"a".repeat(64)).is_err());
        assert!(EnvName::parse("a/b").is_err());
    }

    #[test]
    fn registry_urls() {
        assert_eq!(
            RegistryUrl::parse("file://.predict-buy/registry").unwrap(),
            RegistryUrl::File {
                root: ".predict-buy/registry".into()
            }
        );
        assert_eq!(
            RegistryUrl::parse("/srv/reg").unwrap(),
            RegistryUrl::File {
                root: "/srv/reg".into()
            }
        );
        assert_eq!(
            RegistryUrl::parse("s3://models/team/a/").unwrap(),
            RegistryUrl::S3 {
                bucket: "models".into(),
                prefix: "team/a".into()
            }
        );
        assert_eq!(
            RegistryUrl::parse("s3://models").unwrap().to_string(),
            "s3://models"
        );
        for (url, why) in [
            ("http://example.com/x", "unsupported scheme `http://`"),
            ("gs://bucket", "unsupported scheme `gs://`"),
            ("s3://", "no bucket name"),
            ("s3://Bad_Bucket/x", "may only hold lowercase"),
            ("s3://ab", "3 to 63"),
            ("s3:bucket", "needs `//`"),
            ("file://", "no directory"),
            ("", "empty"),
            ("s3://bucket/a/../b", "`..`"),
        ] {
            let err = RegistryUrl::parse(url).unwrap_err();
            assert!(err.is_user_error());
            let msg = err.to_string();
            assert!(msg.contains(why), "{url}: {msg}");
            assert!(msg.contains(&format!("`{url}`")), "{url}: {msg}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_plain_version_round_trips(major in 0u64..100_000, minor in 0u64..100_000, patch in 0u64..100_000) {
            let text = format!("v{major}.{minor}.{patch}");
            let tag = ReleaseTag::parse(&text).unwrap();
            proptest::prop_assert_eq!(tag.to_string(), text);
        }

        #[test]
        fn parsers_never_panic(input in ".{0,80}") {
            let _ = ReleaseTag::parse(&input);
            let _ = Digest::parse(&input);
            let _ = EnvName::parse(&input);
            let _ = RegistryUrl::parse(&input);
        }

        #[test]
        fn accepted_env_names_are_dns_labels(input in "[a-z0-9-]{0,70}") {
            if let Ok(env) = EnvName::parse(&input) {
                proptest::prop_assert!((1..=63).contains(&env.as_str().len()));
                proptest::prop_assert!(!env.as_str().starts_with('-') && !env.as_str().ends_with('-'));
            }
        }

        #[test]
        fn tag_order_is_numeric(a in (0u64..50, 0u64..50, 0u64..50), b in (0u64..50, 0u64..50, 0u64..50)) {
            let ta = ReleaseTag::parse(&format!("v{}.{}.{}", a.0, a.1, a.2)).unwrap();
            let tb = ReleaseTag::parse(&format!("v{}.{}.{}", b.0, b.1, b.2)).unwrap();
            proptest::prop_assert_eq!(ta.cmp(&tb), a.cmp(&b));
        }
    }

    #[test]
    fn names_round_trip_through_serde() {
        let tag = ReleaseTag::parse("v2.0.1").unwrap();
        let json = serde_json::to_string(&tag).unwrap();
        assert_eq!(json, "\"v2.0.1\"");
        assert_eq!(serde_json::from_str::<ReleaseTag>(&json).unwrap(), tag);
        assert!(serde_json::from_str::<ReleaseTag>("\"2.0.1\"").is_err());
    }
}
