//! The project config, `predict-buy.yaml`: where the registry is and which
//! environments exist, how each is reached and what it accepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use predict_buy_registry::{EnvName, RegistryUrl};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::canary::{CanaryConfig, Thresholds};
use crate::error::{Error, Result};
use crate::kubernetes::{Autoscale, KubeSettings, Resources};

/// The file name looked for in the current folder and every folder above it.
pub const CONFIG_FILE: &str = "predict-buy.yaml";

/// Which git branch maps to which environment when the config does not say.
pub const DEFAULT_BRANCHES: [(&str, &str); 2] = [("main", "prod"), ("develop", "nonprod")];

/// `predict-buy.yaml` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// Registry URL; a relative `file://` path is relative to the config's folder.
    #[serde(default)]
    pub registry: Option<String>,
    /// Whether a release must also exist as a git tag to be deployed (default true).
    /// `quickstart` writes `false`: its folder has releases but no git history.
    #[serde(default = "yes")]
    pub require_git_tag: bool,
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentConfig>,
    /// Canary thresholds for every environment (`deploy --canary`); an
    /// environment's own `canary:` block overrides them key by key.
    #[serde(default)]
    pub canary: Option<CanaryConfig>,
}

fn yes() -> bool {
    true
}

/// Where an environment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// `predict-buy serve --registry URL --env NAME` processes that follow the registry.
    Local,
    /// A Kubernetes namespace, rolled out with kube-rs (see [`crate::kubernetes`]).
    Kubernetes,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Local => "local",
            TargetKind::Kubernetes => "kubernetes",
        }
    }
}

/// One environment of `predict-buy.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// The git branch that deploys here when `--env` is absent.
    #[serde(default)]
    pub branch: Option<String>,
    pub target: TargetKind,
    /// Base URLs of the instances, each verified after a deploy.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Kubernetes namespace (kubernetes targets only).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Only releases verified in this environment may be deployed here.
    #[serde(default)]
    pub require_verified_in: Option<String>,
    /// How long verification may take before a rollback, e.g. `30s` (default 30s).
    #[serde(default)]
    pub verify_timeout: Option<String>,
    /// Kubernetes: the kubeconfig context (default: the current one).
    #[serde(default)]
    pub context: Option<String>,
    /// Kubernetes: pods of the Deployment (default 2; left to the autoscaler with
    /// `autoscale`).
    #[serde(default)]
    pub replicas: Option<i32>,
    /// Kubernetes: the server container's requests and limits.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Kubernetes: the pods' service account (e.g. one bound to an IAM role for S3).
    #[serde(default)]
    pub service_account: Option<String>,
    /// Kubernetes: a Secret whose keys become the server's environment (S3 credentials).
    #[serde(default)]
    pub registry_secret: Option<String>,
    /// Kubernetes: the image (default: the release's image, else `predict-buy:<version>`).
    #[serde(default)]
    pub image: Option<String>,
    /// Kubernetes: a HorizontalPodAutoscaler on CPU.
    #[serde(default)]
    pub autoscale: Option<Autoscale>,
    /// Kubernetes: create the namespace when it does not exist.
    #[serde(default)]
    pub create_namespace: Option<bool>,
    /// Kubernetes: the registry URL the pods read (default: the project's registry).
    #[serde(default)]
    pub pod_registry: Option<String>,
    /// Canary thresholds of this environment, over the top-level `canary:` block.
    #[serde(default)]
    pub canary: Option<CanaryConfig>,
}

impl EnvironmentConfig {
    /// The keys that only a Kubernetes target reads, with whether each is set.
    fn kubernetes_keys(&self) -> [(&'static str, bool); 10] {
        [
            ("namespace", self.namespace.is_some()),
            ("context", self.context.is_some()),
            ("replicas", self.replicas.is_some()),
            ("resources", self.resources.is_some()),
            ("service_account", self.service_account.is_some()),
            ("registry_secret", self.registry_secret.is_some()),
            ("image", self.image.is_some()),
            ("autoscale", self.autoscale.is_some()),
            ("create_namespace", self.create_namespace.is_some()),
            ("pod_registry", self.pod_registry.is_some()),
        ]
    }

    /// Every key that does not apply to this environment's target, so a typo of
    /// the target or a key copied from another environment is an error, not ignored.
    fn misplaced_keys(&self) -> Vec<&'static str> {
        match self.target {
            TargetKind::Local => self
                .kubernetes_keys()
                .into_iter()
                .filter_map(|(k, set)| set.then_some(k))
                .collect(),
            TargetKind::Kubernetes => {
                if self.endpoints.is_empty() {
                    Vec::new()
                } else {
                    vec!["endpoints"]
                }
            }
        }
    }
}

