package blkdebug

import (
	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/block"
)

// File is a blkdebug node under a format engine: the engine's events drive
// the rules, and its requests to the file below fail as they say.
type File struct {
	block.File
	inj *injector
}

// NewFile puts a blkdebug node with c's rules over f.
func NewFile(f block.File, c *Config) *File {
	return &File{File: f, inj: newInjector(c.rules)}
}

// Opener returns a block.Options.OpenFile that puts a blkdebug node with
// c's rules over the host file.
func Opener(c *Config) func(path string, readOnly, direct bool) (block.File, error) {
	return func(path string, readOnly, direct bool) (block.File, error) {
		hf, err := block.OpenHostFile(path, readOnly, direct)
		if err != nil {
			return nil, err
		}
		return NewFile(hf, c), nil
	}
}

// DebugEvent runs the rules of an event the engine raised.
func (f *File) DebugEvent(e block.DebugEvent) { f.inj.event(e) }

func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if err := f.inj.check(off, int64(len(p)), ioRead); err != nil {
		return 0, err
	}
	return f.File.ReadAt(p, off)
}

// WriteAt raises pwritev before the write and pwritev_done after it, as
// QEMU's block layer does for every write to a node.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	f.inj.event(block.EventPwritev)
	if err := f.inj.check(off, int64(len(p)), ioWrite); err != nil {
		return 0, err
	}
	n, err := f.File.WriteAt(p, off)
	f.inj.event(block.EventPwritevDone)
	return n, err
}

func (f *File) Sync() error {
	if err := f.inj.check(0, 0, ioFlush); err != nil {
		return err
	}
	return f.File.Sync()
}

// Fallocate is a discard when it punches a hole, a zero write otherwise.
func (f *File) Fallocate(mode uint32, off, n int64) error {
	t := ioWriteZeroes
	if mode&unix.FALLOC_FL_PUNCH_HOLE != 0 {
		t = ioDiscard
	}
	if err := f.inj.check(off, n, t); err != nil {
		return err
	}
	return f.File.Fallocate(mode, off, n)
}

var (
	_ block.File      = (*File)(nil)
	_ block.EventSink = (*File)(nil)
)
