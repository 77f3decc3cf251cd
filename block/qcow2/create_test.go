package qcow2

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	_ "github.com/petrel-vmm/petrel/block/raw"
)

// TestCreateOptions: every create option yields an image qemu-img reads
// back with the same settings.
func TestCreateOptions(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, []byte(strings.Repeat("backing!", 1<<14)), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		o    block.CreateOptions
		want map[string]any // expected qemu-img info format-specific data
	}{
		{"defaults", block.CreateOptions{Size: 1 << 30}, map[string]any{"compat": "1.1", "refcount-bits": 16.0, "lazy-refcounts": false, "compression-type": "zlib"}},
		{"v2", block.CreateOptions{Size: 1 << 30, Compat: "0.10"}, map[string]any{"compat": "0.10", "refcount-bits": 16.0}},
		{"lazy_rb1", block.CreateOptions{Size: 1 << 30, LazyRefcounts: true, RefcountBits: 1}, map[string]any{"lazy-refcounts": true, "refcount-bits": 1.0}},
		{"zstd", block.CreateOptions{Size: 1 << 30, CompressionType: "zstd"}, map[string]any{"compression-type": "zstd"}},
		{"extl2", block.CreateOptions{Size: 1 << 30, ExtendedL2: true}, map[string]any{"extended-l2": true}},
		{"backing", block.CreateOptions{BackingFile: "base.raw", BackingFormat: "raw"}, map[string]any{"compat": "1.1"}},
		{"prealloc_metadata", block.CreateOptions{Size: 8 << 20, Preallocation: "metadata"}, nil},
		{"prealloc_falloc", block.CreateOptions{Size: 8 << 20, Preallocation: "falloc", ClusterSize: 4096}, nil},
		{"prealloc_full", block.CreateOptions{Size: 8 << 20, Preallocation: "full"}, nil},
		{"huge_3T", block.CreateOptions{Size: 3 << 40}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".qcow2")
			if err := Create(path, c.o); err != nil {
				t.Fatal(err)
			}
			qemuCheck(t, path, false)
			var info struct {
				VirtualSize    int64  `json:"virtual-size"`
				BackingFile    string `json:"backing-filename"`
				FormatSpecific struct {
					Data map[string]any `json:"data"`
				} `json:"format-specific"`
			}
			out := run(t, "qemu-img", "info", "--output=json", path)
			if err := json.Unmarshal([]byte(out), &info); err != nil {
				t.Fatal(err)
			}
			for k, v := range c.want {
				if info.FormatSpecific.Data[k] != v {
					t.Errorf("%s = %v, want %v\n%s", k, info.FormatSpecific.Data[k], v, out)
				}
			}
			img, err := Open(path, block.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			if info.VirtualSize != img.Size() {
				t.Fatalf("qemu-img sees %d bytes, engine %d", info.VirtualSize, img.Size())
			}
			if c.o.Preallocation != "" {
				for off := int64(0); off < img.Size(); {
					ext, err := img.BlockStatus(off, img.Size()-off)
					if err != nil || ext.Flags&block.ExtentAllocated == 0 || ext.Flags&block.ExtentData == 0 {
						t.Fatalf("preallocated image extent: %+v %v", ext, err)
					}
					off += ext.Length
				}
				assertEqual(t, "preallocated content", readAll(t, img), make([]byte, img.Size()))
			}
			if c.name == "huge_3T" {
				if ext, err := img.BlockStatus(0, img.Size()); err != nil || ext.Length != img.Size() || ext.Flags != block.ExtentZero {
					t.Fatalf("an empty 3 TiB disk is not one zero extent: %+v %v", ext, err)
				}
			}
			if c.o.BackingFile != "" {
				if info.BackingFile != "base.raw" || img.Size() != 1<<17 {
					t.Fatalf("backing %q size %d", info.BackingFile, img.Size())
				}
				b := make([]byte, 16)
				img.ReadAt(b, 8)
				if string(b) != "backing!backing!" {
					t.Fatalf("backing data %q", b)
				}
			}
		})
	}
}

// TestCreateRefusals: invalid combinations fail with a clear error.
func TestCreateRefusals(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []block.CreateOptions{
		{Size: 1 << 20, ClusterSize: 256},
		{Size: 1 << 20, ClusterSize: 4 << 20},
		{Size: 1 << 20, ClusterSize: 3000},
		{Size: 1 << 20, RefcountBits: 3},
		{Size: 1 << 20, RefcountBits: 128},
		{Size: 1 << 20, Compat: "0.10", LazyRefcounts: true},
		{Size: 1 << 20, Compat: "0.10", RefcountBits: 8},
		{Size: 1 << 20, Compat: "2.0"},
		{Size: 1 << 20, CompressionType: "lz4"},
		{Size: 1 << 20, ExtendedL2: true, ClusterSize: 4096},
		{Size: 1 << 20, Preallocation: "sometimes"},
		{Size: -1},
		{Size: 1 << 62},
	} {
		path := filepath.Join(dir, "x.qcow2")
		if err := Create(path, o); err == nil {
			t.Errorf("create with %+v succeeded", o)
		}
		if _, err := os.Stat(path); err == nil {
			t.Errorf("create with %+v left a file behind", o)
			os.Remove(path)
		}
	}
}