/// A config read from disk, with the folder it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub config: ProjectConfig,
}

/// An environment picked from the config, with its validated pieces.
#[derive(Debug, Clone)]
pub struct Environment {
    pub name: EnvName,
    pub config: EnvironmentConfig,
    pub endpoints: Vec<Url>,
    pub verify_timeout: Option<Duration>,
    /// What a canary's analysis holds the candidate to.
    pub canary: Thresholds,
    /// The config file it came from, for messages.
    pub source: PathBuf,
}

impl LoadedConfig {
    /// Find `predict-buy.yaml` in `start` or the nearest folder above it and load it.
    pub fn discover(start: &Path) -> Result<Self> {
        let mut dir = Some(start);
        while let Some(d) = dir {
            let candidate = d.join(CONFIG_FILE);
            if candidate.is_file() {
                return Self::load(&candidate);
            }
            dir = d.parent();
        }
        Err(Error::ConfigNotFound {
            start: start.to_path_buf(),
        })
    }

    /// Load and validate one config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse config text; `path` is used for messages and relative registry paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let invalid = |message: String| Error::ConfigInvalid {
            path: path.to_path_buf(),
            message,
        };
        let config: ProjectConfig =
            serde_yaml_ng::from_str(text).map_err(|e| invalid(e.to_string()))?;
        for (name, env) in &config.environments {
            EnvName::parse(name).map_err(|e| invalid(format!("environments.{name}: {e}")))?;
            if let Some(req) = &env.require_verified_in
                && !config.environments.contains_key(req)
            {
                return Err(invalid(format!(
                    "environments.{name}.require_verified_in: `{req}` is not an environment of this file"
                )));
            }
            if let Some(req) = &env.require_verified_in
                && req == name
            {
                return Err(invalid(format!(
                    "environments.{name}.require_verified_in: an environment cannot require itself"
                )));
            }
            for (i, e) in env.endpoints.iter().enumerate() {
                parse_endpoint(e).map_err(|reason| {
                    invalid(format!(
                        "environments.{name}.endpoints[{i}]: `{e}` {reason}"
                    ))
                })?;
            }
            if let Some(key) = env.misplaced_keys().first() {
                return Err(invalid(format!(
                    "environments.{name}.{key}: does not apply to a `{}` target",
                    env.target.as_str()
                )));
            }
            if env.target == TargetKind::Kubernetes && env.namespace.is_none() {
                return Err(invalid(format!(
                    "environments.{name}: a `kubernetes` target needs `namespace`"
                )));
            }
            if let Some(n) = env.replicas
                && n < 1
            {
                return Err(invalid(format!(
                    "environments.{name}.replicas: {n} is not at least 1"
                )));
            }
            if let Some(a) = &env.autoscale
                && (a.min_replicas < 1 || a.max_replicas < a.min_replicas)
            {
                return Err(invalid(format!(
                    "environments.{name}.autoscale: needs 1 ≤ min_replicas ≤ max_replicas, got {} and {}",
                    a.min_replicas, a.max_replicas
                )));
            }
            if let Some(r) = &env.pod_registry {
                RegistryUrl::parse(r)
                    .map_err(|e| invalid(format!("environments.{name}.pod_registry: {e}")))?;
            }
            Thresholds::resolve(config.canary.as_ref(), env.canary.as_ref(), name)
                .map_err(invalid)?;
            if let Some(t) = &env.verify_timeout {
                parse_duration(t).map_err(|reason| {
                    invalid(format!(
                        "environments.{name}.verify_timeout: `{t}` {reason}"
                    ))
                })?;
            }
        }
        // Checked without environments too, so a typo there is never silent.
        Thresholds::resolve(config.canary.as_ref(), None, "").map_err(invalid)?;
        if let Some(r) = &config.registry {
            RegistryUrl::parse(r).map_err(|e| invalid(format!("registry: {e}")))?;
        }
        Ok(LoadedConfig {
            path: path.to_path_buf(),
            config,
        })
    }

    /// The folder holding the config file: the project root.
    pub fn root(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// The registry URL from the config, with a relative `file://` path resolved
    /// against the config's folder (so commands work from any subfolder).
    pub fn registry_url(&self) -> Result<Option<RegistryUrl>> {
        let Some(raw) = &self.config.registry else {
            return Ok(None);
        };
        let url = RegistryUrl::parse(raw).map_err(|e| Error::ConfigInvalid {
            path: self.path.clone(),
            message: format!("registry: {e}"),
        })?;
        Ok(Some(match url {
            RegistryUrl::File { root } if root.is_relative() => RegistryUrl::File {
                root: self.root().join(root),
            },
            other => other,
        }))
    }

    /// The environment named `name`.
    pub fn environment(&self, name: &str) -> Result<Environment> {
        let Some(cfg) = self.config.environments.get(name) else {
            return Err(Error::UnknownEnv {
                env: name.to_string(),
                path: self.path.clone(),
                known: self.config.environments.keys().cloned().collect(),
            });
        };
        // Every key and value was validated by `parse`.
        let endpoints = cfg
            .endpoints
            .iter()
            .filter_map(|e| parse_endpoint(e).ok())
            .collect();
        Ok(Environment {
            name: EnvName::parse(name)?,
            config: cfg.clone(),
            endpoints,
            verify_timeout: cfg
                .verify_timeout
                .as_deref()
                .and_then(|t| parse_duration(t).ok()),
            // Validated by `parse`; the defaults stand in should that ever change.
            canary: Thresholds::resolve(self.config.canary.as_ref(), cfg.canary.as_ref(), name)
                .unwrap_or_default(),
            source: self.path.clone(),
        })
    }

    /// The environment that follows `branch`: the one whose `branch` key says so, else
    /// `main → prod`, `develop → nonprod` when such an environment exists.
    pub fn environment_for_branch(&self, branch: &str) -> Result<Environment> {
        let explicit = self
            .config
            .environments
            .iter()
            .find(|(_, e)| e.branch.as_deref() == Some(branch));
        if let Some((name, _)) = explicit {
            return self.environment(name);
        }
        let fallback = DEFAULT_BRANCHES
            .iter()
            .find(|(b, env)| {
                *b == branch
                    && self
                        .config
                        .environments
                        .get(*env)
                        .is_some_and(|e| e.branch.is_none())
            })
            .map(|(_, env)| *env);
        match fallback {
            Some(env) => self.environment(env),
            None => Err(Error::NoEnvForBranch {
                branch: branch.to_string(),
                path: self.path.clone(),
            }),
        }
    }

    /// `--env` if given, else the environment of the project's current git branch.
    pub fn resolve_environment(&self, env: Option<&str>) -> Result<Environment> {
        match env {
            Some(name) => self.environment(name),
            None => {
                let branch = crate::git::current_branch(self.root())?;
                self.environment_for_branch(&branch)
            }
        }
    }
}

