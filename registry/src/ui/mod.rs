//! The web UI, served under `/ui/` on the registry's own origin (`/`
//! redirects there): browse repositories, tags, platforms, layers, history
//! and referrers; delete after a preview; start garbage collection; and,
//! for authd's admins, the admin pages (`admin`).
//!
//! Every page acts with the viewer's own access: the session's refresh
//! token (or none, for `anonymous`) is exchanged at authd for an access
//! token with the scopes the page needs, verified by the registry's token
//! checker, and then asked exactly what `/v2/` would ask it (the catalog
//! filter of `_catalog`, [`Caller::authorize`] on a repository). Admin
//! pages call authd's admin API with the user's bearer token; authd refuses
//! non-admins. Without token auth there is no sign-in: with `auth: none`
//! everyone may do everything, as on `/v2/`; with htpasswd the UI shows
//! nothing (it never sees the password a browser would need to send).

// Handlers return the page to answer as their `Err`: made once per
// request, its size does not matter.
#![allow(clippy::result_large_err)]

mod admin;
pub mod authd;
pub mod html;
pub mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::header::{HOST, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use maud::{Markup, html};
use token::Action;

use self::authd::{AuthdClient, AuthdError, Grant};
use self::html::{Frame, copy, error_page, page, q, short_digest, size, time};
use crate::auth::{Authenticator, Caller, Requirement};
use crate::oci::{Digest, Manifest, Reference, RepoName};
use crate::state::AppState;
use crate::storage::browse::{self, DeletePlan, RepoSummary, Role, Sort};
use crate::storage::gc::{GcOptions, GcReport};

/// Rows per page of every list.
pub const PAGE: usize = 50;
/// How long the list of every repository with its last push (the sort by
/// push time) is reused.
const INDEX_TTL: Duration = Duration::from_secs(5);

type Params = HashMap<String, String>;

/// Config media types of plain images: no artifact type worth showing.
const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// The UI's part of the registry's state.
#[derive(Debug)]
pub struct UiState {
    /// authd, when the registry trusts its tokens.
    pub authd: Option<AuthdClient>,
    gc: Mutex<GcStatus>,
    index: Mutex<Option<(Instant, Arc<Vec<RepoSummary>>)>>,
    /// Tags of a repository by push time, reused for [`INDEX_TTL`].
    tag_order: moka::sync::Cache<String, Arc<Vec<String>>>,
}

impl Default for UiState {
    fn default() -> UiState {
        UiState {
            authd: None,
            gc: Mutex::default(),
            index: Mutex::default(),
            tag_order: moka::sync::Cache::builder()
                .max_capacity(64)
                .time_to_live(INDEX_TTL)
                .build(),
        }
    }
}

/// The last collection started from the UI, and whether one runs.
#[derive(Debug, Default, Clone)]
pub struct GcStatus {
    pub running: Option<(SystemTime, String)>,
    pub last: Option<GcRun>,
}

#[derive(Debug, Clone)]
pub struct GcRun {
    pub started: SystemTime,
    pub finished: SystemTime,
    pub by: String,
    pub result: Result<GcReport, String>,
}

impl UiState {
    /// The UI state for an authentication method.
    pub fn new(authenticator: &Authenticator) -> anyhow::Result<UiState> {
        let authd = match authenticator {
            Authenticator::Token(t) => {
                Some(AuthdClient::new(&t.config.authd_url, &t.config.service)?)
            }
            _ => None,
        };
        Ok(UiState {
            authd,
            ..UiState::default()
        })
    }

    /// Records a finished collection (from this page or the schedule) as
    /// the last run.
    pub fn record_gc(&self, by: &str, started: SystemTime, result: Result<GcReport, String>) {
        let mut status = self
            .gc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        status.last = Some(GcRun {
            started,
            finished: SystemTime::now(),
            by: by.to_owned(),
            result,
        });
        drop(status);
        self.forget_index();
    }

    fn forget_index(&self) {
        *self
            .index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// The UI's routes (merged into the registry's router).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(repositories))
        .route(
            "/ui/static/app.css",
            get(|| async { html::asset("text/css; charset=utf-8", html::CSS) }),
        )
        .route(
            "/ui/static/app.js",
            get(|| async { html::asset("text/javascript; charset=utf-8", html::JS) }),
        )
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", axum::routing::post(logout))
        .route("/ui/repo", get(repository))
        .route("/ui/manifest", get(manifest_page))
        .route("/ui/delete", get(delete_preview).post(delete))
        .route("/ui/gc", get(gc_page).post(gc_start))
        .merge(admin::router())
}

/// Who is looking at a page, with what access.
pub struct Viewer {
    pub caller: Caller,
    pub frame: Frame,
    /// The access token of the page (token auth).
    pub grant: Option<Arc<Grant>>,
    /// The session's refresh token.
    pub session: Option<String>,
    /// The key of this page's CSRF tokens.
    csrf_key: String,
    /// Cookies to set with the answer.
    cookies: Vec<String>,
    /// Said once at the top of the page (an ended session).
    pub notice: Option<String>,
    pub tls: bool,
}

impl Viewer {
    /// Finds out who is looking: `scopes` are what the page needs.
    pub async fn new(
        state: &AppState,
        headers: &HeaderMap,
        scopes: &[String],
    ) -> Result<Viewer, Response> {
        let tls = state.config.tls.is_some();
        let secure = session::came_over_https(headers, tls);
        let mut cookies = Vec::new();
        let presession = if let Some(v) = session::cookie(headers, session::PRESESSION_COOKIE) {
            v.to_owned()
        } else {
            let v = session::new_presession();
            cookies.push(session::set_cookie(
                session::PRESESSION_COOKIE,
                &v,
                86_400,
                secure,
            ));
            v
        };
        let mut viewer = Viewer {
            caller: Caller::Anonymous,
            frame: Frame::default(),
            grant: None,
            session: None,
            csrf_key: presession,
            cookies,
            notice: None,
            tls,
        };
        match &state.authenticator {
            Authenticator::None => viewer.caller = Caller::Anyone,
            Authenticator::Htpasswd(_) => {}
            Authenticator::Token(t) => {
                let Some(client) = &state.ui.authd else {
                    return Err(viewer.error(StatusCode::INTERNAL_SERVER_ERROR, "no authd client"));
                };
                viewer.frame.can_sign_in = true;
                let mut session =
                    session::cookie(headers, session::SESSION_COOKIE).map(str::to_owned);
                let mut all = scopes.to_vec();
                if session.is_some() {
                    all.push(format!("{}:{}:*", token::ADMIN_TYPE, token::ADMIN_NAME));
                }
                let grant = match client.grant(t, session.as_deref(), &all).await {
                    Err(AuthdError::Unauthorized) if session.is_some() => {
                        // Revoked or expired: carry on signed out.
                        session = None;
                        viewer.cookies.push(session::set_cookie(
                            session::SESSION_COOKIE,
                            "",
                            0,
                            secure,
                        ));
                        viewer.notice = Some("Your session has ended; you are signed out.".into());
                        client.grant(t, None, scopes).await
                    }
                    other => other,
                };
                let grant = match grant {
                    Ok(g) => g,
                    Err(e) => return Err(viewer.error(StatusCode::BAD_GATEWAY, &e.to_string())),
                };
                viewer.caller = Caller::Token(grant.verified.clone());
                if let Some(s) = &session {
                    viewer.frame.user = Some(grant.verified.subject.clone());
                    viewer.frame.admin = grant.is_admin();
                    viewer.csrf_key = s.clone();
                }
                viewer.session = session;
                viewer.grant = Some(grant);
            }
        }
        viewer.frame.csrf = session::csrf_token(&viewer.csrf_key);
        Ok(viewer)
    }

    /// Checks a state-changing request: our origin and the form's token.
    pub fn check_form(&self, headers: &HeaderMap, form: &Params) -> Result<(), Response> {
        let token = form.get("csrf").map_or("", String::as_str);
        if !session::same_origin(headers) || !session::csrf_ok(&self.csrf_key, token) {
            return Err(self.error(
                StatusCode::FORBIDDEN,
                "This form was not sent from this site's own page (cross-site request refused). Reload the page and try again.",
            ));
        }
        Ok(())
    }

    /// May the viewer do `actions` on `name`, as `/v2/` would decide.
    pub fn may(&self, state: &AppState, name: &RepoName, actions: &[Action]) -> bool {
        self.caller
            .authorize(state, &Requirement::Repository(name, actions))
            .is_ok()
    }

    /// May the viewer run the garbage collector: an admin, or anyone when
    /// auth is off.
    pub fn may_collect(&self) -> bool {
        matches!(self.caller, Caller::Anyone) || self.frame.admin
    }

    /// Adds the viewer's cookies to an answer.
    pub fn finish(&self, mut resp: Response) -> Response {
        for c in &self.cookies {
            if let Ok(v) = HeaderValue::from_str(c) {
                resp.headers_mut().append(SET_COOKIE, v);
            }
        }
        resp
    }

    pub fn page(&self, title: &str, body: Markup) -> Response {
        self.page_with(StatusCode::OK, title, body)
    }

    pub fn page_with(&self, status: StatusCode, title: &str, body: Markup) -> Response {
        let body = html! {
            @if let Some(n) = &self.notice { p.notice role="status" { (n) } }
            (maud::PreEscaped(body.into_string()))
        };
        self.finish(page(status, title, &self.frame, body))
    }

    pub fn error(&self, status: StatusCode, message: &str) -> Response {
        self.finish(error_page(status, &self.frame, message))
    }

    /// A 303 to `to` (after a successful form), with the cookies.
    pub fn redirect(&self, to: &str) -> Response {
        self.finish(Redirect::to(to).into_response())
    }

    /// Hidden CSRF field for this page's forms.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.frame.csrf); }
    }
}

fn scope_catalog() -> Vec<String> {
    vec![format!("{}:{}:*", token::CATALOG_TYPE, token::CATALOG_NAME)]
}

fn scope_repository(name: &RepoName) -> Vec<String> {
    vec![format!("repository:{name}:pull,delete")]
}

/// The address docker would pull from: the `Host` this page was asked by.
fn pull_host(headers: &HeaderMap) -> String {
    headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost:5000")
        .to_owned()
}

fn param<'a>(p: &'a Params, k: &str) -> &'a str {
    p.get(k).map_or("", String::as_str)
}

