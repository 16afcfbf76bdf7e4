//! Programmes 1 to 4, the low-income recognition tiers: dibao, extreme poverty, the
//! low-income marginal tier and rigid expenditure. Each tests assets and income; a lower
//! tier applies only when no higher one covers the household.

use onecity_domain::{DisabilityKind, Outcome, Person, Supporter};

use super::{floor_bp, le, lt, mul, Compared, Cx, Part, Pay, Plural, Rule};
use crate::format::{Times, Yuan};

/// How the review-band rules end their explanation.
const REVIEW_BAND: &str = " (review band)";

fn kind_name(k: DisabilityKind) -> &'static str {
    match k {
        DisabilityKind::Physical => "physical",
        DisabilityKind::Visual => "visual",
        DisabilityKind::Hearing => "hearing",
        DisabilityKind::Speech => "speech",
        DisabilityKind::Intellectual => "intellectual",
        DisabilityKind::Mental => "mental",
        DisabilityKind::Multiple => "multiple",
    }
}

impl<'a> Cx<'a> {
    fn assets(&self, prog: &'static str) -> (bool, Vec<Rule<'_>>) {
        let p = self.p;
        let assets = self.pi(self.app.financial_assets_fen);
        let limit = mul(self.pi(p.asset_limit_months), self.sn);
        let fin = assets <= limit;
        let homes = i128::from(self.app.homes_owned);
        let homes_ok = homes <= self.pi(p.max_homes);
        let vehicles = i128::from(self.app.vehicles_owned);
        let vehicles_ok = vehicles <= self.pi(p.max_vehicles);
        let rules = vec![
            self.rule(
                prog,
                "assets.financial",
                fin,
                &[
                    ("financial_assets_fen", assets),
                    ("asset_limit_months", self.pi(p.asset_limit_months)),
                    ("standard_fen", self.s),
                    ("members", self.n),
                ],
                limit,
                move || {
                    format!(
                        "financial assets {} yuan {} {} months × {} = {}",
                        Yuan(assets),
                        le(fin),
                        p.asset_limit_months,
                        self.n_standard(),
                        Yuan(limit)
                    )
                },
            ),
            self.rule(
                prog,
                "assets.homes",
                homes_ok,
                &[("homes_owned", homes), ("max_homes", self.pi(p.max_homes))],
                self.pi(p.max_homes),
                move || format!("homes owned {homes} {} {}", le(homes_ok), p.max_homes),
            ),
            self.rule(
                prog,
                "assets.vehicles",
                vehicles_ok,
                &[
                    ("vehicles_owned", vehicles),
                    ("max_vehicles", self.pi(p.max_vehicles)),
                ],
                self.pi(p.max_vehicles),
                move || {
                    format!(
                        "vehicles owned {vehicles} {} {}",
                        le(vehicles_ok),
                        p.max_vehicles
                    )
                },
            ),
        ];
        (fin && homes_ok && vehicles_ok, rules)
    }

    fn is_special(&self, m: &Person, age: i128) -> bool {
        age >= self.pi(self.p.elderly_age)
            || m.disability_grade().is_some_and(|g| g <= 2)
            || m.seriously_ill
    }

