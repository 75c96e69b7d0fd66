//! Passing a file's descriptor from one local process to another over a
//! Unix stream socket (SCM_RIGHTS), each with a number that says which
//! file it is for.
//!
//! `bitdustctl restore` creates each large file as its user and passes its
//! descriptor to the customer-agent, which writes the content straight
//! into it: no content crosses the gRPC stream, and the agent needs no
//! right to the target directory (it can write only into what it is
//! passed). A file on a filesystem not known to store writes on this host
//! itself ([`not_passable`]: FUSE, NFS, a pseudo-filesystem, ...) is
//! declined instead ([`send_decline`]): its content streams, so no FUSE
//! server or NFS mount can hold the agent's thread in a write.

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Sends `fd` on `sock` with `number`, in one message of 8 bytes.
pub fn send_fd(sock: &UnixStream, number: u64, fd: BorrowedFd<'_>) -> io::Result<()> {
    let bytes = number.to_le_bytes();
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for a descriptor in the message"));
    }
    let sent = loop {
        match rustix::net::sendmsg(
            sock.as_fd(),
            &[IoSlice::new(&bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r?,
        }
    };
    // The descriptor went with the first byte; any rest goes plainly.
    io::Write::write_all(&mut &*sock, &bytes[sent..])
}

/// Sends `number` with no descriptor: the file asked for is not passed,
/// and its content is to stream instead.
pub fn send_decline(sock: &UnixStream, number: u64) -> io::Result<()> {
    io::Write::write_all(&mut &*sock, &number.to_le_bytes())
}

/// Receives one message of [`send_fd`] or [`send_decline`]: its number
/// and the descriptor it carries, if any. A message with more than one
/// descriptor is refused (the descriptors it carried are closed).
pub fn recv_fd(sock: &UnixStream) -> io::Result<(u64, Option<OwnedFd>)> {
    let mut bytes = [0u8; 8];
    // Room for one descriptor: the kernel closes any more, and says so.
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match rustix::net::recvmsg(
            sock.as_fd(),
            &mut [IoSliceMut::new(&mut bytes)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r?,
        }
    };
    if got.bytes == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed before a descriptor came",
        ));
    }
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it);
        }
    }
    if got.flags.contains(rustix::net::ReturnFlags::CTRUNC) || fds.len() > 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a message carried more than one descriptor where at most one was due",
        ));
    }
    (&*sock).read_exact(&mut bytes[got.bytes..])?;
    Ok((u64::from_le_bytes(bytes), fds.pop()))
}

/// Kernel pseudo-filesystems, whose files act on writes rather than store
/// them: procfs, sysfs, cgroup v1 and v2, configfs, debugfs, tracefs,
/// securityfs, bpf.
const PSEUDO_FILESYSTEMS: [i64; 9] = [
    0x9fa0,
    0x6265_6572,
    0x0027_e0eb,
    0x6367_7270,
    0x6265_6570,
    0x6462_6720,
    0x7472_6163,
    0x7363_6673,
    0xcafe_4a11,
];

/// FUSE's type (also virtiofs' and fuseblk's): a write waits for the
/// server process, which any user may run.
pub const FUSE_MAGIC: i64 = 0x6573_5546;

/// Network filesystems, whose writes wait for a server on another host:
/// NFS, SMB, CIFS, SMB2, 9p, Ceph, AFS (two), Coda, NCP, OCFS2, GFS2,
/// Lustre, OrangeFS.
const NETWORK_FILESYSTEMS: [i64; 14] = [
    0x6969,
    0x517b,
    0xff53_4d42,
    0xfe53_4d42,
    0x0102_1997,
    0x00c3_6400,
    0x5346_414f,
    0x6b41_4653,
    0x7375_7245,
    0x564c,
    0x7461_636f,
    0x0116_1970,
    0x0bd0_0bd0,
    0x1366_1366,
];

