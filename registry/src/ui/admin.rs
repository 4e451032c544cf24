//! The admin pages: users (add, disable, admin flag, password reset), their
//! grants and effective permissions, grants per repository, refresh and
//! access tokens (revoke), htpasswd import with its report, and the audit
//! trail. Every read and change is a call to authd's admin API with the
//! signed-in user's bearer token: authd decides, the page only shows.

use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::response::Response;
use axum::routing::get;
use http::{HeaderMap, Method, StatusCode};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::html::q;
use super::{Params, Viewer, param};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui/admin/users", get(users).post(users_post))
        .route("/ui/admin/user", get(user).post(user_post))
        .route("/ui/admin/grants", get(grants).post(grants_post))
        .route("/ui/admin/import", get(import_form).post(import))
        .route("/ui/admin/audit", get(audit))
}

/// The viewer, if an admin of authd (others get a 403 page and authd is
/// not asked; it would refuse them too).
async fn admin_viewer(state: &AppState, headers: &HeaderMap) -> Result<Viewer, Response> {
    let viewer = Viewer::new(state, headers, &[]).await?;
    if !viewer.frame.admin {
        return Err(viewer.error(
            StatusCode::FORBIDDEN,
            "The admin pages are for authd's admins. Sign in as an admin.",
        ));
    }
    Ok(viewer)
}

