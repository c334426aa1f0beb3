//! `launch_block_device_mappings` and `ami_block_device_mappings`: the
//! volumes of the build instance and of the image, in Packer's shape — one
//! table per device — typed in the schema (a misspelled key is an error
//! with its place), checked here before anything launches (what EC2 would
//! refuse only after the instance was paid for), and turned into the
//! `BlockDeviceMapping`s RunInstances and CreateImage take.

use serde::Deserialize;

use crate::template::schema::{Field, Kind};

/// The EBS volume types EC2 takes.
pub const VOLUME_TYPES: &[&str] = &["standard", "gp2", "gp3", "io1", "io2", "sc1", "st1"];

/// One device's settings (see docs/templates.md, "AMI sources").
pub const DEVICE_FIELDS: &[Field] = &[
    Field::req("device_name", Kind::Str),
    Field::opt("volume_size", Kind::Int),
    Field::opt("volume_type", Kind::Enum(VOLUME_TYPES)),
    Field::opt("iops", Kind::Int),
    Field::opt("throughput", Kind::Int),
    Field::opt("delete_on_termination", Kind::Bool),
    Field::opt("encrypted", Kind::Bool),
    Field::opt("kms_key_id", Kind::Str),
    Field::opt("snapshot_id", Kind::Str),
    Field::opt("no_device", Kind::Bool),
    Field::opt("virtual_name", Kind::Str),
];

/// A list of device tables.
pub const DEVICES: Kind = Kind::List(&Kind::Table(DEVICE_FIELDS));

/// One entry of a block device mapping list.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct BlockDevice {
    pub device_name: String,
    /// GiB.
    pub volume_size: Option<i32>,
    pub volume_type: Option<String>,
    pub iops: Option<i32>,
    /// MiB/s (gp3 only).
    pub throughput: Option<i32>,
    pub delete_on_termination: Option<bool>,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
    pub snapshot_id: Option<String>,
    /// Leave the device out (of the image's mapping, or the base's).
    #[serde(default)]
    pub no_device: bool,
    /// An instance store volume (`ephemeral0` …) instead of EBS.
    pub virtual_name: Option<String>,
}

impl BlockDevice {
    fn has_ebs_settings(&self) -> bool {
        self.volume_size.is_some()
            || self.volume_type.is_some()
            || self.iops.is_some()
            || self.throughput.is_some()
            || self.delete_on_termination.is_some()
            || self.encrypted.is_some()
            || self.kms_key_id.is_some()
            || self.snapshot_id.is_some()
    }

    /// What EC2 would refuse, or what would silently not do what it says,
    /// as one message naming the list, the device and the value.
    pub fn check(&self, list: &str) -> Result<(), String> {
        let dev = &self.device_name;
        let at = format!("`{list}` device `{dev}`");
        if !dev.starts_with("/dev/") && !dev.starts_with("xvd") && !dev.starts_with("sd") {
            return Err(format!(
                "{at}: `device_name` is a device such as `/dev/sdb` or `/dev/xvdb`"
            ));
        }
        if self.no_device && (self.has_ebs_settings() || self.virtual_name.is_some()) {
            return Err(format!(
                "{at}: `no_device = true` leaves the device out; it takes no other setting"
            ));
        }
        if let Some(v) = &self.virtual_name {
            if !v.starts_with("ephemeral") {
                return Err(format!(
                    "{at}: `virtual_name = \"{v}\"` is not an instance store name (`ephemeral0` …)"
                ));
            }
            if self.has_ebs_settings() {
                return Err(format!(
                    "{at}: `virtual_name` names an instance store volume, which takes no EBS setting (`volume_size`, `volume_type`, …)"
                ));
            }
        }
        let kind = self.volume_type.as_deref().unwrap_or("gp2");
        if let Some(iops) = self.iops {
            let (lo, hi) = match kind {
                "io1" => (100, 64_000),
                "io2" => (100, 256_000),
                "gp3" => (3_000, 80_000),
                other => {
                    return Err(format!(
                    "{at}: `iops = {iops}` needs `volume_type` io1, io2 or gp3 (it is {other}{})",
                    if self.volume_type.is_none() {
                        ", EC2's default"
                    } else {
                        ""
                    }
                ))
                }
            };
            if !(lo..=hi).contains(&iops) {
                return Err(format!(
                    "{at}: `iops = {iops}` is outside {lo}–{hi} for {kind}"
                ));
            }
        } else if matches!(kind, "io1" | "io2") && !self.no_device && self.snapshot_id.is_none() {
            return Err(format!("{at}: `volume_type = \"{kind}\"` needs `iops`"));
        }
        if let Some(t) = self.throughput {
            if kind != "gp3" {
                return Err(format!(
                    "{at}: `throughput = {t}` needs `volume_type = \"gp3\"`"
                ));
            }
            if !(125..=2_000).contains(&t) {
                return Err(format!(
                    "{at}: `throughput = {t}` is outside 125–2000 MiB/s"
                ));
            }
        }
        if let Some(size) = self.volume_size {
            if !(1..=65_536).contains(&size) {
                return Err(format!(
                    "{at}: `volume_size = {size}` is outside 1–65536 GiB"
                ));
            }
        }
        if self.kms_key_id.is_some() && self.encrypted == Some(false) {
            return Err(format!("{at}: `kms_key_id` is set but `encrypted = false`"));
        }
        if let Some(s) = &self.snapshot_id {
            if !s.starts_with("snap-") {
                return Err(format!(
                    "{at}: `snapshot_id = \"{s}\"` is not a snapshot id (`snap-…`)"
                ));
            }
        }
        Ok(())
    }
}

