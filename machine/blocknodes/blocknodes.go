// Package blocknodes is a machine's registry of open block nodes: images
// opened by -blockdev/-drive/-disk, QMP blockdev-add, or device_add file=,
// each under a unique node name. The registry owns every image: devices
// borrow one (Borrow) and give it back when they leave the bus (Return);
// the registry flushes and closes images.
//
// A node is either named (-blockdev, blockdev-add: it outlives the devices
// using it, as in QEMU, until blockdev-del) or automatic (-disk, -drive,
// device_add file=: made for one device and closed when that device is
// unplugged, as QEMU auto-deletes a -drive's backend).
package blocknodes

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/petrel-vmm/petrel/block"
	_ "github.com/petrel-vmm/petrel/block/all" // every image engine
	"github.com/petrel-vmm/petrel/qemuopt"
)

// Errors a caller may test with errors.Is.
var (
	ErrNotFound = errors.New("no such block node")
	ErrInUse    = errors.New("block node is in use by a device")
	ErrExists   = errors.New("duplicate node name")
)

// node is one open image.
type node struct {
	name   string
	file   string
	img    block.Image
	direct bool
	noSync bool
	auto   bool   // made for one device; closed when that device goes
	user   string // qdev id of the device using it ("" = none)
	busy   bool   // a device uses it (user may be "" for an unnamed device)
}

// Registry holds a machine's block nodes. Its methods are safe for
// concurrent use (QMP connections, the eject worker, the machine).
type Registry struct {
	mu    sync.Mutex
	nodes map[string]*node
}

// New returns an empty registry.
func New() *Registry { return &Registry{nodes: map[string]*node{}} }

// Open opens spec's image as node spec.NodeName. auto marks a node made
// for a single device (see the package comment).
func (r *Registry) Open(spec qemuopt.BlockdevSpec, auto bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.nodes[spec.NodeName]; dup {
		return fmt.Errorf("%w '%s'", ErrExists, spec.NodeName)
	}
	img, err := block.Open(spec.Filename, block.Options{ReadOnly: spec.ReadOnly, Format: spec.Format,
		DirectIO: spec.DirectIO, NoSync: spec.NoSync})
	if err != nil {
		return fmt.Errorf("opening disk %s: %w", spec.Filename, err)
	}
	r.nodes[spec.NodeName] = &node{name: spec.NodeName, file: spec.Filename, img: img,
		direct: spec.DirectIO, noSync: spec.NoSync, auto: auto}
	return nil
}

// Borrow lends node name's image to device user (qdev id, may be empty).
// The image's Close only flushes: the registry closes it.
func (r *Registry) Borrow(name, user string) (block.Image, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.nodes[name]
	switch {
	case !ok:
		return nil, fmt.Errorf("%w '%s'", ErrNotFound, name)
	case n.busy:
		return nil, fmt.Errorf("%w: '%s' is used by '%s'", ErrInUse, name, n.user)
	}
	n.busy, n.user = true, user
	return lent{n.img}, nil
}

// Return gives node name back after its device left the bus: an automatic
// node is closed and forgotten, a named one becomes free.
func (r *Registry) Return(name string) error {
	r.mu.Lock()
	n, ok := r.nodes[name]
	if !ok {
		r.mu.Unlock()
		return nil
	}
	n.busy, n.user = false, ""
	if !n.auto {
		r.mu.Unlock()
		return nil
	}
	delete(r.nodes, name)
	r.mu.Unlock()
	return closeImage(n)
}

// Delete closes a named node no device uses (QMP blockdev-del).
func (r *Registry) Delete(name string) error {
	r.mu.Lock()
	n, ok := r.nodes[name]
	switch {
	case !ok:
		r.mu.Unlock()
		return fmt.Errorf("%w: Failed to find node with node-name='%s'", ErrNotFound, name)
	case n.busy:
		r.mu.Unlock()
		return fmt.Errorf("%w: Node '%s' is busy: node is used as guest device", ErrInUse, name)
	}
	delete(r.nodes, name)
	r.mu.Unlock()
	return closeImage(n)
}

// Close flushes and closes every image (the machine is going away; its
// devices have been released).
func (r *Registry) Close() error {
	r.mu.Lock()
	nodes := r.nodes
	r.nodes = map[string]*node{}
	r.mu.Unlock()
	var errs []error
	for _, n := range nodes {
		if err := closeImage(n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func closeImage(n *node) error {
	ferr := n.img.Flush()
	if ferr != nil {
		ferr = fmt.Errorf("flushing %s: %w", n.file, ferr)
	}
	cerr := n.img.Close()
	if cerr != nil {
		cerr = fmt.Errorf("closing %s: %w", n.file, cerr)
	}
	return errors.Join(ferr, cerr)
}

// Info describes one node for query-block.
type Info struct {
	Name     string
	File     string
	User     string // qdev id of the device using it
	Image    block.Image
	DirectIO bool
	NoSync   bool
}

// List describes every node, sorted by name. The images stay owned by the
// registry: callers only read their properties.
func (r *Registry) List() []Info {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Info, 0, len(r.nodes))
	for _, n := range r.nodes {
		out = append(out, Info{Name: n.name, File: n.file, User: n.user, Image: n.img, DirectIO: n.direct, NoSync: n.noSync})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// lent is a borrowed image: a device's Release closes it, which only
// flushes, so the registry stays the one owner that closes.
type lent struct{ block.Image }

func (l lent) Close() error { return l.Flush() }
