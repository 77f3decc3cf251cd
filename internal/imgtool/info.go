package imgtool

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"syscall"

	"github.com/petrel-vmm/petrel/block"
)

func init() {
	register("info", "show image information: info [-f fmt] [--output=human|json] [--backing-chain] [-U] file", runInfo)
}

// diskUsage is the bytes a file occupies on the host (qemu's actual-size):
// allocated 512-byte blocks, so a sparse image shows what it really uses.
// iotests filter "disk size" out, as it depends on the file system.
func diskUsage(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Blocks * 512
	}
	return st.Size()
}

// imageInfo collects qemu-img info's fields for one layer, in the order
// qemu-img --output=json prints them (snapshots first, dirty-flag last);
// the human output picks from the same object.
// path is the name as qemu-img shows it (filePath), which the backing
// file's "actual path" is combined with.
func imageInfo(img block.Image, path string) object {
	o := object{}
	var desc map[string]any
	if d, ok := img.(block.Describer); ok {
		desc = d.Describe()
	}
	if s, ok := img.(block.Snapshotter); ok {
		if snaps, err := s.Snapshots(); err == nil && len(snaps) > 0 {
			var list []object
			for _, sn := range snaps {
				list = append(list, snapshotJSON(sn))
			}
			o.set("snapshots", list)
		}
	}
	o.set("virtual-size", img.Size())
	o.set("filename", path)
	if cs, ok := desc["cluster-size"]; ok {
		o.set("cluster-size", cs)
	}
	o.set("format", img.Format())
	// A network image (nbd:) has no host file: qemu-img leaves
	// actual-size out and prints "disk size: unavailable".
	if _, remote := block.ProtocolOf(path); !remote {
		o.set("actual-size", diskUsage(path))
	}
	if fs, ok := desc["format-specific"]; ok {
		orderBitmaps(fs)
		o.set("format-specific", fs)
	}
	setEncrypted := func() {
		if enc, ok := desc["encrypted"]; ok {
			o.set("encrypted", enc)
		}
	}
	if bf, ok := desc["backing-filename"].(string); ok && bf != "" {
		o.set("full-backing-filename", pathCombine(path, bf))
		setEncrypted() // where qemu-img's JSON has it
		o.set("backing-filename", bf)
		if bff, ok := desc["backing-filename-format"]; ok {
			o.set("backing-filename-format", bff)
		}
	}
	setEncrypted()
	// The nbd driver itself has no image info, so no dirty flag
	// (raw over nbd has one).
	if img.Format() != "nbd" {
		dirty, _ := desc["dirty-flag"].(bool)
		o.set("dirty-flag", dirty)
	}
	return o
}

// snapshotJSON is one SnapshotInfo of qemu-img info --output=json, its
// fields in the order QEMU's JSON output has them: the VM clock split in
// seconds and the nanoseconds within, the date likewise.
func snapshotJSON(sn block.SnapshotInfo) object {
	var o object
	if sn.ICount != -1 { // qemu-img leaves out an icount not recorded
		o = object{{"icount", sn.ICount}}
	}
	return append(o, object{
		{"vm-clock-nsec", sn.VMClock.Nanoseconds() % 1e9},
		{"name", sn.Name},
		{"date-sec", sn.Date.Unix()},
		{"date-nsec", sn.Date.Nanosecond()},
		{"vm-clock-sec", int64(sn.VMClock.Seconds())},
		{"id", sn.ID},
		{"vm-state-size", sn.VMStateSize},
	}...)
}

// lookup is the value of key k in an ordered object.
func lookup(o object, k string) (any, bool) {
	for _, f := range o {
		if f.key == k {
			return f.val, true
		}
	}
	return nil, false
}