fn sort_of(p: &Params) -> Sort {
    if param(p, "sort") == "pushed" {
        Sort::Pushed
    } else {
        Sort::Name
    }
}

fn page_number(p: &Params) -> usize {
    param(p, "page").parse::<usize>().unwrap_or(1).max(1)
}

fn storage_error(viewer: &Viewer, e: &dyn std::fmt::Display) -> Response {
    tracing::warn!("web UI storage error: {e}");
    viewer.error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The storage could not be read; see the registry's log.",
    )
}

// ----- repositories -----

async fn repositories(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    let viewer = match Viewer::new(&state, &headers, &scope_catalog()).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let query = param(&p, "q").trim().to_owned();
    let sort = sort_of(&p);
    let caller = viewer.caller.clone();
    let all = caller.may_list_catalog();
    let keep =
        move |name: &str| all || RepoName::parse(name).is_ok_and(|r| caller.lists_in_catalog(&r));
    let (rows, next, prev) = match sort {
        Sort::Name => {
            let after = p.get("after").cloned().filter(|a| !a.is_empty());
            let q2 = query.clone();
            let result = state
                .storage
                .run(move |s| {
                    let (names, more) =
                        s.catalog_page(after.as_deref(), Some(PAGE), &|n: &str| {
                            n.contains(q2.as_str()) && keep(n)
                        })?;
                    let mut rows = Vec::new();
                    for n in &names {
                        if let Ok(name) = RepoName::parse(n)
                            && let Some(r) = browse::repo_summary(s, &name)?
                        {
                            rows.push(r);
                        }
                    }
                    Ok((rows, more.then(|| names.last().cloned()).flatten()))
                })
                .await;
            match result {
                Ok((rows, next)) => {
                    let next = next.map(|n| format!("/ui/?q={}&after={}", q(&query), q(&n)));
                    let prev = p
                        .contains_key("after")
                        .then(|| format!("/ui/?q={}", q(&query)));
                    (rows, next, prev)
                }
                Err(e) => return storage_error(&viewer, &e),
            }
        }
        Sort::Pushed => {
            let index = match repo_index(&state).await {
                Ok(i) => i,
                Err(e) => return storage_error(&viewer, &e),
            };
            let page_no = page_number(&p);
            let matching: Vec<&RepoSummary> = index
                .iter()
                .filter(|r| r.name.contains(query.as_str()) && keep(&r.name))
                .collect();
            let start = (page_no - 1) * PAGE;
            let rows: Vec<RepoSummary> = matching
                .iter()
                .skip(start)
                .take(PAGE)
                .map(|r| (*r).clone())
                .collect();
            let link = |n: usize| format!("/ui/?q={}&sort=pushed&page={n}", q(&query));
            let next = (matching.len() > start + PAGE).then(|| link(page_no + 1));
            let prev = (page_no > 1).then(|| link(page_no - 1));
            (rows, next, prev)
        }
    };
    let deleted = param(&p, "deleted");
    viewer.page(
        "Repositories",
        html! {
            h1 { "Repositories" }
            @if !deleted.is_empty() {
                p.notice role="status" { "Deleted. " (deleted) " holds nothing any more and left the list." }
            }
            form.bar method="get" action="/ui/" role="search" {
                div {
                    label for="q" { "Search by name" }
                    input #q type="search" name="q" value=(query);
                }
                div {
                    label for="sort" { "Sort by" }
                    select #sort name="sort" {
                        option value="name" selected[sort == Sort::Name] { "name" }
                        option value="pushed" selected[sort == Sort::Pushed] { "last push" }
                    }
                }
                button type="submit" { "Show" }
            }
            @if rows.is_empty() {
                p #no-repositories { "No repositories" @if !query.is_empty() { " match " code { (query) } } "." }
            } @else {
                table #repositories {
                    caption.sr { "Repositories you may pull" }
                    thead { tr { th scope="col" { "Name" } th.num scope="col" { "Tags" } th scope="col" { "Last push" } } }
                    tbody {
                        @for r in &rows {
                            tr {
                                td { a href={"/ui/repo?name=" (q(&r.name))} { (r.name) } }
                                td.num { (r.tags) }
                                td.time { (time(r.last_push)) }
                            }
                        }
                    }
                }
            }
            (pager(prev.as_deref(), next.as_deref()))
        },
    )
}

