//! The clerk's application form: every field of `Application`, the Screen preview and the
//! submission.
//!
//! Inputs are named by the API's own field paths without the `application.` prefix
//! (`members[0].id_number`, `emergency.kind`), so a field violation the server names in its
//! `BadRequest` details lands next to the input it is about with no mapping table. Amounts
//! are typed in yuan and sent in fen. The form is re-rendered by the server for every
//! action (screen, add or remove a member, a refused submission), always with the values
//! entered, so nothing a clerk typed is lost and no script is needed.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use axum::response::Html;
use onecity_domain::DistrictCode;
use onecity_proto::v1 as pb;
use tonic_types::StatusExt as _;

use super::labels::{self, Choices};
use super::page::{csrf_field, esc, layout, Lang};

/// Most members an application may have (the API's bound).
const MAX_MEMBERS: usize = 20;

/// What kind of input a field is, and so how its text becomes the message's value.
#[derive(Clone, Copy)]
enum Kind {
    Text {
        max: usize,
    },
    LongText,
    /// `YYYY-MM-DD`, sent as typed (the server checks it).
    Date,
    /// A whole number (count, grade), sent as typed when it is one.
    Number,
    /// Yuan as typed, sent in fen.
    Yuan,
    Check,
    Select(Choices),
    District,
}

/// One input of the form: its path under `application.` and its labels.
#[derive(Clone, Copy)]
struct Field {
    key: &'static str,
    kind: Kind,
    en: &'static str,
    zh: &'static str,
}

const fn field(key: &'static str, kind: Kind, en: &'static str, zh: &'static str) -> Field {
    Field { key, kind, en, zh }
}

/// The household's fields, in the order a clerk asks for them.
const HOUSEHOLD: &[Field] = &[
    field("district_code", Kind::District, "District", "所属区"),
    field(
        "application_date",
        Kind::Date,
        "Date of application (YYYY-MM-DD)",
        "申请日期（年-月-日）",
    ),
    field(
        "contact_phone",
        Kind::Text { max: 32 },
        "Contact phone",
        "联系电话",
    ),
    field(
        "housing",
        Kind::Select(labels::HOUSING),
        "Housing",
        "住房情况",
    ),
    field("homes_owned", Kind::Number, "Homes owned", "自有住房套数"),
    field(
        "vehicles_owned",
        Kind::Number,
        "Motor vehicles owned",
        "机动车数量",
    ),
    field(
        "financial_assets_fen",
        Kind::Yuan,
        "Financial assets (yuan)",
        "金融资产（元）",
    ),
    field(
        "medical_expense_12m_fen",
        Kind::Yuan,
        "Medical expenses, last 12 months (yuan)",
        "近12个月自付医疗费用（元）",
    ),
    field(
        "other_rigid_expense_12m_fen",
        Kind::Yuan,
        "Other rigid expenditure, last 12 months (yuan)",
        "近12个月其他刚性支出（元）",
    ),
    field(
        "emergency.kind",
        Kind::Select(labels::EMERGENCY),
        "Sudden emergency",
        "突发急难",
    ),
    field(
        "emergency.description",
        Kind::LongText,
        "What happened",
        "急难情况说明",
    ),
    field(
        "disaster_affected",
        Kind::Check,
        "Affected by a natural disaster",
        "受自然灾害影响",
    ),
    field(
        "consent_to_share",
        Kind::Check,
        "Consents to sharing the case with charity organisations",
        "同意向慈善组织共享案件信息",
    ),
];

