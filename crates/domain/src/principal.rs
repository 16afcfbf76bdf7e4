//! Who is calling. Tokens map to principals in the server's configuration; the services
//! decide what each principal may do.

use std::fmt;

use crate::{DepartmentUnit, DistrictCode};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A street-office intake terminal. Any terminal may serve any resident of the city
    /// (the one-city link), so its district is recorded, not used to restrict.
    Terminal {
        /// Terminal id, e.g. `T-120103-07`.
        id: String,
        /// District of the street office.
        district: DistrictCode,
        /// Street office name.
        street_office: String,
    },
    /// A department unit's back-office system.
    Department {
        /// The unit, e.g. `civil-affairs@120103`.
        unit: DepartmentUnit,
    },
    /// A district's supervisor (`supervisor@<district>`): sees every unit's referrals in its
    /// district and may transfer them between its units; decides nothing and reads no
    /// application.
    Supervisor {
        /// The district supervised.
        district: DistrictCode,
    },
    /// An administrator (reads everything, acts on nothing departmental).
    Admin {
        /// Administrator id.
        id: String,
    },
    /// Another onecity process (a service role reaching the shared log).
    Service {
        /// Service id.
        id: String,
    },
}

impl Principal {
    /// Stable identifier recorded as the actor of events.
    pub fn actor(&self) -> String {
        match self {
            Principal::Terminal { id, .. } => format!("terminal:{id}"),
            Principal::Department { unit } => format!("department:{unit}"),
            Principal::Supervisor { district } => format!("supervisor:{district}"),
            Principal::Admin { id } => format!("admin:{id}"),
            Principal::Service { id } => format!("service:{id}"),
        }
    }

    /// The principal kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Terminal { .. } => "terminal",
            Principal::Department { .. } => "department",
            Principal::Supervisor { .. } => "supervisor",
            Principal::Admin { .. } => "admin",
            Principal::Service { .. } => "service",
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.actor())
    }
}