/// Filesystems that store what is written on this host and answer writes
/// themselves: ext2/3/4, XFS, Btrfs, tmpfs, ramfs, F2FS, ZFS, bcachefs,
/// JFS, ReiserFS, NILFS, HFS+, FAT, exFAT, NTFS (ntfs3), UDF. Layered
/// ones (overlayfs, eCryptfs) are not among them: what lies below may be
/// anything.
const LOCAL_FILESYSTEMS: [i64; 16] = [
    0xef53,
    0x5846_5342,
    0x9123_683e,
    0x0102_1994,
    0x8584_58f6,
    0xf2f5_2010,
    0x2fc1_2fc1,
    0xca45_1a4e,
    0x3153_464a,
    0x5265_4973,
    0x3434,
    0x482b,
    0x4d44,
    0x2011_bab0,
    0x7366_746e,
    0x1501_3346,
];

/// Why a file open as `fd` is not to be passed for another process to
/// write into, or `None` when it may be: only files of the filesystems
/// known to store writes on this host themselves are passed; a kernel
/// pseudo-filesystem, FUSE, a network filesystem or one not known here is
/// named. (Asks the filesystem: FUSE answers the type itself to a process
/// its mount does not allow in, and otherwise asks its server, which the
/// caller runs or trusts.)
pub fn not_passable(fd: BorrowedFd<'_>) -> io::Result<Option<String>> {
    let fs = rustix::fs::fstatfs(fd)?;
    #[allow(clippy::unnecessary_cast)]
    let kind = fs.f_type as i64;
    Ok(if LOCAL_FILESYSTEMS.contains(&kind) {
        None
    } else if PSEUDO_FILESYSTEMS.contains(&kind) {
        Some("a kernel pseudo-filesystem".into())
    } else if kind == FUSE_MAGIC {
        Some("a FUSE filesystem, whose writes wait on its server process".into())
    } else if NETWORK_FILESYSTEMS.contains(&kind) {
        Some("a network filesystem, whose writes wait on its server".into())
    } else {
        Some(format!(
            "a filesystem (type {kind:#x}) not known to store writes on this host itself"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    #[test]
    fn a_descriptor_and_its_number_cross_and_the_file_is_shared() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut f = tempfile::tempfile().unwrap();
        send_fd(&a, 42, f.as_fd()).unwrap();
        let (n, fd) = recv_fd(&b).unwrap();
        assert_eq!(n, 42);
        let mut g = std::fs::File::from(fd.unwrap());
        g.write_all(b"written by the other end").unwrap();
        f.rewind().unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "written by the other end");
    }

    #[test]
    fn a_decline_and_a_descriptor_cross_in_turn_each_with_its_number() {
        let (a, b) = UnixStream::pair().unwrap();
        send_decline(&a, 7).unwrap();
        let f = tempfile::tempfile().unwrap();
        send_fd(&a, 8, f.as_fd()).unwrap();
        send_decline(&a, 9).unwrap();
        let (n, fd) = recv_fd(&b).unwrap();
        assert_eq!((n, fd.is_none()), (7, true));
        let (n, fd) = recv_fd(&b).unwrap();
        assert_eq!((n, fd.is_some()), (8, true));
        let (n, fd) = recv_fd(&b).unwrap();
        assert_eq!((n, fd.is_none()), (9, true));
        drop(a);
        let e = recv_fd(&b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn files_of_kernel_pseudo_filesystems_are_not_passable_and_a_local_one_is() {
        let proc = std::fs::File::open("/proc/self/status").unwrap();
        let why = not_passable(proc.as_fd()).unwrap().unwrap();
        assert!(why.contains("pseudo-filesystem"), "{why}");
        let local = tempfile::tempfile().unwrap();
        assert_eq!(not_passable(local.as_fd()).unwrap(), None);
    }

    #[test]
    fn a_message_with_two_descriptors_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let (f, g) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
        let fds = [f.as_fd(), g.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        let bytes = 1u64.to_le_bytes();
        rustix::net::sendmsg(
            &a,
            &[IoSlice::new(&bytes)],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        let e = recv_fd(&b).unwrap_err();
        assert!(e.to_string().contains("more than one descriptor"), "{e}");
    }
}
