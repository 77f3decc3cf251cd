package qed

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/block"
)

// maxAllocRun bounds one allocating write (its bounce buffer), in bytes;
// a longer write allocates in several steps, each under mu.
const maxAllocRun = 8 << 20

// ReadAt reads guest data; a read crossing the end returns io.EOF. mu is
// held only to map each run; the data is read without it, which is safe
// because an allocated cluster never moves or is freed while the image is
// open; MakeEmpty, which drops them all, must not run alongside I/O.
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	size := img.Size()
	if off < 0 {
		return 0, fmt.Errorf("qed: negative offset %d", off)
	}
	if off >= size {
		return 0, io.EOF
	}
	total := int(min(int64(len(p)), size-off))
	for done := 0; done < total; {
		pos := off + int64(done)
		img.mu.Lock()
		k, host, n, err := img.mapRange(pos, int64(total-done))
		img.mu.Unlock()
		if err != nil {
			return done, fmt.Errorf("reading %s at %#x: %w", img.path, pos, err)
		}
		buf := p[done : done+int(n)]
		switch k {
		case kindData:
			img.event(block.EventReadAIO)
			m, err := img.f.ReadAt(buf, host)
			if err != nil && !errors.Is(err, io.EOF) {
				return done, fmt.Errorf("reading %s at %#x: %w", img.path, host, err)
			}
			clear(buf[m:]) // cluster past the end of a truncated file
		case kindZero:
			clear(buf)
		default:
			if err := block.ReadBacking(img.backing, buf, pos); err != nil {
				return done, err
			}
		}
		done += int(n)
	}
	if total < len(p) {
		return total, io.EOF
	}
	return total, nil
}

// checkWrite refuses op on a read-only image or outside the disk.
func (img *Image) checkWrite(op string, off, n int64) error {
	if img.ro {
		return fmt.Errorf("%s %s: %w", op, img.path, os.ErrPermission)
	}
	if size := img.Size(); off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("%s %s: range %#x+%#x outside the disk", op, img.path, off, n)
	}
	return nil
}

// WriteAt writes guest data, allocating clusters as needed. Writes into
// allocated clusters run outside mu, so they may proceed in parallel; a
// write into unallocated or zero clusters takes mu for the whole
// allocation (allocWrite).
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	if err := img.checkWrite("writing", off, int64(len(p))); err != nil {
		return 0, err
	}
	for done := 0; done < len(p); {
		pos := off + int64(done)
		img.mu.Lock()
		k, host, n, err := img.mapRange(pos, int64(len(p)-done))
		if err == nil && k != kindData {
			n, err = img.allocWrite(pos, p[done:done+int(n)], k)
		}
		img.mu.Unlock()
		if err != nil {
			return done, fmt.Errorf("writing %s at %#x: %w", img.path, pos, err)
		}
		if k == kindData {
			img.event(block.EventWriteAIO)
			if _, err := img.f.WriteAt(p[done:done+int(n)], host); err != nil {
				return done, fmt.Errorf("writing %s at %#x: %w", img.path, host, err)
			}
		}
		done += int(n)
	}
	return len(p), nil
}

// markNeedCheck sets QED_F_NEED_CHECK durably before the first allocating
// write after a clean state. Caller holds mu. The bit stays set until
// Flush (or Close) clears it, so a run of allocations costs one header
// write and sync, not one each; on failure the in-memory bit is restored
// so the next allocation tries again.
func (img *Image) markNeedCheck() error {
	if img.hdr.Features&featNeedCheck != 0 {
		return nil
	}
	img.hdr.Features |= featNeedCheck
	if err := img.writeHeader(); err != nil {
		img.hdr.Features &^= featNeedCheck
		return err
	}
	return nil
}

// allocWrite writes p at guest offset off into newly allocated clusters;
// the range lies in unallocated (k == kindUnallocated) or zero clusters.
// The partial clusters at either end are filled from the backing file or
// with zeroes. It returns how many bytes of p it wrote. Caller holds mu.
//
// One call stays within one L2 table's range and maxAllocRun, so it ends
// with one setL2Entries. The steps, in crash-safe order: set NEED_CHECK
// durably (markNeedCheck); append the clusters at fileSize; sync if bytes
// came from the backing file; point the L2 entries at them (which may
// append a new L2 table and then write the L1 entry). A crash before the
// L2 write leaves only leaked clusters past the old end, which the check
// on the next open truncates; a crash after it is consistent. A zero
// cluster's old entry (1) is simply replaced: its cluster was never
// allocated.
func (img *Image) allocWrite(off int64, p []byte, k kind) (int64, error) {
	cs := img.clusterSize
	span := img.tableEntries * cs
	n := min(int64(len(p)), span-off&(span-1), maxAllocRun)
	start := off &^ (cs - 1)
	end := (off + n + cs - 1) &^ (cs - 1)
	if end-start > maxAllocRun && end-start > cs {
		end -= cs
		n = end - off
	}
	var buf []byte
	if start == off && end == off+n {
		buf = p[:n] // whole clusters: no bounce buffer
	} else {
		buf = make([]byte, end-start)
	}
	if k == kindUnallocated && len(buf) != len(p[:n]) {
		if off > start {
			if err := block.ReadBacking(img.backing, buf[:off-start], start); err != nil {
				return 0, err
			}
		}
		if tail := off + n; tail < end {
			if err := block.ReadBacking(img.backing, buf[tail-start:], tail); err != nil {
				return 0, err
			}
		}
	}
	if len(buf) != len(p[:n]) {
		copy(buf[off-start:], p[:n])
	}
	if err := img.markNeedCheck(); err != nil {
		return 0, err
	}
	host := img.fileSize
	img.event(block.EventWriteAIO)
	if _, err := img.f.WriteAt(buf, host); err != nil {
		return 0, fmt.Errorf("writing new clusters at %#x: %w", host, err)
	}
	img.fileSize += end - start
	if img.backing != nil && k == kindUnallocated && len(buf) != len(p[:n]) {
		// A partial cluster copied from the backing file must be durable
		// before the L2 entry points at it, or a crash could expose a
		// cluster that lost its backing bytes (as QEMU's QED).
		if err := img.sync(); err != nil {
			return 0, err
		}
	}
	vals := make([]uint64, (end-start)/cs)
	for i := range vals {
		vals[i] = uint64(host + int64(i)*cs)
	}
	l1i, l2i := img.indexes(start)
	if err := img.setL2Entries(l1i, l2i, vals); err != nil {
		return 0, err
	}
	return n, nil
}