    pub(super) fn dibao(&self) -> Part<'_> {
        let p = self.p;
        let (assets_ok, mut rules) = self.assets("dibao");
        let (rule, _) = self.income_rule(
            "dibao",
            "income_below_standard",
            Compared::Household,
            None,
            &[],
            "",
        );
        let below = rule.held;
        rules.push(rule);
        let (rule, _) = self.income_rule(
            "dibao",
            "review_band",
            Compared::Household,
            Some(10_000 + self.pi(p.review_band_bp)),
            &[("review_band_bp", self.pi(p.review_band_bp))],
            REVIEW_BAND,
        );
        let in_band = rule.held;
        rules.push(rule);
        let outcome = if !assets_ok {
            Outcome::Ineligible
        } else if below {
            Outcome::Eligible
        } else if in_band {
            Outcome::NeedsReview
        } else {
            Outcome::Ineligible
        };
        let mut part = Part::new(outcome, Pay::Monthly, rules);
        match outcome {
            Outcome::Eligible => {
                let gap = self.sn - self.h;
                let floor = floor_bp(self.pi(p.dibao_floor_bp), self.sn);
                let special = self
                    .members()
                    .filter(|(_, m, a)| self.is_special(m, *a))
                    .count() as i128;
                let supplement = floor_bp(self.pi(p.special_supplement_bp), self.s);
                let amount = gap.max(floor).saturating_add(mul(special, supplement));
                part.rules.push(self.rule(
                    "dibao", "amount",
                    true,
                    &[
                        ("gap_fen", gap),
                        ("floor_fen", floor),
                        ("special_members", special),
                        ("supplement_fen", supplement),
                        ("amount_fen", amount),
                    ],
                    0,
                    move || format!(
                        "amount = max({} − {} = {}, floor {} × {} = {}) + {} (aged ≥ {}, disability grade 1–2 or seriously ill) × {} × standard {} = {} yuan",
                        Yuan(self.sn),
                        Yuan(self.h),
                        Yuan(gap),
                        Times(self.pi(p.dibao_floor_bp)),
                        Yuan(self.sn),
                        Yuan(floor),
                        Plural(special, "special member", "special members"),
                        p.elderly_age,
                        Times(self.pi(p.special_supplement_bp)),
                        Yuan(self.s),
                        Yuan(amount)
                    ),
                ));
                part.amount = amount;
                part.reason = part.explanation("dibao.income_below_standard");
            }
            Outcome::NeedsReview => {
                part.reason = format!(
                    "{}, but within the review band: {}",
                    part.explanation("dibao.income_below_standard"),
                    part.explanation("dibao.review_band")
                );
            }
            Outcome::Ineligible => {}
        }
        if assets_ok && !below {
            part.margin = self.h - self.sn + 1;
        }
        part
    }

    fn no_labour_capacity(&self, m: &Person, age: i128) -> Option<String> {
        let p = self.p;
        if age >= self.pi(p.elderly_age) {
            return Some(format!("aged {age} ≥ {}", p.elderly_age));
        }
        if age < self.pi(p.minor_age) {
            return Some(format!("aged {age} < {}", p.minor_age));
        }
        let d = m.disability?;
        let qualifies = match d.kind {
            DisabilityKind::Intellectual | DisabilityKind::Mental => d.grade <= 3,
            DisabilityKind::Physical => d.grade <= 2,
            DisabilityKind::Visual => d.grade == 1,
            DisabilityKind::Hearing | DisabilityKind::Speech | DisabilityKind::Multiple => false,
        };
        qualifies.then(|| format!("{} disability grade {}", kind_name(d.kind), d.grade))
    }

    pub(super) fn extreme_poverty(&self) -> Part<'_> {
        let p = self.p;
        let (assets_ok, mut rules) = self.assets("extreme_poverty");
        let mut count = 0i128;
        let mut margin: Option<i128> = None;
        for (i, m, age) in self.members() {
            let why = self.no_labour_capacity(m, age);
            let income = self.pi(m.monthly_income_fen);
            let income_ok = income < self.s;
            let supporter_ok = matches!(m.supporter, Supporter::None | Supporter::Unable);
            let held = why.is_some() && income_ok && supporter_ok;
            if held {
                count += 1;
            } else if why.is_some() && supporter_ok {
                let need = income - self.s + 1;
                margin = Some(margin.map_or(need, |x| x.min(need)));
            }
            let supporter = match m.supporter {
                Supporter::None => "no supporter",
                Supporter::Unable => "supporter unable to support",
                Supporter::Able => "a supporter able to support",
            };
            rules.push(self.rule(
                "extreme_poverty",
                "member",
                held,
                &[
                    ("member", i as i128),
                    ("age", age),
                    ("no_labour_capacity", i128::from(why.is_some())),
                    ("own_income_fen", income),
                    ("standard_fen", self.s),
                    ("supporter_ok", i128::from(supporter_ok)),
                ],
                self.s,
                move || {
                    format!(
                        "member {}: {}; own income {} yuan {} standard {}; {} → {}",
                        i + 1,
                        why.as_deref().map_or_else(
                            || format!("has labour capacity (aged {age})"),
                            |w| format!("no labour capacity ({w})")
                        ),
                        Yuan(income),
                        lt(income_ok),
                        Yuan(self.s),
                        supporter,
                        if held {
                            "qualifies"
                        } else {
                            "does not qualify"
                        }
                    )
                },
            ));
        }
        let eligible = assets_ok && count > 0;
        let mut part = Part::new(
            if eligible {
                Outcome::Eligible
            } else {
                Outcome::Ineligible
            },
            Pay::Monthly,
            rules,
        );
        if eligible {
            let each = floor_bp(self.pi(p.extreme_poverty_multiple_bp), self.s);
            part.amount = mul(count, each);
            part.reason = format!(
                "{} qualifying; {} × {} × standard {} = {} yuan each",
                Plural(count, "member", "members"),
                count,
                Times(self.pi(p.extreme_poverty_multiple_bp)),
                Yuan(self.s),
                Yuan(each)
            );
        } else if assets_ok {
            part.margin = margin.unwrap_or(0);
        }
        part
    }

    pub(super) fn marginal(&self, dibao: Outcome) -> Part<'_> {
        let p = self.p;
        let covered = dibao == Outcome::Eligible;
        let mut rules = vec![self.rule(
            "low_income_marginal",
            "not_covered_by_dibao",
            !covered,
            &[("dibao_eligible", i128::from(covered))],
            0,
            move || {
                format!(
                    "dibao outcome {dibao}{}",
                    if covered { ": covered by dibao" } else { "" }
                )
            },
        )];
        let (assets_ok, asset_rules) = self.assets("low_income_marginal");
        rules.extend(asset_rules);
        let m = self.pi(p.marginal_multiple_bp);
        let (rule, line) = self.income_rule(
            "low_income_marginal",
            "income",
            Compared::Household,
            Some(m),
            &[("marginal_multiple_bp", m)],
            "",
        );
        let income_ok = rule.held;
        rules.push(rule);
        let (rule, _) = self.income_rule(
            "low_income_marginal",
            "review_band",
            Compared::Household,
            Some(m + self.pi(p.review_band_bp)),
            &[
                ("marginal_multiple_bp", m),
                ("review_band_bp", self.pi(p.review_band_bp)),
            ],
            REVIEW_BAND,
        );
        let in_band = rule.held;
        rules.push(rule);
        let outcome = if covered {
            Outcome::Ineligible
        } else if assets_ok && income_ok {
            Outcome::Eligible
        } else if assets_ok && in_band {
            Outcome::NeedsReview
        } else {
            Outcome::Ineligible
        };
        let mut part = Part::new(outcome, Pay::NoAmount, rules);
        part.covered = covered;
        part.reason = match outcome {
            Outcome::Eligible => part.explanation(".income"),
            Outcome::NeedsReview => format!(
                "{}, but within the review band: {}",
                part.explanation(".income"),
                part.explanation(".review_band")
            ),
            Outcome::Ineligible if covered => "covered by dibao, the higher tier".into(),
            Outcome::Ineligible => String::new(),
        };
        if !covered && assets_ok && !income_ok {
            part.margin = self.h - line + 1;
        }
        part
    }

    pub(super) fn rigid(&self, dibao: Outcome, marginal: Outcome) -> Part<'_> {
        let p = self.p;
        let covered = dibao == Outcome::Eligible || marginal == Outcome::Eligible;
        let mut rules = vec![self.rule(
            "rigid_expenditure",
            "not_covered",
            !covered,
            &[
                ("dibao_eligible", i128::from(dibao == Outcome::Eligible)),
                (
                    "marginal_eligible",
                    i128::from(marginal == Outcome::Eligible),
                ),
            ],
            0,
            move || {
                format!(
                    "dibao outcome {dibao}, low-income marginal outcome {marginal}{}",
                    if covered {
                        ": covered by a higher tier"
                    } else {
                        ""
                    }
                )
            },
        )];
        let (assets_ok, asset_rules) = self.assets("rigid_expenditure");
        rules.extend(asset_rules);
        let med = self.pi(self.app.medical_expense_12m_fen);
        let other = self.pi(self.app.other_rigid_expense_12m_fen);
        let monthly = med.saturating_add(other).div_euclid(12);
        let adjusted = (self.h - monthly).max(0);
        let m = self.pi(p.marginal_multiple_bp);
        let (rule, line) = self.income_rule(
            "rigid_expenditure",
            "income_after_expenses",
            Compared::AfterExpenses {
                medical: med,
                other,
                monthly,
                adjusted,
            },
            Some(m),
            &[("marginal_multiple_bp", m)],
            "",
        );
        let income_ok = rule.held;
        rules.push(rule);
        let outcome = if !covered && assets_ok && income_ok {
            Outcome::Eligible
        } else {
            Outcome::Ineligible
        };
        let mut part = Part::new(outcome, Pay::NoAmount, rules);
        part.covered = covered;
        part.reason = match outcome {
            Outcome::Eligible => part.explanation(".income_after_expenses"),
            _ if covered => "covered by a higher tier".into(),
            _ => String::new(),
        };
        if !covered && assets_ok && !income_ok {
            part.margin = adjusted - line + 1;
        }
        part
    }
}
