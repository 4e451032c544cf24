//! Server-side copies of objects of any size.
//!
//! A single CopyObject is limited to 5 GiB on Amazon S3. Larger objects
//! (and, as distribution does, any object above `multipartcopythresholdsize`)
//! are copied as a multipart upload at the destination whose parts are
//! UploadPartCopy requests, each naming a byte range of the source: the
//! bytes never leave the server. `object_store` has no UploadPartCopy, so
//! those requests are built here and signed with its SigV4 signer
//! ([`AwsAuthorizer`]) and its credentials; the multipart upload itself
//! (create, complete, abort) goes through `object_store`.
//!
//! Where the size is not known beforehand (moves), CopyObject is tried
//! first and the multipart copy follows only when the server refuses the
//! source as too large.

use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::ObjectStoreExt as _;
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::HttpRequestBody;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::signer::Signer;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{S3Backend, map_err, xml_error, xml_tag};
use crate::storage::backend::{Error, Result};

/// The largest object one CopyObject (and one part) may copy on Amazon S3.
pub const MAX_SINGLE_COPY: u64 = 5 << 30;
/// The default `multipartcopythresholdsize`: objects up to S3's limit are
/// copied with one CopyObject. distribution's default is 32 MiB, but on
/// Garage a 1 GiB blob copied by parts of 32 MiB took 3.5 to 4.5 s more
/// than by one CopyObject; a configured threshold is honoured.
pub const DEFAULT_COPY_THRESHOLD: u64 = MAX_SINGLE_COPY;
/// distribution's default `multipartcopychunksize`.
pub const DEFAULT_COPY_PART: u64 = 32 << 20;
/// distribution's default `multipartcopymaxconcurrency`.
pub const DEFAULT_COPY_CONCURRENCY: usize = 100;
/// S3's limit on the parts of one multipart upload.
const MAX_PARTS: u64 = 10_000;

/// What a key's characters become in `x-amz-copy-source`: everything but
/// unreserved characters and `/` is percent-encoded (S3's rule for URI
/// paths).
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// How copies are made: distribution's three `multipartcopy*` settings.
#[derive(Debug, Clone)]
pub struct Copier {
    http: reqwest::Client,
    bucket: String,
    region: String,
    /// Objects larger than this are copied by parts.
    threshold: u64,
    part_size: u64,
    concurrency: usize,
}

impl Copier {
    pub fn new(
        bucket: &str,
        region: &str,
        threshold: u64,
        part_size: u64,
        concurrency: usize,
    ) -> Result<Copier> {
        if !(super::MIN_CHUNK_SIZE..=MAX_SINGLE_COPY).contains(&part_size) {
            return Err(Error::Invalid(format!(
                "storage.s3.multipartcopychunksize {part_size} is not between S3's part sizes {} and {MAX_SINGLE_COPY}",
                super::MIN_CHUNK_SIZE
            )));
        }
        if concurrency == 0 {
            return Err(Error::Invalid(
                "storage.s3.multipartcopymaxconcurrency must be at least 1".into(),
            ));
        }
        // https to the endpoint uses ring, as the server does (also for the
        // offline commands, which start no server); a second install is
        // harmlessly refused.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| Error::Io(format!("the S3 copy client: {e}")))?;
        Ok(Copier {
            http,
            bucket: bucket.to_owned(),
            region: region.to_owned(),
            threshold,
            part_size,
            concurrency,
        })
    }

    /// Copies `from` to `to`. `size` is the source's size when the caller
    /// knows it; without it CopyObject is tried first.
    pub async fn copy(
        &self,
        store: &AmazonS3,
        from: &Key,
        to: &Key,
        size: Option<u64>,
    ) -> Result<()> {
        if let Some(size) = size.filter(|s| *s > self.threshold) {
            return self.copy_by_parts(store, from, to, size).await;
        }
        match store.copy(from, to).await {
            Ok(()) => Ok(()),
            Err(e) if source_too_large(&e.to_string()) => {
                let size = S3Backend::head(store, from)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("copying {from}")))?
                    .size;
                self.copy_by_parts(store, from, to, size).await
            }
            Err(e) => Err(map_err(e, from.as_ref())),
        }
    }

    /// The ranges of the parts of a copy of `size` bytes: parts of the
    /// configured size, larger when that would make too many.
    fn ranges(&self, size: u64) -> Vec<(u64, u64)> {
        let part = self
            .part_size
            .max(size.div_ceil(MAX_PARTS))
            .min(MAX_SINGLE_COPY);
        (0..size.div_ceil(part).max(1))
            .map(|i| (i * part, ((i + 1) * part).min(size)))
            .collect()
    }

    async fn copy_by_parts(&self, store: &AmazonS3, from: &Key, to: &Key, size: u64) -> Result<()> {
        if size == 0 {
            // UploadPartCopy cannot name an empty range.
            return store
                .copy(from, to)
                .await
                .map_err(|e| map_err(e, from.as_ref()));
        }
        let id = store
            .create_multipart(to)
            .await
            .map_err(|e| map_err(e, to.as_ref()))?;
        // The destination's address, as object_store forms it (endpoint,
        // path or virtual-host style): a presigned URL without its query.
        let mut url = store
            .signed_url(http::Method::PUT, to, Duration::from_secs(60))
            .await
            .map_err(|e| map_err(e, to.as_ref()))?;
        url.set_query(None);
        let url = url.to_string();
        let source = format!(
            "{}/{}",
            self.bucket,
            utf8_percent_encode(from.as_ref(), COPY_SOURCE)
        );
        let parts: Result<Vec<PartId>> = futures_util::stream::iter(self.ranges(size))
            .enumerate()
            .map(|(i, range)| self.copy_part(store, &url, &id, i + 1, &source, range))
            .buffered(self.concurrency)
            .try_collect()
            .await;
        let completed = match parts {
            Ok(parts) => store
                .complete_multipart(to, &id, parts)
                .await
                .map(|_| ())
                .map_err(|e| map_err(e, to.as_ref())),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            // Frees the parts copied so far; the copy's error is the one
            // that matters.
            let _ = store.abort_multipart(to, &id).await;
        }
        completed
    }

    /// One UploadPartCopy: bytes `range` (end exclusive) of the source as
    /// part `number` of the upload `id`.
    async fn copy_part(
        &self,
        store: &AmazonS3,
        url: &str,
        id: &str,
        number: usize,
        source: &str,
        (start, end): (u64, u64),
    ) -> Result<PartId> {
        let what = || format!("copying bytes {start}-{end} of {source}");
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("partNumber", &number.to_string())
            .append_pair("uploadId", id)
            .finish();
        let url = format!("{url}?{query}");
        let mut request = http::Request::builder()
            .method(http::Method::PUT)
            .uri(&url)
            .header("x-amz-copy-source", source)
            .header(
                "x-amz-copy-source-range",
                format!("bytes={start}-{}", end - 1),
            )
            .body(HttpRequestBody::empty())
            .map_err(|e| Error::Io(format!("{}: {e}", what())))?;
        let credential = store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| map_err(e, source))?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| map_err(e, source))?;
        let response = self
            .http
            .put(url)
            .headers(request.headers().clone())
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() || e.is_timeout() {
                    Error::Unavailable(format!("{}: {e}", what()))
                } else {
                    Error::Io(format!("{}: {e}", what()))
                }
            })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| Error::Unavailable(format!("{}: {e}", what())))?;
        part_copied(status, &body).map_err(|m| {
            let message = format!("{}: {m}", what());
            if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
                Error::Unavailable(message)
            } else if status == http::StatusCode::NOT_FOUND {
                Error::NotFound(message)
            } else {
                Error::Io(message)
            }
        })
    }
}

