//! Where the build instance goes when the template names its network by
//! filters, in Packer's shape: `vpc_filter` picks exactly one VPC,
//! `subnet_filter` one subnet (in that VPC when both are given; several
//! matches need `most_free` or `random`), a `vpc_filter` alone the subnet
//! of that VPC with the most free addresses, and `security_group_filter`
//! every matching group of the instance's VPC — used as they are, so kiln
//! makes no group of its own and its no-ingress guarantee no longer holds.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::template::schema::{Field, Kind, STR_MAP};

/// `subnet_filter`'s keys.
pub const SUBNET_FILTER: &[Field] = &[
    Field::req("filters", STR_MAP),
    Field::opt("most_free", Kind::Bool),
    Field::opt("random", Kind::Bool),
];

/// `vpc_filter`'s and `security_group_filter`'s keys.
pub const FILTER: &[Field] = &[Field::req("filters", STR_MAP)];

/// EC2 Describe* filters (`name = value`, e.g. `"tag:Class" = "build"`),
/// with Packer's choice among several subnets.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct NetFilter {
    #[serde(default)]
    pub filters: BTreeMap<String, String>,
    #[serde(default)]
    pub most_free: bool,
    #[serde(default)]
    pub random: bool,
}

impl NetFilter {
    /// How the filter is named in messages: `subnet_filter { tag:Class = "build" }`.
    pub fn shown(&self, field: &str) -> String {
        let inner: Vec<String> = self
            .filters
            .iter()
            .map(|(k, v)| format!("{k} = \"{v}\""))
            .collect();
        format!("`{field}` {{ {} }}", inner.join(", "))
    }
}

/// A candidate subnet: its id and how many addresses it has free.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    pub free: i32,
}

/// The one subnet a filter means: the only match; with `most_free` the
/// one with the most free addresses (ties by id, so the answer never
/// depends on listing order); with `random` any, uniformly. `Err(n)`: `n`
/// matches and no single answer.
pub fn choose(
    mut found: Vec<Candidate>,
    most_free: bool,
    random: bool,
) -> Result<Candidate, usize> {
    found.sort_by(|a, b| b.free.cmp(&a.free).then_with(|| a.id.cmp(&b.id)));
    match found.len() {
        0 => Err(0),
        1 => Ok(found.remove(0)),
        n if random => Ok(found.remove((uuid::Uuid::new_v4().as_u128() % n as u128) as usize)),
        _ if most_free => Ok(found.remove(0)),
        n => Err(n),
    }
}

#[cfg(feature = "ami")]
pub use sdk::{place, security_groups, Placement};

#[cfg(feature = "ami")]
mod sdk {
    use aws_sdk_ec2::types::Filter;

    use super::{choose, Candidate, NetFilter};
    use crate::builder::ami::aws::{describe, Clients};
    use crate::builder::ami::AmiSettings;
    use crate::builder::BuildError;

    fn filters(f: &NetFilter, vpc: Option<&str>) -> Vec<Filter> {
        f.filters
            .iter()
            .map(|(k, v)| Filter::builder().name(k).values(v).build())
            .chain(vpc.map(|v| Filter::builder().name("vpc-id").values(v).build()))
            .collect()
    }

    /// The network the filters picked.
    #[derive(Debug, Clone, Default)]
    pub struct Placement {
        /// The subnet to launch in (`None`: the default VPC's choice).
        pub subnet: Option<String>,
        /// What was picked, for the build's output.
        pub said: Vec<String>,
    }