fn pager(prev: Option<&str>, next: Option<&str>) -> Markup {
    html! {
        nav.pager aria-label="Pages" {
            @if let Some(p) = prev { a rel="prev" href=(p) { "← Previous page" } }
            @if let Some(n) = next { a rel="next" href=(n) { "Next page →" } }
        }
    }
}

/// Every repository with its last push, newest first, reused for
/// [`INDEX_TTL`] (a UI delete forgets it).
async fn repo_index(state: &AppState) -> crate::error::Result<Arc<Vec<RepoSummary>>> {
    if let Some((at, index)) = state
        .ui
        .index
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        && at.elapsed() < INDEX_TTL
    {
        return Ok(index.clone());
    }
    let index = state
        .storage
        .run(|s| {
            let mut out = Vec::new();
            for name in s.list_repositories()? {
                if let Some(r) = browse::repo_summary(s, &name)? {
                    out.push(r);
                }
            }
            out.sort_by(|a, b| {
                b.last_push
                    .cmp(&a.last_push)
                    .then_with(|| a.name.cmp(&b.name))
            });
            Ok(Arc::new(out))
        })
        .await?;
    *state
        .ui
        .index
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), index.clone()));
    Ok(index)
}

/// The repository named in `p`, if the viewer may pull it; else the page
/// to show (the same 404 whether it exists or not).
async fn pullable(
    state: &AppState,
    headers: &HeaderMap,
    p: &Params,
) -> Result<(Viewer, RepoName), Response> {
    let name = RepoName::parse(param(p, "name"));
    let scopes = name.as_ref().map(scope_repository).unwrap_or_default();
    let viewer = Viewer::new(state, headers, &scopes).await?;
    match name {
        Ok(name) if viewer.may(state, &name, &[Action::Pull]) => Ok((viewer, name)),
        _ => Err(viewer.error(
            StatusCode::NOT_FOUND,
            "No such repository, or you may not pull from it.",
        )),
    }
}

