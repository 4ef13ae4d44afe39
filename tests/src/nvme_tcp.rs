//! A minimal NVMe over TCP host, for writing and reading a replica's blocks
//! through the io-engine's NVMe-oF target on loopback: this kernel has no
//! nvme-tcp initiator (no modules at all), and the engine's own test service
//! cannot write a pattern (its `WipeReplica` WRITE_PATTERN is unimplemented
//! at the pinned commit).
//!
//! Only what that needs (NVMe/TCP 1.0, NVMe-oF 1.1): the initialize
//! connection exchange without digests, Fabrics Connect of the admin queue
//! and one I/O queue, Property Set/Get to enable the controller, Identify
//! Namespace for the block size, and Read and Write of namespace 1 with one
//! command in flight per queue. Writes carry their data in the capsule (at
//! most [`IN_CAPSULE`] bytes each, what the engine's target accepts); reads
//! take C2H data PDUs. No keep-alive (KATO 0).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most a write carries in its capsule (the engine's target's
/// `in_capsule_data_size`).
pub const IN_CAPSULE: usize = 4096;
/// Each call's bound.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The host's NQN and id (any fixed values: the engine shares to any host
/// when no allowed hosts are given).
const HOST_UUID: [u8; 16] = *b"msp-tests-host-1";
const HOST_NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6d73702d-7465-7374-732d-686f73742d31";

const PDU_IC_REQ: u8 = 0x00;
const PDU_IC_RESP: u8 = 0x01;
const PDU_TERM_C2H: u8 = 0x03;
const PDU_CAPSULE_CMD: u8 = 0x04;
const PDU_CAPSULE_RESP: u8 = 0x05;
const PDU_C2H_DATA: u8 = 0x07;
const PDU_R2T: u8 = 0x09;
/// C2H data flag: the command succeeded, no response capsule follows.
const C2H_SUCCESS: u8 = 0x08;

#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    #[error("NVMe/TCP I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("NVMe/TCP: no answer within {0:?}")]
    Timeout(Duration),
    #[error("NVMe/TCP protocol: {0}")]
    Protocol(String),
    #[error("NVMe command {what} failed: status type {sct}, code {sc:#x}")]
    Status {
        what: &'static str,
        sct: u16,
        sc: u16,
    },
}

/// One queue (a TCP connection).
struct Queue {
    stream: TcpStream,
    cid: u16,
}

/// A command's submission queue entry.
struct Sqe([u8; 64]);

impl Sqe {
    fn new(opcode: u8) -> Sqe {
        let mut b = [0u8; 64];
        b[0] = opcode;
        // PSDT 01b: SGLs (NVMe-oF uses SGLs only).
        b[1] = 0x40;
        Sqe(b)
    }

    fn put(&mut self, at: usize, bytes: &[u8]) -> &mut Sqe {
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
        self
    }

    /// SGL 1: `len` bytes in the capsule (data block, offset 0), or, for
    /// data the target sends, a transport data block.
    fn sgl(&mut self, len: usize, in_capsule: bool) -> &mut Sqe {
        self.put(32, &(len as u32).to_le_bytes());
        self.0[39] = if in_capsule { 0x01 } else { 0x5A };
        self
    }
}

impl Queue {
    async fn open(addr: SocketAddr) -> Result<Queue, NvmeError> {
        let mut stream = bounded(TcpStream::connect(addr)).await??;
        stream.set_nodelay(true)?;
        // ICReq: PFV 0, HPDA 0, no digests, MAXR2T 0.
        let mut ic = [0u8; 128];
        ic[0] = PDU_IC_REQ;
        ic[2] = 128;
        ic[4..8].copy_from_slice(&128u32.to_le_bytes());
        stream.write_all(&ic).await?;
        let mut resp = [0u8; 128];
        bounded(stream.read_exact(&mut resp)).await??;
        if resp[0] != PDU_IC_RESP {
            return Err(NvmeError::Protocol(format!(
                "expected ICResp, got PDU type {:#x}",
                resp[0]
            )));
        }
        if resp[11] != 0 {
            return Err(NvmeError::Protocol("the target wants digests".into()));
        }
        Ok(Queue { stream, cid: 0 })
    }

