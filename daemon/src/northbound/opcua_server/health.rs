//! The server's `ServiceLevel` from the plant's data (OPC UA Part 4 §6.6.2.4.2): how much of the
//! twin's plant data is Good right now.

use crate::twin::spec::SYSTEM_ROOT;
use crate::twin::{PropertyId, QualityLevel, TwinModel};

/// ServiceLevel when every plant property is Good (or there is none): the top of "Healthy"
/// (200–255, "all data available").
pub const HEALTHY: u8 = 255;
/// ServiceLevel when no plant property is Good: "NoData" (the sources are not reachable).
pub const NO_DATA: u8 = 1;

/// Counts the Good properties among the plant's (every property outside the daemon's own
/// `twinloom/` status objects), kept current change by change.
#[derive(Debug)]
pub struct PlantHealth {
    /// Per property: `None` for the daemon's own, else whether it is Good now.
    good: Vec<Option<bool>>,
    good_count: usize,
    plant_count: usize,
}

impl PlantHealth {
    /// Nothing Good yet, for `model`'s properties.
    pub fn new(model: &TwinModel) -> Self {
        let prefix = format!("{SYSTEM_ROOT}/");
        let good: Vec<Option<bool>> = model
            .properties()
            .iter()
            .map(|p| (!p.path.starts_with(&prefix)).then_some(false))
            .collect();
        let plant_count = good.iter().flatten().count();
        Self {
            good,
            good_count: 0,
            plant_count,
        }
    }

    /// Records `property`'s quality level now.
    pub fn update(&mut self, property: PropertyId, level: QualityLevel) {
        if let Some(Some(was)) = self.good.get_mut(property.index()) {
            let is = level == QualityLevel::Good;
            match (*was, is) {
                (false, true) => self.good_count += 1,
                (true, false) => self.good_count -= 1,
                _ => {}
            }
            *was = is;
        }
    }

    /// The ServiceLevel: [`HEALTHY`] when all plant data is Good, [`NO_DATA`] when none is, and
    /// "Degraded" (2–199) in proportion to the Good share otherwise.
    pub fn service_level(&self) -> u8 {
        if self.good_count == self.plant_count {
            return HEALTHY;
        }
        if self.good_count == 0 {
            return NO_DATA;
        }
        let share = self.good_count as f64 / self.plant_count as f64;
        (2.0 + share * 197.0).floor().min(199.0) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(plant: usize) -> PlantHealth {
        PlantHealth {
            good: vec![Some(false); plant],
            good_count: 0,
            plant_count: plant,
        }
    }

    #[test]
    fn service_level_is_healthy_degraded_or_no_data() {
        let mut h = health(4);
        assert_eq!(h.service_level(), NO_DATA);
        h.update(PropertyId(0), QualityLevel::Good);
        assert_eq!(h.service_level(), 51); // 2 + 0.25 × 197
        h.update(PropertyId(1), QualityLevel::Good);
        h.update(PropertyId(2), QualityLevel::Good);
        assert_eq!(h.service_level(), 149);
        h.update(PropertyId(3), QualityLevel::Good);
        assert_eq!(h.service_level(), HEALTHY);
        // Uncertain is not Good; the same level twice counts once.
        h.update(PropertyId(3), QualityLevel::Uncertain);
        h.update(PropertyId(3), QualityLevel::Bad);
        assert_eq!(h.service_level(), 149);
        assert_eq!(health(0).service_level(), HEALTHY);
    }

    #[test]
    fn the_daemons_own_objects_do_not_count() {
        let mut h = PlantHealth {
            good: vec![Some(false), None],
            good_count: 0,
            plant_count: 1,
        };
        h.update(PropertyId(1), QualityLevel::Good);
        assert_eq!(h.service_level(), NO_DATA);
        h.update(PropertyId(0), QualityLevel::Good);
        assert_eq!(h.service_level(), HEALTHY);
    }
}
