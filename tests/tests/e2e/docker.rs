//! docker (a private dockerd) against our registry with htpasswd auth:
//! login, push, rmi, pull, `run --network none`, digests equal.

use e2e::fixtures::{HtpasswdHash, htpasswd, random_name};
use e2e::{CommandExt, Dockerd, Registry};

const USER: &str = "dora";
const PASSWORD: &str = "d0cker-pa55";

#[test]
fn login_push_pull_run_with_htpasswd() {
    let dir = e2e::temp_dir("docker-auth");
    let file = dir.path().join("htpasswd");
    htpasswd(&file, USER, PASSWORD, HtpasswdHash::Bcrypt);
    let reg = Registry::builder().htpasswd(&file).start();
    let docker = Dockerd::start();

    let marker = random_name(24);
    let remote = format!("{}/e2e/busybox:1", reg.host());
    docker.import_busybox(&remote, &marker);

    // Not logged in: refused.
    let out = docker.docker().args(["push", &remote]).fails();
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("no basic auth credentials") || stderr.contains("unauthorized"),
        "{stderr}"
    );
    let out = docker.login(reg.host(), USER, "not-the-password");
    assert!(
        !out.status.success(),
        "login with a wrong password succeeded"
    );

    let out = docker.login(reg.host(), USER, PASSWORD);
    assert!(
        out.status.success(),
        "docker login failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        docker.config_json()["auths"][reg.host()].is_object(),
        "config.json has an entry for the registry: {}",
        docker.config_json()
    );

    let pushed = docker.push(&remote);
    let repo = format!("{}/e2e/busybox", reg.host());
    assert_eq!(docker.repo_digest(&remote, &repo), pushed);
    assert_eq!(
        reg.api()
            .basic(USER, PASSWORD)
            .manifest_digest("e2e/busybox", "1"),
        Some(pushed.clone())
    );

    docker.docker().args(["rmi", &remote]).ok();
    docker.docker().args(["pull", &remote]).ok();
    assert_eq!(docker.repo_digest(&remote, &repo), pushed);
    let out = docker.run_marker(&remote);
    assert_eq!(
        out, marker,
        "the pulled image runs and has the pushed content"
    );
}
