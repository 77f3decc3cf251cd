package imgtool

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/qemuopt"
)

func init() {
	register("measure", "size a new image: measure [--output=human|json] [-O fmt] [-o options] [--size N | [--image-opts] [-f fmt] [-l snapshot] filename]", runMeasure)
}

// Option types of the formats' creation options, as QemuOpts checks them
// before the driver sees them (qemu-img create -f FMT -o help lists them).
const (
	kindString = iota
	kindSize
	kindBool
	kindNumber
)

// measureOptionTypes are the -o keys qemu-img measure accepts per output
// format: every creation option of the format, even those petrel img
// cannot create (encryption, data_file): measure only ignores them.
var measureOptionTypes = map[string]map[string]int{
	"raw": {"size": kindSize, "preallocation": kindString, "extent_size_hint": kindSize, "nocow": kindBool},
	"qed": {"size": kindSize, "backing_file": kindString, "backing_fmt": kindString, "cluster_size": kindSize,
		"table_size": kindSize, "preallocation": kindString, "extent_size_hint": kindSize, "nocow": kindBool},
	"qcow2": {"size": kindSize, "compat": kindString, "backing_file": kindString, "backing_fmt": kindString,
		"data_file": kindString, "data_file_raw": kindBool, "encryption": kindBool, "encrypt.format": kindString,
		"encrypt.cipher-alg": kindString, "encrypt.cipher-mode": kindString, "encrypt.hash-alg": kindString,
		"encrypt.iter-time": kindNumber, "encrypt.ivgen-alg": kindString, "encrypt.ivgen-hash-alg": kindString,
		"encrypt.key-secret": kindString, "cluster_size": kindSize, "preallocation": kindString,
		"lazy_refcounts": kindBool, "refcount_bits": kindNumber, "extended_l2": kindBool,
		"compression_type": kindString, "extent_size_hint": kindSize, "nocow": kindBool},
}

// validOptionList is qemu-img's check of an -o argument before it is
// parsed: not empty, not starting with a comma, and not ending with an
// odd number of commas (",," is an escaped comma).
func validOptionList(s string) bool {
	if s == "" || s[0] == ',' {
		return false
	}
	trailing := len(s) - len(strings.TrimRight(s, ","))
	return trailing%2 == 0
}

// measureOptions reads -o pairs for an output format into CreateOptions
// the way QemuOpts does for qemu-img measure: an unknown key or a value of
// the wrong type fails (the caller adds "Invalid options for file
// format"); a key without '=' is a boolean set to on; the rest is left to
// the engine's Measure. An explicit cluster_size of 0, or refcount_bits of
// 0 or beyond 64, is passed as -1, which the engines refuse, so that 0 is
// not taken for "the default".
func measureOptions(format string, pairs [][2]string, o *block.CreateOptions) error {
	types := measureOptionTypes[format]
	for _, kv := range pairs {
		k, v := kv[0], kv[1]
		typ, ok := types[k]
		if !ok {
			return fmt.Errorf("Invalid parameter '%s'", k)
		}
		var n uint64
		var b bool
		var err error
		switch typ {
		case kindSize:
			if n, err = qemuopt.ParseSize(v); err != nil {
				return fmt.Errorf("Parameter '%s' expects a non-negative number below 2^64\n"+
					"Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"+
					"and exabytes, respectively.", k)
			}
		case kindBool:
			if b, err = parseBool(k, v); err != nil {
				return err
			}
		case kindNumber:
			if n, err = strconv.ParseUint(v, 0, 64); err != nil {
				return fmt.Errorf("Parameter '%s' expects a number", k)
			}
		}
		switch k {
		case "size":
			o.Size = int64(min(n, math.MaxInt64))
		case "compat":
			o.Compat = v
		case "backing_file":
			o.BackingFile = v
		case "backing_fmt":
			o.BackingFormat = v
		case "cluster_size":
			o.ClusterSize = int64(min(n, math.MaxInt64))
			if n == 0 {
				o.ClusterSize = -1
			}
		case "preallocation":
			o.Preallocation = v
		case "lazy_refcounts":
			o.LazyRefcounts = b
		case "extended_l2":
			o.ExtendedL2 = b
		case "compression_type":
			o.CompressionType = v
		case "refcount_bits":
			o.RefcountBits = int(n)
			if n == 0 || n > 64 {
				o.RefcountBits = -1
			}
		default:
			if o.Extra == nil {
				o.Extra = map[string]string{}
			}
			o.Extra[k] = v
		}
	}
	return nil
}

