package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// A saved machine's state in an internal snapshot (spec "Snapshots",
// vm_state_size), stored as QEMU's savevm stores it: like guest data, at
// guest offsets from the first L1 entry that maps no cluster of the
// virtual disk (QEMU's qcow2_vm_state_offset), so the snapshot's own L1
// table reaches it. Saving writes the state into the active tree there,
// takes the snapshot (its copy of the L1 table covers the state), then
// drops the state from the active tree again, as QEMU discards it after
// qcow2_snapshot_create so that the next snapshot does not copy it.

// vmStateL1Index is the first L1 index past a disk of the given size:
// the VM state of a snapshot of that disk starts there, at guest offset
// vmStateL1Index * l1Span, so the state never shares an L2 table with the
// disk's last clusters.
func (img *Image) vmStateL1Index(diskSize uint64) int64 {
	return int64(l1EntriesFor(diskSize, img.clusterBits, img.l2EntryShift))
}

// l1Span is the guest bytes one L1 entry maps: an L2 table's entries
// times the cluster size (512 MiB for 64 KiB clusters).
func (img *Image) l1Span() int64 { return img.l2Entries * img.clusterSize }

// CreateSnapshotWithState creates internal snapshot name recording
// vmClockNs as its VM clock and icount as unknown, as QEMU's savevm does.
// When state is non-nil it is called once to stream the VM state; the
// snapshot's vm_state_size is the number of bytes it wrote. Whole
// clusters of zeroes in the stream are not allocated. state must not do
// I/O on this image: the image is quiesced while it runs.
func (img *Image) CreateSnapshotWithState(name string, vmClockNs uint64, state func(w io.Writer) error) error {
	if err := img.writable(); err != nil {
		return err
	}
	return img.noteCorrupt(img.saveSnapshot(snapshot{name: name, vmClock: vmClockNs, icount: ^uint64(0)}, state))
}

// saveSnapshot creates a snapshot with the name, VM clock and icount of
// meta, and with the VM state that state streams (nil: none). An image
// with an external data file has no internal snapshots (spec,
// incompatible bit 2): refused as QEMU does, with ENOTSUP.
func (img *Image) saveSnapshot(meta snapshot, state func(io.Writer) error) error {
	if img.external {
		return errNotSupported
	}
	snaps, oldSize, err := img.lockForSnapshot()
	if err != nil {
		return err
	}
	defer img.unquiesce()
	if err := checkNewSnapshot(snaps, meta.name); err != nil {
		return err
	}
	if state == nil {
		return img.addSnapshot(snaps, oldSize, meta)
	}
	first := img.vmStateL1Index(img.hdr.size)
	// What an interrupted save left beyond the disk goes first: the stream
	// skips zero clusters, which must then read as zeroes.
	if err := img.dropActiveTail(first); err != nil {
		return err
	}
	n, err := img.writeState(first*img.l1Span(), state)
	if err != nil {
		if derr := img.dropActiveTail(first); derr != nil {
			return fmt.Errorf("%w (dropping the partial VM state: %v)", err, derr)
		}
		return err
	}
	meta.vmState = uint64(n)
	if err := img.addSnapshot(snaps, oldSize, meta); err != nil {
		return err
	}
	if err := img.dropActiveTail(first); err != nil {
		return fmt.Errorf("snapshot %s was created, but dropping its VM state from the active image failed: %w", meta.name, err)
	}
	return img.flushLocked()
}

// dropActiveTail removes the active L1 entries from index from on (the VM
// state area beyond the disk) with every cluster they reach. Order: the
// zeroed L1 table is on disk before any reference goes, so a crash leaks
// at worst. Called quiesced.
func (img *Image) dropActiveTail(from int64) error {
	var dropped []uint64
	for i := from; i < int64(len(img.l1)); i++ {
		if img.l1[i]&l1OffsetMask != 0 {
			dropped = append(dropped, img.l1[i])
			img.l1[i] = 0
		}
	}
	if len(dropped) == 0 {
		return nil
	}
	if err := img.writeActiveL1(); err != nil {
		return err
	}
	if err := img.barrier(); err != nil {
		return err
	}
	return img.updateTree(dropped, -1, false)
}

