//! The TOML shape of a declarative projection and its validation live in the contract crate
//! ([`factline_schemas::declarative`]), shared with the read API that serves the views; this
//! module re-exports them under their old path and checks the shipped configuration files.

pub use factline_schemas::declarative::*;

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn the_shipped_customer_search_config_is_valid() {
        let text = include_str!("../../config/customer_search.toml");
        let config = DeclarativeConfig::parse(text).unwrap();
        assert_eq!(config.sink, SinkKind::Elasticsearch);
        assert_eq!(config.indices[0].id, "customer_id");
        let broken = text.replacen("id = \"customer_id\"", "id = \"name\"", 1);
        assert!(DeclarativeConfig::parse(&broken).is_err());
    }

    #[test]
    fn the_shipped_customer_directory_config_is_valid() {
        let text = include_str!("../../config/customer_directory.toml");
        let config = DeclarativeConfig::parse(text).unwrap();
        assert_eq!(config.name, "customer_directory");
        assert_eq!(
            config.event_types(),
            vec![
                "CustomerEmailChanged",
                "CustomerForgotten",
                "CustomerRegistered"
            ]
        );
    }
}
