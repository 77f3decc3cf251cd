package block

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// MaxChainDepth bounds how many backing layers may sit below an image; QEMU
// has no hard limit but a chain this deep is either a loop or a mistake.
const MaxChainDepth = 64

// ErrBackingLoop is returned when a backing chain names a file twice.
var ErrBackingLoop = errors.New("backing chain loop")

// ErrChainTooDeep is returned when a backing chain exceeds MaxChainDepth.
var ErrChainTooDeep = errors.New("backing chain too deep")

// ResolveBacking returns the path a backing file name refers to: absolute
// names as they are, relative ones against the directory of the image that
// names them, as QEMU does.
func ResolveBacking(imagePath, name string) string {
	if name == "" || filepath.IsAbs(name) || HasNameOpener(name) {
		return name
	}
	return filepath.Join(filepath.Dir(imagePath), name)
}

// chainKey identifies a file for loop detection: the symlink-free absolute
// path, falling back to the cleaned absolute path.
func chainKey(path string) string {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	if p, err := filepath.Abs(path); err == nil {
		return p
	}
	return filepath.Clean(path)
}

// OpenBacking opens the backing file an engine found in the image at
// imagePath (name and format as stored in its header; format may be empty
// to probe). It honours opts.NoBacking (returns nil, nil),
// opts.BackingOverride and opts.BackingFormat, opens the backing image
// read-only, and enforces MaxChainDepth and loop detection. Engines call
// it from their Open with the Options they were given.
func OpenBacking(imagePath, name, format string, opts Options) (Image, error) {
	if opts.NoBacking {
		return nil, nil
	}
	if open := nameOpener(name); open != nil && opts.BackingOverride == "" {
		// A json: or blkdebug: name: parsed by its opener, not a path.
		if len(opts.parents) >= MaxChainDepth {
			return nil, fmt.Errorf("opening backing file %s: %w (more than %d layers)", name, ErrChainTooDeep, MaxChainDepth)
		}
		if opts.BackingFormat != "" {
			format = opts.BackingFormat
		}
		img, err := open(name, Options{ReadOnly: true, Format: format, DirectIO: opts.DirectIO, CacheSize: opts.CacheSize,
			parents: append(append([]string(nil), opts.parents...), chainKey(imagePath))})
		if err != nil {
			return nil, fmt.Errorf("could not open backing file: %w", err)
		}
		return img, nil
	}
	path := ResolveBacking(imagePath, name)
	if opts.BackingOverride != "" {
		path = opts.BackingOverride
	}
	if opts.BackingFormat != "" {
		format = opts.BackingFormat
	}
	if path == "" {
		return nil, nil
	}
	parents := append(append([]string(nil), opts.parents...), chainKey(imagePath))
	if len(parents) > MaxChainDepth {
		return nil, fmt.Errorf("opening backing file %s: %w (more than %d layers)", path, ErrChainTooDeep, MaxChainDepth)
	}
	key := chainKey(path)
	for _, p := range parents {
		if p == key {
			return nil, fmt.Errorf("opening backing file %s: %w: %s is already in the chain", path, ErrBackingLoop, p)
		}
	}
	if _, err := os.Stat(path); err != nil {
		return nil, &missingBackingError{path, err}
	}
	bopts := Options{
		ReadOnly:  true,
		Format:    format,
		DirectIO:  opts.DirectIO,
		CacheSize: opts.CacheSize,
		Secrets:   opts.Secrets,
		KeySecret: opts.BackingKeySecret,
		NoIO:      opts.NoIO,
		parents:   parents,
	}
	img, err := Open(path, bopts)
	if err != nil {
		return nil, fmt.Errorf("could not open backing file: %w", err)
	}
	return img, nil
}

// missingBackingError is a backing file that cannot be found, worded as
// QEMU words it (iotests 069, 082): "Could not open backing file: Could
// not open 'PATH': No such file or directory".
type missingBackingError struct {
	path string
	err  error
}

func (e *missingBackingError) Error() string {
	reason := e.err.Error()
	var pe *os.PathError
	if errors.As(e.err, &pe) {
		reason = pe.Err.Error()
		if errors.Is(pe.Err, os.ErrNotExist) {
			reason = "No such file or directory"
		}
	}
	return fmt.Sprintf("Could not open backing file: Could not open '%s': %s", e.path, reason)
}

func (e *missingBackingError) Unwrap() error { return e.err }

// Chain lists img and every image below it, top first.
func Chain(img Image) []Image {
	var c []Image
	for i := img; i != nil && len(c) <= MaxChainDepth; i = i.Backing() {
		c = append(c, i)
	}
	return c
}

// Named is implemented by images that know the file they were opened from.
type Named interface {
	Filename() string
}

// Filename returns the path img was opened from, or "" if its engine
// does not implement Named.
func Filename(img Image) string {
	if n, ok := img.(Named); ok && img != nil {
		return n.Filename()
	}
	return ""
}

// ReadBacking fills p from backing at off, with zeroes where backing is nil
// or shorter than off+len(p) (a backing file may be smaller than the image).
func ReadBacking(backing Image, p []byte, off int64) error {
	if backing == nil {
		clear(p)
		return nil
	}
	size := backing.Size()
	n := int64(len(p))
	if off >= size {
		clear(p)
		return nil
	}
	if off+n > size {
		clear(p[size-off:])
		p = p[:size-off]
	}
	if _, err := backing.ReadAt(p, off); err != nil {
		return fmt.Errorf("reading backing file at %#x: %w", off, err)
	}
	return nil
}

// BackingStatus describes a range that is unallocated in an image whose
// backing image is backing: the backing layer's extent one level deeper,
// or unallocated zeroes where there is no backing data (no backing file,
// or past its end).
func BackingStatus(backing Image, off, n int64) (Extent, error) {
	if backing == nil || off >= backing.Size() {
		return Extent{Offset: off, Length: n, Flags: ExtentZero, HostOffset: -1}, nil
	}
	e, err := backing.BlockStatus(off, min(n, backing.Size()-off))
	if err != nil {
		return Extent{}, err
	}
	e.Depth++
	return e, nil
}