/// Each member's fields.
const MEMBER: &[Field] = &[
    field("name", Kind::Text { max: 64 }, "Name", "姓名"),
    field(
        "id_number",
        Kind::Text { max: 18 },
        "Identity number",
        "公民身份号码",
    ),
    field(
        "birth_date",
        Kind::Date,
        "Birth date (YYYY-MM-DD)",
        "出生日期（年-月-日）",
    ),
    field(
        "relationship",
        Kind::Select(labels::RELATIONSHIP),
        "Relationship to the applicant",
        "与申请人关系",
    ),
    field(
        "employment",
        Kind::Select(labels::EMPLOYMENT),
        "Employment",
        "就业状况",
    ),
    field(
        "education",
        Kind::Select(labels::EDUCATION),
        "Education",
        "在学阶段",
    ),
    field(
        "monthly_income_fen",
        Kind::Yuan,
        "Own monthly income (yuan)",
        "本人月收入（元）",
    ),
    field(
        "supporter",
        Kind::Select(labels::SUPPORTER),
        "Legal supporter outside the household",
        "户外法定义务人",
    ),
    field(
        "disability.kind",
        Kind::Select(labels::DISABILITY),
        "Certified disability",
        "持证残疾类别",
    ),
    field(
        "disability.grade",
        Kind::Number,
        "Disability grade (1 most severe to 4)",
        "残疾等级（1–4级）",
    ),
    field(
        "seriously_ill",
        Kind::Check,
        "Seriously ill",
        "患重特大疾病",
    ),
];

impl Field {
    fn label(&self, lang: Lang) -> &'static str {
        lang.pick(self.en, self.zh)
    }
}

/// The input name of member `i`'s `key`.
fn member_key(i: usize, key: &str) -> String {
    format!("members[{i}].{key}")
}

/// An element id for an input name (`members[0].id_number` → `members-0-id_number`):
/// brackets and dots would need escaping in every selector.
pub fn input_id(name: &str) -> String {
    name.replace("].", "-")
        .replace(['[', '.'], "-")
        .replace(']', "")
}

/// What the form holds: the request id of this application, the text of every input and
/// how many member rows there are.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The idempotency key of the submission, chosen when the form is first shown and
    /// carried in the form, so a resubmission (a double click, a retry after a timeout)
    /// returns the case the first one opened.
    pub request_id: String,
    values: HashMap<String, String>,
    members: usize,
}

/// What the form says is wrong: by input name, and what belongs to no one input.
#[derive(Debug, Default)]
pub struct Problems {
    pub(super) fields: BTreeMap<String, String>,
    pub(super) general: Vec<String>,
}

impl Problems {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.general.is_empty()
    }

    /// A problem with no one input.
    pub fn general(message: impl Into<String>) -> Problems {
        Problems {
            fields: BTreeMap::new(),
            general: vec![message.into()],
        }
    }
}

impl Draft {
    /// An empty form with one member row and a new request id.
    pub fn new() -> Draft {
        Draft {
            request_id: uuid::Uuid::now_v7().to_string(),
            values: HashMap::new(),
            members: 1,
        }
    }

    /// The form as posted (a missing request id gets a new one).
    pub fn from_form(form: &HashMap<String, String>) -> Draft {
        let members = form
            .get("members")
            .and_then(|m| m.parse().ok())
            .unwrap_or(1usize)
            .clamp(1, MAX_MEMBERS);
        let mut values = HashMap::new();
        for f in HOUSEHOLD {
            if let Some(v) = form.get(f.key) {
                values.insert(f.key.to_owned(), v.clone());
            }
        }
        for i in 0..members {
            for f in MEMBER {
                let key = member_key(i, f.key);
                if let Some(v) = form.get(&key) {
                    values.insert(key, v.clone());
                }
            }
        }
        let request_id = form
            .get("request_id")
            .filter(|r| !r.is_empty() && r.len() <= 128)
            .cloned()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        Draft {
            request_id,
            values,
            members,
        }
    }

    /// One more (empty) member row, up to the API's bound.
    pub fn add_member(&mut self) {
        self.members = (self.members + 1).min(MAX_MEMBERS);
    }

