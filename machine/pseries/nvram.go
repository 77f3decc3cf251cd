package pseries

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// NVRAM sizes (QEMU's spapr_nvram.c uses the same bounds).
const (
	DefaultNVRAMSize = 64 << 10
	minNVRAMSize     = 8 << 10
	maxNVRAMSize     = 1 << 20
)

// NVRAM is the partition's non-volatile RAM, reached through the RTAS
// nvram-fetch and nvram-store services. With a backing file every store is
// written through before the guest sees success.
//
// mu guards data and file and is held across the file write, so stores
// reach the file in the order the guest made them and a fetch never sees
// a store the file has not taken. The file's size is the NVRAM's once
// opened (a shorter file is zero-extended).
type NVRAM struct {
	mu   sync.Mutex
	data []byte
	file *os.File // nil: memory only
}

// NewNVRAM makes an NVRAM of size bytes (0: DefaultNVRAMSize). With path,
// the file's contents are loaded (it may be shorter than size, never
// longer) and stores go to it.
func NewNVRAM(size int, path string) (*NVRAM, error) {
	if size == 0 {
		size = DefaultNVRAMSize
	}
	if size < minNVRAMSize || size > maxNVRAMSize {
		return nil, fmt.Errorf("nvram size %d outside %d..%d", size, minNVRAMSize, maxNVRAMSize)
	}
	n := &NVRAM{data: make([]byte, size)}
	if path == "" {
		return n, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening nvram file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening nvram file: %w", err)
	}
	if st.Size() > int64(size) {
		f.Close()
		return nil, fmt.Errorf("nvram file %s is %d bytes, larger than the %d-byte NVRAM", path, st.Size(), size)
	}
	if _, err := io.ReadFull(f, n.data[:st.Size()]); err != nil {
		f.Close()
		return nil, fmt.Errorf("reading nvram file: %w", err)
	}
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("sizing nvram file: %w", err)
	}
	n.file = f
	return n, nil
}

// Size is the NVRAM size in bytes.
func (n *NVRAM) Size() int { return len(n.data) }

// ReadAt copies NVRAM contents at off into p.
func (n *NVRAM) ReadAt(p []byte, off int64) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if off < 0 || off > int64(len(n.data)) || int64(len(p)) > int64(len(n.data))-off {
		return fmt.Errorf("nvram read %#x+%#x outside %#x bytes", off, len(p), len(n.data))
	}
	copy(p, n.data[off:])
	return nil
}

// WriteAt stores p at off, through to the backing file if there is one.
func (n *NVRAM) WriteAt(p []byte, off int64) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if off < 0 || off > int64(len(n.data)) || int64(len(p)) > int64(len(n.data))-off {
		return fmt.Errorf("nvram write %#x+%#x outside %#x bytes", off, len(p), len(n.data))
	}
	if n.file != nil {
		if _, err := n.file.WriteAt(p, off); err != nil {
			return fmt.Errorf("writing nvram file: %w", err)
		}
	}
	copy(n.data[off:], p)
	return nil
}

// Close syncs and closes the backing file.
func (n *NVRAM) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.file == nil {
		return nil
	}
	err := n.file.Sync()
	if cerr := n.file.Close(); err == nil {
		err = cerr
	}
	n.file = nil
	return err
}

// nvramArgs decodes nvram-fetch/nvram-store: 3 in (offset, buffer,
// length) -> 2 out (status, bytes transferred). A range outside the NVRAM
// is a parameter error, a buffer outside guest memory a hardware error;
// either way nothing is transferred.
func nvramArgs(m *Machine, c *rtasCall) (off int64, buf []byte, ok bool) {
	if !c.counts(3, 2) {
		return 0, nil, false
	}
	c.ret(1, 0)
	// The arguments are 32-bit RTAS cells: off and n cannot be negative
	// or overflow off+n in int64. The buffer is a real address (the guest
	// calls RTAS with translation off).
	off, addr, n := int64(c.arg(0)), uint64(c.arg(1)), int64(c.arg(2))
	if off+n > int64(m.nvram.Size()) {
		c.status(RTASParameterError)
		return 0, nil, false
	}
	buf, err := m.mem.Slice(physToReal(addr), uint64(n))
	if err != nil {
		c.status(RTASHardwareError)
		return 0, nil, false
	}
	return off, buf, true
}

// rtasNVRAMFetch is nvram-fetch (PAPR RTAS): copy NVRAM bytes into the
// guest's buffer.
func rtasNVRAMFetch(m *Machine, cpu *CPU, c *rtasCall) {
	off, buf, ok := nvramArgs(m, c)
	if !ok {
		return
	}
	if err := m.nvram.ReadAt(buf, off); err != nil {
		c.status(RTASHardwareError)
		return
	}
	c.status(RTASSuccess)
	c.ret(1, uint32(len(buf)))
}

// rtasNVRAMStore is nvram-store (PAPR RTAS): copy the guest's buffer into
// the NVRAM, and through to its file before the guest sees success.
func rtasNVRAMStore(m *Machine, cpu *CPU, c *rtasCall) {
	off, buf, ok := nvramArgs(m, c)
	if !ok {
		return
	}
	// The guest may change buf while we write: store a snapshot so the
	// file and the in-memory copy agree.
	snap := append([]byte(nil), buf...)
	if err := m.nvram.WriteAt(snap, off); err != nil {
		m.logf("nvram-store: %v", err)
		c.status(RTASHardwareError)
		return
	}
	c.status(RTASSuccess)
	c.ret(1, uint32(len(snap)))
}