// splitMeasureOptions splits an -o list into pairs; an item without '='
// is a flag set to on, as QemuOpts reads "-o lazy_refcounts".
func splitMeasureOptions(s string) [][2]string {
	var out [][2]string
	for _, it := range qemuopt.Split(s) {
		if it == "" {
			continue
		}
		k, v, ok := strings.Cut(it, "=")
		if !ok {
			v = "on"
		}
		out = append(out, [2]string{k, v})
	}
	return out
}

// runMeasure is qemu-img measure: the file size an image of the output
// format (-O, raw by default) needs, for a new disk of --size bytes or for
// the contents of an input image, in qemu-img's checks, order and words
// (iotests 178, 190, 271).
func runMeasure(t *tool, args []string) int {
	p, err := optSpec{short: "hf:O:o:l:U", long: []string{"help", "image-opts", "object=", "output=", "size=", "force-share"}}.parse(args)
	if err != nil {
		return t.fail("%v", err)
	}
	// --object defines the secrets LUKS encryption (-o
	// encrypt.key-secret) names: qemu-img measure sizes the LUKS header
	// with them (iotest 178).
	if err := t.commonOptions(p); err != nil {
		return t.fail("%v", err)
	}
	for _, s := range p.opts["o"] {
		if !validOptionList(s) {
			return t.fail("Invalid option list: %s", s)
		}
	}
	var snap snapshotSel
	if p.has("l") {
		if snap, err = parseSnapshotSel(p.get("l")); err != nil {
			return t.failEachLine(err)
		}
	}
	out := p.get("output")
	if out != "" && out != "human" && out != "json" {
		return t.fail("--output must be used with human or json as argument.")
	}
	size := int64(-1)
	if p.has("size") {
		var ok bool
		if size, ok = t.cvtnum("image size", p.get("size"), 0, math.MaxInt64); !ok {
			return 1
		}
	}
	if len(p.args) > 1 {
		return t.fail("At most one filename argument is allowed.")
	}
	var in block.Image
	if len(p.args) == 0 {
		if t.imageOpts || p.has("f") || p.has("l") {
			return t.fail("--image-opts, -f, and -l require a filename argument.")
		}
		if size < 0 {
			return t.fail("Either --size N or one filename must be specified.")
		}
	} else {
		if size >= 0 {
			return t.fail("--size N cannot be used together with a filename.")
		}
		if in, err = t.openImage(p.args[0], p.get("f"), block.Options{ReadOnly: true}); err != nil {
			return t.fail("%v", err)
		}
		defer in.Close()
		if p.has("l") {
			if err := loadSnapshot(in, snap); err != nil {
				return t.fail("%v", err)
			}
		}
	}
	outFmt := p.get("O")
	if outFmt == "" {
		outFmt = "raw"
	}
	f, ok := block.Lookup(outFmt)
	if !ok {
		return t.fail("Unknown file format '%s'", outFmt)
	}
	o := block.CreateOptions{Secrets: t.secrets}
	for _, s := range p.opts["o"] {
		if err := measureOptions(outFmt, splitMeasureOptions(s), &o); err != nil {
			t.errorf("%v", err)
			return t.fail("Invalid options for file format '%s'", outFmt)
		}
	}
	if size >= 0 {
		o.Size = size
	}
	if f.Measure == nil {
		return t.fail("Block driver '%s' does not support size measurement", outFmt)
	}
	info, err := f.Measure(o, in)
	if err != nil {
		return t.fail("%v", err)
	}
	if out == "json" {
		res := object{}
		if info.HasBitmaps {
			res.set("bitmaps", info.Bitmaps)
		}
		res.set("required", info.Required)
		res.set("fully-allocated", info.FullyAllocated)
		fmt.Fprintln(t.stdout, prettyJSON(res))
		return 0
	}
	fmt.Fprintf(t.stdout, "required size: %d\nfully allocated size: %d\n", info.Required, info.FullyAllocated)
	if info.HasBitmaps {
		fmt.Fprintf(t.stdout, "bitmaps size: %d\n", info.Bitmaps)
	}
	return 0
}

// failEachLine reports an error made of several of qemu-img's messages,
// one per line, each with the program prefix as qemu-img's separate
// error_report calls print them; exit code 1.
func (t *tool) failEachLine(err error) int {
	for _, line := range strings.Split(err.Error(), "\n") {
		t.errorf("%s", line)
	}
	return 1
}
