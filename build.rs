//! Records the git commit being built (`LINECHAT_GIT_COMMIT`) for `--version` and the
//! `linechat_build_info` metric. Packagers building outside a git checkout can set
//! `LINECHAT_GIT_COMMIT` themselves; without either it is "unknown".

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LINECHAT_GIT_COMMIT");
    let commit = match std::env::var("LINECHAT_GIT_COMMIT") {
        Ok(commit) if !commit.is_empty() => commit,
        _ => git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into()),
    };
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it points at (a commit).
    // Only existing files are named, as a missing one would make cargo rerun this every build.
    let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(&["rev-parse", "--git-path", &branch]));
        watch.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    }
    for path in watch.into_iter().flatten() {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rustc-env=LINECHAT_GIT_COMMIT={commit}");
}
