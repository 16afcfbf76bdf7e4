//! Programmes 1 to 4, the low-income recognition tiers: dibao, extreme poverty, the
//! low-income marginal tier and rigid expenditure. Each tests assets and income; a lower
//! tier applies only when no higher one covers the household.

use onecity_domain::{DisabilityKind, Outcome, Person, Supporter};

use super::{floor_bp, mul, Compared, Cx, LeanRule, Part, RuleKind};

impl<'a> Cx<'a> {
    /// The three asset rules, as `kinds` (financial, homes, vehicles).
    fn assets(&self, kinds: [RuleKind; 3]) -> (bool, Vec<LeanRule>) {
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
                kinds[0],
                fin,
                &[
                    ("financial_assets_fen", assets),
                    ("asset_limit_months", self.pi(p.asset_limit_months)),
                    ("standard_fen", self.s),
                    ("members", self.n),
                ],
                limit,
            ),
            self.rule(
                kinds[1],
                homes_ok,
                &[("homes_owned", homes), ("max_homes", self.pi(p.max_homes))],
                self.pi(p.max_homes),
            ),
            self.rule(
                kinds[2],
                vehicles_ok,
                &[
                    ("vehicles_owned", vehicles),
                    ("max_vehicles", self.pi(p.max_vehicles)),
                ],
                self.pi(p.max_vehicles),
            ),
        ];
        (fin && homes_ok && vehicles_ok, rules)
    }

    fn is_special(&self, m: &Person, age: i128) -> bool {
        age >= self.pi(self.p.elderly_age)
            || m.disability_grade().is_some_and(|g| g <= 2)
            || m.seriously_ill
    }

    pub(super) fn dibao(&self) -> Part {
        let p = self.p;
        let (assets_ok, mut rules) = self.assets([
            RuleKind::DibaoAssetsFinancial,
            RuleKind::DibaoAssetsHomes,
            RuleKind::DibaoAssetsVehicles,
        ]);
        let (rule, _) = self.income_rule(
            RuleKind::DibaoIncomeBelowStandard,
            Compared::Household,
            None,
            &[],
        );
        let below = rule.held;
        rules.push(rule);
        let (rule, _) = self.income_rule(
            RuleKind::DibaoReviewBand,
            Compared::Household,
            Some(10_000 + self.pi(p.review_band_bp)),
            &[("review_band_bp", self.pi(p.review_band_bp))],
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
        let mut part = Part::new(outcome, rules);
        if outcome == Outcome::Eligible {
            let gap = self.sn - self.h;
            let floor = floor_bp(self.pi(p.dibao_floor_bp), self.sn);
            let special = self
                .members()
                .filter(|(_, m, a)| self.is_special(m, *a))
                .count() as i128;
            let supplement = floor_bp(self.pi(p.special_supplement_bp), self.s);
            let amount = gap.max(floor).saturating_add(mul(special, supplement));
            part.rules.push(self.rule(
                RuleKind::DibaoAmount,
                true,
                &[
                    ("gap_fen", gap),
                    ("floor_fen", floor),
                    ("special_members", special),
                    ("supplement_fen", supplement),
                    ("amount_fen", amount),
                    ("household_income_fen", self.h),
                    ("standard_fen", self.s),
                    ("members", self.n),
                    ("dibao_floor_bp", self.pi(p.dibao_floor_bp)),
                    ("special_supplement_bp", self.pi(p.special_supplement_bp)),
                    ("elderly_age", self.pi(p.elderly_age)),
                ],
                0,
            ));
            part.amount = amount;
        }
        if assets_ok && !below {
            part.margin = self.h - self.sn + 1;
        }
        part
    }

    /// Whether `m` has no labour capacity: aged, a minor, or a qualifying disability.
    fn no_labour_capacity(&self, m: &Person, age: i128) -> bool {
        let p = self.p;
        if age >= self.pi(p.elderly_age) || age < self.pi(p.minor_age) {
            return true;
        }
        m.disability.is_some_and(|d| match d.kind {
            DisabilityKind::Intellectual | DisabilityKind::Mental => d.grade <= 3,
            DisabilityKind::Physical => d.grade <= 2,
            DisabilityKind::Visual => d.grade == 1,
            DisabilityKind::Hearing | DisabilityKind::Speech | DisabilityKind::Multiple => false,
        })
    }

    pub(super) fn extreme_poverty(&self) -> Part {
        let p = self.p;
        let (assets_ok, mut rules) = self.assets([
            RuleKind::ExtremePovertyAssetsFinancial,
            RuleKind::ExtremePovertyAssetsHomes,
            RuleKind::ExtremePovertyAssetsVehicles,
        ]);
        let mut count = 0i128;
        let mut margin: Option<i128> = None;
        for (i, m, age) in self.members() {
            let unable = self.no_labour_capacity(m, age);
            let income = self.pi(m.monthly_income_fen);
            let income_ok = income < self.s;
            let supporter_ok = matches!(m.supporter, Supporter::None | Supporter::Unable);
            let held = unable && income_ok && supporter_ok;
            if held {
                count += 1;
            } else if unable && supporter_ok {
                let need = income - self.s + 1;
                margin = Some(margin.map_or(need, |x| x.min(need)));
            }
            rules.push(self.rule(
                RuleKind::ExtremePovertyMember,
                held,
                &[
                    ("member", i as i128),
                    ("age", age),
                    ("no_labour_capacity", i128::from(unable)),
                    ("own_income_fen", income),
                    ("standard_fen", self.s),
                    ("supporter_ok", i128::from(supporter_ok)),
                    ("supporter", i128::from(m.supporter.to_proto())),
                    (
                        "disability_kind",
                        i128::from(m.disability.map_or(0, |d| d.kind.to_proto())),
                    ),
                    (
                        "disability_grade",
                        i128::from(m.disability.map_or(0, |d| d.grade)),
                    ),
                    ("elderly_age", self.pi(p.elderly_age)),
                    ("minor_age", self.pi(p.minor_age)),
                    (
                        "extreme_poverty_multiple_bp",
                        self.pi(p.extreme_poverty_multiple_bp),
                    ),
                ],
                self.s,
            ));
        }
        let eligible = assets_ok && count > 0;
        let mut part = Part::new(
            if eligible {
                Outcome::Eligible
            } else {
                Outcome::Ineligible
            },
            rules,
        );
        if eligible {
            let each = floor_bp(self.pi(p.extreme_poverty_multiple_bp), self.s);
            part.amount = mul(count, each);
        } else if assets_ok {
            part.margin = margin.unwrap_or(0);
        }
        part
    }

    pub(super) fn marginal(&self, dibao: Outcome) -> Part {
        let p = self.p;
        let covered = dibao == Outcome::Eligible;
        let mut rules = vec![self.rule(
            RuleKind::MarginalNotCoveredByDibao,
            !covered,
            &[
                ("dibao_eligible", i128::from(covered)),
                ("dibao_outcome", i128::from(dibao.to_proto())),
            ],
            0,
        )];
        let (assets_ok, asset_rules) = self.assets([
            RuleKind::MarginalAssetsFinancial,
            RuleKind::MarginalAssetsHomes,
            RuleKind::MarginalAssetsVehicles,
        ]);
        rules.extend(asset_rules);
        let m = self.pi(p.marginal_multiple_bp);
        let (rule, line) = self.income_rule(
            RuleKind::MarginalIncome,
            Compared::Household,
            Some(m),
            &[("marginal_multiple_bp", m)],
        );
        let income_ok = rule.held;
        rules.push(rule);
        let (rule, _) = self.income_rule(
            RuleKind::MarginalReviewBand,
            Compared::Household,
            Some(m + self.pi(p.review_band_bp)),
            &[
                ("marginal_multiple_bp", m),
                ("review_band_bp", self.pi(p.review_band_bp)),
            ],
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
        let mut part = Part::new(outcome, rules);
        if !covered && assets_ok && !income_ok {
            part.margin = self.h - line + 1;
        }
        part
    }

    pub(super) fn rigid(&self, dibao: Outcome, marginal: Outcome) -> Part {
        let p = self.p;
        let covered = dibao == Outcome::Eligible || marginal == Outcome::Eligible;
        let mut rules = vec![self.rule(
            RuleKind::RigidNotCovered,
            !covered,
            &[
                ("dibao_eligible", i128::from(dibao == Outcome::Eligible)),
                (
                    "marginal_eligible",
                    i128::from(marginal == Outcome::Eligible),
                ),
                ("dibao_outcome", i128::from(dibao.to_proto())),
                ("marginal_outcome", i128::from(marginal.to_proto())),
            ],
            0,
        )];
        let (assets_ok, asset_rules) = self.assets([
            RuleKind::RigidAssetsFinancial,
            RuleKind::RigidAssetsHomes,
            RuleKind::RigidAssetsVehicles,
        ]);
        rules.extend(asset_rules);
        let med = self.pi(self.app.medical_expense_12m_fen);
        let other = self.pi(self.app.other_rigid_expense_12m_fen);
        let monthly = med.saturating_add(other).div_euclid(12);
        let adjusted = (self.h - monthly).max(0);
        let m = self.pi(p.marginal_multiple_bp);
        let (rule, line) = self.income_rule(
            RuleKind::RigidIncomeAfterExpenses,
            Compared::AfterExpenses {
                medical: med,
                other,
                monthly,
                adjusted,
            },
            Some(m),
            &[("marginal_multiple_bp", m)],
        );
        let income_ok = rule.held;
        rules.push(rule);
        let outcome = if !covered && assets_ok && income_ok {
            Outcome::Eligible
        } else {
            Outcome::Ineligible
        };
        let mut part = Part::new(outcome, rules);
        if !covered && assets_ok && !income_ok {
            part.margin = adjusted - line + 1;
        }
        part
    }
}
