//! Loading a service's configuration: defaults, then a TOML file, then
//! environment variables (`GOVBUS_` prefix, `__` between levels, e.g.
//! `GOVBUS_KAFKA__BOOTSTRAP_SERVERS=kafka:9092`).

use std::path::Path;

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

/// Why a configuration could not be loaded. The message names the key and
/// the source (file or environment variable) at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Loads `T` from its defaults, the optional TOML `file`, and the environment.
pub fn load<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Serialize + for<'de> Deserialize<'de> + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        if !file.exists() {
            return Err(ConfigError(format!(
                "configuration file {} does not exist",
                file.display()
            )));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = figment.merge(Env::prefixed("GOVBUS_").split("__"));
    figment
        .extract()
        .map_err(|e| ConfigError(e.to_string().replace('\n', "; ")))
}
