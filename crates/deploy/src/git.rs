//! The little of git a deploy needs: the current branch and whether a tag exists.
//! It runs the `git` program, as the original workflow did, rather than linking a
//! git implementation.

use std::path::Path;
use std::process::{Command, Output};

use predict_buy_registry::ReleaseTag;

use crate::error::{Error, Result};

fn git(dir: &Path, args: &[&str]) -> Result<Output> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|source| Error::Git {
            dir: dir.to_path_buf(),
            source,
        })
}

fn in_repo(dir: &Path) -> Result<bool> {
    let out = git(dir, &["rev-parse", "--git-dir"])?;
    Ok(out.status.success())
}

/// The branch checked out in `dir`'s repository.
pub fn current_branch(dir: &Path) -> Result<String> {
    let no_branch = |reason: String| Error::NoBranch {
        dir: dir.to_path_buf(),
        reason,
    };
    let out = git(dir, &["symbolic-ref", "--quiet", "--short", "HEAD"]).map_err(|e| {
        no_branch(match &e {
            Error::Git { source, .. } => format!("git could not be run ({source})"),
            other => other.to_string(),
        })
    })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    if !in_repo(dir)? {
        return Err(no_branch("it is not in a git repository".into()));
    }
    Err(no_branch("HEAD is detached".into()))
}

/// The commit `refs/tags/<tag>` points at, or an error naming what is missing.
pub fn tag_commit(dir: &Path, tag: &ReleaseTag) -> Result<String> {
    let spec = format!("refs/tags/{tag}^{{commit}}");
    let out = git(dir, &["rev-parse", "--verify", "--quiet", &spec])?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    if !in_repo(dir)? {
        return Err(Error::NotAGitRepo {
            tag: tag.clone(),
            dir: dir.to_path_buf(),
        });
    }
    Err(Error::GitTagMissing {
        tag: tag.clone(),
        dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .unwrap();
        assert!(ok.status.success(), "git {args:?}: {ok:?}");
    }

    #[test]
    fn branches_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let v1 = ReleaseTag::parse("v1.0.0").unwrap();
        assert!(matches!(tag_commit(d, &v1), Err(Error::NotAGitRepo { .. })));
        assert!(matches!(current_branch(d), Err(Error::NoBranch { .. })));
        run(d, &["init", "-q", "-b", "develop"]);
        run(d, &["commit", "-q", "--allow-empty", "-m", "x"]);
        assert_eq!(current_branch(d).unwrap(), "develop");
        assert!(matches!(
            tag_commit(d, &v1),
            Err(Error::GitTagMissing { .. })
        ));
        run(d, &["tag", "-a", "v1.0.0", "-m", "release"]);
        assert_eq!(tag_commit(d, &v1).unwrap().len(), 40);
    }
}