async fn repository(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    let (viewer, name) = match pullable(&state, &headers, &p).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let query = param(&p, "q").trim().to_owned();
    let sort = sort_of(&p);
    let page_no = page_number(&p);
    let cached = (sort == Sort::Pushed)
        .then(|| state.ui.tag_order.get(name.as_str()))
        .flatten();
    let (n, q2, ui_state) = (name.clone(), query.clone(), state.clone());
    let result = state
        .storage
        .run(move |s| {
            let ordered = match (sort, cached) {
                (Sort::Pushed, Some(o)) => o,
                (Sort::Pushed, None) => {
                    let Some(o) = browse::tags_by_push(s, &n)? else {
                        return Ok(None);
                    };
                    let o = Arc::new(o);
                    ui_state.ui.tag_order.insert(n.to_string(), o.clone());
                    o
                }
                (Sort::Name, _) => match s.list_tags(&n)? {
                    Some(t) => t,
                    None => return Ok(None),
                },
            };
            browse::tag_page(s, &n, &ordered, &q2, (page_no - 1) * PAGE, PAGE).map(Some)
        })
        .await;
    let (rows, total) = match result {
        Ok(Some(x)) => x,
        Ok(None) => {
            return viewer.error(
                StatusCode::NOT_FOUND,
                "No such repository, or you may not pull from it.",
            );
        }
        Err(e) => return storage_error(&viewer, &e),
    };
    let can_delete = state.config.delete_enabled && viewer.may(&state, &name, &[Action::Delete]);
    let host = pull_host(&headers);
    let sort_param = if sort == Sort::Pushed {
        "pushed"
    } else {
        "name"
    };
    let link = |n: usize| {
        format!(
            "/ui/repo?name={}&q={}&sort={sort_param}&page={n}",
            q(name.as_str()),
            q(&query)
        )
    };
    let next = (total > page_no * PAGE).then(|| link(page_no + 1));
    let prev = (page_no > 1).then(|| link(page_no - 1));
    let notice = param(&p, "deleted");
    viewer.page(
        name.as_str(),
        html! {
            h1 { (name) }
            @if !notice.is_empty() { p.notice role="status" { "Deleted " (notice) "." } }
            p { (total) " tags. Pull: " (copy("pull command", &format!("docker pull {host}/{name}"))) }
            form.bar method="get" action="/ui/repo" role="search" {
                input type="hidden" name="name" value=(name);
                div { label for="q" { "Search tags" } input #q type="search" name="q" value=(query); }
                div {
                    label for="sort" { "Sort by" }
                    select #sort name="sort" {
                        option value="name" selected[sort == Sort::Name] { "name" }
                        option value="pushed" selected[sort == Sort::Pushed] { "push time" }
                    }
                }
                button type="submit" { "Show" }
            }
            @if rows.is_empty() {
                p { "No tags." }
            } @else {
                table #tags {
                    caption.sr { "Tags of " (name) }
                    thead { tr {
                        th scope="col" { "Tag / platform" } th scope="col" { "Digest" } th.num scope="col" { "Size" }
                        th scope="col" { "Pushed" } th scope="col" { "Pull" } th scope="col" { "Actions" }
                    } }
                    tbody {
                        @for r in &rows {
                            tr.tag data-tag=(r.tag) {
                                th scope="row" { a href={"/ui/manifest?name=" (q(name.as_str())) "&ref=" (q(&r.tag))} { (r.tag) } }
                                td.mono { (copy(&format!("digest of {}", r.tag), &r.digest.to_string())) }
                                td.num { (size(r.size)) }
                                td.time { (time(r.pushed)) }
                                td { (copy(&format!("pull command for {}", r.tag), &format!("docker pull {host}/{name}:{}", r.tag))) }
                                td {
                                    @if can_delete {
                                        a.button.danger href={"/ui/delete?name=" (q(name.as_str())) "&ref=" (q(&r.tag))} { "Delete " span.sr { "tag " (r.tag) } }
                                    }
                                }
                            }
                            @for pl in &r.platforms {
                                tr.platform {
                                    td { a href={"/ui/manifest?name=" (q(name.as_str())) "&ref=" (q(&pl.digest.to_string()))} { (pl.platform) } }
                                    td.mono { (copy(&format!("{name}@digest for {}", pl.platform), &format!("{name}@{}", pl.digest))) }
                                    td.num { (size(pl.size)) }
                                    td {} td {} td {}
                                }
                            }
                        }
                    }
                }
            }
            (pager(prev.as_deref(), next.as_deref()))
        },
    )
}

