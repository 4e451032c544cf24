//! Property tests of every parser that reads client input: repository
//! names, tags and references, digests, manifests and the `/v2/` path. On
//! any input they answer a typed error and never panic; what can be printed
//! reads back as itself. Case counts stay modest: CI runs on two cores.

use proptest::prelude::*;
use registry::error::ErrorCode;
use registry::oci::{Digest, Manifest, Reference, RepoName, Tag};
use registry::routes::path::{self, Endpoint};
use serde_json::{Value, json};

/// A component of the repository grammar.
const COMPONENT: &str = "[a-z0-9]{1,6}(([._]|__|-{1,3})[a-z0-9]{1,6}){0,2}";
const TAG: &str = "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}";

fn repo_name() -> impl Strategy<Value = String> {
    proptest::collection::vec(COMPONENT, 1..4).prop_map(|c| c.join("/"))
}

fn digest() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}")),
        "[0-9a-f]{128}".prop_map(|h| format!("sha512:{h}")),
    ]
}

/// Characters clients might send in paths, weighted towards the grammar's
/// own separators so that near-misses are common.
fn path_like() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => "[a-z0-9]{1,4}",
            2 => Just("/".to_owned()),
            1 => Just("..".to_owned()),
            1 => Just(".".to_owned()),
            1 => Just("-".to_owned()),
            1 => Just("_".to_owned()),
            1 => Just(":".to_owned()),
            1 => Just("%2e".to_owned()),
            1 => Just("manifests".to_owned()),
            1 => Just("blobs".to_owned()),
            1 => Just("uploads".to_owned()),
            1 => Just("tags/list".to_owned()),
            1 => Just("referrers".to_owned()),
            1 => "\\PC{1,3}",
        ],
        0..16,
    )
    .prop_map(|parts| parts.concat())
}

/// Arbitrary JSON, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("\\PC{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A descriptor, sometimes wrong in one field.
fn descriptor() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just(json!("application/vnd.oci.image.layer.v1.tar+gzip")),
            Just(json!("application/vnd.oci.image.config.v1+json")),
            json_value(),
        ],
        prop_oneof![digest().prop_map(Value::from), json_value()],
        prop_oneof![any::<u32>().prop_map(Value::from), json_value()],
    )
        .prop_map(|(m, d, s)| json!({"mediaType": m, "digest": d, "size": s}))
}

