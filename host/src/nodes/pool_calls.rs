//! Pool calls made idempotent over the real io-engine's answers, so that a
//! retry (after a crash, a timeout, a lost reply) ends where the first call
//! would have:
//! - CreatePool or ImportPool answering ALREADY_EXISTS is success when the
//!   node then lists a pool of that name on the same disks (the engine has
//!   it loaded) and, when a uuid was asked for, of that uuid; with other
//!   disks it stays the error it is; a pool of another uuid is
//!   [`Loaded::Foreign`] (see [`pool_identity`]);
//! - DestroyPool is sent only after the data safety rail listed the pool
//!   loaded and empty (or the admin purged it). The engine does not load
//!   pools by itself after a restart, so a pool it does not list may only
//!   be "not loaded": on v1 the pool is imported from the disks it was
//!   created on, checked, and destroyed; only when that import finds no
//!   such pool there is it gone: INVALID_ARGUMENT (the io-engine finds no
//!   pool of that name on the disk, or the disk busy with another pool),
//!   FAILED_PRECONDITION (the stand-in finds something else on it).
//!   NOT_FOUND from the import names a device that is not there (yet: a
//!   by-id link after a reboot), which says nothing about the pool: like
//!   other errors (unavailable, deadline, internal) it is retried, and the
//!   ledger entry stays. v0 has no import (its CreatePool could format the
//!   disk), so there a pool not loaded cannot be checked and is kept.

use std::time::Duration;

use msp_policy_sdk::model::ErrorKind;

use crate::nodes::client::NodePool;

pub use crate::nodes::client::Load;
use crate::nodes::client::{NodeClient, NodeError, PoolContent, disk_path};
use crate::nodes::data_safety::{self, Contents};
use crate::nodes::disk_identity;
use crate::nodes::pool_identity;
use crate::state::ledger::DiskId;

/// What [`load_pool`] found.
#[derive(Debug, PartialEq)]
pub enum Loaded {
    /// The pool, loaded.
    Pool(NodePool),
    /// The disks hold a pool of this name with this other uuid: not the one
    /// asked for, left as it is ([`pool_identity`]).
    Foreign(String),
}

/// CreatePool or ImportPool, of the pool of `uuid` when given; an
/// ALREADY_EXISTS for this very pool (same disks, and same uuid when given)
/// is its listing. `timeout` bounds the listings.
pub async fn load_pool(
    client: &NodeClient,
    load: Load,
    name: &str,
    uuid: Option<&str>,
    disks: &[String],
    timeout: Duration,
) -> Result<Loaded, NodeError> {
    match client.load_pool(load, name, uuid, disks).await {
        Ok(pool) => Ok(Loaded::Pool(pool)),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {
            match client.list_pools(timeout).await {
                Ok(pools) => match pools
                    .into_iter()
                    .find(|p| p.name == name && same_disks(&p.disks, disks))
                {
                    Some(pool) => {
                        // The engine answers ALREADY_EXISTS for a loaded
                        // pool of the name whatever its uuid.
                        if let Some(want) = uuid
                            && let Some(found) = client.identify(name, timeout).await?
                            && let Some(found) = found.uuid
                            && !found.eq_ignore_ascii_case(want)
                        {
                            return Ok(Loaded::Foreign(found));
                        }
                        tracing::debug!(pool = name, "already loaded on its disks: success");
                        Ok(Loaded::Pool(pool))
                    }
                    None => Err(err),
                },
                Err(list_err) => {
                    tracing::debug!(error = %list_err, "listing after ALREADY_EXISTS failed");
                    Err(err)
                }
            }
        }
        Err(err) => match uuid.and_then(|want| pool_identity::found_uuid(&err, want)) {
            Some(found) => Ok(Loaded::Foreign(found)),
            None => Err(err),
        },
    }
}

/// What [`destroy_pool`] did.
#[derive(Debug, PartialEq)]
pub enum Destroyed {
    /// The pool was destroyed, with what it held (empty unless purged).
    Destroyed(Vec<PoolContent>),
    /// There was no such pool to destroy.
    Gone,
    /// Kept: it holds data, or could not be checked (the data safety rail).
    Kept(Contents),
    /// The node's loaded pool of this name is another (it has another uuid,
    /// or is on other disks: what, as a phrase); left alone.
    Other(String),
}

