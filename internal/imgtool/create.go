package imgtool

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/petrel-vmm/petrel/block"
)

func init() {
	register("create", "create a new image: create [-f fmt] [-b backing [-F fmt]] [-u] [-o opts] file [size]", runCreate)
}

// formatOptions are the -o keys each format accepts, as qemu-img. Other
// keys qemu-img knows (encryption, nocow...) are refused with "Invalid
// parameter" rather than accepted and ignored: petrel img has no such
// feature, and an image created without it would not be what was asked
// for. extent_size_hint is the file driver's, so every format takes it.
var formatOptions = map[string][]string{
	"raw":   {"size", "preallocation", "extent_size_hint"},
	"qed":   {"size", "backing_file", "backing_fmt", "cluster_size", "table_size", "preallocation", "extent_size_hint"},
	"qcow2": append([]string{"size", "compat", "backing_file", "backing_fmt", "data_file", "data_file_raw", "cluster_size", "preallocation", "lazy_refcounts", "refcount_bits", "extended_l2", "compression_type", "extent_size_hint", "encryption"}, prefixed("encrypt.", append([]string{"format"}, luksCreateKeys...))...),
	"luks":  append([]string{"size", "preallocation", "extent_size_hint"}, luksCreateKeys...),
}

// luksCreateKeys are the LUKS creation options in qemu-img's order (the
// luks format's own names; qcow2 takes them with "encrypt." before).
var luksCreateKeys = []string{"key-secret", "cipher-alg", "cipher-mode", "ivgen-alg", "ivgen-hash-alg", "hash-alg", "iter-time"}

func prefixed(prefix string, keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = prefix + k
	}
	return out
}

