//! A department's referral page: the referral, what the unit may see of its case (the
//! API's minimised view), and the acknowledge and decide forms.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::response::Html;
use onecity_proto::v1 as pb;
use tonic_types::StatusExt as _;

use super::apply::Problems;
use super::labels::{self, yuan};
use super::page::{csrf_field, esc, layout, Lang};

/// The decide form as entered (kept when the server refuses it) and the request ids of the
/// page's forms, chosen when the page is shown so a resubmission is answered, not repeated.
#[derive(Debug, Clone)]
pub struct Forms {
    /// Request id of the acknowledge form.
    pub acknowledge_request: String,
    /// Request id of the decide form.
    pub decide_request: String,
    /// Request id of the transfer form.
    pub transfer_request: String,
    /// Request id of the request-information form.
    pub information_request: String,
    /// `DECISION_APPROVED` / `DECISION_DENIED`, or empty.
    pub decision: String,
    /// The amount in yuan as typed.
    pub amount: String,
    /// The note.
    pub note: String,
    /// The transfer's receiving unit.
    pub to_unit: String,
    /// Why it is transferred.
    pub reason: String,
    /// What information is needed.
    pub what: String,
}

impl Forms {
    /// Fresh forms for `referral`; the amount starts at the assessed amount.
    pub fn new(referral: &pb::Referral) -> Forms {
        Forms {
            acknowledge_request: uuid::Uuid::now_v7().to_string(),
            decide_request: uuid::Uuid::now_v7().to_string(),
            transfer_request: uuid::Uuid::now_v7().to_string(),
            information_request: uuid::Uuid::now_v7().to_string(),
            decision: String::new(),
            amount: labels::yuan_input(referral.assessed_amount_fen),
            note: String::new(),
            to_unit: String::new(),
            reason: String::new(),
            what: String::new(),
        }
    }

    /// The forms after `action` (`decide`, `transfer`, `request-information`) was posted:
    /// that form as entered, with its request id; the others fresh.
    pub fn posted(form: &HashMap<String, String>, referral: &pb::Referral, action: &str) -> Forms {
        let mut forms = Forms::new(referral);
        let get = |k: &str| form.get(k).cloned().unwrap_or_default();
        let posted_id = form.get("request_id").filter(|r| !r.is_empty()).cloned();
        match action {
            "decide" => {
                forms.decide_request = posted_id.unwrap_or(forms.decide_request);
                forms.decision = get("decision");
                forms.amount = get("amount_fen");
                forms.note = get("note");
            }
            "transfer" => {
                forms.transfer_request = posted_id.unwrap_or(forms.transfer_request);
                forms.to_unit = get("to_unit");
                forms.reason = get("reason");
            }
            "request-information" => {
                forms.information_request = posted_id.unwrap_or(forms.information_request);
                forms.what = get("what");
            }
            _ => {}
        }
        forms
    }
}

/// The inputs of the page's forms, named by their request fields.
const INPUTS: [&str; 6] = [
    "decision",
    "amount_fen",
    "note",
    "to_unit",
    "reason",
    "what",
];

/// The problems of a refused action: field violations next to the forms' inputs, the rest
/// above the forms.
pub fn problems(status: &tonic::Status) -> Problems {
    let mut problems = Problems::default();
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            if INPUTS.contains(&v.field.as_str()) {
                problems.fields.insert(v.field, v.description);
            } else {
                problems
                    .general
                    .push(format!("{}: {}", v.field, v.description));
            }
        }
    }
    if problems.is_empty() {
        problems.general.push(status.message().to_owned());
    }
    problems
}

/// The address of a referral's page, with its case as a hint (see `find_referral`).
pub fn href(referral_id: &str, case_id: &str) -> String {
    format!("/referrals/{}?case={}", esc(referral_id), esc(case_id))
}

/// The referral page.
pub fn page(
    referral: &pb::Referral,
    case: Option<&pb::Case>,
    forms: &Forms,
    problems: &Problems,
    csrf: &str,
    lang: Lang,
) -> Html<String> {
    let mut body = String::new();
    if !problems.general.is_empty() || !problems.fields.is_empty() {
        let _ = write!(
            body,
            "<div class=\"error\" role=\"alert\" id=\"problems\"><p>{}</p><ul>",
            lang.pick("The action was refused.", "操作未被接受。")
        );
        for m in &problems.general {
            let _ = write!(body, "<li>{}</li>", esc(m));
        }
        for (field, m) in &problems.fields {
            let _ = write!(
                body,
                "<li><a href=\"#{}\">{}</a>: {}</li>",
                esc(field),
                esc(field),
                esc(m)
            );
        }
        body.push_str("</ul></div>");
    }
    details(&mut body, referral, lang);
    actions(&mut body, referral, forms, problems, csrf, lang);
    later_actions(&mut body, referral, forms, problems, csrf, lang);
    let Some(case) = case else {
        let _ = write!(
            body,
            "<p>{}</p>",
            lang.pick(
                "The case itself is not available to you.",
                "您无权查看该案件本身。"
            )
        );
        return layout(lang, lang.pick("Referral", "转介"), &body);
    };
    if let Some(a) = case
        .assessments
        .iter()
        .find(|a| a.programme == referral.programme)
    {
        assessment(&mut body, a, lang);
    }
    if let Some(app) = &case.application {
        household(&mut body, app, lang);
    }
    layout(lang, lang.pick("Referral", "转介"), &body)
}

