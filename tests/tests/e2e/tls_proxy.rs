//! TLS as registry:2 deployments do it: nginx terminates TLS for a private
//! CA in front of authd and the registry, with the sample configuration of
//! `docs/nginx-registry.conf` as it is. docker trusts the CA through
//! `certs.d` and skopeo through `--cert-dir`; neither has any insecure
//! setting, and the host is not loopback (docker would skip the checks
//! there), so a wrong or missing CA fails.

use std::net::{IpAddr, SocketAddr};

use e2e::fixtures::{OciImage, TestCa, read_oci_layout};
use e2e::process::describe_output;
use e2e::proxy::{Nginx, PrivateNet};
use e2e::registry::{Auth, Impl};
use e2e::{Authd, CommandExt, Dockerd, Registry, Skopeo};

const USER: &str = "ci";
const PASSWORD: &str = "ci-password-1";

/// The sample configuration with this test's addresses and paths filled
/// in; every placeholder must be found, so that the test breaks when the
/// sample changes shape instead of silently testing something else.
fn sample_config(ip: IpAddr, registry: &str, authd: &str, cert: &str, key: &str) -> String {
    let sample = include_str!("../../../docs/nginx-registry.conf");
    let replacements = [
        (
            "listen 443 ssl http2;",
            format!("listen {ip}:443 ssl http2;"),
        ),
        (
            "server_name registry.example.com;",
            format!("server_name {ip};"),
        ),
        ("server 127.0.0.1:5000;", format!("server {registry};")),
        ("server 127.0.0.1:5001;", format!("server {authd};")),
        ("/etc/ssl/registry/fullchain.pem", cert.to_owned()),
        ("/etc/ssl/registry/privkey.pem", key.to_owned()),
    ];
    let mut config = sample.to_owned();
    for (from, to) in replacements {
        assert!(
            config.contains(from),
            "docs/nginx-registry.conf no longer contains {from:?}"
        );
        config = config.replace(from, &to);
    }
    config
}

fn assert_tls_refused(out: &std::process::Output, what: &str) {
    let text = describe_output(out).to_lowercase();
    assert!(
        !out.status.success() && (text.contains("x509") || text.contains("certificate")),
        "{what} should fail on the unknown CA:\n{text}"
    );
}

#[test]
fn docker_and_skopeo_through_nginx_with_a_private_ca() {
    let net = PrivateNet::create();
    let ip = IpAddr::V4(net.host_ip());
    // Port 443: the host name docker and skopeo see is the bare address.
    let host = ip.to_string();
    let dir = e2e::temp_dir("tls-proxy");
    let ca = TestCa::new(dir.path());
    let (cert, key) = ca.issue(ip);

    // nginx connects from 127.0.0.1: authd takes the client address from
    // X-Forwarded-For behind it.
    let authd = Authd::builder()
        .fast_password_hashing()
        .env("AUTHD_THROTTLE_TRUSTED_PROXIES", "127.0.0.1")
        .start();
    authd.add_user(USER, PASSWORD);
    authd.grant(USER, "ci/*", &["pull", "push"]);
    let mut auth = authd.registry_auth(Impl::Ours, &dir.path().join("authd.pem"));
    if let Auth::Token { realm, .. } = &mut auth {
        *realm = format!("https://{host}/token");
    }
    let reg = Registry::builder().auth(auth).start();

    let authd_addr = authd.url().trim_start_matches("http://").to_owned();
    let config = sample_config(
        ip,
        reg.host(),
        &authd_addr,
        &cert.display().to_string(),
        &key.display().to_string(),
    );
    let nginx = Nginx::start(&config, SocketAddr::new(ip, 443));

    // docker: refused while it does not know the CA, then through nginx.
    let docker = Dockerd::start();
    assert_tls_refused(
        &docker.login(&host, USER, PASSWORD),
        "docker login without the CA",
    );
    let trusted = docker.trust_ca(&host, ca.cert());
    let out = docker.login(&host, USER, PASSWORD);
    assert!(
        out.status.success(),
        "docker login through nginx:\n{}",
        describe_output(&out)
    );
    let remote = format!("{host}/ci/busybox:1");
    docker.import_busybox(&remote, "through-nginx");
    let pushed = docker.push(&remote);
    docker.docker().args(["rmi", &remote]).ok();
    docker.docker().args(["pull", &remote]).ok();
    assert_eq!(docker.run_marker(&remote), "through-nginx");
    assert_eq!(
        docker.repo_digest(&remote, &format!("{host}/ci/busybox")),
        pushed
    );

    // skopeo reads /etc/docker/certs.d too: take the CA away from there.
    drop(trusted);

    // skopeo with its own certificate directory and a multi-MiB layer
    // streamed through nginx both ways. The harness turns verification off
    // by default (for plain-HTTP registries); the later flag wins.
    let skopeo = Skopeo::new();
    let verify = ["--src-tls-verify=true", "--dest-tls-verify=true"];
    let certs = skopeo.scratch("certs");
    e2e::write(&certs.join("ca.crt"), e2e::read(ca.cert()));
    let certs = certs.display().to_string();
    let creds = format!("{USER}:{PASSWORD}");
    let image = OciImage::generate(&skopeo.scratch("src"), "v1", &[12 << 20, 3_000]);
    let dest = format!("docker://{host}/ci/app:v1");
    assert_tls_refused(
        &skopeo
            .copy_cmd(
                &image.reference(),
                &dest,
                &[&verify[..], &["--dest-creds", &creds]].concat(),
            )
            .run(),
        "skopeo copy without the CA",
    );
    let dest_flags = [
        &verify[..],
        &["--dest-cert-dir", &certs, "--dest-creds", &creds],
    ]
    .concat();
    skopeo.copy(&image.reference(), &dest, &dest_flags);
    let out = skopeo.scratch("out");
    skopeo.copy(
        &dest,
        &format!("oci:{}:v1", out.display()),
        &[
            &verify[..],
            &["--src-cert-dir", &certs, "--src-creds", &creds],
        ]
        .concat(),
    );
    let pulled = read_oci_layout(&out, Some("v1"));
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    assert_eq!(pulled.blob_digests, image.blob_digests());

    // Outside its grant the user is refused through the proxy too.
    let out = skopeo
        .copy_cmd(
            &image.reference(),
            &format!("docker://{host}/other/app:v1"),
            &dest_flags,
        )
        .run();
    assert!(!out.status.success(), "push outside the grant succeeded");

    // Everything went through nginx: tokens and the registry API.
    let log = nginx.access_log();
    for needle in [
        "/token",
        "PUT /v2/ci/busybox/manifests/1",
        "GET /v2/ci/app/blobs/",
    ] {
        assert!(log.contains(needle), "nginx saw no {needle:?}:\n{log}");
    }
}
