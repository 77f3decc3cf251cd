package imgtool

import (
	"math"
	"strings"

	"github.com/petrel-vmm/petrel/block"
)

func init() {
	register("dd", "copy with dd operands: dd [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output", runDD)
}

// ddArgs holds qemu-img dd's operands. As in qemu-img, bs is both the
// input and the output block size, count and skip count input blocks.
type ddArgs struct {
	in, out     string
	bs          int64
	count, skip int64
	hasCount    bool
	hasSkip     bool
}

// parseDDOperands reads "name=value" operands the way qemu-img's img_dd
// does: an operand without '=' or with an unknown name is "unrecognized";
// bs goes through cvtnum_full("bs", 1, INT_MAX), count and skip through
// cvtnum (0..INT64_MAX), each printing its own message.
func (t *tool) parseDDOperands(ops []string) (ddArgs, bool) {
	d := ddArgs{bs: 512}
	for _, op := range ops {
		name, val, ok := strings.Cut(op, "=")
		if !ok {
			t.errorf("unrecognized operand %s", op)
			return d, false
		}
		switch name {
		case "bs":
			if d.bs, ok = t.cvtnum("bs", val, 1, math.MaxInt32); !ok {
				return d, false
			}
		case "count":
			if d.count, ok = t.cvtnum("count", val, 0, math.MaxInt64); !ok {
				return d, false
			}
			d.hasCount = true
		case "skip":
			if d.skip, ok = t.cvtnum("skip", val, 0, math.MaxInt64); !ok {
				return d, false
			}
			d.hasSkip = true
		case "if":
			d.in = val
		case "of":
			d.out = val
		default:
			// qemu-img cuts the operand at '=' before it looks the name up,
			// so the message shows the name alone.
			t.errorf("unrecognized operand %s", name)
			return d, false
		}
	}
	if d.in == "" || d.out == "" {
		t.errorf("Must specify both input and output files")
		return d, false
	}
	return d, true
}

// runDD is qemu-img dd: it creates the output image (default format raw,
// default creation options) with the size of what is copied, then copies
// bs bytes at a time with plain writes, as qemu-img's img_dd (no zero
// detection: the output holds every copied cluster allocated). iotests
// 159 (block sizes), 160 (skip) and 170 pin it.
func runDD(t *tool, args []string) int {
	p, err := optSpec{short: "hf:O:U", long: []string{"object=", "image-opts", "force-share"}}.parse(args)
	if err == nil {
		err = t.commonOptions(p)
	}
	if err != nil {
		return t.fail("%v", err)
	}
	d, ok := t.parseDDOperands(p.args)
	if !ok {
		return 1
	}
	src, err := t.openImage(d.in, p.get("f"), block.Options{ReadOnly: true})
	if err != nil {
		return t.fail("%v", err)
	}
	defer src.Close()
	outFmt := p.get("O")
	if outFmt == "" {
		outFmt = "raw"
	}
	if _, ok := block.Lookup(outFmt); !ok {
		return t.fail("Unknown file format")
	}
	// size is where copying stops: the input's end, or count blocks
	// when that comes first (a count whose byte size overflows is "all").
	size := src.Size()
	if d.hasCount && d.count <= math.MaxInt64/d.bs && d.count*d.bs < size {
		size = d.count * d.bs
	}
	// A skip past the input's end (or one whose byte offset overflows)
	// makes an empty output, as dd(1); qemu-img reports it once the output
	// exists.
	skipPast := d.hasSkip && (d.skip > math.MaxInt64/d.bs || size < d.skip*d.bs)
	outSize := int64(0)
	if !skipPast {
		outSize = size - d.skip*d.bs
	}
	if err := block.Create(outFmt, d.out, block.CreateOptions{Size: outSize}); err != nil {
		return t.fail("%s: error while creating output image: %v", d.out, createReason(outFmt, err))
	}
	dst, err := t.openImage(d.out, outFmt, block.Options{})
	if err != nil {
		return t.fail("%v", err)
	}
	inPos := d.skip * d.bs
	if skipPast {
		t.errorf("%s: cannot skip to specified offset", d.in)
		inPos = size
	}
	// One block at a time, the last one short when the input ends
	// inside it, as img_dd.
	buf := make([]byte, d.bs)
	for outPos := int64(0); inPos < size; {
		n := min(d.bs, size-inPos)
		if _, err := src.ReadAt(buf[:n], inPos); err != nil {
			dst.Close()
			return t.fail("error while reading from input image file: %v", err)
		}
		inPos += n
		if _, err := dst.WriteAt(buf[:n], outPos); err != nil {
			dst.Close()
			return t.fail("error while writing to output image file: %v", err)
		}
		outPos += n
	}
	if err := dst.Close(); err != nil {
		return t.fail("error while writing to output image file: %v", err)
	}
	return 0
}