// Discard makes the range read as zeroes (QED cannot free clusters without
// leaking them, so it does what WriteZeroes does). Unlike a raw image's
// discard it never makes the file smaller.
func (img *Image) Discard(off, n int64) error { return img.WriteZeroes(off, n, true) }

// WriteZeroes zeroes the range: whole unallocated clusters over a backing
// file become zero clusters (L2 entry 1), allocated clusters are zeroed in
// place, partial clusters are written. Whole unallocated clusters without
// a backing file, and zero clusters, already read as zeroes and are left
// alone. unmap is ignored: QED cannot give clusters back.
func (img *Image) WriteZeroes(off, n int64, unmap bool) error {
	if err := img.checkWrite("writing zeroes to", off, n); err != nil {
		return err
	}
	cs := img.clusterSize
	end := off + n
	if head := min(end, (off+cs-1)&^(cs-1)); head > off {
		if err := img.writeZeroBytes(off, head-off); err != nil {
			return err
		}
		off = head
	}
	if tail := max(off, end&^(cs-1)); tail < end {
		if err := img.writeZeroBytes(tail, end-tail); err != nil {
			return err
		}
		end = tail
	}
	for off < end {
		img.mu.Lock()
		k, host, l, err := img.mapRange(off, end-off)
		if err == nil && k == kindUnallocated && img.backing != nil {
			err = img.zeroClusters(off, l)
		}
		img.mu.Unlock()
		if err != nil {
			return fmt.Errorf("writing zeroes to %s at %#x: %w", img.path, off, err)
		}
		if k == kindData {
			if err := img.f.Fallocate(unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, host, l); err != nil {
				if err := img.writeZeroBytes(off, l); err != nil {
					return err
				}
			}
		}
		off += l
	}
	return nil
}

// zeroChunk is the source of writeZeroBytes; shared by all images and never
// written, so safe to share.
var zeroChunk = make([]byte, 1<<20)

// writeZeroBytes writes n zero bytes at guest offset off through WriteAt,
// allocating as needed: for partial clusters, and where fallocate cannot
// zero a data range.
func (img *Image) writeZeroBytes(off, n int64) error {
	for n > 0 {
		c := min(n, int64(len(zeroChunk)))
		if _, err := img.WriteAt(zeroChunk[:c], off); err != nil {
			return err
		}
		off, n = off+c, n-c
	}
	return nil
}

// zeroClusters turns whole unallocated clusters into zero clusters, one L2
// table at a time. Caller holds mu. off and n must be cluster-aligned
// (WriteZeroes has split off the partial clusters). No data is written,
// only L2 entries (and possibly a new L2 table), after NEED_CHECK.
func (img *Image) zeroClusters(off, n int64) error {
	cs := img.clusterSize
	span := img.tableEntries * cs
	if err := img.markNeedCheck(); err != nil {
		return err
	}
	for n > 0 {
		c := min(n, span-off&(span-1))
		vals := make([]uint64, c/cs)
		for i := range vals {
			vals[i] = entryZero
		}
		l1i, l2i := img.indexes(off)
		if err := img.setL2Entries(l1i, l2i, vals); err != nil {
			return err
		}
		off, n = off+c, n-c
	}
	return nil
}

// BlockStatus reports the allocation of the run starting at off, at most n
// bytes and at most 1 GiB (bounding the table walk under mu). Unallocated
// runs are answered by the backing chain (block.BackingStatus), as
// qemu-img map shows them.
func (img *Image) BlockStatus(off, n int64) (block.Extent, error) {
	size := img.Size()
	if off < 0 || off >= size || n <= 0 {
		return block.Extent{}, fmt.Errorf("block status of %s: offset %#x outside the disk", img.path, off)
	}
	n = min(n, size-off, 1<<30)
	img.mu.Lock()
	k, host, l, err := img.mapRange(off, n)
	img.mu.Unlock()
	if err != nil {
		return block.Extent{}, fmt.Errorf("block status of %s at %#x: %w", img.path, off, err)
	}
	switch k {
	case kindData:
		return block.Extent{Offset: off, Length: l, Flags: block.ExtentData | block.ExtentAllocated, HostOffset: host, File: img.path}, nil
	case kindZero:
		return block.Extent{Offset: off, Length: l, Flags: block.ExtentZero | block.ExtentAllocated, HostOffset: -1, File: img.path}, nil
	}
	return block.BackingStatus(img.backing, off, l)
}
