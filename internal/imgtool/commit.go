package imgtool

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/petrel-vmm/petrel/block"
)

func init() {
	register("commit", "commit changes into the backing file: commit [-f fmt] [-t cache] [-b base] [-d] [-p] file", runCommit)
}

// runCommit is qemu-img commit: the data the top image holds above the
// base (its backing file, or -b a deeper layer) is written into the base,
// then the top is emptied so it reads through again (unless -d, or -b
// which implies it). The top is only read until that last step; the base
// is opened on its own, writable, by its file name and format.
func runCommit(t *tool, args []string) int {
	p, err := optSpec{short: "f:ht:b:dpqr:", long: []string{"object=", "image-opts"}}.parse(args)
	if err != nil {
		return t.fail("%v", err)
	}
	if err := t.commonOptions(p); err != nil {
		return t.fail("%v", err)
	}
	if len(p.args) != 1 {
		return t.fail("Expecting one image file name")
	}
	direct, err := cacheDirect(p.get("t"))
	if err != nil {
		return t.fail("%v", err)
	}
	path := p.args[0]
	top, err := t.openImage(path, p.get("f"), block.Options{ReadOnly: true, DirectIO: direct})
	if err != nil {
		return t.fail("%v", err)
	}
	chain := block.Chain(top)
	if len(chain) < 2 {
		top.Close()
		return t.fail("Image does not have a backing file")
	}
	baseIdx := 1
	if b := p.get("b"); b != "" {
		baseIdx = -1
		// As QEMU's bdrv_find_backing_image: a relative name is taken
		// relative to the image whose backing file it would be.
		for i := 1; i < len(chain) && baseIdx < 0; i++ {
			cand := b
			if !filepath.IsAbs(b) {
				cand = filepath.Join(filepath.Dir(block.Filename(chain[i-1])), b)
			}
			if sameFile(block.Filename(chain[i]), cand) {
				baseIdx = i
				break
			}
		}
		if baseIdx < 0 {
			top.Close()
			return t.fail("Did not find '%s' in the backing chain of '%s'", b, path)
		}
	}
	// A second handle on the base: the one inside the top's chain is
	// read-only, as qemu-img reopens the base read-write for the job.
	basePath, baseFmt := block.Filename(chain[baseIdx]), chain[baseIdx].Format()
	opts := block.Options{DirectIO: direct, KeySecret: t.backingKeySecret(path, baseIdx)}
	open := t.openFileLayer
	if name := backingName(chain[baseIdx-1]); baseIdx == 1 && (strings.HasPrefix(name, "json:") || strings.HasPrefix(name, "blkdebug:")) {
		// A backing file given by options (blkdebug over it, iotest
		// 020) is reopened with them: the job writes through them.
		basePath, open = name, t.openImage
	}
	base, err := open(basePath, baseFmt, opts)
	if err != nil {
		top.Close()
		return t.fail("%v", err)
	}
	err = commitInto(top, chain, baseIdx, base, p.has("p") && !p.has("q"), t)
	if cerr := base.Close(); err == nil {
		err = cerr
	}
	top.Close()
	if err != nil {
		// An I/O error fails qemu-img's commit job in the job's words.
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return t.fail("Block job failed: %s", errnoText(err))
		}
		return t.fail("%v", err)
	}
	// -b implies -d, as in qemu-img: with a base below an intermediate
	// layer, emptying the top would expose the intermediate's older data.
	if !p.has("d") && !p.has("b") {
		if err := emptyImage(t, path, p.get("f")); err != nil {
			return t.fail("Could not empty %s: %v", path, err)
		}
	}
	if !p.has("q") {
		fmt.Fprintln(t.stdout, "Image committed.")
	}
	return 0
}

// commitInto copies every range allocated above chain[baseIdx] into base:
// the data of every layer between, as the top sees it, so that the top's
// guest-visible content is unchanged.
func commitInto(top block.Image, chain []block.Image, baseIdx int, base block.Image, progress bool, t *tool) error {
	// A base shorter than the top grows to the top's size first, as
	// QEMU's commit job truncates it.
	size := top.Size()
	if base.Size() < size {
		r, ok := base.(block.Resizer)
		if !ok {
			return fmt.Errorf("the base image is smaller than the top and cannot be resized")
		}
		if err := r.Resize(size); err != nil {
			return fmt.Errorf("growing the base image: %w", err)
		}
	}
	buf := make([]byte, convertChunk)
	for off := int64(0); off < size; {
		m, err := layerStatus(top, chain, off, size-off)
		if err != nil {
			return fmt.Errorf("reading block status at %#x: %w", off, err)
		}
		n := min(m.length, convertChunk)
		// A range some layer above the base allocates: its data is
		// copied; one it reads as zeroes is written as zeroes with unmap
		// allowed, as QEMU's active commit (a mirror job) writes it with
		// BDRV_REQ_MAY_UNMAP, so the base's clusters there are freed
		// where the format keeps them reading zeroes (iotest 313: check
		// then counts no allocated cluster).
		if m.present && m.depth < baseIdx {
			if m.data {
				if _, err := top.ReadAt(buf[:n], off); err != nil {
					return fmt.Errorf("reading %#x: %w", off, err)
				}
				if _, err := base.WriteAt(buf[:n], off); err != nil {
					return fmt.Errorf("writing the base image at %#x: %w", off, err)
				}
			} else if err := base.WriteZeroes(off, n, true); err != nil {
				return fmt.Errorf("zeroing the base image at %#x: %w", off, err)
			}
		}
		off += n
		if progress {
			fmt.Fprintf(t.stdout, "    (%3.2f/100%%)\r", float64(off)*100/float64(size))
		}
	}
	if progress {
		fmt.Fprintln(t.stdout)
	}
	return base.Flush()
}

// backingName is the backing file name img's header holds, as written.
func backingName(img block.Image) string {
	if d, ok := img.(block.Describer); ok {
		name, _ := d.Describe()["backing-filename"].(string)
		return name
	}
	return ""
}

// emptyImage drops the top image's allocations so it reads through to its
// backing file again (qemu-img commit without -d).
func emptyImage(t *tool, path, format string) error {
	img, err := t.openImage(path, format, block.Options{NoBacking: true})
	if err != nil {
		return err
	}
	defer img.Close()
	if e, ok := img.(block.Emptier); ok {
		return e.MakeEmpty()
	}
	// Opened without its backing file, a format's Discard leaves clusters
	// unallocated (there is nothing underneath to hide).
	size := img.Size()
	for off := int64(0); off < size; {
		e, err := img.BlockStatus(off, size-off)
		if err != nil {
			return err
		}
		n := max(e.Length, 1)
		if e.Flags&block.ExtentAllocated != 0 && e.Depth == 0 {
			if err := img.Discard(off, n); err != nil {
				return err
			}
		}
		off += n
	}
	return img.Flush()
}