// ----- one manifest -----

/// History entries of an image config.
fn history(config: &serde_json::Value) -> Vec<(String, String, bool)> {
    config["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| {
                    (
                        e["created"].as_str().unwrap_or_default().to_owned(),
                        e["created_by"].as_str().unwrap_or_default().to_owned(),
                        e["empty_layer"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

struct ManifestView {
    digest: Digest,
    bytes: bytes::Bytes,
    parsed: Option<Manifest>,
    tags: Vec<String>,
    config: Option<serde_json::Value>,
    referrers: Vec<Arc<crate::storage::StoredManifest>>,
    children: Vec<(String, Digest, u64)>,
}

async fn manifest_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    let (viewer, name) = match pullable(&state, &headers, &p).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(reference) = Reference::parse(param(&p, "ref")) else {
        return viewer.error(StatusCode::NOT_FOUND, "No such tag or digest.");
    };
    let n = name.clone();
    let r2 = reference.clone();
    let result = state
        .storage
        .run(move |s| {
            let Some(m) = s.get_manifest(&n, &r2)? else {
                return Ok(None);
            };
            let parsed = Manifest::parse(Some(m.media_type.as_str()), &m.bytes).ok();
            let tags = browse::tags_of(s, &n, &m.digest)?;
            let mut config = None;
            let mut children = Vec::new();
            if let Some(pm) = &parsed {
                if let Some(c) = &pm.config
                    && c.size <= 4 * 1024 * 1024
                    && let Some((mut reader, _)) = s.read_blob(&n, &c.digest, 0)?
                {
                    let mut buf = Vec::new();
                    if std::io::Read::read_to_end(&mut reader, &mut buf).is_ok() {
                        config = serde_json::from_slice(&buf).ok();
                    }
                }
                for child in &pm.manifests {
                    let size = match browse::manifest(s, &child.digest)? {
                        Some((cm, own)) => own + cm.required_blobs().map(|d| d.size).sum::<u64>(),
                        None => child.size,
                    };
                    children.push((browse::platform_label(child), child.digest.clone(), size));
                }
            }
            let referrers = s.referrers(&n, &m.digest)?;
            Ok(Some(ManifestView {
                digest: m.digest.clone(),
                bytes: m.bytes.clone(),
                parsed,
                tags,
                config,
                referrers,
                children,
            }))
        })
        .await;
    let v = match result {
        Ok(Some(v)) => v,
        Ok(None) => {
            return viewer.error(
                StatusCode::NOT_FOUND,
                "No such tag or digest in this repository.",
            );
        }
        Err(e) => return storage_error(&viewer, &e),
    };
    let can_delete = state.config.delete_enabled && viewer.may(&state, &name, &[Action::Delete]);
    let host = pull_host(&headers);
    let by_digest = format!("{name}@{}", v.digest);
    let title = match &reference {
        Reference::Tag(t) => format!("{name}:{t}"),
        Reference::Digest(d) => format!("{name}@{}", short_digest(&d.to_string())),
    };
    let media = v
        .parsed
        .as_ref()
        .map_or("unknown", |m| m.media_type.as_str());
    viewer.page(
        &title,
        html! {
            p { a href={"/ui/repo?name=" (q(name.as_str()))} { "← " (name) } }
            h1 { (title) }
            dl.facts {
                dt { "Digest" } dd { (copy("digest", &v.digest.to_string())) }
                dt { "By digest" } dd { (copy("repository at digest", &by_digest)) }
                @if let Reference::Tag(t) = &reference {
                    dt { "Pull" } dd { (copy("pull command", &format!("docker pull {host}/{name}:{t}"))) }
                } @else {
                    dt { "Pull" } dd { (copy("pull command", &format!("docker pull {host}/{by_digest}"))) }
                }
                dt { "Media type" } dd { code { (media) } }
                dt { "Tags" } dd { @if v.tags.is_empty() { "none" } @else { (v.tags.join(", ")) } }
                @if let Some(m) = &v.parsed {
                    @if let Some(s) = &m.subject {
                        dt { "Refers to" } dd { a href={"/ui/manifest?name=" (q(name.as_str())) "&ref=" (q(&s.digest.to_string()))} { (s.digest) } }
                    }
                    @if let Some(a) = m.effective_artifact_type().filter(|a| !IMAGE_CONFIGS.contains(a)) { dt { "Artifact type" } dd { code { (a) } } }
                }
                @if let Some(c) = &v.config {
                    dt { "Platform" } dd { (c["os"].as_str().unwrap_or("?")) "/" (c["architecture"].as_str().unwrap_or("?")) }
                    @if let Some(created) = c["created"].as_str() { dt { "Created" } dd { (created) } }
                }
            }
            @if can_delete {
                p { a.button.danger href={"/ui/delete?name=" (q(name.as_str())) "&ref=" (q(&reference.to_string()))} {
                    @if matches!(reference, Reference::Tag(_)) { "Delete this tag…" } @else { "Delete this manifest…" }
                } }
            }
            @if !v.children.is_empty() {
                h2 { "Platforms" }
                table #platforms {
                    thead { tr { th scope="col" { "Platform" } th scope="col" { "Digest" } th.num scope="col" { "Size" } } }
                    tbody { @for (label, d, sz) in &v.children {
                        tr {
                            td { a href={"/ui/manifest?name=" (q(name.as_str())) "&ref=" (q(&d.to_string()))} { (label) } }
                            td.mono { (copy(&format!("{name}@digest for {label}"), &format!("{name}@{d}"))) }
                            td.num { (size(*sz)) }
                        }
                    } }
                }
            }
            @if let Some(m) = &v.parsed && !m.layers.is_empty() {
                h2 { "Layers" }
                table #layers {
                    thead { tr { th.num scope="col" { "#" } th scope="col" { "Digest" } th scope="col" { "Media type" } th.num scope="col" { "Size" } } }
                    tbody { @for (i, l) in m.layers.iter().enumerate() {
                        tr { td.num { (i + 1) } td.mono { (short_digest(&l.digest.to_string())) } td { code { (l.media_type) } } td.num { (size(l.size)) } }
                    } }
                }
                @if let Some(c) = &m.config {
                    p { "Config " code { (short_digest(&c.digest.to_string())) } " (" (size(c.size)) ")" }
                }
            }
            @if let Some(c) = &v.config {
                @let h = history(c);
                @if !h.is_empty() {
                    h2 { "History" }
                    table #history {
                        thead { tr { th scope="col" { "Created" } th scope="col" { "Command" } th scope="col" { "Layer" } } }
                        tbody { @for (created, by, empty) in &h {
                            tr { td { (created) } td.mono { (by) } td { @if *empty { "none" } @else { "yes" } } }
                        } }
                    }
                }
                details { summary { "Config JSON" } (html::json_block(c.to_string().as_bytes())) }
            }
            h2 { "Referrers" }
            @if v.referrers.is_empty() {
                p { "No signatures, SBOMs or attestations refer to this manifest." }
            } @else {
                table #referrers {
                    thead { tr { th scope="col" { "Artifact type" } th scope="col" { "Digest" } th.num scope="col" { "Size" } th scope="col" { "Raw JSON" } } }
                    tbody { @for r in &v.referrers {
                        @let kind = Manifest::parse(Some(r.media_type.as_str()), &r.bytes).ok().and_then(|m| m.effective_artifact_type().map(str::to_owned)).unwrap_or_else(|| "unknown".into());
                        tr {
                            td { code { (kind) } }
                            td { a href={"/ui/manifest?name=" (q(name.as_str())) "&ref=" (q(&r.digest.to_string()))} { (short_digest(&r.digest.to_string())) } }
                            td.num { (size(r.bytes.len() as u64)) }
                            td { details { summary { "Show" } (html::json_block(&r.bytes)) } }
                        }
                    } }
                }
            }
            details { summary { "Manifest JSON" } (html::json_block(&v.bytes)) }
        },
    )
}

