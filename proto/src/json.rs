//! Lenient JSON helpers shared by the serde types of IDENTIFY, AUTH and lookup.
//!
//! Go's `encoding/json` leaves a field at its zero value when the key is missing or its value is
//! `null`, and ignores unknown keys. The serde types here do the same: `#[serde(default)]` on the
//! struct covers missing keys, serde ignores unknown keys by default, and [`null_as_default`]
//! covers explicit `null`.

use serde::{Deserialize, Deserializer};

/// Deserializes `T`, reading JSON `null` as `T::default()`.
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}
