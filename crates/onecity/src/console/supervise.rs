//! The supervision page: overdue and escalated referrals, quarantined events, the routing
//! lag. Each section is one API call made with the signed-in principal's token, and shows
//! what the API answers: a section the API refuses says so and the others still show. The
//! console decides nothing about who may see what, so a principal the API lets read a
//! section (an admin today; a district supervisor once the API admits one) sees it with no
//! change here.

use std::fmt::Write as _;

use axum::response::Html;
use onecity_proto::v1 as pb;

use super::labels;
use super::page::{esc, layout, Lang};
use super::referral;

/// One section's answer.
#[derive(Debug)]
pub enum Section<T> {
    /// What the API answered.
    Shown(T),
    /// The API refused this principal (`PERMISSION_DENIED`).
    NotPermitted,
    /// The call failed otherwise.
    Failed,
}

impl<T> Section<T> {
    /// The section for a call's result.
    pub fn of(result: Result<T, tonic::Status>) -> Section<T> {
        match result {
            Ok(t) => Section::Shown(t),
            Err(s) if s.code() == tonic::Code::PermissionDenied => Section::NotPermitted,
            Err(_) => Section::Failed,
        }
    }

    /// Whether the API refused the principal.
    pub fn refused(&self) -> bool {
        matches!(self, Section::NotPermitted)
    }
}

/// The page's three sections.
#[derive(Debug)]
pub struct Sections {
    /// Overdue referrals not yet final (escalated ones say so).
    pub overdue: Section<Vec<pb::Referral>>,
    /// Events the workers quarantined.
    pub quarantined: Section<Vec<pb::QuarantinedEvent>>,
    /// Each routing worker checkpoint's lag.
    pub lag: Section<Vec<pb::ConsumerLag>>,
}

fn section<T>(
    body: &mut String,
    id: &str,
    title: &str,
    answer: &Section<Vec<T>>,
    lang: Lang,
    table: impl FnOnce(&mut String, &[T]),
) {
    let _ = write!(body, "<section id=\"{id}\"><h2>{title}</h2>");
    match answer {
        Section::Shown(rows) if rows.is_empty() => {
            let _ = write!(body, "<p>{}</p>", lang.t("empty"));
        }
        Section::Shown(rows) => table(body, rows),
        Section::NotPermitted => {
            let _ = write!(
                body,
                "<p>{}</p>",
                lang.pick("Not available to you.", "您无权查看此项。")
            );
        }
        Section::Failed => {
            let _ = write!(body, "<p class=\"error\">{}</p>", lang.t("failed"));
        }
    }
    body.push_str("</section>");
}

fn head(body: &mut String, labels: &[&str]) {
    body.push_str("<table><thead><tr>");
    for l in labels {
        let _ = write!(body, "<th>{l}</th>");
    }
    body.push_str("</tr></thead><tbody>");
}

/// The page.
pub fn page(sections: &Sections, lang: Lang) -> Html<String> {
    let mut body = String::new();
    section(
        &mut body,
        "overdue",
        lang.pick("Overdue and escalated referrals", "逾期及督办转介"),
        &sections.overdue,
        lang,
        |body, rows| {
            head(
                body,
                &[
                    lang.pick("Referral", "转介"),
                    lang.pick("Programme", "项目"),
                    lang.pick("Unit", "承办单位"),
                    lang.pick("State", "状态"),
                    lang.pick("Due", "办理时限"),
                    lang.pick("Escalated", "督办时间"),
                ],
            );
            for r in rows {
                let escalated = if r.escalated_at.is_empty() {
                    String::new()
                } else {
                    format!(
                        "<strong>{}</strong> {}",
                        lang.t("escalated"),
                        esc(&r.escalated_at)
                    )
                };
                let _ = write!(
                    body,
                    "<tr class=\"overdue\"><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{} <strong>{}</strong></td><td>{escalated}</td></tr>",
                    referral::href(&r.referral_id, &r.case_id),
                    esc(&r.referral_id),
                    labels::programme(r.programme, lang),
                    esc(&r.department_unit),
                    labels::referral_state(r.state, lang),
                    esc(&r.due_at),
                    lang.t("overdue"),
                );
            }
            body.push_str("</tbody></table>");
        },
    );
    section(
        &mut body,
        "quarantined",
        lang.pick("Quarantined events", "隔离事件"),
        &sections.quarantined,
        lang,
        |body, rows| {
            head(
                body,
                &[
                    lang.pick("Position", "位置"),
                    lang.pick("Worker", "处理器"),
                    lang.pick("Event", "事件"),
                    lang.pick("Case", "案件"),
                    lang.pick("Why", "原因"),
                    lang.pick("When", "时间"),
                ],
            );
            for q in rows {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/cases/{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
                    q.position,
                    esc(&q.consumer),
                    esc(&q.event_type),
                    esc(&q.case_id),
                    esc(&q.case_id),
                    esc(&q.reason),
                    esc(&q.quarantined_at),
                );
            }
            body.push_str("</tbody></table>");
        },
    );
    section(
        &mut body,
        "lag",
        lang.pick("Routing lag", "路由积压"),
        &sections.lag,
        lang,
        |body, rows| {
            head(
                body,
                &[
                    lang.pick("Worker", "处理器"),
                    lang.pick("Checkpoint", "检查点"),
                    lang.pick("Log head", "日志头"),
                    lang.pick("Events behind", "积压事件数"),
                    lang.pick("Lease holder", "租约持有者"),
                ],
            );
            for c in rows {
                let _ = write!(
                    body,
                    "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    if c.lag > 0 { " class=\"overdue\"" } else { "" },
                    esc(&c.consumer),
                    c.checkpoint,
                    c.head,
                    c.lag,
                    esc(&c.holder),
                );
            }
            body.push_str("</tbody></table>");
        },
    );
    layout(lang, lang.pick("Supervision", "督办与运维"), &body)
}
