//! podman against our registry with htpasswd auth (a file made by
//! `htpasswd -B`, as registry:2 users have): login, push, pull, digests.

use e2e::fixtures::{HtpasswdHash, busybox_rootfs_tar, htpasswd, htpasswd_entries, random_name};
use e2e::{CommandExt, Podman, Registry};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";

#[test]
fn login_push_pull_with_bcrypt_htpasswd() {
    let dir = e2e::temp_dir("podman-auth");
    let file = dir.path().join("htpasswd");
    htpasswd(&file, USER, PASSWORD, HtpasswdHash::Bcrypt);
    htpasswd(&file, "bob", "another-password", HtpasswdHash::Bcrypt);
    assert!(htpasswd_entries(&file)[USER].starts_with("$2y$"));
    let reg = Registry::builder().htpasswd(&file).start();

    // Without credentials: 401 with a Basic challenge carrying the realm.
    let resp = reg.api().get("/v2/");
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().expect("ASCII");
    assert!(challenge.starts_with("Basic realm=\"e2e\""), "{challenge}");

    let podman = Podman::new();
    let marker = random_name(24);
    let tar = busybox_rootfs_tar(&podman.scratch("rootfs.tar"), &marker);
    let local = "localhost/e2e/busybox:1";
    podman.import(&tar, local);
    let image_id = podman.image_id(local);
    let remote = format!("{}/e2e/busybox:1", reg.host());

    // Not logged in: the push is refused.
    let out = podman
        .push_cmd(
            local,
            &format!("docker://{remote}"),
            &podman.scratch("digest"),
        )
        .fails();
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("unauthorized") || stderr.contains("authentication required"),
        "{stderr}"
    );

    // A wrong password is refused at login.
    let out = podman.login(reg.host(), USER, "wrong password");
    assert!(
        !out.status.success(),
        "login with a wrong password succeeded"
    );

    let out = podman.login(reg.host(), USER, PASSWORD);
    assert!(
        out.status.success(),
        "login failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = podman.push(local, &format!("docker://{remote}"));
    assert!(pushed.starts_with("sha256:"), "{pushed}");
    let api = reg.api().basic(USER, PASSWORD);
    assert_eq!(
        api.manifest_digest("e2e/busybox", "1"),
        Some(pushed.clone())
    );

    // Pull into an empty store: same manifest digest, same image (config).
    podman.rmi(local);
    podman.pull_cmd(&remote).ok();
    assert_eq!(podman.image_digest(&remote), pushed);
    let pulled_id = podman.image_id(&remote);
    assert_eq!(pulled_id, image_id, "pulled image has the pushed config");

    // After logout the pull is refused again.
    podman.logout(reg.host());
    podman.rmi(&remote);
    podman.pull_cmd(&remote).fails();
}
