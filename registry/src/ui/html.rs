//! The web UI's page frame (header, navigation, main landmark), its style
//! sheet and its one small script (copy buttons), and formatting helpers.
//! Pages are plain server-rendered HTML (maud escapes every value); the
//! script is optional: without it the text to copy is still shown, selected
//! on focus.

use std::time::SystemTime;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue};
use maud::{DOCTYPE, Markup, html};

/// Who is looking, for the frame.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    /// The signed-in user's name.
    pub user: Option<String>,
    pub admin: bool,
    /// Whether sign-in exists at all (token auth).
    pub can_sign_in: bool,
    /// The CSRF token for the forms of this page.
    pub csrf: String,
}

/// A full HTML page answer.
pub fn page(status: StatusCode, title: &str, frame: &Frame, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · registry" }
                link rel="stylesheet" href="/ui/static/app.css";
                script src="/ui/static/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/ui/" { "registry" }
                        a href="/ui/" { "Repositories" }
                        @if frame.admin {
                            a href="/ui/admin/users" { "Users" }
                            a href="/ui/admin/grants" { "Grants" }
                            a href="/ui/admin/import" { "Import" }
                            a href="/ui/admin/audit" { "Audit" }
                            a href="/ui/gc" { "Garbage collection" }
                        }
                    }
                    div.who {
                        @if let Some(u) = &frame.user {
                            span { "Signed in as " strong #signed-in-user { (u) } }
                            form method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(frame.csrf);
                                button type="submit" { "Sign out" }
                            }
                        } @else if frame.can_sign_in {
                            span { "Signed out (anonymous)" }
                            a.button href="/ui/login" { "Sign in" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    (maud::PreEscaped(body.into_string()))
                }
            }
        }
    };
    let mut resp = (status, markup.into_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    resp
}

/// An error page.
pub fn error_page(status: StatusCode, frame: &Frame, message: &str) -> Response {
    page(
        status,
        "Error",
        frame,
        html! {
            h1 { "Error" }
            p.error role="alert" { (message) }
            p { a href="/ui/" { "Back to the repositories" } }
        },
    )
}

/// A copyable value: the text in a read-only field (selected on focus, for
/// Ctrl-C without the script) and a button that copies it.
pub fn copy(label: &str, value: &str) -> Markup {
    html! {
        span.copy {
            input type="text" readonly value=(value) aria-label=(label) size=(value.len().clamp(10, 28));
            button type="button" data-copy=(value) { "Copy " span.sr { (label) } }
        }
    }
}

/// `12.3 MB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `2026-01-02 03:04 UTC`.
pub fn time(t: Option<SystemTime>) -> String {
    let Some(t) = t else {
        return "—".to_owned();
    };
    let dt = time::OffsetDateTime::from(t);
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    dt.format(&fmt).unwrap_or_default()
}

/// A `sha256:0123456789ab…` short form of a digest.
pub fn short_digest(d: &str) -> String {
    let cut = d.find(':').map_or(0, |i| i + 1) + 12;
    if d.len() > cut {
        format!("{}…", &d[..cut])
    } else {
        d.to_owned()
    }
}

/// Escapes a value for a URL query.
pub fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub const CSS: &str = r#"
:root { --fg:#1a1a1a; --muted:#4a4a4a; --bg:#fff; --line:#c8c8c8; --accent:#0b5cad; --danger:#a4161a; --soft:#f3f5f8; }
* { box-sizing: border-box; }
body { margin:0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
a { color:var(--accent); }
a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible, textarea:focus-visible, summary:focus-visible { outline:3px solid #f0a000; outline-offset:2px; }
.skip { position:absolute; left:-999px; } .skip:focus { left:8px; top:8px; background:#fff; padding:4px; z-index:2; }
header.top { display:flex; flex-wrap:wrap; justify-content:space-between; align-items:center; gap:8px; padding:8px 16px; border-bottom:1px solid var(--line); background:var(--soft); }
header.top nav { display:flex; flex-wrap:wrap; gap:16px; align-items:center; }
header.top .brand { font-weight:700; color:var(--fg); text-decoration:none; }
.who { display:flex; gap:12px; align-items:center; }
.who form { margin:0; }
main { padding:16px; max-width:1200px; }
main:focus { outline:none; }
h1 { font-size:1.5rem; margin:.2em 0 .6em; word-break:break-all; }
h2 { font-size:1.2rem; margin-top:1.6em; }
table { border-collapse:collapse; width:100%; margin:8px 0; }
th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:var(--soft); }
td.num, th.num { text-align:right; white-space:nowrap; }
tr.platform td { color:var(--muted); }
tr.platform td:first-child { padding-left:24px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:.92em; }
form.inline { display:inline; margin:0; }
label.inline { display:inline; font-weight:normal; margin-right:12px; }
fieldset { border:1px solid var(--line); border-radius:4px; }
td.time { white-space:nowrap; }
form.bar { display:flex; flex-wrap:wrap; gap:8px; align-items:end; margin:8px 0; }
label { display:block; font-weight:600; margin-bottom:2px; }
.field { margin:8px 0; }
input[type=text], input[type=password], input[type=search], select, textarea { font:inherit; padding:6px 8px; border:1px solid #767676; border-radius:4px; background:#fff; color:var(--fg); }
textarea { width:100%; min-height:10em; font-family: ui-monospace, monospace; }
button, .button { font:inherit; padding:6px 12px; border:1px solid var(--accent); border-radius:4px; background:var(--accent); color:#fff; cursor:pointer; text-decoration:none; display:inline-block; }
button.secondary { background:#fff; color:var(--accent); }
button.danger, .button.danger { background:var(--danger); border-color:var(--danger); }
.copy { display:inline-flex; gap:4px; align-items:center; }
.copy input { font-family: ui-monospace, monospace; font-size:.85em; padding:2px 4px; }
.copy button { padding:2px 8px; font-size:.85em; }
.sr { position:absolute; width:1px; height:1px; overflow:hidden; clip:rect(0 0 0 0); white-space:nowrap; }
.error { color:var(--danger); font-weight:600; border-left:4px solid var(--danger); padding:4px 8px; background:#fdecec; }
.notice { border-left:4px solid var(--accent); padding:4px 8px; background:#eaf2fb; }
.muted { color:var(--muted); }
pre { background:var(--soft); border:1px solid var(--line); padding:8px; overflow:auto; max-height:30em; }
.pager { display:flex; gap:16px; margin:12px 0; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:4px 16px; }
dl.facts dt { font-weight:600; } dl.facts dd { margin:0; word-break:break-all; }
ul.plan li { margin:2px 0; }
"#;

pub const JS: &str = r"
document.addEventListener('click', function (e) {
  var b = e.target.closest('button[data-copy]');
  if (!b) return;
  var text = b.getAttribute('data-copy');
  var done = function () { var t = b.firstChild.nodeValue; b.firstChild.nodeValue = 'Copied '; setTimeout(function () { b.firstChild.nodeValue = t; }, 1500); };
  if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(text).then(done); }
  else { var i = b.previousElementSibling; i.focus(); i.select(); document.execCommand('copy'); done(); }
});
document.addEventListener('focusin', function (e) { if (e.target.matches('.copy input')) e.target.select(); });
";

/// A static asset answer, cacheable for an hour.
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Raw JSON, pretty-printed when it parses.
pub fn json_block(bytes: &[u8]) -> Markup {
    let text = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned());
    html! { pre tabindex="0" { code { (text) } } }
}
