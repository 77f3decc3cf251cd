package block

import "sync"

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
