//! Closed sets with one name per member: the name a config file, the
//! command line, a manifest and a report all use. Each set defines its
//! names once ([`Named::name`]); [`named_set!`] derives parsing
//! (`FromStr`), printing (`Display`), serde and clap from them, so no
//! caller compares a member's name as a string.

/// A closed set whose members each have one name.
pub trait Named: Copy + Eq + 'static {
    /// What one member is called in messages ("format", "boot mode").
    const WHAT: &'static str;
    /// Every member, in the order they are listed to users.
    const MEMBERS: &'static [Self];

    /// The member's name.
    fn name(self) -> &'static str;

    /// The member called `name`, if any.
    fn named(name: &str) -> Option<Self> {
        Self::MEMBERS.iter().copied().find(|m| m.name() == name)
    }

    /// Every member's name, in order.
    fn names() -> Vec<&'static str> {
        Self::MEMBERS.iter().map(|m| m.name()).collect()
    }
}

/// A name that is no member of the set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}; {what}s: {known}")]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
    /// The members' names, comma-separated.
    pub known: String,
}

/// Parse `name` as a member of `T`.
pub fn parse<T: Named>(name: &str) -> Result<T, UnknownName> {
    T::named(name).ok_or_else(|| UnknownName {
        what: T::WHAT,
        name: name.to_string(),
        known: T::names().join(", "),
    })
}

/// Implements `Display`, `FromStr`, `Serialize`, `Deserialize` and
/// `clap::ValueEnum` for a type through its [`Named`] names.
#[macro_export]
macro_rules! named_set {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::names::Named::name(*self))
            }
        }

        impl std::str::FromStr for $t {
            type Err = $crate::names::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::names::parse(s)
            }
        }

        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($crate::names::Named::name(*self))
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $crate::names::parse(&name).map_err(serde::de::Error::custom)
            }
        }

        impl clap::ValueEnum for $t {
            fn value_variants<'a>() -> &'a [Self] {
                <$t as $crate::names::Named>::MEMBERS
            }
            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Some(clap::builder::PossibleValue::new(
                    $crate::names::Named::name(*self),
                ))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BootMode, Ec2BootMode, Format};

    #[test]
    fn every_name_round_trips_through_text_serde_and_clap() {
        for f in Format::MEMBERS {
            let json = serde_json::to_string(f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.name()));
            assert_eq!(serde_json::from_str::<Format>(&json).unwrap(), *f);
            assert_eq!(f.to_string().parse::<Format>().unwrap(), *f);
            let clap_name = clap::ValueEnum::to_possible_value(f).unwrap();
            assert_eq!(clap_name.get_name(), f.name());
        }
        assert_eq!(Format::DockerArchive.to_string(), "docker-archive");
        assert_eq!("bios".parse::<BootMode>().unwrap(), BootMode::Bios);
        assert_eq!(
            Ec2BootMode::named("legacy-bios"),
            Some(Ec2BootMode::LegacyBios)
        );
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let e = "qcow".parse::<Format>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown format \"qcow\"; formats: raw, qcow2, vmdk, vdi, ova, vagrant, oci, \
             docker-archive, sif, tarball"
        );
        assert!(serde_json::from_str::<Format>("\"iso\"").is_err());
    }
}
