//! Passing a file's descriptor from one local process to another over a
//! Unix stream socket (SCM_RIGHTS), each with a number that says which
//! file it is for.
//!
//! `bitdustctl restore` creates each large file as its user and passes its
//! descriptor to the customer-agent, which writes the content straight
//! into it: no content crosses the gRPC stream, and the agent needs no
//! right to the target directory (it can write only into what it is
//! passed).

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

/// Receives one message of [`send_fd`]: its number and the descriptor it
/// carries. A message without exactly one descriptor is refused (any
/// descriptors it carried are closed).
pub fn recv_fd(sock: &UnixStream) -> io::Result<(u64, OwnedFd)> {
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
    if got.flags.contains(rustix::net::ReturnFlags::CTRUNC) || fds.len() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a message carried {} descriptors where one was due",
                if got.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
                    "more than one".to_string()
                } else {
                    fds.len().to_string()
                }
            ),
        ));
    }
    (&*sock).read_exact(&mut bytes[got.bytes..])?;
    Ok((u64::from_le_bytes(bytes), fds.remove(0)))
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
        let mut g = std::fs::File::from(fd);
        g.write_all(b"written by the other end").unwrap();
        f.rewind().unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "written by the other end");
    }

    #[test]
    fn a_message_without_a_descriptor_is_refused() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&7u64.to_le_bytes()).unwrap();
        let e = recv_fd(&b).unwrap_err();
        assert!(e.to_string().contains("0 descriptors"), "{e}");
        drop(a);
        let e = recv_fd(&b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
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
        assert!(e.to_string().contains("where one was due"), "{e}");
    }
}
