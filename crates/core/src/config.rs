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
    // GOVBUS_CONFIG names the file itself; it is not a setting.
    figment = figment.merge(Env::prefixed("GOVBUS_").ignore(&["config"]).split("__"));
    figment
        .extract()
        .map_err(|e| ConfigError(e.to_string().replace('\n', "; ")))
}

// figment::Error is what Jail closures must return; its size is not ours to choose.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use std::collections::BTreeMap;

    use figment::Jail;

    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        listen: String,
        kafka: Nested,
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Nested {
        bootstrap_servers: String,
        client: BTreeMap<String, String>,
    }

    #[test]
    fn file_then_environment() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "govbus.toml",
                "listen = \"127.0.0.1:1\"\n[kafka]\nbootstrap_servers = \"a:1\"\n",
            )?;
            jail.set_env("GOVBUS_KAFKA__BOOTSTRAP_SERVERS", "b:2");
            jail.set_env("GOVBUS_KAFKA__CLIENT__SECURITY_PROTOCOL", "ssl");
            jail.set_env("GOVBUS_CONFIG", "govbus.toml");
            let s: Sample = load(Some(Path::new("govbus.toml"))).unwrap();
            assert_eq!(s.listen, "127.0.0.1:1");
            assert_eq!(s.kafka.bootstrap_servers, "b:2");
            assert_eq!(s.kafka.client["security_protocol"], "ssl");
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_problem() {
        Jail::expect_with(|jail| {
            let missing = load::<Sample>(Some(Path::new("nope.toml"))).unwrap_err();
            assert!(
                missing.to_string().contains("nope.toml does not exist"),
                "{missing}"
            );

            jail.create_file("bad.toml", "lisen = \"x\"\n")?;
            let unknown = load::<Sample>(Some(Path::new("bad.toml"))).unwrap_err();
            assert!(unknown.to_string().contains("lisen"), "{unknown}");
            Ok(())
        });
    }
}
