package block

import (
	"fmt"
	"sync"
)

// Protocol is a way to reach an image other than through a host file: a
// network block device (nbd:..., nbd+unix://...). Open and Create accept
// the names a protocol claims in place of file paths.
type Protocol struct {
	Name string
	// Claims reports whether a name is this protocol's (by its prefix).
	Claims func(name string) bool
	// Open opens the named image. opts.Format is the format asked for
	// ("" to probe); a protocol serves the formats it can and refuses
	// the others by name.
	Open func(name string, opts Options) (Image, error)
	// Create makes a new image of the given format at name (for a
	// network export that exists already: checks and prepares it).
	Create func(name, format string, opts CreateOptions) error
}

var (
	protocolsMu sync.RWMutex
	protocols   []Protocol
)

// RegisterProtocol adds a protocol (from the protocol package's init).
func RegisterProtocol(p Protocol) {
	protocolsMu.Lock()
	defer protocolsMu.Unlock()
	protocols = append(protocols, p)
}

// ProtocolOf returns the protocol that claims name, if any.
func ProtocolOf(name string) (Protocol, bool) {
	protocolsMu.RLock()
	defer protocolsMu.RUnlock()
	for _, p := range protocols {
		if p.Claims(name) {
			return p, true
		}
	}
	return Protocol{}, false
}

// OpenOn opens an image of the named format kept in f, a file a protocol
// opened (an NBD export holding a qcow2 image, as QEMU's format node over
// its protocol node). The engine gets f when it opens path's file (its
// backing files open as usual); it owns f from then on, and OpenOn
// closes f when the engine never took it.
func OpenOn(f File, path, format string, opts Options) (Image, error) {
	fm, ok := Lookup(format)
	if !ok || fm.Open == nil {
		f.Close()
		return nil, fmt.Errorf("opening %s: %w %q", path, ErrUnknownFormat, format)
	}
	taken := false
	opts.OpenFile = func(name string, readOnly, direct bool) (File, error) {
		if taken || name != path {
			return nil, fmt.Errorf("opening %s: only %s is open here", name, path)
		}
		taken = true
		return f, nil
	}
	img, err := fm.Open(path, opts)
	if !taken {
		f.Close()
		if err == nil {
			img.Close()
			err = fmt.Errorf("opening %s: the %s engine cannot keep an image on %s", path, format, f.Name())
		}
	}
	return img, err
}

// CreateOn writes a new image of the named format into f, a file a
// protocol opened (an export that exists already), and closes f. Only
// the engines with Format.CreateOn can.
func CreateOn(f File, path, format string, opts CreateOptions) error {
	fm, ok := Lookup(format)
	if !ok || fm.CreateOn == nil {
		f.Close()
		return fmt.Errorf("petrel creates %s images on host files only, not on %s", format, f.Name())
	}
	return fm.CreateOn(f, path, opts)
}