// printHumanInfo prints one layer as qemu-img info's human output
// (bdrv_image_info_dump): "actual path" only when the combined name
// differs from the one stored, "cleanly shut down: no" only for a dirty
// image, and the format-specific block with its keys as words
// ("lazy refcounts"), which iotests' _img_info drops unless asked.
func (t *tool) printHumanInfo(o object, snaps []block.SnapshotInfo) {
	w := t.stdout
	get := func(k string) any { v, _ := lookup(o, k); return v }
	fmt.Fprintf(w, "image: %v\n", get("filename"))
	fmt.Fprintf(w, "file format: %v\n", get("format"))
	vs := get("virtual-size").(int64)
	fmt.Fprintf(w, "virtual size: %s (%d bytes)\n", humanSize(vs), vs)
	if size, ok := get("actual-size").(int64); ok {
		fmt.Fprintf(w, "disk size: %s\n", humanSize(size))
	} else {
		fmt.Fprintln(w, "disk size: unavailable")
	}
	if e, _ := lookup(o, "encrypted"); e == true {
		fmt.Fprintln(w, "encrypted: yes")
	}
	if cs, ok := lookup(o, "cluster-size"); ok {
		fmt.Fprintf(w, "cluster_size: %v\n", cs)
	}
	if bf, ok := lookup(o, "backing-filename"); ok {
		full, _ := lookup(o, "full-backing-filename")
		if full != bf {
			fmt.Fprintf(w, "backing file: %v (actual path: %v)\n", bf, full)
		} else {
			fmt.Fprintf(w, "backing file: %v\n", bf)
		}
		if bff, ok := lookup(o, "backing-filename-format"); ok {
			fmt.Fprintf(w, "backing file format: %v\n", bff)
		}
	}
	if d, _ := lookup(o, "dirty-flag"); d == true {
		fmt.Fprintln(w, "cleanly shut down: no")
	}
	if len(snaps) > 0 {
		fmt.Fprintln(w, "Snapshot list:")
		printSnapshotTable(w, snaps)
	}
	if fs, ok := lookup(o, "format-specific"); ok {
		if m, ok := fs.(map[string]any); ok {
			if data, ok := m["data"].(map[string]any); ok && len(data) > 0 {
				fmt.Fprintln(w, "Format specific information:")
				printHumanMap(w, data, "    ")
			}
		}
	}
}