    /// Removes member row `i` (never the last one left); the rows after it move up.
    pub fn remove_member(&mut self, i: usize) {
        if self.members <= 1 || i >= self.members {
            return;
        }
        for j in i..self.members {
            for f in MEMBER {
                match self.values.remove(&member_key(j + 1, f.key)) {
                    Some(v) => self.values.insert(member_key(j, f.key), v),
                    None => self.values.remove(&member_key(j, f.key)),
                };
            }
        }
        self.members -= 1;
    }

    #[cfg(test)]
    fn set(&mut self, name: &str, value: &str) {
        self.values.insert(name.to_owned(), value.to_owned());
    }

    fn text(&self, name: &str) -> &str {
        self.values.get(name).map_or("", |v| v.trim())
    }

    /// The application the form describes, or what the console can already tell is not a
    /// value at all (a figure that is no number); everything else is the server's to judge.
    pub fn application(&self, lang: Lang) -> Result<pb::Application, Problems> {
        let mut problems = Problems::default();
        let mut number = |name: &str, kind: Kind| -> i64 {
            let text = self.text(name);
            let parsed = match kind {
                Kind::Yuan => labels::parse_yuan(text),
                _ if text.is_empty() => Some(0),
                _ => text.parse::<i32>().ok().map(i64::from),
            };
            parsed.unwrap_or_else(|| {
                let hint = match kind {
                    Kind::Yuan => lang.pick(
                        "not an amount in yuan (e.g. 1200.50)",
                        "不是以元为单位的金额（如 1200.50）",
                    ),
                    _ => lang.pick("not a whole number", "不是整数"),
                };
                problems.fields.insert(name.to_owned(), hint.to_owned());
                0
            })
        };
        let choice = |name: &str, choices: Choices| choices.parse(self.text(name)).unwrap_or(0);
        let check = |name: &str| !self.text(name).is_empty();
        let count = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);

        let members = (0..self.members)
            .map(|i| {
                let k = |key: &str| member_key(i, key);
                let disability_kind = choice(&k("disability.kind"), labels::DISABILITY);
                let grade = number(&k("disability.grade"), Kind::Number);
                pb::Person {
                    id_number: self.text(&k("id_number")).to_uppercase(),
                    name: self.text(&k("name")).to_owned(),
                    birth_date: self.text(&k("birth_date")).to_owned(),
                    relationship: choice(&k("relationship"), labels::RELATIONSHIP),
                    disability: (disability_kind != 0 || grade != 0).then(|| pb::Disability {
                        kind: disability_kind,
                        grade: count(grade),
                    }),
                    seriously_ill: check(&k("seriously_ill")),
                    employment: choice(&k("employment"), labels::EMPLOYMENT),
                    education: choice(&k("education"), labels::EDUCATION),
                    monthly_income_fen: number(&k("monthly_income_fen"), Kind::Yuan),
                    supporter: choice(&k("supporter"), labels::SUPPORTER),
                    age_years: 0,
                }
            })
            .collect();
        let emergency_kind = choice("emergency.kind", labels::EMERGENCY);
        let description = self.text("emergency.description").to_owned();
        let application = pb::Application {
            district_code: self.text("district_code").to_owned(),
            members,
            financial_assets_fen: number("financial_assets_fen", Kind::Yuan),
            homes_owned: count(number("homes_owned", Kind::Number)),
            vehicles_owned: count(number("vehicles_owned", Kind::Number)),
            housing: choice("housing", labels::HOUSING),
            medical_expense_12m_fen: number("medical_expense_12m_fen", Kind::Yuan),
            other_rigid_expense_12m_fen: number("other_rigid_expense_12m_fen", Kind::Yuan),
            emergency: (emergency_kind != 0 || !description.is_empty()).then_some(pb::Emergency {
                kind: emergency_kind,
                description,
            }),
            disaster_affected: check("disaster_affected"),
            consent_to_share: check("consent_to_share"),
            application_date: self.text("application_date").to_owned(),
            contact_phone: self.text("contact_phone").to_owned(),
        };
        if problems.is_empty() {
            Ok(application)
        } else {
            Err(problems)
        }
    }

    /// Whether `name` is an input of this form.
    fn has_input(&self, name: &str) -> bool {
        if HOUSEHOLD.iter().any(|f| f.key == name) {
            return true;
        }
        (0..self.members).any(|i| MEMBER.iter().any(|f| member_key(i, f.key) == name))
    }

    /// The server's refusal as problems of the form: each field violation of its
    /// `BadRequest` details next to its input when the form has one, the rest (and a
    /// refusal without details) above the form.
    pub fn problems(&self, status: &tonic::Status) -> Problems {
        let mut problems = Problems::default();
        if let Some(bad) = status.get_details_bad_request() {
            for v in bad.field_violations {
                let path = v.field.strip_prefix("application.").unwrap_or(&v.field);
                // A message-valued field (`disability`) is shown at its first input.
                let name = [path.to_owned(), format!("{path}.kind")]
                    .into_iter()
                    .find(|n| self.has_input(n) || n == "members");
                match name {
                    Some(name) => {
                        problems.fields.insert(name, v.description);
                    }
                    None => problems
                        .general
                        .push(format!("{}: {}", v.field, v.description)),
                }
            }
        }
        if problems.is_empty() {
            problems.general.push(status.message().to_owned());
        }
        problems
    }
}