fn details(body: &mut String, r: &pb::Referral, lang: Lang) {
    let mut due = esc(&r.due_at);
    if r.overdue {
        let _ = write!(due, " <strong>{}</strong>", lang.t("overdue"));
    }
    if !r.escalated_at.is_empty() {
        let _ = write!(
            due,
            " <strong>{}</strong> {}",
            lang.t("escalated"),
            esc(&r.escalated_at)
        );
    }
    let row = |body: &mut String, label: &str, value: &str| {
        if !value.is_empty() {
            let _ = write!(body, "<dt>{label}</dt><dd>{value}</dd>");
        }
    };
    body.push_str("<dl id=\"referral\">");
    row(
        body,
        lang.pick("Referral", "转介编号"),
        &esc(&r.referral_id),
    );
    row(
        body,
        lang.pick("Case", "案件"),
        &format!(
            "<a href=\"/cases/{}\">{}</a>",
            esc(&r.case_id),
            esc(&r.case_id)
        ),
    );
    row(
        body,
        lang.pick("Programme", "项目"),
        labels::programme(r.programme, lang),
    );
    row(
        body,
        lang.pick("Unit", "承办单位"),
        &esc(&r.department_unit),
    );
    row(
        body,
        lang.pick("State", "状态"),
        &format!(
            "<span id=\"referral-state\" data-state=\"{}\">{}</span>",
            pb::ReferralState::try_from(r.state).map_or("", |s| s.as_str_name()),
            labels::referral_state(r.state, lang)
        ),
    );
    row(body, lang.pick("Issued", "转介时间"), &esc(&r.issued_at));
    row(body, lang.pick("Due", "办理时限"), &due);
    row(
        body,
        lang.pick("Assessment", "评估结果"),
        labels::outcome(r.outcome, lang),
    );
    row(
        body,
        lang.pick("Assessed amount (yuan)", "评估金额（元）"),
        &yuan(r.assessed_amount_fen),
    );
    let decided = matches!(
        pb::ReferralState::try_from(r.state),
        Ok(pb::ReferralState::Approved | pb::ReferralState::Denied)
    );
    if decided {
        row(
            body,
            lang.pick("Decided amount (yuan)", "核定金额（元）"),
            &yuan(r.decided_amount_fen),
        );
    }
    row(body, lang.pick("Note", "备注"), &esc(&r.note));
    row(
        body,
        lang.pick("Cancelled because", "取消原因"),
        &esc(&r.cancel_reason),
    );
    row(
        body,
        lang.pick("Information asked for", "要求补充材料"),
        &esc(&r.information_requested),
    );
    row(
        body,
        lang.pick("Asked at", "要求时间"),
        &esc(&r.information_requested_at),
    );
    row(
        body,
        lang.pick("Information provided", "已补充材料"),
        &esc(&r.information_provided),
    );
    row(
        body,
        lang.pick("Provided at", "补充时间"),
        &esc(&r.information_provided_at),
    );
    row(body, lang.pick("Summary", "摘要"), &esc(&r.summary));
    row(
        body,
        lang.pick("Policy version", "政策版本"),
        &esc(&r.policy_version),
    );
    body.push_str("</dl>");
}

