package nbd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/petrel-vmm/petrel/block"
)

// init makes NBD filenames openable wherever block.Open and block.Create
// take a file name (petrel img, the VMM's drives).
func init() {
	block.RegisterProtocol(block.Protocol{
		Name:   "nbd",
		Claims: IsFilename,
		Open:   openFilename,
		Create: createFilename,
	})
}

// handshakeTimeout bounds the negotiation: a server that accepts the
// connection but never finishes the handshake fails the open instead of
// hanging it. Requests have no deadline (a slow disk is not an error).
const handshakeTimeout = 60 * time.Second

// Image is an NBD export as a block.Image: the export's bytes are the
// disk (no format on top), its block status the server's.
//
// Requests larger than the server's maximum block size are split;
// requests not aligned to its minimum block size are widened (reads) or
// done as read-modify-write under rmw (writes), so the server only ever
// sees aligned requests.
type Image struct {
	c      *Client
	cfg    Config
	format string // "raw" (a filename, or raw over nbd) or "nbd" (the driver itself)
	ro     bool
	noSync bool // Options.NoSync (cache=unsafe): flushes are not sent
	rmw    sync.Mutex
}

// Open connects to the export cfg names. format is what Format reports:
// "nbd" when the nbd driver was named itself, "raw" otherwise.
func Open(cfg Config, format string, opts block.Options) (*Image, error) {
	conn, err := dial(cfg)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	meta, require := "base:allocation", false
	if cfg.DirtyBitmap != "" {
		meta, require = cfg.DirtyBitmap, true
	}
	c, err := NewClient(conn, cfg.Export, meta, require)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	if !opts.ReadOnly && c.flag(tfReadOnly) {
		c.Close()
		return nil, fmt.Errorf("Block node is read-only")
	}
	return &Image{c: c, cfg: cfg, format: format, ro: opts.ReadOnly || c.flag(tfReadOnly), noSync: opts.NoSync}, nil
}

// dial connects to the server, with QEMU's messages for a name that
// does not resolve and a server that is not there.
func dial(cfg Config) (net.Conn, error) {
	if cfg.Unix != "" {
		conn, err := net.Dial("unix", cfg.Unix)
		if err != nil {
			return nil, fmt.Errorf("Failed to connect to '%s': %s", cfg.Unix, sysText(err))
		}
		return conn, nil
	}
	addrs, err := net.LookupHost(cfg.Host)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, fmt.Errorf("address resolution failed for %s:%s: Name or service not known", cfg.Host, cfg.Port)
		}
		return nil, fmt.Errorf("address resolution failed for %s:%s: %v", cfg.Host, cfg.Port, err)
	}
	var last error
	for _, a := range addrs {
		conn, err := net.Dial("tcp", net.JoinHostPort(a, cfg.Port))
		if err == nil {
			return conn, nil
		}
		last = err
	}
	return nil, fmt.Errorf("Failed to connect to '%s:%s': %s", cfg.Host, cfg.Port, sysText(last))
}

// sysText is the errno text of a dial error ("Connection refused").
func sysText(err error) string {
	var se *os.SyscallError
	if errors.As(err, &se) {
		s := se.Err.Error()
		return strings.ToUpper(s[:1]) + s[1:]
	}
	return err.Error()
}

// openFilename is block.Open for an NBD filename. The export is probed
// as qemu-img probes a file; an image of another format in it (qcow2)
// opens over the export as that engine's file (Image.AsFile), on the one
// connection (a qemu-nbd without --persistent serves only one).
func openFilename(name string, opts block.Options) (block.Image, error) {
	cfg, err := ParseFilename(name)
	if err != nil {
		return nil, err
	}
	img, err := Open(cfg, "raw", opts)
	if err != nil {
		return nil, err
	}
	format := opts.Format
	if format == "" {
		head := make([]byte, min(4096, img.Size()))
		if _, err := img.ReadAt(head, 0); err != nil {
			img.Close()
			return nil, err
		}
		format = block.ProbeHead(head)
	}
	if format == "raw" {
		return img, nil
	}
	return block.OpenOn(img.AsFile(), name, format, opts)
}

