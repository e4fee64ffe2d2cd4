//! What runs a pod's container: the test decides, through a [`PodRuntime`].

use std::any::Any;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;

/// What the simulated kubelet knows about the container it is starting.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub namespace: String,
    pub pod: String,
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// `env` entries with a literal `value`; `valueFrom` entries are not resolved.
    pub env: Vec<(String, String)>,
    pub ports: Vec<u16>,
    /// The readiness probe's HTTP path, when the container declares one.
    pub readiness_path: Option<String>,
}

impl ContainerSpec {
    /// The value following `flag` in command or args (`--release v1.2.0` → `v1.2.0`).
    pub fn flag(&self, flag: &str) -> Option<&str> {
        let all: Vec<&String> = self.command.iter().chain(&self.args).collect();
        all.windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .or_else(|| {
                let prefix = format!("{flag}=");
                all.iter().find_map(|a| a.strip_prefix(&prefix))
            })
    }
}

/// A started container. Dropping it stops it: the child process is killed and the guard
/// (an in-process server, say) is dropped.
#[derive(Default)]
pub struct Started {
    /// Where the container's port answers; `None` for a container with no process, which
    /// is Ready as soon as it starts.
    pub addr: Option<SocketAddr>,
    pub child: Option<tokio::process::Child>,
    pub guard: Option<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("addr", &self.addr)
            .field("child", &self.child.as_ref().and_then(|c| c.id()))
            .finish_non_exhaustive()
    }
}

/// Why a container could not start; the kubelet reports it as the pod's waiting reason.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start {program:?} for container {container:?}")]
    Spawn {
        program: String,
        container: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reserve a port on 127.0.0.1 for container {container:?}")]
    Port {
        container: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container {container:?}: {message}")]
    Refused { container: String, message: String },
}

pub type StartFuture = Pin<Box<dyn Future<Output = Result<Started, RuntimeError>> + Send>>;

/// Starts a pod's container. The simulated kubelet calls it once the pod's start delay has
/// passed, and again after the process exits (a restart).
pub trait PodRuntime: Send + Sync + 'static {
    fn start(&self, container: ContainerSpec) -> StartFuture;
}

/// Runs nothing: every container is Ready as soon as it starts. For tests that need no
/// backend behind the service proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProcess;

impl PodRuntime for NoProcess {
    fn start(&self, _container: ContainerSpec) -> StartFuture {
        Box::pin(async { Ok(Started::default()) })
    }
}

/// A runtime from an async closure, for in-process backends.
pub struct FnRuntime<F>(pub F);

impl<F, Fut> PodRuntime for FnRuntime<F>
where
    F: Fn(ContainerSpec) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Started, RuntimeError>> + Send + 'static,
{
    fn start(&self, container: ContainerSpec) -> StartFuture {
        Box::pin((self.0)(container))
    }
}

type CommandFn = dyn Fn(&ContainerSpec, SocketAddr) -> Result<tokio::process::Command, RuntimeError>
    + Send
    + Sync;

/// Runs each container as a real process. The closure turns the container spec and a free
/// address on 127.0.0.1 into the command to run (for example `predict-buy serve --release
/// vX.Y.Z --addr ADDR`); the process must listen on that address.
pub struct ProcessRuntime {
    command: Box<CommandFn>,
}

impl ProcessRuntime {
    pub fn new(
        command: impl Fn(&ContainerSpec, SocketAddr) -> Result<tokio::process::Command, RuntimeError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        ProcessRuntime {
            command: Box::new(command),
        }
    }
}

/// A free port: bound, read, released. Another process could take it in between; on a
/// test machine that window is small enough, and the pod would then fail its probe.
pub fn free_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

impl PodRuntime for ProcessRuntime {
    fn start(&self, container: ContainerSpec) -> StartFuture {
        let prepared = free_addr()
            .map_err(|source| RuntimeError::Port {
                container: container.name.clone(),
                source,
            })
            .and_then(|addr| Ok(((self.command)(&container, addr)?, addr)));
        Box::pin(async move {
            let (mut cmd, addr) = prepared?;
            let program = cmd.as_std().get_program().to_string_lossy().into_owned();
            let child = cmd
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| RuntimeError::Spawn {
                    program,
                    container: container.name.clone(),
                    source,
                })?;
            Ok(Started {
                addr: Some(addr),
                child: Some(child),
                guard: None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_reads_separate_and_joined_values() {
        let c = ContainerSpec {
            namespace: "n".into(),
            pod: "p".into(),
            name: "app".into(),
            image: "i".into(),
            command: vec!["predict-buy".into(), "serve".into()],
            args: vec![
                "--release".into(),
                "v1.2.0".into(),
                "--addr=0.0.0.0:8080".into(),
            ],
            env: vec![],
            ports: vec![8080],
            readiness_path: Some("/readyz".into()),
        };
        assert_eq!(c.flag("--release"), Some("v1.2.0"));
        assert_eq!(c.flag("--addr"), Some("0.0.0.0:8080"));
        assert_eq!(c.flag("--registry"), None);
    }
}