fn actions(
    body: &mut String,
    r: &pb::Referral,
    forms: &Forms,
    problems: &Problems,
    csrf: &str,
    lang: Lang,
) {
    let state = pb::ReferralState::try_from(r.state).unwrap_or_default();
    let case = format!(
        "<input type=\"hidden\" name=\"case\" value=\"{}\">",
        esc(&r.case_id)
    );
    if state == pb::ReferralState::Issued {
        let _ = write!(
            body,
            "<h2>{}</h2><form method=\"post\" action=\"/referrals/{}/acknowledge\">{}{case}\
             <input type=\"hidden\" name=\"request_id\" value=\"{}\">\
             <p><button type=\"submit\" id=\"acknowledge\">{}</button></p></form>",
            lang.pick("Acknowledge", "签收"),
            esc(&r.referral_id),
            csrf_field(csrf),
            esc(&forms.acknowledge_request),
            lang.pick("Acknowledge receipt", "确认签收"),
        );
    }
    if !matches!(
        state,
        pb::ReferralState::Issued | pb::ReferralState::Acknowledged
    ) {
        return;
    }
    let error = |field: &str| field_error(problems, field);
    let mut options = String::from("<option value=\"\">—</option>");
    for c in labels::DECISION.iter() {
        let selected = if c.name == forms.decision {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            options,
            "<option value=\"{}\"{selected}>{}</option>",
            c.name,
            c.label(lang)
        );
    }
    let (decision_attr, decision_error) = error("decision");
    let (amount_attr, amount_error) = error("amount_fen");
    let (note_attr, note_error) = error("note");
    let _ = write!(
        body,
        "<h2>{}</h2><form method=\"post\" action=\"/referrals/{}/decide\" novalidate>{}{case}\
         <input type=\"hidden\" name=\"request_id\" value=\"{}\">\
         <div class=\"field\"><label for=\"decision\">{}</label><select id=\"decision\" name=\"decision\"{decision_attr}>{options}</select>{decision_error}</div>\
         <div class=\"field\"><label for=\"amount_fen\">{}</label><input id=\"amount_fen\" name=\"amount_fen\" inputmode=\"decimal\" size=\"12\" value=\"{}\"{amount_attr}>{amount_error}</div>\
         <div class=\"field\"><label for=\"note\">{}</label><textarea id=\"note\" name=\"note\" rows=\"3\" cols=\"60\" maxlength=\"2000\"{note_attr}>{}</textarea>{note_error}</div>\
         <p><button type=\"submit\" id=\"decide\">{}</button></p></form>",
        lang.pick("Decide", "作出决定"),
        esc(&r.referral_id),
        csrf_field(csrf),
        esc(&forms.decide_request),
        lang.pick("Decision", "决定"),
        lang.pick("Amount (yuan; 0 when denied)", "金额（元；不予批准填 0）"),
        esc(&forms.amount),
        lang.pick("Note", "说明"),
        esc(&forms.note),
        lang.pick("Record decision", "记录决定"),
    );
}

/// The attributes of an input and the message after it, when the server named it.
pub(super) fn field_error(problems: &Problems, field: &str) -> (String, String) {
    match problems.fields.get(field) {
        Some(m) => (
            format!(" aria-invalid=\"true\" aria-describedby=\"{field}-error\" autofocus"),
            format!("<p class=\"error\" id=\"{field}-error\">{}</p>", esc(m)),
        ),
        None => (String::new(), String::new()),
    }
}

/// The later transitions of a referral (issue 15): transfer to another unit (while open)
/// and request information from the household (while ISSUED or ACKNOWLEDGED). Who may do
/// which (a department its own referral to its department elsewhere, a supervisor within
/// its district) is the API's to say; a refusal is shown on this page.
fn later_actions(
    body: &mut String,
    r: &pb::Referral,
    forms: &Forms,
    problems: &Problems,
    csrf: &str,
    lang: Lang,
) {
    let state = pb::ReferralState::try_from(r.state).unwrap_or_default();
    let open = matches!(
        state,
        pb::ReferralState::Issued | pb::ReferralState::Acknowledged
    );
    let case = format!(
        "<input type=\"hidden\" name=\"case\" value=\"{}\">",
        esc(&r.case_id)
    );
    if open || state == pb::ReferralState::NeedsInfo {
        let (unit_attr, unit_error) = field_error(problems, "to_unit");
        let (reason_attr, reason_error) = field_error(problems, "reason");
        let _ = write!(
            body,
            "<h2>{}</h2><form method=\"post\" action=\"/referrals/{}/transfer\" novalidate>{}{case}\
             <input type=\"hidden\" name=\"request_id\" value=\"{}\">\
             <div class=\"field\"><label for=\"to_unit\">{}</label><input id=\"to_unit\" name=\"to_unit\" size=\"32\" placeholder=\"civil-affairs@120101\" value=\"{}\"{unit_attr}>{unit_error}</div>\
             <div class=\"field\"><label for=\"reason\">{}</label><textarea id=\"reason\" name=\"reason\" rows=\"2\" cols=\"60\" maxlength=\"2000\"{reason_attr}>{}</textarea>{reason_error}</div>\
             <p><button type=\"submit\" id=\"transfer\">{}</button></p></form>",
            lang.pick("Transfer", "移交"),
            esc(&r.referral_id),
            csrf_field(csrf),
            esc(&forms.transfer_request),
            lang.pick("To unit (department@district)", "移交至单位（部门@区划代码）"),
            esc(&forms.to_unit),
            lang.pick("Why", "移交原因"),
            esc(&forms.reason),
            lang.pick("Transfer referral", "移交转介"),
        );
    }
    if open {
        let (what_attr, what_error) = field_error(problems, "what");
        let _ = write!(
            body,
            "<h2>{}</h2><form method=\"post\" action=\"/referrals/{}/request-information\" novalidate>{}{case}\
             <input type=\"hidden\" name=\"request_id\" value=\"{}\">\
             <div class=\"field\"><label for=\"what\">{}</label><textarea id=\"what\" name=\"what\" rows=\"2\" cols=\"60\" maxlength=\"2000\"{what_attr}>{}</textarea>{what_error}</div>\
             <p><button type=\"submit\" id=\"request-information\">{}</button></p></form>",
            lang.pick("Request information", "补充材料"),
            esc(&r.referral_id),
            csrf_field(csrf),
            esc(&forms.information_request),
            lang.pick("What the household must provide (the deadline pauses until then)", "需家庭补充的材料（期间暂停计时）"),
            esc(&forms.what),
            lang.pick("Request information", "要求补充材料"),
        );
    }
}