/// The part an UploadPartCopy answer names, or why it failed. S3 may
/// answer 200 and put an error in the body when it fails midway.
fn part_copied(status: http::StatusCode, body: &str) -> std::result::Result<PartId, String> {
    let said = || xml_error(body).map_or_else(|| status.to_string(), |e| format!("{status}: {e}"));
    if !status.is_success() || body.contains("<Error>") {
        return Err(said());
    }
    let etag = xml_tag(body, "ETag").ok_or_else(|| format!("{status}: no ETag in {body:?}"))?;
    Ok(PartId {
        content_id: unescape_xml(&etag),
    })
}

/// Whether an error of CopyObject says the source is over the server's
/// limit for a single copy (Amazon S3: `InvalidRequest`, "The specified
/// copy source is larger than the maximum allowable size for a copy
/// source: 5368709120"; others answer `EntityTooLarge`).
fn source_too_large(error: &str) -> bool {
    error.contains("copy source is larger than") || error.contains("EntityTooLarge")
}

fn unescape_xml(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    fn copier(threshold: u64, part: u64) -> Copier {
        Copier::new("b", "garage", threshold, part, 4).unwrap()
    }

    #[test]
    fn parts_cover_the_object_and_stay_within_s3_limits() {
        let c = copier(0, 32 << 20);
        assert_eq!(c.ranges(1), vec![(0, 1)]);
        assert_eq!(
            c.ranges(70 << 20),
            vec![(0, 32 << 20), (32 << 20, 64 << 20), (64 << 20, 70 << 20)]
        );
        // 1 TiB in 32 MiB parts would be 32,768 parts: they grow instead.
        let big = c.ranges(1 << 40);
        assert!(big.len() as u64 <= MAX_PARTS, "{} parts", big.len());
        assert_eq!(big.last().unwrap().1, 1 << 40);
        assert!(big.windows(2).all(|w| w[0].1 == w[1].0));
    }

    #[test]
    fn copy_settings_out_of_s3_bounds_are_refused() {
        assert!(Copier::new("b", "r", 0, 1 << 20, 4).is_err());
        assert!(Copier::new("b", "r", 0, 6 << 30, 4).is_err());
        assert!(Copier::new("b", "r", 0, 32 << 20, 0).is_err());
    }

    #[test]
    fn a_copied_part_s_etag_is_read_and_errors_are_told() {
        let ok = "<CopyPartResult><LastModified>2026-12-01T00:00:00Z</LastModified>\
                  <ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag></CopyPartResult>";
        assert_eq!(
            part_copied(StatusCode::OK, ok).unwrap().content_id,
            "\"9b2cf535f27731c974343645a3985328\""
        );
        // An error inside a 200, as S3 may send when a copy fails midway.
        let failed = "<Error><Code>InternalError</Code><Message>try again</Message></Error>";
        let e = part_copied(StatusCode::OK, failed).unwrap_err();
        assert!(e.contains("InternalError: try again"), "{e}");
        assert!(part_copied(StatusCode::FORBIDDEN, "").is_err());
    }

    #[test]
    fn s3_s_refusal_of_a_large_copy_source_is_recognised() {
        assert!(source_too_large(
            "Generic S3 error: <Error><Code>InvalidRequest</Code><Message>The specified copy source is larger than the maximum allowable size for a copy source: 5368709120</Message></Error>"
        ));
        assert!(!source_too_large("<Code>NoSuchKey</Code>"));
    }
}
