package imgtool

import (
	"fmt"
	"io"

	"github.com/petrel-vmm/petrel/block"
)

func init() {
	register("map", "show allocation: map [-f fmt] [--output=human|json] [--start-offset=N] [--max-length=N] file", runMap)
}

// mapEntry is one line of qemu-img map --output=json (QAPI's MapEntry):
// present means some layer of the chain allocates the range, depth is the
// layer that does (or the bottom one when none does), zero and data are
// the block status flags, offset and file where the data lies in a host
// file when that is known (not for compressed clusters).
type mapEntry struct {
	start, length int64
	depth         int
	present       bool
	zero, data    bool
	offset        int64 // -1: none
	file          string
}

// layerStatus returns the extent at off as qemu-img map sees it: present
// means allocated in the layer at Depth (engines may or may not carry
// ExtentAllocated up from backing layers, so the layer is asked itself).
func layerStatus(img block.Image, chain []block.Image, off, n int64) (mapEntry, error) {
	return layerStatusHost(img, chain, off, n, nil)
}

// layerStatusHost is layerStatus that, given host files, also marks data
// lying in holes of a format image's host file as zero (qemu-img map).
func layerStatusHost(img block.Image, chain []block.Image, off, n int64, host hostFiles) (mapEntry, error) {
	e, err := img.BlockStatus(off, n)
	if err != nil {
		return mapEntry{}, err
	}
	m := mapEntry{start: off, length: max(e.Length, 1), depth: e.Depth, offset: e.HostOffset,
		zero: e.Flags&block.ExtentZero != 0, data: e.Flags&block.ExtentData != 0, file: e.File}
	m.present = e.Flags&block.ExtentAllocated != 0
	if e.Depth > 0 && e.Depth < len(chain) && !m.present {
		layer := chain[e.Depth]
		if off >= layer.Size() {
			m.depth = 0 // past the end of the backing file: qemu reports the top
		} else if le, err := layer.BlockStatus(off, min(m.length, layer.Size()-off)); err == nil && le.Depth == 0 {
			m.present = le.Flags&block.ExtentAllocated != 0
			m.length = min(m.length, max(le.Length, 1))
		}
	}
	// Unallocated in every layer: qemu-img names the bottom layer.
	if e.Depth >= len(chain) {
		m.depth = len(chain) - 1
	}
	// Without data there is no offset to show, except for allocated
	// zeroes (below); an unallocated range names no file.
	if !m.data {
		m.offset = -1
		if !m.present {
			m.file = ""
		}
	}
	if m.zero && m.present && m.offset < 0 && e.HostOffset >= 0 {
		m.offset = e.HostOffset // raw holes keep their offset, as in qemu
	}
	// Only a layer's own file is asked: QEMU recurses into the file of a
	// format layer (BDRV_BLOCK_RECURSE) but not into a qcow2 external
	// data file, whose holes stay "data" (iotest 244).
	if host != nil && m.data && m.offset >= 0 && m.file != "" && m.depth < len(chain) && chain[m.depth].Format() != "raw" &&
		m.file == block.Filename(chain[m.depth]) {
		hole, l := host.status(m.file, m.offset, m.length)
		m.length = max(l, 1)
		m.zero = m.zero || hole
	}
	return m, nil
}

// mergeable reports whether b continues a (qemu-img map merges such runs).
func mergeable(a, b mapEntry) bool {
	if a.depth != b.depth || a.present != b.present || a.zero != b.zero || a.data != b.data || a.file != b.file {
		return false
	}
	if (a.offset < 0) != (b.offset < 0) {
		return false
	}
	return a.offset < 0 || a.offset+a.length == b.offset
}

// writeMapJSON prints entries as qemu-img map --output=json: one object
// per line inside one array, keys in MapEntry's order, "offset" only when
// the data's host location is known (iotests filter its value, not its
// presence).
func writeMapJSON(w io.Writer, entries []mapEntry) {
	fmt.Fprint(w, "[")
	for i, e := range entries {
		if i > 0 {
			fmt.Fprint(w, ",\n")
		}
		fmt.Fprintf(w, `{ "start": %d, "length": %d, "depth": %d, "present": %t, "zero": %t, "data": %t`,
			e.start, e.length, e.depth, e.present, e.zero, e.data)
		if e.offset >= 0 {
			fmt.Fprintf(w, `, "offset": %d`, e.offset)
		}
		fmt.Fprint(w, "}")
	}
	fmt.Fprintln(w, "]")
}

// cHex is C's "%#x": 0 prints as "0".
func cHex(v int64) string {
	if v == 0 {
		return "0"
	}
	return fmt.Sprintf("%#x", v)
}

// writeMapHuman prints the runs that hold data as qemu-img map does
// (data that reads as zeroes is left out); data without a host offset
// (compressed clusters) cannot be shown.
func writeMapHuman(w io.Writer, entries []mapEntry) error {
	fmt.Fprintf(w, "%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File")
	for _, e := range entries {
		if e.data && e.offset < 0 {
			return fmt.Errorf("File contains external, encrypted or compressed clusters.")
		}
		if e.data && !e.zero {
			fmt.Fprintf(w, "%-16s%-16s%-16s%s\n", cHex(e.start), cHex(e.length), cHex(e.offset), e.file)
		}
	}
	return nil
}

// runMap is qemu-img map: the allocation of [--start-offset, +
// --max-length) as runs of uniform state, merged as qemu-img merges them
// (mergeable), printed as JSON or as the human table of data runs. The
// image is opened with its backing chain, since map follows it.
func runMap(t *tool, args []string) int {
	p, err := optSpec{short: "f:hU", long: []string{"output=", "start-offset=", "max-length=", "object=", "image-opts", "force-share"}}.parse(args)
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
	img, err := t.openImage(path, p.get("f"), block.Options{ReadOnly: true})
	if err != nil {
		return t.fail("%v", err)
	}
	defer img.Close()
	start, end := int64(0), img.Size()
	if s := p.get("start-offset"); s != "" {
		if start, err = parseSize(s); err != nil || start < 0 {
			return t.fail("Invalid start offset specified! You may use k, M, G, T, P or E suffixes for ")
		}
	}
	if s := p.get("max-length"); s != "" {
		l, err := parseSize(s)
		if err != nil || l < 0 {
			return t.fail("Invalid length specified! You may use k, M, G, T, P or E suffixes for ")
		}
		end = min(end, start+l)
	}
	// host keeps the layers' host files open to ask them for holes:
	// qemu-img map reports data in a hole of the host file as zero.
	chain := block.Chain(img)
	host := hostFiles{}
	defer host.close()
	var entries []mapEntry
	for off := start; off < end; {
		m, err := layerStatusHost(img, chain, off, end-off, host)
		if err != nil {
			return t.fail("Could not read file metadata: %v", err)
		}
		m.length = min(m.length, end-off)
		if n := len(entries); n > 0 && mergeable(entries[n-1], m) {
			entries[n-1].length += m.length
		} else {
			entries = append(entries, m)
		}
		off += m.length
	}
	if out == "json" {
		writeMapJSON(t.stdout, entries)
	} else if err := writeMapHuman(t.stdout, entries); err != nil {
		return t.fail("%v", err)
	}
	return 0
}
