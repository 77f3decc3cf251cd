package blkdebug

import "github.com/petrel-vmm/petrel/block"

// Image is a blkdebug node above a whole image (json:{"driver":
// "blkdebug", "image": {...}}): only rules on the "none" event can fire
// there, since no engine raises events above itself; they fail the
// image's requests by type and sector.
type Image struct {
	block.Image
	inj *injector
}

// NewImage puts a blkdebug node with c's rules over img.
func NewImage(img block.Image, c *Config) *Image {
	return &Image{Image: img, inj: newInjector(c.rules)}
}

func (i *Image) ReadAt(p []byte, off int64) (int, error) {
	if err := i.inj.check(off, int64(len(p)), ioRead); err != nil {
		return 0, err
	}
	return i.Image.ReadAt(p, off)
}

func (i *Image) WriteAt(p []byte, off int64) (int, error) {
	if err := i.inj.check(off, int64(len(p)), ioWrite); err != nil {
		return 0, err
	}
	return i.Image.WriteAt(p, off)
}

func (i *Image) WriteZeroes(off, n int64, unmap bool) error {
	if err := i.inj.check(off, n, ioWriteZeroes); err != nil {
		return err
	}
	return i.Image.WriteZeroes(off, n, unmap)
}

func (i *Image) Discard(off, n int64) error {
	if err := i.inj.check(off, n, ioDiscard); err != nil {
		return err
	}
	return i.Image.Discard(off, n)
}

func (i *Image) Flush() error {
	if err := i.inj.check(0, 0, ioFlush); err != nil {
		return err
	}
	return i.Image.Flush()
}

func (i *Image) BlockStatus(off, n int64) (block.Extent, error) {
	if err := i.inj.check(off, n, ioBlockStatus); err != nil {
		return block.Extent{}, err
	}
	return i.Image.BlockStatus(off, n)
}

// Filename is the image's below (blkdebug is a filter: qemu-img map names
// the file holding the data).
func (i *Image) Filename() string { return block.Filename(i.Image) }