    /// Sends `sqe` (with `out` in the capsule, if any) and waits for its
    /// completion, gathering `data_in` bytes the target sends. Returns the
    /// completion's dword 0 and the data.
    async fn command(
        &mut self,
        what: &'static str,
        sqe: &mut Sqe,
        out: Option<&[u8]>,
        data_in: usize,
    ) -> Result<(u32, Vec<u8>), NvmeError> {
        self.cid = self.cid.wrapping_add(1);
        let cid = self.cid;
        sqe.put(2, &cid.to_le_bytes());
        match out {
            Some(data) => sqe.sgl(data.len(), true),
            None => sqe.sgl(data_in, false),
        };
        let data_len = out.map_or(0, <[u8]>::len);
        let mut pdu = Vec::with_capacity(72 + data_len);
        pdu.extend_from_slice(&[PDU_CAPSULE_CMD, 0, 72, if data_len > 0 { 72 } else { 0 }]);
        pdu.extend_from_slice(&((72 + data_len) as u32).to_le_bytes());
        pdu.extend_from_slice(&sqe.0);
        if let Some(data) = out {
            pdu.extend_from_slice(data);
        }
        self.stream.write_all(&pdu).await?;
        let mut data = vec![0u8; data_in];
        loop {
            let mut ch = [0u8; 8];
            bounded(self.stream.read_exact(&mut ch)).await??;
            let plen = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]) as usize;
            if !(8..=1 << 24).contains(&plen) {
                return Err(NvmeError::Protocol(format!("PDU length {plen}")));
            }
            let mut rest = vec![0u8; plen - 8];
            bounded(self.stream.read_exact(&mut rest)).await??;
            // The little-endian u32 at byte `at` of the PDU.
            let field = |at: usize| -> Result<u32, NvmeError> {
                rest.get(at - 8..at - 4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or_else(|| NvmeError::Protocol("short PDU".into()))
            };
            match ch[0] {
                PDU_C2H_DATA => {
                    let (offset, len) = (field(12)? as usize, field(16)? as usize);
                    let pdo = ch[3] as usize;
                    let src = rest
                        .get(pdo.saturating_sub(8)..pdo.saturating_sub(8) + len)
                        .ok_or_else(|| NvmeError::Protocol("short C2H data".into()))?;
                    data.get_mut(offset..offset + len)
                        .ok_or_else(|| NvmeError::Protocol("C2H data out of range".into()))?
                        .copy_from_slice(src);
                    if ch[1] & C2H_SUCCESS != 0 {
                        return Ok((0, data));
                    }
                }
                PDU_CAPSULE_RESP => {
                    let cqe = rest
                        .get(..16)
                        .ok_or_else(|| NvmeError::Protocol("short response".into()))?;
                    let status = u16::from_le_bytes([cqe[14], cqe[15]]) >> 1;
                    let (sc, sct) = (status & 0xff, (status >> 8) & 0x7);
                    if sc != 0 || sct != 0 {
                        return Err(NvmeError::Status { what, sct, sc });
                    }
                    let dw0 = u32::from_le_bytes([cqe[0], cqe[1], cqe[2], cqe[3]]);
                    return Ok((dw0, data));
                }
                PDU_R2T => {
                    return Err(NvmeError::Protocol(
                        "the target asked for data by R2T (the write was larger than in-capsule?)"
                            .into(),
                    ));
                }
                PDU_TERM_C2H => {
                    return Err(NvmeError::Protocol(format!(
                        "the target terminated the connection: {rest:02x?}"
                    )));
                }
                other => {
                    return Err(NvmeError::Protocol(format!(
                        "unexpected PDU type {other:#x}"
                    )));
                }
            }
        }
    }

    /// Fabrics Connect of queue `qid`; returns the controller id.
    async fn connect(&mut self, qid: u16, cntlid: u16, subnqn: &str) -> Result<u16, NvmeError> {
        let mut sqe = Sqe::new(0x7f);
        sqe.put(4, &[0x01]) // Connect
            .put(42, &qid.to_le_bytes())
            .put(44, &31u16.to_le_bytes()); // SQSIZE 32, 0-based
        let mut data = vec![0u8; 1024];
        data[..16].copy_from_slice(&HOST_UUID);
        data[16..18].copy_from_slice(&cntlid.to_le_bytes());
        data[256..256 + subnqn.len()].copy_from_slice(subnqn.as_bytes());
        data[512..512 + HOST_NQN.len()].copy_from_slice(HOST_NQN.as_bytes());
        let (dw0, _) = self.command("Connect", &mut sqe, Some(&data), 0).await?;
        Ok((dw0 & 0xffff) as u16)
    }

    async fn property_set(&mut self, offset: u32, value: u64) -> Result<(), NvmeError> {
        let mut sqe = Sqe::new(0x7f);
        sqe.put(4, &[0x00])
            .put(44, &offset.to_le_bytes())
            .put(48, &value.to_le_bytes());
        self.command("Property Set", &mut sqe, None, 0)
            .await
            .map(drop)
    }

    async fn property_get(&mut self, offset: u32) -> Result<u32, NvmeError> {
        let mut sqe = Sqe::new(0x7f);
        sqe.put(4, &[0x04]).put(44, &offset.to_le_bytes());
        self.command("Property Get", &mut sqe, None, 0)
            .await
            .map(|(dw0, _)| dw0)
    }
}

async fn bounded<F: std::future::Future>(f: F) -> Result<F::Output, NvmeError> {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .map_err(|_| NvmeError::Timeout(TIMEOUT))
}

/// A connected controller: namespace 1 of one subsystem.
pub struct NvmeTcp {
    io: Queue,
    /// Kept open: closing the admin queue ends the association.
    _admin: Queue,
    block: usize,
    blocks: u64,
}

