package blk

import (
	"encoding/binary"

	"github.com/petrel-vmm/petrel/devices/virtio"
)

// HandleChain implements virtio.Backend: it serves one request. The chain
// is device-readable header (type le32, reserved le32, sector le64) and
// data, then device-writable data and a final status byte; the driver may
// split those across descriptors any way it likes (5.2.6.4), so everything
// is addressed by offset within the readable or writable bytes.
func (b *Blk) HandleChain(q int, c *virtio.Chain) uint32 {
	var status []byte
	if c.Complete {
		status = statusByte(c)
	}
	if status == nil {
		b.Errors.Add(1)
		return 0 // nowhere to report anything
	}
	if c.Err != nil || c.ReadLen < headerSize {
		return b.finish(status, StatusIOErr, 0)
	}
	var hdr [headerSize]byte
	c.Gather(0, hdr[:])
	typ := binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])
	switch typ {
	case TypeIn:
		n := c.WriteLen - 1
		if !b.rangeOK(sector, n) {
			return b.finish(status, StatusIOErr, 0)
		}
		if err := b.transfer(q, c, false, int64(sector*SectorSize), n); err != nil {
			return b.finish(status, StatusIOErr, 0)
		}
		return b.finish(status, StatusOK, uint32(n))
	case TypeOut:
		n := c.ReadLen - headerSize
		if b.readOnly || !b.rangeOK(sector, n) {
			return b.finish(status, StatusIOErr, 0)
		}
		if err := b.transfer(q, c, true, int64(sector*SectorSize), n); err != nil {
			return b.finish(status, StatusIOErr, 0)
		}
		return b.finish(status, StatusOK, 0)
	case TypeFlush:
		if !b.readOnly {
			if err := b.img.Flush(); err != nil {
				return b.finish(status, StatusIOErr, 0)
			}
		}
		return b.finish(status, StatusOK, 0)
	case TypeGetID:
		n := min(uint64(IDBytes), c.WriteLen-1)
		c.Scatter(0, b.serial[:n])
		return b.finish(status, StatusOK, uint32(n))
	case TypeDiscard, TypeWriteZeroes:
		return b.finish(status, b.discardOrZero(c, typ == TypeWriteZeroes), 0)
	default:
		return b.finish(status, StatusUnsupp, 0)
	}
}

// finish stores the status and returns the used length: data written plus
// the status byte.
func (b *Blk) finish(status []byte, s uint8, written uint32) uint32 {
	status[0] = s
	if s != StatusOK {
		b.Errors.Add(1)
	}
	return written + 1
}

// rangeOK reports whether n bytes at sector are whole sectors inside the disk.
func (b *Blk) rangeOK(sector, n uint64) bool {
	capacity := b.Capacity()
	return n%SectorSize == 0 && sector <= capacity && n/SectorSize <= capacity-sector
}

// discardOrZero runs the discard / write-zeroes segments (5.2.6.2).
func (b *Blk) discardOrZero(c *virtio.Chain, zero bool) uint8 {
	payload := c.ReadLen - headerSize
	if payload == 0 || payload%segmentSize != 0 || payload/segmentSize > MaxDiscardSegs {
		return StatusUnsupp
	}
	if b.readOnly {
		return StatusIOErr
	}
	for off := uint64(headerSize); off < c.ReadLen; off += segmentSize {
		var seg [segmentSize]byte
		c.Gather(off, seg[:])
		sector := binary.LittleEndian.Uint64(seg[0:])
		num := binary.LittleEndian.Uint32(seg[8:])
		flags := binary.LittleEndian.Uint32(seg[12:])
		// Discard takes no flags; write-zeroes only UNMAP (QEMU answers
		// UNSUPP to anything else).
		if flags&^unmapFlag != 0 || (!zero && flags != 0) {
			return StatusUnsupp
		}
		if num > MaxDiscardSectors || !b.rangeOK(sector, uint64(num)*SectorSize) {
			return StatusIOErr
		}
		off, n := int64(sector*SectorSize), int64(num)*SectorSize
		var err error
		if zero {
			err = b.img.WriteZeroes(off, n, flags&unmapFlag != 0)
		} else {
			err = b.img.Discard(off, n)
		}
		if err != nil {
			return StatusIOErr
		}
	}
	return StatusOK
}