/// Manifest-shaped JSON with some fields valid, some arbitrary, some absent.
fn manifest_like() -> impl Strategy<Value = Value> {
    let media_type = prop_oneof![
        Just(json!("application/vnd.oci.image.manifest.v1+json")),
        Just(json!("application/vnd.oci.image.index.v1+json")),
        Just(json!(
            "application/vnd.docker.distribution.manifest.v2+json"
        )),
        Just(json!(
            "application/vnd.docker.distribution.manifest.list.v2+json"
        )),
        json_value(),
    ];
    (
        proptest::option::of(prop_oneof![Just(json!(2)), Just(json!(1)), json_value()]),
        proptest::option::of(media_type),
        proptest::option::of(descriptor()),
        proptest::option::of(proptest::collection::vec(descriptor(), 0..3)),
        proptest::option::of(proptest::collection::vec(descriptor(), 0..3)),
        proptest::option::of(descriptor()),
        proptest::option::of(json_value()),
    )
        .prop_map(
            |(version, media, config, layers, manifests, subject, extra)| {
                let mut m = serde_json::Map::new();
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        m.insert(k.to_owned(), v);
                    }
                };
                put("schemaVersion", version);
                put("mediaType", media);
                put("config", config);
                put("layers", layers.map(Value::from));
                put("manifests", manifests.map(Value::from));
                put("subject", subject);
                put("annotations", extra);
                Value::Object(m)
            },
        )
}

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some(""),
    Some("application/json"),
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("text/plain"),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn repository_names_never_panic(s in "\\PC{0,80}") {
        if let Err(e) = RepoName::parse(&s) {
            prop_assert_eq!(e.code, ErrorCode::NameInvalid);
        }
    }

    #[test]
    fn valid_repository_names_round_trip(name in repo_name()) {
        let parsed = RepoName::parse(&name);
        prop_assert!(parsed.is_ok(), "{name}");
        prop_assert_eq!(parsed.unwrap().to_string(), name);
    }

    #[test]
    fn repository_names_refuse_bad_components(name in repo_name(), bad in "(\\.|\\.\\.|-x|x-|X|_x|x__)") {
        let with_bad = format!("{name}/{bad}");
        prop_assert!(RepoName::parse(&with_bad).is_err(), "{with_bad}");
    }

    #[test]
    fn references_never_panic(s in "\\PC{0,140}") {
        if let Err(e) = Reference::parse(&s) {
            prop_assert!(matches!(e.code, ErrorCode::TagInvalid | ErrorCode::DigestInvalid), "{e:?}");
        }
    }

    #[test]
    fn tags_and_digests_round_trip(tag in TAG, d in digest()) {
        let t = Reference::parse(&tag);
        prop_assert!(matches!(t, Ok(Reference::Tag(_))), "{tag}");
        prop_assert_eq!(t.unwrap().to_string(), tag.clone());
        prop_assert_eq!(Tag::parse(&tag).unwrap().to_string(), tag.clone());
        let parsed = Reference::parse(&d);
        prop_assert!(matches!(parsed, Ok(Reference::Digest(_))), "{d}");
        prop_assert_eq!(parsed.unwrap().to_string(), d);
    }

    #[test]
    fn digests_never_panic(s in "(sha256|sha512|SHA256|md5|)(:|)\\PC{0,140}") {
        match Digest::parse(&s) {
            Ok(d) => prop_assert_eq!(d.to_string(), s),
            Err(e) => prop_assert_eq!(e.code, ErrorCode::DigestInvalid),
        }
    }

    #[test]
    fn digests_of_content_round_trip(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let d = Digest::sha256_of(&data);
        prop_assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
    }

    #[test]
    fn manifests_of_arbitrary_bytes_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        ct in proptest::sample::select(CONTENT_TYPES),
    ) {
        if let Err(e) = Manifest::parse(ct, &body) {
            prop_assert_eq!(e.code, ErrorCode::ManifestInvalid);
        }
    }

    #[test]
    fn manifests_of_json_never_panic(
        v in manifest_like(),
        ct in proptest::sample::select(CONTENT_TYPES),
    ) {
        let body = serde_json::to_vec(&v).unwrap();
        match Manifest::parse(ct, &body) {
            // Whatever is accepted is a manifest of a kind we store.
            Ok(m) => {
                prop_assert_eq!(m.config.is_some(), !m.media_type.is_index());
            }
            Err(e) => prop_assert_eq!(e.code, ErrorCode::ManifestInvalid),
        }
    }

    #[test]
    fn paths_never_panic(p in path_like()) {
        match path::parse(&p) {
            Ok(Endpoint::Base | Endpoint::Catalog) => {}
            Ok(
                Endpoint::Manifest(n, _)
                | Endpoint::Blob(n, _)
                | Endpoint::UploadStart(n)
                | Endpoint::Upload(n, _)
                | Endpoint::Tags(n)
                | Endpoint::Referrers(n, _)
                | Endpoint::Repository(n),
            ) => {
                // A name that reached an endpoint is one the grammar allows
                // and a prefix of the path as sent: nothing was decoded.
                prop_assert!(p.starts_with(n.as_str()), "{p} -> {n}");
                prop_assert!(RepoName::parse(n.as_str()).is_ok());
            }
            Err(e) => prop_assert!(
                matches!(
                    e.code,
                    ErrorCode::NameInvalid
                        | ErrorCode::TagInvalid
                        | ErrorCode::DigestInvalid
                        | ErrorCode::BlobUploadUnknown
                        | ErrorCode::Unsupported
                ),
                "{p}: {e:?}"
            ),
        }
    }

    #[test]
    fn paths_round_trip(name in repo_name(), tag in TAG, d in digest(), id in any::<u128>()) {
        let n = RepoName::parse(&name).unwrap();
        let id = uuid::Uuid::from_u128(id);
        let cases = [
            (format!("{name}/manifests/{tag}"), Endpoint::Manifest(n.clone(), Reference::parse(&tag).unwrap())),
            (format!("{name}/manifests/{d}"), Endpoint::Manifest(n.clone(), Reference::parse(&d).unwrap())),
            (format!("{name}/blobs/{d}"), Endpoint::Blob(n.clone(), d.parse().unwrap())),
            (format!("{name}/blobs/uploads/"), Endpoint::UploadStart(n.clone())),
            (format!("{name}/blobs/uploads/{id}"), Endpoint::Upload(n.clone(), id)),
            (format!("{name}/tags/list"), Endpoint::Tags(n.clone())),
            (format!("{name}/referrers/{d}"), Endpoint::Referrers(n.clone(), d.parse().unwrap())),
            (format!("{name}/"), Endpoint::Repository(n.clone())),
        ];
        for (p, want) in cases {
            prop_assert_eq!(path::parse(&p).map_err(|e| e.message), Ok(want), "{}", p);
        }
    }
}
