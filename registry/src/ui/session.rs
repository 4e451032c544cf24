//! Web UI sessions and cross-site request forgery protection.
//!
//! The session is stateless: the cookie holds the refresh token authd gave
//! at sign-in (HttpOnly, SameSite=Lax, Secure when the page was loaded
//! over https), which every page exchanges for an access token. Any
//! replica can serve any request, and revoking the refresh token at authd
//! (sign-out, an admin's revoke, a password change) ends the session
//! everywhere within the grant cache's lifetime.
//!
//! Every state-changing request must (1) come from our own origin
//! (`Origin`, else `Sec-Fetch-Site`, must say so — a request carrying
//! neither is refused), and (2) carry the form field `csrf`, an HMAC of a
//! fixed label keyed by the session's refresh token — or, signed out, by a
//! random pre-session cookie (double submit). A cross-site page can read
//! neither cookie, so it cannot make the field.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use http::header::{COOKIE, HOST, ORIGIN};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The session cookie: the refresh token.
pub const SESSION_COOKIE: &str = "registry_session";
/// The pre-session cookie keying the CSRF token of signed-out forms.
pub const PRESESSION_COOKIE: &str = "registry_csrf";
/// How long a session cookie lives in the browser (the refresh token
/// itself lives until revoked or unused for 90 days).
pub const SESSION_MAX_AGE_SECS: u64 = 12 * 3600;
/// Longest cookie value accepted (refresh tokens are far shorter).
const MAX_COOKIE_LEN: usize = 512;

/// The value of cookie `name`, if sent and of sane length.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= MAX_COOKIE_LEN && v.bytes().all(cookie_octet))
}

/// RFC 6265 cookie-octet.
fn cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, path `/`, Secure when
/// `secure`; `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}");
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// A fresh random pre-session value.
pub fn new_presession() -> String {
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    B64.encode(b)
}

/// The CSRF token of forms made for the holder of `key` (the session's
/// refresh token, or the pre-session value).
pub fn csrf_token(key: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(b"registry web ui csrf v1");
    B64.encode(mac.finalize().into_bytes())
}

/// Whether `given` is the CSRF token for `key` (constant time).
pub fn csrf_ok(key: &str, given: &str) -> bool {
    let expected = csrf_token(key);
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// Whether a state-changing request comes from our own origin: its
/// `Origin` names the host it was sent to, or (without `Origin`) the
/// browser marks it `Sec-Fetch-Site: same-origin`. Requests with neither
/// header are refused: every browser that runs this UI sends one of them.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) {
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        return match (authority, host) {
            (Some(a), Some(h)) => a.eq_ignore_ascii_case(h),
            _ => false,
        };
    }
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "same-origin")
}

/// Whether the browser reached us over https (its `Origin` says so), so
/// that the cookie gets `Secure`.
pub fn came_over_https(headers: &HeaderMap, tls: bool) -> bool {
    tls || headers
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o.starts_with("https://"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = headers(&[("cookie", "a=1; registry_session=abc; registry_session_x=2")]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "registry"), None);
        let bad = headers(&[("cookie", "registry_session=a b\"")]);
        assert_eq!(cookie(&bad, SESSION_COOKIE), None);
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_key() {
        let t = csrf_token("refresh-1");
        assert!(csrf_ok("refresh-1", &t));
        assert!(!csrf_ok("refresh-2", &t));
        assert!(!csrf_ok("refresh-1", ""));
        assert!(!csrf_ok("refresh-1", &t[..t.len() - 1]));
    }

    #[test]
    fn origin_must_be_ours() {
        let host = ("host", "reg.example:5000");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://reg.example:5000")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://REG.example:5000")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://reg.example:5000.evil")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin(&headers(&[host])));
    }

    #[test]
    fn cookies_are_http_only_and_same_site() {
        let c = set_cookie(SESSION_COOKIE, "v", 60, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.ends_with("; Secure"));
        assert!(!set_cookie(SESSION_COOKIE, "v", 60, false).contains("Secure"));
    }
}