// writeState runs state with a writer that stores the stream at guest
// offset base of the active tree, and returns the bytes written. Called
// quiesced; the tree beyond the disk must be empty.
func (img *Image) writeState(base int64, state func(io.Writer) error) (int64, error) {
	cs := img.clusterSize
	w := &stateWriter{img: img, base: base, zero: make([]byte, cs)}
	w.buf = make([]byte, 0, max(cs, stateBatch))
	if err := state(w); err != nil {
		return 0, fmt.Errorf("saving VM state: %w", err)
	}
	if w.err != nil {
		return 0, w.err
	}
	if len(w.buf) > 0 {
		// The last cluster: its tail reads as zeroes, like the empty area.
		tail := len(w.buf)
		w.buf = w.buf[:(int64(tail)+cs-1)&^(cs-1)]
		clear(w.buf[tail:])
		if err := w.put(w.buf); err != nil {
			return 0, err
		}
	}
	// The L1 table covers the whole state even if it ends in zeroes that
	// were never written, so that the snapshot's L1 table reaches its end.
	if w.pos > 0 {
		if err := img.coverL1((base + w.pos - 1) / img.l1Span()); err != nil {
			return 0, err
		}
	}
	return w.pos, nil
}

// stateBatch is how much of the stream stateWriter collects before
// writing (whole clusters, at least one).
const stateBatch = 1 << 20

// stateWriter stores the VM state stream in whole clusters, skipping the
// ones that are all zeroes. Its methods run with img.mu held.
type stateWriter struct {
	img     *Image
	base    int64  // guest offset of the state's first byte
	pos     int64  // bytes accepted
	written int64  // bytes stored (whole clusters); buf follows them
	buf     []byte // pending bytes, fewer than cap(buf)
	zero    []byte // one cluster of zeroes
	err     error  // sticky
}

// Write accepts any amount: whole clusters of p go out directly (put),
// what does not fill a cluster waits in buf until more comes or writeState
// pads it. It never returns a short count without an error.
func (w *stateWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := len(p)
	if len(w.buf) > 0 {
		k := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf, p = w.buf[:len(w.buf)+k], p[k:]
		if len(w.buf) < cap(w.buf) {
			w.pos += int64(n)
			return n, nil
		}
		if w.err = w.put(w.buf); w.err != nil {
			return 0, w.err
		}
		w.buf = w.buf[:0]
	}
	// Whole clusters straight from p, the rest into the buffer.
	if whole := int64(len(p)) &^ (w.img.clusterSize - 1); whole > 0 {
		if w.err = w.put(p[:whole]); w.err != nil {
			return 0, w.err
		}
		p = p[whole:]
	}
	w.buf = append(w.buf, p...)
	w.pos += int64(n)
	return n, nil
}

// put stores p (whole clusters) after the bytes already written: each
// run of clusters that are not all zeroes with one allocating write.
func (w *stateWriter) put(p []byte) error {
	cs := w.img.clusterSize
	for i := int64(0); i < int64(len(p)); {
		if bytes.Equal(p[i:i+cs], w.zero) {
			i += cs
			continue
		}
		j := i + cs
		for j < int64(len(p)) && !bytes.Equal(p[j:j+cs], w.zero) {
			j += cs
		}
		if err := w.img.writeBeyondDisk(p[i:j], w.base+w.written+i); err != nil {
			return err
		}
		i = j
	}
	w.written += int64(len(p))
	return nil
}

// writeBeyondDisk writes whole clusters p at guest offset off, which
// lies beyond the virtual disk in an area with no clusters allocated,
// growing the active L1 table as needed. Called quiesced.
func (img *Image) writeBeyondDisk(p []byte, off int64) error {
	for done := int64(0); done < int64(len(p)); {
		cur := off + done
		if err := img.coverL1(cur / img.l1Span()); err != nil {
			return err
		}
		// allocWrite expects mu held and returns with it released; the
		// caller (quiesced) expects to hold it again, so take it back
		// before anything else, error or not.
		n, err := img.allocWrite(p[done:], cur) // releases img.mu
		img.mu.Lock()
		if err != nil {
			return err
		}
		done += int64(n)
	}
	return nil
}