// ----- delete -----

/// The repository, reference and plan of a delete, after the viewer's
/// `delete` permission was checked.
async fn delete_context(
    state: &AppState,
    headers: &HeaderMap,
    p: &Params,
) -> Result<(Viewer, RepoName, Reference, bool, Option<DeletePlan>), Response> {
    let (viewer, name) = pullable(state, headers, p).await?;
    if !state.config.delete_enabled {
        return Err(viewer.error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Deletes are disabled on this registry (storage.delete.enabled).",
        ));
    }
    if !viewer.may(state, &name, &[Action::Delete]) {
        return Err(viewer.error(
            StatusCode::FORBIDDEN,
            "You may not delete from this repository.",
        ));
    }
    let Ok(reference) = Reference::parse(param(p, "ref")) else {
        return Err(viewer.error(StatusCode::NOT_FOUND, "No such tag or digest."));
    };
    let with_manifest = param(p, "manifest") != "0";
    let (n, r) = (name.clone(), reference.clone());
    match state
        .storage
        .run(move |s| browse::plan_delete(s, &n, &r, with_manifest))
        .await
    {
        Ok(plan) => Ok((viewer, name, reference, with_manifest, plan)),
        Err(e) => Err(storage_error(&viewer, &e)),
    }
}

async fn delete_preview(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    match delete_context(&state, &headers, &p).await {
        Ok((viewer, name, reference, with_manifest, Some(plan))) => {
            preview(&viewer, &name, &reference, with_manifest, &plan, None)
        }
        Ok((viewer, ..)) => viewer.error(
            StatusCode::NOT_FOUND,
            "No such tag or digest in this repository.",
        ),
        Err(r) => r,
    }
}

