package blk

import (
	"fmt"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/vmstate"
)

// blkStateVersion is the version of virtio-blk's state, nested in the
// transport's section. Version 1: u32 version, u64 capacity in sectors.
// Everything else (negotiated features) is the transport's; the disk's
// contents are the image's.
const blkStateVersion = 1

// SaveState implements vmstate.Stater.
func (b *Blk) SaveState(e *vmstate.Enc) {
	e.U32(blkStateVersion)
	e.U64(b.capacity.Load())
}

// LoadState implements vmstate.Stater. The image (its snapshot applied
// first, which restores its size) must have the saved capacity: the
// driver read it from the config space and addresses the disk by it.
func (b *Blk) LoadState(d *vmstate.Dec) error {
	d.Version(blkStateVersion)
	saved := d.U64()
	if err := d.Finish(); err != nil {
		return err
	}
	now := uint64(b.img.Size() / SectorSize)
	if saved != now {
		return fmt.Errorf("virtio-blk: the saved disk had %d sectors, this one has %d: %w", saved, now, pci.ErrStateMismatch)
	}
	b.capacity.Store(now)
	return nil
}
