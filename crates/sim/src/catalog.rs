//! The seeded offer catalog: each offer is one whole machine ("ask") with a
//! GPU model, a GPU count, a price and the hardware fields Vast reports.
//! The same seed always gives the same catalog.

use serde_json::{json, Map, Value};

use crate::query::OfferType;

/// A small deterministic generator (SplitMix64); no RNG dependency needed.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        let len = u64::try_from(items.len()).ok()?;
        let i = usize::try_from(self.next_u64() % len.max(1)).ok()?;
        items.get(i)
    }
}

struct GpuModel {
    name: &'static str,
    gpu_ram_mb: u64,
    /// Typical on-demand price of one GPU, micro-dollars per hour.
    usd_micros_per_gpu: u64,
    dlperf: f64,
    tflops: f64,
    compute_cap: u64,
}

#[rustfmt::skip]
const MODELS: [GpuModel; 8] = [
    GpuModel { name: "RTX 3090", gpu_ram_mb: 24576, usd_micros_per_gpu: 220_000, dlperf: 21.0, tflops: 35.6, compute_cap: 860 },
    GpuModel { name: "RTX 4090", gpu_ram_mb: 24564, usd_micros_per_gpu: 380_000, dlperf: 33.0, tflops: 82.6, compute_cap: 890 },
    GpuModel { name: "RTX A6000", gpu_ram_mb: 49140, usd_micros_per_gpu: 470_000, dlperf: 27.0, tflops: 38.7, compute_cap: 860 },
    GpuModel { name: "L40S", gpu_ram_mb: 46068, usd_micros_per_gpu: 850_000, dlperf: 42.0, tflops: 91.6, compute_cap: 890 },
    GpuModel { name: "A100 PCIE", gpu_ram_mb: 40960, usd_micros_per_gpu: 1_100_000, dlperf: 55.0, tflops: 19.5, compute_cap: 800 },
    GpuModel { name: "A100 SXM4", gpu_ram_mb: 81920, usd_micros_per_gpu: 1_400_000, dlperf: 65.0, tflops: 19.5, compute_cap: 800 },
    GpuModel { name: "H100 PCIE", gpu_ram_mb: 81559, usd_micros_per_gpu: 2_000_000, dlperf: 90.0, tflops: 51.2, compute_cap: 900 },
    GpuModel { name: "H100 SXM", gpu_ram_mb: 81559, usd_micros_per_gpu: 2_500_000, dlperf: 110.0, tflops: 66.9, compute_cap: 900 },
];

const GPU_COUNTS: [u64; 4] = [1, 2, 4, 8];

/// Places by region; offer `i` is in region `(i / 32) % 3`.
const REGIONS: [&[&str]; 3] = [
    &[
        "Sweden, SE",
        "Norway, NO",
        "Germany, DE",
        "Netherlands, NL",
        "Poland, PL",
        "United Kingdom, GB",
        "France, FR",
        "Finland, FI",
    ],
    &[
        "United States, US",
        "California, US",
        "Texas, US",
        "Canada, CA",
        "Brazil, BR",
    ],
    &[
        "Japan, JP",
        "Taiwan, TW",
        "Vietnam, VN",
        "China, CN",
        "Australia, AU",
        "Singapore, SG",
    ],
];

const CPUS: [(&str, f64); 4] = [
    ("AMD EPYC 7543", 3.7),
    ("AMD EPYC 9654", 3.7),
    ("Intel Xeon Gold 6338", 3.2),
    ("AMD Ryzen 9 7950X", 5.7),
];

const DRIVERS: [(&str, f64); 4] = [
    ("535.183.01", 12.2),
    ("550.54.15", 12.4),
    ("560.35.03", 12.6),
    ("570.86.10", 12.8),
];

/// Hours in the month Vast prices storage by (`storage_cost` is $/GB/month).
pub(crate) const HOURS_PER_MONTH: f64 = 720.0;

/// One offer. Prices are integer micro-dollars; `fields` holds the static
/// hardware fields exactly as the wire shows them.
#[derive(Clone, Debug)]
pub(crate) struct Offer {
    pub(crate) id: u64,
    /// GPU price, micro-dollars per hour.
    pub(crate) dph_base: u64,
    /// Lowest accepted bid (interruptible), micro-dollars per hour.
    pub(crate) min_bid: u64,
    /// Storage price, micro-dollars per GB per month.
    pub(crate) storage_cost: u64,
    /// The instance renting this machine, if any.
    pub(crate) rented_by: Option<u64>,
    pub(crate) fields: Map<String, Value>,
}

/// Rounds to `places` decimals, so the wire shows tidy numbers.
fn round(x: f64, places: i32) -> f64 {
    let k = 10f64.powi(places);
    (x * k).round() / k
}