fn preview(
    viewer: &Viewer,
    name: &RepoName,
    reference: &Reference,
    with_manifest: bool,
    plan: &DeletePlan,
    changed: Option<&str>,
) -> Response {
    let is_tag = matches!(reference, Reference::Tag(_));
    let title = if is_tag {
        format!("Delete tag {name}:{reference}")
    } else {
        format!(
            "Delete manifest {name}@{}",
            short_digest(&reference.to_string())
        )
    };
    let back = format!("/ui/repo?name={}", q(name.as_str()));
    let other_choice = format!(
        "/ui/delete?name={}&ref={}&manifest={}",
        q(name.as_str()),
        q(&reference.to_string()),
        if with_manifest { "0" } else { "1" }
    );
    viewer.page(
        &title,
        html! {
            h1 { (title) }
            @if let Some(c) = changed { p.error role="alert" { (c) } }
            h2 { "What goes" }
            ul.plan #plan {
                @for t in &plan.tags { li { "Tag " code { (t) } } }
                @for (d, role) in &plan.manifests {
                    li { (match role {
                        Role::Target => "Manifest ".to_owned(),
                        Role::Child(p) => format!("Platform {p}: manifest "),
                        Role::Referrer(k) => format!("Referrer ({k}): manifest "),
                    }) code { (d) } }
                }
            }
            @if !plan.other_tags.is_empty() {
                p #other-tags { "Stays: the manifest " code { (short_digest(&plan.target.to_string())) } ", still tagged " (plan.other_tags.join(", ")) ". No space is freed." }
            } @else if plan.manifests.is_empty() {
                p #untagged { "The manifest " code { (short_digest(&plan.target.to_string())) } " stays, untagged (pullable by digest); no space is freed. "
                    a href=(other_choice) { "Delete the manifest as well" } }
            } @else if is_tag {
                p { "This is the manifest's last tag, so the manifest goes with it. " a href=(other_choice) { "Delete only the tag" } }
            }
            @if !plan.kept_children.is_empty() {
                p { "Kept, because a tag or another index still uses them: " @for d in &plan.kept_children { code { (short_digest(&d.to_string())) } " " } }
            }
            p #freed { "The next garbage collection frees " strong { (size(plan.bytes_freed)) } " (" (plan.blobs_freed) " blobs no other manifest or repository uses; blobs younger than the collection's grace period wait for a later one)." }
            @if plan.empties_repository { p { "The repository holds nothing afterwards and leaves the list." } }
            form method="post" action="/ui/delete" {
                (viewer.csrf_field())
                input type="hidden" name="name" value=(name);
                input type="hidden" name="ref" value=(reference.to_string());
                input type="hidden" name="manifest" value=(if with_manifest { "1" } else { "0" });
                input type="hidden" name="plan" value=(plan.fingerprint());
                button.danger #confirm-delete type="submit" { "Delete" }
                " "
                a href=(back) { "Cancel" }
            }
        },
    )
}

async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(p): Form<Params>,
) -> Response {
    let (viewer, name, reference, with_manifest, plan) =
        match delete_context(&state, &headers, &p).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    if let Err(r) = viewer.check_form(&headers, &p) {
        return r;
    }
    let Some(plan) = plan else {
        return viewer.error(
            StatusCode::NOT_FOUND,
            "No such tag or digest in this repository (deleted meanwhile?).",
        );
    };
    if plan.fingerprint() != param(&p, "plan") {
        return preview(
            &viewer,
            &name,
            &reference,
            with_manifest,
            &plan,
            Some("The repository changed since the preview: this is what a delete takes now."),
        );
    }
    let (n, pl) = (name.clone(), plan.clone());
    if let Err(e) = state
        .storage
        .run(move |s| browse::apply_delete(s, &n, &pl))
        .await
    {
        return storage_error(&viewer, &e);
    }
    state.ui.forget_index();
    let who = viewer.frame.user.as_deref().unwrap_or("anonymous");
    tracing::info!(repository = %name, reference = %reference, user = who, tags = plan.tags.len(), manifests = plan.manifests.len(), "web UI delete");
    let n = name.clone();
    let still_there = state
        .storage
        .run(move |s| s.repo_exists(&n))
        .await
        .unwrap_or(true);
    if still_there {
        viewer.redirect(&format!(
            "/ui/repo?name={}&deleted={}",
            q(name.as_str()),
            q(&reference.to_string())
        ))
    } else {
        viewer.redirect(&format!("/ui/?deleted={}", q(name.as_str())))
    }
}

// ----- garbage collection -----

