package imgtool

import (
	"path/filepath"
	"testing"
)

// TestNewFilesStartAllocatedLikeQemu: a file petrel img grows from empty
// (a new raw image, a raw image resized from nothing, a qcow2 external
// data file) has its first block written, as QEMU's file driver writes
// it (allocate_first_block): qemu-img map sees the same data extent at
// offset 0 as in the file qemu-img makes, and measure counts it (iotest
// 178's raw input image).
func TestNewFilesStartAllocatedLikeQemu(t *testing.T) {
	dir := t.TempDir()
	both := func(name string, make func(tool, path string)) {
		t.Helper()
		q, p := filepath.Join(dir, "q-"+name), filepath.Join(dir, "p-"+name)
		make("qemu-img", q)
		make("petrel", p)
		want := qemuTool(t, "qemu-img", "map", "--output=json", "-f", "raw", q)
		if got := qemuTool(t, "qemu-img", "map", "--output=json", "-f", "raw", p); got != want {
			t.Errorf("%s: qemu-img map of petrel's file:\n%s\nof qemu-img's:\n%s", name, got, want)
		}
		want = qemuTool(t, "qemu-img", "measure", "-O", "qcow2", "-f", "raw", q)
		if got := qemuTool(t, "qemu-img", "measure", "-O", "qcow2", "-f", "raw", p); got != want {
			t.Errorf("%s: qemu-img measure of petrel's file:\n%s\nof qemu-img's:\n%s", name, got, want)
		}
	}
	run := func(tool string, args ...string) {
		t.Helper()
		if tool == "petrel" {
			must(t, args...)
		} else {
			qemuTool(t, tool, args...)
		}
	}
	for _, size := range []string{"512", "2048", "1G"} {
		both("raw-"+size, func(tool, path string) { run(tool, "create", "-q", "-f", "raw", path, size) })
	}
	both("resized", func(tool, path string) {
		run(tool, "create", "-q", "-f", "raw", path, "0")
		run(tool, "resize", "-q", "-f", "raw", path, "1M")
	})
	both("data", func(tool, path string) {
		run(tool, "create", "-q", "-f", "qcow2", "-o", "data_file="+path, path+".qcow2", "64M")
	})
}
