package imgtool

import (
	"github.com/petrel-vmm/petrel/block"
)

// convert --salvage: as QEMU 7.2's img_convert, a block status query that
// fails is retried over a quarter of the range until it covers one
// sector, which is then warned about and copied as data; a read that
// fails is retried sector by sector, and each sector that still fails is
// warned about and written as zeroes. The run is sequential (one job at
// a time, each done before the next status query), so the warnings come
// in qemu-img's order (iotest 251).

const salvageSector = 512

// sourceStatus is src.BlockStatus(off, n), salvaged when --salvage.
// base is the source's offset in the concatenated sources, which the
// warnings name.
func (c *converter) sourceStatus(src block.Image, base, off, n int64) (block.Extent, error) {
	for {
		e, err := src.BlockStatus(off, n)
		if err == nil || c.warn == nil {
			return e, err
		}
		if n <= salvageSector {
			c.warn("error while reading block status at offset %d: %s", base+off, errnoText(err))
			return block.Extent{Offset: off, Length: n, Flags: block.ExtentData | block.ExtentAllocated, HostOffset: -1}, nil
		}
		// A quarter of the range, in whole sectors.
		sectors := (n + salvageSector - 1) / salvageSector
		n = min(n, (sectors+3)/4*salvageSector)
	}
}

// readSource fills b from source si at off, salvaged when --salvage.
func (c *converter) readSource(si int, b []byte, off int64) error {
	src := c.srcs[si]
	_, err := src.ReadAt(b, off)
	if err == nil || c.warn == nil {
		return err
	}
	for done := 0; done < len(b); done += salvageSector {
		s := b[done:min(done+salvageSector, len(b))]
		if _, err := src.ReadAt(s, off+int64(done)); err != nil {
			c.warn("error while reading offset %d: %s", off+int64(done), errnoText(err))
			clear(s)
		}
	}
	return nil
}
