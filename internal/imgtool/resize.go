package imgtool

import (
	"fmt"
	"strings"

	"github.com/petrel-vmm/petrel/block"
)

func init() {
	register("resize", "change the virtual size: resize [-f fmt] [--shrink] [--preallocation=off] file [+|-]size", runResize)
}

// runResize is qemu-img resize: an absolute size, or +N / -N relative to
// the current one. A shrink needs --shrink (qemu-img refuses with an
// error and a warning, exit 1); --preallocation applies to the grown area
// only, for formats that can preallocate it (qcow2: iotest 125), and is
// refused for a shrink by the engine. Growth over a longer backing file
// reads zeroes (the engine zeroes it or refuses, as QEMU's drivers).
func runResize(t *tool, args []string) int {
	// The size comes last and may start with '-': take it out before
	// option parsing, as qemu-img does.
	if len(args) < 2 {
		return t.fail("Expecting image file name and size")
	}
	sizeArg := args[len(args)-1]
	p, err := optSpec{short: "f:hq", long: []string{"shrink", "preallocation=", "object=", "image-opts"}}.parse(args[:len(args)-1])
	if err != nil {
		return t.fail("%v", err)
	}
	if err := t.commonOptions(p); err != nil {
		return t.fail("%v", err)
	}
	if len(p.args) != 1 {
		return t.fail("Expecting one image file name")
	}
	// The mode names are checked before the image is opened, in
	// qemu-img's words.
	prealloc := p.get("preallocation")
	switch prealloc {
	case "", "off", "falloc", "full", "metadata":
	default:
		return t.fail("Invalid preallocation mode: '%s'", prealloc)
	}
	// rel: 0 absolute, +1 grow by, -1 shrink by. The number itself is
	// parsed as qemu-img's sizes are (qemu_strtosz), without a sign.
	rel := 0
	num := sizeArg
	if strings.HasPrefix(sizeArg, "+") {
		rel, num = 1, sizeArg[1:]
	} else if strings.HasPrefix(sizeArg, "-") {
		rel, num = -1, sizeArg[1:]
	}
	delta, err := parseSize(num)
	if err != nil {
		return t.fail("Invalid size specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
	}
	path := p.args[0]
	// With its backing file, as qemu-img: growing over a longer backing
	// file zeroes the new area (iotest 292).
	img, err := t.openImage(path, p.get("f"), block.Options{})
	if err != nil {
		return t.fail("%v", err)
	}
	defer img.Close()
	cur := img.Size()
	newSize := delta
	switch rel {
	case 1:
		newSize = cur + delta
	case -1:
		newSize = cur - delta
	}
	// A relative shrink past zero; qemu-img's own words.
	if newSize < 0 {
		return t.fail("New image size must be positive")
	}
	r, ok := img.(block.Resizer)
	if !ok {
		return t.fail("Image format driver does not support resize")
	}
	if newSize < cur && !p.has("shrink") {
		t.errorf("Use the --shrink option to perform a shrink operation.")
		t.errorf("warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.")
		return 1
	}
	if prealloc != "" && prealloc != "off" {
		pr, ok := img.(block.PreallocResizer)
		if !ok {
			return t.fail("Error resizing image: Unsupported preallocation mode '%s' for %s images", prealloc, img.Format())
		}
		if err := pr.ResizePrealloc(newSize, prealloc); err != nil {
			return t.fail("Error resizing image: %v", err)
		}
	} else if err := r.Resize(newSize); err != nil {
		// As img_resize: the driver's message alone.
		return t.fail("%v", err)
	}
	// The new size must be durable before "Image resized." is printed:
	// iotests read the header right after.
	if err := img.Flush(); err != nil {
		return t.fail("Error resizing image: %v", err)
	}
	if !p.has("q") {
		fmt.Fprintln(t.stdout, "Image resized.")
	}
	return 0
}