pub(crate) fn usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// Storage price per hour for `gb` gigabytes, micro-dollars.
pub(crate) fn storage_per_hour(storage_cost: u64, gb: f64) -> u64 {
    (storage_cost as f64 * gb.max(0.0) / HOURS_PER_MONTH).round() as u64
}

/// Builds `count` offers from `seed`. Models and GPU counts cycle, so each
/// block of 32 offers has every model with every count; the blocks go to
/// Europe, the Americas and Asia-Pacific in turn, and the first block is all
/// verified, so a CLI example like `launch instance -g RTX_4090 -n 2 -r
/// Europe` finds an offer whatever the seed. The rest (price, country,
/// reliability, hardware) is drawn from the seed.
pub(crate) fn generate(seed: u64, count: usize, first_id: u64, now_unix: f64) -> Vec<Offer> {
    let mut rng = SplitMix64::new(seed);
    (0..count)
        .filter_map(|i| {
            let model = MODELS.get(i % MODELS.len())?;
            let num_gpus = *GPU_COUNTS.get((i / MODELS.len()) % GPU_COUNTS.len())?;
            let id = first_id + u64::try_from(i).ok()?;
            let region = REGIONS.get((i / BLOCK) % REGIONS.len())?;
            Some(offer(
                &mut rng,
                id,
                model,
                num_gpus,
                region,
                i < BLOCK,
                now_unix,
            ))
        })
        .collect()
}

/// Offers per block: every model with every GPU count.
const BLOCK: usize = MODELS.len() * GPU_COUNTS.len();

fn offer(
    rng: &mut SplitMix64,
    id: u64,
    model: &GpuModel,
    num_gpus: u64,
    region: &[&str],
    showcase: bool,
    now_unix: f64,
) -> Offer {
    let n = num_gpus as f64;
    let dph_base =
        (model.usd_micros_per_gpu as f64 * n * rng.range(0.8, 1.3) / 100.0).round() as u64 * 100;
    let min_bid = (dph_base as f64 * rng.range(0.4, 0.6)).round() as u64;
    let storage_cost = (rng.range(0.1, 0.3) * 100.0).round() as u64 * 10_000;
    let reliability = round(rng.range(0.9, 0.9999), 4);
    let verified = showcase || rng.unit() < 0.85;
    let (cpu_name, cpu_ghz) = *rng.pick(&CPUS).unwrap_or(&CPUS[0]);
    let (driver, cuda) = *rng.pick(&DRIVERS).unwrap_or(&DRIVERS[0]);
    let duration = (1.0 + rng.range(0.0, 90.0)).floor() * 86_400.0;
    let fields = json!({
        "id": id,
        "ask_contract_id": id,
        "bundle_id": id,
        "bundled_results": 1,
        "machine_id": 20_000 + id,
        "host_id": 100 + rng.next_u64() % 60,
        "hosting_type": u64::from(rng.unit() < 0.3),
        "gpu_name": model.name,
        "gpu_arch": "nvidia",
        "num_gpus": num_gpus,
        "gpu_ram": model.gpu_ram_mb,
        "gpu_total_ram": model.gpu_ram_mb * num_gpus,
        "compute_cap": model.compute_cap,
        "total_flops": round(model.tflops * n, 1),
        "dlperf": round(model.dlperf * n * rng.range(0.9, 1.05), 1),
        "cuda_max_good": cuda,
        "driver_version": driver,
        "cpu_arch": "amd64",
        "cpu_name": cpu_name,
        "cpu_ghz": cpu_ghz,
        "cpu_cores": 32 * num_gpus.max(2),
        "cpu_cores_effective": round(n * rng.range(4.0, 16.0), 0),
        "cpu_ram": num_gpus * *rng.pick(&[32_000u64, 64_000, 128_000]).unwrap_or(&64_000),
        "disk_space": *rng.pick(&[250.0f64, 500.0, 1000.0, 2000.0]).unwrap_or(&500.0),
        "disk_bw": round(rng.range(500.0, 6000.0), 0),
        "pci_gen": *rng.pick(&[3.0f64, 4.0, 5.0]).unwrap_or(&4.0),
        "pcie_bw": round(rng.range(8.0, 50.0), 1),
        "inet_up": round(rng.range(100.0, 5000.0), 0),
        "inet_down": round(rng.range(100.0, 5000.0), 0),
        "inet_up_cost": round(rng.range(0.0, 0.02), 4),
        "inet_down_cost": round(rng.range(0.0, 0.02), 4),
        "direct_port_count": *rng.pick(&[0u64, 20, 100, 500]).unwrap_or(&100),
        "static_ip": rng.unit() < 0.6,
        "geolocation": *rng.pick(region).unwrap_or(&"Sweden, SE"),
        "reliability": reliability,
        "reliability2": reliability,
        "verified": verified,
        "verification": if verified { "verified" } else { "unverified" },
        "external": !showcase && rng.unit() < 0.05,
        "duration": duration,
        "end_date": round(now_unix + duration, 3),
    });
    let fields = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    Offer {
        id,
        dph_base,
        min_bid,
        storage_cost,
        rented_by: None,
        fields,
    }
}

