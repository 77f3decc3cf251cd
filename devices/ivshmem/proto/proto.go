// Package proto speaks the ivshmem server protocol: the UNIX-socket protocol
// between QEMU's contrib/ivshmem-server and ivshmem-doorbell devices
// (docs/specs/ivshmem-spec in QEMU, "Client-Server Protocol").
//
// The server only ever sends; every message is one little-endian int64, some
// carrying one file descriptor as SCM_RIGHTS ancillary data:
//
//	version (0), no fd
//	the client's own ID, no fd
//	-1 with the shared memory fd
//	for every existing peer and then the client itself, one message per
//	vector: (peer ID, eventfd) in vector order
//	later: (peer ID, eventfd) per vector when a peer joins,
//	(peer ID, no fd) when it leaves.
//
// A client never writes to the socket; the server drops a client that does.
package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"
)

const (
	// Version is the only protocol version (the first message).
	Version = 0
	// MaxPeers bounds peer IDs: the doorbell register carries the ID in 16 bits.
	MaxPeers = 1 << 16
	// MaxVectors is the per-peer vector limit of QEMU's ivshmem-server.
	MaxVectors = 64
	// ShmMessage is the value of the message that carries the shared memory fd.
	ShmMessage = -1
	msgSize    = 8
)

// ErrProtocol marks a message the protocol does not allow.
var ErrProtocol = errors.New("ivshmem protocol violation")

// Send writes one message; fd < 0 sends none.
func Send(c *net.UnixConn, value int64, fd int) error {
	var b [msgSize]byte
	binary.LittleEndian.PutUint64(b[:], uint64(value))
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	n, oobn, err := c.WriteMsgUnix(b[:], oob, nil)
	if err != nil {
		return fmt.Errorf("sending ivshmem message %d: %w", value, err)
	}
	if n != msgSize || oobn != len(oob) {
		return fmt.Errorf("sending ivshmem message %d: short write (%d bytes, %d oob)", value, n, oobn)
	}
	return nil
}

// Recv reads one message. fd is -1 when the message carried none; otherwise
// the caller owns it (it is close-on-exec). A message carrying more than one
// fd, a truncated control message, or a connection closed mid-message is an
// error, and any fds received with it are closed.
func Recv(c *net.UnixConn) (value int64, fd int, err error) {
	var b [msgSize]byte
	fd = -1
	got := 0
	// Room for a few fds so that a misbehaving peer sending several is
	// detected and cleaned up rather than truncated.
	oob := make([]byte, unix.CmsgSpace(4*4))
	for got < msgSize {
		n, oobn, flags, _, rerr := c.ReadMsgUnix(b[got:], oob)
		fds, perr := parseRights(oob[:oobn])
		if perr == nil && (len(fds) > 1 || len(fds) == 1 && fd >= 0) {
			perr = fmt.Errorf("%w: several fds in one message", ErrProtocol)
		}
		if perr == nil && flags&unix.MSG_CTRUNC != 0 {
			perr = fmt.Errorf("%w: control message truncated", ErrProtocol)
		}
		if perr != nil {
			for _, f := range fds {
				unix.Close(f)
			}
			closeFD(&fd)
			return 0, -1, perr
		}
		if len(fds) == 1 {
			fd = fds[0]
		}
		if errors.Is(rerr, io.EOF) {
			n, rerr = 0, nil
		}
		if rerr != nil {
			closeFD(&fd)
			return 0, -1, fmt.Errorf("receiving ivshmem message: %w", rerr)
		}
		if n == 0 {
			closeFD(&fd)
			if got == 0 {
				return 0, -1, fmt.Errorf("receiving ivshmem message: %w", net.ErrClosed)
			}
			return 0, -1, fmt.Errorf("%w: connection closed after %d of 8 bytes", ErrProtocol, got)
		}
		got += n
	}
	return int64(binary.LittleEndian.Uint64(b[:])), fd, nil
}

func closeFD(fd *int) {
	if *fd >= 0 {
		unix.Close(*fd)
		*fd = -1
	}
}

// parseRights returns every fd in the SCM_RIGHTS messages of oob; it
// returns the fds it found even with an error, so that they get closed.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: bad control message: %v", ErrProtocol, err)
	}
	var fds []int
	var bad error
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			bad = fmt.Errorf("%w: unexpected control message type %d", ErrProtocol, msgs[i].Header.Type)
			continue
		}
		f, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			bad = fmt.Errorf("%w: bad SCM_RIGHTS: %v", ErrProtocol, err)
			continue
		}
		fds = append(fds, f...)
	}
	return fds, bad
}
