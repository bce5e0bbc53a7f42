//! PostgreSQL, apart from replication: connections, catalogs, quoting, TLS,
//! installing the bridge's objects (`setup`), its own bookkeeping tables,
//! and the tenant registry.

pub(crate) mod bridge_schema;
mod catalog;
mod connection;
pub(crate) mod directions;
pub(crate) mod leases;
mod quoting;
pub(crate) mod registry;
pub mod session;
pub mod setup;
pub(crate) mod tls;

pub(crate) use catalog::{table_columns, type_name, ColumnInfo};
pub(crate) use connection::{
    class_of_pg, class_of_sqlstate, connect, database_name, describe, DbError,
};
pub(crate) use quoting::{quote_ident, quote_literal, quote_qualified};