impl Default for Draft {
    fn default() -> Self {
        Draft::new()
    }
}

/// Everything the form page shows besides the form itself.
#[derive(Debug, Default)]
pub struct Shown<'a> {
    /// What is wrong with the entries.
    pub problems: Problems,
    /// The Screen preview's twelve assessments.
    pub screened: Option<&'a [pb::Assessment]>,
}

/// The form page.
pub fn page(draft: &Draft, shown: &Shown<'_>, csrf: &str, lang: Lang) -> Html<String> {
    let problems = &shown.problems;
    let mut body = String::new();
    let title = lang.pick("Application", "救助申请");
    if !problems.is_empty() {
        let _ = write!(
            body,
            "<div class=\"error\" role=\"alert\" id=\"problems\"><p>{}</p><ul>",
            lang.pick(
                "The application was not accepted. Correct what is marked; everything entered is kept.",
                "申请未被受理。请更正标出的项目；已填写的内容均已保留。",
            )
        );
        for message in &problems.general {
            let _ = write!(body, "<li>{}</li>", esc(message));
        }
        for (name, message) in &problems.fields {
            let _ = write!(
                body,
                "<li><a href=\"#{}\">{}</a>: {}</li>",
                esc(&input_id(name)),
                esc(&field_label(name, lang)),
                esc(message)
            );
        }
        body.push_str("</ul></div>");
    }
    // The first error gets the focus, so a keyboard user lands on what to fix.
    let mut focus = problems.fields.keys().next().cloned();

    let _ = write!(
        body,
        "<form method=\"post\" action=\"/apply\" novalidate>{}\
         <input type=\"hidden\" name=\"request_id\" value=\"{}\">\
         <input type=\"hidden\" name=\"members\" value=\"{}\">\
         <button type=\"submit\" name=\"action\" value=\"screen\" class=\"sr-only\" tabindex=\"-1\" aria-hidden=\"true\">{}</button>",
        csrf_field(csrf),
        esc(&draft.request_id),
        draft.members,
        lang.pick("Screen", "预审"),
    );
    let _ = write!(
        body,
        "<fieldset><legend>{}</legend>",
        lang.pick("Household", "家庭情况")
    );
    for f in HOUSEHOLD {
        input(&mut body, draft, problems, &mut focus, f, f.key, lang);
    }
    body.push_str("</fieldset>");

    let _ = write!(
        body,
        "<h2 id=\"members-heading\">{}</h2>",
        lang.pick("Household members", "家庭成员")
    );
    if let Some(message) = problems.fields.get("members") {
        let _ = write!(
            body,
            "<p class=\"error\" id=\"members-error\">{}</p>",
            esc(message)
        );
    }
    for i in 0..draft.members {
        let _ = write!(
            body,
            "<fieldset id=\"member-{i}\"><legend>{} {}</legend>",
            lang.pick("Member", "成员"),
            i + 1
        );
        for f in MEMBER {
            input(
                &mut body,
                draft,
                problems,
                &mut focus,
                f,
                &member_key(i, f.key),
                lang,
            );
        }
        if draft.members > 1 {
            let _ = write!(
                body,
                "<p><button type=\"submit\" name=\"action\" value=\"remove:{i}\">{} {}</button></p>",
                lang.pick("Remove member", "删除成员"),
                i + 1
            );
        }
        body.push_str("</fieldset>");
    }
    if draft.members < MAX_MEMBERS {
        let _ = write!(
            body,
            "<p><button type=\"submit\" name=\"action\" value=\"add_member\" id=\"add-member\">{}</button></p>",
            lang.pick("Add member", "添加成员")
        );
    }
    let _ = write!(
        body,
        "<p class=\"actions\"><button type=\"submit\" name=\"action\" value=\"screen\" id=\"screen\">{}</button> \
         <button type=\"submit\" name=\"action\" value=\"submit\" id=\"submit\">{}</button></p></form>",
        lang.pick("Screen (saves nothing)", "预审（不保存）"),
        lang.pick("Submit application", "提交申请"),
    );
    if let Some(assessments) = shown.screened {
        screened(&mut body, assessments, lang);
    }
    layout(lang, title, &body)
}

