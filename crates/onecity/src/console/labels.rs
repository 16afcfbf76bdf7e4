//! The words a person reads for the API's enum values, in English and Chinese. The form's
//! `<select>`s send the proto value names (`RELATIONSHIP_SPOUSE`), so what is posted is the
//! API's own spelling and the labels are only for reading.

use onecity_proto::v1 as pb;

use super::page::Lang;

/// One value of a proto enum with its labels.
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    /// The proto value name, e.g. `HOUSING_RENTING`.
    pub name: &'static str,
    /// The proto number.
    pub value: i32,
    en: &'static str,
    zh: &'static str,
}

impl Choice {
    /// The label in `lang`.
    pub fn label(&self, lang: Lang) -> &'static str {
        lang.pick(self.en, self.zh)
    }
}

/// The values of one proto enum a person may choose (not the unspecified one).
#[derive(Debug, Clone, Copy)]
pub struct Choices {
    name_of: fn(i32) -> &'static str,
    items: &'static [(i32, &'static str, &'static str)],
}

impl Choices {
    /// The choices in order.
    pub fn iter(&self) -> impl Iterator<Item = Choice> + '_ {
        self.items.iter().map(|&(value, en, zh)| Choice {
            name: (self.name_of)(value),
            value,
            en,
            zh,
        })
    }

    /// The number of the value named `name`, if it is one of the choices.
    pub fn parse(&self, name: &str) -> Option<i32> {
        self.iter().find(|c| c.name == name).map(|c| c.value)
    }

    /// The label of `value`, or a dash when it is none of the choices (unspecified, or
    /// not shared with the reader).
    pub fn label_of(&self, value: i32, lang: Lang) -> &'static str {
        self.iter()
            .find(|c| c.value == value)
            .map_or("—", |c| c.label(lang))
    }
}

macro_rules! choices {
    ($name:ident, $ty:ty, [$(($variant:ident, $en:literal, $zh:literal)),+ $(,)?]) => {
        #[doc = concat!("The choices of `", stringify!($ty), "`.")]
        pub const $name: Choices = Choices {
            name_of: |v| <$ty>::try_from(v).map_or("", |e| e.as_str_name()),
            items: &[$((<$ty>::$variant as i32, $en, $zh)),+],
        };
    };
}

choices!(
    RELATIONSHIP,
    pb::Relationship,
    [
        (Applicant, "Applicant", "申请人"),
        (Spouse, "Spouse", "配偶"),
        (Child, "Child", "子女"),
        (Parent, "Parent", "父母"),
        (Grandparent, "Grandparent", "祖父母"),
        (Grandchild, "Grandchild", "孙子女"),
        (Sibling, "Sibling", "兄弟姐妹"),
        (Other, "Other relative", "其他亲属"),
    ]
);

choices!(
    DISABILITY,
    pb::DisabilityKind,
    [
        (Physical, "Physical", "肢体残疾"),
        (Visual, "Visual", "视力残疾"),
        (Hearing, "Hearing", "听力残疾"),
        (Speech, "Speech", "言语残疾"),
        (Intellectual, "Intellectual", "智力残疾"),
        (Mental, "Mental", "精神残疾"),
        (Multiple, "Multiple", "多重残疾"),
    ]
);

choices!(
    EMPLOYMENT,
    pb::Employment,
    [
        (Employed, "Employed", "在业"),
        (Unemployed, "Unemployed, able to work", "失业（有劳动能力）"),
        (Retired, "Retired", "退休"),
        (Student, "Student", "在校学生"),
        (NotInLabourForce, "Not in the labour force", "非劳动力"),
    ]
);

choices!(
    EDUCATION,
    pb::EducationStage,
    [
        (None, "Not in education", "未在学"),
        (Preschool, "Kindergarten", "学前教育"),
        (Primary, "Primary school", "小学"),
        (JuniorSecondary, "Junior secondary", "初中"),
        (SeniorSecondary, "Senior secondary", "高中"),
        (Vocational, "Vocational school", "职业学校"),
        (University, "University", "大学"),
    ]
);

choices!(
    SUPPORTER,
    pb::Supporter,
    [
        (None, "No legal supporter", "无法定赡养/抚养/扶养人"),
        (
            Unable,
            "Supporter unable to support",
            "有法定义务人但无能力"
        ),
        (Able, "Supporter able to support", "有法定义务人且有能力"),
    ]
);

choices!(
    HOUSING,
    pb::Housing,
    [
        (
            OwnedAdequate,
            "Owns adequate housing",
            "自有住房（条件合格）"
        ),
        (Renting, "Renting", "租房"),
        (NoHome, "No home", "无房"),
        (Dilapidated, "Dilapidated home", "危房"),
    ]
);

choices!(
    EMERGENCY,
    pb::EmergencyKind,
    [
        (Accident, "Accident", "意外事故"),
        (Illness, "Sudden serious illness", "突发重病"),
        (Fire, "Fire", "火灾"),
        (Flood, "Flood", "水灾"),
        (Other, "Other emergency", "其他急难"),
    ]
);

choices!(
    DECISION,
    pb::Decision,
    [(Approved, "Approve", "批准"), (Denied, "Deny", "不予批准"),]
);

