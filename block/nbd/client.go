package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Client is one connection in the transmission phase. Requests are
// serialized: each one is sent and all its replies read under mu, so a
// reply for another cookie is a protocol error. After a protocol or I/O
// error the connection is closed and every later request fails with it.
type Client struct {
	conn   io.ReadWriteCloser
	r      *bufio.Reader
	ex     export
	mu     sync.Mutex
	cookie uint64
	broken error
}

// maxChunksPerReply bounds the error and status chunks one reply may
// carry (data chunks are bounded by the bytes they must cover).
const maxChunksPerReply = 1024

// NewClient negotiates on conn (the handshake) and returns the client.
// metaContext is the metadata context block status reads ("" for none);
// requireMeta makes its absence an error. conn is closed on failure.
func NewClient(conn io.ReadWriteCloser, exportName, metaContext string, requireMeta bool) (*Client, error) {
	r := bufio.NewReaderSize(conn, 64<<10)
	ex, err := handshake(r, conn, exportName, metaContext, requireMeta)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &Client{conn: conn, r: r, ex: ex}, nil
}

// Size is the export's size in bytes.
func (c *Client) Size() int64 { return c.ex.size }

// flag reports a transmission flag the server set.
func (c *Client) flag(f uint16) bool { return c.ex.flags&tfHasFlags != 0 && c.ex.flags&f != 0 }

// Close sends NBD_CMD_DISC (a soft disconnect) and closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken == nil {
		c.cookie++
		c.conn.Write(request{typ: cmdDisc, cookie: c.cookie}.encode())
		c.broken = errors.New("NBD connection closed")
	}
	return c.conn.Close()
}

// statusReply is the first extent a BLOCK_STATUS reply described.
type statusReply struct {
	length uint32
	flags  uint32
}

// do sends req (with payload for writes) and reads its replies: read
// data into buf (len(buf) == req.length), block status into st.
func (c *Client) do(req request, payload, buf []byte, st *statusReply) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return c.broken
	}
	c.cookie++
	req.cookie = c.cookie
	msg := append(req.encode(), payload...)
	if _, err := c.conn.Write(msg); err != nil {
		return c.fail(fmt.Errorf("sending NBD request: %w", err))
	}
	err := c.readReplies(req, buf, st)
	var se *ServerError
	if err != nil && !errors.As(err, &se) {
		return c.fail(err)
	}
	return err
}

// fail marks the connection unusable (err stays its error) and closes it.
func (c *Client) fail(err error) error {
	c.broken = err
	c.conn.Close()
	return err
}

// readReplies reads the simple reply or the structured chunks answering
// req, checking every chunk against what req asked for. A server error
// is returned as *ServerError once the final chunk is read; anything
// else that goes wrong is a protocol or connection error.
func (c *Client) readReplies(req request, buf []byte, st *statusReply) error {
	if req.typ == cmdRead {
		clear(buf) // a server that leaves gaps yields zeroes there, never stale bytes
	}
	var srvErr error
	var covered uint64
	gotStatus := false
	for chunks := 0; ; chunks++ {
		if chunks > maxChunksPerReply && req.typ != cmdRead {
			return protoErr("more than %d chunks in one reply", maxChunksPerReply)
		}
		h, err := readReplyHeader(c.r)
		if err != nil {
			return err
		}
		if h.cookie != req.cookie {
			return protoErr("reply for cookie %d while waiting for %d", h.cookie, req.cookie)
		}
		if !h.structured {
			if chunks > 0 {
				return protoErr("simple reply inside a structured reply")
			}
			if h.errno != 0 {
				return &ServerError{Errno: errnoOf(h.errno)}
			}
			if st != nil {
				return protoErr("simple reply to NBD_CMD_BLOCK_STATUS")
			}
			if req.typ == cmdRead {
				if _, err := io.ReadFull(c.r, buf); err != nil {
					return fmt.Errorf("reading NBD data: %w", err)
				}
			}
			return nil
		}
		if !c.ex.structured {
			return protoErr("structured reply that was not negotiated")
		}
		switch {
		case h.typ == chunkNone:
			if h.length != 0 || h.flags&replyFlagDone == 0 {
				return protoErr("NBD_REPLY_TYPE_NONE of %d bytes, flags %#x", h.length, h.flags)
			}
		case h.typ == chunkOffsetData || h.typ == chunkOffsetHole:
			n, err := c.readDataChunk(req, h, buf, covered)
			if err != nil {
				return err
			}
			covered += n
		case h.typ == chunkBlockStatus:
			if st == nil {
				return protoErr("block status chunk in the reply to command %d", req.typ)
			}
			if err := c.readStatusChunk(req, h, st, &gotStatus); err != nil {
				return err
			}
		case h.typ&chunkErrorBit != 0:
			se, err := readErrorChunk(c.r, h.typ, h.length)
			if err != nil {
				return err
			}
			if srvErr == nil {
				srvErr = se
			}
		default:
			return protoErr("unknown reply chunk type %d", h.typ)
		}
		if h.flags&replyFlagDone != 0 {
			break
		}
	}
	switch {
	case srvErr != nil:
		return srvErr
	case req.typ == cmdRead && covered != uint64(req.length):
		return protoErr("read reply covers %d of %d bytes", covered, req.length)
	case st != nil && !gotStatus:
		return protoErr("block status reply without an extent")
	}
	return nil
}