fn assessment(body: &mut String, a: &pb::Assessment, lang: Lang) {
    let _ = write!(
        body,
        "<h2>{}</h2><p>{}</p>",
        lang.pick("Assessment", "评估"),
        esc(&a.summary)
    );
    if !a.rules.is_empty() {
        body.push_str("<ul>");
        for r in &a.rules {
            let _ = write!(
                body,
                "<li>{} <code>{}</code>: {}</li>",
                if r.held { "✓" } else { "✗" },
                esc(&r.rule),
                esc(&r.explanation)
            );
        }
        body.push_str("</ul>");
    }
}

/// The household as the unit may see it. The API leaves a fact the unit's programmes do
/// not read at its default, so a dash stands for "not shared, or none".
fn household(body: &mut String, app: &pb::Application, lang: Lang) {
    let dash = |fen: i64| {
        if fen == 0 {
            "—".to_owned()
        } else {
            yuan(fen)
        }
    };
    let _ = write!(
        body,
        "<h2>{}</h2><p>{}</p><table id=\"members\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        lang.pick("Household", "家庭情况"),
        lang.pick(
            "What your unit's programmes may read; a dash is not shared, or none.",
            "仅显示本单位项目所需信息；“—”表示未共享或无。",
        ),
        lang.pick("Name", "姓名"),
        lang.pick("Identity number", "身份号码"),
        lang.pick("Age", "年龄"),
        lang.pick("Relationship", "关系"),
        lang.pick("Employment", "就业"),
        lang.pick("Education", "在学"),
        lang.pick("Monthly income (yuan)", "月收入（元）"),
        lang.pick("Supporter", "法定义务人"),
        lang.pick("Disability", "残疾"),
    );
    for m in &app.members {
        let disability = m.disability.as_ref().map_or_else(
            || "—".to_owned(),
            |d| format!("{} {}", labels::DISABILITY.label_of(d.kind, lang), d.grade),
        );
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.name),
            esc(&m.id_number),
            m.age_years,
            labels::RELATIONSHIP.label_of(m.relationship, lang),
            labels::EMPLOYMENT.label_of(m.employment, lang),
            labels::EDUCATION.label_of(m.education, lang),
            dash(m.monthly_income_fen),
            labels::SUPPORTER.label_of(m.supporter, lang),
            esc(&disability),
        );
    }
    body.push_str("</tbody></table><dl>");
    let facts = [
        (lang.pick("District", "所属区"), esc(&app.district_code)),
        (
            lang.pick("Date of application", "申请日期"),
            esc(&app.application_date),
        ),
        (
            lang.pick("Contact phone", "联系电话"),
            esc(&app.contact_phone),
        ),
        (
            lang.pick("Housing", "住房"),
            labels::HOUSING.label_of(app.housing, lang).to_owned(),
        ),
        (
            lang.pick("Financial assets (yuan)", "金融资产（元）"),
            dash(app.financial_assets_fen),
        ),
        (
            lang.pick(
                "Medical expenses, 12 months (yuan)",
                "近12个月医疗费用（元）",
            ),
            dash(app.medical_expense_12m_fen),
        ),
        (
            lang.pick(
                "Other rigid expenditure, 12 months (yuan)",
                "近12个月其他刚性支出（元）",
            ),
            dash(app.other_rigid_expense_12m_fen),
        ),
        (
            lang.pick("Emergency", "急难"),
            app.emergency.as_ref().map_or_else(
                || "—".to_owned(),
                |e| {
                    format!(
                        "{} {}",
                        labels::EMERGENCY.label_of(e.kind, lang),
                        esc(&e.description)
                    )
                },
            ),
        ),
    ];
    for (label, value) in facts {
        let _ = write!(body, "<dt>{label}</dt><dd>{value}</dd>");
    }
    body.push_str("</dl>");
}