// createFilename is block.Create on an NBD export, which exists already.
// As QEMU's generic fallback (bdrv_co_create_opts_simple) it checks the
// export is large enough for a raw image (a format on top asks for no
// size: its engine grows inside the export) and zeroes its first sector,
// so that no stale format header is probed; a format engine then lays
// its image out in the export.
func createFilename(name, format string, opts block.CreateOptions) error {
	if format == "raw" && opts.BackingFile != "" {
		return fmt.Errorf("raw images have no backing file")
	}
	if format != "raw" {
		if fm, ok := block.Lookup(format); !ok || fm.CreateOn == nil {
			return fmt.Errorf("petrel creates only raw and qcow2 images on NBD exports, not %s", format)
		}
	}
	cfg, err := ParseFilename(name)
	if err != nil {
		return err
	}
	img, err := Open(cfg, "raw", block.Options{})
	if err != nil {
		return err
	}
	if format == "raw" && img.Size() < opts.Size {
		img.Close()
		return fmt.Errorf("Cannot grow NBD nodes") // qemu-img's words
	}
	if err := img.WriteZeroes(0, min(512, img.Size()), false); err != nil {
		img.Close()
		return err
	}
	if err := img.Flush(); err != nil {
		img.Close()
		return err
	}
	if format == "raw" {
		return img.Close()
	}
	return block.CreateOn(img.AsFile(), name, format, opts)
}

// Size, Format, Backing, ReadOnly, Filename and Close implement
// block.Image; an export has no backing file (the server resolves any).
func (img *Image) Size() int64          { return img.c.Size() }
func (img *Image) Format() string       { return img.format }
func (img *Image) Backing() block.Image { return nil }
func (img *Image) ReadOnly() bool       { return img.ro }
func (img *Image) Filename() string     { return img.cfg.Filename() }
func (img *Image) Close() error         { return img.c.Close() }

// Describe: nothing beyond the generic fields (as QEMU's raw over nbd).
func (img *Image) Describe() map[string]any { return map[string]any{} }

// check validates a request of n bytes at off against the export.
func (img *Image) check(off, n int64, write bool) error {
	if write && img.ro {
		return fmt.Errorf("writing %s: %w", img.Filename(), os.ErrPermission)
	}
	if off < 0 || n < 0 || off > img.Size() || n > img.Size()-off {
		return fmt.Errorf("nbd: request of %d bytes at %d outside the export of %d bytes", n, off, img.Size())
	}
	return nil
}