async fn gc_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let viewer = match Viewer::new(&state, &headers, &[]).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !viewer.may_collect() {
        return viewer.error(
            StatusCode::FORBIDDEN,
            "Only admins may run the garbage collector.",
        );
    }
    let status = state
        .ui
        .gc
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let schedule = state.config.gc_schedule.as_ref();
    viewer.page(
        "Garbage collection",
        html! {
            h1 { "Garbage collection" }
            p { "Collection runs online: the registry keeps serving. Blobs no manifest references are deleted once older than the grace period, which protects pushes in progress." }
            @if let Some(s) = schedule {
                p { "Scheduled every " (format!("{:?}", s.interval)) " (grace " (format!("{:?}", s.grace)) @if s.delete_untagged { ", untagged manifests too" } ")." }
            } @else { p { "No schedule is configured (storage.maintenance.gc)." } }
            h2 { "Last run" }
            @if let Some((since, by)) = &status.running {
                p #gc-running role="status" { "Running since " (time(Some(*since))) ", started by " (by) ". Reload to see the result." }
            }
            @match &status.last {
                None => p #gc-last { "None since the registry started." },
                Some(run) => div #gc-last {
                    p { "Started " (time(Some(run.started))) " by " (run.by) ", finished " (time(Some(run.finished))) "." }
                    @match &run.result {
                        Ok(r) => pre { (r.to_string()) },
                        Err(e) => p.error { (e) },
                    }
                },
            }
            h2 { "Start a collection" }
            form method="post" action="/ui/gc" {
                (viewer.csrf_field())
                div.field { label for="grace" { "Grace period" } input #grace type="text" name="grace" value="1h" aria-describedby="grace-help"; span #grace-help.muted { " e.g. 1h, 30m, 0s (0s may delete the blobs of a push in progress)" } }
                div.field { input #untagged type="checkbox" name="untagged" value="1"; label.inline for="untagged" { " Also delete manifests no tag reaches" } }
                div.field { input #dry type="checkbox" name="dry" value="1"; label.inline for="dry" { " Dry run (report only)" } }
                button type="submit" disabled[status.running.is_some()] { "Start garbage collection" }
            }
        },
    )
}

async fn gc_start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(p): Form<Params>,
) -> Response {
    let viewer = match Viewer::new(&state, &headers, &[]).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(r) = viewer.check_form(&headers, &p) {
        return r;
    }
    if !viewer.may_collect() {
        return viewer.error(
            StatusCode::FORBIDDEN,
            "Only admins may run the garbage collector.",
        );
    }
    let Some(grace) = crate::config::parse_duration(param(&p, "grace")) else {
        return viewer.error(
            StatusCode::BAD_REQUEST,
            "The grace period must be a duration such as 1h, 30m or 0s.",
        );
    };
    let by = viewer
        .frame
        .user
        .clone()
        .unwrap_or_else(|| "anonymous".into());
    {
        let mut status = state
            .ui
            .gc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if status.running.is_some() {
            return viewer.redirect("/ui/gc");
        }
        status.running = Some((SystemTime::now(), by.clone()));
    }
    let opts = GcOptions {
        dry_run: p.contains_key("dry"),
        grace,
        delete_untagged: p.contains_key("untagged"),
        expire_tags: state.config.proxy_ttls(),
        ..GcOptions::default()
    };
    let st = state.clone();
    tokio::spawn(async move {
        let started = SystemTime::now();
        let result = st
            .storage
            .run(move |s| s.gc(&opts))
            .await
            .map_err(|e| e.to_string());
        tracing::info!(user = %by, ok = result.is_ok(), "web UI garbage collection finished");
        st.ui.forget_index();
        let mut status = st
            .ui
            .gc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        status.running = None;
        status.last = Some(GcRun {
            started,
            finished: SystemTime::now(),
            by,
            result,
        });
    });
    viewer.redirect("/ui/gc")
}

// ----- sign-in -----

fn login_markup(viewer: &Viewer, user: &str, error: Option<&str>) -> Markup {
    html! {
        h1 { "Sign in" }
        @if let Some(e) = error { p.error #login-error role="alert" { (e) } }
        form method="post" action="/ui/login" {
            (viewer.csrf_field())
            div.field { label for="username" { "User name" } input #username type="text" name="username" value=(user) autocomplete="username" autocapitalize="none" required autofocus[user.is_empty()]; }
            div.field { label for="password" { "Password" } input #password type="password" name="password" autocomplete="current-password" required autofocus[!user.is_empty()]; }
            button #sign-in type="submit" { "Sign in" }
        }
        p.muted { "Your password goes to the registry's user service (authd) once; the browser keeps only a session cookie, which signing out revokes." }
    }
}

async fn login_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let viewer = match Viewer::new(&state, &headers, &[]).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if state.ui.authd.is_none() {
        return viewer.error(
            StatusCode::NOT_FOUND,
            "Sign-in needs token authentication (authd); this registry does not use it.",
        );
    }
    if viewer.session.is_some() {
        return viewer.redirect("/ui/");
    }
    viewer.page("Sign in", login_markup(&viewer, "", None))
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(p): Form<Params>,
) -> Response {
    let viewer = match Viewer::new(&state, &headers, &[]).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(r) = viewer.check_form(&headers, &p) {
        return r;
    }
    let Some(client) = &state.ui.authd else {
        return viewer.error(
            StatusCode::NOT_FOUND,
            "Sign-in needs token authentication (authd); this registry does not use it.",
        );
    };
    let user = param(&p, "username").trim();
    let password = param(&p, "password");
    match client.login(user, password).await {
        Ok(refresh) => {
            let secure = session::came_over_https(&headers, viewer.tls);
            let mut resp = viewer.redirect("/ui/");
            if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
                session::SESSION_COOKIE,
                &refresh,
                session::SESSION_MAX_AGE_SECS,
                secure,
            )) {
                resp.headers_mut().append(SET_COOKIE, v);
            }
            resp
        }
        Err(e) => {
            let status = match e {
                AuthdError::Unauthorized => StatusCode::UNAUTHORIZED,
                AuthdError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::BAD_GATEWAY,
            };
            viewer.page_with(
                status,
                "Sign in",
                login_markup(&viewer, user, Some(&e.to_string())),
            )
        }
    }
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(p): Form<Params>,
) -> Response {
    let viewer = match Viewer::new(&state, &headers, &[]).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(r) = viewer.check_form(&headers, &p) {
        return r;
    }
    if let (Some(client), Some(refresh)) = (&state.ui.authd, &viewer.session)
        && let Err(e) = client.revoke(refresh).await
    {
        return viewer.error(
            StatusCode::BAD_GATEWAY,
            &format!("Signing out failed, the session is still valid: {e}"),
        );
    }
    let secure = session::came_over_https(&headers, viewer.tls);
    let mut resp = viewer.redirect("/ui/");
    if let Ok(v) =
        HeaderValue::from_str(&session::set_cookie(session::SESSION_COOKIE, "", 0, secure))
    {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp
}