impl Offer {
    /// The offer as a search answers it: the static fields plus the prices
    /// for `allocated_storage` GB and the offer type, and availability.
    pub(crate) fn render(&self, allocated_storage: f64, kind: OfferType) -> Map<String, Value> {
        let mut row = self.fields.clone();
        let storage = storage_per_hour(self.storage_cost, allocated_storage);
        let base = if kind == OfferType::Bid {
            self.min_bid
        } else {
            self.dph_base
        };
        let dph_total = usd(base + storage);
        let dlperf = row.get("dlperf").and_then(Value::as_f64).unwrap_or(0.0);
        let flops = row
            .get("total_flops")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let reliability = row
            .get("reliability")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let per_dollar = |x: f64| {
            if dph_total > 0.0 {
                round(x / dph_total, 1)
            } else {
                0.0
            }
        };
        let extra = [
            ("dph_base", json!(usd(base))),
            ("dph_total", json!(dph_total)),
            ("min_bid", json!(usd(self.min_bid))),
            ("storage_cost", json!(usd(self.storage_cost))),
            ("storage_total_cost", json!(usd(storage))),
            ("dlperf_per_dphtotal", json!(per_dollar(dlperf))),
            ("flops_per_dphtotal", json!(per_dollar(flops))),
            ("score", json!(round(per_dollar(dlperf) * reliability, 1))),
            ("is_bid", json!(kind == OfferType::Bid)),
            ("rentable", json!(self.rented_by.is_none())),
            ("rented", json!(self.rented_by.is_some())),
        ];
        for (key, value) in extra {
            row.insert(key.to_owned(), value);
        }
        if kind == OfferType::Reserved {
            row.insert(
                "discounted_dph_total".to_owned(),
                json!(round(dph_total * 0.75, 6)),
            );
        }
        row
    }
}

/// The distinct GPU names of the catalog, sorted (`/gpu_names/unique/`).
pub(crate) fn gpu_names(offers: impl Iterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = offers.collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_catalog_other_seed_other_prices() {
        let a = generate(7, 40, 1001, 0.0);
        let b = generate(7, 40, 1001, 0.0);
        let c = generate(8, 40, 1001, 0.0);
        let prices = |v: &[Offer]| v.iter().map(|o| o.dph_base).collect::<Vec<_>>();
        assert_eq!(prices(&a), prices(&b));
        assert_ne!(prices(&a), prices(&c));
        assert_eq!(a.first().map(|o| o.id), Some(1001));
        assert_eq!(a.last().map(|o| o.id), Some(1040));
    }

    #[test]
    fn the_first_block_has_every_model_and_count_verified_in_europe() {
        let offers = generate(1, 40, 1, 0.0);
        let first_block = offers.get(..32).unwrap();
        for model in &MODELS {
            for count in GPU_COUNTS {
                let offer = first_block
                    .iter()
                    .find(|o| o.fields["gpu_name"] == model.name && o.fields["num_gpus"] == count)
                    .unwrap_or_else(|| panic!("{} x{count} missing", model.name));
                assert_eq!(offer.fields["verified"], true);
                assert_eq!(offer.fields["external"], false);
                let place = offer.fields["geolocation"].as_str().unwrap();
                assert!(REGIONS[0].contains(&place), "{place}");
            }
        }
        let later = offers.get(32..).unwrap();
        assert!(later
            .iter()
            .all(|o| REGIONS[1].contains(&o.fields["geolocation"].as_str().unwrap())));
    }

    #[test]
    fn bid_price_is_min_bid_and_storage_is_priced_per_720h_month() {
        let offer = Offer {
            id: 1,
            dph_base: 600_000,
            min_bid: 300_000,
            storage_cost: 144_000,
            rented_by: None,
            fields: Map::new(),
        };
        let on_demand = offer.render(10.0, OfferType::OnDemand);
        // 0.144 $/GB/month * 10 GB / 720 h = 0.002 $/h
        assert_eq!(on_demand.get("dph_total"), Some(&json!(0.602)));
        let bid = offer.render(10.0, OfferType::Bid);
        assert_eq!(bid.get("dph_total"), Some(&json!(0.302)));
        assert_eq!(bid.get("is_bid"), Some(&json!(true)));
    }
}