// readDataChunk reads an OFFSET_DATA or OFFSET_HOLE chunk into buf and
// returns how many bytes of the request it covers; together the chunks
// must not cover more than the request asked for.
func (c *Client) readDataChunk(req request, h replyHeader, buf []byte, covered uint64) (uint64, error) {
	if req.typ != cmdRead {
		return 0, protoErr("data chunk in the reply to command %d", req.typ)
	}
	if h.length < 8 || h.typ == chunkOffsetHole && h.length != 12 {
		return 0, protoErr("chunk type %d of %d bytes", h.typ, h.length)
	}
	var b [12]byte
	head := b[:8]
	if h.typ == chunkOffsetHole {
		head = b[:12]
	}
	if _, err := io.ReadFull(c.r, head); err != nil {
		return 0, fmt.Errorf("reading NBD data chunk: %w", err)
	}
	off := binary.BigEndian.Uint64(b[:])
	n := uint64(h.length - 8)
	if h.typ == chunkOffsetHole {
		n = uint64(binary.BigEndian.Uint32(b[8:]))
	}
	end := req.offset + uint64(req.length)
	if n == 0 || off < req.offset || off > end || n > end-off || covered+n > uint64(req.length) {
		return 0, protoErr("chunk for %d+%d outside the read of %d+%d", off, n, req.offset, req.length)
	}
	dst := buf[off-req.offset : off-req.offset+n]
	if h.typ == chunkOffsetHole {
		clear(dst)
	} else if _, err := io.ReadFull(c.r, dst); err != nil {
		return 0, fmt.Errorf("reading NBD data: %w", err)
	}
	return n, nil
}

// readStatusChunk reads a BLOCK_STATUS chunk: the context id and
// (length, flags) descriptors. Only the first descriptor of the first
// chunk counts (requests carry NBD_CMD_FLAG_REQ_ONE); its length is
// clamped to the request, as QEMU's client does.
func (c *Client) readStatusChunk(req request, h replyHeader, st *statusReply, got *bool) error {
	if h.length < 12 || (h.length-4)%8 != 0 || h.length > 4+8*maxChunksPerReply {
		return protoErr("block status chunk of %d bytes", h.length)
	}
	b := make([]byte, h.length)
	if _, err := io.ReadFull(c.r, b); err != nil {
		return fmt.Errorf("reading NBD block status: %w", err)
	}
	if id := binary.BigEndian.Uint32(b); id != c.ex.metaID {
		return protoErr("block status for context %d, not %d", id, c.ex.metaID)
	}
	if *got {
		return nil
	}
	length := binary.BigEndian.Uint32(b[4:])
	if length == 0 {
		return protoErr("empty block status extent")
	}
	*got = true
	st.length = min(length, req.length)
	st.flags = binary.BigEndian.Uint32(b[8:])
	return nil
}
