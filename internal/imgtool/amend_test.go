package imgtool

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAmendMessages: qemu-img amend's refusals, in its words (iotests
// 061, 082, 112): options only valid at creation get a hint, formats
// without amendment are named, the engine's refusals come through whole.
func TestAmendMessages(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "t.qcow2")
	qed := filepath.Join(dir, "t.qed")
	must(t, "create", "-q", "-f", "qcow2", "-o", "compat=0.10", img, "64M")
	must(t, "create", "-q", "-f", "qed", qed, "64M")
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"-o", "foo=bar", img}, "Invalid parameter 'foo'"},
		{[]string{"-o", "cluster_size=1k", img}, "Invalid parameter 'cluster_size'\nThis option is only supported for image creation"},
		{[]string{"-o", "preallocation=on", img}, "Invalid parameter 'preallocation'\nThis option is only supported for image creation"},
		{[]string{"-o", "lazy_refcounts=on", img}, "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)"},
		{[]string{"-o", "compat=0.42", img}, "Unknown compatibility level 0.42"},
		{[]string{"-o", "backing_file=x", img}, "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead."},
		{[]string{"-o", "lazy_refcounts=on", qed}, "Format driver 'qed' does not support option amendment"},
		{[]string{"-f", "bochs", "-o", "help"}, "Format driver 'bochs' does not support option amendment"},
		{[]string{"-o", "help"}, "Expecting one image file name"},
		{[]string{"-o", "backing_file=x,", img}, "Invalid option list: backing_file=x,"},
		{[]string{"-o", "size=1M", "-o", ",,", img}, "Invalid option list: ,,"},
	} {
		rc, _, e := pimg(append([]string{"amend"}, c.args...)...)
		if want := "petrel img: " + c.msg + "\n"; rc != 1 || e != want {
			t.Errorf("%v: exit %d, stderr %q; want 1, %q", c.args, rc, e, want)
		}
	}
	// What is valid works, and several -o accumulate, the last value of
	// a key winning.
	must(t, "amend", "-o", "compat=1.1", "-o", "size=8M,size=130M", img)
	if out := must(t, "info", img); !strings.Contains(out, "virtual size: 130 MiB") || !strings.Contains(out, "compat: 1.1") {
		t.Errorf("info after amend:\n%s", out)
	}
}

// TestOptionHelp: -o help listings as qemu-img prints them (iotest 082):
// sorted, padded to 24 columns, the file protocol's options merged when a
// target is named.
func TestOptionHelp(t *testing.T) {
	out := must(t, "amend", "-f", "qcow2", "-o", "help")
	want := "Amend options for 'qcow2':\n" +
		"  backing_file=<str>     - File name of a base image\n" +
		"  backing_fmt=<str>      - Image format of the base image\n" +
		"  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])\n" +
		"  data_file=<str>        - File name of an external data file\n" +
		"  data_file_raw=<bool (on/off)> - The external data file must stay valid as a raw image\n"
	if !strings.HasPrefix(out, want) || !strings.HasSuffix(out, "  size=<size>            - Virtual disk size\n") {
		t.Errorf("amend -o help:\n%s", out)
	}
	out = must(t, "create", "-f", "qcow2", "-o", "cluster_size=4k,help", "x.qcow2", "1M")
	if !strings.HasPrefix(out, "Supported options:\n") || !strings.Contains(out, "  nocow=<bool (on/off)>  - Turn off copy-on-write (valid only on btrfs)\n") ||
		!strings.Contains(out, "  preallocation=<str>    - Preallocation mode (allowed values: off, metadata, falloc, full)\n") {
		t.Errorf("create -o help with a file name:\n%s", out)
	}
	out = must(t, "convert", "-o", "help")
	if want := "Supported raw options:\n  size=<size>            - Virtual disk size\n\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n"; out != want {
		t.Errorf("convert -o help:\n%s", out)
	}
	// An escaped comma keeps "help" inside a value.
	if hasHelpOption("backing_file=a,,help") || !hasHelpOption("a=b,?") || !hasHelpOption("help,cluster_size=4k") {
		t.Error("hasHelpOption")
	}
}

// TestAmendTwoMessages: a downgrade that meets a snapshot L1 table it
// cannot use prints the table's fault and the expansion's failure as two
// messages, as qemu-img does (iotest 080).
func TestAmendTwoMessages(t *testing.T) {
	img := filepath.Join(t.TempDir(), "t.qcow2")
	must(t, "create", "-q", "-f", "qcow2", img, "64M")
	must(t, "snapshot", "-c", "test", img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	table := binary.BigEndian.Uint64(b[64:])
	binary.BigEndian.PutUint64(b[table:], 0x400200) // the entry's L1 offset, misaligned
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	rc, _, e := pimg("amend", "-o", "compat=0.10", img)
	want := "petrel img: Snapshot L1 table offset invalid\npetrel img: Failed to turn zero into data clusters: Invalid argument\n"
	if rc != 1 || e != want {
		t.Errorf("exit %d, stderr %q; want 1, %q", rc, e, want)
	}
}
