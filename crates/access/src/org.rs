//! The deployment's organisation: police stations and the county each belongs to
//! (`policies/org.toml`). Officers act for one station; the county is what a duty officer's
//! overview spans.

use std::collections::BTreeMap;
use std::path::Path;

/// The org file's name in a policy directory.
pub const ORG_FILE: &str = "org.toml";

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Org {
    /// The partner whose contributions are the police's own: the only data a reveal may
    /// read (partner agencies' data is never revealed).
    #[serde(default = "default_police")]
    police_partner: String,
    /// Station id → county id.
    stations: BTreeMap<String, String>,
}

fn default_police() -> String {
    "police".to_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    #[error("{file}: {reason}; expected [stations] with STATION = \"COUNTY\" lines")]
    Invalid { file: String, reason: String },
}

impl Org {
    /// Reads `dir/org.toml`.
    pub fn load(dir: &Path) -> Result<Org, OrgError> {
        let path = dir.join(ORG_FILE);
        let bad = |reason: String| OrgError::Invalid {
            file: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let org: Org = toml::from_str(&text).map_err(|e| bad(e.message().to_owned()))?;
        if org.stations.is_empty() {
            return Err(bad("no stations".into()));
        }
        Ok(org)
    }

    /// The county of `station`, if the deployment has that station.
    pub fn county_of(&self, station: &str) -> Option<&str> {
        self.stations.get(station).map(String::as_str)
    }

    /// The stations of `county`.
    pub fn stations_in(&self, county: &str) -> Vec<String> {
        self.stations
            .iter()
            .filter(|(_, c)| c.as_str() == county)
            .map(|(s, _)| s.clone())
            .collect()
    }

    pub fn police_partner(&self) -> &str {
        &self.police_partner
    }

    pub fn stations(&self) -> impl Iterator<Item = &str> {
        self.stations.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shipped_org_maps_eight_stations_to_two_counties() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        let org = Org::load(&dir).unwrap();
        assert_eq!(org.stations().count(), 8);
        assert_eq!(org.county_of("S03"), Some("C1"));
        assert_eq!(org.county_of("S99"), None);
        assert_eq!(org.stations_in("C2"), ["S05", "S06", "S07", "S08"]);
        assert_eq!(org.police_partner(), "police");
    }
}
