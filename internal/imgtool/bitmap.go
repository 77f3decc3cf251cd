package imgtool

import (
	"fmt"
	"strings"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/block/qcow2"
)

func init() {
	register("bitmap", "change persistent bitmaps: bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file [-F source_fmt]] [-g granularity] [--image-opts | -f fmt] filename bitmap", runBitmap)
}

// bitmapImage is an image that holds persistent dirty bitmaps (qcow2).
type bitmapImage interface {
	Bitmaps() []qcow2.BitmapInfo
	AddBitmap(name string, granularity int64, enabled bool) error
	RemoveBitmap(name string) error
	ClearBitmap(name string) error
	EnableBitmap(name string, enabled bool) error
	BitmapExtents(name string) ([]qcow2.Extent, error)
	MergeBitmap(name string, extents []qcow2.Extent) error
}

// bitmapAction is one action of the command line; src is --merge's
// source bitmap.
type bitmapAction struct{ op, src string }

// bitmapActions lists the actions in command line order: qemu-img bitmap
// applies them in that order (--remove --add recreates a bitmap).
func bitmapActions(args []string) []bitmapAction {
	var acts []bitmapAction
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		switch name, val, hasVal := strings.Cut(strings.TrimPrefix(a, "--"), "="); {
		case !strings.HasPrefix(a, "--"):
		case name == "merge":
			if !hasVal && i+1 < len(args) {
				i++
				val = args[i]
			}
			acts = append(acts, bitmapAction{"merge", val})
		case name == "add" || name == "remove" || name == "clear" || name == "enable" || name == "disable":
			acts = append(acts, bitmapAction{op: name})
		}
	}
	return acts
}

// runBitmap is qemu-img bitmap (img_bitmap): the options' checks in its
// order and words, then each action on the image opened read-write, a
// failure reported as "Operation OP on bitmap NAME failed: REASON". A
// --merge source comes from -b's image (read-only) or the image itself.
// The bitmaps are written when the image is closed.
func runBitmap(t *tool, args []string) int {
	p, err := optSpec{short: "b:hg:F:f:", long: []string{"object=", "image-opts", "add", "remove", "clear", "enable", "disable", "merge=", "granularity=", "source-file=", "source-format="}}.parse(args)
	if err != nil {
		return t.fail("%v", err)
	}
	if err := t.commonOptions(p); err != nil {
		return t.fail("%v", err)
	}
	acts := bitmapActions(args)
	gran := int64(0)
	if g := firstOf(p, "g", "granularity"); g != "" {
		v, ok := t.cvtnum("granularity", g, 0, 1<<62)
		if !ok {
			return 1
		}
		gran = v
	}
	srcFile, srcFmt := firstOf(p, "b", "source-file"), firstOf(p, "F", "source-format")
	var merges, adds int
	for _, a := range acts {
		switch a.op {
		case "merge":
			merges++
		case "add":
			adds++
		}
	}
	switch {
	case len(acts) == 0:
		return t.fail("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge")
	case gran != 0 && adds == 0:
		return t.fail("granularity only supported with --add")
	case srcFmt != "" && srcFile == "":
		return t.fail("-F only supported with -b")
	case srcFile != "" && merges == 0:
		return t.fail("Merge bitmap source file only supported with --merge")
	case len(p.args) != 2:
		return t.fail("Expecting filename and bitmap name")
	}
	path, name := p.args[0], p.args[1]
	img, err := t.openImage(path, p.get("f"), block.Options{NoBacking: true})
	if err != nil {
		return t.fail("%v", err)
	}
	defer img.Close()
	bimg, ok := img.(bitmapImage)
	for _, a := range acts {
		if !ok {
			return t.fail("Operation %s on bitmap %s failed: Can't make bitmap '%s' persistent in '%s': Format driver '%s' does not support bitmaps", a.op, name, name, path, img.Format())
		}
		if err := t.bitmapAction(bimg, a, name, gran, srcFile, srcFmt); err != nil {
			return t.fail("Operation %s on bitmap %s failed: %v", a.op, name, err)
		}
	}
	if err := img.Close(); err != nil {
		return t.fail("%v", err)
	}
	return 0
}

// firstOf is the value of the short option, or else of its long spelling.
func firstOf(p *parsed, short, long string) string {
	if v := p.get(short); v != "" {
		return v
	}
	return p.get(long)
}

// bitmapAction applies one action to bitmap name of img.
func (t *tool) bitmapAction(img bitmapImage, a bitmapAction, name string, gran int64, srcFile, srcFmt string) error {
	switch a.op {
	case "add":
		return img.AddBitmap(name, gran, true)
	case "remove":
		return img.RemoveBitmap(name)
	case "clear":
		return img.ClearBitmap(name)
	case "enable":
		return img.EnableBitmap(name, true)
	case "disable":
		return img.EnableBitmap(name, false)
	}
	src := img
	if srcFile != "" {
		s, err := t.openImage(srcFile, srcFmt, block.Options{ReadOnly: true, NoBacking: true})
		if err != nil {
			return err
		}
		defer s.Close()
		bs, ok := s.(bitmapImage)
		if !ok {
			return fmt.Errorf("Dirty bitmap '%s' not found", a.src)
		}
		src = bs
	}
	ext, err := src.BitmapExtents(a.src)
	if err != nil {
		return err
	}
	return img.MergeBitmap(name, ext)
}
