//! The clerk's pages beyond the application form: finding a person's cases by identity
//! number, and answering a department's request for information on the case page.

use std::fmt::Write as _;

use axum::response::Html;
use onecity_proto::v1 as pb;

use super::apply::Problems;
use super::labels;
use super::page::{csrf_field, esc, layout, Lang};
use super::referral::field_error;

/// The find form (`POST /find`: the identity number travels in the body, never in an
/// address, which browsers keep in their history and servers in their access logs) and its
/// results, or the problems of a refused search with the number kept in its input.
pub fn find_page(
    id_number: &str,
    found: Option<&[pb::FoundCase]>,
    problems: &Problems,
    csrf: &str,
    lang: Lang,
) -> Html<String> {
    let mut body = String::new();
    for m in &problems.general {
        let _ = write!(
            body,
            "<p class=\"error\" role=\"alert\" id=\"problems\">{}</p>",
            esc(m)
        );
    }
    let (attr, error) = field_error(problems, "id_number");
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/find\" novalidate>{}\
         <div class=\"field\"><label for=\"id_number\">{}</label>\
         <input id=\"id_number\" name=\"id_number\" size=\"20\" maxlength=\"18\" autocomplete=\"off\" value=\"{}\"{attr}>{error}</div>\
         <p><button type=\"submit\" id=\"find\">{}</button></p></form>",
        csrf_field(csrf),
        lang.pick("Identity number (18 characters)", "身份号码（18位）"),
        esc(id_number),
        lang.pick("Find cases", "查找案件"),
    );
    if let Some(found) = found {
        results(&mut body, found, lang);
    }
    layout(
        lang,
        lang.pick("Find cases by identity number", "按身份号码查找案件"),
        &body,
    )
}

fn results(body: &mut String, found: &[pb::FoundCase], lang: Lang) {
    if found.is_empty() {
        let _ = write!(
            body,
            "<p id=\"found\">{}</p>",
            lang.pick("No case names this person.", "没有涉及此人的案件。")
        );
        return;
    }
    let _ = write!(
        body,
        "<table id=\"found\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        lang.t("case"),
        lang.t("status"),
        lang.pick("District", "区"),
        lang.pick("Submitted", "提交日期"),
        lang.pick("The person is", "此人为"),
        lang.pick("Household (identity numbers masked)", "家庭成员（身份号码已遮蔽）"),
    );
    for c in found {
        let mut members = String::new();
        for m in &c.members {
            let _ = write!(
                members,
                "{}{} ({}, {}, {})",
                if members.is_empty() { "" } else { "; " },
                esc(&m.name),
                labels::RELATIONSHIP.label_of(m.relationship, lang),
                esc(&m.id_number),
                m.age_years,
            );
        }
        // The server's id, and only a UUID, shapes the link.
        let link = uuid::Uuid::parse_str(&c.case_id).map_or_else(
            |_| esc(&c.case_id),
            |id| format!("<a href=\"/cases/{id}\">{id}</a>"),
        );
        let _ = write!(
            body,
            "<tr><td>{link}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{members}</td></tr>",
            labels::case_status(c.status, lang),
            esc(&c.district_code),
            esc(&c.submitted_date),
            labels::RELATIONSHIP.label_of(c.relationship, lang),
        );
    }
    body.push_str("</tbody></table>");
}

/// The case page's "provide information" forms: the one posted (kept as entered, with its
/// request id and problems) and fresh ones for the other NEEDS_INFO referrals.
#[derive(Debug, Default)]
pub struct Provide {
    /// The referral whose form was posted.
    pub referral_id: String,
    /// Its request id.
    pub request_id: String,
    /// Its note as entered.
    pub note: String,
    /// Why the server refused it.
    pub problems: Problems,
}

/// For every NEEDS_INFO referral of the case: what the department asked and when, and the
/// form recording what the household provided (`IntakeService.ProvideInformation`). The
/// section is outside the live-refreshed table, so an update never clears a note being
/// typed; a referral that comes to need information shows its form on the next load.
pub fn needs_info(body: &mut String, case: &pb::Case, posted: &Provide, csrf: &str, lang: Lang) {
    let waiting: Vec<&pb::Referral> = case
        .referrals
        .iter()
        .filter(|r| r.state == pb::ReferralState::NeedsInfo as i32)
        .collect();
    if waiting.is_empty() {
        return;
    }
    let _ = write!(
        body,
        "<section id=\"needs-info\"><h2>{}</h2>",
        lang.pick("Information requested", "需补充材料")
    );
    for r in waiting {
        let this = posted.referral_id == r.referral_id;
        let none = Problems::default();
        let problems = if this { &posted.problems } else { &none };
        let request_id = if this && !posted.request_id.is_empty() {
            posted.request_id.clone()
        } else {
            uuid::Uuid::now_v7().to_string()
        };
        let note = if this { posted.note.as_str() } else { "" };
        for m in &problems.general {
            let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", esc(m));
        }
        // One form per referral: its inputs carry the referral id, so labels stay unique.
        let input = format!("note-{}", esc(&r.referral_id));
        let (attr, error) = match problems.fields.get("note") {
            Some(m) => (
                format!(" aria-invalid=\"true\" aria-describedby=\"{input}-error\" autofocus"),
                format!("<p class=\"error\" id=\"{input}-error\">{}</p>", esc(m)),
            ),
            None => (String::new(), String::new()),
        };
        let _ = write!(
            body,
            "<h3>{} · {}</h3><dl class=\"asked\" data-referral=\"{}\"><dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd></dl>\
             <form method=\"post\" action=\"/cases/{}/provide-information\" novalidate>{}\
             <input type=\"hidden\" name=\"referral_id\" value=\"{}\">\
             <input type=\"hidden\" name=\"request_id\" value=\"{}\">\
             <div class=\"field\"><label for=\"{input}\">{}</label><textarea id=\"{input}\" name=\"note\" rows=\"2\" cols=\"60\" maxlength=\"2000\"{attr}>{}</textarea>{error}</div>\
             <p><button type=\"submit\" class=\"provide\">{}</button></p></form>",
            labels::programme(r.programme, lang),
            esc(&r.department_unit),
            esc(&r.referral_id),
            lang.pick("Asked for", "要求补充"),
            esc(&r.information_requested),
            lang.pick("Asked at (the deadline is paused)", "要求时间（办理时限暂停）"),
            esc(&r.information_requested_at),
            esc(&case.case_id),
            csrf_field(csrf),
            esc(&r.referral_id),
            esc(&request_id),
            lang.pick(
                "What the household provided (no identity numbers)",
                "家庭已提供的材料（勿填身份号码）"
            ),
            esc(note),
            lang.pick("Provide information", "登记已补充"),
        );
    }
    body.push_str("</section>");
}
