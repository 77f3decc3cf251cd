// Package nbd is Petrel's NBD client: a block.Image served by a Network
// Block Device server (qemu-nbd, qemu-storage-daemon, nbdkit), reached by
// QEMU's filenames (nbd:unix:PATH, nbd://HOST:PORT/NAME,
// nbd+unix:///NAME?socket=PATH) or by QEMU's nbd driver options.
//
// The wire protocol is NBD's doc/proto.md (NetworkBlockDevice/nbd): the
// fixed newstyle handshake, NBD_OPT_GO with NBD_INFO_BLOCK_SIZE (falling
// back to NBD_OPT_EXPORT_NAME), structured replies and NBD_CMD_BLOCK_STATUS
// over one metadata context (base:allocation, or the one QEMU's
// x-dirty-bitmap option names).
//
// Everything a server sends is untrusted: every length is checked against
// what the client asked for before anything is allocated or read, and a
// reply that breaks the protocol ends the connection with an error.
package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"syscall"
)

// Handshake magics and flags (proto.md, "Newstyle negotiation").
const (
	magicInit      = 0x4e42444d41474943 // "NBDMAGIC"
	magicOption    = 0x49484156454f5054 // "IHAVEOPT"
	magicOldstyle  = 0x00420281861253
	magicOptReply  = 0x0003e889045565a9
	flagFixedNew   = 1 << 0 // server handshake flag NBD_FLAG_FIXED_NEWSTYLE
	flagNoZeroes   = 1 << 1 // NBD_FLAG_NO_ZEROES
	clientFixedNew = 1 << 0 // NBD_FLAG_C_FIXED_NEWSTYLE
	clientNoZeroes = 1 << 1 // NBD_FLAG_C_NO_ZEROES
)

// Options and option replies.
const (
	optExportName     = 1
	optAbort          = 2
	optGo             = 7
	optStructured     = 8
	optSetMetaContext = 10

	repAck         = 1
	repInfo        = 3
	repMetaContext = 4
	repErrUnsup    = 1<<31 + 1

	infoExport    = 0
	infoBlockSize = 3
)

// Transmission flags (NBD_FLAG_*).
const (
	tfHasFlags     = 1 << 0
	tfReadOnly     = 1 << 1
	tfSendFlush    = 1 << 2
	tfSendTrim     = 1 << 5
	tfWriteZeroes  = 1 << 6
	tfDontFragment = 1 << 7
)

// Commands and command flags.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6
	cmdBlockStatus = 7

	cmdFlagNoHole = 1 << 1
	cmdFlagReqOne = 1 << 3
)

// Transmission magics and structured reply chunk types.
const (
	magicRequest    = 0x25609513
	magicSimple     = 0x67446698
	magicStructured = 0x668e33ef

	replyFlagDone = 1 << 0

	chunkNone        = 0
	chunkOffsetData  = 1
	chunkOffsetHole  = 2
	chunkBlockStatus = 5
	chunkErrorBit    = 1 << 15
	chunkError       = chunkErrorBit + 1
	chunkErrorOffset = chunkErrorBit + 2
)

// base:allocation status bits (proto.md, "Metadata contexts").
const (
	StateHole = 1 << 0
	StateZero = 1 << 1
)

// Limits on what a server may make the client read or hold.
const (
	// maxString: proto.md caps strings (names, messages) at 4096 bytes.
	maxString = 4096
	// maxOptionReply bounds an option reply's payload: a meta context
	// (4 bytes and a name) or an info block is far smaller.
	maxOptionReply = maxString + 64
	// defaultMaxBlock is the request size used when the server names no
	// maximum (proto.md: clients SHOULD NOT exceed 32 MiB then).
	defaultMaxBlock = 32 << 20
	// maxZeroRequest bounds one TRIM or WRITE_ZEROES request (their
	// length field is 32 bits; no payload travels).
	maxZeroRequest = 1 << 30
)

// ErrProtocol marks a server that broke the protocol; the connection is
// unusable afterwards.
var ErrProtocol = errors.New("NBD protocol error")

func protoErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, a...))
}