/// A programme's name.
pub fn programme(programme: i32, lang: Lang) -> &'static str {
    use pb::Programme as P;
    let (en, zh) = match P::try_from(programme).unwrap_or(P::Unspecified) {
        P::Dibao => ("Minimum living allowance (dibao)", "最低生活保障"),
        P::ExtremePoverty => ("Extreme-poverty support", "特困人员救助供养"),
        P::LowIncomeMarginal => ("Low-income marginal household", "低保边缘家庭认定"),
        P::RigidExpenditure => ("Rigid-expenditure hardship", "刚性支出困难家庭认定"),
        P::Medical => ("Medical assistance", "医疗救助"),
        P::Education => ("Education assistance", "教育救助"),
        P::Housing => ("Housing assistance", "住房救助"),
        P::Employment => ("Employment assistance", "就业救助"),
        P::Temporary => ("Temporary assistance", "临时救助"),
        P::DisasterRelief => ("Disaster relief", "受灾人员救助"),
        P::DisabilitySubsidy => ("Disability subsidies", "残疾人两项补贴"),
        P::Charity => ("Charity referral", "慈善帮扶"),
        P::Unspecified => ("Unknown programme", "未知项目"),
    };
    lang.pick(en, zh)
}

/// An assessment outcome's word.
pub fn outcome(outcome: i32, lang: Lang) -> &'static str {
    use pb::Outcome as O;
    let (en, zh) = match O::try_from(outcome).unwrap_or(O::Unspecified) {
        O::Eligible => ("Eligible", "符合条件"),
        O::NeedsReview => ("Needs review", "需人工审核"),
        O::Ineligible => ("Not eligible", "不符合条件"),
        O::Unspecified => ("Not assessed", "未评估"),
    };
    lang.pick(en, zh)
}

/// A referral state's word.
pub fn referral_state(state: i32, lang: Lang) -> &'static str {
    use pb::ReferralState as S;
    let (en, zh) = match S::try_from(state).unwrap_or(S::Unspecified) {
        S::Issued => ("Issued", "已转介"),
        S::Acknowledged => ("Acknowledged", "已签收"),
        S::Approved => ("Approved", "已批准"),
        S::Denied => ("Denied", "未批准"),
        S::Cancelled => ("Cancelled", "已取消"),
        S::Transferred => ("Transferred", "已移交"),
        S::NeedsInfo => ("Needs information", "待补充材料"),
        S::Unspecified => ("Unknown", "未知"),
    };
    lang.pick(en, zh)
}

/// A case status's word.
pub fn case_status(status: i32, lang: Lang) -> &'static str {
    use pb::CaseStatus as S;
    let (en, zh) = match S::try_from(status).unwrap_or(S::Unspecified) {
        S::Open => ("Open", "办理中"),
        S::Closed => ("Closed", "已办结"),
        S::Withdrawn => ("Withdrawn", "已撤回"),
        S::Unspecified => ("Unknown", "未知"),
    };
    lang.pick(en, zh)
}

/// A district's name (the 16 of `onecity_domain::DistrictCode`), Chinese by its code.
pub fn district(code: &str, english: &'static str, lang: Lang) -> &'static str {
    let zh = match code {
        "120101" => "和平区",
        "120102" => "河东区",
        "120103" => "河西区",
        "120104" => "南开区",
        "120105" => "河北区",
        "120106" => "红桥区",
        "120110" => "东丽区",
        "120111" => "西青区",
        "120112" => "津南区",
        "120113" => "北辰区",
        "120114" => "武清区",
        "120115" => "宝坻区",
        "120116" => "滨海新区",
        "120117" => "宁河区",
        "120118" => "静海区",
        "120119" => "蓟州区",
        _ => english,
    };
    lang.pick(english, zh)
}

/// Fen as yuan with two decimals and thousands separators: `123456` → `1,234.56`.
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    let whole = (abs / 100).to_string();
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{:02}", abs % 100)
}

/// Fen as the plain yuan figure a form field holds: `123456` → `1234.56`, `0` → ``.
pub fn yuan_input(fen: i64) -> String {
    if fen == 0 {
        return String::new();
    }
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// A yuan figure typed by a person (`1234.5`, `1,234.50`, `1234`) in fen; empty is 0.
/// `None` for anything else, including more than two decimals.
pub fn parse_yuan(text: &str) -> Option<i64> {
    let text: String = text
        .trim()
        .chars()
        .filter(|c| *c != ',' && *c != '，')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() && frac.is_empty()
        || !all_digits(whole)
        || !all_digits(frac)
        || frac.len() > 2
    {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().ok()? * 10,
        _ => frac.parse().ok()?,
    };
    let fen = whole.checked_mul(100)?.checked_add(frac)?;
    Some(if negative { -fen } else { fen })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_is_read_and_written_in_fen() {
        assert_eq!(parse_yuan(""), Some(0));
        assert_eq!(parse_yuan("1234"), Some(123_400));
        assert_eq!(parse_yuan("1,234.5"), Some(123_450));
        assert_eq!(parse_yuan(" 0.07 "), Some(7));
        assert_eq!(parse_yuan("-3.10"), Some(-310));
        assert_eq!(parse_yuan("1.234"), None);
        assert_eq!(parse_yuan("12a"), None);
        assert_eq!(parse_yuan("."), None);
        assert_eq!(parse_yuan("99999999999999999999"), None);
        assert_eq!(yuan(123_456_789), "1,234,567.89");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(yuan(-100_000), "-1,000.00");
        assert_eq!(yuan_input(123_450), "1234.50");
        assert_eq!(yuan_input(0), "");
        for fen in [1, 99, 100, 123_456, 10_000_000_000] {
            assert_eq!(parse_yuan(&yuan(fen)), Some(fen));
            assert_eq!(parse_yuan(&yuan_input(fen)), Some(fen));
        }
    }
}