impl NvmeTcp {
    /// Connects to subsystem `subnqn` at `addr` and enables its controller.
    pub async fn connect(addr: SocketAddr, subnqn: &str) -> Result<NvmeTcp, NvmeError> {
        if subnqn.len() > 255 {
            return Err(NvmeError::Protocol("NQN longer than 255 bytes".into()));
        }
        let mut admin = Queue::open(addr).await?;
        let cntlid = admin.connect(0, 0xffff, subnqn).await?;
        // CC: enable, I/O SQ entries 2^6 bytes, CQ entries 2^4.
        admin.property_set(0x14, 1 | (6 << 16) | (4 << 20)).await?;
        let started = Instant::now();
        while admin.property_get(0x1c).await? & 1 == 0 {
            if started.elapsed() > TIMEOUT {
                return Err(NvmeError::Timeout(TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Identify Namespace 1: its size and block size.
        let mut sqe = Sqe::new(0x06);
        sqe.put(4, &1u32.to_le_bytes()).put(40, &0u32.to_le_bytes());
        let (_, ns) = admin.command("Identify", &mut sqe, None, 4096).await?;
        let blocks = u64::from_le_bytes(ns[..8].try_into().unwrap_or_default());
        let format = (ns[26] & 0x0f) as usize;
        let lbads = ns[128 + 4 * format + 2];
        if !(9..=16).contains(&lbads) {
            return Err(NvmeError::Protocol(format!("block size 2^{lbads}")));
        }
        let mut io = Queue::open(addr).await?;
        io.connect(1, cntlid, subnqn).await?;
        Ok(NvmeTcp {
            io,
            _admin: admin,
            block: 1 << lbads,
            blocks,
        })
    }

    /// Bytes per block.
    pub fn block_size(&self) -> usize {
        self.block
    }

    /// Size of the namespace in bytes.
    pub fn size(&self) -> u64 {
        self.blocks * self.block as u64
    }

    /// Writes `data` (whole blocks) at byte `offset` (block aligned).
    pub async fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), NvmeError> {
        self.check(offset, data.len())?;
        let chunk = IN_CAPSULE - IN_CAPSULE % self.block;
        for (i, part) in data.chunks(chunk).enumerate() {
            let lba = (offset + (i * chunk) as u64) / self.block as u64;
            let mut sqe = self.rw(0x01, lba, part.len());
            self.io.command("Write", &mut sqe, Some(part), 0).await?;
        }
        Ok(())
    }

    /// Reads `len` bytes (whole blocks) at byte `offset` (block aligned).
    pub async fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, NvmeError> {
        self.check(offset, len)?;
        let chunk = 64 * 1024;
        let mut out = Vec::with_capacity(len);
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done);
            let lba = (offset + done as u64) / self.block as u64;
            let mut sqe = self.rw(0x02, lba, n);
            let (_, data) = self.io.command("Read", &mut sqe, None, n).await?;
            out.extend_from_slice(&data);
            done += n;
        }
        Ok(out)
    }

    fn rw(&self, opcode: u8, lba: u64, len: usize) -> Sqe {
        let mut sqe = Sqe::new(opcode);
        let nlb = (len / self.block - 1) as u16;
        sqe.put(4, &1u32.to_le_bytes())
            .put(40, &lba.to_le_bytes())
            .put(48, &u32::from(nlb).to_le_bytes());
        sqe
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), NvmeError> {
        let b = self.block as u64;
        if !offset.is_multiple_of(b)
            || !(len as u64).is_multiple_of(b)
            || len == 0
            || offset + len as u64 > self.size()
        {
            return Err(NvmeError::Protocol(format!(
                "{len} bytes at {offset}: not whole blocks of {b} within {}",
                self.size()
            )));
        }
        Ok(())
    }
}

/// The address and subsystem NQN of an `nvmf+tcp://HOST:PORT/NQN?…` URI
/// (what the engine's ShareReplica answers; `nvmf://` taken too).
pub fn parse_nvmf_uri(uri: &str) -> Option<(SocketAddr, String)> {
    let rest = uri
        .strip_prefix("nvmf+tcp://")
        .or_else(|| uri.strip_prefix("nvmf://"))?;
    let (addr, path) = rest.split_once('/')?;
    let nqn = path.split('?').next()?;
    Some((addr.parse().ok()?, nqn.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvmf_uris_name_address_and_subsystem() {
        let (addr, nqn) =
            parse_nvmf_uri("nvmf://127.0.0.1:8420/nqn.2019-05.io.openebs:abc?uuid=abc")
                .expect("parsed");
        assert_eq!(addr, "127.0.0.1:8420".parse::<SocketAddr>().expect("addr"));
        assert_eq!(nqn, "nqn.2019-05.io.openebs:abc");
        let engine = "nvmf+tcp://127.0.0.1:8420/nqn.2019-05.io.openebs:u1?uuid=u1";
        assert_eq!(
            parse_nvmf_uri(engine).map(|(_, n)| n).as_deref(),
            Some("nqn.2019-05.io.openebs:u1")
        );
        assert!(parse_nvmf_uri("bdev:///abc").is_none());
        assert!(HOST_NQN.len() < 256);
    }
}
