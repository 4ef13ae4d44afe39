//! What the operator knows and keeps in the Kubernetes API: the
//! `MayastorPool` resource type ([`crd`]), the watch caches of resources and
//! Nodes ([`cache`]), the durable ledger of the pools it created
//! ([`ledger`]), the Events it publishes ([`events`]), and the format
//! versions of what it keeps ([`format`]).

pub mod cache;
pub mod crd;
pub mod events;
pub mod format;
pub mod ledger;