// orderedKeys lists qcow2's format-specific keys in qemu-img's order,
// then any others sorted.
func orderedKeys(m map[string]any) []string {
	// qemu-img prints the format-specific QDict in hash-bucket order
	// (qobject/qdict.c: tdb_hash(key) % 512), not in QAPI field order.
	order := []string{"compat", "compression-type", "lazy-refcounts", "bitmaps", "refcount-bits", "data-file", "encrypt", "data-file-raw", "corrupt", "extended-l2",
		// QCryptoBlockInfoLUKS (and its slots), as qemu-img prints them
		"ivgen-alg", "hash-alg", "cipher-alg", "uuid", "ivgen-hash-alg", "format", "cipher-mode", "slots", "payload-offset", "master-key-iters",
		"active", "iters", "key-offset", "stripes"}
	var keys []string
	seen := map[string]bool{}
	for _, k := range order {
		if _, ok := m[k]; ok {
			keys = append(keys, k)
			seen[k] = true
		}
	}
	var rest []string
	for k := range m {
		if !seen[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	return append(keys, rest...)
}

// runInfo is qemu-img info, with --backing-chain every layer down the
// chain (each opened on its own, as qemu-img's collect_image_info_list)
// and --output=json an array of them then, a single object without.
func runInfo(t *tool, args []string) int {
	p, err := optSpec{short: "f:hU", long: []string{"output=", "backing-chain", "force-share", "image-opts", "object=", "limits"}}.parse(args)
	if err != nil {
		return t.fail("%v", err)
	}
	if err := t.commonOptions(p); err != nil {
		return t.fail("%v", err)
	}
	if len(p.args) != 1 {
		return t.fail("Expecting one image file name")
	}
	out := p.get("output")
	if out != "" && out != "human" && out != "json" {
		return t.fail("--output must be used with human or json as argument.")
	}
	path := p.args[0]
	// The format given with -f applies to the image argument only; each
	// backing layer is opened with the format its parent names for it.
	chain := p.has("backing-chain")
	// As qemu-img: each layer is opened on its own, without its backing
	// file; the chain is followed by the full backing file names, and a
	// name seen twice is a loop.
	var layers []block.Image
	defer func() {
		for _, l := range layers {
			l.Close()
		}
	}()
	var objs []object
	seen := map[string]bool{}
	for name, format := path, p.get("f"); name != ""; {
		if seen[name] {
			return t.fail("Backing file '%s' creates an infinite loop.", name)
		}
		seen[name] = true
		// NoIO: info reads no guest data, so a qcow2 external data file
		// need not be there (qemu-img opens with BDRV_O_NO_IO).
		img, err := t.openImage(name, format, block.Options{ReadOnly: true, NoBacking: true, NoIO: true})
		if err != nil {
			return t.fail("%v", err)
		}
		layers = append(layers, img)
		if len(layers) == 1 {
			name = t.filePath(name)
			// Only the image argument is an --image-opts string; the
			// backing files the chain names are plain file names, which
			// qemu-img opens as such (iotest 279).
			t.imageOpts = false
		}
		o := imageInfo(img, name)
		objs = append(objs, o)
		name, format = "", ""
		if chain {
			if full, ok := lookup(o, "full-backing-filename"); ok {
				name = full.(string)
			}
			if bff, ok := lookup(o, "backing-filename-format"); ok {
				format, _ = bff.(string)
			}
		}
	}
	if out == "json" {
		if chain {
			fmt.Fprintln(t.stdout, prettyJSON(objs))
		} else {
			fmt.Fprintln(t.stdout, prettyJSON(objs[0]))
		}
		return 0
	}
	// Human output: one block per layer, separated by an empty line.
	for i, l := range layers {
		if i > 0 {
			fmt.Fprintln(t.stdout)
		}
		var snaps []block.SnapshotInfo
		if s, ok := l.(block.Snapshotter); ok {
			snaps, _ = s.Snapshots()
		}
		t.printHumanInfo(objs[i], snaps)
	}
	return 0
}

// orderBitmaps puts each entry of qcow2's "bitmaps" list in QEMU's key
// order (flags, name, granularity), for both outputs.
func orderBitmaps(fs any) {
	m, _ := fs.(map[string]any)
	data, _ := m["data"].(map[string]any)
	list, ok := data["bitmaps"].([]map[string]any)
	if !ok {
		return
	}
	var out []object
	for _, b := range list {
		out = append(out, object{{"flags", b["flags"]}, {"name", b["name"]}, {"granularity", b["granularity"]}})
	}
	data["bitmaps"] = out
}

// printHumanValue prints one format-specific value as QEMU's
// dump_qobject: a list's items as "[i]:", an object's keys nested four
// spaces deeper, scalars after the key.
func printHumanValue(w io.Writer, indent, key string, v any) {
	switch v := v.(type) {
	case map[string]any:
		fmt.Fprintf(w, "%s%s:\n", indent, key)
		printHumanMap(w, v, indent+"    ")
	case []object:
		fmt.Fprintf(w, "%s%s:\n", indent, key)
		for i, o := range v {
			fmt.Fprintf(w, "%s    [%d]:\n", indent, i)
			for _, f := range o {
				printHumanValue(w, indent+"        ", strings.ReplaceAll(f.key, "-", " "), f.val)
			}
		}
	case []string:
		fmt.Fprintf(w, "%s%s:\n", indent, key)
		for i, s := range v {
			fmt.Fprintf(w, "%s    [%d]: %s\n", indent, i, s)
		}
	case []any:
		fmt.Fprintf(w, "%s%s:\n", indent, key)
		for i, item := range v {
			fmt.Fprintf(w, "%s    [%d]:\n", indent, i)
			if im, ok := item.(map[string]any); ok {
				printHumanMap(w, im, indent+"        ")
			}
		}
	default:
		fmt.Fprintf(w, "%s%s: %v\n", indent, key, v)
	}
}

// printHumanMap prints a format-specific object's keys in qemu-img's
// order (orderedKeys), as words, each value as printHumanValue.
func printHumanMap(w io.Writer, m map[string]any, indent string) {
	for _, k := range orderedKeys(m) {
		printHumanValue(w, indent, strings.ReplaceAll(k, "-", " "), m[k])
	}
}
