//! Spot build instances: `spot_price` (`"auto"`, i.e. at most the
//! on-demand price, or a maximum in USD per hour) and
//! `spot_instance_types` (tried in order), launched as one-time spot
//! requests through RunInstances' `InstanceMarketOptions` — the same
//! request as on demand, so every other setting (volumes, network, user
//! data, tags) is sent alike. When EC2 has no spot capacity at that price
//! for any of the types, the build fails, or — only with
//! `spot_fallback_on_demand = true` — runs on demand instead.

use serde::Deserialize;

/// A parsed `spot_price`.
#[derive(Debug, Clone, PartialEq)]
pub enum SpotPrice {
    /// At most the on-demand price (EC2's default when no maximum is sent).
    Auto,
    /// At most this many USD per hour, as given (EC2 takes a decimal string).
    Max(String),
}

impl SpotPrice {
    pub fn parse(s: &str) -> Result<SpotPrice, String> {
        if s == "auto" {
            return Ok(SpotPrice::Auto);
        }
        match s.parse::<f64>() {
            Ok(p) if p > 0.0 && p.is_finite() && !s.contains(['e', 'E']) => {
                Ok(SpotPrice::Max(s.to_string()))
            }
            _ => Err(format!(
                "`spot_price = \"{s}\"` is not \"auto\" or a price in USD per hour such as \"0.05\""
            )),
        }
    }
}

/// How the instance is bought.
#[derive(Debug, Clone, PartialEq)]
pub struct SpotPlan {
    pub price: SpotPrice,
    /// In order of preference; never empty.
    pub types: Vec<String>,
    /// Run on demand (the first type) when no type has spot capacity.
    pub fallback_on_demand: bool,
}

/// The spot settings as the template gives them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SpotSettings {
    pub spot_price: Option<String>,
    #[serde(default)]
    pub spot_instance_types: Vec<String>,
    pub spot_fallback_on_demand: Option<bool>,
}

impl SpotSettings {
    /// The plan, or `None` for an on-demand build. `instance_type` is the
    /// source's own (or kiln's default).
    pub fn plan(&self, instance_type: Option<&str>) -> Result<Option<SpotPlan>, String> {
        let Some(price) = &self.spot_price else {
            if !self.spot_instance_types.is_empty() {
                return Err(
                    "`spot_instance_types` needs `spot_price` (\"auto\" or a maximum price)".into(),
                );
            }
            if self.spot_fallback_on_demand.is_some() {
                return Err("`spot_fallback_on_demand` needs `spot_price`".into());
            }
            return Ok(None);
        };
        let price = SpotPrice::parse(price)?;
        let types = match (instance_type, self.spot_instance_types.as_slice()) {
            (Some(_), [_, ..]) => {
                return Err(
                    "`instance_type` and `spot_instance_types` are both set: give one (the spot types are tried in order)".into(),
                )
            }
            (Some(t), []) => vec![t.to_string()],
            (None, []) => vec![super::DEFAULT_INSTANCE_TYPE.to_string()],
            (None, list) => {
                let mut seen = std::collections::BTreeSet::new();
                if let Some(dup) = list.iter().find(|t| !seen.insert(t.as_str())) {
                    return Err(format!("`spot_instance_types` names `{dup}` twice"));
                }
                list.to_vec()
            }
        };
        Ok(Some(SpotPlan {
            price,
            types,
            fallback_on_demand: self.spot_fallback_on_demand.unwrap_or(false),
        }))
    }
}

/// EC2 error codes that mean "no spot capacity for this type at this
/// price now" — the next type, then on demand (when allowed), may work.
/// Anything else (a bad AMI, a missing permission) fails the build at once.
pub const CAPACITY_ERRORS: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded",
    "InsufficientFreeAddressesInSubnet",
    "UnfulfillableCapacity",
    "capacity-not-available",
    "price-too-low",
    "capacity-oversubscribed",
];

pub fn is_capacity_error(code: Option<&str>) -> bool {
    code.is_some_and(|c| CAPACITY_ERRORS.contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(price: Option<&str>, types: &[&str], fallback: Option<bool>) -> SpotSettings {
        SpotSettings {
            spot_price: price.map(str::to_string),
            spot_instance_types: types.iter().map(|s| s.to_string()).collect(),
            spot_fallback_on_demand: fallback,
        }
    }

    #[test]
    fn prices_are_auto_or_a_positive_decimal() {
        assert_eq!(SpotPrice::parse("auto"), Ok(SpotPrice::Auto));
        assert_eq!(
            SpotPrice::parse("0.0125"),
            Ok(SpotPrice::Max("0.0125".into()))
        );
        for bad in ["", "0", "-1", "cheap", "1e3", "NaN", "inf"] {
            assert!(SpotPrice::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_plan_takes_the_types_in_order_and_refuses_contradictions() {
        assert_eq!(settings(None, &[], None).plan(Some("t3.small")), Ok(None));
        let p = settings(Some("auto"), &["c6a.large", "m6a.large"], Some(true))
            .plan(None)
            .unwrap()
            .unwrap();
        assert_eq!(p.types, ["c6a.large", "m6a.large"]);
        assert!(p.fallback_on_demand);
        let p = settings(Some("0.02"), &[], None)
            .plan(Some("t3.small"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.types.as_slice(), p.fallback_on_demand),
            (&["t3.small".to_string()][..], false)
        );
        assert!(settings(None, &["t3.small"], None)
            .plan(None)
            .unwrap_err()
            .contains("needs `spot_price`"));
        assert!(settings(Some("auto"), &["t3.small"], None)
            .plan(Some("t3.micro"))
            .unwrap_err()
            .contains("both set"));
        assert!(settings(None, &[], Some(true))
            .plan(None)
            .unwrap_err()
            .contains("`spot_fallback_on_demand` needs"));
        assert!(settings(Some("auto"), &["a", "a"], None)
            .plan(None)
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn only_capacity_errors_move_on() {
        assert!(is_capacity_error(Some("InsufficientInstanceCapacity")));
        assert!(is_capacity_error(Some("SpotMaxPriceTooLow")));
        assert!(!is_capacity_error(Some("InvalidAMIID.NotFound")));
        assert!(!is_capacity_error(None));
    }
}
