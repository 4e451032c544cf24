//! The JSON of distribution's notification events, field for field: an
//! envelope `{"events": [...]}` of events with `id`, `timestamp`, `action`,
//! `target`, `request`, `actor` and `source`, sent as
//! [`EVENTS_MEDIA_TYPE`]. Empty strings and zero sizes are left out as Go's
//! `omitempty` leaves them out; `request.id`, `.method` and `.useragent`
//! are always present, as are the `request`, `actor` and `source` objects.

use serde::{Deserialize, Serialize};

/// The `Content-Type` of a notification request (distribution 2.x,
/// `registry:2`).
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// What distribution reports as the media type of every blob: it does not
/// know a blob's type, only the manifests that reference it do. Receivers
/// filter blob events out with `ignoredmediatypes: [application/octet-stream]`.
pub const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

/// `action` values.
pub mod action {
    pub const PUSH: &str = "push";
    pub const PULL: &str = "pull";
    pub const MOUNT: &str = "mount";
    pub const DELETE: &str = "delete";
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    /// RFC 3339 with nanoseconds, UTC.
    pub timestamp: String,
    pub action: String,
    pub target: Target,
    pub request: RequestRecord,
    pub actor: ActorRecord,
    pub source: SourceRecord,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What the event is about: a manifest, a blob, a tag or a repository.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// The same as `size` (distribution keeps it for older receivers).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub length: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repository: String,
    /// The repository a mounted blob came from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from_repository: String,
    /// The registry's URL of the manifest or blob, by digest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    /// What a manifest references (`notifications.events.includereferences`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<crate::oci::manifest::Descriptor>,
}

/// The HTTP request that caused the event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    pub method: String,
    pub useragent: String,
}

/// Who caused it: the token's subject or the htpasswd user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActorRecord {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Which registry process generated it: `host:port` and an id that changes
/// at every start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    #[serde(
        rename = "instanceID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub instance_id: String,
}

/// The two fields the per-endpoint filters look at, read back from a queued
/// event without parsing the rest.
#[derive(Debug, Deserialize)]
pub struct Filtered {
    pub action: String,
    #[serde(default)]
    pub target: FilteredTarget,
}

#[derive(Debug, Default, Deserialize)]
pub struct FilteredTarget {
    #[serde(default, rename = "mediaType")]
    pub media_type: String,
}

/// The body of a notification request: an envelope around already
/// serialised events (one JSON object each).
pub fn envelope<'a>(events: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = b"{\"events\":[".to_vec();
    for (i, e) in events.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(e);
    }
    body.extend_from_slice(b"]}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn sample() -> Event {
        Event {
            id: "320678d8-ca14-430f-8bb6-4ca139cd83f7".into(),
            timestamp: "2016-03-09T22:44:26.402973972Z".into(),
            action: action::PULL.into(),
            target: Target {
                media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
                size: 708,
                digest: "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf"
                    .into(),
                length: 708,
                repository: "hello-world".into(),
                url: "http://192.168.100.227:5000/v2/hello-world/manifests/sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf".into(),
                tag: "latest".into(),
                ..Target::default()
            },
            request: RequestRecord {
                id: "6df24a34-0959-4923-81ca-14f09767db19".into(),
                addr: "192.168.64.11:42961".into(),
                host: "192.168.100.227:5000".into(),
                method: "GET".into(),
                useragent: "curl/7.38.0".into(),
            },
            actor: ActorRecord::default(),
            source: SourceRecord {
                addr: "xtal.local:5000".into(),
                instance_id: "a53db899-3b4b-4a62-a067-8dd013beaca4".into(),
            },
        }
    }

    /// The example event of distribution's notifications documentation,
    /// key for key.
    #[test]
    fn pull_event_has_distributions_field_names() {
        let got: Value = serde_json::to_value(sample()).unwrap();
        let want = json!({
          "id": "320678d8-ca14-430f-8bb6-4ca139cd83f7",
          "timestamp": "2016-03-09T22:44:26.402973972Z",
          "action": "pull",
          "target": {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
            "size": 708,
            "length": 708,
            "repository": "hello-world",
            "url": "http://192.168.100.227:5000/v2/hello-world/manifests/sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
            "tag": "latest"
          },
          "request": {
            "id": "6df24a34-0959-4923-81ca-14f09767db19",
            "addr": "192.168.64.11:42961",
            "host": "192.168.100.227:5000",
            "method": "GET",
            "useragent": "curl/7.38.0"
          },
          "actor": {},
          "source": {
            "addr": "xtal.local:5000",
            "instanceID": "a53db899-3b4b-4a62-a067-8dd013beaca4"
          }
        });
        assert_eq!(got, want);
    }

    /// Deletes carry only the digest (or tag) and the repository, as in
    /// distribution.
    #[test]
    fn delete_target_is_digest_and_repository() {
        let mut e = sample();
        e.action = action::DELETE.into();
        e.target = Target {
            digest: "sha256:d89e1bee20d9cb344674e213b581f14fbd8e70274ecf9d10c514bab78a307845"
                .into(),
            repository: "library/test".into(),
            ..Target::default()
        };
        e.actor.name = "alice".into();
        e.request.useragent = String::new();
        let got: Value = serde_json::to_value(&e).unwrap();
        assert_eq!(
            got["target"],
            json!({
                "digest": "sha256:d89e1bee20d9cb344674e213b581f14fbd8e70274ecf9d10c514bab78a307845",
                "repository": "library/test"
            })
        );
        assert_eq!(got["actor"], json!({ "name": "alice" }));
        // Go does not omit these three even when empty.
        assert_eq!(got["request"]["useragent"], json!(""));
        let mounted = Target {
            from_repository: "a/b".into(),
            ..Target::default()
        };
        assert_eq!(
            serde_json::to_value(&mounted).unwrap(),
            json!({ "fromRepository": "a/b" })
        );
    }

    #[test]
    fn envelope_wraps_serialised_events() {
        let a = serde_json::to_vec(&sample()).unwrap();
        let body = envelope([a.as_slice(), a.as_slice()]);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 2);
        assert_eq!(v["events"][1]["action"], "pull");
        assert_eq!(envelope([]), b"{\"events\":[]}");
        let f: Filtered = serde_json::from_slice(&a).unwrap();
        assert_eq!(f.action, "pull");
        assert_eq!(
            f.target.media_type,
            "application/vnd.docker.distribution.manifest.v2+json"
        );
    }
}