/// DestroyPool behind the data safety rail ([`data_safety`]): only a pool
/// listed empty is destroyed, unless `purge`. Success when the pool is gone
/// (see the module doc); a pool not loaded is loaded (v1 import) to be
/// checked. `disks` are those the pool was created on, `uuid` its uuid when
/// known (a loaded pool of another uuid is [`Destroyed::Other`], one not
/// loaded is imported only with this uuid), `pins` what identifies its
/// disks ([`disk_identity`]: a pool not loaded is imported only from the
/// pinned disks; their names before a path edit count as theirs);
/// `timeout` bounds each listing.
pub async fn destroy_pool(
    client: &NodeClient,
    name: &str,
    uuid: Option<&str>,
    disks: &[String],
    pins: &[DiskId],
    purge: bool,
    timeout: Duration,
) -> Result<Destroyed, NodeError> {
    // The node's pool of this name, if loaded, must be the one created.
    match client.identify(name, timeout).await {
        Err(err) => return Ok(Destroyed::Kept(Contents::Unknown(err.to_string()))),
        Ok(Some(found)) => {
            if let (Some(want), Some(has)) = (uuid, &found.uuid)
                && !has.eq_ignore_ascii_case(want)
            {
                return Ok(Destroyed::Other(format!("has uuid {has}")));
            }
            let mut names = disks.to_vec();
            names.extend(pins.iter().flat_map(|p| p.aliases.iter().cloned()));
            if !disks.is_empty() && !overlap(&found.disks, &names) {
                return Ok(Destroyed::Other(format!(
                    "is on {}",
                    found.disks.join(", ")
                )));
            }
        }
        Ok(None) => {}
    }
    let mut contents = data_safety::contents(client, name, timeout).await;
    if contents == Contents::NotLoaded {
        if client.may_format(Load::Import) || disks.is_empty() {
            // A pool not loaded can be loaded only by a CreatePool that may
            // format (v0): nothing is loaded to destroy, and nothing is
            // checked: kept.
            return Ok(Destroyed::Kept(contents));
        }
        // Never imported from a path that now names another disk (it would
        // find no pool there and take the pool for gone), nor while the
        // node's answer cannot tell: kept, and asked again.
        if disk_identity::identified(pins) {
            let listed = client
                .list_block_devices(timeout)
                .await
                .map_err(|e| e.to_string());
            let listed = listed.as_deref().map_err(String::as_str);
            if let Some(why) = disk_identity::refusal(disks, pins, listed) {
                return Ok(Destroyed::Kept(Contents::Unknown(why)));
            }
        }
        match client.import_pool(name, uuid, disks).await {
            Ok(_) => {}
            Err(import) if not_there(import.kind()) => {
                tracing::debug!(pool = name, error = %import, "not loaded and not on its disks: gone");
                return Ok(Destroyed::Gone);
            }
            // Already loaded (a race with a create): list again.
            Err(import) if import.kind() == ErrorKind::AlreadyExists => {}
            Err(import) => return Err(import),
        }
        contents = data_safety::contents(client, name, timeout).await;
    }
    let went = match contents {
        Contents::Empty => Vec::new(),
        Contents::Holds(list) if purge => list,
        Contents::Unknown(_) | Contents::NotLoaded if purge => Vec::new(),
        kept => return Ok(Destroyed::Kept(kept)),
    };
    match client.destroy_pool(name, uuid).await {
        Ok(()) => Ok(Destroyed::Destroyed(went)),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(Destroyed::Gone),
        Err(err) => Err(err),
    }
}

/// An ImportPool error that says the pool is not on the disks (a missing
/// device, NOT_FOUND, is not one: the pool may be on it when it appears).
fn not_there(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidArgument | ErrorKind::FailedPrecondition
    )
}

/// True when the two lists share a disk, whatever the URI form.
pub fn overlap(a: &[String], b: &[String]) -> bool {
    let b: Vec<String> = b.iter().map(|d| disk_path(d)).collect();
    a.iter().any(|d| b.contains(&disk_path(d)))
}

