//! Unit tests of the services with mockall mocks of every port: a module per concern, as in
//! the service, sharing the mocks and fixtures of `helpers`.

mod attempt;
mod batch;
mod devices;
mod helpers;
mod keys;
mod messages;
mod reports;
mod send;