/// Checks a whole list: each device, and each device named once.
pub fn check_all(list: &str, devices: &[BlockDevice]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for d in devices {
        d.check(list)?;
        if !seen.insert(normalise(&d.device_name)) {
            return Err(format!("`{list}` names device `{}` twice", d.device_name));
        }
    }
    Ok(())
}

/// `/dev/sdb` and `sdb` are the same device.
pub fn normalise(dev: &str) -> &str {
    dev.strip_prefix("/dev/").unwrap_or(dev)
}

#[cfg(feature = "ami")]
pub use sdk::{ami_mapping, launch_mapping};

#[cfg(feature = "ami")]
mod sdk {
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, VolumeType};

    use super::BlockDevice;

    fn ebs(
        d: &BlockDevice,
        encrypted: Option<bool>,
        kms: Option<&str>,
        delete: Option<bool>,
    ) -> EbsBlockDevice {
        EbsBlockDevice::builder()
            .set_volume_size(d.volume_size)
            .set_volume_type(d.volume_type.as_deref().map(VolumeType::from))
            .set_iops(d.iops)
            .set_throughput(d.throughput)
            .set_delete_on_termination(d.delete_on_termination.or(delete))
            .set_encrypted(d.encrypted.or(encrypted))
            // A key belongs to an encrypted volume only.
            .set_kms_key_id(d.kms_key_id.clone().or_else(|| {
                kms.filter(|_| d.encrypted.or(encrypted) == Some(true))
                    .map(str::to_string)
            }))
            .set_snapshot_id(d.snapshot_id.clone())
            .build()
    }

    fn mapping(d: &BlockDevice, e: Option<EbsBlockDevice>) -> BlockDeviceMapping {
        let b = BlockDeviceMapping::builder().device_name(&d.device_name);
        if d.no_device {
            return b.no_device("").build();
        }
        if let Some(v) = &d.virtual_name {
            return b.virtual_name(v).build();
        }
        b.set_ebs(e).build()
    }

    /// A `launch_block_device_mappings` entry for RunInstances: EBS
    /// volumes are encrypted (with the source's `kms_key_id`) and deleted
    /// with the instance unless the entry says otherwise — kiln's defaults,
    /// as for the root volume.
    pub fn launch_mapping(
        d: &BlockDevice,
        encrypted: bool,
        kms: Option<&str>,
    ) -> BlockDeviceMapping {
        mapping(d, Some(ebs(d, Some(encrypted), kms, Some(true))))
    }

    /// An `ami_block_device_mappings` entry for CreateImage, as given: EC2
    /// takes only `delete_on_termination` for a volume the instance has,
    /// and new (empty or snapshot) volumes, instance store devices and
    /// `no_device` exclusions otherwise.
    pub fn ami_mapping(d: &BlockDevice) -> BlockDeviceMapping {
        mapping(d, Some(ebs(d, None, None, None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str) -> BlockDevice {
        BlockDevice {
            device_name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn iops_and_throughput_only_where_the_volume_type_takes_them() {
        let gp3 = BlockDevice {
            volume_type: Some("gp3".into()),
            iops: Some(4000),
            throughput: Some(250),
            volume_size: Some(100),
            ..dev("/dev/sdb")
        };
        assert_eq!(gp3.check("launch_block_device_mappings"), Ok(()));
        let gp2 = BlockDevice {
            volume_type: Some("gp2".into()),
            ..gp3.clone()
        };
        let e = gp2.check("launch_block_device_mappings").unwrap_err();
        assert!(
            e.contains("`iops = 4000` needs `volume_type` io1, io2 or gp3")
                && e.contains("/dev/sdb"),
            "{e}"
        );
        let default_type = BlockDevice {
            iops: Some(3000),
            ..dev("/dev/sdc")
        };
        assert!(default_type
            .check("x")
            .unwrap_err()
            .contains("EC2's default"));
        let tp = BlockDevice {
            volume_type: Some("io2".into()),
            iops: Some(1000),
            throughput: Some(300),
            ..dev("/dev/sdd")
        };
        assert!(tp
            .check("x")
            .unwrap_err()
            .contains("`throughput = 300` needs `volume_type = \"gp3\"`"));
        let io1 = BlockDevice {
            volume_type: Some("io1".into()),
            ..dev("/dev/sde")
        };
        assert!(io1.check("x").unwrap_err().contains("needs `iops`"));
    }

    #[test]
    fn no_device_and_instance_store_take_no_ebs_settings() {
        let nd = BlockDevice {
            no_device: true,
            volume_size: Some(8),
            ..dev("/dev/sdf")
        };
        assert!(nd
            .check("ami_block_device_mappings")
            .unwrap_err()
            .contains("`no_device = true`"));
        let eph = BlockDevice {
            virtual_name: Some("ephemeral0".into()),
            encrypted: Some(true),
            ..dev("/dev/sdg")
        };
        assert!(eph.check("x").unwrap_err().contains("instance store"));
        let ok = BlockDevice {
            virtual_name: Some("ephemeral0".into()),
            ..dev("/dev/sdg")
        };
        assert_eq!(ok.check("x"), Ok(()));
        assert!(dev("disk1")
            .check("x")
            .unwrap_err()
            .contains("`device_name`"));
    }

    #[test]
    fn a_device_named_twice_is_refused() {
        let e = check_all(
            "launch_block_device_mappings",
            &[dev("/dev/sdb"), dev("sdb")],
        )
        .unwrap_err();
        assert!(e.contains("names device `sdb` twice"), "{e}");
    }

    #[cfg(feature = "ami")]
    #[test]
    fn launch_volumes_are_encrypted_and_deleted_with_the_instance_by_default() {
        let m = launch_mapping(
            &BlockDevice {
                volume_size: Some(20),
                ..dev("/dev/sdb")
            },
            true,
            Some("alias/build"),
        );
        let e = m.ebs().unwrap();
        assert_eq!(e.encrypted(), Some(true));
        assert_eq!(e.kms_key_id(), Some("alias/build"));
        assert_eq!(e.delete_on_termination(), Some(true));
        assert_eq!(e.volume_size(), Some(20));
        let kept = launch_mapping(
            &BlockDevice {
                delete_on_termination: Some(false),
                encrypted: Some(false),
                ..dev("/dev/sdc")
            },
            true,
            Some("alias/build"),
        );
        let e = kept.ebs().unwrap();
        assert_eq!(
            (e.encrypted(), e.kms_key_id(), e.delete_on_termination()),
            (Some(false), None, Some(false))
        );
        let gone = ami_mapping(&BlockDevice {
            no_device: true,
            ..dev("/dev/sdd")
        });
        assert_eq!(gone.no_device(), Some(""));
        assert!(gone.ebs().is_none());
    }
}
