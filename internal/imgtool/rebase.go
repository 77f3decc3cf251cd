package imgtool

import (
	"fmt"
	"os"

	"github.com/petrel-vmm/petrel/block"
)

func init() {
	register("rebase", "change the backing file: rebase [-u] [-f fmt] [-F fmt] [-p] -b backing file", runRebase)
}

// rebaseChunk bounds one comparison of old and new backing data.
const rebaseChunk = 1 << 20

// runRebase is qemu-img rebase. Safe mode (the default) keeps what the
// image reads: where the image itself allocates nothing, the old backing
// chain's data is compared with the new backing file's, and runs that
// differ are written into the image before the header names the new
// backing file; -u only rewrites the header. A backing file needs its
// format (-F), as QEMU 7.2 requires; -b "" removes the backing file (the
// image then holds everything it read).
func runRebase(t *tool, args []string) int {
	p, err := optSpec{short: "hf:F:b:upt:T:qUc", long: []string{"object=", "image-opts", "force-share"}}.parse(args)
	if err != nil {
		return t.fail("%v", err)
	}
	if err := t.commonOptions(p); err != nil {
		return t.fail("%v", err)
	}
	if len(p.args) != 1 {
		return t.fail("Expecting one image file name")
	}
	if !p.has("b") {
		return t.fail("Must specify backing file (-b) or use unsafe mode (-u)")
	}
	path, name, bfmt := p.args[0], p.get("b"), p.get("F")
	unsafe := p.has("u")
	newPath := block.ResolveBacking(path, name)
	if name != "" && bfmt == "" && !unsafe {
		if _, err := os.Stat(newPath); err != nil {
			return t.fail("Could not open new backing file '%s': No such file or directory", newPath)
		}
	}
	img, err := t.openImage(path, p.get("f"), block.Options{NoBacking: unsafe})
	if err != nil {
		return t.fail("%v", err)
	}
	defer img.Close()
	if name != "" && bfmt == "" {
		// QEMU 7.2's bdrv_change_backing_file refuses a backing file
		// without a format (iotest 114). qemu-img gets there after a
		// safe rebase's copy, which leaves what the image reads as it
		// was; refusing before it leaves the same image.
		return t.fail("Could not change the backing file to '%s': backing format must be specified", name)
	}
	setter, ok := img.(block.BackingSetter)
	if !ok {
		return t.fail("Could not change the backing file to '%s': Operation not supported", name)
	}
	if !unsafe {
		var newB block.Image
		if name != "" {
			if newB, err = t.openFileLayer(newPath, bfmt, block.Options{ReadOnly: true}); err != nil {
				return t.fail("Could not open new backing file '%s'", newPath)
			}
			defer newB.Close()
		}
		if err := t.rebaseCopy(img, newB, p.has("p") && !p.has("q")); err != nil {
			return t.fail("Error while writing image: %v", err)
		}
	}
	if err := setter.SetBackingFile(name, bfmt); err != nil {
		return t.fail("Could not change the backing file to '%s': %v", name, err)
	}
	if err := img.Flush(); err != nil {
		return t.fail("%v", err)
	}
	return 0
}

// rebaseCopy writes into img every sector it does not allocate itself
// whose content through the old backing chain differs from newB.
func (t *tool) rebaseCopy(img, newB block.Image, progress bool) error {
	chain := block.Chain(img)
	size := img.Size()
	oldBuf, newBuf := make([]byte, rebaseChunk), make([]byte, rebaseChunk)
	for off := int64(0); off < size; {
		m, err := layerStatus(img, chain, off, size-off)
		if err != nil {
			return fmt.Errorf("reading block status at %#x: %w", off, err)
		}
		n := min(m.length, rebaseChunk)
		if m.depth == 0 && m.present {
			off += n
			continue
		}
		// A chunk covers what the image itself leaves unallocated,
		// whatever the layers below hold, as img_rebase's
		// bdrv_is_allocated on the image alone: differing runs that
		// continue across backing extents are written at once, so
		// their clusters are allocated in one piece (iotest 024).
		for n < rebaseChunk && off+n < size {
			next, err := layerStatus(img, chain, off+n, size-off-n)
			if err != nil {
				return fmt.Errorf("reading block status at %#x: %w", off+n, err)
			}
			if next.depth == 0 && next.present {
				break
			}
			n = min(rebaseChunk, n+next.length)
		}
		// As QEMU 7.2's img_rebase, a chunk does not cross the end of
		// the old backing file: past it (or with no old backing file)
		// the old data is zeroes by definition.
		oldSize := int64(0)
		if b := img.Backing(); b != nil {
			oldSize = b.Size()
		}
		if off < oldSize {
			n = min(n, oldSize-off)
		}
		o, nb := oldBuf[:n], newBuf[:n]
		if _, err := img.ReadAt(o, off); err != nil {
			return fmt.Errorf("reading old backing data at %#x: %w", off, err)
		}
		if err := block.ReadBacking(newB, nb, off); err != nil {
			return err
		}
		// Write runs of differing 512-byte sectors. As QEMU 7.2's
		// img_rebase, past the old backing file's end the runs are
		// written as zeroes (no unmap): the image gets zero clusters,
		// not zero-filled data (iotest 252); below it, zeroes the old
		// backing file holds are written as data (iotest 024).
		oldZero := off >= oldSize
		for i := int64(0); i < n; {
			e := min(n, i+512)
			if string(o[i:e]) == string(nb[i:e]) {
				i = e
				continue
			}
			j := e
			for j < n {
				k := min(n, j+512)
				if string(o[j:k]) == string(nb[j:k]) {
					break
				}
				j = k
			}
			if oldZero {
				err = img.WriteZeroes(off+i, j-i, false)
			} else {
				_, err = img.WriteAt(o[i:j], off+i)
			}
			if err != nil {
				return fmt.Errorf("%#x: %w", off+i, err)
			}
			i = j
		}
		off += n
		if progress {
			fmt.Fprintf(t.stdout, "    (%3.2f/100%%)\r", float64(off)*100/float64(size))
		}
	}
	if progress {
		fmt.Fprintln(t.stdout)
	}
	return nil
}
