//! The integration tests: real PostgreSQL and real Kafka, started by
//! `scripts/test.sh`. One test binary, so librdkafka is linked once; its
//! tests run in parallel threads, so no test may disturb what the others
//! share (see `support`).

mod support;

mod adversity;
mod bad_input;
mod bidirectional;
mod browser;
mod cli;
mod connections;
mod consistency;
mod convergence;
mod crash;
mod dashboard;
mod dead_letters;
mod failures;
mod http;
mod instances;
mod kafka_outage;
mod kafka_stall;
mod least_privilege;
mod limits;
mod monitoring;
mod pipeline;
mod races;
mod replay;
mod restart;
mod routing;
mod secrets;
mod slots;
mod tls;