// coverL1 grows the active L1 table to hold index i, by half its size at
// least (as QEMU grows it for writes beyond its end), within maxL1Bytes.
// The VM state thus counts against the same 32 MiB L1 limit as the disk:
// with 64 KiB clusters that is 2 PiB of guest space, far more than any
// state.
func (img *Image) coverL1(i int64) error {
	n := int64(len(img.l1))
	if i < n {
		return nil
	}
	if i >= maxL1Bytes/8 {
		return fmt.Errorf("the VM state does not fit in the L1 table (it would need %d entries, at most %d)", i+1, maxL1Bytes/8)
	}
	return img.growL1(min(max(i+1, n+n/2), maxL1Bytes/8))
}

// VMState returns a reader over the VM state of snapshot nameOrID and its
// size (0 when the snapshot has none). The state is read from the
// snapshot's own L1 table; nothing in the image changes. Clusters the
// state never allocated read as zeroes. The reader stays valid until the
// snapshot is deleted or the image closed.
func (img *Image) VMState(nameOrID string) (io.ReaderAt, int64, error) {
	img.quiesce()
	defer img.unquiesce()
	snaps, _, err := img.readSnapshots()
	if err != nil {
		return nil, 0, err
	}
	i, l1, err := img.snapshotL1(snaps, nameOrID)
	if err != nil {
		return nil, 0, err
	}
	sn := snaps[i]
	if sn.vmState == 0 {
		return &stateReader{img: img}, 0, nil
	}
	// QEMU's savevm writes every byte of the stream, so the snapshot's L1
	// table reaches the state's end; a state beyond it is corrupt (and its
	// size may be absurd: the field is 64 bits, and so is the disk size
	// that places it). validateSnapshotL1 bounds len(l1), so end cannot
	// overflow.
	first, end := img.vmStateL1Index(sn.diskSize), int64(len(l1))*img.l1Span()
	if first > int64(len(l1)) || sn.vmState > uint64(end-first*img.l1Span()) {
		return nil, 0, corruptf("snapshot %s (%s): its VM state (%d bytes after a disk of %d bytes) goes beyond its L1 table (%d entries)", sn.id, sn.name, sn.vmState, sn.diskSize, len(l1))
	}
	return &stateReader{img: img, l1: l1, base: first * img.l1Span(), size: int64(sn.vmState)}, int64(sn.vmState), nil
}

// stateReader reads a snapshot's VM state through its L1 table: l1 is the
// snapshot's table as loaded by VMState, base the guest offset where the
// state starts (the first L1 entry past the snapshot's disk), size the
// state's length in bytes (0 for a snapshot without state).
type stateReader struct {
	img        *Image
	l1         []uint64
	base, size int64
}

// errClosed is returned by a VM state reader whose image was closed.
var errClosed = errors.New("qcow2 image is closed")

// ReadAt implements io.ReaderAt over the state; it may be called
// concurrently with guest I/O (it takes gate shared and mu per run, as
// ReadAt does). Unallocated runs read as zeroes, never the backing file's
// bytes, because the state belongs to this image alone.
func (r *stateReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("reading VM state at negative offset %d", off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.size-off)
	img := r.img
	img.gate.RLock()
	defer img.gate.RUnlock()
	for done := int64(0); done < n; {
		g := r.base + off + done
		img.mu.Lock()
		if img.closed {
			img.mu.Unlock()
			return int(done), errClosed
		}
		m, err := img.resolveIn(r.l1, g, n-done)
		img.mu.Unlock()
		if err != nil {
			return int(done), err
		}
		chunk := p[done : done+m.length]
		if m.kind == mapUnallocated {
			clear(chunk) // never the backing file's: the state is this image's
		} else if err := img.readMapped(chunk, g, m); err != nil {
			return int(done), err
		}
		done += m.length
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}