/// One admin API call as the viewer: the JSON answer, or authd's message.
async fn call(
    state: &AppState,
    viewer: &Viewer,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let (Some(client), Some(grant)) = (&state.ui.authd, &viewer.grant) else {
        return Err("authd is not configured".into());
    };
    match client.admin(&grant.jwt, method, path, body).await {
        Ok((status, v)) if status.is_success() => Ok(v),
        Ok((status, v)) => Err(format!(
            "authd answered {status}: {}",
            v["message"].as_str().unwrap_or("no message")
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn result_note(done: &str, err: &str) -> Markup {
    html! {
        @if !done.is_empty() { p.notice #done role="status" { (done) } }
        @if !err.is_empty() { p.error #failed role="alert" { (err) } }
    }
}

/// Redirects after a change, with its outcome for the next page.
fn after(viewer: &Viewer, to: &str, outcome: Result<String, String>) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    match outcome {
        Ok(done) => viewer.redirect(&format!("{to}{sep}done={}", q(&done))),
        Err(e) => viewer.redirect(&format!("{to}{sep}err={}", q(&e))),
    }
}

fn actions_of(p: &Params) -> Vec<&'static str> {
    ["pull", "push", "delete"]
        .into_iter()
        .filter(|a| p.contains_key(*a))
        .collect()
}

fn action_boxes(prefix: &str) -> Markup {
    html! {
        fieldset {
            legend { "Actions" }
            @for a in ["pull", "push", "delete"] {
                input type="checkbox" id={(prefix) "-" (a)} name=(a) value="1" checked[a == "pull"];
                label.inline for={(prefix) "-" (a)} { " " (a) }
            }
        }
    }
}

fn yes(v: &Value) -> &'static str {
    if v.as_bool().unwrap_or(false) {
        "yes"
    } else {
        "no"
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

// ----- users -----

async fn users(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    let viewer = match admin_viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let list = match call(&state, &viewer, Method::GET, "/users", None).await {
        Ok(v) => v,
        Err(e) => return viewer.error(StatusCode::BAD_GATEWAY, &e),
    };
    let empty = Vec::new();
    let list = list.as_array().unwrap_or(&empty);
    viewer.page(
        "Users",
        html! {
            h1 { "Users" }
            (result_note(param(&p, "done"), param(&p, "err")))
            table #users {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Admin" } th scope="col" { "Robot" } th scope="col" { "Disabled" } th scope="col" { "Created" } } }
                tbody { @for u in list {
                    tr data-user=(s(&u["name"])) {
                        td { a href={"/ui/admin/user?name=" (q(s(&u["name"])))} { (s(&u["name"])) } }
                        td { (yes(&u["admin"])) } td { (yes(&u["robot"])) } td { (yes(&u["disabled"])) } td { (s(&u["created_at"])) }
                    }
                } }
            }
            h2 { "Add a user" }
            form method="post" action="/ui/admin/users" {
                (viewer.csrf_field())
                div.field { label for="new-name" { "User name" } input #new-name type="text" name="name" required autocapitalize="none"; }
                div.field { label for="new-password" { "Password" } input #new-password type="password" name="password" autocomplete="new-password" required; }
                div.field { input #new-admin type="checkbox" name="admin" value="1"; label.inline for="new-admin" { " Admin" } }
                button #add-user type="submit" { "Add user" }
            }
        },
    )
}

async fn users_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(p): Form<Params>,
) -> Response {
    let viewer = match admin_viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(r) = viewer.check_form(&headers, &p) {
        return r;
    }
    let name = param(&p, "name").trim();
    let body = json!({ "name": name, "password": param(&p, "password"), "admin": p.contains_key("admin") });
    let outcome = call(&state, &viewer, Method::POST, "/users", Some(&body))
        .await
        .map(|_| format!("User {name} added."));
    after(&viewer, "/ui/admin/users", outcome)
}

async fn user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    let viewer = match admin_viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let name = param(&p, "name");
    let n = seg(name);
    let u = match call(&state, &viewer, Method::GET, &format!("/users/{n}"), None).await {
        Ok(v) => v,
        Err(e) => return viewer.error(StatusCode::NOT_FOUND, &e),
    };
    let perms = call(
        &state,
        &viewer,
        Method::GET,
        &format!("/users/{n}/permissions"),
        None,
    )
    .await;
    let own = call(
        &state,
        &viewer,
        Method::GET,
        &format!("/grants?subject={}", q(name)),
        None,
    )
    .await;
    let refresh = call(
        &state,
        &viewer,
        Method::GET,
        &format!("/users/{n}/tokens"),
        None,
    )
    .await;
    let access = call(
        &state,
        &viewer,
        Method::GET,
        &format!("/users/{n}/access-tokens"),
        None,
    )
    .await;
    let here = format!("/ui/admin/user?name={}", q(name));
    let list = |r: &Result<Value, String>| {
        r.as_ref()
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    };
    let errors: Vec<&String> = [&perms, &own, &refresh, &access]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
        .collect();
    let perms_v = perms.as_ref().ok().cloned().unwrap_or(Value::Null);
    viewer.page(
        name,
        html! {
            p { a href="/ui/admin/users" { "← Users" } }
            h1 { "User " (name) }
            (result_note(param(&p, "done"), param(&p, "err")))
            @for e in &errors { p.error { (e) } }
            dl.facts {
                dt { "Admin" } dd { (yes(&u["admin"])) }
                dt { "Robot" } dd { (yes(&u["robot"])) }
                dt { "Disabled" } dd #user-disabled { (yes(&u["disabled"])) }
                dt { "Password" } dd { (s(&u["password_format"])) ", changed " (s(&u["password_changed_at"])) }
                dt { "Created" } dd { (s(&u["created_at"])) }
            }
            h2 { "Account" }
            form.bar method="post" action="/ui/admin/user" {
                (viewer.csrf_field())
                input type="hidden" name="name" value=(name);
                input type="hidden" name="do" value="flags";
                div { input #flag-admin type="checkbox" name="admin" value="1" checked[u["admin"].as_bool().unwrap_or(false)]; label.inline for="flag-admin" { " Admin" } }
                div { input #flag-disabled type="checkbox" name="disabled" value="1" checked[u["disabled"].as_bool().unwrap_or(false)]; label.inline for="flag-disabled" { " Disabled" } }
                button #save-flags type="submit" { "Save" }
            }
            @if !u["robot"].as_bool().unwrap_or(false) {
                form.bar method="post" action="/ui/admin/user" {
                    (viewer.csrf_field())
                    input type="hidden" name="name" value=(name);
                    input type="hidden" name="do" value="password";
                    div { label for="reset-password" { "New password" } input #reset-password type="password" name="password" autocomplete="new-password" required; }
                    button type="submit" { "Reset password" }
                }
            }
            h2 { "Grants to " (name) }
            (grant_table(&viewer, &list(&own), &here))
            form.bar method="post" action="/ui/admin/user" {
                (viewer.csrf_field())
                input type="hidden" name="name" value=(name);
                input type="hidden" name="do" value="grant";
                div { label for="grant-pattern" { "Repository pattern" } input #grant-pattern type="text" name="pattern" required placeholder="team/*"; }
                (action_boxes("user-grant"))
                button #add-grant type="submit" { "Add grant" }
            }
            h2 { "Effective permissions" }
            @if perms_v["admin"].as_bool().unwrap_or(false) {
                p { "An admin: every action on every repository, the catalog and the admin API." }
            }
            p { "Groups: " @if perms_v["groups"].as_array().is_none_or(Vec::is_empty) { "none" } @else { (perms_v["groups"].as_array().map(|g| g.iter().map(|x| s(x).to_owned()).collect::<Vec<_>>().join(", ")).unwrap_or_default()) } }
            table #permissions {
                thead { tr { th scope="col" { "Pattern" } th scope="col" { "Actions" } th scope="col" { "Through" } } }
                tbody { @for g in perms_v["grants"].as_array().cloned().unwrap_or_default() {
                    tr { td { code { (s(&g["pattern"])) } } td { (joined(&g["actions"])) } td { (via(s(&g["subject"]))) } }
                } }
            }
            h2 { "Refresh tokens (logins)" }
            table #refresh-tokens {
                thead { tr { th scope="col" { "Client" } th scope="col" { "Created" } th scope="col" { "Last used" } th scope="col" { "Revoke" } } }
                tbody { @for t in list(&refresh) {
                    tr data-id=(s(&t["id"])) {
                        td { (s(&t["client_id"])) } td { (s(&t["created_at"])) } td { (s(&t["last_used_at"])) }
                        td { (revoke_button(&viewer, name, "refresh", s(&t["id"]), s(&t["client_id"]))) }
                    }
                } }
            }
            h2 { "Access tokens" }
            table #access-tokens {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Scopes" } th scope="col" { "Expires" } th scope="col" { "Last used" } th scope="col" { "Revoke" } } }
                tbody { @for t in list(&access) {
                    tr data-id=(s(&t["id"])) {
                        td { (s(&t["name"])) }
                        td { (t["scopes"].as_array().map(|sc| sc.iter().map(|x| format!("{}={}", s(&x["pattern"]), joined(&x["actions"]))).collect::<Vec<_>>().join("; ")).unwrap_or_default()) }
                        td { (t["expires_at"].as_str().unwrap_or("never")) }
                        td { (t["last_used_at"].as_str().unwrap_or("never")) " " (t["last_used_from"].as_str().unwrap_or_default()) }
                        td { (revoke_button(&viewer, name, "access", s(&t["id"]), s(&t["name"]))) }
                    }
                } }
            }
        },
    )
}

fn joined(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| s(x).to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn via(subject: &str) -> String {
    match subject {
        "*" => "every signed-in user (*)".into(),
        "anonymous" => "anonymous (everyone)".into(),
        other => other.to_owned(),
    }
}

fn revoke_button(viewer: &Viewer, user: &str, kind: &str, id: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action="/ui/admin/user" {
            (viewer.csrf_field())
            input type="hidden" name="name" value=(user);
            input type="hidden" name="do" value={"revoke-" (kind)};
            input type="hidden" name="id" value=(id);
            button.danger type="submit" { "Revoke" span.sr { " " (kind) " token " (label) } }
        }
    }
}

fn grant_table(viewer: &Viewer, grants: &[Value], back: &str) -> Markup {
    html! {
        @if grants.is_empty() { p { "No grants." } } @else {
            table.grants {
                thead { tr { th scope="col" { "Subject" } th scope="col" { "Pattern" } th scope="col" { "Actions" } th scope="col" { "Delete" } } }
                tbody { @for g in grants {
                    tr data-pattern=(s(&g["pattern"])) {
                        td { (via(s(&g["subject"]))) }
                        td { code { @if s(&g["type"]) == "registry" { "registry:" } (s(&g["pattern"])) } }
                        td { (joined(&g["actions"])) }
                        td { form.inline method="post" action="/ui/admin/grants" {
                            (viewer.csrf_field())
                            input type="hidden" name="do" value="delete";
                            input type="hidden" name="id" value=(g["id"].as_i64().unwrap_or_default());
                            input type="hidden" name="back" value=(back);
                            button.danger type="submit" { "Delete" span.sr { " grant " (s(&g["pattern"])) " of " (s(&g["subject"])) } }
                        } }
                    }
                } }
            }
        }
    }
}

async fn user_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(p): Form<Params>,
) -> Response {
    let viewer = match admin_viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(r) = viewer.check_form(&headers, &p) {
        return r;
    }
    let name = param(&p, "name");
    let n = seg(name);
    let back = format!("/ui/admin/user?name={}", q(name));
    let outcome = match param(&p, "do") {
        "flags" => {
            let body =
                json!({ "admin": p.contains_key("admin"), "disabled": p.contains_key("disabled") });
            call(
                &state,
                &viewer,
                Method::PATCH,
                &format!("/users/{n}"),
                Some(&body),
            )
            .await
            .map(|_| "Saved.".to_owned())
        }
        "password" => {
            let body = json!({ "password": param(&p, "password") });
            call(
                &state,
                &viewer,
                Method::PATCH,
                &format!("/users/{n}"),
                Some(&body),
            )
            .await
            .map(|_| "Password reset; the user's logins ended.".to_owned())
        }
        "grant" => {
            let body = json!({ "subject": name, "pattern": param(&p, "pattern").trim(), "actions": actions_of(&p) });
            call(&state, &viewer, Method::POST, "/grants", Some(&body))
                .await
                .map(|_| "Grant added.".to_owned())
        }
        "revoke-refresh" => call(
            &state,
            &viewer,
            Method::DELETE,
            &format!("/users/{n}/tokens/{}", seg(param(&p, "id"))),
            None,
        )
        .await
        .map(|_| "Refresh token revoked.".to_owned()),
        "revoke-access" => call(
            &state,
            &viewer,
            Method::DELETE,
            &format!("/users/{n}/access-tokens/{}", seg(param(&p, "id"))),
            None,
        )
        .await
        .map(|_| "Access token revoked.".to_owned()),
        _ => Err("unknown action".to_owned()),
    };
    after(&viewer, &back, outcome)
}

// ----- grants -----

async fn grants(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    let viewer = match admin_viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let all = match call(&state, &viewer, Method::GET, "/grants", None).await {
        Ok(v) => v.as_array().cloned().unwrap_or_default(),
        Err(e) => return viewer.error(StatusCode::BAD_GATEWAY, &e),
    };
    let repo = param(&p, "repo").trim().to_owned();
    // Effective permissions on one repository: every grant whose pattern
    // matches it, by subject (`${user}` matches for the user it names).
    let mut effective: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut matching = Vec::new();
    if !repo.is_empty() {
        for g in &all {
            if s(&g["type"]) != "repository" {
                continue;
            }
            let subject = s(&g["subject"]);
            let pattern = s(&g["pattern"]);
            let (applies, who) = if pattern.contains("${user}") {
                let owner = repo.split('/').next().unwrap_or_default();
                let concrete = pattern.replace("${user}", owner);
                let who = match subject {
                    "*" | "anonymous" => owner.to_owned(),
                    s if s == owner => s.to_owned(),
                    _ => String::new(),
                };
                (
                    !who.is_empty() && token::name::glob_matches(&concrete, &repo),
                    who,
                )
            } else {
                (
                    token::name::glob_matches(pattern, &repo),
                    subject.to_owned(),
                )
            };
            if applies {
                let set = effective.entry(via(&who)).or_default();
                for a in g["actions"].as_array().into_iter().flatten() {
                    set.insert(s(a).to_owned());
                }
                matching.push(g.clone());
            }
        }
    }
    viewer.page(
        "Grants",
        html! {
            h1 { "Grants" }
            (result_note(param(&p, "done"), param(&p, "err")))
            form.bar method="get" action="/ui/admin/grants" {
                div { label for="repo" { "Permissions on repository" } input #repo type="text" name="repo" value=(repo) placeholder="team/app"; }
                button type="submit" { "Show" }
            }
            @if !repo.is_empty() {
                h2 { "Effective permissions on " code { (repo) } }
                p.muted { "Admins hold every action everywhere. " code { "anonymous" } " grants also apply to every signed-in user, " code { "*" } " grants to every signed-in user; a user also holds its groups' grants." }
                @if effective.is_empty() { p #effective-none { "Nobody but admins holds anything on it." } } @else {
                    table #effective {
                        thead { tr { th scope="col" { "Who" } th scope="col" { "Actions" } } }
                        tbody { @for (who, acts) in &effective {
                            tr { td { (who) } td { (acts.iter().cloned().collect::<Vec<_>>().join(", ")) } }
                        } }
                    }
                }
                h3 { "Grants that match it" }
                (grant_table(&viewer, &matching, &format!("/ui/admin/grants?repo={}", q(&repo))))
            }
            h2 { "Add a grant" }
            form method="post" action="/ui/admin/grants" {
                (viewer.csrf_field())
                input type="hidden" name="do" value="add";
                div.field { label for="g-subject" { "Subject" } input #g-subject type="text" name="subject" required placeholder="alice, @group, anonymous or *"; }
                div.field { label for="g-pattern" { "Repository pattern" } input #g-pattern type="text" name="pattern" required placeholder="team/*"; }
                (action_boxes("g"))
                button #add-grant type="submit" { "Add grant" }
            }
            h2 { "All grants" }
            (grant_table(&viewer, &all, "/ui/admin/grants"))
        },
    )
}

async fn grants_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(p): Form<Params>,
) -> Response {
    let viewer = match admin_viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(r) = viewer.check_form(&headers, &p) {
        return r;
    }
    // Only our own pages are redirected back to.
    let back = Some(param(&p, "back"))
        .filter(|b| b.starts_with("/ui/admin/"))
        .unwrap_or("/ui/admin/grants")
        .to_owned();
    let outcome = match param(&p, "do") {
        "add" => {
            let body = json!({ "subject": param(&p, "subject").trim(), "pattern": param(&p, "pattern").trim(), "actions": actions_of(&p) });
            call(&state, &viewer, Method::POST, "/grants", Some(&body))
                .await
                .map(|_| "Grant added.".to_owned())
        }
        "delete" => call(
            &state,
            &viewer,
            Method::DELETE,
            &format!("/grants/{}", seg(param(&p, "id"))),
            None,
        )
        .await
        .map(|_| "Grant deleted.".to_owned()),
        _ => Err("unknown action".to_owned()),
    };
    after(&viewer, &back, outcome)
}

// ----- htpasswd import -----

fn import_markup(viewer: &Viewer, report: Option<&Result<Value, String>>) -> Markup {
    html! {
        h1 { "Import an htpasswd file" }
        @if let Some(r) = report {
            @match r {
                Ok(v) => section #import-report aria-labelledby="report-h" {
                    h2 #report-h { "Report" }
                    dl.facts {
                        dt { "Imported" } dd #imported { (v["imported"]) }
                        dt { "Updated" } dd { (v["updated"]) }
                        dt { "Unchanged" } dd { (v["unchanged"]) }
                        dt { "Rejected lines" } dd { (v["rejected"]) }
                    }
                    @if let Some(sk) = v["skipped"].as_array() && !sk.is_empty() {
                        h3 { "Skipped users" }
                        ul { @for x in sk { li { (s(&x["name"])) ": " (s(&x["reason"])) } } }
                    }
                    @if let Some(errs) = v["errors"].as_array() && !errs.is_empty() {
                        h3 { "Lines with errors" }
                        ul { @for e in errs { li { (e.as_str().map_or_else(|| e.to_string(), str::to_owned)) } } }
                    }
                },
                Err(e) => p.error #import-error role="alert" { (e) },
            }
        }
        p { "Paste the file (bcrypt, apr1, {SHA}, crypt). Each user's hash becomes argon2id at their first login. A bad line stops the whole import unless you skip invalid lines." }
        form method="post" action="/ui/admin/import" {
            (viewer.csrf_field())
            div.field { label for="htpasswd" { "htpasswd file" } textarea #htpasswd name="htpasswd" required spellcheck="false" {} }
            div.field { input #skip type="checkbox" name="skip_invalid" value="1"; label.inline for="skip" { " Skip invalid lines" } }
            div.field { input #overwrite type="checkbox" name="overwrite" value="1"; label.inline for="overwrite" { " Overwrite existing users' passwords (never admins')" } }
            button #import type="submit" { "Import" }
        }
    }
}

async fn import_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match admin_viewer(&state, &headers).await {
        Ok(v) => v.page("Import", import_markup(&v, None)),
        Err(r) => r,
    }
}

async fn import(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(p): Form<Params>,
) -> Response {
    let viewer = match admin_viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(r) = viewer.check_form(&headers, &p) {
        return r;
    }
    let body = json!({
        "htpasswd": param(&p, "htpasswd"),
        "skip_invalid": p.contains_key("skip_invalid"),
        "overwrite": p.contains_key("overwrite"),
    });
    let report = call(&state, &viewer, Method::POST, "/htpasswd", Some(&body)).await;
    let status = if report.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    viewer.page_with(status, "Import", import_markup(&viewer, Some(&report)))
}

// ----- audit -----

async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    let viewer = match admin_viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let query = {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("limit", "100");
        for k in ["user", "action", "before"] {
            let v = param(&p, k).trim();
            if !v.is_empty() {
                query.append_pair(k, v);
            }
        }
        query.finish()
    };
    let entries = match call(
        &state,
        &viewer,
        Method::GET,
        &format!("/audit?{query}"),
        None,
    )
    .await
    {
        Ok(v) => v.as_array().cloned().unwrap_or_default(),
        Err(e) => return viewer.error(StatusCode::BAD_GATEWAY, &e),
    };
    let next = (entries.len() == 100)
        .then(|| entries.last().and_then(|e| e["id"].as_i64()))
        .flatten()
        .map(|id| {
            format!(
                "/ui/admin/audit?user={}&action={}&before={id}",
                q(param(&p, "user")),
                q(param(&p, "action"))
            )
        });
    viewer.page(
        "Audit",
        html! {
            h1 { "Audit trail" }
            form.bar method="get" action="/ui/admin/audit" {
                div { label for="a-user" { "User" } input #a-user type="text" name="user" value=(param(&p, "user")); }
                div { label for="a-action" { "Action" } input #a-action type="text" name="action" value=(param(&p, "action")) placeholder="login, user.create, …"; }
                button type="submit" { "Filter" }
            }
            table #audit {
                thead { tr { th scope="col" { "When" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Detail" } } }
                tbody { @for e in &entries {
                    tr { td.time { (s(&e["at"])) } td { (s(&e["actor"])) } td { (s(&e["action"])) } td { (s(&e["target"])) } td.mono { (s(&e["detail"])) } }
                } }
            }
            (super::pager(None, next.as_deref()))
        },
    )
}