/// The same disks, whatever the URI form (`aio:///dev/sdb?uuid=…` is `/dev/sdb`).
fn same_disks(reported: &[String], wanted: &[String]) -> bool {
    let mut a: Vec<String> = reported.iter().map(|d| disk_path(d)).collect();
    let mut b: Vec<String> = wanted.iter().map(|d| disk_path(d)).collect();
    a.sort();
    b.sort();
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_compare_as_paths() {
        let s = |v: &[&str]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>();
        assert!(same_disks(
            &s(&["/dev/loop1"]),
            &s(&["aio:///dev/loop1?uuid=9"])
        ));
        assert!(same_disks(
            &s(&["/dev/b", "/dev/a"]),
            &s(&["/dev/a", "/dev/b"])
        ));
        assert!(!same_disks(&s(&["/dev/loop1"]), &s(&["/dev/loop2"])));
    }

    use msp_proto::v1 as pb;
    use pb::pool_rpc_server::{PoolRpc, PoolRpcServer};
    use tonic::{Request, Response, Status};

    /// A storage node whose pool's device is not there (yet): the pool is
    /// not loaded, and importing it finds no device.
    struct DeviceMissing;

    #[tonic::async_trait]
    impl PoolRpc for DeviceMissing {
        async fn create_pool(
            &self,
            _: Request<pb::CreatePoolRequest>,
        ) -> Result<Response<pb::Pool>, Status> {
            Err(Status::unimplemented("create"))
        }
        async fn destroy_pool(
            &self,
            _: Request<pb::DestroyPoolRequest>,
        ) -> Result<Response<()>, Status> {
            Err(Status::not_found("pool p not found"))
        }
        async fn export_pool(
            &self,
            _: Request<pb::ExportPoolRequest>,
        ) -> Result<Response<()>, Status> {
            Err(Status::unimplemented("export"))
        }
        async fn import_pool(
            &self,
            _: Request<pb::ImportPoolRequest>,
        ) -> Result<Response<pb::Pool>, Status> {
            Err(Status::not_found("/dev/disk/by-id/d1: no such device"))
        }
        async fn list_pools(
            &self,
            _: Request<pb::ListPoolOptions>,
        ) -> Result<Response<pb::ListPoolsResponse>, Status> {
            Ok(Response::new(pb::ListPoolsResponse::default()))
        }
        async fn grow_pool(
            &self,
            _: Request<pb::GrowPoolRequest>,
        ) -> Result<Response<pb::GrowPoolResponse>, Status> {
            Err(Status::unimplemented("grow"))
        }
    }

    /// It lists /dev/loop0 as another disk than the pool's (by-id B).
    #[tonic::async_trait]
    impl pb::host_rpc_server::HostRpc for DeviceMissing {
        async fn list_block_devices(
            &self,
            _: Request<pb::ListBlockDevicesRequest>,
        ) -> Result<Response<pb::ListBlockDevicesResponse>, Status> {
            Ok(Response::new(pb::ListBlockDevicesResponse {
                devices: vec![pb::BlockDevice {
                    devname: "/dev/loop0".into(),
                    devlinks: vec!["/dev/disk/by-id/b".into()],
                    available: true,
                    ..Default::default()
                }],
            }))
        }
    }

    /// Issue 26: a deleted resource's pool not loaded is imported (to be
    /// listed before its destroy) only from its pinned disk: a path that
    /// now names another disk keeps it, held with the reason, never taken
    /// for gone (nothing is imported: the import here would fail).
    #[tokio::test]
    async fn a_pool_is_imported_to_be_destroyed_only_from_its_pinned_disk() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PoolRpcServer::new(DeviceMissing))
                .add_service(pb::host_rpc_server::HostRpcServer::new(DeviceMissing))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let pins = [DiskId {
            disk: "/dev/loop0".into(),
            links: vec!["/dev/disk/by-id/a".into()],
            ..Default::default()
        }];
        let result = destroy_pool(
            &client_of(addr),
            "p",
            None,
            &["/dev/loop0".into()],
            &pins,
            false,
            Duration::from_secs(5),
        )
        .await;
        server.abort();
        let Ok(Destroyed::Kept(Contents::Unknown(why))) = result else {
            panic!("kept: {result:?}");
        };
        assert!(why.contains("/dev/loop0 is now another disk"), "{why}");
    }

    fn client_of(addr: std::net::SocketAddr) -> NodeClient {
        NodeClient::new(
            &addr.to_string(),
            crate::nodes::client::ApiVersion::V1,
            Duration::from_secs(2),
            Duration::from_secs(5),
        )
        .expect("client")
    }

    /// Issue 23 item 8: NOT_FOUND from the import is the device, not the
    /// pool: the destroy is not done (and the ledger entry stays).
    #[tokio::test]
    async fn a_missing_device_is_not_a_missing_pool() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PoolRpcServer::new(DeviceMissing))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let result = destroy_pool(
            &client_of(addr),
            "p",
            None,
            &["/dev/disk/by-id/d1".into()],
            &[],
            false,
            Duration::from_secs(5),
        )
        .await;
        server.abort();
        let err = result.expect_err("a pool whose device is missing was taken for gone");
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }

    /// Issue 23 item 8: a connection reset in the middle of an import (the
    /// storage node restarting) is transient, not a failure of the pool.
    #[tokio::test]
    async fn a_connection_reset_during_an_import_is_transient() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let resetter = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                // Take the request in, then reset the connection.
                let mut buf = [0u8; 4096];
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), socket.read(&mut buf)).await;
                let _ = socket.set_zero_linger();
                drop(socket);
            }
        });
        let result = client_of(addr)
            .import_pool("p", None, &["/dev/d1".into()])
            .await;
        resetter.abort();
        let err = result.expect_err("an import over a reset connection succeeded");
        assert!(
            matches!(
                err.kind(),
                ErrorKind::Unavailable | ErrorKind::DeadlineExceeded
            ),
            "a connection reset is {:?}: {err}",
            err.kind()
        );
    }

    #[test]
    fn only_definite_import_errors_mean_gone() {
        assert!(!not_there(ErrorKind::NotFound));
        assert!(not_there(ErrorKind::InvalidArgument));
        assert!(!not_there(ErrorKind::Unavailable));
        assert!(!not_there(ErrorKind::DeadlineExceeded));
        assert!(!not_there(ErrorKind::Internal));
    }
}
