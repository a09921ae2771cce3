//! The price table: estimated $/hour per GPU, on-demand and spot.

use std::collections::HashMap;

use crate::ids::GpuModel;
use crate::money::Usd;

/// Price of one GPU for one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuPrice {
    /// On-demand price per GPU-hour.
    pub on_demand: Usd,
    /// Spot / interruptible price per GPU-hour.
    pub spot: Usd,
}

/// Built-in list prices (USD per GPU-hour, on-demand and spot), typical of
/// the large clouds in 2026. Admins override or extend them under `prices:`.
pub const DEFAULT_PRICES: &[(&str, f64, f64)] = &[
    ("B200", 6.00, 3.00),
    ("H200", 4.50, 2.20),
    ("H100", 3.00, 1.50),
    ("H100-MEGA", 3.50, 1.70),
    ("A100-80GB", 2.00, 1.00),
    ("A100", 1.60, 0.80),
    ("L40S", 1.20, 0.60),
    ("L40", 1.00, 0.50),
    ("L4", 0.70, 0.30),
    ("A10G", 1.00, 0.40),
    ("A10", 0.90, 0.40),
    ("A6000", 0.80, 0.45),
    ("V100", 2.50, 0.90),
    ("T4", 0.45, 0.18),
    ("RTX4090", 0.60, 0.35),
    ("RTX3090", 0.35, 0.20),
];

/// GPU prices by model.
#[derive(Debug, Clone)]
pub struct PriceTable {
    prices: HashMap<GpuModel, GpuPrice>,
}

impl PriceTable {
    /// The built-in defaults.
    pub fn with_defaults() -> Self {
        let mut prices = HashMap::new();
        for (name, on_demand, spot) in DEFAULT_PRICES {
            if let (Ok(model), Ok(on_demand), Ok(spot)) = (
                GpuModel::parse(name),
                Usd::from_dollars(*on_demand),
                Usd::from_dollars(*spot),
            ) {
                prices.insert(model, GpuPrice { on_demand, spot });
            }
        }
        Self { prices }
    }

    /// Sets (or overrides) the price of a model.
    pub fn set(&mut self, model: GpuModel, price: GpuPrice) {
        self.prices.insert(model, price);
    }

    /// The price of one GPU-hour of `model`, if known.
    pub fn per_gpu_hour(&self, model: &GpuModel, spot: bool) -> Option<Usd> {
        self.prices
            .get(model)
            .map(|p| if spot { p.spot } else { p.on_demand })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cover_common_models() {
        let t = PriceTable::with_defaults();
        let h100 = GpuModel::parse("h100").unwrap();
        assert_eq!(
            t.per_gpu_hour(&h100, false),
            Some(Usd::from_micros(3_000_000))
        );
        assert_eq!(
            t.per_gpu_hour(&h100, true),
            Some(Usd::from_micros(1_500_000))
        );
        assert!(t
            .per_gpu_hour(&GpuModel::parse("TPU-X").unwrap(), false)
            .is_none());
    }
}