// coalesceMax is the largest request whose data segments transfer copies
// through the queue's bounce buffer to make one image call. Linux splits a
// request into one descriptor per guest page, so a 1 MiB request is up to
// 256 segments: one image call each costs a metadata lookup and a system
// call per 4 KiB (QEMU's preadv/pwritev does one), one copy costs less.
// Linux's default max_sectors_kb (1280) fits.
const coalesceMax = 2 << 20

// transfer moves n data bytes between the image at pos and the chain's
// buffers: the readable bytes after the header (write) or the writable
// bytes before the status (read). A request of several data segments and
// at most coalesceMax bytes goes through queue q's bounce buffer as one
// image call; otherwise each descriptor's guest memory is passed to the
// image directly.
func (b *Blk) transfer(q int, c *virtio.Chain, write bool, pos int64, n uint64) error {
	if n > 0 && n <= coalesceMax && countSegs(newDataSegs(c, write, n)) > 1 {
		if b.bounce[q] == nil {
			b.bounce[q] = make([]byte, coalesceMax)
		}
		buf := b.bounce[q][:n]
		if write {
			c.Gather(headerSize, buf)
			_, err := b.img.WriteAt(buf, pos)
			return err
		}
		if err := b.readFull(buf, pos); err != nil {
			return err
		}
		c.Scatter(0, buf)
		return nil
	}
	d := newDataSegs(c, write, n)
	for buf := d.next(); buf != nil; buf = d.next() {
		var err error
		if write {
			_, err = b.img.WriteAt(buf, pos)
		} else {
			err = b.readFull(buf, pos)
		}
		if err != nil {
			return err
		}
		pos += int64(len(buf))
	}
	return nil
}

// readFull reads all of buf from the image at pos. A short read is an
// error only if the image says so: block.Image readers return an error
// for anything short of the request inside the disk, which the caller has
// already bounded by the capacity.
func (b *Blk) readFull(buf []byte, pos int64) error {
	got, err := b.img.ReadAt(buf, pos)
	if got == len(buf) {
		return nil // io.ReaderAt may say EOF with a full read
	}
	return err
}

// dataSegs walks the guest buffers that hold a request's n data bytes:
// the readable bytes after the header (write) or the writable ones
// (read), in chain order. A value, so walking allocates nothing.
//
// i is the next segment to look at; skip the bytes still to pass over
// (the 16-byte request header, for a write); n the data bytes not yet
// returned. write is the request's direction, so the segments holding data
// are the device-readable ones for a write and the writable ones for a
// read.
type dataSegs struct {
	c       *virtio.Chain
	write   bool
	i       int
	skip, n uint64
}

// newDataSegs starts a walk over n data bytes of c.
func newDataSegs(c *virtio.Chain, write bool, n uint64) dataSegs {
	d := dataSegs{c: c, write: write, n: n}
	if write {
		d.skip = headerSize
	}
	return d
}

// next returns the next piece of data, nil after the last.
func (d *dataSegs) next() []byte {
	for ; d.i < len(d.c.Segs) && d.n > 0; d.i++ {
		s := &d.c.Segs[d.i]
		if s.Write == d.write {
			continue
		}
		l := uint64(s.Len)
		if d.skip >= l {
			d.skip -= l
			continue
		}
		buf := s.Buf[d.skip:min(l, d.skip+d.n)]
		d.skip = 0
		d.n -= uint64(len(buf))
		d.i++
		return buf
	}
	return nil
}

// countSegs is how many pieces d yields; more than one means the data is
// split across descriptors.
func countSegs(d dataSegs) int {
	k := 0
	for d.next() != nil {
		k++
	}
	return k
}

// statusByte returns the last writable byte of the chain, or nil if there
// is none the device can reach.
func statusByte(c *virtio.Chain) []byte {
	for i := len(c.Segs) - 1; i >= 0; i-- {
		s := &c.Segs[i]
		if !s.Write {
			return nil
		}
		if s.Len == 0 {
			continue
		}
		if s.Buf == nil {
			return nil
		}
		return s.Buf[s.Len-1 : s.Len]
	}
	return nil
}
