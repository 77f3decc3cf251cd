package pc

import (
	"fmt"

	"github.com/petrel-vmm/petrel/block"
	_ "github.com/petrel-vmm/petrel/block/all" // every image engine
	"github.com/petrel-vmm/petrel/qemuopt"
	"github.com/petrel-vmm/petrel/qmp"
)

// blockNode is one open image: a -disk/-drive or a QMP blockdev-add node.
type blockNode struct {
	name   string
	file   string
	img    block.Image
	direct bool
	slot   int    // PCI slot of the virtio-blk device using it, 0 if none
	qdev   string // device id using it
	owned  bool   // the device closes the image (not a blockdev-add node)
}

func (n *blockNode) info() qmp.BlockInfo {
	bi := qmp.BlockInfo{Device: n.name, Qdev: n.qdev, Type: "unknown"}
	if n.img == nil {
		return bi
	}
	chain := block.Chain(n.img)
	ins := &qmp.BlockInserted{
		File: n.file, NodeName: n.name, RO: n.img.ReadOnly(), Drv: n.img.Format(),
		BackingFileDepth: len(chain) - 1,
		Cache:            qmp.BlockCache{Writeback: true, Direct: n.direct},
		Image:            qmp.ImageInfo{Filename: n.file, Format: n.img.Format(), VirtualSize: n.img.Size()},
	}
	if b := n.img.Backing(); b != nil {
		ins.BackingFile = block.Filename(b)
	}
	bi.Inserted = ins
	return bi
}

// openNode opens an image and records it under name.
func (m *Machine) openNode(name, path, format string, readOnly, direct, noSync bool) (*blockNode, error) {
	m.blockMu.Lock()
	defer m.blockMu.Unlock()
	if _, dup := m.nodes[name]; dup {
		return nil, fmt.Errorf("duplicate node name '%s'", name)
	}
	img, err := block.Open(path, block.Options{ReadOnly: readOnly, Format: format, DirectIO: direct, NoSync: noSync})
	if err != nil {
		return nil, fmt.Errorf("opening disk %s: %w", path, err)
	}
	n := &blockNode{name: name, file: path, img: img, direct: direct}
	m.nodes[name] = n
	return n, nil
}

// closeNodes flushes and closes every image (Machine.Close).
func (m *Machine) closeNodes() error {
	m.blockMu.Lock()
	defer m.blockMu.Unlock()
	var first error
	for name, n := range m.nodes {
		if n.owned && n.slot != 0 {
			continue // the device's Release closed it
		}
		if err := n.img.Flush(); err != nil && first == nil {
			first = fmt.Errorf("flushing %s: %w", n.file, err)
		}
		if err := n.img.Close(); err != nil && first == nil {
			first = fmt.Errorf("closing %s: %w", n.file, err)
		}
		delete(m.nodes, name)
	}
	return first
}

// BlockdevAdd opens an image as a named node (QMP blockdev-add).
func (m *Machine) BlockdevAdd(req qemuopt.BlockdevSpec) error {
	if req.NodeName == "" {
		return qmp.Errorf("blockdev-add needs a node-name")
	}
	if _, err := m.openNode(req.NodeName, req.Filename, req.Format, req.ReadOnly, req.DirectIO, req.NoSync); err != nil {
		return qmp.Errorf("%v", err)
	}
	return nil
}

// BlockdevDel closes a node that no device uses (QMP blockdev-del).
func (m *Machine) BlockdevDel(name string) error {
	m.blockMu.Lock()
	defer m.blockMu.Unlock()
	n, ok := m.nodes[name]
	if !ok {
		return qmp.Errorf("Failed to find node with node-name='%s'", name)
	}
	if n.qdev != "" || n.slot != 0 {
		return qmp.Errorf("Node '%s' is busy: node is used as guest device", name)
	}
	delete(m.nodes, name)
	if err := n.img.Close(); err != nil {
		return qmp.Errorf("closing %s: %v", n.file, err)
	}
	return nil
}

// detachNodes frees the nodes a removed device in slot used: a node the
// device owned (its image now closed by the device) is forgotten, a
// blockdev-add node becomes free again.
func (m *Machine) detachNodes(slot int) {
	m.blockMu.Lock()
	defer m.blockMu.Unlock()
	for name, n := range m.nodes {
		if n.slot != slot {
			continue
		}
		if n.owned {
			delete(m.nodes, name)
			continue
		}
		n.slot, n.qdev = 0, ""
	}
}