    /// Resolves `vpc_filter` and `subnet_filter` (`subnet_id` wins: both
    /// together are refused in preflight).
    pub async fn place(aws: &Clients, s: &AmiSettings) -> Result<Placement, BuildError> {
        let region = &aws.target.region;
        let mut out = Placement {
            subnet: s.subnet_id.clone(),
            said: vec![],
        };
        let vpc = match &s.vpc_filter {
            None => None,
            Some(f) => {
                let got = aws
                    .ec2
                    .describe_vpcs()
                    .set_filters(Some(filters(f, None)))
                    .send()
                    .await
                    .map_err(|e| {
                        BuildError::Config(format!("{}: {}", f.shown("vpc_filter"), describe(&e)))
                    })?;
                let ids: Vec<&str> = got.vpcs().iter().filter_map(|v| v.vpc_id()).collect();
                match ids.as_slice() {
                    [one] => {
                        out.said.push(format!("VPC {one} (vpc_filter)"));
                        Some(one.to_string())
                    }
                    [] => {
                        return Err(BuildError::Config(format!(
                            "no VPC in {region} matches {}",
                            f.shown("vpc_filter")
                        )))
                    }
                    many => {
                        return Err(BuildError::Config(format!(
                            "{} VPCs in {region} match {} ({}); exactly one must",
                            many.len(),
                            f.shown("vpc_filter"),
                            many.join(", ")
                        )))
                    }
                }
            }
        };
        let (subnet_filter, which) = match (&s.subnet_filter, &vpc) {
            (Some(f), _) => (f.clone(), "subnet_filter".to_string()),
            // A VPC alone: its subnet with the most free addresses.
            (None, Some(_)) => (
                NetFilter {
                    most_free: true,
                    ..Default::default()
                },
                "vpc_filter".to_string(),
            ),
            (None, None) => return Ok(out),
        };
        let got = aws
            .ec2
            .describe_subnets()
            .set_filters(Some(filters(&subnet_filter, vpc.as_deref())))
            .send()
            .await
            .map_err(|e| {
                BuildError::Config(format!("{}: {}", subnet_filter.shown(&which), describe(&e)))
            })?;
        let found: Vec<Candidate> = got
            .subnets()
            .iter()
            .filter_map(|sn| {
                Some(Candidate {
                    id: sn.subnet_id()?.to_string(),
                    free: sn.available_ip_address_count().unwrap_or(0),
                })
            })
            .collect();
        let ids: Vec<String> = found.iter().map(|c| c.id.clone()).collect();
        let within = vpc
            .as_deref()
            .map(|v| format!(" in {v}"))
            .unwrap_or_default();
        let shown = match which.as_str() {
            "subnet_filter" => subnet_filter.shown("subnet_filter"),
            _ => "the `vpc_filter`".to_string(),
        };
        match choose(found, subnet_filter.most_free, subnet_filter.random) {
            Ok(c) => {
                let how = match (ids.len(), subnet_filter.random) {
                    (1, _) => "the only match",
                    (_, true) => "picked at random",
                    _ => "the most free addresses",
                };
                out.said.push(format!(
                    "subnet {} ({which}: {how}, {} addresses free)",
                    c.id, c.free
                ));
                out.subnet = Some(c.id);
                Ok(out)
            }
            Err(0) => Err(BuildError::Config(format!(
                "no subnet in {region}{within} matches {shown}"
            ))),
            Err(n) => Err(BuildError::Config(format!(
                "{n} subnets in {region}{within} match {shown} ({}); set `most_free = true` or `random = true`, or narrow the filter",
                ids.join(", ")
            ))),
        }
    }

    /// Every group of `vpc` that `security_group_filter` matches (at least one).
    pub async fn security_groups(
        aws: &Clients,
        f: &NetFilter,
        vpc: &str,
    ) -> Result<Vec<String>, BuildError> {
        let got = aws
            .ec2
            .describe_security_groups()
            .set_filters(Some(filters(f, Some(vpc))))
            .send()
            .await
            .map_err(|e| {
                BuildError::Config(format!(
                    "{}: {}",
                    f.shown("security_group_filter"),
                    describe(&e)
                ))
            })?;
        let mut ids: Vec<String> = got
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect();
        ids.sort();
        if ids.is_empty() {
            return Err(BuildError::Config(format!(
                "no security group in {vpc} ({}) matches {}",
                aws.target.region,
                f.shown("security_group_filter")
            )));
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, free: i32) -> Candidate {
        Candidate {
            id: id.into(),
            free,
        }
    }

    #[test]
    fn one_match_most_free_or_random_else_the_count() {
        let two = || vec![c("subnet-b", 250), c("subnet-a", 4000)];
        assert_eq!(choose(two(), false, false), Err(2));
        assert_eq!(choose(vec![], true, true), Err(0));
        assert_eq!(choose(two(), true, false).unwrap().id, "subnet-a");
        assert_eq!(
            choose(vec![c("subnet-x", 1)], false, false).unwrap().id,
            "subnet-x"
        );
        // A tie is broken by id.
        assert_eq!(
            choose(vec![c("subnet-z", 9), c("subnet-y", 9)], true, false)
                .unwrap()
                .id,
            "subnet-y"
        );
        // Random: both come up over enough draws.
        let picked: std::collections::BTreeSet<String> = (0..64)
            .map(|_| choose(two(), false, true).unwrap().id)
            .collect();
        assert_eq!(picked.len(), 2, "{picked:?}");
    }

    #[test]
    fn filters_are_shown_by_field_and_values() {
        let f = NetFilter {
            filters: [("tag:Class".to_string(), "build".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(
            f.shown("subnet_filter"),
            "`subnet_filter` { tag:Class = \"build\" }"
        );
    }
}