// errnoOf maps an NBD error value to the errno it stands for (proto.md,
// "Error values"); unknown values count as EINVAL, as the spec says.
func errnoOf(v uint32) syscall.Errno {
	switch v {
	case 1:
		return syscall.EPERM
	case 5:
		return syscall.EIO
	case 12:
		return syscall.ENOMEM
	case 22:
		return syscall.EINVAL
	case 28:
		return syscall.ENOSPC
	case 75:
		return syscall.EOVERFLOW
	case 95:
		return syscall.ENOTSUP
	case 108:
		return syscall.ESHUTDOWN
	}
	return syscall.EINVAL
}

// ServerError is an error a server reported for one request.
type ServerError struct {
	Errno   syscall.Errno
	Message string // the server's text, from a structured error chunk
}

func (e *ServerError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("%v (server: %s)", e.Errno, e.Message)
	}
	return e.Errno.Error()
}

func (e *ServerError) Unwrap() error { return e.Errno }

// request is one transmission-phase request header (28 bytes).
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	offset uint64
	length uint32
}

func (r request) encode() []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint32(b[0:], magicRequest)
	binary.BigEndian.PutUint16(b[4:], r.flags)
	binary.BigEndian.PutUint16(b[6:], r.typ)
	binary.BigEndian.PutUint64(b[8:], r.cookie)
	binary.BigEndian.PutUint64(b[16:], r.offset)
	binary.BigEndian.PutUint32(b[24:], r.length)
	return b
}

// replyHeader is the start of a simple reply or of one structured chunk.
type replyHeader struct {
	structured bool
	errno      uint32 // simple replies
	flags      uint16 // structured chunks
	typ        uint16
	cookie     uint64
	length     uint32 // payload bytes that follow (structured chunks)
}

// readReplyHeader reads a simple reply (16 bytes) or a structured chunk
// header (20 bytes) from r.
func readReplyHeader(r io.Reader) (replyHeader, error) {
	var b [20]byte
	if _, err := io.ReadFull(r, b[:4]); err != nil {
		return replyHeader{}, fmt.Errorf("reading NBD reply: %w", err)
	}
	switch m := binary.BigEndian.Uint32(b[:4]); m {
	case magicSimple:
		if _, err := io.ReadFull(r, b[4:16]); err != nil {
			return replyHeader{}, fmt.Errorf("reading NBD reply: %w", err)
		}
		return replyHeader{errno: binary.BigEndian.Uint32(b[4:]), cookie: binary.BigEndian.Uint64(b[8:])}, nil
	case magicStructured:
		if _, err := io.ReadFull(r, b[4:20]); err != nil {
			return replyHeader{}, fmt.Errorf("reading NBD reply: %w", err)
		}
		return replyHeader{
			structured: true,
			flags:      binary.BigEndian.Uint16(b[4:]),
			typ:        binary.BigEndian.Uint16(b[6:]),
			cookie:     binary.BigEndian.Uint64(b[8:]),
			length:     binary.BigEndian.Uint32(b[16:]),
		}, nil
	default:
		return replyHeader{}, protoErr("reply magic %#x", m)
	}
}

// readErrorChunk reads the payload of an error chunk (length bytes):
// the error value, the message and, for chunkErrorOffset, an offset.
func readErrorChunk(r io.Reader, typ uint16, length uint32) (*ServerError, error) {
	if length < 6 || length > 6+maxString+8 {
		return nil, protoErr("error chunk of %d bytes", length)
	}
	b := make([]byte, length)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("reading NBD error chunk: %w", err)
	}
	msgLen := uint32(binary.BigEndian.Uint16(b[4:]))
	want := 6 + msgLen
	if typ == chunkErrorOffset {
		want += 8
	}
	// Other error types are unknown to this client: their payload
	// starts the same way; the rest is skipped.
	if want > length || (typ == chunkError || typ == chunkErrorOffset) && want != length {
		return nil, protoErr("error chunk of %d bytes with a %d-byte message", length, msgLen)
	}
	v := binary.BigEndian.Uint32(b)
	if v == 0 {
		return nil, protoErr("error chunk without an error value")
	}
	return &ServerError{Errno: errnoOf(v), Message: string(b[6 : 6+msgLen])}, nil
}
