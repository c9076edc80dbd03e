//! Closed vocabularies of the partner files and of the warning models.

macro_rules! vocab {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
    };
}

vocab!(
    /// `police.incidents.category`.
    Category {
        Dispute = "dispute",
        DomesticViolence = "domestic_violence",
        Theft = "theft",
        Fraud = "fraud",
        Noise = "noise",
        Traffic = "traffic",
        Other = "other",
    }
);

impl Category {
    /// Counts toward `escalating-dispute`.
    pub fn is_dispute(self) -> bool {
        matches!(self, Category::Dispute | Category::DomesticViolence)
    }
    /// Counts toward `repeat-caller`.
    pub fn is_repeat_call(self) -> bool {
        matches!(self, Category::Dispute | Category::Noise)
    }
}

vocab!(
    /// `hospital.visits.department`.
    Department {
        Psychiatry = "psychiatry",
        Emergency = "emergency",
        Surgery = "surgery",
        Orthopedics = "orthopedics",
        Internal = "internal",
        Pediatrics = "pediatrics",
        Other = "other",
    }
);

vocab!(
    /// `hospital.visits.diagnosis_group`.
    Diagnosis {
        Injury = "injury",
        Psychiatric = "psychiatric",
        Respiratory = "respiratory",
        Cardio = "cardio",
        Chronic = "chronic",
        Other = "other",
    }
);

vocab!(
    /// `insurance.claims.drug_category`.
    Drug {
        Antipsychotic = "antipsychotic",
        Analgesic = "analgesic",
        Antibiotic = "antibiotic",
        Chronic = "chronic",
        Other = "other",
    }
);

vocab!(
    /// `police.wanted.offence`.
    Offence {
        Fraud = "fraud",
        Theft = "theft",
        Assault = "assault",
        Drugs = "drugs",
        Other = "other",
    }
);

vocab!(
    /// The six warning models the ground truth is written for.
    Model {
        RepeatAddress = "repeat-address",
        RepeatCaller = "repeat-caller",
        EscalatingDispute = "escalating-dispute",
        CareLapse = "care-lapse",
        FugitiveMedical = "fugitive-medical",
        CaseLinkage = "case-linkage",
    }
);

impl Model {
    /// The identifier kind of the model's subject.
    pub fn subject_kind(self) -> &'static str {
        match self {
            Model::RepeatAddress => "address",
            Model::RepeatCaller | Model::CaseLinkage => "phone",
            Model::EscalatingDispute | Model::CareLapse | Model::FugitiveMedical => "person",
        }
    }
}

vocab!(
    /// Warning tiers, highest first: red (I), orange (II), yellow (III), blue (IV).
    Tier {
        Red = "red",
        Orange = "orange",
        Yellow = "yellow",
        Blue = "blue",
    }
);
