package qemuopt

import "fmt"

// ObjectSpec is one -object: a memory backend for ivshmem-plain.
type ObjectSpec struct {
	// Type is memory-backend-file or memory-backend-shm.
	Type string
	// ID is id=, which -device ivshmem-plain,memdev= refers to.
	ID string
	// Size is size= in bytes, not 0; whether it suits ivshmem (a power of
	// two, hostmem.CheckSize) is for the caller to check.
	Size uint64
	// MemPath is memory-backend-file's mem-path.
	MemPath string
}

// ParseObject reads -object memory-backend-file,id=ID,share=on,mem-path=P,size=S
// or -object memory-backend-shm,id=ID,size=S[,share=on]. ivshmem needs
// shared memory, so share=off is refused.
func ParseObject(s string) (ObjectSpec, error) {
	o, err := Parse("-object", s, "qom-type")
	if err != nil {
		return ObjectSpec{}, err
	}
	fail := func(err error) (ObjectSpec, error) { return ObjectSpec{}, fmt.Errorf("-object %q: %w", s, err) }
	b := ObjectSpec{Type: o.Str("qom-type"), ID: o.Str("id")}
	if !ValidID(b.ID) {
		return fail(fmt.Errorf("id= is required and must be an identifier"))
	}
	if b.Size, err = o.Size("size"); err != nil {
		return fail(err)
	}
	if b.Size == 0 {
		return fail(fmt.Errorf("size= is required"))
	}
	_, hasShare := o.Lookup("share")
	if share, err := o.Bool("share", true); err != nil {
		return fail(err)
	} else if !share {
		return fail(fmt.Errorf("share=off: ivshmem needs share=on memory"))
	}
	switch b.Type {
	case "memory-backend-file":
		// QEMU's memory-backend-file defaults to share=off (a private
		// mapping), so a command line valid for QEMU's ivshmem says
		// share=on; one without it would not share memory under QEMU.
		if !hasShare {
			return fail(fmt.Errorf("memory-backend-file needs share=on for ivshmem"))
		}
		if b.MemPath = o.Str("mem-path"); b.MemPath == "" {
			return fail(fmt.Errorf("mem-path= is required"))
		}
	case "memory-backend-shm":
	default:
		return fail(fmt.Errorf("unsupported object type %q (want memory-backend-file or memory-backend-shm)", b.Type))
	}
	if err := o.Unused(""); err != nil {
		return fail(err)
	}
	return b, nil
}

// ChardevSpec is one -chardev: a unix socket client (an ivshmem server).
type ChardevSpec struct {
	// ID is id=, which -device ivshmem-doorbell,chardev= refers to.
	ID string
	// Path is the server's UNIX socket; Petrel connects as a client
	// (server=on, a listening chardev, is not supported).
	Path string
}

// ParseChardev reads -chardev socket,id=ID,path=PATH.
func ParseChardev(s string) (ChardevSpec, error) {
	o, err := Parse("-chardev", s, "backend")
	if err != nil {
		return ChardevSpec{}, err
	}
	fail := func(err error) (ChardevSpec, error) { return ChardevSpec{}, fmt.Errorf("-chardev %q: %w", s, err) }
	if b := o.Str("backend"); b != "socket" {
		return fail(fmt.Errorf("backend %q: only socket chardevs are supported", b))
	}
	c := ChardevSpec{ID: o.Str("id"), Path: o.Str("path")}
	if err := o.Unused(""); err != nil {
		return fail(err)
	}
	if !ValidID(c.ID) || c.Path == "" {
		return fail(fmt.Errorf("id= and path= are required"))
	}
	return c, nil
}
