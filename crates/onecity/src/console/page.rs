//! The console's HTML: plain server-rendered pages, escaped by hand, no CDN; the case page
//! loads the one script, `/console.js`, for its live timeline.

use std::fmt::Write as _;
use std::str::FromStr;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use onecity_proto::v1 as pb;

use super::labels;

/// Label language of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Chinese.
    Zh,
}

impl FromStr for Lang {
    type Err = ();
    fn from_str(s: &str) -> Result<Lang, ()> {
        match s {
            "en" => Ok(Lang::En),
            "zh" => Ok(Lang::Zh),
            _ => Err(()),
        }
    }
}

impl Lang {
    /// The English or the Chinese text, by the session's language.
    pub fn pick(self, en: &'static str, zh: &'static str) -> &'static str {
        match self {
            Lang::En => en,
            Lang::Zh => zh,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    pub(super) fn t(self, key: &'static str) -> &'static str {
        let (en, zh) = match key {
            "title" => ("onecity console", "一城通 控制台"),
            "token" => ("Access token", "访问令牌"),
            "sign_in" => ("Sign in", "登录"),
            "sign_out" => ("Sign out", "退出"),
            "language" => ("Language", "语言"),
            "switch" => ("Switch", "切换"),
            "inbox" => ("Department inbox", "部门收件箱"),
            "case" => ("Case", "案件"),
            "find_case" => ("Open a case by id", "按编号打开案件"),
            "case_id" => ("Case id", "案件编号"),
            "open" => ("Open", "打开"),
            "referral" => ("Referral", "转介"),
            "programme" => ("Programme", "项目"),
            "state" => ("State", "状态"),
            "due" => ("Due", "截止"),
            "overdue" => ("overdue", "已逾期"),
            "escalated" => ("escalated", "已督办"),
            "unit" => ("Unit", "单位"),
            "status" => ("Status", "状态"),
            "version" => ("Version", "版本"),
            "submitted" => ("Submitted", "提交时间"),
            "timeline" => ("Timeline", "时间线"),
            "event" => ("Event", "事件"),
            "empty" => ("Nothing here.", "暂无内容。"),
            "forbidden" => ("You may not see this page.", "您无权查看此页面。"),
            "not_found" => ("Not found.", "未找到。"),
            "unauthenticated" => (
                "The token was not accepted: sign out and sign in again.",
                "令牌无效：请退出后重新登录。",
            ),
            "failed" => ("The server could not answer.", "服务器无法应答。"),
            "bad_input" => ("The request was refused", "请求被拒绝"),
            _ => (key, key),
        };
        match self {
            Lang::En => en,
            Lang::Zh => zh,
        }
    }
}

/// Escapes text for HTML content and quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:70em}\
a:focus,button:focus,input:focus,select:focus,textarea:focus,summary:focus{outline:3px solid #1a5fb4;outline-offset:2px}\
table{border-collapse:collapse}td,th{border:1px solid #999;padding:.3em .6em;text-align:left;vertical-align:top}\
.error{color:#a51d2d}label{display:block;margin-top:.6em}tr.overdue{background:#fbe3e4}\
.check label{display:inline}fieldset{margin:1em 0;border:1px solid #999}\
[aria-invalid=true]{border:2px solid #a51d2d}.sr-only{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}\
nav ul{list-style:none;padding:0;display:flex;gap:1.5em}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1.5em}dt{font-weight:bold}dd{margin:0}";

pub(super) fn layout(lang: Lang, title: &str, body: &str) -> Html<String> {
    page_with(lang, title, body, "")
}

/// The page frame; `head` is extra markup for the head (the case page's script).
fn page_with(lang: Lang, title: &str, body: &str, head: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <title>{} · {}</title><style>{STYLE}</style>{head}</head><body>\
         <header><a href=\"/\">{}</a></header><main><h1>{}</h1>{body}</main></body></html>",
        lang.code(),
        esc(title),
        lang.t("title"),
        lang.t("title"),
        esc(title),
    ))
}

/// The sign-in page.
pub fn sign_in(lang: Lang) -> Html<String> {
    let body = format!(
        "<form method=\"post\" action=\"/signin\">\
         <label for=\"token\">{}</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required autofocus>\
         <label for=\"lang\">{}</label>\
         <select id=\"lang\" name=\"lang\"><option value=\"en\">English</option>\
         <option value=\"zh\">中文</option></select>\
         <p><button type=\"submit\">{}</button></p></form>",
        lang.t("token"),
        lang.t("language"),
        lang.t("sign_in"),
    );
    layout(lang, lang.t("sign_in"), &body)
}

pub(super) fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// The signed-in home page: where to go, language, sign-out.
pub fn home(csrf: &str, lang: Lang) -> Html<String> {
    let other = match lang {
        Lang::En => ("zh", "中文"),
        Lang::Zh => ("en", "English"),
    };
    let body = format!(
        "<nav><ul><li><a href=\"/apply\">{apply}</a></li><li><a href=\"/inbox\">{inbox}</a></li>\
         <li><a href=\"/find\">{find_cases}</a></li><li><a href=\"/supervision\">{supervision}</a></li></ul></nav>\
         <h2>{find}</h2><form method=\"get\" action=\"/case\">\
         <label for=\"id\">{case_id}</label><input id=\"id\" name=\"id\" required>\
         <button type=\"submit\">{open}</button></form>\
         <form method=\"post\" action=\"/lang\">{csrf}\
         <input type=\"hidden\" name=\"lang\" value=\"{code}\">\
         <button type=\"submit\">{switch}: {name}</button></form>\
         <form method=\"post\" action=\"/signout\">{csrf}\
         <p><button type=\"submit\">{sign_out}</button></p></form>",
        apply = lang.pick("New application (clerks)", "新申请（窗口）"),
        inbox = lang.t("inbox"),
        find_cases = lang.pick("Find cases by identity number (clerks)", "按身份号码查找案件（窗口）"),
        supervision = lang.pick("Supervision (supervisors, admins)", "督办与运维"),
        find = lang.t("find_case"),
        case_id = lang.t("case_id"),
        open = lang.t("open"),
        csrf = csrf_field(csrf),
        code = other.0,
        name = other.1,
        switch = lang.t("language"),
        sign_out = lang.t("sign_out"),
    );
    layout(lang, lang.t("title"), &body)
}

fn state_name(state: i32) -> &'static str {
    pb::ReferralState::try_from(state)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN")
}

/// A department's inbox; an overdue row is highlighted and says so in words (colour alone
/// is not enough); each row links to the referral's page, where the unit acts on it.
pub fn inbox(referrals: &[pb::Referral], next: Option<&str>, lang: Lang) -> Html<String> {
    let mut body = String::new();
    if referrals.is_empty() {
        let _ = write!(body, "<p>{}</p>", lang.t("empty"));
    } else {
        let _ = write!(
            body,
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
            lang.t("referral"),
            lang.t("case"),
            lang.t("programme"),
            lang.t("state"),
            lang.t("due"),
        );
        for r in referrals {
            let mut due = esc(&r.due_at);
            if r.overdue {
                let _ = write!(due, " <strong>{}</strong>", lang.t("overdue"));
            }
            if !r.escalated_at.is_empty() {
                let _ = write!(due, " <strong>{}</strong>", lang.t("escalated"));
            }
            let _ = write!(
                body,
                "<tr{}><td><a href=\"{}\">{}</a></td><td><a href=\"/cases/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if r.overdue { " class=\"overdue\"" } else { "" },
                super::referral::href(&r.referral_id, &r.case_id),
                esc(&r.referral_id),
                esc(&r.case_id),
                esc(&r.case_id),
                labels::programme(r.programme, lang),
                labels::referral_state(r.state, lang),
                due,
            );
        }
        body.push_str("</tbody></table>");
    }
    if let Some(next) = next {
        let token: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let _ = write!(
            body,
            "<p><a href=\"/inbox?page={}\" id=\"next-page\">{}</a></p>",
            esc(&token),
            lang.pick("Next page", "下一页")
        );
    }
    layout(lang, lang.t("inbox"), &body)
}

/// The text of one timeline entry, the same in the page and in the live script's
/// additions (the console's event stream sends it).
pub fn timeline_text(e: &pb::CaseEvent) -> String {
    let kind = e.event_type.rsplit('.').next().unwrap_or(&e.event_type);
    if e.summary.is_empty() {
        format!("{kind} · {}", e.recorded_at)
    } else {
        format!("{kind} — {} · {}", e.summary, e.recorded_at)
    }
}

/// A case as the signed-in principal may see it. With the script the timeline follows the
/// case live; without it the page is the same, and a reload shows what changed.
pub fn case(
    case: &pb::Case,
    provide: &super::clerk::Provide,
    csrf: &str,
    lang: Lang,
) -> Html<String> {
    let mut body = format!(
        "<dl id=\"case-summary\"><dt>{}</dt><dd>{}</dd><dt>{}</dt><dd id=\"case-status\" data-status=\"{}\">{}</dd><dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd></dl>",
        lang.t("case_id"),
        esc(&case.case_id),
        lang.t("status"),
        pb::CaseStatus::try_from(case.status).map_or("", |s| s.as_str_name()),
        labels::case_status(case.status, lang),
        lang.t("version"),
        case.version,
        lang.t("submitted"),
        esc(&case.submitted_at),
    );
    let _ = write!(
        body,
        "<section id=\"referrals\" aria-live=\"polite\"><h2>{}</h2>",
        lang.pick("Referrals", "转介")
    );
    if case.referrals.is_empty() {
        let _ = write!(body, "<p>{}</p>", lang.t("empty"));
    } else {
        let _ = write!(
            body,
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
            lang.t("programme"),
            lang.t("unit"),
            lang.t("state"),
            lang.t("due"),
            lang.pick("Decided amount (yuan)", "核定金额（元）"),
        );
        for r in &case.referrals {
            let decided = matches!(
                pb::ReferralState::try_from(r.state),
                Ok(pb::ReferralState::Approved | pb::ReferralState::Denied)
            );
            let _ = write!(
                body,
                "<tr data-referral=\"{}\" data-state=\"{}\"><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.referral_id),
                state_name(r.state),
                super::referral::href(&r.referral_id, &r.case_id),
                labels::programme(r.programme, lang),
                esc(&r.department_unit),
                labels::referral_state(r.state, lang),
                esc(&r.due_at),
                if decided { labels::yuan(r.decided_amount_fen) } else { String::new() },
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section>");
    if !case.duplicate_override_reason.is_empty() {
        let _ = write!(
            body,
            "<p id=\"duplicate-override\"><strong>{}</strong> {}</p>",
            lang.pick(
                "Opened although a member already had an open case, because:",
                "成员已有在办案件，仍予立案，理由：",
            ),
            esc(&case.duplicate_override_reason),
        );
    }
    super::clerk::needs_info(&mut body, case, provide, csrf, lang);
    let shown = case.events.iter().map(|e| e.version).max().unwrap_or(0);
    let _ = write!(
        body,
        "<h2>{}</h2><ol id=\"timeline\" data-case=\"{}\" data-version=\"{shown}\" aria-live=\"polite\">",
        lang.t("timeline"),
        esc(&case.case_id),
    );
    for e in &case.events {
        let _ = write!(
            body,
            "<li value=\"{}\">{}</li>",
            e.version,
            esc(&timeline_text(e))
        );
    }
    body.push_str("</ol>");
    page_with(
        lang,
        lang.t("case"),
        &body,
        "<script src=\"/console.js\" defer></script>",
    )
}

/// An error page that says nothing about what was asked for.
pub fn error(lang: Lang, code: StatusCode) -> Response {
    let key = match code {
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        _ => "failed",
    };
    let title = code.canonical_reason().unwrap_or("error");
    let body = format!("<p class=\"error\">{}</p>", lang.t(key));
    (code, layout(lang, title, &body)).into_response()
}

/// The page for a refused call: the gRPC code picks the HTTP status; only an invalid
/// argument shows the server's message (it names the caller's own field).
pub fn status(lang: Lang, status: &tonic::Status) -> Response {
    match status.code() {
        tonic::Code::PermissionDenied => error(lang, StatusCode::FORBIDDEN),
        tonic::Code::NotFound => error(lang, StatusCode::NOT_FOUND),
        tonic::Code::Unauthenticated => error(lang, StatusCode::UNAUTHORIZED),
        tonic::Code::InvalidArgument => {
            let body = format!(
                "<p class=\"error\">{}: {}</p>",
                lang.t("bad_input"),
                esc(status.message())
            );
            (
                StatusCode::BAD_REQUEST,
                layout(lang, lang.t("bad_input"), &body),
            )
                .into_response()
        }
        _ => error(lang, StatusCode::BAD_GATEWAY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overdue_row_is_marked_in_words_and_colour() {
        let on_time = pb::Referral {
            referral_id: "on-time".into(),
            due_at: "2027-01-04T00:00:00.000Z".into(),
            ..Default::default()
        };
        let late = pb::Referral {
            referral_id: "late".into(),
            overdue: true,
            escalated_at: "2027-01-09T00:00:00.000Z".into(),
            ..Default::default()
        };
        let Html(en) = inbox(std::slice::from_ref(&on_time), None, Lang::En);
        assert!(!en.contains("class=\"overdue\""), "{en}");
        assert!(!en.contains("<strong>overdue</strong>"), "{en}");
        let Html(en) = inbox(&[on_time.clone(), late.clone()], Some("7"), Lang::En);
        assert_eq!(en.matches("<tr class=\"overdue\">").count(), 1, "{en}");
        assert!(en.contains("<strong>overdue</strong> <strong>escalated</strong>"));
        assert!(en.contains("href=\"/inbox?page=7\""), "{en}");
        let Html(zh) = inbox(&[late], None, Lang::Zh);
        assert!(zh.contains("<strong>已逾期</strong>"), "{zh}");
    }
}