/// The label of an input name, with the member's number for a member's input.
fn field_label(name: &str, lang: Lang) -> String {
    if name == "members" {
        return lang.pick("Household members", "家庭成员").to_owned();
    }
    if let Some(f) = HOUSEHOLD.iter().find(|f| f.key == name) {
        return f.label(lang).to_owned();
    }
    let member = name
        .strip_prefix("members[")
        .and_then(|rest| rest.split_once("]."));
    if let Some((i, key)) = member {
        if let (Ok(i), Some(f)) = (i.parse::<usize>(), MEMBER.iter().find(|f| f.key == key)) {
            return format!(
                "{} {}: {}",
                lang.pick("Member", "成员"),
                i + 1,
                f.label(lang)
            );
        }
    }
    name.to_owned()
}

fn input(
    body: &mut String,
    draft: &Draft,
    problems: &Problems,
    focus: &mut Option<String>,
    f: &Field,
    name: &str,
    lang: Lang,
) {
    let id = input_id(name);
    let value = draft.values.get(name).map(String::as_str).unwrap_or("");
    let error = problems.fields.get(name);
    let mut attributes = String::new();
    if error.is_some() {
        let _ = write!(
            attributes,
            " aria-invalid=\"true\" aria-describedby=\"{id}-error\""
        );
    }
    if focus.as_deref() == Some(name) {
        attributes.push_str(" autofocus");
        *focus = None;
    }
    let label = esc(f.label(lang));
    let name_attr = esc(name);
    let control = match f.kind {
        Kind::Check => {
            let checked = if value.is_empty() { "" } else { " checked" };
            let _ = write!(
                body,
                "<div class=\"field check\"><input type=\"checkbox\" id=\"{id}\" name=\"{name_attr}\"{checked}{attributes}> <label for=\"{id}\">{label}</label>"
            );
            None
        }
        Kind::Text { max } => Some(format!(
            "<input id=\"{id}\" name=\"{name_attr}\" value=\"{}\" maxlength=\"{max}\" autocomplete=\"off\"{attributes}>",
            esc(value)
        )),
        Kind::Date => Some(format!(
            "<input id=\"{id}\" name=\"{name_attr}\" value=\"{}\" inputmode=\"numeric\" placeholder=\"YYYY-MM-DD\" size=\"10\" autocomplete=\"off\"{attributes}>",
            esc(value)
        )),
        Kind::Number => Some(format!(
            "<input id=\"{id}\" name=\"{name_attr}\" value=\"{}\" inputmode=\"numeric\" size=\"4\"{attributes}>",
            esc(value)
        )),
        Kind::Yuan => Some(format!(
            "<input id=\"{id}\" name=\"{name_attr}\" value=\"{}\" inputmode=\"decimal\" size=\"12\"{attributes}>",
            esc(value)
        )),
        Kind::LongText => Some(format!(
            "<textarea id=\"{id}\" name=\"{name_attr}\" rows=\"3\" cols=\"60\" maxlength=\"2000\"{attributes}>{}</textarea>",
            esc(value)
        )),
        Kind::Select(choices) => {
            let mut select = format!(
                "<select id=\"{id}\" name=\"{name_attr}\"{attributes}><option value=\"\">—</option>"
            );
            for c in choices.iter() {
                let selected = if c.name == value { " selected" } else { "" };
                let _ = write!(
                    select,
                    "<option value=\"{}\"{selected}>{}</option>",
                    c.name,
                    esc(c.label(lang))
                );
            }
            select.push_str("</select>");
            Some(select)
        }
        Kind::District => {
            let mut select = format!(
                "<select id=\"{id}\" name=\"{name_attr}\"{attributes}><option value=\"\">—</option>"
            );
            for d in DistrictCode::all() {
                let selected = if d.code() == value { " selected" } else { "" };
                let _ = write!(
                    select,
                    "<option value=\"{}\"{selected}>{} {}</option>",
                    d.code(),
                    d.code(),
                    esc(labels::district(d.code(), d.name(), lang))
                );
            }
            select.push_str("</select>");
            Some(select)
        }
    };
    if let Some(control) = control {
        let _ = write!(
            body,
            "<div class=\"field\"><label for=\"{id}\">{label}</label>{control}"
        );
    }
    if let Some(error) = error {
        let _ = write!(
            body,
            "<p class=\"error\" id=\"{id}-error\">{}</p>",
            esc(error)
        );
    }
    body.push_str("</div>");
}