// ReadAt reads from the export as io.ReaderAt: a read crossing the end
// returns the part inside with io.EOF.
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("nbd: negative offset %d", off)
	}
	if off >= img.Size() {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), img.Size()-off))
	if err := img.readAligned(p[:n], off); err != nil {
		return 0, fmt.Errorf("reading %s at %#x: %w", img.Filename(), off, err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readAligned reads p at off in requests of at most the maximum block
// size, widening an unaligned head or tail to the minimum block size.
func (img *Image) readAligned(p []byte, off int64) error {
	a := int64(img.c.ex.minBlock)
	if a > 1 && (off%a != 0 || int64(len(p))%a != 0) {
		start := off - off%a
		end := min((off+int64(len(p))+a-1)/a*a, img.Size())
		buf := make([]byte, end-start)
		if err := img.readSplit(buf, start); err != nil {
			return err
		}
		copy(p, buf[off-start:])
		return nil
	}
	return img.readSplit(p, off)
}

func (img *Image) readSplit(p []byte, off int64) error {
	max := int(img.c.ex.maxBlock)
	for done := 0; done < len(p); {
		n := min(len(p)-done, max)
		req := request{typ: cmdRead, offset: uint64(off + int64(done)), length: uint32(n)}
		if err := img.c.do(req, nil, p[done:done+n], nil); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// WriteAt writes to the export; a write past its end fails whole.
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	if err := img.check(off, int64(len(p)), true); err != nil {
		return 0, err
	}
	a := int64(img.c.ex.minBlock)
	if a > 1 && (off%a != 0 || int64(len(p))%a != 0) {
		// Read-modify-write of the whole blocks around p; rmw keeps
		// two such writes to one block from losing either.
		img.rmw.Lock()
		defer img.rmw.Unlock()
		start := off - off%a
		end := min((off+int64(len(p))+a-1)/a*a, img.Size())
		buf := make([]byte, end-start)
		if err := img.readSplit(buf, start); err != nil {
			return 0, fmt.Errorf("writing %s at %#x: %w", img.Filename(), off, err)
		}
		copy(buf[off-start:], p)
		p, off = buf, start
	}
	max := int(img.c.ex.maxBlock)
	for done := 0; done < len(p); {
		n := min(len(p)-done, max)
		req := request{typ: cmdWrite, offset: uint64(off + int64(done)), length: uint32(n)}
		if err := img.c.do(req, p[done:done+n], nil, nil); err != nil {
			return 0, fmt.Errorf("writing %s at %#x: %w", img.Filename(), off, err)
		}
		done += n
	}
	return len(p), nil
}

// Flush asks the server to make completed writes durable, when it
// supports flushing at all; with cache=unsafe (Options.NoSync) it sends
// nothing, as QEMU drops flushes then.
func (img *Image) Flush() error {
	if img.ro || img.noSync || !img.c.flag(tfSendFlush) {
		return nil
	}
	return img.c.do(request{typ: cmdFlush}, nil, nil, nil)
}

// Discard trims the range where the server supports it (a discard is
// advisory, so without NBD_FLAG_SEND_TRIM it does nothing).
func (img *Image) Discard(off, n int64) error {
	if err := img.check(off, n, true); err != nil {
		return err
	}
	if !img.c.flag(tfSendTrim) {
		return nil
	}
	return img.zeroRequests(cmdTrim, 0, off, n)
}

// WriteZeroes makes the range read as zeroes: NBD_CMD_WRITE_ZEROES
// (allowed to punch holes only when unmap is set), or written zeroes
// when the server lacks the command.
func (img *Image) WriteZeroes(off, n int64, unmap bool) error {
	if err := img.check(off, n, true); err != nil {
		return err
	}
	a := int64(img.c.ex.minBlock)
	if !img.c.flag(tfWriteZeroes) || off%a != 0 || n%a != 0 {
		zero := make([]byte, min(n, int64(img.c.ex.maxBlock)))
		for done := int64(0); done < n; {
			m := min(n-done, int64(len(zero)))
			if _, err := img.WriteAt(zero[:m], off+done); err != nil {
				return err
			}
			done += m
		}
		return nil
	}
	var flags uint16
	if !unmap {
		flags = cmdFlagNoHole
	}
	return img.zeroRequests(cmdWriteZeroes, flags, off, n)
}

// zeroRequests sends TRIM or WRITE_ZEROES over [off, off+n) in requests
// of at most maxZeroRequest bytes.
func (img *Image) zeroRequests(typ, flags uint16, off, n int64) error {
	for done := int64(0); done < n; {
		m := min(n-done, maxZeroRequest)
		req := request{typ: typ, flags: flags, offset: uint64(off + done), length: uint32(m)}
		if err := img.c.do(req, nil, nil, nil); err != nil {
			return fmt.Errorf("nbd command %d at %#x: %w", typ, off+done, err)
		}
		done += m
	}
	return nil
}

// BlockStatus asks the server about the extent at off (one extent per
// request, NBD_CMD_FLAG_REQ_ONE). As QEMU's client: HOLE clears data,
// ZERO reads as zeroes, the range is allocated when either data or
// zero; every extent's offset is its own (the export is the disk). A
// server without the context reports everything as data.
func (img *Image) BlockStatus(off, n int64) (block.Extent, error) {
	if off < 0 || off >= img.Size() || n <= 0 {
		return block.Extent{}, fmt.Errorf("nbd: block status at %d outside the export of %d bytes", off, img.Size())
	}
	n = min(n, img.Size()-off)
	e := block.Extent{Offset: off, Length: n, HostOffset: off, File: img.Filename(),
		Flags: block.ExtentData | block.ExtentAllocated}
	if !img.c.ex.hasMeta {
		return e, nil
	}
	a := int64(img.c.ex.minBlock)
	length := min(n, maxZeroRequest)
	if length >= a {
		length -= length % a
	}
	var st statusReply
	req := request{typ: cmdBlockStatus, flags: cmdFlagReqOne, offset: uint64(off), length: uint32(length)}
	if err := img.c.do(req, nil, nil, &st); err != nil {
		return block.Extent{}, err
	}
	e.Length = int64(st.length)
	e.Flags = 0
	if st.flags&StateHole == 0 {
		e.Flags |= block.ExtentData
	}
	if st.flags&StateZero != 0 {
		e.Flags |= block.ExtentZero
	}
	if e.Flags != 0 {
		e.Flags |= block.ExtentAllocated
	}
	return e, nil
}