// parseKV splits "-o a=b,c=d" (",," escapes a comma) into ordered pairs,
// as QemuOpts reads them; an item without '=' is an error in its words.
// Several -o options are read in turn, a later key overriding an earlier.
func parseKV(s string) ([][2]string, error) {
	var out [][2]string
	for _, item := range splitOptionList(s) {
		k, v, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("Invalid parameter '%s'", item)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// parseBool reads an on/off option the way QemuOpts' parse_option_bool
// does (yes/true and no/false are accepted too).
func parseBool(k, v string) (bool, error) {
	switch v {
	case "on", "yes", "true":
		return true, nil
	case "off", "no", "false":
		return false, nil
	}
	return false, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", k)
}

// createOptions turns -o pairs into block.CreateOptions for a format,
// remembering which keys were given for the "Formatting" line.
func createOptions(format string, pairs [][2]string, o *block.CreateOptions, given map[string]string) error {
	allowed := formatOptions[format]
	for _, kv := range pairs {
		k, v := kv[0], kv[1]
		ok := false
		for _, a := range allowed {
			ok = ok || a == k
		}
		if !ok {
			return fmt.Errorf("Invalid parameter '%s'", k)
		}
		// given keeps the text as typed: the "Formatting" line echoes
		// some options verbatim (compat=0.42 before it is refused).
		given[k] = v
		var err error
		switch k {
		case "size":
			o.Size, err = parseSize(v)
			if err != nil {
				// QemuOpts' wording for a size option (parse_option_size).
				return fmt.Errorf("Parameter 'size' expects a non-negative number below 2^64\n" +
					"Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n" +
					"and exabytes, respectively.")
			}
		case "backing_file":
			o.BackingFile = v
		case "backing_fmt":
			o.BackingFormat = v
		case "cluster_size":
			o.ClusterSize, err = parseSize(v)
		case "compat":
			// qcow2's compat takes QEMU's aliases; anything else goes
			// to the engine, which refuses it in qcow2_co_create's words.
			if v == "v2" {
				v = "0.10"
			} else if v == "v3" {
				v = "1.1"
			}
			o.Compat = v
		case "lazy_refcounts":
			o.LazyRefcounts, err = parseBool(k, v)
		case "extended_l2":
			o.ExtendedL2, err = parseBool(k, v)
		case "preallocation":
			o.Preallocation = v
		case "refcount_bits":
			o.RefcountBits, err = strconv.Atoi(v)
			if err == nil && o.RefcountBits == 0 {
				// An explicit 0 is a width qemu-img refuses; 0 in
				// CreateOptions would mean the default.
				o.RefcountBits = -1
			}
		case "compression_type":
			o.CompressionType = v
		case "data_file":
			o.DataFile = v
		case "data_file_raw":
			o.DataFileRaw, err = parseBool(k, v)
		case "extent_size_hint":
			if o.ExtentSizeHint, err = parseSize(v); err == nil && o.ExtentSizeHint > 1<<32-1 {
				err = errors.New("Extent size hint is too large")
			}
			given[k] = strconv.FormatInt(o.ExtentSizeHint, 10) // echoed in bytes
		default:
			if o.Extra == nil {
				o.Extra = map[string]string{}
			}
			o.Extra[k] = v
		}
		if err != nil {
			return fmt.Errorf("Parameter '%s' expects a valid value: %v", k, err)
		}
	}
	return nil
}

// onOff prints a boolean option as QemuOpts echoes it.
func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// formattingLine is qemu-img create's "Formatting ..." message, with the
// options in the order qemu-img 7.2 prints them per format.
func formattingLine(path, format string, o block.CreateOptions, given map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Formatting '%s', fmt=%s", path, format)
	// QemuOpts prints string values with their commas doubled, as an
	// option string would need them (iotest 020's json: backing file).
	opt := func(k, v string) { fmt.Fprintf(&b, " %s=%s", k, strings.ReplaceAll(v, ",", ",,")) }
	// (backing_file=NAME,,help in iotest 082, a json: backing file in 020).
	backing := func() {
		if o.BackingFile != "" {
			opt("backing_file", o.BackingFile)
		}
		if o.BackingFormat != "" {
			opt("backing_fmt", o.BackingFormat)
		}
	}
	// qemu-img prints every option of the driver that has a default
	// (cluster_size, extended_l2, compression_type, lazy_refcounts,
	// refcount_bits for qcow2), and the others only when given; iotests
	// match the line whole, so the order is the driver's option list.
	cs := o.ClusterSize
	if cs == 0 {
		cs = 65536
	}
	givenInOrder := func(keys ...string) {
		for _, k := range keys {
			if v, ok := given[k]; ok {
				opt(k, v)
			}
		}
	}
	switch format {
	case "qcow2":
		givenInOrder("encryption")
		givenInOrder(prefixed("encrypt.", append([]string{"format"}, luksCreateKeys...))...)
		opt("cluster_size", strconv.FormatInt(cs, 10))
		opt("extended_l2", onOff(o.ExtendedL2))
		if v, ok := given["preallocation"]; ok {
			opt("preallocation", v)
		}
		ct := o.CompressionType
		if ct == "" {
			ct = "zlib"
		}
		opt("compression_type", ct)
		opt("size", strconv.FormatInt(o.Size, 10))
		if v, ok := given["compat"]; ok {
			opt("compat", v)
		}
		backing()
		if v, ok := given["data_file"]; ok {
			opt("data_file", v)
		}
		if _, ok := given["data_file_raw"]; ok {
			opt("data_file_raw", onOff(o.DataFileRaw))
		}
		opt("lazy_refcounts", onOff(o.LazyRefcounts))
		rb := strconv.Itoa(max(o.RefcountBits, 0))
		if v, ok := given["refcount_bits"]; ok {
			rb = v
		} else if o.RefcountBits == 0 {
			rb = "16"
		}
		opt("refcount_bits", rb)
	case "qed":
		opt("size", strconv.FormatInt(o.Size, 10))
		backing()
		opt("cluster_size", strconv.FormatInt(cs, 10))
		if v, ok := given["table_size"]; ok {
			opt("table_size", v)
		}
		if v, ok := given["preallocation"]; ok {
			opt("preallocation", v)
		}
	case "luks":
		opt("size", strconv.FormatInt(o.Size, 10))
		givenInOrder(luksCreateKeys...)
		givenInOrder("preallocation")
	default:
		opt("size", strconv.FormatInt(o.Size, 10))
		if v, ok := given["preallocation"]; ok {
			opt("preallocation", v)
		}
	}
	// The file driver's option comes after the format's.
	if v, ok := given["extent_size_hint"]; ok {
		opt("extent_size_hint", v)
	}
	return b.String()
}

// createReason is what qemu-img prints after "FILE: " for an engine's
// refusal to create: the reason without the engine's context, and for a
// size the geometry cannot address bdrv_img_create's own words for EFBIG,
// with the hint it adds for formats that have a cluster_size option
// (iotest 054).
func createReason(format string, err error) error {
	if errors.Is(err, block.ErrSizeTooLarge) {
		hint := ""
		if format == "qcow2" || format == "qed" {
			hint = " (try using a larger cluster size)"
		}
		return fmt.Errorf("The image size is too large for file format '%s'%s", format, hint)
	}
	var ce *block.CreateError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return err
}

// runCreate is qemu-img create (bdrv_img_create): options from -f, -b, -F,
// -o and the size argument, checked in qemu-img's order: size given twice,
// an empty backing name, the backing file opened (to probe its format, and
// to take its size when none is given), then "Formatting ..." printed
// before the engine creates the file, so that an engine's refusal comes
// after that line, as in qemu-img.
func runCreate(t *tool, args []string) int {
	p, err := optSpec{short: "f:b:F:uo:q", long: []string{"object=", "help"}}.parse(args)
	if err != nil {
		return t.fail("%v", err)
	}
	if err := t.commonOptions(p); err != nil {
		return t.fail("%v", err)
	}
	format := p.get("f")
	if format == "" {
		format = "raw"
	}
	// As img_create: -o help (with or without a file name) lists the
	// options instead of creating anything.
	if list, given, err := optionList(p.opts["o"]); err != nil {
		return t.fail("%v", err)
	} else if given && hasHelpOption(list) {
		return t.createHelp(format, strings.Join(p.args[:min(len(p.args), 1)], ""))
	}
	if len(p.args) < 1 || len(p.args) > 2 {
		return t.fail("Expecting image file name")
	}
	path := p.args[0]
	// "file:NAME" names the file NAME, even one with a colon of its own
	// (iotest 126); messages show the argument as given.
	file := strings.TrimPrefix(path, "file:")
	if _, ok := block.Lookup(format); !ok {
		return t.fail("%s: Unknown file format '%s'", path, format)
	}
	// Files get QEMU's default extent size hint unless -o gives one.
	o := block.CreateOptions{BackingFile: p.get("b"), BackingFormat: p.get("F"), ExtentSizeHint: block.DefaultExtentSizeHint, Secrets: t.secrets}
	given := map[string]string{}
	for _, s := range p.opts["o"] {
		pairs, err := parseKV(s)
		if err == nil {
			err = createOptions(format, pairs, &o, given)
		}
		if err != nil {
			return t.fail("%s: %v", path, err)
		}
	}
	haveSize := given["size"] != ""
	if len(p.args) == 2 {
		var ok bool
		size, ok := t.cvtnum("image size", p.args[1], 0, math.MaxInt64)
		if !ok {
			return 1
		}
		// bdrv_img_create's checks, before the backing file is opened
		// (iotest 049).
		if haveSize {
			return t.fail("%s: The image size must be specified only once", path)
		}
		o.Size, haveSize = size, true
	}
	if p.has("b") && o.BackingFile == "" {
		return t.fail("%s: Expected backing file name, got empty string", path)
	}
	if o.BackingFile != "" && format == "raw" {
		return t.fail("%s: Backing file not supported for file format 'raw'", path)
	}
	// As QEMU 7.2's bdrv_img_create: the backing file is opened (its
	// format probed) before a missing -F is refused, so a backing file
	// that cannot be opened is the error reported (iotest 111).
	if o.BackingFile != "" && o.BackingFormat == "" && p.has("u") {
		return t.fail("%s: Backing file specified without backing format", path)
	}
	if o.BackingFile != "" && !p.has("u") {
		bpath := block.ResolveBacking(file, o.BackingFile)
		if _, err := os.Stat(bpath); err != nil && !block.HasNameOpener(bpath) {
			// Here qemu-img names the file once (the block layer's message).
			t.errorf("%s: Could not open '%s': %s", path, bpath, errText(err))
			fmt.Fprintln(t.stderr, "Could not open backing image.")
			return 1
		}
		bimg, err := t.openImage(bpath, o.BackingFormat, block.Options{ReadOnly: true, NoIO: true})
		if err != nil {
			t.errorf("%s: %v", path, err)
			fmt.Fprintln(t.stderr, "Could not open backing image.")
			return 1
		}
		if o.BackingFormat == "" {
			detected := bimg.Format()
			bimg.Close()
			t.errorf("%s: Backing file specified without backing format", path)
			fmt.Fprintf(t.stderr, "Detected format of %s.\n", detected)
			return 1
		}
		if !haveSize {
			o.Size = bimg.Size()
			haveSize = true
		}
		bimg.Close()
	}
	if !haveSize {
		return t.fail("%s: Image creation needs a size parameter", path)
	}
	if !p.has("q") {
		fmt.Fprintln(t.stdout, formattingLine(path, format, o, given))
	}
	if cs := o.ClusterSize; format == "qcow2" && cs != 0 && (cs < 512 || cs > 2<<20 || cs&(cs-1) != 0) {
		// qcow2_co_create's wording (after the "Formatting" line, as there).
		return t.fail("%s: Cluster size must be a power of two between 512 and 2048k", path)
	}
	if err := block.Create(format, file, o); err != nil {
		return t.fail("%s: %v", path, createReason(format, err))
	}
	return 0
}