/// The Screen preview: every programme's outcome, amount and summary, and the rules behind
/// it (open a row's details to read them).
fn screened(body: &mut String, assessments: &[pb::Assessment], lang: Lang) {
    let _ = write!(
        body,
        "<section id=\"screened\" aria-live=\"polite\"><h2>{}</h2><p>{}</p>\
         <table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        lang.pick("Screening preview", "预审结果"),
        lang.pick(
            "Nothing was saved. Submit the application to open a case.",
            "未保存任何内容。提交申请后才会立案。",
        ),
        lang.pick("Programme", "项目"),
        lang.pick("Outcome", "结果"),
        lang.pick("Amount (yuan)", "金额（元）"),
        lang.pick("Unit", "承办单位"),
        lang.pick("Why", "依据"),
    );
    for a in assessments {
        let mut why = esc(&a.summary);
        if !a.rules.is_empty() {
            let _ = write!(
                why,
                "<details><summary>{}</summary><ul>",
                lang.pick("Rules", "规则")
            );
            for r in &a.rules {
                let _ = write!(
                    why,
                    "<li>{} <code>{}</code>: {}</li>",
                    if r.held { "✓" } else { "✗" },
                    esc(&r.rule),
                    esc(&r.explanation)
                );
            }
            why.push_str("</ul></details>");
        }
        let _ = write!(
            body,
            "<tr class=\"outcome-{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{why}</td></tr>",
            pb::Outcome::try_from(a.outcome)
                .map_or("unknown", |o| o.as_str_name())
                .to_ascii_lowercase(),
            labels::programme(a.programme, lang),
            labels::outcome(a.outcome, lang),
            if a.amount_fen == 0 {
                String::new()
            } else {
                labels::yuan(a.amount_fen)
            },
            esc(&a.department_unit),
        );
    }
    body.push_str("</tbody></table></section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_ids_need_no_escaping() {
        assert_eq!(input_id("members[0].id_number"), "members-0-id_number");
        assert_eq!(
            input_id("members[12].disability.kind"),
            "members-12-disability-kind"
        );
        assert_eq!(input_id("emergency.kind"), "emergency-kind");
        assert_eq!(input_id("district_code"), "district_code");
    }

    #[test]
    fn the_form_reads_back_what_it_shows() {
        let mut draft = Draft::new();
        draft.add_member();
        draft.set("district_code", "120103");
        draft.set("financial_assets_fen", "8,000");
        draft.set("housing", "HOUSING_RENTING");
        draft.set("consent_to_share", "on");
        draft.set("members[0].name", "A");
        draft.set("members[1].name", "B");
        draft.set("members[1].relationship", "RELATIONSHIP_SPOUSE");
        draft.set("members[1].monthly_income_fen", "2000.5");
        let app = draft.application(Lang::En).unwrap();
        assert_eq!(app.financial_assets_fen, 800_000);
        assert_eq!(app.housing, pb::Housing::Renting as i32);
        assert!(app.consent_to_share && !app.disaster_affected);
        assert_eq!(app.members.len(), 2);
        assert_eq!(app.members[1].relationship, pb::Relationship::Spouse as i32);
        assert_eq!(app.members[1].monthly_income_fen, 200_050);
        assert!(app.emergency.is_none() && app.members[0].disability.is_none());

        let mut form: HashMap<String, String> = draft.values.clone();
        form.insert("members".into(), "2".into());
        form.insert("request_id".into(), draft.request_id.clone());
        let again = Draft::from_form(&form);
        assert_eq!(again.application(Lang::En).unwrap(), app);
        assert_eq!(again.request_id, draft.request_id);

        let mut removed = again.clone();
        removed.remove_member(0);
        assert_eq!(removed.members, 1);
        assert_eq!(removed.text("members[0].name"), "B");
        assert_eq!(removed.text("members[1].name"), "");
    }

    #[test]
    fn a_figure_that_is_no_number_is_marked_at_its_field() {
        let mut draft = Draft::new();
        draft.set("members[0].monthly_income_fen", "two thousand");
        draft.set("homes_owned", "1.5");
        let problems = draft.application(Lang::En).unwrap_err();
        assert!(problems
            .fields
            .contains_key("members[0].monthly_income_fen"));
        assert!(problems.fields.contains_key("homes_owned"));
        let Html(page) = page(
            &draft,
            &Shown {
                problems,
                screened: None,
            },
            "t",
            Lang::En,
        );
        assert!(
            page.contains("id=\"members-0-monthly_income_fen-error\""),
            "{page}"
        );
        assert!(
            page.contains("value=\"two thousand\""),
            "the entry is kept: {page}"
        );
    }

    #[test]
    fn the_servers_field_paths_land_next_to_their_inputs() {
        let mut draft = Draft::new();
        draft.add_member();
        let status = |field: &str| {
            tonic::Status::with_error_details(
                tonic::Code::InvalidArgument,
                "invalid",
                tonic_types::ErrorDetails::with_bad_request_violation(field, "is wrong"),
            )
        };
        let p = draft.problems(&status("application.members[1].id_number"));
        assert_eq!(p.fields.get("members[1].id_number").unwrap(), "is wrong");
        let p = draft.problems(&status("application.members[0].disability"));
        assert!(p.fields.contains_key("members[0].disability.kind"));
        let p = draft.problems(&status("application.members"));
        assert!(p.fields.contains_key("members"));
        let p = draft.problems(&status("request_id"));
        assert_eq!(p.general, ["request_id: is wrong"]);
        let p = draft.problems(&tonic::Status::invalid_argument("no details"));
        assert_eq!(p.general, ["no details"]);
    }
}