impl Environment {
    /// The Kubernetes settings of a `kubernetes` environment.
    pub fn kube_settings(&self) -> Result<KubeSettings> {
        let c = &self.config;
        let Some(namespace) = &c.namespace else {
            return Err(Error::KubernetesConfig {
                env: self.name.clone(),
                path: self.source.clone(),
                message: "a `kubernetes` target needs `namespace`".into(),
            });
        };
        let mut s = KubeSettings::new(namespace.clone());
        if let Some(n) = c.replicas {
            s.replicas = n;
        }
        if let Some(r) = &c.resources {
            s.resources = r.clone();
        }
        s.service_account = c.service_account.clone();
        s.registry_secret = c.registry_secret.clone();
        s.image = c.image.clone();
        s.autoscale = c.autoscale.clone();
        s.create_namespace = c.create_namespace.unwrap_or(false);
        Ok(s)
    }
}

/// Parse an endpoint base URL: `http(s)://host:port[/prefix]`.
pub fn parse_endpoint(input: &str) -> std::result::Result<Url, String> {
    let url = Url::parse(input).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if url.host().is_none() {
        return Err("has no host".into());
    }
    Ok(url)
}

/// Parse `250ms`, `30s`, `2m` or a bare number of seconds.
pub fn parse_duration(input: &str) -> std::result::Result<Duration, String> {
    let s = input.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| "is not a duration like 500ms, 30s or 2m".to_string())?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        other => return Err(format!("has unknown unit `{other}` (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESIGN_EXAMPLE: &str = "
registry: file://.predict-buy/registry
environments:
  nonprod:
    branch: develop
    target: local
    endpoints: [http://127.0.0.1:8081, http://127.0.0.1:8082]
  prod:
    branch: main
    target: kubernetes
    namespace: prod
    require_verified_in: nonprod
";

    fn parse(text: &str) -> Result<LoadedConfig> {
        LoadedConfig::parse(text, Path::new("/proj/predict-buy.yaml"))
    }

    #[test]
    fn the_design_example_parses() {
        let c = parse(DESIGN_EXAMPLE).unwrap();
        let nonprod = c.environment("nonprod").unwrap();
        assert_eq!(nonprod.endpoints.len(), 2);
        assert_eq!(nonprod.config.target, TargetKind::Local);
        assert!(c.config.require_git_tag);
        let prod = c.environment("prod").unwrap();
        assert_eq!(prod.config.require_verified_in.as_deref(), Some("nonprod"));
        assert_eq!(
            c.registry_url().unwrap().unwrap().to_string(),
            "file:///proj/.predict-buy/registry"
        );
    }

    #[test]
    fn canary_thresholds_layer_environment_over_top_level_over_defaults() {
        let c = parse(
            "canary: {max_score_psi: 0.1, min_requests: 500}\n\
             environments:\n  \
               nonprod: {target: local, canary: {min_requests: 30, interval: 250ms}}\n  \
               prod: {target: local}\n",
        )
        .unwrap();
        let nonprod = c.environment("nonprod").unwrap().canary;
        assert_eq!((nonprod.max_score_psi, nonprod.min_requests), (0.1, 30));
        assert_eq!(nonprod.interval, Duration::from_millis(250));
        let prod = c.environment("prod").unwrap().canary;
        assert_eq!((prod.max_score_psi, prod.min_requests), (0.1, 500));
        assert_eq!(prod.max_error_rate_increase, 0.01);
    }

    #[test]
    fn branches_map_to_environments() {
        let c = parse(DESIGN_EXAMPLE).unwrap();
        assert_eq!(
            c.environment_for_branch("main").unwrap().name.as_str(),
            "prod"
        );
        assert_eq!(
            c.environment_for_branch("develop").unwrap().name.as_str(),
            "nonprod"
        );
        let err = c.environment_for_branch("feature/x").unwrap_err();
        assert!(err.to_string().contains("feature/x"), "{err}");
        assert_eq!(err.exit_code(), 2);
        // Without `branch` keys the conventional mapping applies.
        let bare =
            parse("environments:\n  prod: {target: local}\n  nonprod: {target: local}\n").unwrap();
        assert_eq!(
            bare.environment_for_branch("main").unwrap().name.as_str(),
            "prod"
        );
    }

    #[test]
    fn unknown_keys_name_the_key_and_file() {
        let err = parse("environments:\n  nonprod:\n    target: local\n    endpoint: []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/proj/predict-buy.yaml"), "{err}");
        assert!(err.contains("endpoint"), "{err}");
        let err = parse("registri: x\n").unwrap_err().to_string();
        assert!(err.contains("registri"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("environments:\n  nonprod: {target: docker}\n", "docker"),
            (
                "environments:\n  nonprod: {target: local, endpoints: [ftp://x]}\n",
                "environments.nonprod.endpoints[0]",
            ),
            (
                "environments:\n  prod: {target: local, require_verified_in: qa}\n",
                "environments.prod.require_verified_in",
            ),
            (
                "environments:\n  Prod: {target: local}\n",
                "environments.Prod",
            ),
            (
                "environments:\n  nonprod: {target: local, verify_timeout: soon}\n",
                "verify_timeout",
            ),
            ("registry: http://x\n", "registry"),
            (
                "canary: {max_score_psi: -1}\nenvironments:\n  nonprod: {target: local}\n",
                "canary.max_score_psi: -1",
            ),
            (
                "environments:\n  nonprod: {target: local, canary: {min_requests: 0}}\n",
                "environments.nonprod.canary.min_requests",
            ),
            (
                "environments:\n  nonprod: {target: local, canary: {max_psi: 1}}\n",
                "max_psi",
            ),
        ];
        for (text, needle) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn unknown_environment_lists_known_ones() {
        let c = parse(DESIGN_EXAMPLE).unwrap();
        let err = c.environment("staging").unwrap_err().to_string();
        assert!(
            err.contains("`staging`") && err.contains("`nonprod`, `prod`"),
            "{err}"
        );
    }

    #[test]
    fn discovery_walks_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), DESIGN_EXAMPLE).unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        let c = LoadedConfig::discover(&sub).unwrap();
        assert_eq!(c.root(), dir.path());
        let empty = tempfile::tempdir().unwrap();
        let err = LoadedConfig::discover(empty.path()).unwrap_err();
        assert!(matches!(err, Error::ConfigNotFound { .. }));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
